// startRuntime(config): opens the data dir, starts the shard workers and
// resolves once every group has a leader and has applied its term's first
// entry. The data dir's manifest fixes the partition count forever, so a
// different worker count later never moves or loses data. With
// FLEETLM_WORKERS=0 one shard runs on the gateway thread instead.
import { Worker } from 'node:worker_threads';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import crypto from 'node:crypto';
import path from 'node:path';
import type { Config } from './config.js';
import { ConfigError, isClustered } from './config.js';
import { type MainCommand, type WorkerEvent, type WorkerInit, runShard } from './shard.js';
import { workerOfPartition } from './placement.js';
import { limits } from './limits.js';
import { log } from './log.js';
import type { Founding } from './membership.js';

interface Manifest {
  format: 1;
  groups: number;
  partitions: number;
  nodeId: string;
  /**
   * Chosen when the data dir is created: a node that lost its data comes
   * back as a new incarnation and never speaks for its old replicas.
   */
  incarnation: string;
  /** The cluster this data dir belongs to (runtime/membership.ts), once known. */
  founding?: Founding;
}

/** A worker found its storage damaged at open (cluster mode: the node starts over and is repaired from peers). */
export class DamagedDataError extends Error {
  override readonly name = 'DamagedDataError';
}

export interface Runtime {
  readonly nodeId: string;
  readonly partitions: number;
  /** Current thread of each worker slot (replaced when the supervisor restarts one). */
  readonly workers: ShardHost[];
  /** Called with each batch of reply frames from a worker. */
  onReplies: (buf: ArrayBuffer) => void;
  /** Called when a worker thread is gone: whatever it owed will never be answered. */
  onWorkerDown: (worker: number) => void;
  /** Called when worker `w` is ready (again): stream interest must be restated. */
  onWorkerReady: (worker: number) => void;
  /**
   * A restarted worker found its storage damaged (cluster only): the node
   * must start over from its peers (markDataDirDamaged, then exit).
   */
  onDamaged: (reason: string) => void;
  /** Token counts a worker needs (one sum per list of texts; -1 = not countable in bounded time). */
  onCount: (texts: string[][]) => Promise<number[]>;
  isReady(): boolean;
  /** False while worker `w` is starting or being restarted. */
  isWorkerReady(w: number): boolean;
  close(): Promise<void>;
}

/**
 * A shard on the gateway thread (FLEETLM_WORKERS=0): the frames a worker
 * would post go over in-thread at the next check phase, with no thread to
 * wake and no copy. Meant for machines that run several nodes on few cores
 * (docs/DESIGN.md, "Worker count"). Unlike a worker, an exception that
 * escapes the shard takes the process down.
 */
class InlineShard extends EventEmitter {
  /** -1 once terminated, as for a Worker. */
  threadId = 0;
  private readonly inbox = new EventEmitter();

  constructor(init: WorkerInit) {
    super();
    runShard(init, {
      postMessage: (e) =>
        setImmediate(() => {
          if (this.threadId === -1) return;
          this.emit('message', e);
          // A shard that gave up at open serves nothing more: its worker thread would end here.
          if (e.type === 'damaged' || e.type === 'fatal') void this.terminate();
        }),
      on: (event, listener) => this.inbox.on(event, listener),
    });
  }

  /** Transfer lists are moot in-thread: the sender never touches a posted buffer again. */
  postMessage(m: MainCommand, _transfer?: ArrayBuffer[]): void {
    setImmediate(() => this.threadId !== -1 && this.inbox.emit('message', m));
  }

  terminate(): Promise<number> {
    if (this.threadId !== -1) {
      this.threadId = -1;
      setImmediate(() => this.emit('exit', 0));
    }
    return Promise.resolve(0);
  }
}

export type ShardHost = Worker | InlineShard;

/** Restart backoff of a worker slot: doubles per restart, reset after a quiet minute. */
const RESTART_DELAY_MS = { first: 250, max: 10_000, resetAfter: 60_000 };
const CLOSE_MS_MAX = 10_000;

export function loadManifest(cfg: Config): Manifest {
  const dir = path.resolve(cfg.dataDir);
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (err) {
    throw new ConfigError('FLEETLM_RAFT_DATA_DIR', `cannot use ${cfg.dataDir}: ${(err as Error).message}`);
  }
  const file = path.join(dir, 'MANIFEST.json');
  if (fs.existsSync(file)) {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
    if (m.format !== 1 || m.groups !== limits.groupCount || !(m.partitions >= 1)) {
      throw new ConfigError('FLEETLM_RAFT_DATA_DIR', `${file} is not a data dir of this version`);
    }
    if (m.incarnation !== undefined) return m;
    const withIncarnation = { ...m, incarnation: newIncarnation() };
    saveManifest(cfg, withIncarnation);
    return withIncarnation;
  }
  const m: Manifest = { format: 1, groups: limits.groupCount, partitions: Math.max(1, cfg.workers), nodeId: cfg.nodeName, incarnation: newIncarnation() };
  saveManifest(cfg, m);
  return m;
}

function newIncarnation(): string {
  return crypto.randomBytes(4).toString('hex');
}

/** Replaces the manifest atomically and durably (the founding record must survive a crash). */
export function saveManifest(cfg: Config, m: Manifest): void {
  const file = path.join(path.resolve(cfg.dataDir), 'MANIFEST.json');
  const tmp = file + '.tmp';
  writeSynced(tmp, JSON.stringify(m));
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(path.dirname(file), 'r');
  fs.fsyncSync(dfd);
  fs.closeSync(dfd);
}

const DAMAGED_MARKER = 'DAMAGED';

/**
 * Damage found while running: the evidence may not survive a reopen (WAL
 * recovery rewrites its stop point), so the verdict is written down first
 * (synced); the next boot sets the data dir aside (damagedOnDisk).
 */
export function markDataDirDamaged(cfg: Config, reason: string): void {
  writeSynced(path.join(path.resolve(cfg.dataDir), DAMAGED_MARKER), reason);
}

function writeSynced(file: string, text: string): void {
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Why the data dir was marked damaged, or null. */
export function damagedOnDisk(cfg: Config): string | null {
  const file = path.join(path.resolve(cfg.dataDir), DAMAGED_MARKER);
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
}

/**
 * Moves a damaged data dir aside (kept for inspection, never read again) so
 * the node starts over empty, under a new incarnation.
 */
export function setDataDirAside(cfg: Config): string {
  const dir = path.resolve(cfg.dataDir);
  const aside = `${dir}.damaged-${Date.now()}`;
  fs.renameSync(dir, aside);
  return aside;
}

/** `publishAllEvents`: every committed change becomes an event (NATS), not only streamed conversations'. */
/**
 * The RocksDB addon registers itself only when its library is first mapped,
 * and the library stays mapped after the last thread using it exits (C++
 * unique symbols defeat dlclose). A worker started after every worker that
 * had it loaded has exited then fails with "Module did not self-register".
 * Holding it loaded on the main thread for the process's life keeps Node's
 * record of the module, so restarted workers always find it.
 */
createRequire(import.meta.url)('rocksdb');

/** `founding`: the cluster's founding record (null on a single node). */
export async function startRuntime(cfg: Config, publishAllEvents = false, founding: Founding | null = null): Promise<Runtime> {
  const manifest = loadManifest(cfg);
  const inline = cfg.workers === 0;
  const workerCount = inline ? 1 : Math.min(cfg.workers, manifest.partitions);
  // The Raft identity is the data dir's, so a random NODE_NAME on each boot of
  // a single node does not orphan the groups' votes; a cluster member must
  // keep its name (its peers know it by it).
  const nodeId = manifest.nodeId;
  if (isClustered(cfg) && nodeId !== cfg.nodeName) {
    throw new ConfigError('NODE_NAME', `the data dir ${cfg.dataDir} belongs to node ${nodeId}, not ${cfg.nodeName}`);
  }
  const workers: ShardHost[] = [];
  const ready: boolean[] = new Array(workerCount).fill(false);
  const restarts = Array.from({ length: workerCount }, () => ({ delayMs: RESTART_DELAY_MS.first, lastMs: 0, pending: false }));
  let closing = false;
  const runtime: Runtime = {
    nodeId,
    partitions: manifest.partitions,
    workers,
    onReplies: () => {},
    onWorkerDown: () => {},
    onCount: (texts) => Promise.resolve(texts.map(() => -1)),
    onWorkerReady: () => {},
    onDamaged: () => {},
    isReady: () => !closing && ready.every(Boolean),
    isWorkerReady: (w) => ready[w] === true,
    close: async () => {
      closing = true;
      await Promise.all(workers.map((w) => closeWorker(w)));
    },
  };

  const initOf = (i: number): WorkerInit => {
    const partitions: number[] = [];
    for (let p = 0; p < manifest.partitions; p++) if (workerOfPartition(p, workerCount) === i) partitions.push(p);
    return {
      workerIndex: i,
      partitions,
      partitionCount: manifest.partitions,
      dataDir: path.resolve(cfg.dataDir),
      nodeId,
      logLevel: cfg.logLevel,
      walSegmentBytes: cfg.walSegmentBytes,
      publishAllEvents,
      founding,
      incarnation: manifest.incarnation,
    };
  };

  /** Supervisor: a worker that died or stopped a group is restarted from disk, with backoff. */
  const restart = (i: number, w: ShardHost, why: string) => {
    const r = restarts[i];
    if (closing || r.pending || workers[i] !== w) return;
    r.pending = true;
    ready[i] = false;
    const now = Date.now();
    if (now - r.lastMs > RESTART_DELAY_MS.resetAfter) r.delayMs = RESTART_DELAY_MS.first;
    log('error', 'worker_restart', `restarting worker ${i} from disk in ${r.delayMs} ms`, { worker: i, why });
    void closeWorker(w).then(() => {
      runtime.onWorkerDown(i);
      setTimeout(() => {
        r.pending = false;
        r.lastMs = Date.now();
        r.delayMs = Math.min(r.delayMs * 2, RESTART_DELAY_MS.max);
        if (!closing) spawn(i).catch(() => restart(i, workers[i], 'failed to start'));
      }, r.delayMs).unref();
    });
  };

  const spawn = (i: number): Promise<void> => {
    // A small young generation keeps each worker's heap (and the node's RSS) down;
    // the workers allocate short-lived objects at a steady rate.
    const w = inline
      ? new InlineShard(initOf(i))
      : new Worker(new URL('./worker.js', import.meta.url), {
          workerData: initOf(i),
          resourceLimits: { maxYoungGenerationSizeMb: 8 },
        });
    workers[i] = w;
    return new Promise<void>((resolve, reject) => {
      w.on('message', (e: WorkerEvent) => {
        if (e.type === 'replies') runtime.onReplies(e.buf);
        else if (e.type === 'count') {
          const answer = (counts: number[]) => w.postMessage({ type: 'counted', id: e.id, counts } satisfies MainCommand);
          runtime.onCount(e.texts).then(answer, () => answer(e.texts.map(() => -1)));
        } else if (e.type === 'ready') {
          ready[i] = true;
          runtime.onWorkerReady(i);
          resolve();
        } else if (e.type === 'group_stopped') restart(i, w, `group ${e.group} stopped: ${e.reason}`);
        else if (e.type === 'fatal') reject(new Error(`worker ${i}: ${e.message}`));
        else if (e.type === 'damaged') {
          if (booted) runtime.onDamaged(`worker ${i}: ${e.reason}`);
          else reject(new DamagedDataError(`worker ${i}: ${e.reason}`));
        }
      });
      w.on('error', (err) => {
        log('error', 'worker_error', 'worker thread crashed', { worker: i, err: String(err), stack: err.stack });
        reject(err);
      });
      w.on('exit', (code) => {
        if (closing) return;
        log('error', 'worker_exit', 'worker thread exited', { worker: i, code });
        reject(new Error(`worker ${i} exited with code ${code}`));
        restart(i, w, `exited with code ${code}`);
      });
    });
  };

  let booted = false;
  try {
    await Promise.all(Array.from({ length: workerCount }, (_, i) => spawn(i)));
    booted = true;
  } catch (err) {
    await runtime.close();
    throw err;
  }
  log('info', 'runtime_ready', 'all groups lead and applied', {
    node: nodeId,
    workers: inline ? 0 : workerCount,
    partitions: manifest.partitions,
    groups: limits.groupCount,
  });
  return runtime;
}

/** Asks a worker to finish its writes and close storage, then ends the thread. */
function closeWorker(w: ShardHost): Promise<void> {
  return new Promise<void>((resolve) => {
    if (w.threadId === -1) return resolve(); // already gone
    // A wedged worker gets a bounded chance to close cleanly.
    const hard = setTimeout(() => void w.terminate(), CLOSE_MS_MAX);
    w.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    w.on('message', (e: WorkerEvent) => {
      if (e.type === 'closed') void w.terminate();
    });
    w.postMessage({ type: 'close' } satisfies MainCommand);
  });
}
