// Where things live: conversation -> group by a stable hash of its id;
// group -> storage partition (fixed when the data dir is created);
// partition -> worker (may change with the worker count; data never moves).
import { limits } from './limits.js';

/** FNV-1a over the id's bytes (ids are ASCII). Stable across versions: never change it. */
export function groupOf(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % limits.groupCount;
}

export function partitionOf(group: number, partitions: number): number {
  return group % partitions;
}

export function workerOfPartition(partition: number, workers: number): number {
  return partition % workers;
}

export function workerOfGroup(group: number, partitions: number, workers: number): number {
  return workerOfPartition(partitionOf(group, partitions), workers);
}
