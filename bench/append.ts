// bench/append: append throughput and latency of our server, Redis Streams and
// PostgreSQL under the same load, in one run, so the ratios are comparable.
//
//   npm run bench                                  # everything, 20 s per phase
//   node dist/bench/append.js --only=redis,pg --duration=10
//   node dist/bench/append.js --only=ours --skip-1m --skip-fixed
//
// Load (every target): 64 requests in flight over keep-alive connections,
// 300-byte messages spread over 1,000 conversations at random.
//   ours:  wrk -t1 -c64 with bench/lua/append.lua (POST /v1/conversations/bench-N/messages)
//   Redis: redis-server --appendonly yes --appendfsync always; redis-benchmark -c 64 XADD
//   PG:    postgres with synchronous_commit=on, fsync=on; pgbench -c 64 -j 2 (INSERT + per-conversation seq)
// Then, at a fixed rate (default 10,000/s, open loop, latency from the scheduled
// send time): bench/openloop.js for ours and Redis, pgbench -R for PostgreSQL.
// Our server only: fill to 1,000,000 messages, RSS; SIGTERM, restart on the same
// data dir, time to GET /health/ready == 200 and to the first 201 append.
//
// Every process is started on a free loopback port in a temp dir and stopped by
// PID at the end, also on error and SIGINT. Results: bench/results/append-latest.md
// (and .json next to it).
//
// Options (argv --name=value, or env BENCH_NAME):
//   --duration=20        seconds per measured phase
//   --warmup=5           seconds of warm-up load before each measured phase
//   --only=ours,redis,pg targets to run
//   --rate=10000         fixed-rate phase rate (appends/s); --fixed-duration=<duration>
//   --skip-fixed         skip the fixed-rate phases
//   --skip-1m            skip the fill to --messages (1,000,000) (restart still runs)
//   --skip-restart       skip the restart phase
//   --messages=1000000   total messages for the fill phase
//   --connections=64 --conversations=1000
//   --server=dist/runtime/main.js   entry point of our server
//   --out=bench/results/append-latest.md
//   --tmp=<dir>          parent of the temp dirs (default: os.tmpdir())
//   --keep               keep the temp dirs
//   --wait-idle=0        before each target, wait up to N s for other processes' CPU use to drop below 10%
//   --gen-nice=-10       niceness of the load generators (default -10 as root, else 0): on a
//                        2-core box they must not queue behind the server's threads
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DEFAULT_TEXT,
  appendBody,
  partsJson,
  CpuMeter,
  MemSampler,
  closeHttpAgent,
  dirBytes,
  fmtInt,
  fmtMiB,
  fmtMs,
  fmtPct,
  freePort,
  fsType,
  httpRequest,
  installCleanupHandlers,
  isStopping,
  log,
  machineBusyPct,
  fsyncProbe,
  machineInfo,
  onExit,
  percentileSorted,
  pool,
  runMeasured,
  runSync,
  sleep,
  spawnTracked,
  stopTracked,
  tailLog,
  treeMem,
  waitHttpReady,
  which,
  wrkResult,
  type WrkParsed,
  type Measured,
  type Tracked,
  writeResults,
  runBench,
  SERVER_NODE_FLAGS,
} from './lib.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

// ---------------------------------------------------------------- options

type Target = 'ours' | 'uws' | 'redis' | 'pg';

interface Options {
  duration: number;
  warmup: number;
  only: Set<Target>;
  rate: number;
  fixedDuration: number;
  skipFixed: boolean;
  skip1m: boolean;
  skipRestart: boolean;
  messages: number;
  connections: number;
  conversations: number;
  server: string;
  out: string;
  tmp: string;
  keep: boolean;
  /** niceness of the load generators (negative = ahead of the servers for CPU; needs root) */
  genNice: number;
  /** wait up to this many seconds for the machine to be idle before each target */
  waitIdle: number;
}

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): Options {
  const kv = new Map<string, string>();
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('BENCH_') && v !== undefined) kv.set(k.slice(6).toLowerCase().replace(/_/g, '-'), v);
  }
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument ${a} (see the header of bench/append.ts)`);
    kv.set(m[1], m[2] ?? 'true');
  }
  const known = new Set([
    'duration', 'warmup', 'only', 'rate', 'fixed-duration', 'skip-fixed', 'skip-1m', 'skip-restart', 'messages',
    'connections', 'conversations', 'server', 'out', 'tmp', 'keep', 'tmpdir', 'gen-nice', 'wait-idle',
  ]);
  for (const k of kv.keys()) {
    if (!known.has(k) && argv.some((a) => a.startsWith(`--${k}`))) throw new Error(`unknown option --${k}`);
  }
  const num = (k: string, d: number) => {
    const v = kv.get(k);
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${k} must be a positive number, got ${v}`);
    return n;
  };
  const bool = (k: string) => ['1', 'true', 'yes', 'on'].includes((kv.get(k) ?? '').toLowerCase());
  const only = new Set<Target>();
  for (const t of (kv.get('only') ?? 'ours,uws,redis,pg').split(',').map((s) => s.trim()).filter(Boolean)) {
    const norm = t === 'postgres' || t === 'postgresql' ? 'pg' : t === 'fleetlm' ? 'ours' : t;
    if (norm !== 'ours' && norm !== 'uws' && norm !== 'redis' && norm !== 'pg') throw new Error(`--only: unknown target ${t} (ours, uws, redis, pg)`);
    only.add(norm);
  }
  const duration = num('duration', 20);
  return {
    duration,
    warmup: kv.has('warmup') ? Number(kv.get('warmup')) : Math.min(5, Math.max(1, Math.round(duration / 4))),
    only,
    rate: num('rate', 10_000),
    fixedDuration: num('fixed-duration', duration),
    skipFixed: bool('skip-fixed'),
    skip1m: bool('skip-1m'),
    skipRestart: bool('skip-restart'),
    messages: num('messages', 1_000_000),
    connections: num('connections', 64),
    conversations: num('conversations', 1000),
    server: path.resolve(ROOT, kv.get('server') ?? 'dist/runtime/main.js'),
    out: path.resolve(ROOT, kv.get('out') ?? 'bench/results/append-latest.md'),
    tmp: kv.get('tmp') ?? kv.get('tmpdir') ?? os.tmpdir(),
    keep: bool('keep'),
    waitIdle: kv.has('wait-idle') ? Number(kv.get('wait-idle')) : 0,
    genNice: kv.has('gen-nice') ? Number(kv.get('gen-nice')) : process.getuid?.() === 0 ? -10 : 0,
  };
}

// ---------------------------------------------------------------- results

interface LoadResult {
  target: Target;
  name: string;
  durability: string;
  generator: string;
  durationS: number;
  /** successful appends */
  ok: number;
  errors: number;
  errorDetail: string;
  /** successful appends per second */
  throughput: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms?: number;
  maxMs?: number;
  serverCpuPct: number;
  genCpuPct: number;
  /** kernel threads + irq/softirq during the phase (journaling, block I/O, loopback), % of one core */
  kernelCpuPct?: number;
  /** CPU of every other process on the machine during the phase (other people's jobs), % of one core */
  otherCpuPct?: number;
  /** the biggest of those */
  topOthers?: string;
  /** peak memory of the server during the phase: RSS (single process) or PSS sum (process tree) */
  serverMem: number;
  serverMemKind: string;
  /** achieved rate for fixed-rate runs */
  offered?: number;
  /** fixed rate: latency from the actual send (excludes the generator's send lag) */
  svcP50Ms?: number;
  svcP99Ms?: number;
}

interface OursExtra {
  storedMessages: number;
  fillThroughput?: number;
  fillErrors?: number;
  rssAfterFill?: number;
  hwmAfterFill?: number;
  dataDirBytes?: number;
  shutdownMs?: number;
  shutdownKilled?: boolean;
  readyMs?: number;
  firstAppendMs?: number;
  rssAfterRestart?: number;
  storedAtRestart?: number;
}

interface Conditions {
  target: Target;
  /** whole-machine CPU busy % in the second before the target's phases (other processes) */
  busyBeforePct: number;
  fsyncPerS: number;
  fsyncP50Ms: number;
  fsyncP99Ms: number;
  loadavg: number[];
}

interface Report {
  startedAt: string;
  command: string;
  options: Options;
  machine: Record<string, string>;
  versions: Record<string, string>;
  fs: string;
  closed: LoadResult[];
  fixed: LoadResult[];
  ours?: OursExtra;
  conditions: Conditions[];
  failures: Record<string, string>;
}

// ---------------------------------------------------------------- tools

function pgBinDir(): string | null {
  let best: { v: number[]; dir: string } | null = null;
  let entries: string[] = [];
  try {
    entries = fs.readdirSync('/usr/lib/postgresql');
  } catch {
    return null;
  }
  for (const e of entries) {
    const dir = path.join('/usr/lib/postgresql', e, 'bin');
    if (!fs.existsSync(path.join(dir, 'postgres'))) continue;
    const v = e.split('.').map((x) => Number(x) || 0);
    if (!best || v[0] > best.v[0] || (v[0] === best.v[0] && (v[1] ?? 0) > (best.v[1] ?? 0))) best = { v, dir };
  }
  return best?.dir ?? null;
}

function ensureTools(opts: Options): void {
  const missing: string[] = [];
  if ((opts.only.has('ours') || opts.only.has('uws')) && !which('wrk')) missing.push('wrk');
  if (opts.only.has('redis') && (!which('redis-server') || !which('redis-benchmark') || !which('redis-cli'))) missing.push('redis');
  if (opts.only.has('pg') && !pgBinDir()) missing.push('postgresql');
  if (!missing.length) return;
  const script = path.join(ROOT, 'scripts', 'bench-deps.sh');
  log(`missing ${missing.join(', ')}: running ${script}`);
  runSync('bash', [script]);
}

function version(cmd: string, args: string[], re: RegExp): string {
  try {
    const out = runSyncLoose(cmd, args);
    const m = re.exec(out);
    return m ? m[1] : out.trim().split('\n')[0];
  } catch {
    return 'unknown';
  }
}

/** Like runSync but returns output even on a non-zero exit (wrk --version exits 1). */
function runSyncLoose(cmd: string, args: string[]): string {
  try {
    return runSync(cmd, args);
  } catch (e) {
    return (e as Error).message;
  }
}

/** uid/gid to run PostgreSQL as (it refuses root). */
function pgUser(): { uid: number; gid: number; name: string } | null {
  if (process.getuid?.() !== 0) return null; // not root: run as ourselves
  const find = (name: string) => {
    const line = fs
      .readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.startsWith(`${name}:`));
    if (!line) return null;
    const f = line.split(':');
    return { uid: Number(f[2]), gid: Number(f[3]), name };
  };
  let u = find('postgres');
  if (!u) {
    runSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
    u = find('postgres');
  }
  if (!u) throw new Error('no postgres user and useradd failed');
  return u;
}

function asPg(user: ReturnType<typeof pgUser>, cmd: string, args: string[]): [string, string[]] {
  if (!user) return [cmd, args];
  return ['setpriv', ['--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups', '--', cmd, ...args]];
}

// ---------------------------------------------------------------- wrk

async function runWrk(
  ctx: Ctx,
  port: number,
  seconds: number,
  limit = 0,
  timeoutMs?: number,
): Promise<{ m: Measured; w: WrkParsed }> {
  const lua = path.join(ROOT, 'bench', 'lua', 'append.lua');
  const args = [
    '-t1',
    `-c${ctx.opts.connections}`,
    `-d${Math.ceil(seconds)}s`,
    '--latency',
    '--timeout',
    '10s',
    '-s',
    lua,
    `http://127.0.0.1:${port}`,
    '--',
    String(ctx.opts.conversations),
    DEFAULT_TEXT,
    String(limit),
    'bench-',
  ];
  const m = await runMeasured('wrk', 'wrk', args, {
    timeoutMs: timeoutMs ?? (seconds + 60) * 1000,
    tmpDir: ctx.tmp,
    nice: ctx.opts.genNice,
    interruptWhen: limit > 0 ? /^BENCH limit_reached$/m : undefined,
  });
  return { m, w: wrkResult(m) };
}

// ---------------------------------------------------------------- openloop

interface OpenLoopResult {
  completed: number;
  warmupOk?: number;
  ok: number;
  errors: number;
  notSent: number;
  unanswered: number;
  statusCounts: Record<string, number>;
  achievedRate: number;
  latencyMs: { mean: number; p50: number | string; p99: number | string; p999: number | string; max: number | string };
  serviceLatencyMs: { p50: number | string; p99: number | string; max: number | string };
  maxSendLagMs: number;
  sendLagMs?: { p50: number | string; p99: number | string; max: number | string };
  cpu: { pct: number };
}

const toNum = (v: number | string): number => (typeof v === 'number' ? v : Number(v));

async function runOpenLoop(ctx: Ctx, proto: 'http' | 'resp' | 'pg', port: number): Promise<{ m: Measured; r: OpenLoopResult }> {
  const script = path.join(ROOT, 'dist', 'bench', 'openloop.js');
  const args = [
    script,
    `--proto=${proto}`,
    `--port=${port}`,
    `--rate=${ctx.opts.rate}`,
    `--duration=${ctx.opts.fixedDuration}`,
    `--warmup=2`,
    `--connections=${ctx.opts.connections}`,
    `--conversations=${ctx.opts.conversations}`,
    `--drain=10`,
  ];
  const m = await runMeasured('openloop', process.execPath, args, {
    timeoutMs: (ctx.opts.fixedDuration + 60) * 1000,
    tmpDir: ctx.tmp,
    nice: ctx.opts.genNice,
  });
  if (m.code !== 0) throw new Error(`openloop exited ${m.code}: ${m.stderr.slice(-2000)}`);
  const r = JSON.parse(m.stdout.trim().split('\n').pop()!) as OpenLoopResult;
  return { m, r };
}

function statusSummary(counts: Record<string, number>): string {
  return Object.entries(counts)
    .filter(([k]) => k !== '201')
    .map(([k, v]) => `${v}×${k}`)
    .join(', ');
}

function openLoopToResult(
  base: Pick<LoadResult, 'target' | 'name' | 'durability'>,
  ctx: Ctx,
  m: Measured,
  r: OpenLoopResult,
  cpu: CpuRead,
  mem: { value: number; kind: string },
  okStatus: string,
): LoadResult {
  const genCpuPct = genCpu(m);
  const bad = r.completed - (r.statusCounts[okStatus] ?? 0) + r.notSent + r.unanswered + (r.statusCounts.conn_lost ?? 0);
  const detail = [
    statusSummary(Object.fromEntries(Object.entries(r.statusCounts).filter(([k]) => k !== okStatus).map(([k, v]) => [k, v]))),
    r.notSent ? `${r.notSent} not sent (in-flight cap)` : '',
    r.unanswered ? `${r.unanswered} unanswered after drain` : '',
    r.sendLagMs ? `generator send lag p99 ${fmtMs(toNum(r.sendLagMs.p99))}, max ${fmtMs(toNum(r.sendLagMs.max))}` : `max send lag ${fmtMs(r.maxSendLagMs)}`,
  ]
    .filter(Boolean)
    .join('; ');
  return {
    ...base,
    generator: `bench/openloop.js (${ctx.opts.connections} conns)`,
    durationS: ctx.opts.fixedDuration,
    ok: r.statusCounts[okStatus] ?? 0,
    errors: bad,
    errorDetail: detail,
    throughput: r.achievedRate,
    offered: ctx.opts.rate,
    meanMs: r.latencyMs.mean,
    p50Ms: toNum(r.latencyMs.p50),
    p99Ms: toNum(r.latencyMs.p99),
    p999Ms: toNum(r.latencyMs.p999),
    maxMs: toNum(r.latencyMs.max),
    svcP50Ms: toNum(r.serviceLatencyMs.p50),
    svcP99Ms: toNum(r.serviceLatencyMs.p99),
    ...usageFields(cpu, genCpuPct, mem),
  };
}

type CpuRead = ReturnType<CpuMeter['read']>;

/** Machine CPU not accounted for by the server, the generator, this script or the kernel. */
function otherCpu(c: CpuRead, genPct: number): number {
  return Math.max(0, c.machinePct - c.pct - genPct - c.selfPct - c.kernelPct);
}

/** CPU of a generator run, % of one core. */
function genCpu(m: { userS: number; sysS: number; wallS: number }): number {
  return (100 * (m.userS + m.sysS)) / m.wallS;
}

/** The CPU and memory columns every result row carries. */
function usageFields(cpu: CpuRead, genCpuPct: number, mem: { value: number; kind: string }) {
  return {
    serverCpuPct: cpu.pct,
    genCpuPct,
    kernelCpuPct: cpu.kernelPct,
    otherCpuPct: otherCpu(cpu, genCpuPct),
    topOthers: cpu.topOthers,
    serverMem: mem.value,
    serverMemKind: mem.kind,
  };
}

// ---------------------------------------------------------------- context

interface Ctx {
  opts: Options;
  tmp: string;
  report: Report;
}

function mkTmp(ctx: Ctx, name: string): string {
  const d = path.join(ctx.tmp, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

// ---------------------------------------------------------------- our server

async function startOurs(ctx: Ctx, dataDir: string, port: number, logFile: string): Promise<Tracked> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    FLEETLM_RAFT_DATA_DIR: dataDir,
    NODE_ENV: process.env.NODE_ENV ?? 'production',
    // as `npm start` and the deploy files run it
    MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
  };
  return spawnTracked('server', process.execPath, [...SERVER_NODE_FLAGS, ctx.opts.server], { env, cwd: ROOT, logFile, stopSignal: 'SIGTERM' });
}

/** The measured closed-loop phase: wrk against `srv` for the phase duration, recorded in the report. */
async function closedLoopWrk(ctx: Ctx, srv: Tracked, port: number, t: { target: Target; name: string; durability: string }): Promise<LoadResult> {
  const { opts } = ctx;
  log(`${t.target}: wrk -t1 -c${opts.connections} for ${opts.duration} s`);
  const cpu = new CpuMeter(srv.pid);
  const mem = new MemSampler(srv.pid);
  const { m, w } = await runWrk(ctx, port, opts.duration);
  const c = cpu.read();
  mem.stop();
  const errors = w.other2xx + w.non2xx + w.socketErrors;
  const result: LoadResult = {
    ...t,
    generator: `wrk -t1 -c${opts.connections} (Lua)`,
    durationS: w.durationS,
    ok: w.status201,
    errors,
    errorDetail: [
      w.other2xx ? `${w.other2xx} 2xx other than 201` : '',
      w.non2xx ? `${w.non2xx} non-2xx` : '',
      w.socketErrors ? w.socketDetail : '',
      ...[...new Set(w.samples.map((x) => x.slice(0, 160)))].slice(0, 2).map((x) => `e.g. ${x}`),
    ]
      .filter(Boolean)
      .join('; '),
    throughput: w.status201 / w.durationS,
    meanMs: w.meanMs,
    p50Ms: w.p50Ms,
    p99Ms: w.p99Ms,
    p999Ms: w.p999Ms,
    maxMs: w.maxMs,
    ...usageFields(c, genCpu(m), { value: mem.peakRss, kind: 'peak RSS' }),
  };
  ctx.report.closed.push(result);
  log(`${t.target}: ${fmtInt(result.throughput)}/s p50 ${fmtMs(w.p50Ms)} p99 ${fmtMs(w.p99Ms)} errors ${errors}`);
  return result;
}

async function postOne(port: number, conv: number): Promise<number> {
  const r = await httpRequest(port, 'POST', `/v1/conversations/bench-${conv}/messages`, appendBody(), 10_000);
  return r.status;
}

async function benchOurs(ctx: Ctx): Promise<void> {
  const { opts, report } = ctx;
  if (!fs.existsSync(opts.server)) throw new Error(`${path.relative(ROOT, opts.server)} does not exist (npm run build)`);
  const dir = mkTmp(ctx, 'ours');
  const dataDir = path.join(dir, 'data');
  fs.mkdirSync(dataDir);
  const port = await freePort();
  const logFile = path.join(dir, 'server.log');
  const name = 'fleetlm (this repo)';
  const durability = 'WAL fdatasync before every ack (single node)';
  const extra: OursExtra = { storedMessages: 0 };
  report.ours = extra;

  log(`ours: starting ${path.relative(ROOT, opts.server)} on :${port}, data ${dataDir}`);
  let srv = await startOurs(ctx, dataDir, port, logFile);
  let phase = 'start-up';
  try {
    const readyMs = await waitHttpReady(port, '/health/ready', 120_000, srv);
    log(`ours: ready after ${fmtMs(readyMs)}; creating ${opts.conversations} conversations`);
    const created = await pool(16, opts.conversations, async (i) => {
      for (let attempt = 1; ; attempt++) {
        try {
          const r = await httpRequest(port, 'PUT', `/v1/conversations/bench-${i}`, '{}');
          if (r.status < 500 || attempt >= 3) return r.status;
        } catch (e) {
          if (attempt >= 3 || !srv.alive()) throw e;
        }
        await sleep(100 * attempt);
      }
    });
    const badCreate = created.filter((s) => s < 200 || s >= 300);
    if (badCreate.length) throw new Error(`PUT /v1/conversations: ${badCreate.length} non-2xx (e.g. ${badCreate[0]})`);

    phase = 'closed-loop';
    if (opts.warmup > 0) {
      log(`ours: warm-up ${opts.warmup} s`);
      const { w } = await runWrk(ctx, port, opts.warmup);
      extra.storedMessages += w.status201;
    }

    extra.storedMessages += (await closedLoopWrk(ctx, srv, port, { target: 'ours', name, durability })).ok;

    if (!opts.skipFixed) {
      phase = 'fixed-rate';
      log(`ours: fixed rate ${opts.rate}/s for ${opts.fixedDuration} s`);
      const cpu2 = new CpuMeter(srv.pid);
      const mem2 = new MemSampler(srv.pid);
      const { m: m2, r } = await runOpenLoop(ctx, 'http', port);
      const c2 = cpu2.read();
      mem2.stop();
      // openloop's warm-up appends are stored too.
      extra.storedMessages += (r.statusCounts['201'] ?? 0) + (r.warmupOk ?? 0);
      report.fixed.push(openLoopToResult({ target: 'ours', name, durability }, ctx, m2, r, c2, { value: mem2.peakRss, kind: 'peak RSS' }, '201'));
      log(`ours: fixed rate p50 ${fmtMs(toNum(r.latencyMs.p50))} p99 ${fmtMs(toNum(r.latencyMs.p99))}`);
    }

    if (!opts.skip1m) {
      phase = 'fill';
      const remaining = opts.messages - extra.storedMessages;
      if (remaining > 0) {
        log(`ours: filling to ${fmtInt(opts.messages)} messages (${fmtInt(remaining)} more)`);
        const t0 = performance.now();
        const { w: wf } = await runWrk(ctx, port, 7200, remaining, 7200_000);
        const s = (performance.now() - t0) / 1000;
        extra.storedMessages += wf.status201;
        extra.fillThroughput = wf.status201 / s;
        extra.fillErrors = wf.other2xx + wf.non2xx + wf.socketErrors;
      }
      await sleep(2000);
      const mm = treeMem(srv.pid);
      extra.rssAfterFill = mm.rss;
      extra.hwmAfterFill = mm.hwm;
      log(`ours: ${fmtInt(extra.storedMessages)} messages stored, RSS ${fmtMiB(mm.rss)}, peak ${fmtMiB(mm.hwm)}`);
    }

    if (!opts.skipRestart) {
      phase = 'restart';
      closeHttpAgent();
      extra.dataDirBytes = dirBytes(dataDir);
      log('ours: SIGTERM');
      const stop = await stopTracked(srv, 120_000, 'SIGTERM');
      extra.shutdownMs = stop.ms;
      extra.shutdownKilled = stop.killed;
      extra.dataDirBytes = Math.max(extra.dataDirBytes, dirBytes(dataDir));
      extra.storedAtRestart = extra.storedMessages;
      log(`ours: stopped in ${fmtMs(stop.ms)}${stop.killed ? ' (SIGKILL needed)' : ''}; restarting`);
      const t0 = performance.now();
      srv = await startOurs(ctx, dataDir, port, logFile);
      await waitHttpReady(port, '/health/ready', 600_000, srv, 5);
      extra.readyMs = performance.now() - t0;
      const deadline = Date.now() + 120_000;
      for (;;) {
        let st = 0;
        try {
          st = await postOne(port, 0);
        } catch {
          /* retry */
        }
        if (st === 201) break;
        if (Date.now() > deadline) throw new Error(`no 201 append within 120 s of restart (last ${st})`);
        await sleep(5);
      }
      extra.firstAppendMs = performance.now() - t0;
      await sleep(1000);
      extra.rssAfterRestart = treeMem(srv.pid).rss;
      log(`ours: ready after ${fmtMs(extra.readyMs)}, first append after ${fmtMs(extra.firstAppendMs)}`);
    }
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(`${phase} phase: ${msg}${msg.includes('--- last lines of') ? '' : tailLog(srv)}`);
  } finally {
    closeHttpAgent();
    await stopTracked(srv, 60_000);
  }
}

// ---------------------------------------------------------------- bare uWS

/**
 * The stack's ceiling: bench/ceiling-server.ts (bare uWebSockets.js, parse +
 * number + one group-committed file write and fdatasync per loop turn, no
 * Raft, RocksDB, worker thread or token count) under the same wrk load.
 */
async function benchCeiling(ctx: Ctx): Promise<void> {
  const dir = mkTmp(ctx, 'uws');
  const port = await freePort();
  const script = path.join(ROOT, 'dist', 'bench', 'ceiling-server.js');
  const srv = spawnTracked('uws', process.execPath, [...SERVER_NODE_FLAGS, script, String(port), 'durable', path.join(dir, 'log')], {
    cwd: ROOT,
    logFile: path.join(dir, 'server.log'),
  });
  try {
    await waitHttpReady(port, '/health/ready', 30_000, srv);
    if (ctx.opts.warmup > 0) await runWrk(ctx, port, ctx.opts.warmup);
    await closedLoopWrk(ctx, srv, port, {
      target: 'uws',
      name: 'bare uWS.js ceiling (bench/ceiling-server.ts)',
      durability: 'one file, write + fdatasync per loop turn before the acks',
    });
  } finally {
    await stopTracked(srv, 10_000);
  }
}

// ---------------------------------------------------------------- Redis

function redisCli(port: number, args: string[]): string {
  return runSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args]).trim();
}

function redisCount(port: number, conversations: number): number {
  const lua = `local n=0 for i=0,${conversations - 1} do n=n+redis.call('XLEN', string.format('conv:%012d', i)) end return n`;
  return Number(redisCli(port, ['EVAL', lua, '0']));
}

interface RbParsed {
  rps: number;
  avg: number;
  p50: number;
  p99: number;
  max: number;
}

export function parseRedisBenchmarkCsv(out: string): RbParsed {
  const lines = out.trim().split('\n').filter((l) => l.startsWith('"'));
  const header = (lines[0] ?? '').split(',').map((s) => s.replace(/"/g, ''));
  const row = lines.length > 1 ? lines[lines.length - 1] : '';
  // The test name (first column) is the command line, quotes and commas
  // included; the numeric columns after it contain neither: take them from the end.
  const nums = row.split(',').slice(-(header.length - 1)).map((x) => Number(x.replace(/"/g, '')));
  const get = (k: string) => {
    const i = header.indexOf(k);
    return i > 0 ? nums[i - 1] : NaN;
  };
  return { rps: get('rps'), avg: get('avg_latency_ms'), p50: get('p50_latency_ms'), p99: get('p99_latency_ms'), max: get('max_latency_ms') };
}

async function benchRedis(ctx: Ctx): Promise<void> {
  const { opts, report } = ctx;
  const dir = mkTmp(ctx, 'redis');
  const port = await freePort();
  const version = ctx.report.versions.redis;
  const name = `Redis ${version} Streams (XADD)`;
  const durability = 'appendonly yes, appendfsync always';
  log(`redis: starting redis-server on :${port}, dir ${dir}`);
  const srv = spawnTracked(
    'redis-server',
    'redis-server',
    [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--appendonly', 'yes',
      '--appendfsync', 'always',
      '--save', '',
      '--dir', dir,
      '--daemonize', 'no',
      '--maxclients', '1000',
    ],
    { logFile: path.join(dir, 'redis.log'), stopSignal: 'SIGTERM' },
  );
  try {
    const t0 = Date.now();
    for (;;) {
      if (!srv.alive()) throw new Error(`redis-server exited${tailLog(srv)}`);
      try {
        if (redisCli(port, ['PING']) === 'PONG') break;
      } catch {
        /* not yet */
      }
      if (Date.now() - t0 > 30_000) throw new Error('redis-server not answering PING after 30 s');
      await sleep(50);
    }
    const cmd = ['XADD', 'conv:__rand_int__', '*', 'role', 'user', 'parts', partsJson()];
    const rb = async (n: number) => {
      const m = await runMeasured(
        'redis-benchmark',
        'redis-benchmark',
        ['-h', '127.0.0.1', '-p', String(port), '-c', String(opts.connections), '-n', String(n), '-r', String(opts.conversations), '--csv', ...cmd],
        { timeoutMs: Math.max(120_000, (opts.duration * 5 + 60) * 1000), tmpDir: ctx.tmp, nice: ctx.opts.genNice },
      );
      if (m.code !== 0) throw new Error(`redis-benchmark exited ${m.code}: ${m.stderr.slice(-2000)}`);
      return { m, p: parseRedisBenchmarkCsv(m.stdout) };
    };
    // Warm-up doubles as calibration: redis-benchmark takes a count, not a duration.
    const warmN = 20_000;
    const { p: wp, m: wm } = await rb(warmN);
    let rate = wp.rps;
    if (opts.warmup > 1 && Number.isFinite(rate)) {
      const more = Math.round(rate * Math.max(0, opts.warmup - wm.wallS));
      if (more > 1000) rate = (await rb(more)).p.rps;
    }
    if (!Number.isFinite(rate) || rate <= 0) throw new Error('redis-benchmark warm-up produced no rate');
    const n = Math.max(10_000, Math.round(rate * opts.duration));
    const before = redisCount(port, opts.conversations);
    log(`redis: redis-benchmark -c ${opts.connections} -n ${n} (≈${opts.duration} s at ${fmtInt(rate)}/s)`);
    const cpu = new CpuMeter(srv.pid);
    const mem = new MemSampler(srv.pid);
    const { m, p } = await rb(n);
    const c = cpu.read();
    mem.stop();
    const stored = redisCount(port, opts.conversations) - before;
    const errors = n - stored;
    // redis-benchmark's rps is over its own wall time; use the stored count over that time.
    const runS = n / p.rps;
    report.closed.push({
      target: 'redis',
      name,
      durability,
      generator: `redis-benchmark -c ${opts.connections}`,
      durationS: runS,
      ok: stored,
      errors,
      errorDetail: errors ? `${errors} XADDs not stored` : '',
      throughput: stored / runS,
      meanMs: p.avg,
      p50Ms: p.p50,
      p99Ms: p.p99,
      maxMs: p.max,
      ...usageFields(c, genCpu(m), { value: mem.peakRss, kind: 'peak RSS' }),
    });
    log(`redis: ${fmtInt(p.rps)}/s p50 ${fmtMs(p.p50)} p99 ${fmtMs(p.p99)} (server CPU ${fmtPct(c.pct)}, generator ${fmtPct(genCpu(m))})`);

    if (!opts.skipFixed) {
      log(`redis: fixed rate ${opts.rate}/s for ${opts.fixedDuration} s`);
      const cpu2 = new CpuMeter(srv.pid);
      const mem2 = new MemSampler(srv.pid);
      const { m: m2, r } = await runOpenLoop(ctx, 'resp', port);
      const c2 = cpu2.read();
      mem2.stop();
      report.fixed.push(openLoopToResult({ target: 'redis', name, durability }, ctx, m2, r, c2, { value: mem2.peakRss, kind: 'peak RSS' }, '201'));
      log(`redis: fixed rate p50 ${fmtMs(toNum(r.latencyMs.p50))} p99 ${fmtMs(toNum(r.latencyMs.p99))}`);
    }
  } finally {
    await stopTracked(srv, 60_000);
  }
}

// ---------------------------------------------------------------- PostgreSQL

interface PgbParsed {
  tps: number;
  processed: number;
  failed: number;
  avgMs: number;
  lagAvgMs: number;
}

export function parsePgbench(out: string): PgbParsed {
  const num = (re: RegExp) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : NaN;
  };
  return {
    tps: num(/^tps = ([\d.]+)/m),
    processed: num(/number of transactions actually processed: (\d+)/),
    failed: num(/number of failed transactions: (\d+)/) || 0,
    avgMs: num(/latency average = ([\d.]+) ms/),
    lagAvgMs: num(/rate limit schedule lag: avg ([\d.]+)/),
  };
}

/** Per-transaction latencies (ms, ascending) from pgbench --log files; with -R they include schedule lag. */
function readPgbenchLogs(dir: string): { lat: Float64Array; failed: number } {
  const vals: number[] = [];
  let failed = 0;
  for (const f of fs.readdirSync(dir)) {
    if (!f.startsWith('pgb')) continue;
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    for (const line of text.split('\n')) {
      if (!line) continue;
      const fields = line.split(' ');
      const t = fields[2];
      if (t === undefined) continue;
      if (!/^\d+$/.test(t)) {
        failed++;
        continue;
      }
      vals.push(Number(t) / 1000);
    }
    fs.rmSync(path.join(dir, f));
  }
  return { lat: Float64Array.from(vals).sort(), failed };
}

async function benchPg(ctx: Ctx): Promise<void> {
  const { opts, report } = ctx;
  const bin = pgBinDir();
  if (!bin) throw new Error('no PostgreSQL under /usr/lib/postgresql (scripts/bench-deps.sh)');
  const pgbench = fs.existsSync(path.join(bin, 'pgbench')) ? path.join(bin, 'pgbench') : which('pgbench');
  const psql = fs.existsSync(path.join(bin, 'psql')) ? path.join(bin, 'psql') : which('psql');
  if (!pgbench || !psql) throw new Error('pgbench/psql not found');
  const user = pgUser();
  const dir = mkTmp(ctx, 'pg');
  const data = path.join(dir, 'data');
  const sock = path.join(dir, 'sock');
  const logs = path.join(dir, 'logs');
  fs.mkdirSync(sock);
  fs.mkdirSync(logs);
  fs.chmodSync(ctx.tmp, 0o755);
  fs.chmodSync(dir, 0o755);
  if (user) {
    fs.chownSync(sock, user.uid, user.gid);
    fs.chownSync(dir, user.uid, user.gid);
  }
  const port = await freePort();
  const version = ctx.report.versions.postgres;
  const name = `PostgreSQL ${version} (INSERT)`;
  const durability = 'synchronous_commit=on, fsync=on';
  const pgEnv = { ...process.env, LC_ALL: 'C', LANG: 'C', HOME: dir };

  log(`pg: initdb ${data}`);
  const [icmd, iargs] = asPg(user, path.join(bin, 'initdb'), [
    '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions',
  ]);
  runSync(icmd, iargs, { cwd: dir, env: pgEnv });
  const [pcmd, pargs] = asPg(user, path.join(bin, 'postgres'), [
    '-D', data,
    '-p', String(port),
    '-k', sock,
    '-c', 'listen_addresses=127.0.0.1',
    '-c', 'synchronous_commit=on',
    '-c', 'fsync=on',
    '-c', 'max_connections=200',
  ]);
  log(`pg: starting postgres on :${port}`);
  const logFile = path.join(dir, 'postgres.log');
  fs.writeFileSync(logFile, '');
  if (user) fs.chownSync(logFile, user.uid, user.gid);
  // setpriv execs postgres, so the tracked PID is the postmaster; SIGINT = fast shutdown.
  const srv = spawnTracked('postgres', pcmd, pargs, { cwd: dir, env: pgEnv, logFile, stopSignal: 'SIGINT' });
  const conn = ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres'];
  const sql = (q: string) => runSync(psql, [...conn, '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', q], { env: pgEnv }).trim();
  try {
    const t0 = Date.now();
    for (;;) {
      if (!srv.alive()) throw new Error(`postgres exited${tailLog(srv)}`);
      try {
        if (sql('SELECT 1') === '1') break;
      } catch {
        /* starting */
      }
      if (Date.now() - t0 > 60_000) throw new Error(`postgres not ready after 60 s${tailLog(srv)}`);
      await sleep(100);
    }
    sql(`CREATE TABLE conversations (id text PRIMARY KEY, last_seq bigint NOT NULL DEFAULT 0);
         CREATE TABLE messages (
           conversation_id text NOT NULL,
           seq bigint NOT NULL,
           role text NOT NULL,
           parts jsonb NOT NULL,
           inserted_at timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (conversation_id, seq));
         INSERT INTO conversations (id) SELECT 'bench-' || g FROM generate_series(0, ${opts.conversations - 1}) g;`);
    // One transaction per append: take the next per-conversation seq (row lock,
    // like a per-conversation log) and insert the message.
    const script = path.join(dir, 'append.sql');
    const lit = partsJson().replace(/'/g, "''");
    fs.writeFileSync(
      script,
      `\\set c random(0, ${opts.conversations - 1})\n` +
        `WITH s AS (UPDATE conversations SET last_seq = last_seq + 1 WHERE id = 'bench-' || :c RETURNING id, last_seq) ` +
        `INSERT INTO messages (conversation_id, seq, role, parts) SELECT id, last_seq, 'user', '${lit}'::jsonb FROM s;\n`,
    );
    const jobs = Math.min(2, os.availableParallelism());
    const pgb = async (seconds: number, extra: string[], tag: string) => {
      const prefix = path.join(logs, 'pgb');
      const m = await runMeasured(
        'pgbench',
        pgbench,
        [...conn, '-n', '-c', String(opts.connections), '-j', String(jobs), '-M', 'prepared', '-T', String(Math.ceil(seconds)), '-f', script, '--log', `--log-prefix=${prefix}`, ...extra, 'postgres'],
        { timeoutMs: (seconds + 120) * 1000, tmpDir: ctx.tmp, env: pgEnv, cwd: dir, nice: opts.genNice },
      );
      if (m.code !== 0) throw new Error(`pgbench (${tag}) exited ${m.code}: ${m.stderr.slice(-2000)}`);
      const p = parsePgbench(m.stdout);
      const l = readPgbenchLogs(logs);
      return { m, p, l };
    };
    const count = () => Number(sql('SELECT count(*) FROM messages'));

    if (opts.warmup > 0) {
      log(`pg: warm-up ${opts.warmup} s`);
      await pgb(opts.warmup, [], 'warm-up');
    }
    const before = count();
    log(`pg: pgbench -c ${opts.connections} -j ${jobs} -T ${opts.duration}`);
    const cpu = new CpuMeter(srv.pid);
    const mem = new MemSampler(srv.pid);
    const { m, p, l } = await pgb(opts.duration, [], 'closed loop');
    const c = cpu.read();
    mem.stop();
    const stored = count() - before;
    const errors = p.failed + l.failed + Math.max(0, p.processed - stored);
    report.closed.push({
      target: 'pg',
      name,
      durability,
      generator: `pgbench -c ${opts.connections} -j ${jobs} -M prepared`,
      durationS: opts.duration,
      ok: stored,
      errors,
      errorDetail: errors ? `${p.failed} failed transactions; ${stored} rows for ${p.processed} processed` : '',
      throughput: p.tps,
      meanMs: p.avgMs,
      p50Ms: percentileSorted(l.lat, 50),
      p99Ms: percentileSorted(l.lat, 99),
      p999Ms: percentileSorted(l.lat, 99.9),
      maxMs: l.lat.length ? l.lat[l.lat.length - 1] : NaN,
      ...usageFields(c, genCpu(m), { value: mem.peakPss, kind: 'peak PSS, all processes' }),
    });
    log(`pg: ${fmtInt(p.tps)}/s p50 ${fmtMs(percentileSorted(l.lat, 50))} p99 ${fmtMs(percentileSorted(l.lat, 99))} (server CPU ${fmtPct(c.pct)}, generator ${fmtPct(genCpu(m))})`);

    if (!opts.skipFixed) {
      log(`pg: fixed rate ${opts.rate}/s for ${opts.fixedDuration} s`);
      const cpu2 = new CpuMeter(srv.pid);
      const mem2 = new MemSampler(srv.pid);
      const { m: m2, r } = await runOpenLoop(ctx, 'pg', port);
      const c2 = cpu2.read();
      mem2.stop();
      report.fixed.push(
        openLoopToResult({ target: 'pg', name, durability }, ctx, m2, r, c2, { value: mem2.peakPss, kind: 'peak PSS, all processes' }, '201'),
      );
      log(`pg: fixed rate p50 ${fmtMs(toNum(r.latencyMs.p50))} p99 ${fmtMs(toNum(r.latencyMs.p99))}`);
    }
  } finally {
    await stopTracked(srv, 60_000);
  }
}

// ---------------------------------------------------------------- report

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return 'n/a';
  return `${(a / b).toFixed(2)}×`;
}

/** Free text inside a markdown table cell. */
function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function renderMarkdown(r: Report): string {
  const o = r.options;
  const L: string[] = [];
  const m = r.machine;
  L.push('## Append', '');
  L.push(`Generated ${r.startedAt} by \`${r.command}\`.`, '');
  L.push(
    `Machine: ${m.nproc} × ${m.cpu}, ${m.memory} RAM, ${m.kernel}, Node ${m.node}. ` +
      `Data directories on ${r.fs}. ` +
      `Tools: wrk ${r.versions.wrk}, Redis ${r.versions.redis}, PostgreSQL ${r.versions.postgres}. ` +
      `Server and load generator share the machine; CPU is % of one core (max ${Number(m.nproc) * 100}%).`,
    '',
  );
  L.push(
    `Load: ${o.connections} requests in flight on keep-alive connections, 300-byte JSON append bodies ` +
      `(Redis and PostgreSQL store the same 265-byte parts JSON plus role), ` +
      `${fmtInt(o.conversations)} conversations picked at random, ${o.duration} s per phase after ${o.warmup} s of warm-up. ` +
      `Load generators run at nice ${o.genNice} so they are not starved by the server's threads.`,
    '',
  );
  if (r.closed.length) {
    L.push(`### Closed loop (${o.connections} in flight)`, '');
    L.push('| target | durability | generator | appends/s | p50 | p99 | p99.9 | errors | server CPU | server memory | generator CPU | kernel CPU | other CPU |');
    L.push('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const x of r.closed) {
      L.push(
        `| ${x.name} | ${x.durability} | ${x.generator} | ${fmtInt(x.throughput)} | ${fmtMs(x.p50Ms)} | ${fmtMs(x.p99Ms)} | ${fmtMs(x.p999Ms)} | ${fmtInt(x.errors)}${x.errorDetail ? ` (${cell(x.errorDetail)})` : ''} | ${fmtPct(x.serverCpuPct)} | ${fmtMiB(x.serverMem)} ${x.serverMemKind} | ${fmtPct(x.genCpuPct)} | ${fmtPct(x.kernelCpuPct)} | ${fmtPct(x.otherCpuPct)}${x.topOthers ? ` (${cell(x.topOthers)})` : ''} |`,
      );
    }
    L.push('');
  }
  const ours = (list: LoadResult[]) => list.find((x) => x.target === 'ours');
  const other = (list: LoadResult[], t: Target) => list.find((x) => x.target === t);
  const ratioRows = (list: LoadResult[], title: string) => {
    const a = ours(list);
    if (!a) return;
    const rows: string[] = [];
    for (const [t, label] of [['uws', 'ours / bare uWS ceiling'], ['redis', 'ours / Redis'], ['pg', 'ours / PostgreSQL']] as const) {
      const b = other(list, t);
      if (!b) continue;
      rows.push(
        `| ${label} | ${ratio(a.throughput, b.throughput)} | ${ratio(a.p50Ms, b.p50Ms)} | ${ratio(a.p99Ms, b.p99Ms)} | ${ratio(a.serverCpuPct / a.throughput, b.serverCpuPct / b.throughput)} |`,
      );
    }
    if (!rows.length) return;
    L.push(`### Ratios, ${title}`, '');
    L.push('| | appends/s (higher is better) | p50 (lower is better) | p99 (lower is better) | server CPU per append |');
    L.push('|---|---:|---:|---:|---:|');
    L.push(...rows, '');
  };
  ratioRows(r.closed, 'closed loop');
  if (r.fixed.length) {
    L.push(`### Fixed rate: ${fmtInt(o.rate)} appends/s for ${o.fixedDuration} s (open loop)`, '');
    L.push(
      'Latency is measured from each request\'s scheduled send time (no coordinated omission); ' +
        'requests never answered count as infinitely slow. When p50 from the schedule is far above p50 from the actual send, ' +
        'the target could not sustain the rate and requests queued for a connection.',
      '',
    );
    L.push('| target | generator | achieved/s | p50 | p99 | p99.9 | max | p50 / p99 from actual send | errors | server CPU | server memory | generator CPU | kernel CPU | other CPU |');
    L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const x of r.fixed) {
      L.push(
        `| ${x.name} | ${x.generator} | ${fmtInt(x.throughput)} | ${fmtMs(x.p50Ms)} | ${fmtMs(x.p99Ms)} | ${fmtMs(x.p999Ms)} | ${fmtMs(x.maxMs)} | ${fmtMs(x.svcP50Ms)} / ${fmtMs(x.svcP99Ms)} | ${fmtInt(x.errors)}${x.errorDetail ? ` (${cell(x.errorDetail)})` : ''} | ${fmtPct(x.serverCpuPct)} | ${fmtMiB(x.serverMem)} ${x.serverMemKind} | ${fmtPct(x.genCpuPct)} | ${fmtPct(x.kernelCpuPct)} | ${fmtPct(x.otherCpuPct)}${x.topOthers ? ` (${cell(x.topOthers)})` : ''} |`,
      );
    }
    L.push('');
    ratioRows(r.fixed, 'fixed rate');
  }
  const e = r.ours;
  if (e && (e.rssAfterFill !== undefined || e.readyMs !== undefined)) {
    L.push('### fleetlm: memory and restart', '');
    L.push('| measure | value |', '|---|---:|');
    L.push(`| messages stored | ${fmtInt(e.storedMessages)} |`);
    if (e.fillThroughput !== undefined) L.push(`| fill rate (wrk, ${o.connections} in flight) | ${fmtInt(e.fillThroughput)}/s, ${fmtInt(e.fillErrors)} errors |`);
    if (e.rssAfterFill !== undefined) L.push(`| RSS after ${fmtInt(e.storedMessages)} messages | ${fmtMiB(e.rssAfterFill)} |`);
    if (e.hwmAfterFill !== undefined) L.push(`| peak RSS (VmHWM) | ${fmtMiB(e.hwmAfterFill)} |`);
    if (e.dataDirBytes !== undefined) L.push(`| data dir size | ${fmtMiB(e.dataDirBytes)} |`);
    if (e.shutdownMs !== undefined) L.push(`| SIGTERM → exit | ${fmtMs(e.shutdownMs)}${e.shutdownKilled ? ' (needed SIGKILL)' : ''} |`);
    if (e.readyMs !== undefined) L.push(`| restart → GET /health/ready 200 (${fmtInt(e.storedAtRestart)} messages) | ${fmtMs(e.readyMs)} |`);
    if (e.firstAppendMs !== undefined) L.push(`| restart → first 201 append | ${fmtMs(e.firstAppendMs)} |`);
    if (e.rssAfterRestart !== undefined) L.push(`| RSS after restart | ${fmtMiB(e.rssAfterRestart)} |`);
    L.push('');
  }
  if (r.conditions.length) {
    L.push('### Conditions', '');
    L.push('Measured just before each target\'s phases: CPU used by the rest of the machine, and 4 KiB write+fdatasync on the data filesystem.', '');
    L.push('| before | machine CPU busy | load average (1/5/15 min) | fdatasync/s | fdatasync p50 | fdatasync p99 |');
    L.push('|---|---:|---:|---:|---:|---:|');
    const names: Record<Target, string> = { ours: 'fleetlm', uws: 'bare uWS', redis: 'Redis', pg: 'PostgreSQL' };
    for (const c of r.conditions) {
      L.push(
        `| ${names[c.target]} | ${fmtPct(c.busyBeforePct)} | ${c.loadavg.map((x) => x.toFixed(2)).join(' / ')} | ${fmtInt(c.fsyncPerS)} | ${fmtMs(c.fsyncP50Ms)} | ${fmtMs(c.fsyncP99Ms)} |`,
      );
    }
    L.push('');
    if (r.conditions.some((c) => c.busyBeforePct > 10) || [...r.closed, ...r.fixed].some((x) => (x.otherCpuPct ?? 0) > 15)) {
      L.push(
        '**Warning:** other processes were using the CPU before a target started (busy > 10%) or during a phase ("other CPU" > 15%): ' +
          'on a 2-core machine that skews every number here. Re-run on an idle machine.',
        '',
      );
    }
  }
  const fails = Object.entries(r.failures);
  if (fails.length) {
    L.push('### Not measured', '');
    for (const [t, msg] of fails) {
      L.push(`- ${t}: ${msg.split('\n')[0]}${msg.includes('--- last lines of') ? ' (server log tail in the console output and the .json)' : ''}`);
    }
    L.push('');
  }
  L.push('### Method', '');
  L.push(
    '- Every server is started by the bench on a free 127.0.0.1 port with a fresh data directory and stopped by PID at the end.',
    '- fleetlm: `wrk -t1` with `bench/lua/append.lua` (requests pre-built, one random conversation per request); ' +
      'only 201 counts as success, every other status or socket error is an error. Latency percentiles come from wrk.',
    '- bare uWS ceiling: `bench/ceiling-server.ts` under the same wrk load: what any server on uWebSockets.js in one Node thread reaches here when it only ' +
      'parses the body, numbers it per conversation and group-commits it to one file (write + fdatasync per loop turn) before answering 201.',
    '- Redis: `redis-benchmark -c N -r 1000 XADD conv:__rand_int__ * role user parts <json>`, run for ≈ the phase duration ' +
      '(count calibrated by the warm-up); errors = XADDs sent − stream entries added. Percentiles from redis-benchmark.',
    '- PostgreSQL: `pgbench -M prepared` with one transaction per append: ' +
      '`UPDATE conversations SET last_seq = last_seq + 1 … RETURNING` feeding an `INSERT` into `messages (conversation_id, seq, role, parts jsonb)`, ' +
      'primary key (conversation_id, seq). Percentiles from pgbench\'s per-transaction `--log`.',
    '- Fixed rate: `bench/openloop.js` for all three (Node, raw sockets, constant inter-send interval, on the least-loaded of N ' +
      'keep-alive connections, one request in flight per connection, due requests queue for a free connection; HTTP/1.1, RESP, ' +
      'or the PostgreSQL extended protocol with the same UPDATE…INSERT prepared once; 2 s warm-up). ' +
      'Its own send lag (Node timers have 1 ms granularity, as wrk2\'s do, so ≈0.5 ms on average; plus GC and CPU contention) is charged to ' +
      'the target and reported; the "from actual send" column excludes it but is subject to coordinated omission.',
    '- Server CPU: utime+stime (+ reaped children) of the server\'s process tree from /proc over the phase. ' +
      'Generator CPU: user+sys of the generator process from bash `times`. "Kernel CPU": kernel threads (journaling, block I/O) and irq/softirq time. ' +
      '"Other CPU": the machine\'s busy time (/proc/stat) minus all of the above and this script, i.e. anyone else\'s jobs (should be ≈0). Memory sampled every 0.5 s from /proc (VmRSS; PSS for multi-process PostgreSQL).',
    '',
  );
  return L.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  installCleanupHandlers();
  const opts = parseOptions(process.argv.slice(2), process.env);
  ensureTools(opts);
  fs.mkdirSync(opts.tmp, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(opts.tmp, 'fleetlm-bench-'));
  fs.chmodSync(tmp, 0o755);
  onExit(() => {
    if (opts.keep) log(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  });
  const pgb = pgBinDir();
  const npmCmd = process.env.npm_lifecycle_event ? `npm run ${process.env.npm_lifecycle_event} -- ` : '';
  const report: Report = {
    startedAt: new Date().toISOString(),
    command: `${npmCmd ? npmCmd + process.argv.slice(2).join(' ') : ['node', path.relative(ROOT, process.argv[1] ?? ''), ...process.argv.slice(2)].join(' ')}`.trim(),
    options: opts,
    machine: machineInfo(),
    versions: {
      wrk: which('wrk') ? version('wrk', ['--version'], /wrk (?:debian\/)?(\d\S*)/) : 'n/a',
      redis: which('redis-server') ? version('redis-server', ['--version'], /v=(\S+)/) : 'n/a',
      postgres: pgb ? version(path.join(pgb, 'postgres'), ['--version'], /\(PostgreSQL\) (\S+)/) : 'n/a',
    },
    fs: fsType(tmp),
    closed: [],
    fixed: [],
    conditions: [],
    failures: {},
  };
  const ctx: Ctx = { opts, tmp, report };
  log(`temp dir ${tmp} on ${report.fs}; targets ${[...opts.only].join(',')}; ${opts.duration} s per phase`);

  const steps: Array<[Target, (c: Ctx) => Promise<void>]> = [
    ['ours', benchOurs],
    ['uws', benchCeiling],
    ['redis', benchRedis],
    ['pg', benchPg],
  ];
  for (const [t, f] of steps) {
    if (!opts.only.has(t)) continue;
    if (isStopping()) break;
    try {
      let busy = await machineBusyPct(1000);
      const idleDeadline = Date.now() + opts.waitIdle * 1000;
      while (busy > 10 && Date.now() < idleDeadline && !isStopping()) {
        log(`${t}: machine ${busy.toFixed(0)}% busy; waiting for it to go idle (--wait-idle)`);
        busy = await machineBusyPct(2000);
      }
      const fp = fsyncProbe(tmp, 1000);
      report.conditions.push({ target: t, busyBeforePct: busy, fsyncPerS: fp.opsPerS, fsyncP50Ms: fp.p50Ms, fsyncP99Ms: fp.p99Ms, loadavg: os.loadavg() });
      log(`${t}: machine ${busy.toFixed(0)}% busy before start; fdatasync ${fmtInt(fp.opsPerS)}/s, p50 ${fmtMs(fp.p50Ms)}, p99 ${fmtMs(fp.p99Ms)}`);
      await f(ctx);
    } catch (e) {
      const msg = (e as Error).message;
      report.failures[t] = msg;
      if (isStopping()) break;
      log(`${t} FAILED: ${msg}`);
    }
  }

  if (isStopping()) return 130; // interrupted: keep the previous results file
  const md = renderMarkdown(report);
  writeResults(ROOT, opts.out, md, report);
  return Object.keys(report.failures).length ? 1 : 0;
}

runBench(main);
