// Conversation listing: records in id byte order, filtered by tombstone state
// and exact-match metadata. Each store is scanned in id order; the sorted
// runs are merged, here per worker and again on the main thread.
import type { ConversationRecord } from '../actors/conversation.js';
import type { PartitionStore } from '../storage/partition-store.js';

export interface ListQuery {
  /** Matches wanted: offset + limit + 1 (one more tells whether a next page exists). */
  n: number;
  tombstoned: 'true' | 'false' | 'all';
  filters: [string, string][];
}

const SCAN_CHUNK = 512;

export function matches(rec: ConversationRecord, q: ListQuery): boolean {
  if (q.tombstoned === 'false' && rec.tombstoned) return false;
  if (q.tombstoned === 'true' && !rec.tombstoned) return false;
  for (const [key, want] of q.filters) {
    const v = rec.metadata[key];
    if (!(typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') || String(v) !== want) return false;
  }
  return true;
}

async function listOne(store: PartitionStore, q: ListQuery): Promise<ConversationRecord[]> {
  const found: ConversationRecord[] = [];
  let after = '';
  while (found.length < q.n) {
    const chunk = await store.scanRecords(after, SCAN_CHUNK);
    for (const rec of chunk) if (matches(rec, q) && found.length < q.n) found.push(rec);
    if (chunk.length < SCAN_CHUNK) break;
    after = chunk[chunk.length - 1].id;
  }
  return found;
}

/** Merges id-sorted runs and keeps the first n. Byte order = code-unit order for ASCII ids. */
export function mergeById(runs: ConversationRecord[][], n: number): ConversationRecord[] {
  const all = runs.flat();
  all.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return all.slice(0, n);
}

export async function listRecords(stores: PartitionStore[], q: ListQuery): Promise<ConversationRecord[]> {
  return mergeById(await Promise.all(stores.map((s) => listOne(s, q))), q.n);
}
