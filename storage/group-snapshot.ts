// The state machine of one Raft group as a snapshot: every key of the group
// in a partition's RocksDB (its applied index, records, messages,
// idempotency keys, compactions, archive marks), read at one point and
// written back whole on a replica that fell behind the leader's log.
//   data: (keyLen:u32 key valueLen:u32 value)*   values stay sealed (crc32c)
import { groupOf } from '../runtime/placement.js';
import { PREFIX, groupKey, prefixEnd, recordIdOf } from './keys.js';
import type { BatchOp } from './rocks.js';
import { type Applied, type PartitionStore, appliedPut } from './partition-store.js';

/** Key ranges holding only this group's keys. */
function groupRanges(group: number): Buffer[] {
  return [PREFIX.message, PREFIX.idem, PREFIX.archivePending].map((p) => groupKey(p, group));
}

/** Keys of this group among the per-id keys ('R' records, 'W' compactions), which carry no group. */
async function idKeysOf(store: PartitionStore, group: number): Promise<[Buffer, Buffer][]> {
  const out: [Buffer, Buffer][] = [];
  for (const p of [PREFIX.record, PREFIX.compactions]) {
    const start = Buffer.from([p]);
    for (const kv of await store.db.scan({ gt: start, lt: prefixEnd(start) })) {
      if (groupOf(recordIdOf(kv[0])) === group) out.push(kv);
    }
  }
  return out;
}

/** The group's state rows other than its applied index. */
async function stateRows(store: PartitionStore, group: number): Promise<[Buffer, Buffer][]> {
  const rows: [Buffer, Buffer][] = [];
  for (const r of groupRanges(group)) rows.push(...(await store.db.scan({ gte: r, lt: prefixEnd(r) })));
  rows.push(...(await idKeysOf(store, group)));
  return rows;
}

/** Every key of the group's state machine as stored, the applied index included, with values. */
export async function groupKeys(store: PartitionStore, group: number): Promise<[Buffer, Buffer][]> {
  const rows = await stateRows(store, group);
  const applied = await store.db.get(groupKey(PREFIX.applied, group));
  if (applied !== null) rows.unshift([groupKey(PREFIX.applied, group), applied]);
  return rows;
}

/**
 * The group's state as of `applied`, the index its written state reaches
 * (the stored applied index lags it until the next checkpoint). The caller
 * guarantees that no write to the partition happens meanwhile, so the
 * separate scans see one point in time.
 */
export async function readGroupSnapshot(store: PartitionStore, group: number, applied: Applied): Promise<Uint8Array> {
  const appliedRow = appliedPut(group, applied);
  const rows: [Buffer, Buffer][] = [[appliedRow.key, appliedRow.value], ...(await stateRows(store, group))];
  let size = 0;
  for (const [k, v] of rows) size += 8 + k.length + v.length;
  const data = Buffer.allocUnsafe(size);
  let pos = 0;
  for (const [k, v] of rows) {
    data.writeUInt32BE(k.length, pos);
    k.copy(data, pos + 4);
    pos += 4 + k.length;
    data.writeUInt32BE(v.length, pos);
    v.copy(data, pos + 4);
    pos += 4 + v.length;
  }
  return data;
}

/**
 * Replaces the group's state with a snapshot's, in one synced write. Throws
 * (changing nothing) when the data is malformed or holds another group's keys.
 */
export async function installGroupSnapshot(store: PartitionStore, group: number, data: Uint8Array): Promise<Applied> {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const puts: BatchOp[] = [];
  let pos = 0;
  const appliedKey = groupKey(PREFIX.applied, group);
  let applied: Applied | null = null;
  while (pos < b.length) {
    if (pos + 4 > b.length) throw new Error('snapshot: truncated key length');
    const kl = b.readUInt32BE(pos);
    const key = Buffer.from(b.subarray(pos + 4, pos + 4 + kl));
    pos += 4 + kl;
    if (pos + 4 > b.length) throw new Error('snapshot: truncated value length');
    const vl = b.readUInt32BE(pos);
    if (pos + 4 + vl > b.length || key.length !== kl) throw new Error('snapshot: truncated');
    const value = Buffer.from(b.subarray(pos + 4, pos + 4 + vl));
    pos += 4 + vl;
    if (!keyOfGroup(key, group)) throw new Error(`snapshot of group ${group} holds key ${key.toString('hex')}`);
    if (key.equals(appliedKey)) applied = JSON.parse(value.subarray(4).toString()) as Applied;
    puts.push({ type: 'put', key, value });
  }
  if (applied === null) throw new Error(`snapshot of group ${group} has no applied index`);
  const dels: BatchOp[] = (await groupKeys(store, group)).map(([key]) => ({ type: 'del', key }));
  await store.db.write([...dels, ...puts], true);
  return applied;
}

const GROUP_PREFIXES = new Set<number>([PREFIX.applied, PREFIX.message, PREFIX.idem, PREFIX.archivePending]);

function keyOfGroup(key: Buffer, group: number): boolean {
  if (key.length < 2) return false;
  if (key[0] === PREFIX.record || key[0] === PREFIX.compactions) return groupOf(recordIdOf(key)) === group;
  return key.length >= 3 && GROUP_PREFIXES.has(key[0]) && key.readUInt16BE(1) === group;
}
