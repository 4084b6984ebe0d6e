// How the state machine of one storage partition hits disk: conversation
// records, messages, idempotency keys and each group's applied index, all
// checksummed. Builds batches; the driver decides when to write them.
import type { Compactions, Conversation, ConversationRecord, IdemRecord, WriteSink } from '../actors/conversation.js';
import { NO_COMPACTIONS, parseStoredRecord, storedRecordJson } from '../actors/conversation.js';
import { PREFIX, convPrefix, groupKey, idKey, idemKey, messageKey, prefixEnd, recordIdOf, recordKey } from './keys.js';
import { type BatchOp, RocksPartition, seal, sealText, unseal } from './rocks.js';

export interface ReplicaRecord {
  replica: string | null;
  /** The last replica of the group retired here (null: none); none at or below it starts again. */
  retired: string | null;
}

export interface Applied {
  index: number;
  term: number;
  /** The group's voters as of `index` (absent: its founding voters). */
  voters?: readonly string[];
}

const json = (v: unknown) => sealText(JSON.stringify(v));

/** The write recording a group's applied index (with its term and voters). */
export function appliedPut(group: number, a: Applied): Extract<BatchOp, { type: 'put' }> {
  return { type: 'put', key: groupKey(PREFIX.applied, group), value: json({ index: a.index, term: a.term, voters: a.voters }) };
}

/** Collects the writes of apply() for one partition in one RocksDB batch. */
export class ApplyBatch implements WriteSink {
  readonly ops: BatchOp[] = [];
  group = 0;
  /** Conversation id → position of its record's put: a later version replaces it (hot conversations). */
  private readonly recordAt = new Map<string, number>();

  putRecord(rec: ConversationRecord): void {
    const op: BatchOp = { type: 'put', key: recordKey(rec.id), value: sealText(storedRecordJson(rec)) };
    const at = this.recordAt.get(rec.id);
    if (at !== undefined) this.ops[at] = op;
    else {
      this.recordAt.set(rec.id, this.ops.length);
      this.ops.push(op);
    }
  }
  putMessage(id: string, seq: number, recordJsonText: string): void {
    this.ops.push({ type: 'put', key: messageKey(this.group, id, seq), value: sealText(recordJsonText) });
  }
  /** Drops every op from position `length` on (a group that failed mid-round writes nothing). */
  truncate(length: number): void {
    this.ops.length = length;
    for (const [id, at] of this.recordAt) if (at >= length) this.recordAt.delete(id);
  }
  putIdem(id: string, key: string, rec: IdemRecord): void {
    this.ops.push({ type: 'put', key: idemKey(this.group, id, key), value: json(rec) });
  }
  delIdem(id: string, key: string): void {
    this.ops.push({ type: 'del', key: idemKey(this.group, id, key) });
  }
  delMessages(id: string, lo: number, hi: number): void {
    for (let seq = lo; seq <= hi; seq++) this.ops.push({ type: 'del', key: messageKey(this.group, id, seq) });
  }
  setArchivePending(id: string, pending: boolean): void {
    const key = convPrefix(PREFIX.archivePending, this.group, id);
    this.ops.push(pending ? { type: 'put', key, value: seal(Buffer.alloc(0)) } : { type: 'del', key });
  }
  putCompactions(id: string, c: Compactions): void {
    this.ops.push({ type: 'put', key: idKey(PREFIX.compactions, id), value: json(c) });
  }
  /**
   * Same batch as the state it covers. Written when the voters change and at
   * checkpoints (runtime/driver.ts), not every round: recovery replays from
   * it, skipping what records already have (ConversationRecord.applied_index).
   */
  setApplied(group: number, index: number, term: number, voters: readonly string[]): void {
    this.ops.push(appliedPut(group, { index, term, voters }));
  }
}

export class PartitionStore {
  private checkpoints = 0;

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

  async loadApplied(group: number): Promise<Applied> {
    const v = await this.db.getSealed(groupKey(PREFIX.applied, group));
    return v === null ? { index: 0, term: 0 } : (JSON.parse(v.toString()) as Applied);
  }

  /**
   * Groups whose replica here changed since founding (runtime/membership.ts):
   * the replica hosted now (null: none), and the last one retired.
   */
  async loadReplicas(): Promise<Map<number, ReplicaRecord>> {
    const start = Buffer.from([PREFIX.replica]);
    const out = new Map<number, ReplicaRecord>();
    for (const [k, v] of await this.db.scan({ gt: start, lt: prefixEnd(start) })) {
      out.set(k.readUInt16BE(1), JSON.parse(unseal(k, v).toString()) as ReplicaRecord);
    }
    return out;
  }

  /** Records (synced, with `ops`) which replica of the group this data dir hosts. */
  saveReplica(group: number, rec: ReplicaRecord, ops: BatchOp[] = []): Promise<void> {
    return this.db.write([...ops, { type: 'put', key: groupKey(PREFIX.replica, group), value: json(rec) }], true);
  }

  /**
   * Reads every key and checks every sealed value: RocksDB verifies its block
   * checksums on the way, this the values' CRC32C. Throws on the first damage.
   */
  async scrub(): Promise<number> {
    let after: Buffer | null = null;
    let n = 0;
    for (;;) {
      const page = await this.db.scan(after === null ? { limit: 4096 } : { gt: after, limit: 4096 });
      if (page.length === 0) return n;
      for (const [k, v] of page) if (k[0] !== PREFIX.checkpoint) unseal(k, v);
      n += page.length;
      after = page[page.length - 1][0];
    }
  }

  /** A synced write of `ops`: everything written before it is durable once it resolves. */
  checkpoint(ops: BatchOp[] = []): Promise<void> {
    const v = Buffer.allocUnsafe(8);
    v.writeBigUInt64BE(BigInt(++this.checkpoints));
    return this.db.write([...ops, { type: 'put', key: Buffer.from([PREFIX.checkpoint]), value: v }], true);
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
    return { record: rec, idem, compactions: rec?.context?.compacted ? await this.readCompactions(id) : NO_COMPACTIONS };
  }

  async readRecord(id: string): Promise<ConversationRecord | null> {
    const v = await this.db.getSealed(recordKey(id));
    return v === null ? null : parseStoredRecord(v.toString());
  }

  async readCompactions(id: string): Promise<Compactions> {
    const v = await this.db.getSealed(idKey(PREFIX.compactions, id));
    if (v === null) throw new Error(`context ${id} is compacted but its compactions are missing`);
    return JSON.parse(v.toString()) as Compactions;
  }

  /** Message record JSON texts with lo <= seq <= hi, ascending, verified. */
  async readMessages(group: number, id: string, lo: number, hi: number): Promise<Buffer[]> {
    if (hi < lo) return [];
    const rows = await this.db.scan({ gte: messageKey(group, id, lo), lte: messageKey(group, id, hi) });
    return rows.map(([k, v]) => unseal(k, v));
  }

  async countArchivePending(): Promise<number> {
    const start = Buffer.from([PREFIX.archivePending]);
    return (await this.db.scan({ gt: start, lt: prefixEnd(start) })).length;
  }

  /** Ids of conversations with messages the archive lacks, in key order after `after` ('' = from the start). */
  async archivePending(after: { group: number; id: string } | null, limit: number): Promise<{ group: number; id: string }[]> {
    const start = Buffer.from([PREFIX.archivePending]);
    const rows = await this.db.scan({
      ...(after === null ? { gt: start } : { gt: convPrefix(PREFIX.archivePending, after.group, after.id) }),
      lt: prefixEnd(start),
      limit,
    });
    return rows.map(([k]) => ({ group: k.readUInt16BE(1), id: k.toString('latin1', 4, 4 + k[3]) }));
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
      const rec = parseStoredRecord(unseal(k, v).toString());
      if (rec.id !== recordIdOf(k)) throw new Error(`record key ${recordIdOf(k)} holds id ${rec.id}`);
      return rec;
    });
  }
}
