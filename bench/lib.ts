// Helpers for the benchmark orchestrators: child processes tracked by PID and
// stopped on exit/error/signal, /proc based CPU and memory accounting, free
// loopback ports, small HTTP client helpers and percentile math.
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

/** 237 characters: the JSON append body around it is exactly 300 bytes. */
export const DEFAULT_TEXT = (
  'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. '.repeat(3)
).slice(0, 237);

/** The HTTP append body used by every generator. */
export function appendBody(text: string = DEFAULT_TEXT): string {
  return JSON.stringify({ message: { role: 'user', parts: [{ type: 'text', text }] } });
}

/** The parts JSON stored by the Redis and PostgreSQL variants. */
export function partsJson(text: string = DEFAULT_TEXT): string {
  return JSON.stringify([{ type: 'text', text }]);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let clkTck = 0;
/** Clock ticks per second for /proc/<pid>/stat times. */
export function clockTicks(): number {
  if (clkTck) return clkTck;
  try {
    clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    clkTck = 100;
  }
  return clkTck;
}

export function log(msg: string): void {
  const t = new Date().toISOString().slice(11, 19);
  process.stderr.write(`[bench ${t}] ${msg}\n`);
}

// ---------------------------------------------------------------- processes

export interface Tracked {
  name: string;
  pid: number;
  child: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive: () => boolean;
  /** Kill the whole process group rather than the PID (load generators). */
  group: boolean;
  /** Signal used for a clean stop. */
  stopSignal: NodeJS.Signals;
  logFile?: string;
}

const tracked = new Set<Tracked>();

export interface SpawnTrackedOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Append stdout+stderr to this file; otherwise they are piped to the caller. */
  logFile?: string;
  group?: boolean;
  stopSignal?: NodeJS.Signals;
}

/** Spawn a child in its own process group and remember its PID for cleanup. */
export function spawnTracked(name: string, cmd: string, args: string[], o: SpawnTrackedOptions = {}): Tracked {
  if (stoppingAll) throw new Error(`not starting ${name}: shutting down`);
  let stdio: SpawnOptions['stdio'] = ['ignore', 'pipe', 'pipe'];
  let fd: number | undefined;
  if (o.logFile) {
    fd = fs.openSync(o.logFile, 'a');
    stdio = ['ignore', fd, fd];
  }
  const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio, detached: true });
  if (fd !== undefined) fs.closeSync(fd);
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
    child.once('error', (err) => {
      done = true;
      log(`${name}: spawn error: ${err.message}`);
      resolve({ code: -1, signal: null });
    });
  });
  const t: Tracked = {
    name,
    pid: child.pid ?? -1,
    child,
    exited,
    alive: () => !done,
    group: o.group ?? false,
    stopSignal: o.stopSignal ?? 'SIGTERM',
    logFile: o.logFile,
  };
  tracked.add(t);
  void exited.then(() => tracked.delete(t));
  return t;
}

function signalTracked(t: Tracked, sig: NodeJS.Signals): void {
  if (!t.alive() || t.pid <= 0) return;
  try {
    if (t.group) process.kill(-t.pid, sig);
    else process.kill(t.pid, sig);
  } catch {
    /* already gone */
  }
}

/** Stop one tracked process: its stop signal, then SIGKILL after timeoutMs. Returns ms taken. */
export async function stopTracked(t: Tracked, timeoutMs = 30_000, sig?: NodeJS.Signals): Promise<{ ms: number; killed: boolean }> {
  const t0 = performance.now();
  if (!t.alive()) return { ms: 0, killed: false };
  signalTracked(t, sig ?? t.stopSignal);
  const timer = sleep(timeoutMs).then(() => 'timeout' as const);
  const r = await Promise.race([t.exited.then(() => 'exited' as const), timer]);
  if (r === 'timeout') {
    log(`${t.name} (pid ${t.pid}) did not exit in ${timeoutMs} ms; SIGKILL`);
    signalTracked(t, 'SIGKILL');
    await Promise.race([t.exited, sleep(5000)]);
    return { ms: performance.now() - t0, killed: true };
  }
  return { ms: performance.now() - t0, killed: false };
}

/** Stop everything still running that this process started (newest first). */
export async function stopAll(): Promise<void> {
  const all = [...tracked].reverse();
  await Promise.all(all.map((t) => stopTracked(t, 15_000)));
}

let handlersInstalled = false;
let stoppingAll = false;
/** True once a signal or fatal error started the shutdown: start nothing new. */
export function isStopping(): boolean {
  return stoppingAll;
}
const exitHooks: Array<() => void> = [];
/** Run synchronously on exit (temp dir removal etc.). */
export function onExit(f: () => void): void {
  exitHooks.push(f);
}
function runExitHooks(): void {
  while (exitHooks.length) {
    const f = exitHooks.pop()!;
    try {
      f();
    } catch {
      /* ignore */
    }
  }
}

/** On SIGINT/SIGTERM/SIGHUP or an uncaught error: stop the children, clean up, exit. */
export function installCleanupHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  let stopping = false;
  const bail = (why: string, code: number) => {
    if (stopping) {
      // Second signal: kill hard.
      for (const t of tracked) signalTracked(t, 'SIGKILL');
      process.exit(code);
    }
    stopping = true;
    stoppingAll = true;
    log(`${why}: stopping ${tracked.size} child process(es)`);
    void stopAll().finally(() => {
      runExitHooks();
      process.exit(code);
    });
  };
  process.on('SIGINT', () => bail('SIGINT', 130));
  process.on('SIGTERM', () => bail('SIGTERM', 143));
  process.on('SIGHUP', () => bail('SIGHUP', 129));
  process.on('uncaughtException', (e) => {
    log(`uncaught: ${e.stack ?? e}`);
    bail('uncaught exception', 1);
  });
  process.on('unhandledRejection', (e) => {
    log(`unhandled rejection: ${(e as Error)?.stack ?? e}`);
    bail('unhandled rejection', 1);
  });
  process.on('exit', () => {
    // Last resort (process.exit elsewhere): no waiting possible, just signal.
    for (const t of tracked) signalTracked(t, 'SIGKILL');
    runExitHooks();
  });
}

export interface Measured {
  code: number | null;
  stdout: string;
  stderr: string;
  wallS: number;
  /** CPU of the command and its children (bash `times`), seconds. */
  userS: number;
  sysS: number;
}

function parseBashTime(s: string): number {
  const m = /^(\d+)m([\d.]+)s$/.exec(s.trim());
  return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
}

/**
 * Run a command to completion and measure its CPU: it runs under bash, whose
 * `times` builtin prints the user/sys time of its waited-for children.
 */
export async function runMeasured(
  name: string,
  cmd: string,
  args: string[],
  o: {
    cwd?: string;
    env?: NodeJS.ProcessEnv;
    timeoutMs: number;
    tmpDir: string;
    nice?: number;
    /** Send SIGINT to the command once its stdout matches (it should then exit cleanly). */
    interruptWhen?: RegExp;
  },
): Promise<Measured> {
  const timesFile = path.join(o.tmpDir, `times-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  const script = '"$@"; rc=$?; times > "$BENCH_TIMES_FILE"; exit $rc';
  const env = { ...(o.env ?? process.env), BENCH_TIMES_FILE: timesFile };
  // `nice` execs bash, so the tracked PID stays the process group leader.
  const bashArgs = ['-c', script, 'bash', cmd, ...args];
  const [c0, a0] = o.nice ? ['nice', ['-n', String(o.nice), 'bash', ...bashArgs]] : ['bash', bashArgs];
  const t = spawnTracked(name, c0, a0, { cwd: o.cwd, env, group: true, stopSignal: 'SIGINT' });
  let stdout = '';
  let stderr = '';
  let interrupted = false;
  t.child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    if (o.interruptWhen && !interrupted && o.interruptWhen.test(stdout)) {
      interrupted = true;
      try {
        process.kill(-t.pid, 'SIGINT');
      } catch {
        /* gone */
      }
    }
  });
  t.child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const t0 = performance.now();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    log(`${name}: timed out after ${o.timeoutMs} ms, stopping it`);
    void stopTracked(t, 5000);
  }, o.timeoutMs);
  const { code } = await t.exited;
  clearTimeout(timer);
  const wallS = (performance.now() - t0) / 1000;
  let userS = NaN;
  let sysS = NaN;
  try {
    const lines = fs.readFileSync(timesFile, 'utf8').trim().split('\n');
    const kids = (lines[1] ?? '').trim().split(/\s+/);
    userS = parseBashTime(kids[0] ?? '');
    sysS = parseBashTime(kids[1] ?? '');
    fs.rmSync(timesFile, { force: true });
  } catch {
    /* killed before `times` ran */
  }
  if (timedOut) stderr += `\n[bench] ${name} timed out after ${o.timeoutMs} ms`;
  return { code, stdout, stderr, wallS, userS, sysS };
}

/** Run a short command, throwing with its output on failure. */
export function runSync(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
}

export function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

// ---------------------------------------------------------------- /proc

interface Stat {
  ppid: number;
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
}

function readStat(pid: number): Stat | null {
  let s: string;
  try {
    s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm may contain spaces/parens: fields start after the last ')'.
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // f[0]=state(3) f[1]=ppid(4) ... f[11]=utime(14) f[12]=stime(15) f[13]=cutime(16) f[14]=cstime(17)
  return { ppid: Number(f[1]), utime: Number(f[11]), stime: Number(f[12]), cutime: Number(f[13]), cstime: Number(f[14]) };
}

/** The PID and all its live descendants. */
export function treePids(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = readStat(Number(e));
    if (!st) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(Number(e));
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length) {
    const p = stack.pop()!;
    out.push(p);
    for (const c of children.get(p) ?? []) stack.push(c);
  }
  return out;
}

/**
 * CPU seconds used so far by a process tree: every live member's own time plus
 * the time of children it has reaped (cutime/cstime), so short-lived workers
 * (e.g. PostgreSQL backends) are counted exactly once.
 */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const p of treePids(root)) {
    const st = readStat(p);
    if (st) ticks += st.utime + st.stime + st.cutime + st.cstime;
  }
  return ticks / clockTicks();
}

export interface Mem {
  /** Sum of VmRSS over the tree, bytes. */
  rss: number;
  /** Sum of Pss over the tree (shared pages split), bytes. */
  pss: number;
  /** VmHWM (peak RSS) of the root process, bytes. */
  hwm: number;
  procs: number;
}

function statusKb(pid: number, field: string): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(s);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function pssBytes(pid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const m = /^Pss:\s+(\d+) kB/m.exec(s);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export function treeMem(root: number): Mem {
  const pids = treePids(root);
  let rss = 0;
  let pss = 0;
  for (const p of pids) {
    rss += statusKb(p, 'VmRSS');
    pss += pssBytes(p);
  }
  return { rss, pss, hwm: statusKb(root, 'VmHWM'), procs: pids.length };
}

/** Samples a tree's memory periodically and keeps the peaks. */
export class MemSampler {
  peakRss = 0;
  peakPss = 0;
  last: Mem | null = null;
  private timer: NodeJS.Timeout;
  constructor(private readonly pid: number, intervalMs = 500) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }
  private sample(): void {
    const m = treeMem(this.pid);
    if (m.procs === 0 || (m.rss === 0 && m.hwm === 0)) return;
    this.last = m;
    this.peakRss = Math.max(this.peakRss, m.rss);
    this.peakPss = Math.max(this.peakPss, m.pss);
  }
  stop(): Mem | null {
    clearInterval(this.timer);
    this.sample();
    return this.last;
  }
}

/** Measures a server tree's CPU over an interval. */
export class CpuMeter {
  private readonly c0: number;
  private readonly t0: number;
  private readonly m0: number;
  private readonly k0: number;
  private readonly self0: NodeJS.CpuUsage;
  private readonly procs0: Map<number, number>;
  constructor(private readonly pid: number) {
    this.procs0 = allProcTicks();
    this.c0 = treeCpuSeconds(pid);
    this.k0 = kernelCpuSeconds();
    this.m0 = cpuTimes().busy;
    this.self0 = process.cpuUsage();
    this.t0 = performance.now();
  }
  /**
   * { server CPU seconds, server % of one core, whole-machine % of one core,
   *   this orchestrator's % } over the wall interval.
   */
  read(): { cpuS: number; pct: number; wallS: number; machinePct: number; kernelPct: number; selfPct: number; topOthers: string } {
    const cpuS = treeCpuSeconds(this.pid) - this.c0;
    const wallS = (performance.now() - this.t0) / 1000;
    const machineS = (cpuTimes().busy - this.m0) / clockTicks();
    const kernelS = kernelCpuSeconds() - this.k0;
    // Biggest CPU users outside the server, this script and its children, and kernel threads.
    const ours = new Set([...treePids(this.pid), ...treePids(process.pid)]);
    const others: Array<[number, number]> = [];
    for (const [p, t] of allProcTicks()) {
      if (ours.has(p)) continue;
      const d = t - (this.procs0.get(p) ?? 0);
      if (d > 0) others.push([p, d]);
    }
    others.sort((a, b) => b[1] - a[1]);
    const topOthers = others
      .slice(0, 3)
      .map(([p, d]) => ({ p, pct: (100 * d) / clockTicks() / wallS }))
      .filter((x) => x.pct >= 5)
      .map(({ p, pct }) => `${procName(p)} ${pct.toFixed(0)}%`)
      .join(', ');
    const self = process.cpuUsage(this.self0);
    return {
      cpuS,
      pct: (100 * cpuS) / wallS,
      wallS,
      machinePct: (100 * machineS) / wallS,
      kernelPct: (100 * kernelS) / wallS,
      selfPct: (100 * (self.user + self.system)) / 1e6 / wallS,
      topOthers,
    };
  }
}

// ---------------------------------------------------------------- network

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Sockets of the keep-alive HTTP agent of httpRequest: the most requests it has in flight. */
export const AGENT_SOCKETS = 256;
const agent = new http.Agent({ keepAlive: true, maxSockets: AGENT_SOCKETS });

export function httpRequest(
  port: number,
  method: string,
  urlPath: string,
  body?: string,
  timeoutMs = 5000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = {};
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(body);
    }
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent, timeout: timeoutMs }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (data += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Drop pooled keep-alive sockets (before stopping a server). */
export function closeHttpAgent(): void {
  agent.destroy();
}

/** Poll until GET path returns 200. Returns ms waited, or throws on timeout / process exit. */
export async function waitHttpReady(
  port: number,
  urlPath: string,
  timeoutMs: number,
  proc?: Tracked,
  intervalMs = 10,
): Promise<number> {
  const t0 = performance.now();
  let last = '';
  while (performance.now() - t0 < timeoutMs) {
    if (proc && !proc.alive()) throw new Error(`${proc.name} exited before ${urlPath} was ready${tailLog(proc)}`);
    try {
      const r = await httpRequest(port, 'GET', urlPath, undefined, 1000);
      if (r.status === 200) return performance.now() - t0;
      last = `HTTP ${r.status} ${r.body.slice(0, 200)}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(intervalMs);
  }
  throw new Error(`${urlPath} on :${port} not ready after ${timeoutMs} ms (last: ${last})${proc ? tailLog(proc) : ''}`);
}

export function tailLog(proc: Tracked, lines = 20): string {
  if (!proc.logFile) return '';
  try {
    const s = fs.readFileSync(proc.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    return `\n--- last lines of ${proc.logFile} ---\n${s}`;
  } catch {
    return '';
  }
}

/** Run async jobs with bounded concurrency. */
export async function pool<T>(n: number, count: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      out[i] = await job(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, count) }, worker));
  return out;
}

// ---------------------------------------------------------------- stats & formatting

/** Nearest-rank percentile of an ascending array (p in 0..100). */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function fmtMs(ms: number | undefined | null): string {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return 'n/a';
  if (!Number.isFinite(ms)) return '∞';
  if (ms < 1) return `${ms.toFixed(3)} ms`;
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtInt(n: number | undefined | null): string {
  if (n === undefined || n === null || Number.isNaN(n)) return 'n/a';
  return Math.round(n).toLocaleString('en-US');
}

export function fmtMiB(bytes: number | undefined | null): string {
  if (bytes === undefined || bytes === null || Number.isNaN(bytes) || bytes === 0) return 'n/a';
  return `${(bytes / 1048576).toFixed(0)} MiB`;
}

export function fmtPct(p: number | undefined | null): string {
  if (p === undefined || p === null || Number.isNaN(p)) return 'n/a';
  return `${p.toFixed(0)}%`;
}

export function machineInfo(): Record<string, string> {
  let cpu = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpu = m[1].trim();
  } catch {
    /* ignore */
  }
  return {
    nproc: String(os.availableParallelism()),
    cpu,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
  };
}

/** Filesystem type of the directory (fsync cost depends on it). */
export function fsType(dir: string): string {
  try {
    const out = execFileSync('df', ['-T', dir], { encoding: 'utf8' }).trim().split('\n');
    const f = (out[1] ?? '').split(/\s+/);
    return `${f[1] ?? '?'} (${f[0] ?? '?'})`;
  } catch {
    return 'unknown';
  }
}

export function dirBytes(dir: string): number {
  try {
    return Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------- conditions

function cpuTimes(): { busy: number; total: number; irq: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.slice(0, 8).reduce((s, x) => s + x, 0);
  return { busy: total - idle, total, irq: (f[5] ?? 0) + (f[6] ?? 0) };
}

/** utime+stime ticks of every user-space process (kernel threads excluded). */
function allProcTicks(): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = readStat(Number(e));
    if (st && st.ppid !== 2 && e !== '2') m.set(Number(e), st.utime + st.stime);
  }
  return m;
}

function procName(pid: number): string {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    const short = cmd.slice(0, 3).map((x) => path.basename(x)).join(' ');
    return short.length > 60 ? short.slice(0, 57) + '…' : short || `pid ${pid}`;
  } catch {
    return `pid ${pid} (exited)`;
  }
}

/**
 * CPU seconds of kernel threads (journaling, block I/O workers, ksoftirqd…)
 * plus irq/softirq time: the kernel's share of the work, e.g. of fsync.
 */
export function kernelCpuSeconds(): number {
  let ticks = cpuTimes().irq;
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = readStat(Number(e));
    if (st && (st.ppid === 2 || e === '2')) ticks += st.utime + st.stime;
  }
  return ticks / clockTicks();
}

/** Whole-machine CPU busy % (of all cores) over the next `ms`. */
export async function machineBusyPct(ms = 1000): Promise<number> {
  const a = cpuTimes();
  await sleep(ms);
  const b = cpuTimes();
  return (100 * (b.busy - a.busy)) / Math.max(1, b.total - a.total);
}

/** 4 KiB write + fdatasync in `dir`, repeated for `ms`: the disk's sync latency right now. */
export function fsyncProbe(dir: string, ms = 1000): { opsPerS: number; p50Ms: number; p99Ms: number } {
  const file = path.join(dir, `.fsync-probe-${process.pid}`);
  const fd = fs.openSync(file, 'w');
  const buf = Buffer.alloc(4096, 1);
  const lat: number[] = [];
  const t0 = performance.now();
  try {
    let pos = 0;
    while (performance.now() - t0 < ms) {
      const s = performance.now();
      fs.writeSync(fd, buf, 0, buf.length, pos);
      fs.fdatasyncSync(fd);
      lat.push(performance.now() - s);
      pos = (pos + buf.length) % (1 << 20);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
  lat.sort((x, y) => x - y);
  return { opsPerS: lat.length / ((performance.now() - t0) / 1000), p50Ms: percentileSorted(lat, 50), p99Ms: percentileSorted(lat, 99) };
}

// ---------------------------------------------------------------- wrk

/** What bench/lua/append.lua (and wrk --latency) report. */
export interface WrkParsed {
  requests: number;
  durationS: number;
  status201: number;
  other2xx: number;
  non2xx: number;
  socketErrors: number;
  socketDetail: string;
  samples: string[];
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  rps: number;
}

function parseWrkUnit(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

/** A wrk run's results (bench/lua/append.lua's BENCH lines); throws when wrk failed or printed none. */
export function wrkResult(m: Measured): WrkParsed {
  if (m.code !== 0) throw new Error(`wrk exited ${m.code}: ${m.stderr.slice(-2000)}\n${m.stdout.slice(-2000)}`);
  const w = parseWrk(m.stdout);
  if (!Number.isFinite(w.status201)) throw new Error(`could not parse wrk output:\n${m.stdout}\n${m.stderr}`);
  return w;
}

export function parseWrk(out: string): WrkParsed {
  const b = new Map<string, string>();
  const samples: string[] = [];
  for (const line of out.split('\n')) {
    const m = /^BENCH (\S+) (.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === 'sample_error') samples.push(m[2]);
    else b.set(m[1], m[2]);
  }
  const n = (k: string) => Number(b.get(k) ?? NaN);
  // Fallbacks from wrk's own --latency text.
  const dist = (p: string) => {
    const m = new RegExp(`^\\s*${p.replace('.', '\\.')}%\\s+(\\S+)`, 'm').exec(out);
    return m ? parseWrkUnit(m[1]) : NaN;
  };
  const rpsM = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const us = (k: string, fb: number) => (b.has(k) ? n(k) / 1000 : fb);
  const socketErrors = ['errors_connect', 'errors_read', 'errors_write', 'errors_timeout'].reduce((s, k) => s + (n(k) || 0), 0);
  return {
    requests: n('requests'),
    durationS: n('duration_us') / 1e6,
    status201: n('status201'),
    other2xx: n('status2xx_other'),
    non2xx: n('status_non2xx'),
    socketErrors,
    socketDetail: sock ? sock[0] : '',
    samples,
    meanMs: us('lat_mean_us', NaN),
    p50Ms: us('lat_p50_us', dist('50')),
    p99Ms: us('lat_p99_us', dist('99')),
    p999Ms: us('lat_p99.9_us', NaN),
    maxMs: us('lat_max_us', NaN),
    rps: rpsM ? Number(rpsM[1]) : NaN,
  };
}

// ---------------------------------------------------------------- options and results

/**
 * `--name=value` arguments over `BENCH_NAME` environment variables (a bare
 * `--flag` is "true"); a name not in `names` is refused, naming `file`.
 */
export function benchArgs(argv: string[], env: NodeJS.ProcessEnv, names: readonly string[], file: string): Map<string, string> {
  const kv = new Map<string, string>();
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('BENCH_') && v !== undefined) kv.set(k.slice(6).toLowerCase().replace(/_/g, '-'), v);
  }
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument ${a} (see the header of ${file})`);
    if (!names.includes(m[1])) throw new Error(`unknown option --${m[1]} (see the header of ${file})`);
    kv.set(m[1], m[2] ?? 'true');
  }
  return kv;
}

/**
 * Writes `out` (markdown) and the report as JSON next to it, and prints the
 * markdown. Paths under `root` are written relative to it, so results name no
 * machine's layout; sets become arrays and non-finite numbers null.
 */
export function writeResults(root: string, out: string, md: string, report: unknown): void {
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, md + '\n');
  const replacer = (_k: string, v: unknown) =>
    v instanceof Set
      ? [...v]
      : typeof v === 'number' && !Number.isFinite(v)
        ? null
        : typeof v === 'string' && v.startsWith(root)
          ? path.relative(root, v)
          : v;
  fs.writeFileSync(out.replace(/\.md$/, '') + '.json', JSON.stringify(report, replacer, 2) + '\n');
  process.stdout.write(md + '\n');
  log(`wrote ${path.relative(root, out)}`);
}

/** Runs a bench's main, stops every tracked process, exits with its code (1 on an error). */
export function runBench(main: () => Promise<number>): void {
  main()
    .catch((e) => {
      log(`error: ${(e as Error).stack ?? e}`);
      return 1;
    })
    .then(async (code) => {
      await stopAll();
      process.exit(code);
    });
}

/**
 * Node flags our server runs with in production (`npm start`, deploy/): a
 * young generation capped at 4 MiB per semi-space keeps RSS after 1M
 * appends under 300 MB (docs/DESIGN.md, "Memory").
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
