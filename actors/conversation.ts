// What an entry means: the conversation state machine. apply() is pure and
// deterministic — the same entries give the same state and the same writes on
// every replica. It never does I/O: the caller loads the conversation
// (record + idempotency keys) first and persists `writes` afterwards.
import { AppError, conflict, notFound, tombstoned } from './errors.js';
import { Op, type AppendCommand, type Command, type PutCommand } from './commands.js';
import { limits } from '../runtime/limits.js';

export interface ConversationRecord {
  id: string;
  version: number;
  tombstoned: boolean;
  last_seq: number;
  archived_seq: number;
  metadata: Record<string, unknown>;
  created_at: string;
  updated_at: string;
}

export interface IdemRecord {
  seq: number;
  version: number;
  token_count: number;
  digest: string;
  at_ms: number;
}

/** A conversation as loaded into memory: null record = does not exist. */
export interface Conversation {
  record: ConversationRecord | null;
  /** Insertion order = seq order, oldest first (pruning relies on it). */
  idem: Map<string, IdemRecord>;
}

/** Where apply puts its writes; the storage layer turns them into RocksDB ops. */
export interface WriteSink {
  putRecord(rec: ConversationRecord): void;
  putMessage(id: string, seq: number, recordJson: string): void;
  putIdem(id: string, key: string, rec: IdemRecord): void;
  delIdem(id: string, key: string): void;
}

export type ApplyResult =
  | { kind: 'record'; record: ConversationRecord }
  | { kind: 'appended'; seq: number; version: number; tokenCount: number; duplicate: boolean }
  | { kind: 'deleted' }
  | { kind: 'error'; error: AppError };

/** Keys beyond this count are pruned once also older than the retention. */
const IDEM_HARD_MAX = 10 * limits.idempotencyKeysPerConversation;

export function messageRecordJson(seq: number, members: string, tokenCount: number, insertedAt: string): string {
  return `{"seq":${seq},${members},"token_count":${tokenCount},"inserted_at":"${insertedAt}"}`;
}

export function apply(conv: Conversation, cmd: Command, sink: WriteSink): ApplyResult {
  try {
    switch (cmd.op) {
      case Op.Put:
        return applyPut(conv, cmd, sink);
      case Op.Append:
        return applyAppend(conv, cmd, sink);
      case Op.Tombstone:
        return applyTombstone(conv, cmd.id, cmd.nowMs, sink);
    }
  } catch (err) {
    if (err instanceof AppError) return { kind: 'error', error: err };
    throw err;
  }
}

function applyPut(conv: Conversation, cmd: PutCommand, sink: WriteSink): ApplyResult {
  const now = new Date(cmd.nowMs).toISOString();
  const metadata = cmd.metadataJson === null ? null : (JSON.parse(cmd.metadataJson) as Record<string, unknown>);
  const cur = conv.record;
  if (cur === null) {
    const rec: ConversationRecord = {
      id: cmd.id,
      version: 0,
      tombstoned: false,
      last_seq: 0,
      archived_seq: 0,
      metadata: metadata ?? {},
      created_at: now,
      updated_at: now,
    };
    conv.record = rec;
    sink.putRecord(rec);
    return { kind: 'record', record: rec };
  }
  if (metadata === null) return { kind: 'record', record: cur };
  if (cur.tombstoned) throw tombstoned(cmd.id);
  conv.record = { ...cur, metadata, updated_at: now };
  sink.putRecord(conv.record);
  return { kind: 'record', record: conv.record };
}

function applyAppend(conv: Conversation, cmd: AppendCommand, sink: WriteSink): ApplyResult {
  const cur = conv.record;
  if (cur === null) throw notFound(`conversation ${cmd.id}`);
  // A retry of an append that happened gets its original answer, even if
  // the conversation was tombstoned or moved on since (key before if_version).
  if (cmd.idemKey !== '') {
    const seen = conv.idem.get(cmd.idemKey);
    if (seen !== undefined) {
      if (seen.digest !== cmd.digest) {
        throw new AppError('idempotency_conflict', 'idempotency_key was already used with a different message');
      }
      return { kind: 'appended', seq: seen.seq, version: seen.version, tokenCount: seen.token_count, duplicate: true };
    }
  }
  if (cur.tombstoned) throw tombstoned(cmd.id);
  if (cmd.ifVersion >= 0 && cmd.ifVersion !== cur.version) throw conflict(cmd.ifVersion, cur.version);
  const seq = cur.last_seq + 1;
  const now = new Date(cmd.nowMs).toISOString();
  const next: ConversationRecord = { ...cur, version: cur.version + 1, last_seq: seq, updated_at: now };
  if (next.last_seq !== cur.last_seq + 1 || next.version <= cur.version) {
    throw new Error(`seq/version must advance by one: ${cur.last_seq}->${next.last_seq}`);
  }
  conv.record = next;
  sink.putMessage(cmd.id, seq, messageRecordJson(seq, cmd.messageMembers, cmd.tokenCount, now));
  sink.putRecord(next);
  if (cmd.idemKey !== '') {
    const rec: IdemRecord = { seq, version: next.version, token_count: cmd.tokenCount, digest: cmd.digest, at_ms: cmd.nowMs };
    conv.idem.set(cmd.idemKey, rec);
    sink.putIdem(cmd.id, cmd.idemKey, rec);
    pruneIdem(conv, cmd.id, cmd.nowMs, sink);
  }
  return { kind: 'appended', seq, version: next.version, tokenCount: cmd.tokenCount, duplicate: false };
}

/** Forget the oldest keys once past both the count and the age floor (or the hard cap). */
function pruneIdem(conv: Conversation, id: string, nowMs: number, sink: WriteSink): void {
  for (const [key, rec] of conv.idem) {
    const overCount = conv.idem.size > limits.idempotencyKeysPerConversation;
    const old = nowMs - rec.at_ms > limits.idempotencyKeyRetentionMs;
    if (!(overCount && old) && conv.idem.size <= IDEM_HARD_MAX) return;
    conv.idem.delete(key);
    sink.delIdem(id, key);
  }
}

function applyTombstone(conv: Conversation, id: string, nowMs: number, sink: WriteSink): ApplyResult {
  const cur = conv.record;
  if (cur === null) throw notFound(`conversation ${id}`);
  if (cur.tombstoned) return { kind: 'deleted' };
  conv.record = { ...cur, tombstoned: true, updated_at: new Date(nowMs).toISOString() };
  sink.putRecord(conv.record);
  return { kind: 'deleted' };
}

export function recordJson(r: ConversationRecord): string {
  return JSON.stringify({
    id: r.id,
    version: r.version,
    tombstoned: r.tombstoned,
    last_seq: r.last_seq,
    archived_seq: r.archived_seq,
    metadata: r.metadata,
    created_at: r.created_at,
    updated_at: r.updated_at,
  });
}
