// Shard worker thread: runs one shard (runtime/shard.ts) on this thread.
import { parentPort, workerData } from 'node:worker_threads';
import { runShard, type WorkerInit } from './shard.js';

runShard(workerData as WorkerInit, parentPort!);
