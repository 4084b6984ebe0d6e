// What clients saw, and the checker of SPEC §8's client-visible guarantees
// against the final (converged) replica state:
//  1. every acknowledged append is present, at the acknowledged seq, once;
//  2. per conversation, seqs are contiguous from 1 (and every replica holds
//     the same value per seq: the caller compares the replicas first);
//  3. no two acknowledged appends share an if_version, and an acknowledged
//     conditional append got version if_version + 1;
//  plus: an append that was definitely rejected left no trace; a read never
//  misses an append acknowledged before it was sent, and never shows a
//  value that is not the final one; an append sent after a tombstone was
//  acknowledged is refused.
import type { ConversationRecord } from '../../actors/conversation.js';
import type { ReadResult } from './node.js';
import { SafetyViolation } from './observer.js';
import type { SimStats } from './stats.js';

export type OpKind = 'put' | 'append' | 'read' | 'tombstone';

/**
 * ok: acknowledged. failed: definitely no effect (every attempt was refused).
 * unknown: may or may not have taken effect (a timeout or a lost leader on the way).
 */
export type Outcome = 'pending' | 'ok' | 'failed' | 'unknown';

export interface AppendAck {
  seq: number;
  version: number;
  duplicate: boolean;
}

export interface OpRecord {
  id: number;
  client: number;
  kind: OpKind;
  conversation: string;
  /** Append: the message text, unique per operation. */
  text: string;
  /** Append: -1 without if_version. */
  ifVersion: number;
  /** Append: '' without an idempotency key. */
  key: string;
  issuedAt: number;
  doneAt: number;
  outcome: Outcome;
  /** Wire error code of the final refusal ('' when none). */
  errorCode: string;
  ack: AppendAck | null;
  read: ReadResult | null;
  attempts: number;
  /** Some attempt may have been applied (it timed out, or its leader was lost). */
  maybeApplied: boolean;
}

export interface FinalConversation {
  record: ConversationRecord;
  messages: readonly string[];
}

const TEXT_RE = /"text":"([^"]*)"/;

function textOf(json: string): string {
  const m = TEXT_RE.exec(json);
  if (m === null) throw new SafetyViolation(`message without text: ${json}`);
  return m[1];
}

interface AckedAt {
  doneAt: number;
  seq: number;
}

export function checkHistory(ops: readonly OpRecord[], final: ReadonlyMap<string, FinalConversation>, stats: SimStats): void {
  const seqOfText = new Map<string, Map<string, number>>();
  for (const [id, conv] of final) seqOfText.set(id, checkConversation(id, conv));

  const ackedSeqs = new Map<string, Map<number, number>>();
  const ackedIfVersions = new Set<string>();
  const tombstonedAt = new Map<string, number>();
  const acksByConversation = new Map<string, AckedAt[]>();
  for (const op of ops) {
    if (op.kind === 'tombstone' && op.outcome === 'ok') tombstonedAt.set(op.conversation, Math.min(op.doneAt, tombstonedAt.get(op.conversation) ?? Infinity));
  }
  for (const op of ops) {
    if (op.errorCode === 'idempotency_conflict') throw new SafetyViolation(`op ${op.id}: idempotency conflict for a key only ever sent with one message`);
    if (op.kind === 'put' && op.outcome === 'ok' && !final.has(op.conversation)) throw new SafetyViolation(`op ${op.id}: acknowledged PUT of ${op.conversation}, which does not exist`);
    if (op.kind !== 'append') continue;
    const seqs = seqOfText.get(op.conversation);
    const at = seqs?.get(op.text);
    if (op.outcome === 'failed' && at !== undefined) {
      throw new SafetyViolation(`op ${op.id}: append refused with ${op.errorCode} is in ${op.conversation} at seq ${at}`);
    }
    if (op.outcome !== 'ok') continue;
    const ack = op.ack!;
    stats.writesChecked++;
    if (at !== ack.seq) {
      stats.lossesFound++;
      throw new SafetyViolation(`op ${op.id}: acknowledged append ${op.text} of ${op.conversation} at seq ${ack.seq} is ${at === undefined ? 'lost' : `at seq ${at}`}`);
    }
    let bySeq = ackedSeqs.get(op.conversation);
    if (bySeq === undefined) ackedSeqs.set(op.conversation, (bySeq = new Map()));
    const other = bySeq.get(ack.seq);
    if (other !== undefined && other !== op.id) throw new SafetyViolation(`ops ${other} and ${op.id}: both acknowledged at ${op.conversation} seq ${ack.seq}`);
    bySeq.set(ack.seq, op.id);
    if (op.ifVersion >= 0) {
      if (ack.version !== op.ifVersion + 1) throw new SafetyViolation(`op ${op.id}: if_version ${op.ifVersion} acknowledged with version ${ack.version}`);
      const k = `${op.conversation}@${op.ifVersion}`;
      if (ackedIfVersions.has(k)) throw new SafetyViolation(`two appends acknowledged with if_version ${op.ifVersion} on ${op.conversation}`);
      ackedIfVersions.add(k);
    }
    const tomb = tombstonedAt.get(op.conversation);
    if (tomb !== undefined && op.issuedAt > tomb && !ack.duplicate) {
      throw new SafetyViolation(`op ${op.id}: append sent at ${op.issuedAt} acknowledged although ${op.conversation} was tombstoned at ${tomb}`);
    }
    let acks = acksByConversation.get(op.conversation);
    if (acks === undefined) acksByConversation.set(op.conversation, (acks = []));
    acks.push({ doneAt: op.doneAt, seq: ack.seq });
  }
  checkReads(ops, final, acksByConversation, stats);
}

/** Seqs contiguous from 1, version = appends, each text once. Returns text → seq. */
function checkConversation(id: string, conv: FinalConversation): Map<string, number> {
  const { record, messages } = conv;
  if (messages.length !== record.last_seq) throw new SafetyViolation(`${id}: last_seq ${record.last_seq} but ${messages.length} messages`);
  if (record.version !== record.last_seq) throw new SafetyViolation(`${id}: version ${record.version} after ${record.last_seq} appends`);
  const seqOf = new Map<string, number>();
  for (let s = 1; s <= messages.length; s++) {
    const json = messages[s - 1];
    if (json === undefined) throw new SafetyViolation(`${id}: seq ${s} missing (last_seq ${record.last_seq})`);
    if (!json.startsWith(`{"seq":${s},`)) throw new SafetyViolation(`${id}: message at seq ${s} says ${json.slice(0, 20)}`);
    const text = textOf(json);
    const prev = seqOf.get(text);
    if (prev !== undefined) throw new SafetyViolation(`${id}: message ${text} appended twice, at seqs ${prev} and ${s}`);
    seqOf.set(text, s);
  }
  return seqOf;
}

/** Linearizable reads: see every append acknowledged before they were sent, and only final values. */
function checkReads(ops: readonly OpRecord[], final: ReadonlyMap<string, FinalConversation>, acks: Map<string, AckedAt[]>, stats: SimStats): void {
  const maxSeqBefore = new Map<string, { doneAt: number[]; maxSeq: number[] }>();
  for (const [id, list] of acks) {
    list.sort((a, b) => a.doneAt - b.doneAt);
    let max = 0;
    maxSeqBefore.set(id, { doneAt: list.map((a) => a.doneAt), maxSeq: list.map((a) => (max = Math.max(max, a.seq))) });
  }
  for (const op of ops) {
    if (op.kind !== 'read' || op.outcome !== 'ok') continue;
    stats.readsChecked++;
    const r = op.read!;
    const conv = final.get(op.conversation);
    if (r.record !== null && r.record.last_seq !== r.messages.length) throw new SafetyViolation(`op ${op.id}: read last_seq ${r.record.last_seq} with ${r.messages.length} messages`);
    for (let s = 1; s <= r.messages.length; s++) {
      if (conv === undefined || conv.messages[s - 1] !== r.messages[s - 1]) {
        throw new SafetyViolation(`op ${op.id}: read ${op.conversation} seq ${s} = ${r.messages[s - 1]}, finally ${conv?.messages[s - 1]}`);
      }
    }
    const before = maxSeqBefore.get(op.conversation);
    if (before === undefined) continue;
    const n = countBelow(before.doneAt, op.issuedAt);
    if (n > 0 && before.maxSeq[n - 1] > r.messages.length) {
      throw new SafetyViolation(`op ${op.id}: stale read of ${op.conversation}: ${r.messages.length} messages, but seq ${before.maxSeq[n - 1]} was acknowledged before the read was sent`);
    }
  }
}

/** Number of sorted values < x. */
function countBelow(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
