// The state machine of one Raft group on one simulated node: the real
// actors/conversation.ts apply() over the real encoded commands, writing
// through a WriteSink into a batch (one RocksDB WriteBatch in production).
// A GroupImage is the same state as a value: what a simulated disk holds
// and what a snapshot carries. The group's voters as of the applied index
// are part of it, as runtime/driver.ts persists them with the applied index
// (a conf change takes effect when applied, runtime/raft/core.ts).
import {
  apply,
  NO_COMPACTIONS,
  type ApplyResult,
  type Conversation,
  type ConversationRecord,
  type IdemRecord,
  type WriteSink,
} from '../../actors/conversation.js';
import { decodeCommand } from '../../actors/commands.js';
import { groupOf } from '../../runtime/placement.js';
import { decodeConfState } from '../../runtime/raft/conf.js';
import { EntryType, type Entry } from '../../runtime/raft/types.js';

export interface GroupImage {
  applied: number;
  appliedTerm: number;
  /** Hash chain over every entry applied: equal on every replica at the same index. */
  chain: number;
  /** Replica ids of the group's voters as of `applied`. */
  voters: readonly string[];
  /** Records are never mutated once written (apply replaces them), so images share them. */
  records: Map<string, ConversationRecord>;
  /** messages.get(id)[seq - 1] is the stored message record JSON. */
  messages: Map<string, string[]>;
  idem: Map<string, Map<string, IdemRecord>>;
}

export type StateOp =
  | { kind: 'record'; record: ConversationRecord }
  | { kind: 'message'; id: string; seq: number; json: string }
  | { kind: 'idem'; id: string; key: string; rec: IdemRecord }
  | { kind: 'delIdem'; id: string; key: string };

/** The writes of one turn's applies for one group: atomic on disk. */
export interface StateBatch {
  group: number;
  ops: StateOp[];
  applied: number;
  appliedTerm: number;
  chain: number;
  voters: readonly string[];
}

/** A group's state before anything was applied: `voters` is its founding voter set (its conf as of index 0). */
export function emptyImage(voters: readonly string[]): GroupImage {
  return { applied: 0, appliedTerm: 0, chain: 0, voters: voters.slice(), records: new Map(), messages: new Map(), idem: new Map() };
}

export function cloneImage(img: GroupImage): GroupImage {
  const messages = new Map<string, string[]>();
  for (const [id, list] of img.messages) messages.set(id, list.slice());
  const idem = new Map<string, Map<string, IdemRecord>>();
  for (const [id, keys] of img.idem) idem.set(id, new Map(keys));
  return { applied: img.applied, appliedTerm: img.appliedTerm, chain: img.chain, voters: img.voters.slice(), records: new Map(img.records), messages, idem };
}

export function applyStateBatch(img: GroupImage, b: StateBatch): void {
  if (b.applied < img.applied) throw new Error(`group ${b.group}: state batch at ${b.applied} behind image at ${img.applied}`);
  for (const op of b.ops) {
    switch (op.kind) {
      case 'record':
        img.records.set(op.record.id, op.record);
        break;
      case 'message':
        listOf(img.messages, op.id)[op.seq - 1] = op.json;
        break;
      case 'idem':
        mapOf(img.idem, op.id).set(op.key, op.rec);
        break;
      case 'delIdem':
        img.idem.get(op.id)?.delete(op.key);
        break;
    }
  }
  img.applied = b.applied;
  img.appliedTerm = b.appliedTerm;
  img.chain = b.chain;
  img.voters = b.voters;
}

function listOf(m: Map<string, string[]>, id: string): string[] {
  let l = m.get(id);
  if (l === undefined) m.set(id, (l = []));
  return l;
}

function mapOf<V>(m: Map<string, Map<string, V>>, id: string): Map<string, V> {
  let v = m.get(id);
  if (v === undefined) m.set(id, (v = new Map()));
  return v;
}

function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function bytesHash(data: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < data.length; i++) {
    h ^= data[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Identity of a log entry for the checkers: term, type and content. */
export function entryKey(e: Entry): string {
  return `${e.term}:${e.type}:${e.data.length}:${bytesHash(e.data)}`;
}

/** Collects apply()'s writes into a batch and mirrors new messages into the machine. */
class BatchSink implements WriteSink {
  readonly ops: StateOp[] = [];
  constructor(private readonly messages: Map<string, string[]>) {}
  putRecord(record: ConversationRecord): void {
    this.ops.push({ kind: 'record', record });
  }
  putMessage(id: string, seq: number, json: string): void {
    listOf(this.messages, id)[seq - 1] = json;
    this.ops.push({ kind: 'message', id, seq, json });
  }
  putIdem(id: string, key: string, rec: IdemRecord): void {
    this.ops.push({ kind: 'idem', id, key, rec });
  }
  delIdem(id: string, key: string): void {
    this.ops.push({ kind: 'delIdem', id, key });
  }
  putCompactions(): void {
    throw new Error('the simulator issues no compactions');
  }
  delMessages(): void {
    throw new Error('the simulator acknowledges no archiving');
  }
  setArchivePending(): void {
    // No archiver runs in the simulator: nothing reads the mark.
  }
}

export class GroupMachine {
  applied: number;
  appliedTerm: number;
  chain: number;
  /** Voters as of `applied` (a ConfChange entry replaces them when applied). */
  voters: readonly string[];
  readonly convs = new Map<string, Conversation>();
  readonly messages = new Map<string, string[]>();

  constructor(
    readonly group: number,
    image: GroupImage,
  ) {
    this.applied = image.applied;
    this.appliedTerm = image.appliedTerm;
    this.chain = image.chain;
    this.voters = image.voters.slice();
    for (const [id, record] of image.records) {
      // Idempotency keys come back in insertion (= seq) order, as apply's pruning expects.
      this.convs.set(id, { record, idem: new Map(image.idem.get(id)), compactions: NO_COMPACTIONS });
    }
    for (const [id, list] of image.messages) this.messages.set(id, list.slice());
  }

  image(): GroupImage {
    const records = new Map<string, ConversationRecord>();
    const idem = new Map<string, Map<string, IdemRecord>>();
    for (const [id, conv] of this.convs) {
      if (conv.record === null) continue;
      records.set(id, conv.record);
      idem.set(id, new Map(conv.idem));
    }
    const messages = new Map<string, string[]>();
    for (const [id, list] of this.messages) messages.set(id, list.slice());
    return { applied: this.applied, appliedTerm: this.appliedTerm, chain: this.chain, voters: this.voters.slice(), records, messages, idem };
  }

  /**
   * Applies committed entries in order and returns their writes as one batch.
   * `onApplied` sees each entry with apply()'s answer (null for a leader's
   * empty entry and a conf change) and the state chain after it.
   */
  applyEntries(entries: readonly Entry[], onApplied: (e: Entry, result: ApplyResult | null, chain: number) => void): StateBatch {
    const sink = new BatchSink(this.messages);
    for (const e of entries) {
      if (e.index !== this.applied + 1) throw new Error(`group ${this.group}: applying ${e.index} after ${this.applied}`);
      let result: ApplyResult | null = null;
      if (e.type === EntryType.ConfChange) this.voters = decodeConfState(e.data).voters;
      else if (e.type !== EntryType.Normal) throw new Error(`group ${this.group}: unexpected entry type ${e.type} at ${e.index}`);
      else if (e.data.length > 0) result = this.applyCommand(e, sink);
      this.applied = e.index;
      this.appliedTerm = e.term;
      this.chain = fnv(this.chain ^ 0x811c9dc5, entryKey(e));
      onApplied(e, result, this.chain);
    }
    return { group: this.group, ops: sink.ops, applied: this.applied, appliedTerm: this.appliedTerm, chain: this.chain, voters: this.voters };
  }

  private applyCommand(e: Entry, sink: BatchSink): ApplyResult {
    const cmd = decodeCommand(e.data);
    if (groupOf(cmd.id) !== this.group) throw new Error(`group ${this.group}: entry ${e.index} is for ${cmd.id} of group ${groupOf(cmd.id)}`);
    let conv = this.convs.get(cmd.id);
    if (conv === undefined) conv = { record: null, idem: new Map(), compactions: NO_COMPACTIONS };
    const result = apply(conv, cmd, sink);
    if (conv.record !== null) this.convs.set(cmd.id, conv);
    return result;
  }
}
