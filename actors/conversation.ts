// What an entry means: the conversation state machine. apply() is pure and
// deterministic — the same entries give the same state and the same writes on
// every replica. It never does I/O: the caller loads the conversation
// (record + idempotency keys) first and persists `writes` afterwards.
import { AppError, conflict, notFound, tombstoned } from './errors.js';
import {
  Op,
  REQUIRE_CONTEXT,
  type AckArchivedCommand,
  type AppendCommand,
  type Command,
  type CompactCommand,
  type PatchMetadataCommand,
  type PutCommand,
  type PutContextCommand,
} from './commands.js';
import { type ContextConfig, type ContextState, liveFrom, nextCompaction, windowTokens } from './context.js';
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
  /** Tokens of every message ever appended (window arithmetic, actors/context.ts). */
  token_total: number;
  /** Messages up to here were archived and removed from the hot tier (0: none). */
  trimmed_seq: number;
  /** Token budget, policy and latest compaction; null for a plain conversation. */
  context: ContextState | null;
  /**
   * Raft index of the entry that wrote this record (0: none yet). Recovery
   * replays the log from the last checkpointed applied index and skips the
   * entries a record already has (runtime/driver.ts applyEntries).
   */
  applied_index: number;
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
  compactions: Compactions;
}

/** A context's compactions, stored apart from the record (written once per compaction). */
export interface Compactions {
  /** Texts of the latest compaction's replacement messages, oldest first. */
  replacement: readonly string[];
  /** last_seq at each compaction, ascending: the version of message seq s is s + #(seqs < s). */
  seqs: readonly number[];
}

export const NO_COMPACTIONS: Compactions = Object.freeze({ replacement: [], seqs: [] });

/** Every append and every compaction bumps the version; nothing else does. */
export function versionAt(seq: number, c: Pick<Compactions, 'seqs'>): number {
  let lo = 0;
  let hi = c.seqs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (c.seqs[mid] < seq) lo = mid + 1;
    else hi = mid;
  }
  return seq + lo;
}

/** Where apply puts its writes; the storage layer turns them into RocksDB ops. */
export interface WriteSink {
  putRecord(rec: ConversationRecord): void;
  putMessage(id: string, seq: number, recordJson: string): void;
  putIdem(id: string, key: string, rec: IdemRecord): void;
  delIdem(id: string, key: string): void;
  putCompactions(id: string, c: Compactions): void;
  /** Hot messages lo..hi were archived and leave the hot tier. */
  delMessages(id: string, lo: number, hi: number): void;
  /** The conversation has messages the archive does not (set on the first one, cleared when caught up). */
  setArchivePending(id: string, pending: boolean): void;
}

export type ApplyResult =
  | { kind: 'record'; record: ConversationRecord; asContext: boolean }
  | {
      kind: 'appended';
      seq: number;
      version: number;
      tokenCount: number;
      duplicate: boolean;
      /** Window tokens after the append; null for a plain conversation. */
      tokenEstimate: number | null;
    }
  | { kind: 'compacted'; version: number }
  | { kind: 'archived'; archivedSeq: number; trimmedSeq: number }
  | { kind: 'deleted' }
  | { kind: 'error'; error: AppError };

/** Keys beyond this count are pruned once also older than the retention. */
const IDEM_HARD_MAX = 10 * limits.idempotencyKeysPerConversation;

export function messageRecordJson(seq: number, members: string, tokenCount: number, insertedAt: string): string {
  return `{"seq":${seq},${members},"token_count":${tokenCount},"inserted_at":"${insertedAt}"}`;
}

/** A replacement message as window reads return it: a message record without a seq. */
export function replacementJson(members: string, tokenCount: number, insertedAt: string): string {
  return `{${members},"token_count":${tokenCount},"inserted_at":"${insertedAt}"}`;
}

// Appends of one burst share their millisecond: formatting it once saves a
// Date and a toISOString per append on the worker.
let isoMs = Number.NaN;
let isoText = '';
function iso(ms: number): string {
  if (ms !== isoMs) {
    isoText = new Date(ms).toISOString();
    isoMs = ms;
  }
  return isoText;
}

export function apply(conv: Conversation, cmd: Command, sink: WriteSink): ApplyResult {
  try {
    switch (cmd.op) {
      case Op.Put:
        return applyPut(conv, cmd, sink);
      case Op.Append:
        return applyAppend(conv, cmd, sink);
      case Op.Tombstone:
        return applyTombstone(conv, cmd.id, cmd.nowMs, cmd.flags, sink);
      case Op.PutContext:
        return applyPutContext(conv, cmd, sink);
      case Op.Compact:
        return applyCompact(conv, cmd, sink);
      case Op.PatchMetadata:
        return applyPatchMetadata(conv, cmd, sink);
      case Op.AckArchived:
        return applyAckArchived(conv, cmd, sink);
    }
  } catch (err) {
    if (err instanceof AppError) return { kind: 'error', error: err };
    throw err;
  }
}

function newRecord(id: string, nowMs: number, metadata: Record<string, unknown> | null, context: ContextState | null): ConversationRecord {
  const now = iso(nowMs);
  return {
    id,
    version: 0,
    tombstoned: false,
    last_seq: 0,
    archived_seq: 0,
    metadata: metadata ?? {},
    created_at: now,
    updated_at: now,
    token_total: 0,
    trimmed_seq: 0,
    context,
    applied_index: 0,
  };
}

function update(conv: Conversation, next: ConversationRecord, sink: WriteSink): ConversationRecord {
  conv.record = next;
  sink.putRecord(next);
  return next;
}

const parseObject = (json: string | null) => (json === null ? null : (JSON.parse(json) as Record<string, unknown>));

function applyPut(conv: Conversation, cmd: PutCommand, sink: WriteSink): ApplyResult {
  const metadata = parseObject(cmd.metadataJson);
  const cur = conv.record;
  if (cur === null) return { kind: 'record', record: update(conv, newRecord(cmd.id, cmd.nowMs, metadata, null), sink), asContext: false };
  if (metadata === null) return { kind: 'record', record: cur, asContext: false };
  if (cur.tombstoned) throw tombstoned(cmd.id);
  return { kind: 'record', record: update(conv, { ...cur, metadata, updated_at: iso(cmd.nowMs) }, sink), asContext: false };
}

/** Creates a context, turns a conversation into one, or replaces its config; a compaction survives. */
function applyPutContext(conv: Conversation, cmd: PutContextCommand, sink: WriteSink): ApplyResult {
  const config = JSON.parse(cmd.configJson) as ContextConfig;
  const metadata = parseObject(cmd.metadataJson);
  const cur = conv.record;
  if (cur === null) {
    const rec = newRecord(cmd.id, cmd.nowMs, metadata, { ...config, compacted: null });
    return { kind: 'record', record: update(conv, rec, sink), asContext: true };
  }
  if (cur.tombstoned) throw tombstoned(cmd.id);
  const next: ConversationRecord = {
    ...cur,
    metadata: metadata ?? cur.metadata,
    context: { ...config, compacted: cur.context?.compacted ?? null },
    updated_at: iso(cmd.nowMs),
  };
  return { kind: 'record', record: update(conv, next, sink), asContext: true };
}

/** The record of a conversation a command may change; `flags` may demand a context. */
function writable(conv: Conversation, id: string, flags: number): ConversationRecord {
  const cur = existing(conv, id, flags);
  if (cur.tombstoned) throw tombstoned(id);
  return cur;
}

function existing(conv: Conversation, id: string, flags: number): ConversationRecord {
  const cur = conv.record;
  if (cur === null || ((flags & REQUIRE_CONTEXT) !== 0 && cur.context === null)) {
    throw notFound(flags & REQUIRE_CONTEXT ? `context ${id}` : `conversation ${id}`);
  }
  return cur;
}

/** Replaces the LLM window atomically; the log is untouched. */
function applyCompact(conv: Conversation, cmd: CompactCommand, sink: WriteSink): ApplyResult {
  const cur = writable(conv, cmd.id, REQUIRE_CONTEXT);
  if (cmd.ifVersion >= 0 && cmd.ifVersion !== cur.version) throw conflict(cmd.ifVersion, cur.version);
  const now = iso(cmd.nowMs);
  const texts = cmd.replacement.map((r) => replacementJson(r.members, r.tokenCount, now));
  let tokens = 0;
  for (const r of cmd.replacement) tokens += r.tokenCount;
  const version = cur.version + 1;
  const context: ContextState = { ...cur.context!, compacted: nextCompaction(cur, tokens, version) };
  update(conv, { ...cur, version, context, updated_at: now }, sink);
  conv.compactions = { replacement: texts, seqs: [...conv.compactions.seqs, cur.last_seq] };
  sink.putCompactions(cmd.id, conv.compactions);
  return { kind: 'compacted', version };
}

/**
 * The archive has seqs 1..seq: archived_seq moves up (never down; acks may
 * repeat after a leader change) and hot messages it covers are trimmed, except
 * the newest `tailKeep` and a context's live window (window reads stay in memory).
 */
function applyAckArchived(conv: Conversation, cmd: AckArchivedCommand, sink: WriteSink): ApplyResult {
  const cur = existing(conv, cmd.id, 0);
  const archived = Math.max(cur.archived_seq, Math.min(cmd.seq, cur.last_seq));
  const keepFrom = Math.min(cur.last_seq - cmd.tailKeep + 1, cur.context === null ? Infinity : liveFrom(cur));
  const trimmed = Math.max(cur.trimmed_seq, Math.min(archived, keepFrom - 1));
  if (archived === cur.archived_seq && trimmed === cur.trimmed_seq) {
    return { kind: 'archived', archivedSeq: archived, trimmedSeq: trimmed };
  }
  if (trimmed > cur.trimmed_seq) sink.delMessages(cmd.id, cur.trimmed_seq + 1, trimmed);
  if (archived === cur.last_seq) sink.setArchivePending(cmd.id, false);
  update(conv, { ...cur, archived_seq: archived, trimmed_seq: trimmed }, sink);
  return { kind: 'archived', archivedSeq: archived, trimmedSeq: trimmed };
}

/** Upserts keys into the metadata. */
function applyPatchMetadata(conv: Conversation, cmd: PatchMetadataCommand, sink: WriteSink): ApplyResult {
  const cur = writable(conv, cmd.id, cmd.flags);
  const metadata = { ...cur.metadata, ...parseObject(cmd.patchJson) };
  const asContext = (cmd.flags & REQUIRE_CONTEXT) !== 0;
  return { kind: 'record', record: update(conv, { ...cur, metadata, updated_at: iso(cmd.nowMs) }, sink), asContext };
}

function applyAppend(conv: Conversation, cmd: AppendCommand, sink: WriteSink): ApplyResult {
  const cur = existing(conv, cmd.id, cmd.flags);
  // A retry of an append that happened gets its original answer, even if
  // the conversation was tombstoned or moved on since (key before if_version).
  if (cmd.idemKey !== '') {
    const seen = conv.idem.get(cmd.idemKey);
    if (seen !== undefined) {
      if (seen.digest !== cmd.digest) {
        throw new AppError('idempotency_conflict', 'idempotency_key was already used with a different message');
      }
      const tokenEstimate = cur.context === null ? null : windowTokens(cur);
      return { kind: 'appended', seq: seen.seq, version: seen.version, tokenCount: seen.token_count, duplicate: true, tokenEstimate };
    }
  }
  if (cur.tombstoned) throw tombstoned(cmd.id);
  if (cmd.ifVersion >= 0 && cmd.ifVersion !== cur.version) throw conflict(cmd.ifVersion, cur.version);
  const seq = cur.last_seq + 1;
  const now = iso(cmd.nowMs);
  const next: ConversationRecord = {
    ...cur,
    version: cur.version + 1,
    last_seq: seq,
    token_total: cur.token_total + cmd.tokenCount,
    updated_at: now,
  };
  if (next.last_seq !== cur.last_seq + 1 || next.version <= cur.version) {
    throw new Error(`seq/version must advance by one: ${cur.last_seq}->${next.last_seq}`);
  }
  conv.record = next;
  sink.putMessage(cmd.id, seq, messageRecordJson(seq, cmd.messageMembers, cmd.tokenCount, now));
  sink.putRecord(next);
  if (cur.last_seq === cur.archived_seq) sink.setArchivePending(cmd.id, true);
  if (cmd.idemKey !== '') {
    const rec: IdemRecord = { seq, version: next.version, token_count: cmd.tokenCount, digest: cmd.digest, at_ms: cmd.nowMs };
    conv.idem.set(cmd.idemKey, rec);
    sink.putIdem(cmd.id, cmd.idemKey, rec);
    pruneIdem(conv, cmd.id, cmd.nowMs, sink);
  }
  const tokenEstimate = next.context === null ? null : windowTokens(next);
  return { kind: 'appended', seq, version: next.version, tokenCount: cmd.tokenCount, duplicate: false, tokenEstimate };
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

function applyTombstone(conv: Conversation, id: string, nowMs: number, flags: number, sink: WriteSink): ApplyResult {
  const cur = existing(conv, id, flags);
  if (cur.tombstoned) return { kind: 'deleted' };
  update(conv, { ...cur, tombstoned: true, updated_at: iso(nowMs) }, sink);
  return { kind: 'deleted' };
}

/** The record as stored: every field, including the internal ones. */
export const storedRecordJson = (r: ConversationRecord) => JSON.stringify(r);

/** A stored record, with the fields older versions did not write filled in. */
export function parseStoredRecord(json: string): ConversationRecord {
  const r = JSON.parse(json) as ConversationRecord;
  r.token_total ??= 0;
  r.trimmed_seq ??= 0;
  r.context ??= null;
  r.applied_index ??= 0;
  return r;
}

/** SPEC §4 context record. */
export function contextJson(r: ConversationRecord): string {
  const c = r.context!;
  return JSON.stringify({
    id: r.id,
    token_budget: c.token_budget,
    trigger_ratio: c.trigger_ratio,
    policy: c.policy,
    version: r.version,
    metadata: r.metadata,
    created_at: r.created_at,
    updated_at: r.updated_at,
    tombstoned: r.tombstoned,
    last_seq: r.last_seq,
    archived_seq: r.archived_seq,
  });
}

/** SPEC §3 conversation record. */
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
