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

/** Replicas per group (SPEC §6: 3, or fewer when fewer nodes exist). */
export const REPLICAS = 3;

/**
 * The voters of `group` among `nodes`: the REPLICAS nodes with the highest
 * rendezvous hash of (group, node), so adding a node moves only the groups
 * it wins. Sorted, so every node computes the same list.
 */
export function replicasOf(group: number, nodes: readonly string[]): string[] {
  return rankedNodes(group, nodes).slice(0, REPLICAS).sort();
}

/**
 * `nodes` by rendezvous hash of (group, node), highest first: the first
 * placed one is the group's preferred leader, so leadership spreads evenly.
 */
export function rankedNodes(group: number, nodes: readonly string[]): string[] {
  const scored = nodes.map((n) => {
    let h = 0x811c9dc5 ^ group;
    for (let i = 0; i < n.length; i++) {
      h ^= n.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
    return [h >>> 0, n] as const;
  });
  scored.sort((a, b) => b[0] - a[0] || (a[1] < b[1] ? -1 : 1));
  return scored.map(([, n]) => n);
}
