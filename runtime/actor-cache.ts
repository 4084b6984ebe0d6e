// Conversations loaded in a partition's memory: the state apply() works on,
// plus the newest message records for tail reads. Replies go out as soon as
// an entry is applied in memory (the Raft log already holds it durably); the
// state reaches RocksDB in a later, unsynced write. So this cache must hold
// everything not written yet: a message leaves `recent` only once persisted,
// and a conversation is evicted only with no write pending.
import type { Conversation } from '../actors/conversation.js';
import { assert } from './assert.js';

export interface ActorEntry {
  conv: Conversation;
  /** Newest message record texts; recent[i] has seq recentLo + i. */
  recent: string[];
  recentLo: number;
  recentBytes: number;
  /** Highest seq whose apply write has completed. */
  persistedSeq: number;
  /** Apply writes that touch this conversation and have not completed. */
  writesPending: number;
  /** Persisted messages to keep in `recent` beyond the default (a context's window). */
  keepRecent: number;
}

/** Messages kept per conversation once persisted (tail pages default to 100). */
const RECENT_PER_CONVERSATION = 256;

export class ActorCache {
  private readonly map = new Map<string, ActorEntry>();
  private bytes = 0;
  /** Conversations evicted so far: a load that overlapped an eviction may be stale. */
  evictions = 0;

  constructor(
    private readonly actorsMax: number,
    private readonly bytesMax: number,
  ) {}

  get(id: string): ActorEntry | undefined {
    return this.map.get(id);
  }

  /** A conversation just read from disk: everything it has is persisted. */
  add(id: string, conv: Conversation): ActorEntry {
    assert(!this.map.has(id), `conversation ${id} loaded twice`);
    const last = conv.record?.last_seq ?? 0;
    const e: ActorEntry = { conv, recent: [], recentLo: last + 1, recentBytes: 0, persistedSeq: last, writesPending: 0, keepRecent: 0 };
    this.map.set(id, e);
    return e;
  }

  /** Most recently applied last, so eviction finds cold conversations first. */
  touch(id: string, e: ActorEntry): void {
    this.map.delete(id);
    this.map.set(id, e);
  }

  noteMessage(e: ActorEntry, seq: number, recordJson: string): void {
    assert(seq === e.recentLo + e.recent.length, `message ${seq} is not next after ${e.recentLo + e.recent.length - 1}`);
    e.recent.push(recordJson);
    e.recentBytes += recordJson.length;
    this.bytes += recordJson.length;
  }

  /** An apply write covering this conversation up to `seq` completed. */
  persisted(e: ActorEntry, seq: number): void {
    assert(e.writesPending > 0, 'persisted without a pending write');
    e.writesPending--;
    if (seq > e.persistedSeq) e.persistedSeq = seq;
    this.trim(e, Math.max(RECENT_PER_CONVERSATION, e.keepRecent));
  }

  /** Messages up to `seq` left the hot tier (archived and trimmed): reads of them go to the archive. */
  dropThrough(e: ActorEntry, seq: number): void {
    const drop = Math.min(e.recent.length, seq - e.recentLo + 1);
    if (drop <= 0) return;
    let bytes = 0;
    for (let i = 0; i < drop; i++) bytes += e.recent[i].length;
    e.recent.splice(0, drop);
    e.recentLo += drop;
    e.recentBytes -= bytes;
    this.bytes -= bytes;
  }

  /**
   * Older messages read from disk, `texts[i]` with seq lo + i, ending right
   * before `recent`: kept so the next read of them needs no disk.
   */
  prepend(e: ActorEntry, lo: number, texts: string[]): void {
    if (texts.length === 0 || lo + texts.length !== e.recentLo) return;
    let bytes = 0;
    for (const t of texts) bytes += t.length;
    e.recent = texts.concat(e.recent);
    e.recentLo = lo;
    e.recentBytes += bytes;
    this.bytes += bytes;
  }

  /** Drops persisted messages beyond `keep` from the front of `recent`. */
  private trim(e: ActorEntry, keep: number): void {
    let drop = 0;
    let bytes = 0;
    while (e.recent.length - drop > keep && e.recentLo + drop <= e.persistedSeq) {
      bytes += e.recent[drop].length;
      drop++;
    }
    if (drop === 0) return;
    e.recent.splice(0, drop);
    e.recentLo += drop;
    e.recentBytes -= bytes;
    this.bytes -= bytes;
  }

  /** Message texts with lo <= seq <= hi held in memory; `from` is the first seq returned. */
  cached(e: ActorEntry, lo: number, hi: number): { from: number; texts: string[] } {
    const from = Math.max(lo, e.recentLo);
    if (hi < from) return { from, texts: [] };
    return { from, texts: e.recent.slice(from - e.recentLo, hi - e.recentLo + 1) };
  }

  /** Forgets the conversations `which` selects (their state was replaced on disk: a snapshot). */
  dropWhere(which: (id: string) => boolean): void {
    for (const [id, e] of this.map) {
      if (!which(id)) continue;
      assert(e.writesPending === 0, `conversation ${id} dropped with ${e.writesPending} writes pending`);
      this.map.delete(id);
      this.evictions++;
      this.bytes -= e.recentBytes;
    }
  }

  /**
   * Over the byte bound, drops persisted messages of the coldest conversations
   * first (their state stays loaded: reloading it costs disk reads on the next
   * append); over the count bound, evicts cold conversations with no write pending.
   */
  evict(): void {
    if (this.bytes > this.bytesMax) {
      for (const e of this.map.values()) {
        if (this.bytes <= this.bytesMax) break;
        this.trim(e, 0);
      }
    }
    if (this.map.size <= this.actorsMax) return;
    for (const [id, e] of this.map) {
      if (this.map.size <= this.actorsMax) return;
      if (e.writesPending > 0) continue;
      this.map.delete(id);
      this.evictions++;
      this.bytes -= e.recentBytes;
    }
  }
}
