// startRuntime(config): opens the data dir, starts the shard workers and
// resolves once every group has a leader and has applied its term's first
// entry. The data dir's manifest fixes the partition count forever, so a
// different worker count later never moves or loses data.
import { Worker } from 'node:worker_threads';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.js';
import { ConfigError } from './config.js';
import type { MainCommand, WorkerEvent, WorkerInit } from './worker.js';
import { workerOfPartition } from './placement.js';
import { limits } from './limits.js';
import { log } from './log.js';

interface Manifest {
  format: 1;
  groups: number;
  partitions: number;
  nodeId: string;
}

export interface Runtime {
  readonly nodeId: string;
  readonly partitions: number;
  readonly workers: Worker[];
  /** Called with each batch of reply frames from a worker. */
  onReplies: (buf: ArrayBuffer) => void;
  isReady(): boolean;
  close(): Promise<void>;
}

function loadManifest(cfg: Config): Manifest {
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
    return m;
  }
  const m: Manifest = { format: 1, groups: limits.groupCount, partitions: cfg.workers, nodeId: cfg.nodeName };
  const tmp = file + '.tmp';
  fs.writeFileSync(tmp, JSON.stringify(m));
  fs.renameSync(tmp, file);
  return m;
}

export async function startRuntime(cfg: Config): Promise<Runtime> {
  const manifest = loadManifest(cfg);
  const workerCount = Math.min(cfg.workers, manifest.partitions);
  // Single-node mode: the Raft identity is the data dir's, so a random
  // NODE_NAME on each boot does not orphan the groups' votes.
  const nodeId = manifest.nodeId;
  const workers: Worker[] = [];
  let readyCount = 0;
  let closing = false;
  const runtime: Runtime = {
    nodeId,
    partitions: manifest.partitions,
    workers,
    onReplies: () => {},
    isReady: () => readyCount === workerCount && !closing,
    close: async () => {
      closing = true;
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve) => {
              w.once('exit', () => resolve());
              w.on('message', (e: WorkerEvent) => {
                if (e.type === 'closed') void w.terminate();
              });
              w.postMessage({ type: 'close' } satisfies MainCommand);
            }),
        ),
      );
    },
  };
  const started = workers.length;
  await Promise.all(
    Array.from({ length: workerCount }, (_, i) => {
      const partitions: number[] = [];
      for (let p = 0; p < manifest.partitions; p++) if (workerOfPartition(p, workerCount) === i) partitions.push(p);
      const init: WorkerInit = {
        workerIndex: i,
        partitions,
        partitionCount: manifest.partitions,
        dataDir: path.resolve(cfg.dataDir),
        nodeId,
        logLevel: cfg.logLevel,
        walSegmentBytes: cfg.walSegmentBytes,
      };
      // A small young generation keeps each worker's heap (and the node's RSS) down;
      // the workers allocate short-lived objects at a steady rate.
      const w = new Worker(new URL('./worker.js', import.meta.url), {
        workerData: init,
        resourceLimits: { maxYoungGenerationSizeMb: 8 },
      });
      workers[started + i] = w;
      return new Promise<void>((resolve, reject) => {
        w.on('message', (e: WorkerEvent) => {
          if (e.type === 'replies') runtime.onReplies(e.buf);
          else if (e.type === 'ready') {
            readyCount++;
            resolve();
          } else if (e.type === 'fatal') reject(new Error(`worker ${i}: ${e.message}`));
        });
        w.on('error', (err) => {
          log('error', 'worker_error', 'worker thread crashed', { worker: i, err: String(err), stack: err.stack });
          reject(err);
        });
        w.on('exit', (code) => {
          if (!closing) log('error', 'worker_exit', 'worker thread exited', { worker: i, code });
        });
      });
    }),
  );
  log('info', 'runtime_ready', 'all groups lead and applied', {
    node: nodeId,
    workers: workerCount,
    partitions: manifest.partitions,
    groups: limits.groupCount,
  });
  return runtime;
}
