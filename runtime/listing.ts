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
  /**
   * Cluster listing: only records of groups this node leads (their leader
   * has them current), answered as `{"led":[groups],"records":[…]}` so the
   * gatherer can tell that every group was covered.
   */
  led?: boolean;
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

async function listOne(store: PartitionStore, q: ListQuery, keep: (rec: ConversationRecord) => boolean): Promise<ConversationRecord[]> {
  const found: ConversationRecord[] = [];
  let after = '';
  while (found.length < q.n) {
    const chunk = await store.scanRecords(after, SCAN_CHUNK);
    for (const rec of chunk) if (matches(rec, q) && keep(rec) && found.length < q.n) found.push(rec);
    if (chunk.length < SCAN_CHUNK) break;
    after = chunk[chunk.length - 1].id;
  }
  return found;
}

/**
 * Merges id-sorted runs and keeps the first n, each id once (two nodes may
 * both answer for a group while its leadership moves). Byte order =
 * code-unit order for ASCII ids.
 */
export function mergeById(runs: ConversationRecord[][], n: number): ConversationRecord[] {
  const all = runs.flat();
  all.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const out: ConversationRecord[] = [];
  for (const rec of all) {
    if (out.length === n) break;
    if (out.length === 0 || out[out.length - 1].id !== rec.id) out.push(rec);
  }
  return out;
}

export async function listRecords(stores: PartitionStore[], q: ListQuery, keep: (rec: ConversationRecord) => boolean = () => true): Promise<ConversationRecord[]> {
  return mergeById(await Promise.all(stores.map((s) => listOne(s, q, keep))), q.n);
}
