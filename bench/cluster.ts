// bench/cluster: a 3-node cluster on this machine (3 node processes + one
// nats-server on loopback), the same load as bench/append spread over the
// three nodes, then failover after kill -9.
//
//   npm run bench:cluster                      # 15 s burst, 15 s at 5,000/s, 20 kills, JetStream peer
//   node dist/bench/cluster.js --duration=5 --kills=3
//
// Phases:
//   burst:    3 × wrk -t1 -c21 (63 in flight; --connections), one per node, 300-byte appends
//             over 1,000 conversations (bench/lua/append.lua); an append is
//             acknowledged once fsync'd on a majority of its group's replicas.
//   fixed:    3 × bench/openloop.js at rate/3 each, latency from the scheduled
//             send time (open loop).
//   failover: kill -9 a random node, then append to 60 conversations through
//             the survivors until each has one 201; the slowest is the kill's
//             failover time (conversations whose groups the victim led wait
//             for an election). Then restart the victim and wait for ready.
//   ceiling:  bench/cluster-ceiling-server.ts on 3 processes + a nats-server:
//             the least a majority-durable append needs on this stack (bare
//             uWS + NATS, fdatasync on 2 of 3, no Raft or state machine),
//             same load as the burst, twice: each node leading what reaches
//             it (direct), and each conversation led by one node, the others
//             forwarding to it as ours do (forward); each also at the fixed
//             rate. --skip-ceiling leaves both out.
//   peer:     a 3-server NATS JetStream cluster with an R3 file stream over
//             `conv.>` (a subject per conversation), the same message body,
//             3 × bench/js-publisher.js with 21 publishes in flight (--connections), one per
//             server. JetStream acknowledges without fsync (its default; the
//             Debian nats-server 2.9 cannot sync every write).
// Every process is started on free loopback ports in a temp dir and stopped by
// PID. Results: bench/results/cluster-latest.md (+ .json).
//
// Options (argv --name=value or env BENCH_NAME): --duration=15 --warmup=3
// --rate=5000 --fixed-duration=15 --kills=20 --workers=1 (per node)
// --conversations=1000 --connections=21 (in flight per node, every phase)
// --out=bench/results/cluster-latest.md --tmp=<dir>
// --node-args='--cpu-prof --cpu-prof-dir=prof' (extra node flags for the
// cluster's processes, e.g. to profile them)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DEFAULT_TEXT,
  appendBody,
  fmtInt,
  fmtMs,
  freePort,
  httpRequest,
  installCleanupHandlers,
  log,
  machineInfo,
  wrkResult,
  percentileSorted,
  pool,
  runMeasured,
  sleep,
  spawnTracked,
  stopTracked,
  treeCpuSeconds,
  waitHttpReady,
  which,
  benchArgs,
  runBench,
  writeResults,
  type Tracked,
  type WrkParsed,
  SERVER_NODE_FLAGS,
} from './lib.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const NAMES = ['n1', 'n2', 'n3'];

interface Options {
  duration: number;
  warmup: number;
  rate: number;
  fixedDuration: number;
  kills: number;
  workers: number;
  conversations: number;
  connections: number;
  skipJetstream: boolean;
  skipCeiling: boolean;
  nodeArgs: string[];
  out: string;
  tmp: string;
}

const OPTION_NAMES = ['duration', 'warmup', 'rate', 'fixed-duration', 'kills', 'workers', 'conversations', 'connections', 'skip-jetstream', 'skip-ceiling', 'node-args', 'out', 'tmp'];

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): Options {
  const kv = benchArgs(argv, env, OPTION_NAMES, 'bench/cluster.ts');
  const get = (name: string, dflt: string) => kv.get(name) ?? dflt;
  const num = (name: string, dflt: number) => {
    const v = Number(get(name, String(dflt)));
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} must be a non-negative number`);
    return v;
  };
  return {
    duration: num('duration', 15),
    warmup: num('warmup', 3),
    rate: num('rate', 5000),
    fixedDuration: num('fixed-duration', 15),
    kills: num('kills', 20),
    workers: num('workers', 1),
    conversations: num('conversations', 1000),
    connections: num('connections', 21),
    skipJetstream: get('skip-jetstream', 'false') !== 'false',
    skipCeiling: get('skip-ceiling', 'false') !== 'false',
    nodeArgs: get('node-args', '').split(' ').filter((a) => a !== ''),
    out: path.resolve(ROOT, get('out', 'bench/results/cluster-latest.md')),
    tmp: get('tmp', os.tmpdir()),
  };
}

interface Node {
  name: string;
  port: number;
  dataDir: string;
  proc: Tracked | null;
}

class Cluster {
  readonly nodes: Node[];
  constructor(
    private readonly tmp: string,
    private readonly natsUrl: string,
    private readonly workers: number,
    private readonly nodeArgs: string[],
    ports: number[],
  ) {
    this.nodes = NAMES.map((name, i) => ({ name, port: ports[i], dataDir: path.join(tmp, name), proc: null }));
  }

  async start(n: Node): Promise<number> {
    const t0 = performance.now();
    n.proc = spawnTracked(n.name, process.execPath, [...SERVER_NODE_FLAGS, ...this.nodeArgs, path.join(ROOT, 'dist', 'runtime', 'main.js')], {
      env: {
        ...process.env,
        NODE_NAME: n.name,
        CLUSTER_NODES: NAMES.join(','),
        NATS_URL: this.natsUrl,
        PORT: String(n.port),
        HOST: '127.0.0.1',
        FLEETLM_RAFT_DATA_DIR: n.dataDir,
        FLEETLM_WORKERS: String(this.workers),
        MALLOC_ARENA_MAX: '2',
      },
      cwd: ROOT,
      logFile: path.join(this.tmp, `${n.name}.log`),
      stopSignal: 'SIGTERM',
    });
    await waitHttpReady(n.port, '/health/ready', 60_000);
    return performance.now() - t0;
  }

  live(): Node[] {
    return this.nodes.filter((n) => n.proc !== null);
  }

  cpuSeconds(): number {
    return this.nodes.reduce((s, n) => s + (n.proc ? treeCpuSeconds(n.proc.pid) : 0), 0);
  }
}

async function wrkOn(port: number, connections: number, seconds: number, conversations: number, tmp: string): Promise<{ w: WrkParsed; cpuS: number }> {
  const m = await runMeasured(
    'wrk',
    'wrk',
    ['-t1', `-c${connections}`, `-d${Math.ceil(seconds)}s`, '--latency', '--timeout', '10s', '-s', path.join(ROOT, 'bench', 'lua', 'append.lua'), `http://127.0.0.1:${port}`, '--', String(conversations), DEFAULT_TEXT, '0', 'bench-'],
    { timeoutMs: (seconds + 60) * 1000, tmpDir: tmp },
  );
  return { w: wrkResult(m), cpuS: m.userS + m.sysS };
}

interface OpenLoopOut {
  ok: number;
  errors: number;
  scheduled: number;
  unanswered: number;
  achievedRate: number;
  latencyMs: { p50: number | string; p99: number | string; max: number | string };
}

async function openLoopOn(port: number, rate: number, seconds: number, conversations: number, connections: number, tmp: string): Promise<OpenLoopOut> {
  const m = await runMeasured(
    'openloop',
    process.execPath,
    [path.join(ROOT, 'dist', 'bench', 'openloop.js'), `--port=${port}`, '--proto=http', `--rate=${rate}`, `--duration=${seconds}`, `--connections=${connections}`, `--conversations=${conversations}`],
    { timeoutMs: (seconds + 60) * 1000, tmpDir: tmp },
  );
  if (m.code !== 0) throw new Error(`openloop exited ${m.code}: ${m.stderr.slice(-1000)}`);
  return JSON.parse(m.stdout) as OpenLoopOut;
}

/** Time from the kill until each of `convs` has taken one append through a survivor; the slowest. */
async function failoverMs(cluster: Cluster, convs: number[]): Promise<{ slowestMs: number; errors: number }> {
  const t0 = performance.now();
  let errors = 0;
  const done = await Promise.all(
    convs.map(async (c, k) => {
      for (;;) {
        const live = cluster.live();
        const n = live[k % live.length];
        try {
          const r = await httpRequest(n.port, 'POST', `/v1/conversations/bench-${c}/messages`, appendBody(), 10_000);
          if (r.status === 201) return performance.now() - t0;
          if (r.status !== 503) errors++;
        } catch {
          errors++;
        }
        if (performance.now() - t0 > 30_000) return Number.POSITIVE_INFINITY;
        await sleep(20);
      }
    }),
  );
  return { slowestMs: Math.max(...done), errors };
}

interface PublisherOut {
  acked: number;
  errors: number;
  rate: number;
  p50Ms: number;
  p99Ms: number;
  cpuS: number;
  wallS: number;
}

/** The peer: 3 clustered nats-servers with JetStream and an R3 stream, loaded like our cluster. */
async function benchJetStream(opts: Options, tmp: string, natsBin: string): Promise<{ rate: number; perServer: PublisherOut[]; serverCpuPct: number; genCpuPct: number }> {
  const client = await Promise.all(NAMES.map(() => freePort()));
  const route = await Promise.all(NAMES.map(() => freePort()));
  const servers = NAMES.map((n, i) => {
    const dir = path.join(tmp, `js-${n}`);
    fs.mkdirSync(dir, { recursive: true });
    const conf = path.join(dir, 'nats.conf');
    const routes = route.filter((_, k) => k !== i).map((p) => `nats-route://127.0.0.1:${p}`);
    fs.writeFileSync(
      conf,
      [
        `server_name: js-${n}`,
        `listen: 127.0.0.1:${client[i]}`,
        `jetstream { store_dir: "${path.join(dir, 'store')}" }`,
        `cluster { name: bench, listen: 127.0.0.1:${route[i]}, routes: [${routes.join(', ')}] }`,
      ].join('\n'),
    );
    return spawnTracked(`js-${n}`, natsBin, ['-c', conf], { logFile: path.join(dir, 'log') });
  });
  const { connect } = await import('@nats-io/transport-node');
  const nc = await connect({ servers: `nats://127.0.0.1:${client[0]}`, maxReconnectAttempts: 20 });
  const config = { name: 'BENCH', subjects: ['conv.>'], num_replicas: 3, storage: 'file' };
  for (let attempt = 0; ; attempt++) {
    const r = await nc.request('$JS.API.STREAM.CREATE.BENCH', JSON.stringify(config), { timeout: 5000 }).catch((e: Error) => e);
    const text = r instanceof Error ? r.message : new TextDecoder().decode(r.data);
    if (!(r instanceof Error) && !text.includes('"error"')) break;
    if (attempt > 40) throw new Error(`JetStream stream not created: ${text}`);
    await sleep(500); // the JetStream meta group elects a leader first
  }
  await nc.close();
  const publish = (i: number, seconds: number) =>
    runMeasured(
      'js-publisher',
      process.execPath,
      [path.join(ROOT, 'dist', 'bench', 'js-publisher.js'), `--server=nats://127.0.0.1:${client[i]}`, `--seconds=${seconds}`, `--concurrency=${opts.connections}`, `--conversations=${opts.conversations}`],
      { timeoutMs: (seconds + 60) * 1000, tmpDir: tmp },
    );
  await Promise.all(NAMES.map((_, i) => publish(i, opts.warmup)));
  const cpu0 = servers.reduce((s, t) => s + treeCpuSeconds(t.pid), 0);
  const t0 = performance.now();
  const runs = await Promise.all(NAMES.map((_, i) => publish(i, opts.duration)));
  const wallS = (performance.now() - t0) / 1000;
  const serverCpuPct = ((servers.reduce((s, t) => s + treeCpuSeconds(t.pid), 0) - cpu0) / wallS) * 100;
  for (const r of runs) if (r.code !== 0) throw new Error(`js-publisher exited ${r.code}: ${r.stderr.slice(-1000)}`);
  const perServer = runs.map((r) => JSON.parse(r.stdout) as PublisherOut);
  await Promise.all(servers.map((t) => stopTracked(t)));
  return {
    rate: perServer.reduce((s, p) => s + p.rate, 0),
    perServer,
    serverCpuPct,
    genCpuPct: (runs.reduce((s, r) => s + r.userS + r.sysS, 0) / wallS) * 100,
  };
}

/** One wrk run per node, as the JSON report has it. */
function perNodeJson(runs: WrkParsed[]) {
  return runs.map((w, i) => ({ node: NAMES[i], appendsPerS: w.status201 / w.durationS, p50Ms: w.p50Ms, p99Ms: w.p99Ms, errors: w.non2xx + w.socketErrors }));
}

/** Runs `phase`; also what the servers used meanwhile (`cpuS`: their CPU seconds so far), in % of one core. */
async function measured<T>(cpuS: () => number, phase: () => Promise<T>): Promise<{ out: T; wallS: number; cpuPct: number }> {
  const cpu0 = cpuS();
  const t0 = performance.now();
  const out = await phase();
  const wallS = (performance.now() - t0) / 1000;
  return { out, wallS, cpuPct: ((cpuS() - cpu0) / wallS) * 100 };
}

/** The warm-up, then the burst: one wrk per port, --connections each. */
async function burstOn(ports: number[], opts: Options, tmp: string, cpuS: () => number) {
  await Promise.all(ports.map((p) => wrkOn(p, opts.connections, opts.warmup, opts.conversations, tmp)));
  const { out: runs, wallS, cpuPct } = await measured(cpuS, () => Promise.all(ports.map((p) => wrkOn(p, opts.connections, opts.duration, opts.conversations, tmp))));
  return {
    perNode: runs.map((r) => r.w),
    rate: runs.reduce((s, r) => s + r.w.status201 / r.w.durationS, 0),
    serverCpuPct: cpuPct,
    genCpuPct: (runs.reduce((s, r) => s + r.cpuS, 0) / wallS) * 100,
  };
}

/** The fixed-rate phase: one open-loop generator per port at a third of --rate. */
async function fixedOn(ports: number[], opts: Options, tmp: string, cpuS: () => number) {
  const { out, cpuPct } = await measured(cpuS, () => Promise.all(ports.map((p) => openLoopOn(p, Math.round(opts.rate / 3), opts.fixedDuration, opts.conversations, opts.connections, tmp))));
  return { fixed: out, cpuPct };
}

/**
 * The stack's ceiling for this load: bench/cluster-ceiling-server.ts on 3
 * processes + one nats-server (bare uWS + NATS, each append sent to both
 * peers, fdatasync'd locally, answered once a peer has fdatasync'd it; no
 * Raft or state machine; `forward`: appends go to their conversation's
 * leader node first), under the same load as the burst.
 */
async function benchCeiling(
  opts: Options,
  tmp: string,
  natsBin: string,
  mode: 'direct' | 'forward',
): Promise<{ rate: number; perNode: WrkParsed[]; serverCpuPct: number; genCpuPct: number; fixed: OpenLoopOut[]; fixedCpuPct: number }> {
  const natsPort = await freePort();
  const nats = spawnTracked('ceiling-nats', natsBin, ['-a', '127.0.0.1', '-p', String(natsPort)], { logFile: path.join(tmp, 'ceiling-nats.log') });
  const procs: Tracked[] = [nats];
  try {
    await sleep(300);
    const ports = await Promise.all(NAMES.map(() => freePort()));
    for (const [i, name] of NAMES.entries()) {
      const peers = NAMES.filter((n) => n !== name).join(',');
      const args = [path.join(ROOT, 'dist', 'bench', 'cluster-ceiling-server.js'), String(ports[i]), `nats://127.0.0.1:${natsPort}`, name, peers, path.join(tmp, `ceiling-${name}.log`), mode];
      const t = spawnTracked(`ceiling-${name}`, process.execPath, [...SERVER_NODE_FLAGS, ...args], { logFile: path.join(tmp, `ceiling-${name}.out`) });
      procs.push(t);
      await waitHttpReady(ports[i], '/health/ready', 30_000, t);
    }
    const cpuS = () => procs.reduce((s, t) => s + treeCpuSeconds(t.pid), 0);
    const burst = await burstOn(ports, opts, tmp, cpuS);
    const { fixed, cpuPct } = await fixedOn(ports, opts, tmp, cpuS);
    return { ...burst, fixed, fixedCpuPct: cpuPct };
  } finally {
    await Promise.all(procs.map((t) => stopTracked(t)));
  }
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2), process.env);
  installCleanupHandlers();
  for (const tool of ['wrk', 'nats-server']) {
    if (which(tool) === null && !fs.existsSync(`/usr/sbin/${tool}`)) throw new Error(`${tool} not found: run scripts/bench-deps.sh / scripts/test-deps.sh`);
  }
  const tmp = fs.mkdtempSync(path.join(opts.tmp, 'fleetlm-bench-cluster-'));
  const natsPort = await freePort();
  const natsBin = which('nats-server') ?? '/usr/sbin/nats-server';
  const nats = spawnTracked('nats-server', natsBin, ['-a', '127.0.0.1', '-p', String(natsPort)], {
    logFile: path.join(tmp, 'nats.log'),
  });
  await sleep(300);
  const ports = [await freePort(), await freePort(), await freePort()];
  const cluster = new Cluster(tmp, `nats://127.0.0.1:${natsPort}`, opts.workers, opts.nodeArgs, ports);
  await Promise.all(cluster.nodes.map((n) => cluster.start(n)));
  log(`cluster ready on ports ${ports.join(', ')}`);
  await pool(16, opts.conversations, async (i) => {
    // Ready nodes may still be electing some groups' leaders: 503 says retry.
    for (let attempt = 1; ; attempt++) {
      const r = await httpRequest(ports[i % 3], 'PUT', `/v1/conversations/bench-${i}`, '{}', 10_000);
      if (r.status === 200) return;
      if (r.status !== 503 || attempt >= 20) throw new Error(`PUT bench-${i}: ${r.status}`);
      await sleep(250);
    }
  });

  // Burst: 3 × --connections in flight, a third through each node.
  const cpuS = () => cluster.cpuSeconds() + treeCpuSeconds(nats.pid);
  log(`warm-up ${opts.warmup} s, then burst ${opts.duration} s`);
  const { perNode: burst, rate: burstRate, serverCpuPct, genCpuPct } = await burstOn(ports, opts, tmp, cpuS);
  const acked = burst.reduce((s, w) => s + w.status201, 0);
  const non2xx = burst.reduce((s, w) => s + w.non2xx + w.socketErrors, 0);

  log(`fixed ${opts.rate}/s for ${opts.fixedDuration} s`);
  const { fixed, cpuPct: fixedCpuPct } = await fixedOn(ports, opts, tmp, cpuS);

  log(`failover: ${opts.kills} kills`);
  const kills: { victim: string; slowestMs: number; errors: number; restartMs: number }[] = [];
  const sample = Array.from({ length: 60 }, (_, k) => Math.floor((k * opts.conversations) / 60));
  for (let k = 0; k < opts.kills; k++) {
    const victim = cluster.nodes[k % 3];
    await sleep(1000);
    process.kill(victim.proc!.pid, 'SIGKILL');
    await victim.proc!.exited;
    victim.proc = null;
    const f = await failoverMs(cluster, sample);
    const restartMs = await cluster.start(victim);
    kills.push({ victim: victim.name, ...f, restartMs });
    log(`kill ${k + 1}: ${victim.name}, slowest conversation back after ${fmtMs(f.slowestMs)}`);
  }
  await Promise.all(cluster.nodes.map((n) => (n.proc ? stopTracked(n.proc) : null)));
  await stopTracked(nats);
  let js: Awaited<ReturnType<typeof benchJetStream>> | null = null;
  if (!opts.skipJetstream) {
    log(`peer: JetStream R3, ${opts.duration} s`);
    js = await benchJetStream(opts, tmp, natsBin);
  }
  const ceilings: { mode: 'direct' | 'forward'; r: Awaited<ReturnType<typeof benchCeiling>> }[] = [];
  if (!opts.skipCeiling) {
    for (const mode of ['direct', 'forward'] as const) {
      log(`reference: bare uWS + NATS replication ceiling (${mode}), ${opts.duration} s`);
      ceilings.push({ mode, r: await benchCeiling(opts, tmp, natsBin, mode) });
    }
  }

  const slowest = kills.map((k) => k.slowestMs).sort((a, b) => a - b);
  const lat = (v: number | string) => fmtMs(Number(v));
  const report = {
    generatedAt: new Date().toISOString(),
    machine: machineInfo(),
    options: opts,
    burst: {
      acked,
      appendsPerS: burstRate,
      perNode: perNodeJson(burst),
      serverCpuPct,
      generatorCpuPct: genCpuPct,
      errors: non2xx,
    },
    fixed: fixed.map((f, i) => ({ node: NAMES[i], ...f })),
    fixedServerCpuPct: fixedCpuPct,
    failover: { kills, p50Ms: percentileSorted(slowest, 50), p99Ms: percentileSorted(slowest, 99), maxMs: slowest.at(-1) },
    jetstream: js,
    ceilings: ceilings.map(({ mode, r }) => ({ mode, ...r, perNode: perNodeJson(r.perNode) })),
  };
  const jsRow =
    js === null
      ? []
      : [
          `| peer: NATS JetStream R3 (3 × ${opts.connections} in flight, ${opts.duration} s) | ${fmtInt(js.rate)} | ${js.perServer.map((p) => fmtMs(p.p50Ms)).join(' / ')} | ${js.perServer.map((p) => fmtMs(p.p99Ms)).join(' / ')} | ${fmtInt(js.perServer.reduce((s, p) => s + p.acked, 0))} acknowledged (no fsync), ${js.perServer.reduce((s, p) => s + p.errors, 0)} errors; servers CPU ${Math.round(js.serverCpuPct)}%, publishers ${Math.round(js.genCpuPct)}% |`,
        ];
  const ceilingWhat = {
    direct: 'fdatasync on 2 of 3 before the ack, no Raft, state machine or forwarding',
    forward: 'as above, but each conversation has one leader node and an append reaching another node is forwarded to it and answered back',
  };
  /** A fixed-rate phase's row: achieved rate, p50 / p99 per entry node, errors, what was left unanswered. */
  const fixedRow = (what: string, f: OpenLoopOut[], cpuPct: number, cpuOf: string) =>
    `| ${what} | ${fmtInt(f.reduce((s, x) => s + x.achievedRate, 0))} | ${f.map((x) => lat(x.latencyMs.p50)).join(' / ')} | ${f.map((x) => lat(x.latencyMs.p99)).join(' / ')} | ${f.reduce((s, x) => s + x.errors, 0)} errors; ${fmtInt(f.reduce((s, x) => s + x.unanswered, 0))} of ${fmtInt(f.reduce((s, x) => s + x.scheduled, 0))} scheduled still unanswered at the end (∞ = the rate was not sustained); ${cpuOf} CPU ${cpuPct.toFixed(0)}% |`;
  const ceilingRows = ceilings.flatMap(({ mode, r }) => [
    `| reference: bare uWS + NATS ceiling, ${mode} (bench/cluster-ceiling-server.ts, 3 × wrk -c${opts.connections}, ${opts.duration} s) | ${fmtInt(r.rate)} | ${r.perNode.map((w) => fmtMs(w.p50Ms)).join(' / ')} | ${r.perNode.map((w) => fmtMs(w.p99Ms)).join(' / ')} | ${ceilingWhat[mode]}; ${r.perNode.reduce((s, w) => s + w.non2xx + w.socketErrors, 0)} errors; servers + NATS CPU ${Math.round(r.serverCpuPct)}%, wrk ${Math.round(r.genCpuPct)}% |`,
    fixedRow(`reference: ceiling, ${mode}, fixed ${fmtInt(opts.rate)}/s (open loop, ${opts.fixedDuration} s)`, r.fixed, r.fixedCpuPct, 'servers + NATS'),
  ]);
  const md = [
    '## Cluster: 3 nodes on one machine',
    '',
    `Generated ${report.generatedAt} by \`npm run bench:cluster\`. Machine: ${Object.values(report.machine).join(', ')}.`,
    `3 node processes (FLEETLM_WORKERS=${opts.workers} each) and one nats-server share the machine with the load generators.`,
    '',
    '| phase | appends/s | p50 | p99 | notes |',
    '|---|---:|---:|---:|---|',
    `| burst (3 × wrk -c${opts.connections}, ${opts.duration} s) | ${fmtInt(burstRate)} | ${report.burst.perNode.map((p) => fmtMs(p.p50Ms)).join(' / ')} | ${report.burst.perNode.map((p) => fmtMs(p.p99Ms)).join(' / ')} | ${fmtInt(acked)} acknowledged, ${non2xx} errors; nodes + NATS CPU ${Math.round(serverCpuPct)}%, wrk ${Math.round(genCpuPct)}% (of 200%) |`,
    fixedRow(`fixed ${fmtInt(opts.rate)}/s (open loop, ${opts.fixedDuration} s)`, fixed, fixedCpuPct, 'nodes + NATS'),
    ...jsRow,
    ...ceilingRows,
    '',
    `p50 / p99 per node the load entered through (n1 / n2 / n3).${js === null ? '' : ` Ours / JetStream R3 in the same run: ${(burstRate / js.rate).toFixed(2)}×.`}${ceilings.map(({ mode, r }) => ` Ours / the bare ceiling (${mode}): ${(burstRate / r.rate).toFixed(2)}×.`).join('')}`,
    '',
    `Failover after kill -9 (${opts.kills} kills, 60 conversations appended through the survivors until each answers 201): slowest conversation back after p50 ${fmtMs(report.failover.p50Ms)}, p99 ${fmtMs(report.failover.p99Ms)}, max ${fmtMs(report.failover.maxMs)}; the killed node was ready again after ${kills.map((k) => fmtMs(k.restartMs)).join(', ')}.`,
    '',
  ].join('\n');
  writeResults(ROOT, opts.out, md, report);
  fs.rmSync(tmp, { recursive: true, force: true });
  return 0;
}

runBench(main);
