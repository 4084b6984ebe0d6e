// How bytes hit disk for one storage partition: the Raft log and hard state
// of its groups, and the conversation state their apply produces. Builds
// batches; the driver decides when to write them and whether to sync.
import type { ConfState, Entry, HardState } from '../runtime/raft/types.js';
import type { Conversation, ConversationRecord, IdemRecord, WriteSink } from '../actors/conversation.js';
import { recordJson } from '../actors/conversation.js';
import {
  PREFIX,
  convPrefix,
  groupKey,
  idemKey,
  logIndexOf,
  logKey,
  messageKey,
  prefixEnd,
  recordIdOf,
  recordKey,
} from './keys.js';
import { type BatchOp, RocksPartition, seal, unseal } from './rocks.js';

export interface GroupDisk {
  hardState: HardState;
  conf: ConfState | null;
  applied: { index: number; term: number };
  /** Persisted entries after `applied.index`, in order. */
  entries: Entry[];
}

export function encodeEntry(e: Entry): Buffer {
  const body = Buffer.allocUnsafe(9 + e.data.length);
  body.writeDoubleBE(e.term, 0);
  body[8] = e.type;
  body.set(e.data, 9);
  return seal(body);
}

export function decodeEntry(key: Buffer, value: Buffer): Entry {
  const body = unseal(key, value);
  const data = new Uint8Array(body.length - 9);
  data.set(body.subarray(9));
  return { term: body.readDoubleBE(0), index: logIndexOf(key), type: body[8], data };
}

const json = (v: unknown) => seal(Buffer.from(JSON.stringify(v)));

/** Collects the writes of apply() for one partition in one RocksDB batch. */
export class ApplyBatch implements WriteSink {
  readonly ops: BatchOp[] = [];
  group = 0;

  putRecord(rec: ConversationRecord): void {
    this.ops.push({ type: 'put', key: recordKey(rec.id), value: seal(Buffer.from(recordJson(rec))) });
  }
  putMessage(id: string, seq: number, recordJsonText: string): void {
    this.ops.push({ type: 'put', key: messageKey(this.group, id, seq), value: seal(Buffer.from(recordJsonText)) });
  }
  putIdem(id: string, key: string, rec: IdemRecord): void {
    this.ops.push({ type: 'put', key: idemKey(this.group, id, key), value: json(rec) });
  }
  delIdem(id: string, key: string): void {
    this.ops.push({ type: 'del', key: idemKey(this.group, id, key) });
  }
  /** Same batch as the state it covers, so recovery never applies an entry twice. */
  setApplied(group: number, index: number, term: number): void {
    this.ops.push({ type: 'put', key: groupKey(PREFIX.applied, group), value: json({ index, term }) });
  }
  deleteLogEntry(group: number, index: number): void {
    this.ops.push({ type: 'del', key: logKey(group, index) });
  }
}

export class PartitionStore {
  private constructor(
    readonly partition: number,
    readonly db: RocksPartition,
  ) {}

  static async open(partition: number, location: string): Promise<PartitionStore> {
    return new PartitionStore(partition, await RocksPartition.open(location));
  }

  close(): Promise<void> {
    return this.db.close();
  }

  async loadGroup(group: number): Promise<GroupDisk> {
    const hs = await this.db.getSealed(groupKey(PREFIX.hard, group));
    const ap = await this.db.getSealed(groupKey(PREFIX.applied, group));
    const hard = hs ? (JSON.parse(hs.toString()) as HardState & { conf: ConfState | null }) : null;
    const applied = ap ? (JSON.parse(ap.toString()) as { index: number; term: number }) : { index: 0, term: 0 };
    const rows = await this.db.scan({ gt: logKey(group, applied.index), lt: prefixEnd(groupKey(PREFIX.log, group)) });
    const entries = rows.map(([k, v]) => decodeEntry(k, v));
    for (let i = 0; i < entries.length; i++) {
      if (entries[i].index !== applied.index + 1 + i) {
        throw new Error(`group ${group}: log hole at index ${applied.index + 1 + i} (found ${entries[i].index})`);
      }
    }
    return {
      hardState: hard ? { term: hard.term, vote: hard.vote, commit: hard.commit } : { term: 0, vote: '', commit: 0 },
      conf: hard?.conf ?? null,
      applied,
      entries,
    };
  }

  /** Ops persisting a Ready's hard state and entries. */
  logOps(ops: BatchOp[], group: number, hs: HardState | null, conf: ConfState, entries: Entry[]): void {
    if (hs) ops.push({ type: 'put', key: groupKey(PREFIX.hard, group), value: json({ ...hs, conf }) });
    for (const e of entries) ops.push({ type: 'put', key: logKey(group, e.index), value: encodeEntry(e) });
  }

  async loadConversation(group: number, id: string): Promise<Conversation> {
    const rec = await this.readRecord(id);
    const idem = new Map<string, IdemRecord>();
    if (rec !== null) {
      const prefix = convPrefix(PREFIX.idem, group, id);
      const rows = await this.db.scan({ gte: prefix, lt: prefixEnd(prefix) });
      const keyed = rows.map(([k, v]) => [k.toString('utf8', prefix.length), JSON.parse(unseal(k, v).toString())] as const);
      keyed.sort((a, b) => a[1].seq - b[1].seq);
      for (const [k, r] of keyed) idem.set(k, r as IdemRecord);
    }
    return { record: rec, idem };
  }

  async readRecord(id: string): Promise<ConversationRecord | null> {
    const v = await this.db.getSealed(recordKey(id));
    return v === null ? null : (JSON.parse(v.toString()) as ConversationRecord);
  }

  /** Message record JSON texts with lo <= seq <= hi, ascending, verified. */
  async readMessages(group: number, id: string, lo: number, hi: number): Promise<Buffer[]> {
    if (hi < lo) return [];
    const rows = await this.db.scan({ gte: messageKey(group, id, lo), lte: messageKey(group, id, hi) });
    return rows.map(([k, v]) => unseal(k, v));
  }

  /** Records in id order after `afterId` (exclusive; '' = from the start), up to `limit` rows scanned. */
  async scanRecords(afterId: string, limit: number): Promise<ConversationRecord[]> {
    const start = Buffer.from([PREFIX.record]);
    const rows = await this.db.scan({
      ...(afterId === '' ? { gt: start } : { gt: recordKey(afterId) }),
      lt: prefixEnd(start),
      limit,
    });
    return rows.map(([k, v]) => {
      const rec = JSON.parse(unseal(k, v).toString()) as ConversationRecord;
      if (rec.id !== recordIdOf(k)) throw new Error(`record key ${recordIdOf(k)} holds id ${rec.id}`);
      return rec;
    });
  }
}
