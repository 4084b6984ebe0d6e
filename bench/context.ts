// bench/context: latency and throughput of context window reads
// (GET /v1/contexts/:id/context) on long contexts, one per windowing policy.
//
//   npm run bench:context                          # defaults below
//   npm run bench:context -- --messages=2000 --reads=500
//
// Two contexts, `bench-last-n` (policy last_n, limit 200) and `bench-skip`
// (policy skip_parts, default types), each filled through the API with
// --messages messages, 32 appends in flight, cycling through a user text, an
// assistant reasoning + text, an assistant tool call and a tool result (texts
// vary by index, so token counts do too). Then, per context:
//   cold          the first read after the fill (window memo empty)
//   sequential    --reads reads, one at a time over one keep-alive connection
//   concurrent    --reads reads by --concurrency readers, one connection each
//   + appends     --reads sequential reads while one appender adds
//                 --append-rate messages/s to the same context
// Every read is checked for 200 and used_tokens <= budget, one in ten in full
// (messages non-empty, last_n: at most 200 messages, skip_parts: no
// reasoning/tool_result part); the bench fails on the first read that is wrong. Latency is client-side,
// request sent → response body complete; the server's own view is the
// fleet_lm_window_latency_ms histogram from /metrics, read around each phase.
//
// The server is started on a free loopback port with a fresh temp data dir and
// stopped by PID at the end, also on error and SIGINT. Results:
// bench/results/context-latest.md (and .json next to it).
//
// Options (argv --name=value, or env BENCH_NAME):
//   --messages=10000     messages appended to each context before the reads
//   --budget=8192        token_budget of both contexts, and budget_tokens of every read
//   --reads=2000         measured reads per phase
//   --wrk-seconds=10     sequential reads by wrk (-t1 -c1), if wrk is installed; 0 skips
//   --warmup=1000        unmeasured (but checked) reads after the cold read (JIT and GC settle after the fill)
//   --concurrency=8      readers in the concurrent phase
//   --append-rate=500    appends/s of the background appender
//   --server=dist/runtime/main.js   entry point of the server
//   --out=bench/results/context-latest.md
//   --tmp=<dir>          parent of the temp dir (default: os.tmpdir())
//   --keep               keep the temp dir (data dir and server.log)
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CpuMeter,
  runMeasured,
  which,
  closeHttpAgent,
  fmtInt,
  fmtMs,
  fmtPct,
  freePort,
  fsType,
  httpRequest,
  installCleanupHandlers,
  isStopping,
  log,
  machineInfo,
  onExit,
  percentileSorted,
  pool,
  spawnTracked,
  stopTracked,
  tailLog,
  waitHttpReady,
  type Tracked,
  benchArgs,
  writeResults,
  runBench,
  SERVER_NODE_FLAGS,
} from './lib.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Appends in flight while filling a context. */
const FILL_IN_FLIGHT = 32;
const LAST_N_LIMIT = 200;
/** Part types skip_parts drops by default that the generated messages contain. */
const SKIPPED_TYPES: ReadonlySet<string> = new Set(['reasoning', 'tool_result']);
/** The background appender's connections; it never has more appends in flight. */
const APPENDER_CONNECTIONS = 8;
/** How often the appender checks for due appends: coarse enough for Node timers, fine enough for ~500/s. */
const APPENDER_TICK_MS = 5;
const REQUEST_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------- options

interface Options {
  messages: number;
  budget: number;
  reads: number;
  warmup: number;
  concurrency: number;
  appendRate: number;
  /** Seconds of wrk reads per context; 0 (or no wrk installed) skips the phase. */
  wrkSeconds: number;
  server: string;
  out: string;
  tmp: string;
  keep: boolean;
}

const OPTION_NAMES = ['messages', 'budget', 'reads', 'warmup', 'concurrency', 'append-rate', 'wrk-seconds', 'server', 'out', 'tmp', 'keep'];

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): Options {
  const kv = benchArgs(argv, env, OPTION_NAMES, 'bench/context.ts');
  const int = (k: string, d: number, min = 1) => {
    const v = kv.get(k);
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${k} must be an integer >= ${min}, got ${v}`);
    return n;
  };
  return {
    messages: int('messages', 10_000),
    budget: int('budget', 8192),
    reads: int('reads', 2000),
    warmup: int('warmup', 1000, 0),
    concurrency: int('concurrency', 8),
    appendRate: int('append-rate', 500),
    wrkSeconds: which('wrk') ? int('wrk-seconds', 10, 0) : 0,
    server: path.resolve(ROOT, kv.get('server') ?? 'dist/runtime/main.js'),
    out: path.resolve(ROOT, kv.get('out') ?? 'bench/results/context-latest.md'),
    tmp: kv.get('tmp') ?? os.tmpdir(),
    keep: ['1', 'true', 'yes', 'on'].includes((kv.get('keep') ?? '').toLowerCase()),
  };
}

// ---------------------------------------------------------------- contexts and messages

type Policy = { strategy: 'last_n'; config: { limit: number } } | { strategy: 'skip_parts'; config: Record<string, never> };

interface ContextSpec {
  id: string;
  policy: Policy;
}

const CONTEXTS: ContextSpec[] = [
  { id: 'bench-last-n', policy: { strategy: 'last_n', config: { limit: LAST_N_LIMIT } } },
  { id: 'bench-skip', policy: { strategy: 'skip_parts', config: {} } },
];

function describePolicy(p: Policy): string {
  return p.strategy === 'last_n' ? `last_n, limit ${p.config.limit}` : 'skip_parts, default types';
}

const WORDS = (
  'the a to of and in is for that on with this it as be by are from at or an not we can you your will if ' +
  'search result query index window budget token context message summary tool call agent model user answer ' +
  'function returns error retry timeout latency request response server client cache policy compaction stream ' +
  'document section paragraph reference source citation number total value field record table column row ' +
  'because however therefore although instead first second finally next previous related relevant'
).split(' ');

/** mulberry32: a small deterministic PRNG, so every run appends the same texts. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Words (now and then a number or punctuation) up to a length drawn from [minChars, maxChars]. */
function prose(rand: () => number, minChars: number, maxChars: number): string {
  const target = minChars + Math.floor(rand() * (maxChars - minChars + 1));
  let s = '';
  while (s.length < target) {
    const r = rand();
    const word = r < 0.08 ? String(Math.floor(rand() * 100_000)) : WORDS[Math.floor(rand() * WORDS.length)];
    s += (s ? ' ' : '') + word + (r > 0.93 ? '.' : r > 0.88 ? ',' : '');
  }
  return s;
}

/** Message i of the mix: user text, assistant reasoning + text, assistant tool call, tool result, repeating. */
function messageAt(i: number): Record<string, unknown> {
  const rand = prng(Math.imul(i + 1, 0x9e3779b1));
  switch (i % 4) {
    case 0:
      return { role: 'user', parts: [{ type: 'text', text: prose(rand, 200, 400) }] };
    case 1:
      return {
        role: 'assistant',
        parts: [
          { type: 'reasoning', text: prose(rand, 250, 350) },
          { type: 'text', text: prose(rand, 250, 350) },
        ],
      };
    case 2:
      return { role: 'assistant', parts: [{ type: 'tool_call', id: `call_${i}`, name: 'search', args: { q: prose(rand, 20, 60) } }] };
    default:
      return { role: 'tool', parts: [{ type: 'tool_result', tool_call_id: `call_${i - 1}`, text: prose(rand, 450, 550) }] };
  }
}

const appendBody = (i: number) => JSON.stringify({ message: messageAt(i) });

// ---------------------------------------------------------------- HTTP on chosen connections

interface Timed {
  status: number;
  body: string;
  ms: number;
}

/**
 * One request on `agent` (lib's httpRequest shares one pool of sockets; the
 * read phases need a known number of connections). `ms` runs from the call
 * to the last byte of the response body.
 */
function requestOn(agent: http.Agent, port: number, method: string, urlPath: string, body?: string): Promise<Timed> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = {};
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(body);
    }
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - t0 }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: timeout after ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

const connection = (sockets = 1) => new http.Agent({ keepAlive: true, maxSockets: sockets });

// ---------------------------------------------------------------- window reads

/** The members of a window body the checks look at. */
interface WindowBody {
  used_tokens: number;
  messages: Array<{ parts: Array<{ type: string }> }>;
}

const windowPath = (spec: ContextSpec, budget: number) => `/v1/contexts/${spec.id}/context?budget_tokens=${budget}`;

/** The checks every read must pass; returns what the report shows of a read. */
function checkWindow(spec: ContextSpec, budget: number, r: Timed): { messages: number; usedTokens: number } {
  const where = `GET ${windowPath(spec, budget)}`;
  if (r.status !== 200) throw new Error(`${where}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  const w = JSON.parse(r.body) as WindowBody;
  if (!Array.isArray(w.messages) || w.messages.length === 0) throw new Error(`${where}: no messages`);
  if (!(w.used_tokens <= budget)) throw new Error(`${where}: used_tokens ${w.used_tokens} > budget ${budget}`);
  if (spec.policy.strategy === 'last_n' && w.messages.length > spec.policy.config.limit) {
    throw new Error(`${where}: ${w.messages.length} messages > last_n limit ${spec.policy.config.limit}`);
  }
  if (spec.policy.strategy === 'skip_parts') {
    const skipped = w.messages.flatMap((m) => m.parts).find((p) => SKIPPED_TYPES.has(p.type));
    if (skipped) throw new Error(`${where}: skip_parts returned a ${skipped.type} part`);
  }
  return { messages: w.messages.length, usedTokens: w.used_tokens };
}

const CHECK_EVERY = 10;

/** Status and used_tokens (near the start of the body) without parsing the rest; the message count is unknown. */
function checkWindowCheaply(spec: ContextSpec, budget: number, r: Timed): { messages: number | null; usedTokens: number } {
  const where = `GET ${windowPath(spec, budget)}`;
  if (r.status !== 200) throw new Error(`${where}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  const used = /"used_tokens":([0-9]+)/.exec(r.body.slice(0, 128));
  if (used === null || !(Number(used[1]) <= budget)) throw new Error(`${where}: used_tokens missing or over budget ${budget}`);
  return { messages: null, usedTokens: Number(used[1]) };
}

interface Reads {
  /** Latencies, ascending, ms (empty when the reads came from wrk: see summary). */
  lat: number[];
  /** Percentiles computed by the load generator itself (wrk). */
  summary?: { count: number; p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number };
  wallS: number;
  /** Messages and used_tokens per read, ascending (for the median read). */
  messages: number[];
  usedTokens: number[];
}

/** `count` checked reads shared by `readers` readers, each on its own keep-alive connection. */
async function readWindows(port: number, spec: ContextSpec, budget: number, count: number, readers: number): Promise<Reads> {
  const lat: number[] = [];
  const messages: number[] = [];
  const usedTokens: number[] = [];
  let next = 0;
  const reader = async () => {
    const agent = connection();
    try {
      while (next < count) {
        next++;
        const i = next;
        const r = await requestOn(agent, port, 'GET', windowPath(spec, budget));
        // Parsing every 35–60 KB body would make the client's GC part of the
        // latencies it measures: one read in CHECK_EVERY is checked in full.
        const w = i % CHECK_EVERY === 1 ? checkWindow(spec, budget, r) : checkWindowCheaply(spec, budget, r);
        lat.push(r.ms);
        if (w.messages !== null) messages.push(w.messages);
        usedTokens.push(w.usedTokens);
      }
    } catch (e) {
      next = count; // the other readers stop after their current read
      throw e;
    } finally {
      agent.destroy();
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(readers, count) }, reader));
  const wallS = (performance.now() - t0) / 1000;
  const asc = (a: number[]) => a.sort((x, y) => x - y);
  return { lat: asc(lat), wallS, messages: asc(messages), usedTokens: asc(usedTokens) };
}

/** wrk's `--latency` value for a percentile ("99%  796.00us") or its Max, in ms. */
function wrkLatency(out: string, label: string): number {
  const re = label === 'max' ? /^\s*Latency\s+\S+\s+\S+\s+(\S+)/m : new RegExp(`^\\s*${label}%\\s+(\\S+)`, 'm');
  const m = re.exec(out);
  if (!m) throw new Error(`wrk output has no ${label} latency:\n${out}`);
  const v = /^([\d.]+)(us|ms|s)$/.exec(m[1]);
  if (!v) throw new Error(`wrk latency ${m[1]} not understood`);
  return Number(v[1]) * (v[2] === 'us' ? 0.001 : v[2] === 's' ? 1000 : 1);
}

/**
 * Sequential reads by wrk (one connection, C client): the node's latency
 * without a Node HTTP client's overhead and GC on the same two cores. wrk
 * checks nothing but the status; one checked read gives the window's shape.
 */
async function wrkReads(port: number, spec: ContextSpec, budget: number, seconds: number, tmp: string): Promise<Reads> {
  const agent = connection();
  const shape = checkWindow(spec, budget, await requestOn(agent, port, 'GET', windowPath(spec, budget)));
  agent.destroy();
  const url = `http://127.0.0.1:${port}${windowPath(spec, budget)}`;
  const m = await runMeasured('wrk', 'wrk', ['-t1', '-c1', `-d${seconds}s`, '--latency', url], { timeoutMs: (seconds + 30) * 1000, tmpDir: tmp });
  if (m.code !== 0) throw new Error(`wrk exited ${m.code}: ${m.stderr}`);
  if (/Non-2xx or 3xx responses|Socket errors/.test(m.stdout)) throw new Error(`wrk saw errors:\n${m.stdout}`);
  const requests = Number(/(\d+) requests in/.exec(m.stdout)?.[1]);
  return {
    lat: [],
    wallS: seconds,
    messages: [shape.messages],
    usedTokens: [shape.usedTokens],
    summary: {
      count: requests,
      p50Ms: wrkLatency(m.stdout, '50'),
      p90Ms: wrkLatency(m.stdout, '90'),
      p99Ms: wrkLatency(m.stdout, '99'),
      maxMs: wrkLatency(m.stdout, 'max'),
    },
  };
}

// ---------------------------------------------------------------- background appender

interface AppenderResult {
  appended: number;
  ratePerS: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * Appends to `spec` at `rate`/s until stop(). Open loop: due appends are
 * counted from the start time, so after a stall they catch up (at most
 * APPENDER_CONNECTIONS in flight) rather than the rate quietly dropping; the
 * achieved rate is reported. stop() throws if any append was not a 201.
 */
function startAppender(port: number, spec: ContextSpec, rate: number, firstIndex: number): { stop: () => Promise<AppenderResult> } {
  const agent = connection(APPENDER_CONNECTIONS);
  const lat: number[] = [];
  const inFlight = new Set<Promise<void>>();
  let sent = 0;
  let failure: Error | null = null;
  const t0 = performance.now();
  const send = (i: number) => {
    const p = requestOn(agent, port, 'POST', `/v1/contexts/${spec.id}/messages`, appendBody(i)).then(
      (r) => {
        if (r.status === 201) lat.push(r.ms);
        else failure ??= new Error(`background append to ${spec.id}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
      },
      (e: Error) => void (failure ??= e),
    );
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - t0) * rate) / 1000);
    while (sent < due && inFlight.size < APPENDER_CONNECTIONS) send(firstIndex + sent++);
  }, APPENDER_TICK_MS);
  return {
    stop: async () => {
      clearInterval(timer);
      const wallS = (performance.now() - t0) / 1000;
      await Promise.all(inFlight);
      agent.destroy();
      if (failure) throw failure;
      lat.sort((x, y) => x - y);
      return { appended: lat.length, ratePerS: lat.length / wallS, p50Ms: percentileSorted(lat, 50), p99Ms: percentileSorted(lat, 99) };
    },
  };
}

// ---------------------------------------------------------------- /metrics

interface Histogram {
  count: number;
  sumMs: number;
  /** Cumulative counts per bucket upper bound (ms). */
  buckets: [number, number][];
}

/** Smallest bucket bound holding `p`% of the reads between two snapshots: "p99 ≤ x ms". */
function bucketPercentile(h0: Histogram, h1: Histogram, p: number): number {
  const n = h1.count - h0.count;
  for (let i = 0; i < h1.buckets.length; i++) {
    if (h1.buckets[i][1] - h0.buckets[i][1] >= (n * p) / 100) return h1.buckets[i][0];
  }
  return Infinity;
}

/** fleet_lm_window_latency_ms count and sum (the server's whole life). */
async function windowHistogram(port: number): Promise<Histogram> {
  const r = await httpRequest(port, 'GET', '/metrics');
  if (r.status !== 200) throw new Error(`GET /metrics: HTTP ${r.status}`);
  const value = (name: string) => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(r.body);
    if (!m) throw new Error(`GET /metrics has no ${name}`);
    return Number(m[1]);
  };
  const buckets: [number, number][] = [];
  for (const m of r.body.matchAll(/^fleet_lm_window_latency_ms_bucket\{le="([0-9.]+)"\} (\S+)$/gm)) buckets.push([Number(m[1]), Number(m[2])]);
  return { count: value('fleet_lm_window_latency_ms_count'), sumMs: value('fleet_lm_window_latency_ms_sum'), buckets };
}

// ---------------------------------------------------------------- results

interface FillResult {
  context: string;
  policy: string;
  messages: number;
  appendsPerS: number;
  p50Ms: number;
  p99Ms: number;
  tokensMin: number;
  tokensMean: number;
  tokensMax: number;
}

type PhaseName = 'cold' | 'sequential' | 'sequential (wrk)' | 'concurrent' | 'sequential + appends';

interface PhaseResult {
  context: string;
  phase: PhaseName;
  reads: number;
  readers: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  readsPerS: number;
  /** Mean of fleet_lm_window_latency_ms over the phase's reads (inside the node). */
  serverMeanMs: number;
  /** Bucket bound of fleet_lm_window_latency_ms holding 99% of the phase's reads. */
  serverP99BoundMs: number;
  /** Messages and used_tokens of the median read. */
  messages: number;
  usedTokens: number;
  /** Not for the cold read: /proc counts CPU in 10 ms ticks. */
  cpu?: PhaseCpu;
  appender?: AppenderResult;
}

interface PhaseCpu {
  serverS: number;
  serverPct: number;
  /** This process (readers, appender), % of one core. */
  benchPct: number;
  /** Everything else on the machine, % of one core. */
  otherPct: number;
}

interface Report {
  startedAt: string;
  command: string;
  options: Options;
  machine: Record<string, string>;
  fs: string;
  fill: FillResult[];
  phases: PhaseResult[];
  /** fleet_lm_window_latency_ms over each context's reads (warm-up included). */
  histograms: Array<{ context: string; count: number; sumMs: number }>;
}

// ---------------------------------------------------------------- phases

async function createContext(port: number, spec: ContextSpec, budget: number): Promise<void> {
  const r = await httpRequest(port, 'PUT', `/v1/contexts/${spec.id}`, JSON.stringify({ token_budget: budget, policy: spec.policy }));
  if (r.status !== 200) throw new Error(`PUT /v1/contexts/${spec.id}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
}

async function fill(port: number, spec: ContextSpec, count: number): Promise<FillResult> {
  const t0 = performance.now();
  const acks = await pool(FILL_IN_FLIGHT, count, async (i) => {
    const started = performance.now();
    const r = await httpRequest(port, 'POST', `/v1/contexts/${spec.id}/messages`, appendBody(i), REQUEST_TIMEOUT_MS);
    if (r.status !== 201) throw new Error(`POST /v1/contexts/${spec.id}/messages: HTTP ${r.status} ${r.body.slice(0, 300)}`);
    const ack = JSON.parse(r.body) as { seq: number; token_count: number };
    return { ms: performance.now() - started, seq: ack.seq, tokens: ack.token_count };
  });
  const wallS = (performance.now() - t0) / 1000;
  const lastSeq = Math.max(...acks.map((a) => a.seq));
  if (lastSeq !== count) throw new Error(`${spec.id}: last seq ${lastSeq} after ${count} appends`);
  const lat = acks.map((a) => a.ms).sort((x, y) => x - y);
  const tokens = acks.map((a) => a.tokens);
  return {
    context: spec.id,
    policy: describePolicy(spec.policy),
    messages: count,
    appendsPerS: count / wallS,
    p50Ms: percentileSorted(lat, 50),
    p99Ms: percentileSorted(lat, 99),
    tokensMin: Math.min(...tokens),
    tokensMean: tokens.reduce((s, x) => s + x, 0) / tokens.length,
    tokensMax: Math.max(...tokens),
  };
}

/** Runs one read phase with CPU and /metrics accounting around it. */
async function measured(
  srv: Tracked,
  port: number,
  spec: ContextSpec,
  phase: PhaseName,
  readers: number,
  run: () => Promise<Reads>,
  startBackground?: () => { stop: () => Promise<AppenderResult> },
): Promise<PhaseResult> {
  const h0 = await windowHistogram(port);
  const meter = phase === 'cold' ? null : new CpuMeter(srv.pid);
  const background = startBackground?.();
  const reads = await run();
  const appended = await background?.stop();
  const c = meter?.read();
  const h1 = await windowHistogram(port);
  const s = reads.summary;
  const n = s?.count ?? reads.lat.length;
  return {
    context: spec.id,
    phase,
    reads: n,
    readers,
    p50Ms: s?.p50Ms ?? percentileSorted(reads.lat, 50),
    p90Ms: s?.p90Ms ?? percentileSorted(reads.lat, 90),
    p99Ms: s?.p99Ms ?? percentileSorted(reads.lat, 99),
    maxMs: s?.maxMs ?? reads.lat[n - 1],
    readsPerS: n / reads.wallS,
    serverMeanMs: (h1.sumMs - h0.sumMs) / (h1.count - h0.count),
    serverP99BoundMs: bucketPercentile(h0, h1, 99),
    messages: percentileSorted(reads.messages, 50),
    usedTokens: percentileSorted(reads.usedTokens, 50),
    cpu: c && {
      serverS: c.cpuS,
      serverPct: c.pct,
      benchPct: c.selfPct,
      otherPct: Math.max(0, c.machinePct - c.pct - c.selfPct - c.kernelPct),
    },
    appender: appended,
  };
}

function logPhase(p: PhaseResult): void {
  log(
    `${p.context} ${p.phase}: p50 ${fmtMs(p.p50Ms)} p99 ${fmtMs(p.p99Ms)} max ${fmtMs(p.maxMs)}, ${p.phase === 'cold' ? '' : `${fmtInt(p.readsPerS)} reads/s, `}` +
      `${p.messages} messages / ${p.usedTokens} tokens` +
      (p.appender ? `; appender ${fmtInt(p.appender.ratePerS)}/s` : ''),
  );
}

async function benchContext(srv: Tracked, port: number, spec: ContextSpec, opts: Options, report: Report): Promise<void> {
  const { budget, reads } = opts;
  const h0 = await windowHistogram(port);
  const phases: PhaseResult[] = [];

  phases.push(await measured(srv, port, spec, 'cold', 1, () => readWindows(port, spec, budget, 1, 1)));
  logPhase(phases[phases.length - 1]);
  if (opts.warmup > 0) await readWindows(port, spec, budget, opts.warmup, 1);

  phases.push(await measured(srv, port, spec, 'sequential', 1, () => readWindows(port, spec, budget, reads, 1)));
  logPhase(phases[phases.length - 1]);
  if (opts.wrkSeconds > 0) {
    phases.push(await measured(srv, port, spec, 'sequential (wrk)', 1, () => wrkReads(port, spec, budget, opts.wrkSeconds, opts.tmp)));
    logPhase(phases[phases.length - 1]);
  }
  phases.push(
    await measured(srv, port, spec, 'concurrent', opts.concurrency, () => readWindows(port, spec, budget, reads, opts.concurrency)),
  );
  logPhase(phases[phases.length - 1]);

  // Last: it grows the context. Indexes continue the fill's, so the mix goes on.
  phases.push(
    await measured(srv, port, spec, 'sequential + appends', 1, () => readWindows(port, spec, budget, reads, 1), () =>
      startAppender(port, spec, opts.appendRate, opts.messages),
    ),
  );
  logPhase(phases[phases.length - 1]);

  const h1 = await windowHistogram(port);
  report.phases.push(...phases);
  report.histograms.push({ context: spec.id, count: h1.count - h0.count, sumMs: h1.sumMs - h0.sumMs });
}

async function startServer(opts: Options, dataDir: string, port: number, logFile: string): Promise<Tracked> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    FLEETLM_RAFT_DATA_DIR: dataDir,
    FLEETLM_LOG_LEVEL: 'warn',
    NODE_ENV: process.env.NODE_ENV ?? 'production',
    // as `npm start` and the deploy files run it
    MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
  };
  return spawnTracked('server', process.execPath, [...SERVER_NODE_FLAGS, opts.server], { env, cwd: ROOT, logFile, stopSignal: 'SIGTERM' });
}

// ---------------------------------------------------------------- report

function renderMarkdown(r: Report): string {
  const o = r.options;
  const m = r.machine;
  const L: string[] = [];
  L.push('## Context window reads', '');
  L.push(`Generated ${r.startedAt} by \`${r.command}\`.`, '');
  L.push(
    `Machine: ${m.nproc} × ${m.cpu}, ${m.memory} RAM, ${m.kernel}, Node ${m.node}. Data directory on ${r.fs}. ` +
      `Server and bench client share the machine; CPU is % of one core (max ${Number(m.nproc) * 100}%).`,
    '',
  );
  L.push(
    `Setup: ${CONTEXTS.length} contexts with token_budget ${fmtInt(o.budget)}, each filled with ${fmtInt(o.messages)} messages ` +
      `(${FILL_IN_FLIGHT} appends in flight) cycling through a user text (200–400 chars), an assistant reasoning + text (≈300 + 300 chars), ` +
      `an assistant tool call (no text) and a tool result (≈500 chars). ` +
      `Reads: \`GET /v1/contexts/:id/context?budget_tokens=${o.budget}\`, ${fmtInt(o.reads)} per phase, after ${fmtInt(o.warmup)} unmeasured warm-up reads.`,
    '',
  );

  L.push('### Fill', '');
  L.push('| context | policy | messages | appends/s | append p50 | append p99 | tokens per message (min / mean / max) |');
  L.push('|---|---|---:|---:|---:|---:|---:|');
  for (const f of r.fill) {
    L.push(
      `| ${f.context} | ${f.policy} | ${fmtInt(f.messages)} | ${fmtInt(f.appendsPerS)} | ${fmtMs(f.p50Ms)} | ${fmtMs(f.p99Ms)} | ` +
        `${f.tokensMin} / ${f.tokensMean.toFixed(0)} / ${f.tokensMax} |`,
    );
  }
  L.push('');

  L.push('### Reads', '');
  L.push(
    'Latency is client-side (request sent → response body complete). "server mean" is fleet_lm_window_latency_ms from /metrics over the ' +
      'phase (inside the node). "typical read" is the median messages returned / used_tokens.',
    '',
  );
  L.push('| context | phase | reads | readers | p50 | p90 | p99 | max | reads/s | server mean | server p99 | typical read: messages / used_tokens | server CPU | bench CPU | other CPU |');
  L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const p of r.phases) {
    const cpu = p.cpu ? `${p.cpu.serverS.toFixed(2)} s (${fmtPct(p.cpu.serverPct)}) | ${fmtPct(p.cpu.benchPct)} | ${fmtPct(p.cpu.otherPct)}` : '— | — | —';
    L.push(
      `| ${p.context} | ${p.phase} | ${fmtInt(p.reads)} | ${p.readers} | ${fmtMs(p.p50Ms)} | ${fmtMs(p.p90Ms)} | ${fmtMs(p.p99Ms)} | ${fmtMs(p.maxMs)} | ` +
        `${p.phase === 'cold' ? '—' : fmtInt(p.readsPerS)} | ${fmtMs(p.serverMeanMs)} | ≤ ${fmtMs(p.serverP99BoundMs)} | ${fmtInt(p.messages)} / ${fmtInt(p.usedTokens)} | ${cpu} |`,
    );
  }
  L.push('');
  const withAppends = r.phases.filter((p) => p.appender);
  if (withAppends.length) {
    L.push(`Background appender (target ${fmtInt(o.appendRate)}/s, up to ${APPENDER_CONNECTIONS} in flight):`, '');
    for (const p of withAppends) {
      const a = p.appender!;
      L.push(`- ${p.context}: ${fmtInt(a.appended)} appends, ${fmtInt(a.ratePerS)}/s, p50 ${fmtMs(a.p50Ms)}, p99 ${fmtMs(a.p99Ms)}`);
    }
    L.push('');
  }

  L.push('### fleet_lm_window_latency_ms (server side, all reads of the context incl. warm-up)', '');
  L.push('| context | count | sum | mean |', '|---|---:|---:|---:|');
  for (const h of r.histograms) L.push(`| ${h.context} | ${fmtInt(h.count)} | ${fmtMs(h.sumMs)} | ${fmtMs(h.sumMs / h.count)} |`);
  L.push('');

  if (r.phases.some((p) => (p.cpu?.otherPct ?? 0) > 15)) {
    L.push(
      '**Warning:** other processes used the CPU during some phases ("other CPU" > 15%): on a 2-core machine that skews the numbers.',
      '',
    );
  }
  L.push('### Method', '');
  L.push(
    '- The server is started on a free 127.0.0.1 port with a fresh data directory and stopped by PID at the end.',
    '- "cold" is the first read after the fill: the actor is in memory, the skip_parts memo is empty (messages that lost parts are recounted).',
    `- "sequential": one reader (Node http) on one keep-alive connection; "sequential (wrk)": \`wrk -t1 -c1 --latency\` for ${o.wrkSeconds} s ` +
      `(percentiles from wrk; it checks only the status, one read before it is checked in full; its own CPU is not in the CPU columns); ` +
      `"concurrent": ${o.concurrency} readers, one connection each, ` +
      `sharing the phase's reads; "sequential + appends": one reader while an open-loop appender adds ${fmtInt(o.appendRate)} messages/s to the same context.`,
    `- Every read is checked for HTTP 200 and used_tokens ≤ ${o.budget}; one in ${CHECK_EVERY} is parsed and checked in full (parsing every body would put the client's GC into the latencies): messages non-empty, used_tokens ≤ ${o.budget}, last_n returns ≤ ${LAST_N_LIMIT} messages, ` +
      'skip_parts returns no reasoning or tool_result part. The JSON is parsed after the latency is taken, but its CPU counts in "bench CPU".',
    '- Server CPU: utime+stime of the server process tree from /proc over the phase. "Other CPU": the machine\'s busy time minus the server, this script and kernel threads.',
    '',
  );
  return L.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  installCleanupHandlers();
  const opts = parseOptions(process.argv.slice(2), process.env);
  if (!fs.existsSync(opts.server)) throw new Error(`${path.relative(ROOT, opts.server)} does not exist (npm run build)`);
  fs.mkdirSync(opts.tmp, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(opts.tmp, 'fleetlm-bench-context-'));
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
    fs: fsType(tmp),
    fill: [],
    phases: [],
    histograms: [],
  };

  const dataDir = path.join(tmp, 'data');
  fs.mkdirSync(dataDir);
  const port = await freePort();
  log(`starting ${path.relative(ROOT, opts.server)} on :${port}, data ${dataDir}`);
  const srv = await startServer(opts, dataDir, port, path.join(tmp, 'server.log'));
  try {
    const readyMs = await waitHttpReady(port, '/health/ready', 120_000, srv);
    log(`ready after ${fmtMs(readyMs)}`);
    for (const spec of CONTEXTS) {
      await createContext(port, spec, opts.budget);
      log(`${spec.id}: appending ${fmtInt(opts.messages)} messages, ${FILL_IN_FLIGHT} in flight`);
      const f = await fill(port, spec, opts.messages);
      report.fill.push(f);
      log(`${spec.id}: ${fmtInt(f.appendsPerS)} appends/s, tokens per message ${f.tokensMin}..${f.tokensMax}`);
    }
    for (const spec of CONTEXTS) {
      if (isStopping()) return 130;
      await benchContext(srv, port, spec, opts, report);
    }
  } catch (e) {
    if (isStopping()) return 130; // the signal's shutdown failed the reads in flight
    const msg = (e as Error).message;
    throw new Error(`${msg}${msg.includes('--- last lines of') ? '' : tailLog(srv)}`);
  } finally {
    closeHttpAgent();
    await stopTracked(srv, 60_000);
  }

  if (isStopping()) return 130; // interrupted: keep the previous results file
  const md = renderMarkdown(report);
  writeResults(ROOT, opts.out, md, report);
  return 0;
}

runBench(main);
