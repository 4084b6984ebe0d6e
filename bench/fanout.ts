// bench/fanout: WebSocket fan-out of our server against three reference
// servers, bare uWebSockets.js (bench/fanout-uws-server.ts: the sends alone, the
// machine's ceiling), a `ws`-library broadcast server
// (bench/fanout-ws-server.ts) and a Socket.IO server
// (bench/fanout-socketio-server.ts), in one run, with the same
// subscriber processes (bench/fanout-client.ts: raw sockets, a minimal
// WebSocket client that counts frames without parsing them).
//
//   npm run bench:fanout                                   # defaults below, a few minutes
//   npm run bench:fanout -- --subscribers=2000 --duration=3 --fixed-duration=3 --only=ours
//
// Per server, --subscribers sockets spread over --conversations conversations
// (connection i subscribes to conversation i mod C), held by --clients
// subscriber processes:
//   connect   open and subscribe every socket (--connect-concurrency handshakes
//             in flight per client process); idle RSS per socket = (server
//             RSS --settle s after connecting − RSS before) / sockets
//   burst     a closed-loop publisher (--in-flight HTTP requests over keep-alive
//             connections, conversations round-robin) for --duration s:
//             appends/s, and deliveries/s = frames received by all clients per
//             second during the publishing window; then the clients drain
//   fixed     an open-loop publisher at --fixed-deliveries/s, i.e.
//             fixed-deliveries / (subscribers per conversation) appends/s, for
//             --fixed-duration s: append→receive latency, from the scheduled send
//             time stamped into each message to its arrival at a client
// Every message carries `t=<epoch ms>` padded so that a delivered frame is
// ~300 bytes on every server: our server's frame is its message event; the
// reference servers get a body of the same JSON shape and send it as is
// (Socket.IO adds its `42["m",…]` envelope).
//
// Servers and client processes run on free 127.0.0.1 ports / the loopback and
// are stopped by PID at the end, also on error and Ctrl-C. Results:
// bench/results/fanout-latest.md (and .json next to it).
//
// Options (argv --name=value, or env BENCH_NAME):
//   --subscribers=10000     sockets per server
//   --conversations=10      conversations they are spread over
//   --clients=2             subscriber processes
//   --duration=10           seconds of the burst phase
//   --in-flight=64          burst publisher's requests in flight (≤ 256, the HTTP agent's sockets;
//                           as many as the append bench: fewer measure the durable
//                           round trip under load, not the fan-out)
//   --fixed-deliveries=100000   deliveries/s of the fixed-rate phase
//   --fixed-duration=10     seconds of the fixed-rate phase
//   --sample-every=100      latency sample every Nth delivery per connection
//   --connect-concurrency=100   handshakes in flight per client process
//   --settle=3              seconds before each RSS reading
//   --only=ours,uws,ws,socketio servers to run
//   --server=dist/runtime/main.js   entry point of our server
//   --out=bench/results/fanout-latest.md
//   --tmp=<dir>             parent of the temp dir (default: os.tmpdir())
//   --keep                  keep the temp dir (data dir and logs)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CpuMeter,
  MemSampler,
  closeHttpAgent,
  fmtInt,
  fmtMiB,
  fmtMs,
  fmtPct,
  freePort,
  httpRequest,
  installCleanupHandlers,
  isStopping,
  log,
  machineInfo,
  onExit,
  percentileSorted,
  sleep,
  spawnTracked,
  stopTracked,
  tailLog,
  treeCpuSeconds,
  treeMem,
  waitHttpReady,
  type Tracked,
  benchArgs,
  writeResults,
  runBench,
  AGENT_SOCKETS,
  SERVER_NODE_FLAGS,
} from './lib.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BENCH_DIST = path.join(ROOT, 'dist', 'bench');

/** Bytes of a delivered frame's payload (our message event; the reference servers' copy of it). */
const FRAME_BYTES = 300;
/** How often each client process reports its counters. */
const REPORT_MS = 200;
const CONNECT_TIMEOUT_MS = 120_000;
/** After publishing stops: wait for the expected deliveries, at most this long… */
const DRAIN_MAX_MS = 30_000;
/** …or until no frame arrived for this long. */
const DRAIN_QUIET_MS = 3_000;
/** Open-loop publisher: how often it checks for due appends. */
const PUBLISH_TICK_MS = 2;
const REQUEST_TIMEOUT_MS = 10_000;
/** A server that cannot keep up with the fixed rate answers publishes seconds late: only past this is one an error. */
const PUBLISH_TIMEOUT_MS = 60_000;
/** File descriptors a server or client needs beyond its WebSocket connections. */
const FD_MARGIN = 1024;
/** A client process must outlive the longest run, but not by much if it is orphaned. */
const CLIENT_MAX_SECONDS = 1800;
/** The issue's targets. */
const TARGET_DELIVERIES_PER_S = 1_000_000;
const TARGET_VS_SOCKETIO = 5;
const TARGET_P99_MS = 50;
const TARGET_P99_AT_DELIVERIES_PER_S = 100_000;
const TARGET_IDLE_BYTES = 4096;

// ---------------------------------------------------------------- options

type ServerName = 'ours' | 'uws' | 'ws' | 'socketio';
const SERVER_NAMES: ServerName[] = ['ours', 'uws', 'ws', 'socketio'];

interface Options {
  subscribers: number;
  conversations: number;
  clients: number;
  duration: number;
  inFlight: number;
  fixedDeliveries: number;
  fixedDuration: number;
  sampleEvery: number;
  connectConcurrency: number;
  settle: number;
  only: ServerName[];
  server: string;
  out: string;
  tmp: string;
  keep: boolean;
}

const OPTION_NAMES = [
  'subscribers',
  'conversations',
  'clients',
  'duration',
  'in-flight',
  'fixed-deliveries',
  'fixed-duration',
  'sample-every',
  'connect-concurrency',
  'settle',
  'only',
  'server',
  'out',
  'tmp',
  'keep',
];

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): Options {
  const kv = benchArgs(argv, env, OPTION_NAMES, 'bench/fanout.ts');
  const int = (k: string, d: number, min = 1, max = Number.MAX_SAFE_INTEGER) => {
    const v = kv.get(k);
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`--${k} must be an integer in ${min}..${max}, got ${v}`);
    return n;
  };
  const only = (kv.get('only') ?? SERVER_NAMES.join(',')).split(',').filter(Boolean);
  for (const s of only) if (!SERVER_NAMES.includes(s as ServerName)) throw new Error(`--only: unknown server ${s} (${SERVER_NAMES.join(', ')})`);
  const o: Options = {
    subscribers: int('subscribers', 10_000),
    conversations: int('conversations', 10),
    clients: int('clients', 2),
    duration: int('duration', 10),
    inFlight: int('in-flight', 64, 1, AGENT_SOCKETS),
    fixedDeliveries: int('fixed-deliveries', 100_000),
    fixedDuration: int('fixed-duration', 10),
    sampleEvery: int('sample-every', 100),
    connectConcurrency: int('connect-concurrency', 100),
    settle: int('settle', 3, 0),
    only: SERVER_NAMES.filter((s) => only.includes(s)),
    server: path.resolve(ROOT, kv.get('server') ?? 'dist/runtime/main.js'),
    out: path.resolve(ROOT, kv.get('out') ?? 'bench/results/fanout-latest.md'),
    tmp: kv.get('tmp') ?? os.tmpdir(),
    keep: ['1', 'true', 'yes', 'on'].includes((kv.get('keep') ?? '').toLowerCase()),
  };
  if (o.conversations > o.subscribers) throw new Error('--conversations must not exceed --subscribers');
  if (o.clients > o.subscribers) throw new Error('--clients must not exceed --subscribers');
  return o;
}

// ---------------------------------------------------------------- messages

const epochNow = () => performance.timeOrigin + performance.now();

/** Our server's message event for a text, the frame every server delivers. */
function messageEvent(seq: number, text: string, insertedAt: string): string {
  return JSON.stringify({
    type: 'message',
    seq,
    version: seq,
    message: { role: 'user', parts: [{ type: 'text', text }], metadata: {}, token_count: 1, inserted_at: insertedAt },
  });
}

/** Text length that makes a message event FRAME_BYTES long (4-digit seq, as after a few hundred appends per conversation). */
const TEXT_CHARS = FRAME_BYTES - messageEvent(1000, '', new Date().toISOString()).length;

/** The send time stamp the clients sample, padded to TEXT_CHARS. */
function stampedText(sentAtMs: number): string {
  return `t=${sentAtMs.toFixed(3)} `.padEnd(TEXT_CHARS, 'x');
}

// ---------------------------------------------------------------- servers

interface ServerSpec {
  name: ServerName;
  label: string;
  protocol: 'raw' | 'socketio';
  readyPath: string;
  /** Subscribe path; {c} is the conversation number. */
  subscribePath: string;
  command(o: Options, port: number, dir: string): { args: string[]; env: NodeJS.ProcessEnv };
  /** Create the conversations (ours) before anyone subscribes. */
  prepare(port: number, conversations: number): Promise<void>;
  /** The request that publishes `text` to conversation `conv` as its `seq`-th message. */
  publishRequest(conv: number, seq: number, text: string): { path: string; body: string };
}

const ourConversation = (c: number | string) => `fanout-${c}`;

function packageVersion(name: string): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

/** A reference server: publishes are the message event itself, as our server would send it. */
function referenceServer(name: ServerName, label: string, script: string, protocol: 'raw' | 'socketio', subscribePath: string): ServerSpec {
  return {
    name,
    label,
    protocol,
    readyPath: '/health',
    subscribePath,
    command: (_o, port) => ({ args: [path.join(BENCH_DIST, script), String(port)], env: { ...process.env, NODE_ENV: 'production' } }),
    prepare: async () => {},
    publishRequest: (conv, seq, text) => ({ path: `/publish/${conv}`, body: messageEvent(seq, text, new Date().toISOString()) }),
  };
}

const SERVERS: ServerSpec[] = [
  {
    name: 'ours',
    label: 'ours (raw JSON stream)',
    protocol: 'raw',
    readyPath: '/health/ready',
    subscribePath: `/v1/conversations/${ourConversation('{c}')}/stream`,
    command: (o, port, dir) => ({
      args: [...SERVER_NODE_FLAGS, o.server],
      env: {
        ...process.env,
        PORT: String(port),
        HOST: '127.0.0.1',
        FLEETLM_RAFT_DATA_DIR: path.join(dir, 'data'),
        FLEETLM_LOG_LEVEL: 'warn',
        FLEETLM_STREAM_MAX_CONNECTIONS: String(Math.max(20_000, o.subscribers + FD_MARGIN)),
        NODE_ENV: process.env.NODE_ENV ?? 'production',
        // as `npm start` and the deploy files run it
        MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
      },
    }),
    prepare: async (port, conversations) => {
      for (let c = 0; c < conversations; c++) {
        const r = await httpRequest(port, 'PUT', `/v1/conversations/${ourConversation(c)}`, '{}', REQUEST_TIMEOUT_MS);
        if (r.status < 200 || r.status >= 300) throw new Error(`PUT conversation ${ourConversation(c)}: HTTP ${r.status} ${r.body.slice(0, 200)}`);
      }
    },
    publishRequest: (conv, _seq, text) => ({
      path: `/v1/conversations/${ourConversation(conv)}/messages`,
      // token_count given: the server skips counting tokens.
      body: JSON.stringify({ message: { role: 'user', parts: [{ type: 'text', text }], token_count: 1 } }),
    }),
  },
  referenceServer('uws', `bare uWS ${packageVersion('uWebSockets.js')}`, 'fanout-uws-server.js', 'raw', '/sub/{c}'),
  referenceServer('ws', `ws ${packageVersion('ws')}`, 'fanout-ws-server.js', 'raw', '/sub/{c}'),
  referenceServer('socketio', `Socket.IO ${packageVersion('socket.io')}`, 'fanout-socketio-server.js', 'socketio', '/socket.io/?EIO=4&transport=websocket'),
];

/** The hard RLIMIT_NOFILE: Node raises its soft limit to this at startup. */
function openFilesHardLimit(): number {
  const m = /^Max open files\s+\S+\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return !m || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

// ---------------------------------------------------------------- subscriber processes

interface ClientReport {
  at: number;
  startedAt: number;
  allSubscribedAt: number | null;
  frames: number;
  bytes: number;
  subscribed: number;
  failed: number;
  lost: number;
  failure: string | null;
  samples: number[];
}

interface ClientProcess {
  proc: Tracked;
  /** Every report's time and frame total, for rates over a window. */
  history: Array<{ at: number; frames: number }>;
  last: ClientReport | null;
  stderr: string;
}

/** Totals over the client processes' latest reports. */
interface ClientTotals {
  frames: number;
  bytes: number;
  subscribed: number;
  failed: number;
  lost: number;
}

class Clients {
  readonly procs: ClientProcess[] = [];
  /** Latency samples of every client, flat: stamp, latency, stamp, latency, … */
  samples: number[] = [];

  constructor(o: Options, port: number, spec: ServerSpec) {
    const per = Math.ceil(o.subscribers / o.clients);
    for (let i = 0, first = 0; first < o.subscribers; i++, first += per) {
      const conns = Math.min(per, o.subscribers - first);
      const args = [
        path.join(BENCH_DIST, 'fanout-client.js'),
        `--port=${port}`,
        `--path=${spec.subscribePath}`,
        `--conns=${conns}`,
        `--conversations=${o.conversations}`,
        `--first=${first}`,
        `--protocol=${spec.protocol}`,
        `--sample-every=${o.sampleEvery}`,
        `--connect-concurrency=${o.connectConcurrency}`,
        `--report-ms=${REPORT_MS}`,
        `--max-seconds=${CLIENT_MAX_SECONDS}`,
      ];
      const proc = spawnTracked(`${spec.name}-client-${i}`, process.execPath, args, { cwd: ROOT });
      const cp: ClientProcess = { proc, history: [], last: null, stderr: '' };
      let pending = '';
      proc.child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        pending += d;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const r = JSON.parse(pending.slice(0, nl)) as ClientReport;
          pending = pending.slice(nl + 1);
          cp.last = r;
          cp.history.push({ at: r.at, frames: r.frames });
          for (const s of r.samples) this.samples.push(s);
        }
      });
      proc.child.stderr?.setEncoding('utf8').on('data', (d: string) => (cp.stderr = (cp.stderr + d).slice(-4000)));
      this.procs.push(cp);
    }
  }

  totals(): ClientTotals {
    const t: ClientTotals = { frames: 0, bytes: 0, subscribed: 0, failed: 0, lost: 0 };
    for (const { last } of this.procs) {
      if (!last) continue;
      t.frames += last.frames;
      t.bytes += last.bytes;
      t.subscribed += last.subscribed;
      t.failed += last.failed;
      t.lost += last.lost;
    }
    return t;
  }

  private check(): void {
    for (const c of this.procs) {
      if (!c.proc.alive()) throw new Error(`${c.proc.name} (pid ${c.proc.pid}) exited${c.stderr ? `:\n${c.stderr}` : ''}`);
    }
  }

  /** Totals once every client has reported at or after `t` (epoch ms). */
  async totalsAfter(t: number): Promise<ClientTotals> {
    const deadline = Date.now() + 10 * REPORT_MS + 5000;
    while (this.procs.some((c) => !c.last || c.last.at < t)) {
      this.check();
      if (Date.now() > deadline) throw new Error('client processes stopped reporting');
      await sleep(REPORT_MS / 4);
    }
    return this.totals();
  }

  /** Wait until every socket is subscribed; the time from the first client's start to the last subscription. */
  async connected(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.check();
      const t = this.totals();
      if (t.failed > 0) {
        const why = this.procs.find((c) => c.last?.failure)?.last?.failure;
        throw new Error(`${fmtInt(t.failed)} sockets failed to subscribe (first: ${why})`);
      }
      if (this.procs.every((c) => c.last?.allSubscribedAt)) break;
      if (Date.now() > deadline) throw new Error(`only ${fmtInt(t.subscribed)} sockets subscribed after ${timeoutMs / 1000} s`);
      await sleep(REPORT_MS / 4);
    }
    const start = Math.min(...this.procs.map((c) => c.last!.startedAt));
    const end = Math.max(...this.procs.map((c) => c.last!.allSubscribedAt!));
    return (end - start) / 1000;
  }

  /** Frames per second received in [from, to] (epoch ms), from each process's reports inside the window. */
  rate(from: number, to: number): number {
    let sum = 0;
    for (const c of this.procs) {
      const inside = c.history.filter((h) => h.at >= from && h.at <= to);
      if (inside.length < 2) return NaN;
      const a = inside[0];
      const b = inside[inside.length - 1];
      sum += ((b.frames - a.frames) * 1000) / (b.at - a.at);
    }
    return sum;
  }

  /**
   * Wait until `expected` frames arrived after `base`, or none arrived for
   * DRAIN_QUIET_MS, or DRAIN_MAX_MS passed. Returns the time (epoch ms) of the
   * newest report seen, i.e. when the frames counted had arrived (± REPORT_MS).
   */
  async drain(base: number, expected: number): Promise<number> {
    const t0 = Date.now();
    let last = -1;
    let lastChange = t0;
    for (;;) {
      this.check();
      const got = this.totals().frames - base;
      if (got >= expected) break;
      if (got !== last) {
        last = got;
        lastChange = Date.now();
      }
      if (Date.now() - lastChange > DRAIN_QUIET_MS || Date.now() - t0 > DRAIN_MAX_MS) break;
      await sleep(REPORT_MS / 4);
    }
    return Math.max(...this.procs.map((c) => c.last?.at ?? 0));
  }

  /** Latency samples (ms) of messages stamped in [from, to), ascending. */
  latencies(from: number, to: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.samples.length; i += 2) {
      if (this.samples[i] >= from && this.samples[i] < to) out.push(this.samples[i + 1]);
    }
    return out.sort((x, y) => x - y);
  }

  cpuSeconds(): number[] {
    return this.procs.map((c) => treeCpuSeconds(c.proc.pid));
  }

  async stop(): Promise<void> {
    await Promise.all(this.procs.map((c) => stopTracked(c.proc, 5000)));
  }
}

// ---------------------------------------------------------------- publisher

/** Publishes stamped messages round-robin over the conversations and counts what the clients should receive. */
class Publisher {
  appends = 0;
  errors = 0;
  errorDetail = '';
  /** Deliveries the acknowledged appends should produce. */
  expected = 0;
  /** Request → response of each acknowledged publish, ms. */
  readonly answerMs: number[] = [];
  private next = 0;
  private readonly seqs: number[];

  constructor(
    private readonly spec: ServerSpec,
    private readonly port: number,
    private readonly subscribersOf: number[],
  ) {
    this.seqs = subscribersOf.map(() => 0);
  }

  async publish(stampMs: number): Promise<void> {
    const conv = this.next++ % this.subscribersOf.length;
    const req = this.spec.publishRequest(conv, ++this.seqs[conv], stampedText(stampMs));
    try {
      const t0 = performance.now();
      const r = await httpRequest(this.port, 'POST', req.path, req.body, PUBLISH_TIMEOUT_MS);
      if (r.status >= 200 && r.status < 300) {
        this.answerMs.push(performance.now() - t0);
        this.appends++;
        this.expected += this.subscribersOf[conv];
        return;
      }
      this.errors++;
      this.errorDetail ||= `HTTP ${r.status} ${r.body.slice(0, 120)}`;
    } catch (e) {
      this.errors++;
      this.errorDetail ||= (e as Error).message;
    }
  }
}

// ---------------------------------------------------------------- phases

/** utime and stime (clock ticks) of one process, all its threads. */
function userSysTicks(pid: number): { user: number; sys: number } {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces: fields 14 and 15 counted from after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]), sys: Number(f[12]) };
  } catch {
    return { user: 0, sys: 0 };
  }
}

/** Share of a process's CPU spent in the kernel between two readings. */
function sysShare(a: { user: number; sys: number }, b: { user: number; sys: number }): number {
  const user = b.user - a.user;
  const sys = b.sys - a.sys;
  return user + sys > 0 ? (100 * sys) / (user + sys) : NaN;
}

interface Cpu {
  serverPct: number;
  /** % of the server's CPU spent in the kernel: socket writes, and on the loopback the receiving side's TCP work too. */
  serverSysPct: number;
  clientsPct: number;
  /** The busiest client process: near 100% means the clients, not the server, set the pace. */
  clientMaxPct: number;
  clientsSysPct: number;
  /** This process: the publisher (and the clients' reports it reads). */
  publisherPct: number;
  /** The whole machine's busy time. */
  machinePct: number;
  /** Machine minus server, clients and publisher: kernel threads (softirq work of loopback TCP) and unrelated processes. */
  restPct: number;
  /** Unrelated processes using ≥ 5%, if any. */
  topOthers: string;
}

class CpuWindow {
  private readonly server: CpuMeter;
  private readonly server0: { user: number; sys: number };
  private readonly clients0: number[];
  private readonly clientTicks0: { user: number; sys: number };
  constructor(
    private readonly serverPid: number,
    private readonly clients: Clients,
  ) {
    this.server = new CpuMeter(serverPid);
    this.server0 = userSysTicks(serverPid);
    this.clients0 = clients.cpuSeconds();
    this.clientTicks0 = this.clientTicks();
  }
  private clientTicks(): { user: number; sys: number } {
    const sum = { user: 0, sys: 0 };
    for (const c of this.clients.procs) {
      const t = userSysTicks(c.proc.pid);
      sum.user += t.user;
      sum.sys += t.sys;
    }
    return sum;
  }
  read(): Cpu {
    const s = this.server.read();
    const perClient = this.clients.cpuSeconds().map((c, i) => (100 * (c - this.clients0[i])) / s.wallS);
    const clientsPct = perClient.reduce((a, b) => a + b, 0);
    return {
      serverPct: s.pct,
      serverSysPct: sysShare(this.server0, userSysTicks(this.serverPid)),
      clientsPct,
      clientMaxPct: Math.max(...perClient),
      clientsSysPct: sysShare(this.clientTicks0, this.clientTicks()),
      publisherPct: s.selfPct,
      machinePct: s.machinePct,
      restPct: Math.max(0, s.machinePct - s.pct - s.selfPct - clientsPct),
      topOthers: s.topOthers,
    };
  }
}

interface Latency {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

function latency(sorted: number[]): Latency {
  return {
    samples: sorted.length,
    p50Ms: percentileSorted(sorted, 50),
    p99Ms: percentileSorted(sorted, 99),
    maxMs: sorted.length ? sorted[sorted.length - 1] : NaN,
  };
}

interface PhaseResult {
  seconds: number;
  appends: number;
  appendsPerS: number;
  /** Frames per second received during the publishing window. */
  deliveriesPerS: number;
  /** Frames received by the end of the drain. */
  delivered: number;
  /** Deliveries the acknowledged appends should have produced. */
  expected: number;
  /** From the end of the publishing window until the last delivery counted. */
  drainS: number;
  /** Mean payload bytes of the frames received. */
  frameBytes: number;
  publishErrors: number;
  publishErrorDetail: string;
  cpu: Cpu;
  /** Append → frame received. */
  latency: Latency;
  /** Publish request → HTTP response (ours: the append is committed). */
  answer: Latency;
}

interface ServerResult {
  name: ServerName;
  label: string;
  connectS: number;
  rssBeforeBytes: number;
  rssConnectedBytes: number;
  idleBytesPerSocket: number;
  peakRssBytes: number;
  burst: PhaseResult;
  /** Target appends/s of the fixed-rate phase. */
  fixedAppendsPerS: number;
  fixed: PhaseResult;
  socketsLost: number;
}

/** Subscribers of each conversation: connection i subscribes to conversation i mod C. */
function subscribersPerConversation(o: Options): number[] {
  return Array.from({ length: o.conversations }, (_, c) => Math.floor(o.subscribers / o.conversations) + (c < o.subscribers % o.conversations ? 1 : 0));
}

/** A publisher's run: when its window ended, and when every request it made was answered. */
interface Publishing {
  end: number;
  answered: Promise<unknown>;
}

async function phase(
  srvPid: number,
  clients: Clients,
  publisher: Publisher,
  publishFor: (endMs: number) => Promise<Publishing>,
  seconds: number,
): Promise<PhaseResult> {
  const base = await clients.totalsAfter(epochNow());
  const cpu = new CpuWindow(srvPid, clients);
  const start = epochNow();
  const { end: publishEnd, answered } = await publishFor(start + seconds * 1000);
  const cpuRead = cpu.read();
  await answered;
  await clients.totalsAfter(publishEnd);
  const deliveriesPerS = clients.rate(start, publishEnd);
  const drainS = ((await clients.drain(base.frames, publisher.expected)) - publishEnd) / 1000;
  const after = clients.totals();
  const delivered = after.frames - base.frames;
  return {
    seconds: (publishEnd - start) / 1000,
    appends: publisher.appends,
    appendsPerS: (publisher.appends * 1000) / (publishEnd - start),
    deliveriesPerS,
    delivered,
    expected: publisher.expected,
    drainS,
    frameBytes: delivered ? (after.bytes - base.bytes) / delivered : NaN,
    publishErrors: publisher.errors,
    publishErrorDetail: publisher.errorDetail,
    cpu: cpuRead,
    latency: latency(clients.latencies(start, publishEnd)),
    answer: latency(publisher.answerMs.sort((x, y) => x - y)),
  };
}

async function runServer(o: Options, spec: ServerSpec, tmp: string): Promise<ServerResult> {
  const dir = fs.mkdtempSync(path.join(tmp, `${spec.name}-`));
  const port = await freePort();
  const { args, env } = spec.command(o, port, dir);
  log(`${spec.name}: starting ${spec.label} on :${port}`);
  const srv = spawnTracked(spec.name, process.execPath, args, { env, cwd: ROOT, logFile: path.join(dir, 'server.log') });
  let clients: Clients | null = null;
  try {
    await waitHttpReady(port, spec.readyPath, 120_000, srv);
    await spec.prepare(port, o.conversations);
    await sleep(o.settle * 1000);
    const rssBeforeBytes = treeMem(srv.pid).rss;

    clients = new Clients(o, port, spec);
    const connectS = await clients.connected(CONNECT_TIMEOUT_MS);
    await sleep(o.settle * 1000);
    const rssConnectedBytes = treeMem(srv.pid).rss;
    const idleBytesPerSocket = (rssConnectedBytes - rssBeforeBytes) / o.subscribers;
    log(`${spec.name}: ${fmtInt(o.subscribers)} sockets subscribed in ${connectS.toFixed(2)} s; ${fmtInt(idleBytesPerSocket)} B RSS per socket`);

    const mem = new MemSampler(srv.pid);
    const perConv = subscribersPerConversation(o);

    const burstPublisher = new Publisher(spec, port, perConv);
    const burst = await phase(
      srv.pid,
      clients,
      burstPublisher,
      async (endMs) => {
        await Promise.all(
          Array.from({ length: o.inFlight }, async () => {
            while (epochNow() < endMs && !isStopping()) await burstPublisher.publish(epochNow());
          }),
        );
        return { end: epochNow(), answered: Promise.resolve() };
      },
      o.duration,
    );
    log(
      `${spec.name}: burst ${fmtInt(burst.appendsPerS)} appends/s → ${fmtInt(burst.deliveriesPerS)} deliveries/s; ` +
        `server ${fmtPct(burst.cpu.serverPct)}, clients ${fmtPct(burst.cpu.clientsPct)} CPU; ` +
        `${fmtInt(burst.delivered)} of ${fmtInt(burst.expected)} delivered after ${burst.drainS.toFixed(1)} s drain`,
    );

    // Open loop: the i-th append is due at start + i / rate and stamped with that time,
    // so a server that falls behind is charged for the wait (no coordinated omission).
    const fixedAppendsPerS = (o.fixedDeliveries * o.conversations) / o.subscribers;
    const fixedPublisher = new Publisher(spec, port, perConv);
    const fixed = await phase(
      srv.pid,
      clients,
      fixedPublisher,
      async (endMs) => {
        const start = epochNow();
        const periodMs = 1000 / fixedAppendsPerS;
        const inFlight: Promise<void>[] = [];
        // Append i is due at start + i·period (the first one at once): send all that are due, then wait a tick.
        for (let i = 0; ; ) {
          const elapsed = epochNow() - start;
          for (; i * periodMs <= elapsed && start + i * periodMs < endMs; i++) inFlight.push(fixedPublisher.publish(start + i * periodMs));
          if (epochNow() >= endMs || isStopping()) break;
          await sleep(PUBLISH_TICK_MS);
        }
        return { end: epochNow(), answered: Promise.all(inFlight) };
      },
      o.fixedDuration,
    );
    log(
      `${spec.name}: fixed ${fmtInt(fixed.appendsPerS)} appends/s → ${fmtInt(fixed.deliveriesPerS)} deliveries/s; ` +
        `latency p50 ${fmtMs(fixed.latency.p50Ms)}, p99 ${fmtMs(fixed.latency.p99Ms)}, max ${fmtMs(fixed.latency.maxMs)} (${fmtInt(fixed.latency.samples)} samples); ` +
        `publish answered p50 ${fmtMs(fixed.answer.p50Ms)}, p99 ${fmtMs(fixed.answer.p99Ms)}`,
    );
    mem.stop();
    return {
      name: spec.name,
      label: spec.label,
      connectS,
      rssBeforeBytes,
      rssConnectedBytes,
      idleBytesPerSocket,
      peakRssBytes: mem.peakRss,
      burst,
      fixedAppendsPerS,
      fixed,
      socketsLost: clients.totals().lost,
    };
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(`${msg}${msg.includes('--- last lines of') ? '' : tailLog(srv)}`);
  } finally {
    await clients?.stop();
    closeHttpAgent();
    await stopTracked(srv, 60_000);
  }
}

// ---------------------------------------------------------------- report

interface Report {
  startedAt: string;
  command: string;
  options: Options;
  machine: Record<string, string>;
  frameBytes: number;
  results: ServerResult[];
  failures: Partial<Record<ServerName, string>>;
}

const yes = (ok: boolean) => (ok ? '**met**' : '**not met**');

function renderMarkdown(r: Report): string {
  const o = r.options;
  const m = r.machine;
  const maxPct = Number(m.nproc) * 100;
  const perConv = o.subscribers / o.conversations;
  const by = (n: ServerName) => r.results.find((x) => x.name === n);
  const ours = by('ours');
  const ratio = (n: ServerName) => {
    const other = by(n);
    return ours && other ? ours.burst.deliveriesPerS / other.burst.deliveriesPerS : NaN;
  };
  const fmtRatio = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : 'n/a');
  const L: string[] = [];
  L.push('## WebSocket fan-out', '');
  L.push(`Generated ${r.startedAt} by \`${r.command}\`.`, '');
  L.push(
    `Machine: ${m.nproc} × ${m.cpu}, ${m.memory} RAM, ${m.kernel}, Node ${m.node}. Server, ${o.clients} subscriber processes and the publisher ` +
      `share the machine; CPU is % of one core (max ${maxPct}%).`,
    '',
  );
  L.push(
    `Setup: ${fmtInt(o.subscribers)} WebSocket subscribers per server over ${o.conversations} conversations (${fmtInt(perConv)} each), ` +
      `~${r.frameBytes}-byte frames. Burst: closed-loop publisher, ${o.inFlight} HTTP appends in flight, ${o.duration} s. ` +
      `Fixed rate: open loop, ${fmtInt(o.fixedDeliveries)} deliveries/s (${fmtInt((o.fixedDeliveries * o.conversations) / o.subscribers)} appends/s), ` +
      `${o.fixedDuration} s, latency from the scheduled send time to arrival, sampled every ${o.sampleEvery}th frame per connection.`,
    '',
  );
  L.push('| server | subscribers | connect | idle RSS / socket | appends/s | deliveries/s | server CPU | clients CPU | latency at fixed rate p50 / p99 / max |');
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of r.results) {
    L.push(
      `| ${x.label} | ${fmtInt(o.subscribers)} | ${x.connectS.toFixed(2)} s | ${fmtInt(x.idleBytesPerSocket)} B | ${fmtInt(x.burst.appendsPerS)} | ` +
        `${fmtInt(x.burst.deliveriesPerS)} | ${fmtPct(x.burst.cpu.serverPct)} | ${fmtPct(x.burst.cpu.clientsPct)} | ` +
        `${fmtMs(x.fixed.latency.p50Ms)} / ${fmtMs(x.fixed.latency.p99Ms)} / ${fmtMs(x.fixed.latency.maxMs)} |`,
    );
  }
  for (const [name, why] of Object.entries(r.failures)) L.push(`| ${name} | failed: ${why.split('\n')[0].replace(/\|/g, '\\|')} ||||||||`);
  L.push('');
  L.push(`Deliveries/s in the burst, same run: ours / ws = ${fmtRatio(ratio('ws'))}, ours / Socket.IO = ${fmtRatio(ratio('socketio'))}.`, '');

  L.push('### Targets (from the issue)', '');
  L.push('| target | measured (ours) | |', '|---|---|---|');
  if (ours) {
    const fixedAchieved = ours.fixed.deliveriesPerS;
    const atTargetRate = o.fixedDeliveries === TARGET_P99_AT_DELIVERIES_PER_S && fixedAchieved >= 0.95 * TARGET_P99_AT_DELIVERIES_PER_S;
    L.push(
      `| ≥ ${fmtInt(TARGET_DELIVERIES_PER_S)} deliveries/s | ${fmtInt(ours.burst.deliveriesPerS)} deliveries/s | ${yes(ours.burst.deliveriesPerS >= TARGET_DELIVERIES_PER_S)} |`,
      `| ≥ ${TARGET_VS_SOCKETIO}× Socket.IO deliveries/s | ${fmtRatio(ratio('socketio'))} | ${Number.isFinite(ratio('socketio')) ? yes(ratio('socketio') >= TARGET_VS_SOCKETIO) : 'not measured'} |`,
      `| p99 append→receive ≤ ${TARGET_P99_MS} ms at ${fmtInt(TARGET_P99_AT_DELIVERIES_PER_S)} deliveries/s | p99 ${fmtMs(ours.fixed.latency.p99Ms)} at ${fmtInt(fixedAchieved)} deliveries/s | ` +
        `${atTargetRate ? yes(ours.fixed.latency.p99Ms <= TARGET_P99_MS) : o.fixedDeliveries === TARGET_P99_AT_DELIVERIES_PER_S ? '**not met** (rate not sustained)' : 'not measured at that rate'} |`,
      `| idle socket ≤ 4 KB (${fmtInt(TARGET_IDLE_BYTES)} B) RSS | ${fmtInt(ours.idleBytesPerSocket)} B | ${yes(ours.idleBytesPerSocket <= TARGET_IDLE_BYTES)} |`,
    );
  } else L.push('| all | our server was not run | |');
  L.push('');

  L.push('### Details', '');
  L.push(
    '"delivered / expected": frames received by the end of the drain against acknowledged appends × subscribers of their conversation ' +
      '(a publish that failed on the client side may still have been delivered); ' +
      `"drain": from the end of the publishing window until the last of them arrived (± ${REPORT_MS / 1000} s; the wait stops when none came for ` +
      `${DRAIN_QUIET_MS / 1000} s, or after ${DRAIN_MAX_MS / 1000} s). Burst latency is measured under saturation (closed loop), so it is mostly queueing. ` +
      '"rest": machine minus server, clients and publisher, i.e. kernel threads (loopback TCP softirq work) and unrelated processes.',
    '',
  );
  L.push(
    '| server | phase | appends/s | deliveries/s | delivered / expected | drain | frame bytes | latency p50 / p99 / max (samples) | publish answered p50 / p99 | server CPU (kernel share) | server CPU per delivery | clients CPU (busiest; kernel share) | publisher CPU | machine CPU | rest | publish errors |',
  );
  L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of r.results) {
    for (const [phaseName, p] of [
      ['burst', x.burst],
      [`fixed ${fmtInt(x.fixedAppendsPerS)}/s`, x.fixed],
    ] as const) {
      const c = p.cpu;
      L.push(
        `| ${x.label} | ${phaseName} | ${fmtInt(p.appendsPerS)} | ${fmtInt(p.deliveriesPerS)} | ${fmtInt(p.delivered)} / ${fmtInt(p.expected)} | ${p.drainS.toFixed(1)} s | ` +
          `${p.frameBytes.toFixed(0)} | ${fmtMs(p.latency.p50Ms)} / ${fmtMs(p.latency.p99Ms)} / ${fmtMs(p.latency.maxMs)} (${fmtInt(p.latency.samples)}) | ` +
          `${fmtMs(p.answer.p50Ms)} / ${fmtMs(p.answer.p99Ms)} | ` +
          `${fmtPct(c.serverPct)} (${fmtPct(c.serverSysPct)}) | ${((c.serverPct * 10_000) / p.deliveriesPerS).toFixed(1)} µs | ` +
          `${fmtPct(c.clientsPct)} (${fmtPct(c.clientMaxPct)}; ${fmtPct(c.clientsSysPct)}) | ${fmtPct(c.publisherPct)} | ${fmtPct(c.machinePct)} | ${fmtPct(c.restPct)}${c.topOthers ? ` (${c.topOthers})` : ''} | ` +
          `${fmtInt(p.publishErrors)}${p.publishErrorDetail ? ` (${p.publishErrorDetail.replace(/\|/g, '\\|')})` : ''} |`,
      );
    }
  }
  L.push('');
  L.push('| server | RSS before sockets | RSS with sockets, idle | peak RSS during the phases | sockets lost |', '|---|---:|---:|---:|---:|');
  for (const x of r.results) {
    L.push(`| ${x.label} | ${fmtMiB(x.rssBeforeBytes)} | ${fmtMiB(x.rssConnectedBytes)} | ${fmtMiB(x.peakRssBytes)} | ${fmtInt(x.socketsLost)} |`);
  }
  L.push('');
  if (r.results.some((x) => x.burst.cpu.topOthers || x.fixed.cpu.topOthers)) {
    L.push('**Warning:** unrelated processes used the CPU during some phases (named under "rest"): on a 2-core machine that skews the numbers.', '');
  }

  L.push('### Method', '');
  L.push(
    '- Each server runs as its own process on a free 127.0.0.1 port and is stopped by PID after its phases; ours with a fresh data directory, ' +
      `\`FLEETLM_STREAM_MAX_CONNECTIONS\` ≥ subscribers. The reference servers: \`bench/fanout-uws-server.ts\` (\`app.publish(conv, body)\` to a uWS topic per conversation: no log, no durability), \`bench/fanout-ws-server.ts\` (one \`ws.send(text)\` per subscriber) and ` +
      '`bench/fanout-socketio-server.ts` (`io.to(conv).emit("m", object)`, WebSocket transport only).',
    `- Subscribers: ${o.clients} processes of \`bench/fanout-client.ts\`, the same for every server: raw \`net\` sockets, HTTP upgrade, frames delimited by ` +
      'their length bytes and counted without decoding (Engine.IO/Socket.IO handshake, room subscription with ack and ping/pong for Socket.IO). ' +
      'A delivery is a message frame: our pings and Engine.IO control packets are not counted.',
    '- deliveries/s: frames received by all clients during the publishing window, from the clients\' own counters (reported every ' +
      `${REPORT_MS} ms). appends/s: acknowledged publishes per second. Idle RSS per socket: (server RSS ${o.settle} s after the last ` +
      `subscription − RSS before the first connection) / subscribers.`,
    '- Latency: the publisher stamps each message with its send time (burst) or scheduled send time (fixed rate; open loop, so a late server is ' +
      'charged for the wait); a client computes now − stamp on the same clock for a sample of frames. p50/p99/max are over those samples. ' +
      '"publish answered": the publish request\'s round trip; ours answers once the append is committed, the reference servers ' +
      'once their broadcast call over the room has returned.',
    '- CPU: utime+stime from /proc over the publishing window, % of one core. "publisher CPU" is this orchestrator process; "machine" is ' +
      'the busy time of all cores from /proc/stat.',
    '',
  );
  return L.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  installCleanupHandlers();
  const opts = parseOptions(process.argv.slice(2), process.env);
  if (opts.only.includes('ours') && !fs.existsSync(opts.server)) throw new Error(`${path.relative(ROOT, opts.server)} does not exist (npm run build)`);
  const fdLimit = openFilesHardLimit();
  const clientConns = Math.ceil(opts.subscribers / opts.clients);
  if (opts.subscribers + FD_MARGIN > fdLimit || clientConns + FD_MARGIN > fdLimit) {
    throw new Error(`${fmtInt(opts.subscribers)} sockets need more open files than the hard limit (ulimit -Hn ${fdLimit}) allows: use fewer --subscribers or raise it`);
  }
  fs.mkdirSync(opts.tmp, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(opts.tmp, 'fleetlm-bench-fanout-'));
  onExit(() => {
    if (opts.keep) log(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  });
  const npmCmd = process.env.npm_lifecycle_event ? `npm run ${process.env.npm_lifecycle_event}` : '';
  const args = process.argv.slice(2);
  const report: Report = {
    startedAt: new Date().toISOString(),
    command: npmCmd
      ? [npmCmd, ...(args.length ? ['--', ...args] : [])].join(' ')
      : ['node', path.relative(ROOT, process.argv[1] ?? ''), ...args].join(' '),
    options: opts,
    machine: machineInfo(),
    frameBytes: FRAME_BYTES,
    results: [],
    failures: {},
  };
  log(`${fmtInt(opts.subscribers)} subscribers over ${opts.conversations} conversations, ${opts.clients} client processes; servers ${opts.only.join(',')}`);
  for (const spec of SERVERS.filter((s) => opts.only.includes(s.name))) {
    if (isStopping()) break;
    try {
      report.results.push(await runServer(opts, spec, tmp));
    } catch (e) {
      if (isStopping()) break;
      const msg = (e as Error).message;
      report.failures[spec.name] = msg;
      log(`${spec.name} FAILED: ${msg}`);
    }
  }

  if (isStopping()) return 130; // interrupted: keep the previous results file
  const md = renderMarkdown(report);
  writeResults(ROOT, opts.out, md, report);
  return Object.keys(report.failures).length ? 1 : 0;
}

runBench(main);
