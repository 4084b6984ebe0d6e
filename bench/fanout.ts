// WebSocket fan-out (`npm run bench:fanout`): our node against a `ws`-library
// broadcast server and a Socket.IO server, with the same subscriber clients
// (bench/fanout-client.ts: raw sockets, frames counted, not parsed) in their
// own processes, in one run. Per server:
//   connect   --subscribers sockets over --conversations conversations; idle
//             RSS per socket = (server RSS after − before) / sockets
//   burst     a publisher appends as fast as it can (--in-flight requests)
//             for --duration s: deliveries/s = frames received per second
//   fixed     --fixed-rate appends/s (100/s × 1,000 subscribers per
//             conversation = 100,000 deliveries/s) for --fixed-duration s:
//             append→receive latency from stamps in the messages
// Writes bench/results/fanout-latest.{md,json}.
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CpuMeter,
  fmtInt,
  fmtMs,
  freePort,
  installCleanupHandlers,
  log,
  machineInfo,
  percentileSorted,
  spawnTracked,
  stopAll,
  stopTracked,
  treeCpuSeconds,
  treeMem,
  waitHttpReady,
  type Tracked,
} from './lib.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = path.join(ROOT, 'dist', 'bench');
const PAYLOAD_BYTES = 300;

interface Options {
  subscribers: number;
  conversations: number;
  clients: number;
  duration: number;
  fixedRate: number;
  fixedDuration: number;
  inFlight: number;
  only: string[];
}

function options(): Options {
  const kv = new Map<string, string>();
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('BENCH_') && v) kv.set(k.slice(6).toLowerCase().replace(/_/g, '-'), v);
  for (const a of process.argv.slice(2)) {
    const m = /^--([a-z-]+)=(.+)$/.exec(a);
    if (!m) throw new Error(`bad argument ${a} (see the header of bench/fanout.ts)`);
    kv.set(m[1], m[2]);
  }
  const int = (k: string, d: number) => (kv.has(k) ? Number(kv.get(k)) : d);
  return {
    subscribers: int('subscribers', 10_000),
    conversations: int('conversations', 10),
    clients: int('clients', 2),
    duration: int('duration', 10),
    fixedRate: int('fixed-rate', 100),
    fixedDuration: int('fixed-duration', 10),
    inFlight: int('in-flight', 16),
    only: (kv.get('only') ?? 'ours,ws,socketio').split(','),
  };
}

interface Target {
  name: string;
  start(port: number, tmp: string): Tracked;
  ready(port: number, t: Tracked): Promise<void>;
  subscribePath: string;
  protocol: 'raw' | 'socketio';
  prepare(port: number, conversations: number): Promise<void>;
  publish(port: number, conv: number, text: string): Promise<void>;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function post(port: number, urlPath: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: urlPath, agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const stampedText = () => {
  const t = `t=${(performance.timeOrigin + performance.now()).toFixed(3)} `;
  return t + 'x'.repeat(Math.max(0, PAYLOAD_BYTES - 120 - t.length));
};

const reference = (name: string, script: string, protocol: 'raw' | 'socketio', subscribePath: string): Target => ({
  name,
  protocol,
  subscribePath,
  start: (port) => spawnTracked(name, process.execPath, [path.join(DIST, script), String(port)]),
  ready: async (port, t) => void (await waitForPort(port, t)),
  prepare: async () => {},
  publish: async (port, conv, text) => {
    const s = await post(port, `/publish/${conv}`, text);
    if (s !== 201) throw new Error(`${name}: publish ${s}`);
  },
});

async function waitForPort(port: number, t: Tracked): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (t.child.exitCode !== null) throw new Error(`${t.name} exited`);
    const up = await new Promise<boolean>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/', method: 'GET' }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on('error', () => resolve(false));
      req.end();
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${t.name} did not listen`);
}

const TARGETS: Target[] = [
  {
    name: 'ours',
    protocol: 'raw',
    subscribePath: '/v1/conversations/fan-{c}/stream',
    start: (port, tmp) =>
      spawnTracked('ours', process.execPath, [path.join(ROOT, 'dist', 'runtime', 'main.js')], {
        env: {
          ...process.env,
          PORT: String(port),
          HOST: '127.0.0.1',
          FLEETLM_RAFT_DATA_DIR: path.join(tmp, 'data'),
          FLEETLM_LOG_LEVEL: 'warn',
          FLEETLM_STREAM_MAX_CONNECTIONS: '100000',
        },
      }),
    ready: async (port, t) => void (await waitHttpReady(port, '/health/ready', 60_000, t)),
    prepare: async (port, conversations) => {
      for (let c = 0; c < conversations; c++) if ((await putConversation(port, c)) !== 200) throw new Error('PUT failed');
    },
    publish: async (port, conv, text) => {
      const s = await post(port, `/v1/conversations/fan-${conv}/messages`, JSON.stringify({ message: { role: 'user', parts: [{ type: 'text', text }], token_count: 1 } }));
      if (s !== 201) throw new Error(`ours: append ${s}`);
    },
  },
  reference('ws', 'fanout-ws-server.js', 'raw', '/sub/{c}'),
  reference('socketio', 'fanout-socketio-server.js', 'socketio', '/socket.io/?EIO=4&transport=websocket'),
];

function putConversation(port: number, c: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: `/v1/conversations/fan-${c}`, agent, headers: { 'content-type': 'application/json', 'content-length': 2 } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end('{}');
  });
}

interface ClientStats {
  frames: number;
  bytes: number;
  opened: number;
  closed: number;
  samples: number[];
}

/** The subscriber processes; totals are summed over them. */
class Clients {
  private readonly procs: ChildProcess[] = [];
  private readonly last: ClientStats[] = [];
  samples: number[] = [];

  constructor(o: Options, port: number, t: Target) {
    const per = Math.ceil(o.subscribers / o.clients);
    for (let i = 0; i < o.clients; i++) {
      const conns = Math.min(per, o.subscribers - i * per);
      const p = fork(path.join(DIST, 'fanout-client.js'), [`--port=${port}`, `--path=${t.subscribePath}`, `--conns=${conns}`, `--convs=${o.conversations}`, `--first=${i * per}`, `--protocol=${t.protocol}`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      this.last.push({ frames: 0, bytes: 0, opened: 0, closed: 0, samples: [] });
      p.on('message', (m: ClientStats) => {
        this.last[i] = m;
        for (const s of m.samples) this.samples.push(s);
      });
      this.procs.push(p);
    }
  }

  get frames(): number {
    return this.last.reduce((s, c) => s + c.frames, 0);
  }
  get opened(): number {
    return this.last.reduce((s, c) => s + c.opened, 0);
  }
  get closed(): number {
    return this.last.reduce((s, c) => s + c.closed, 0);
  }
  cpuSeconds(): number {
    return this.procs.reduce((s, p) => s + (p.pid ? treeCpuSeconds(p.pid) : 0), 0);
  }
  stop(): void {
    for (const p of this.procs) p.kill('SIGKILL');
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Result {
  server: string;
  subscribers: number;
  connectS: number;
  idleBytesPerSocket: number;
  burst: { appendsPerS: number; deliveriesPerS: number; serverCpuPct: number; clientsCpuPct: number };
  fixed: { appendsPerS: number; deliveriesPerS: number; p50Ms: number; p99Ms: number; maxMs: number; samples: number };
  lost: number;
}

async function runTarget(o: Options, t: Target, tmp: string): Promise<Result> {
  const port = await freePort();
  const srv = t.start(port, tmp);
  try {
    await t.ready(port, srv);
    await t.prepare(port, o.conversations);
    await sleep(1000);
    const rssBefore = treeMem(srv.pid).rss;
    const c0 = Date.now();
    const clients = new Clients(o, port, t);
    while (clients.opened < o.subscribers) {
      if (Date.now() - c0 > 120_000) throw new Error(`${t.name}: only ${clients.opened} of ${o.subscribers} sockets opened`);
      await sleep(100);
    }
    const connectS = (Date.now() - c0) / 1000;
    await sleep(3000); // Socket.IO joins rooms after connecting; let memory settle
    const idle = (treeMem(srv.pid).rss - rssBefore) / o.subscribers;
    log(`${t.name}: ${fmtInt(o.subscribers)} sockets in ${connectS.toFixed(1)} s, ${fmtInt(idle)} B RSS each`);

    // Burst: as fast as the publisher goes.
    let appends = 0;
    const f0 = clients.frames;
    const cpu = new CpuMeter(srv.pid);
    const cc0 = clients.cpuSeconds();
    const t0 = Date.now();
    const end = t0 + o.duration * 1000;
    await Promise.all(
      Array.from({ length: o.inFlight }, async (_, k) => {
        for (let n = k; Date.now() < end; n += o.inFlight) {
          await t.publish(port, n % o.conversations, stampedText());
          appends++;
        }
      }),
    );
    await sleep(1000); // deliveries in flight
    const wall = (Date.now() - t0) / 1000;
    const serverCpu = cpu.read();
    const burst = {
      appendsPerS: appends / (wall - 1),
      deliveriesPerS: (clients.frames - f0) / wall,
      serverCpuPct: serverCpu.pct,
      clientsCpuPct: ((clients.cpuSeconds() - cc0) / wall) * 100,
    };
    log(`${t.name}: burst ${fmtInt(burst.appendsPerS)} appends/s → ${fmtInt(burst.deliveriesPerS)} deliveries/s`);

    // Fixed rate, latency from the stamps.
    await sleep(1000);
    clients.samples = [];
    const g0 = clients.frames;
    const fixedStart = Date.now();
    let sent = 0;
    const pending: Promise<void>[] = [];
    while (Date.now() - fixedStart < o.fixedDuration * 1000) {
      const due = Math.floor(((Date.now() - fixedStart) / 1000) * o.fixedRate);
      for (; sent < due; sent++) pending.push(t.publish(port, sent % o.conversations, stampedText()));
      await sleep(2);
    }
    await Promise.all(pending);
    await sleep(1500);
    const fixedWall = (Date.now() - fixedStart) / 1000;
    const lat = clients.samples.sort((a, b) => a - b);
    const fixed = {
      appendsPerS: sent / o.fixedDuration,
      deliveriesPerS: (clients.frames - g0) / fixedWall,
      p50Ms: percentileSorted(lat, 50),
      p99Ms: percentileSorted(lat, 99),
      maxMs: lat[lat.length - 1],
      samples: lat.length,
    };
    log(`${t.name}: fixed ${fmtInt(fixed.appendsPerS)} appends/s, latency p50 ${fmtMs(fixed.p50Ms)} p99 ${fmtMs(fixed.p99Ms)}`);
    const lost = clients.closed;
    clients.stop();
    return { server: t.name, subscribers: o.subscribers, connectS, idleBytesPerSocket: idle, burst, fixed, lost };
  } finally {
    await stopTracked(srv);
  }
}

async function main(): Promise<void> {
  installCleanupHandlers();
  const o = options();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-bench-fanout-'));
  const results: Result[] = [];
  try {
    for (const t of TARGETS.filter((x) => o.only.includes(x.name))) results.push(await runTarget(o, t, tmp));
  } finally {
    await stopAll();
    agent.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const by = (n: string) => results.find((r) => r.server === n);
  const ours = by('ours');
  const ratio = (n: string) => (ours && by(n) ? (ours.burst.deliveriesPerS / by(n)!.burst.deliveriesPerS).toFixed(2) + '×' : 'n/a');
  const md = [
    '## WebSocket fan-out',
    '',
    `Generated ${new Date().toISOString()} by \`npm run bench:fanout\`: ${fmtInt(o.subscribers)} subscribers over ${o.conversations} conversations ` +
      `(${fmtInt(o.subscribers / o.conversations)} each), ${o.clients} client processes, ~${PAYLOAD_BYTES}-byte messages. ` +
      `Machine: ${Object.values(machineInfo()).join(', ')}. Server, clients and publisher share the 2 cores.`,
    '',
    '| server | connect | idle RSS / socket | burst appends/s | deliveries/s | server CPU | clients CPU | fixed appends/s | deliveries/s | latency p50 / p99 / max | sockets lost |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...results.map(
      (r) =>
        `| ${r.server} | ${r.connectS.toFixed(1)} s | ${fmtInt(r.idleBytesPerSocket)} B | ${fmtInt(r.burst.appendsPerS)} | ${fmtInt(r.burst.deliveriesPerS)} | ` +
        `${r.burst.serverCpuPct.toFixed(0)}% | ${r.burst.clientsCpuPct.toFixed(0)}% | ${fmtInt(r.fixed.appendsPerS)} | ${fmtInt(r.fixed.deliveriesPerS)} | ` +
        `${fmtMs(r.fixed.p50Ms)} / ${fmtMs(r.fixed.p99Ms)} / ${fmtMs(r.fixed.maxMs)} | ${r.lost} |`,
    ),
    '',
    `Ours vs ws: ${ratio('ws')} the deliveries/s; vs Socket.IO: ${ratio('socketio')} (same run).`,
    '',
    'Targets (issue): ≥ 1,000,000 deliveries/s; ≥ 5× Socket.IO; p99 append→receive ≤ 50 ms at 100,000 deliveries/s; idle socket ≤ 4 KB RSS.',
    '',
  ].join('\n');
  fs.mkdirSync(path.join(ROOT, 'bench', 'results'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'bench', 'results', 'fanout-latest.md'), md);
  fs.writeFileSync(path.join(ROOT, 'bench', 'results', 'fanout-latest.json'), JSON.stringify({ options: o, results }, null, 2) + '\n');
  process.stdout.write(md);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
