// The Raft log: stable storage (read-only to the core) + an unstable tail.
// Pure module.
//
// RaftStorage is what the driver has persisted. The core only reads it; the
// driver writes it (append / setHardState / compact / applySnapshot) while
// following the Ready contract in core.ts. MemoryStorage is the reference
// implementation, used by tests and, in production, as the in-memory mirror
// of the log the driver keeps on disk.
//
// RaftLog is the core's view: storage entries up to `stableIndex()`, then the
// `unstable` tail of entries accepted but not yet persisted (handed to the
// driver by ready(), dropped from the tail by advance()).

import { decodeConfState } from './conf.js';
import { ErrCompacted, ErrUnavailable, RaftInvariantError } from './errors.js';
import { EntryType, type ConfState, type Entry, type HardState, type SnapshotMeta } from './types.js';

/** Bytes an entry counts for against maxBytes limits. */
export const ENTRY_OVERHEAD_BYTES = 24;

export function entryBytes(e: Entry): number {
  return e.data.byteLength + ENTRY_OVERHEAD_BYTES;
}

const NO_LIMIT = Number.POSITIVE_INFINITY;

export interface RaftStorage {
  /** Hard state as persisted, and the voter set as of the applied index. */
  initialState(): { hardState: HardState; conf: ConfState };
  /**
   * Entries in [lo, hi), at least one if lo < hi, then as many as fit in
   * maxBytes. Returns a fresh array the caller may keep.
   * Throws ErrCompacted (lo < firstIndex) or ErrUnavailable (hi > lastIndex + 1).
   */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of `index`, valid for [firstIndex - 1, lastIndex]. Throws ErrCompacted / ErrUnavailable. */
  term(index: number): number;
  firstIndex(): number;
  lastIndex(): number;
  /** Metadata of the latest snapshot (the compaction point); index 0 when none. */
  snapshotMeta(): SnapshotMeta;
}

export interface MemoryStorageInit {
  /** Voter set at bootstrap (also the conf of the empty snapshot at index 0). */
  conf?: ConfState;
  hardState?: HardState;
  /** Snapshot the log starts after (loading from disk). */
  snapshot?: SnapshotMeta;
  /** Entries following `snapshot`, contiguous. */
  entries?: Entry[];
  /** Conf as of the applied index, when loading from disk; defaults to the snapshot's. */
  appliedConf?: ConfState;
}

function copyConf(c: ConfState): ConfState {
  return { voters: c.voters.slice() };
}

export class MemoryStorage implements RaftStorage {
  private hardState: HardState;
  private conf: ConfState;
  private snap: SnapshotMeta;
  /** ents[k].index === snap.index + 1 + k */
  private ents: Entry[];

  constructor(init: MemoryStorageInit = {}) {
    const conf = init.conf ?? init.snapshot?.conf ?? { voters: [] };
    this.snap = init.snapshot ? { ...init.snapshot, conf: copyConf(init.snapshot.conf) } : { index: 0, term: 0, conf: copyConf(conf) };
    this.hardState = init.hardState ? { ...init.hardState } : { term: 0, vote: '', commit: 0 };
    this.conf = copyConf(init.appliedConf ?? this.snap.conf);
    this.ents = [];
    if (init.entries && init.entries.length > 0) this.append(init.entries);
  }

  initialState(): { hardState: HardState; conf: ConfState } {
    return { hardState: { ...this.hardState }, conf: copyConf(this.conf) };
  }

  firstIndex(): number {
    return this.snap.index + 1;
  }

  lastIndex(): number {
    return this.snap.index + this.ents.length;
  }

  snapshotMeta(): SnapshotMeta {
    return this.snap;
  }

  term(index: number): number {
    if (index < this.snap.index) throw new ErrCompacted(index, this.firstIndex());
    if (index > this.lastIndex()) throw new ErrUnavailable(index, this.lastIndex());
    if (index === this.snap.index) return this.snap.term;
    return this.ents[index - this.snap.index - 1].term;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo < this.firstIndex()) throw new ErrCompacted(lo, this.firstIndex());
    if (hi > this.lastIndex() + 1) throw new ErrUnavailable(hi - 1, this.lastIndex());
    if (lo >= hi) return [];
    const base = this.snap.index + 1;
    let end = lo - base + 1;
    let bytes = entryBytes(this.ents[lo - base]);
    const stop = hi - base;
    while (end < stop) {
      bytes += entryBytes(this.ents[end]);
      if (bytes > maxBytes) break;
      end++;
    }
    return this.ents.slice(lo - base, end);
  }

  setHardState(hs: HardState): void {
    this.hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
  }

  /** The conf as of the applied index; persist it with the applied index. */
  setConf(conf: ConfState): void {
    this.conf = copyConf(conf);
  }

  /**
   * Appends contiguous entries, truncating any existing suffix from the
   * first entry's index on. Entries at or below the compaction point are
   * skipped. A gap after lastIndex is a programmer error.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = entries[0].index;
    const last = entries[entries.length - 1].index;
    if (last - first + 1 !== entries.length) throw new RaftInvariantError(`storage: non-contiguous append [${first}, ${last}] of ${entries.length}`);
    if (last <= this.snap.index) return;
    const skip = Math.max(0, this.snap.index + 1 - first);
    const from = first + skip;
    if (from > this.lastIndex() + 1) throw new RaftInvariantError(`storage: gap: append at ${from}, last index ${this.lastIndex()}`);
    const keep = from - this.snap.index - 1;
    if (keep < this.ents.length) this.ents.length = keep;
    for (let i = skip; i < entries.length; i++) this.ents.push(entries[i]);
  }

  /**
   * Drops entries <= index, keeping index's term as the new snapshot point.
   * The snapshot's conf is the last ConfChange among the dropped entries, or
   * the previous snapshot's. Only compact at or below the applied index.
   */
  compact(index: number): void {
    if (index <= this.snap.index) throw new ErrCompacted(index, this.firstIndex());
    if (index > this.lastIndex()) throw new ErrUnavailable(index, this.lastIndex());
    const drop = index - this.snap.index;
    let conf = this.snap.conf;
    for (let k = drop - 1; k >= 0; k--) {
      if (this.ents[k].type === EntryType.ConfChange) {
        conf = decodeConfState(this.ents[k].data);
        break;
      }
    }
    const term = this.ents[drop - 1].term;
    this.ents.splice(0, drop);
    this.snap = { index, term, conf };
  }

  /** Replaces the whole log by a snapshot (the state was installed by the driver). */
  applySnapshot(meta: SnapshotMeta): void {
    if (meta.index <= this.snap.index) throw new RaftInvariantError(`storage: snapshot ${meta.index} not newer than ${this.snap.index}`);
    this.snap = { index: meta.index, term: meta.term, conf: copyConf(meta.conf) };
    this.ents = [];
    this.conf = copyConf(meta.conf);
  }
}

/** Raises a RaftInvariantError with the caller's context (group, node, term). */
export type FailFn = (what: string) => never;

const EMPTY_ENTRIES: Entry[] = [];
Object.freeze(EMPTY_ENTRIES);
export { EMPTY_ENTRIES };

export class RaftLog {
  readonly storage: RaftStorage;
  /** Highest index known committed. */
  committed: number;
  /** Highest index the driver applied (advanced past). */
  applied: number;
  private unstable: Entry[] = [];
  /** Index of unstable[0]; offset - 1 is the last stable (persisted) index. */
  private offset: number;
  /** Last unstable index already handed to the driver by takeUnstable(). */
  private handedOut: number;
  private readonly fail: FailFn;

  constructor(storage: RaftStorage, committed: number, applied: number, fail: FailFn) {
    this.storage = storage;
    this.fail = fail;
    this.offset = storage.lastIndex() + 1;
    this.handedOut = this.offset - 1;
    const first = storage.firstIndex();
    if (committed < first - 1) fail(`commit ${committed} below snapshot ${first - 1}`);
    if (committed > this.offset - 1) fail(`commit ${committed} beyond last index ${this.offset - 1}`);
    if (applied > committed) fail(`applied ${applied} beyond commit ${committed}`);
    if (applied < first - 1) fail(`applied ${applied} below snapshot ${first - 1}`);
    this.committed = committed;
    this.applied = applied;
  }

  firstIndex(): number {
    return this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.offset + this.unstable.length - 1;
  }

  /** Last index persisted by the driver (and not since overwritten in memory). */
  stableIndex(): number {
    return this.offset - 1;
  }

  lastTerm(): number {
    const t = this.termOf(this.lastIndex());
    if (t < 0) this.fail(`no term for last index ${this.lastIndex()}`);
    return t;
  }

  /** Term of `index`, or -1 when it is compacted away or past the end. */
  termOf(index: number): number {
    if (index >= this.offset) {
      const k = index - this.offset;
      return k < this.unstable.length ? this.unstable[k].term : -1;
    }
    if (index < this.storage.firstIndex() - 1) return -1;
    return this.storage.term(index);
  }

  matchTerm(index: number, term: number): boolean {
    const t = this.termOf(index);
    return t >= 0 && t === term;
  }

  /** Raft §5.4.1: is a candidate's log at least as up to date as ours? */
  isUpToDate(lastIndex: number, term: number): boolean {
    const ourTerm = this.lastTerm();
    return term > ourTerm || (term === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Follower: try to append `ents` after (index, logTerm). Returns the index
   * of the last new entry, or -1 when the log does not match at `index`.
   */
  maybeAppend(index: number, logTerm: number, commit: number, ents: readonly Entry[]): number {
    if (!this.matchTerm(index, logTerm)) return -1;
    const lastNew = index + ents.length;
    if (ents.length > 0 && ents[0].index !== index + 1) this.fail(`App entries start at ${ents[0].index}, expected ${index + 1}`);
    const conflict = this.findConflict(ents);
    if (conflict !== 0) {
      if (conflict <= this.committed) this.fail(`entry ${conflict} conflicts with committed log (commit ${this.committed})`);
      this.append(ents, conflict - (index + 1));
    }
    this.commitTo(Math.min(commit, lastNew));
    return lastNew;
  }

  /** First index whose entry is new or differs in term; 0 when all match. */
  findConflict(ents: readonly Entry[]): number {
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i];
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * Largest index <= `index` whose term is <= `term` (or unknown), for fast
   * backtracking. 0 when none.
   */
  findConflictByTerm(index: number, term: number): number {
    for (let i = index; i > 0; i--) {
      const t = this.termOf(i);
      if (t < 0 || t <= term) return i;
    }
    return 0;
  }

  /** Appends ents[from:] (truncating any conflicting unstable/stable suffix). */
  append(ents: readonly Entry[], from = 0): number {
    if (from >= ents.length) return this.lastIndex();
    const after = ents[from].index;
    if (after <= this.committed) this.fail(`append at ${after} would overwrite committed ${this.committed}`);
    if (after > this.lastIndex() + 1) this.fail(`append at ${after} leaves a gap after ${this.lastIndex()}`);
    if (after === this.offset + this.unstable.length) {
      for (let i = from; i < ents.length; i++) this.unstable.push(ents[i]);
    } else if (after <= this.offset) {
      this.offset = after;
      this.unstable = ents.slice(from);
    } else {
      this.unstable.length = after - this.offset;
      for (let i = from; i < ents.length; i++) this.unstable.push(ents[i]);
    }
    if (this.handedOut >= after) this.handedOut = after - 1;
    return this.lastIndex();
  }

  /** Leader fast path: one new entry at lastIndex + 1. */
  appendOne(e: Entry): void {
    if (e.index !== this.lastIndex() + 1) this.fail(`appendOne at ${e.index}, last index ${this.lastIndex()}`);
    if (e.index <= this.committed) this.fail(`appendOne at ${e.index} at or below commit ${this.committed}`);
    this.unstable.push(e);
  }

  /** Entries in [lo, hi), size-limited (at least one), from storage and/or the unstable tail. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo < this.firstIndex()) this.fail(`slice from compacted index ${lo} (first ${this.firstIndex()})`);
    if (hi > this.lastIndex() + 1) this.fail(`slice to ${hi} past last index ${this.lastIndex()}`);
    if (lo >= hi) return [];
    let out: Entry[];
    let bytes = 0;
    if (lo < this.offset) {
      const stableHi = Math.min(hi, this.offset);
      out = this.storage.entries(lo, stableHi, maxBytes);
      if (out.length < stableHi - lo || hi <= this.offset) return out;
      for (let i = 0; i < out.length; i++) bytes += entryBytes(out[i]);
    } else {
      out = [];
    }
    const start = Math.max(lo, this.offset) - this.offset;
    const end = hi - this.offset;
    for (let k = start; k < end; k++) {
      const e = this.unstable[k];
      bytes += entryBytes(e);
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    if (index > this.lastIndex()) this.fail(`commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  hasUnstableToHandOut(): boolean {
    return this.handedOut < this.lastIndex();
  }

  /** Unstable entries not yet handed out; marks them handed out. */
  takeUnstable(): Entry[] {
    const last = this.lastIndex();
    if (this.handedOut >= last) return EMPTY_ENTRIES;
    if (this.handedOut < this.offset - 1) this.fail(`handed-out ${this.handedOut} below offset ${this.offset}`);
    const out = this.unstable.slice(this.handedOut + 1 - this.offset);
    this.handedOut = last;
    return out;
  }

  /** The driver persisted entries up to (index, term). Stale acks (overwritten since) are ignored. */
  stableTo(index: number, term: number): void {
    if (index < this.offset || index > this.lastIndex()) return;
    if (this.unstable[index - this.offset].term !== term) return;
    const n = index - this.offset + 1;
    if (n === this.unstable.length) this.unstable.length = 0;
    else this.unstable.splice(0, n);
    this.offset = index + 1;
    if (this.storage.lastIndex() < index) this.fail(`storage last index ${this.storage.lastIndex()} < persisted ${index}`);
    if (this.storage.term(index) !== term) this.fail(`storage term at ${index} is ${this.storage.term(index)}, expected ${term}`);
  }

  /** Highest index that may be handed out for applying: committed and persisted. */
  applyLimit(): number {
    return Math.min(this.committed, this.offset - 1);
  }

  hasNextCommitted(): boolean {
    return this.applyLimit() > this.applied;
  }

  /** Committed, persisted entries after `applied`, at most maxBytes (at least one). */
  nextCommitted(maxBytes: number): Entry[] {
    const hi = this.applyLimit();
    if (hi <= this.applied) return EMPTY_ENTRIES;
    if (this.applied + 1 < this.storage.firstIndex()) this.fail(`applied ${this.applied} below first index ${this.storage.firstIndex()}`);
    return this.storage.entries(this.applied + 1, hi + 1, maxBytes);
  }

  appliedTo(index: number): void {
    if (index < this.applied) this.fail(`applied regressed from ${this.applied} to ${index}`);
    if (index > this.committed) this.fail(`applied ${index} beyond commit ${this.committed}`);
    this.applied = index;
  }

  /** Whole-log reset to a snapshot the driver installed in storage. */
  restore(meta: SnapshotMeta): void {
    if (this.storage.lastIndex() !== meta.index) this.fail(`storage last index ${this.storage.lastIndex()} != snapshot ${meta.index}`);
    if (this.storage.term(meta.index) !== meta.term) this.fail(`storage term ${this.storage.term(meta.index)} != snapshot term ${meta.term}`);
    if (meta.index < this.committed) this.fail(`snapshot ${meta.index} below commit ${this.committed}`);
    this.unstable = [];
    this.offset = meta.index + 1;
    this.handedOut = meta.index;
    this.committed = meta.index;
    this.applied = meta.index;
  }

  /** The ConfChange entries in [lo, hi], oldest first (scans in bounded pages). */
  confChangesIn(lo: number, hi: number, pageBytes: number): Entry[] {
    const out: Entry[] = [];
    let at = Math.max(lo, this.firstIndex());
    while (at <= hi) {
      const page = this.slice(at, hi + 1, pageBytes);
      for (let i = 0; i < page.length; i++) if (page[i].type === EntryType.ConfChange) out.push(page[i]);
      at += page.length;
    }
    return out;
  }

  /** Test/debug helper: copies [lo, hi) without a size limit. */
  allEntries(lo: number, hi: number): Entry[] {
    return this.slice(lo, hi, NO_LIMIT);
  }
}
