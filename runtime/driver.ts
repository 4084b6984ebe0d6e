// PartitionDriver: the Ready loop for the Raft groups of one storage
// partition, following the contract at the top of raft/core.ts:
//   turn:   gather every dirty group's Ready → ONE RocksDB batch (synced when
//           any Ready must sync: group commit) → append to the in-memory
//           log mirror → advance() → hand committed entries to apply.
//   apply:  load the conversations the entries touch, apply() them in log
//           order into ONE unsynced batch that also records the applied
//           index (so recovery never applies twice), write it, then reply.
// At most one log write and one apply write are in flight per partition;
// whatever arrives meanwhile rides the next one.
import type { Entry, Ready } from './raft/types.js';
import { EntryType, Role } from './raft/types.js';
import { RaftCore } from './raft/core.js';
import { MemoryStorage } from './raft/log.js';
import { ApplyBatch, type PartitionStore } from '../storage/partition-store.js';
import type { BatchOp } from '../storage/rocks.js';
import { logKey } from '../storage/keys.js';
import { apply, type Conversation, type ConversationRecord } from '../actors/conversation.js';
import { commandId, decodeCommand, patchNow } from '../actors/commands.js';
import { AppError, unavailable } from '../actors/errors.js';
import { type Reply, applyReply, errorReply } from './replies.js';
import type { Clock } from './clock.js';
import { assert } from './assert.js';
import { limits } from './limits.js';
import { log } from './log.js';
import { groupOf } from './placement.js';

export type ReplyFn = (reqId: number, reply: Reply) => void;
/** A read served once the group has applied (durably) up to its read index. */
export type ReadFn = (store: PartitionStore, actors: ActorCache) => Promise<Reply>;

interface Pending {
  reqId: number;
  term: number;
}

interface WaitingRead {
  reqId: number;
  run: ReadFn;
  index: number;
}

class Group {
  readonly proposals = new Map<number, Pending>();
  readonly reads = new Map<number, { reqId: number; run: ReadFn }>();
  readonly readsWaiting: WaitingRead[] = [];
  applyQueue: Entry[] = [];
  appliedDurable = 0;
  readSeq = 0;
  /** First index of the current leader term: ready once applied past it. */
  leaderSince = Number.POSITIVE_INFINITY;
  stopped: string | null = null;

  constructor(
    readonly id: number,
    readonly core: RaftCore,
    readonly storage: MemoryStorage,
  ) {}
}

export interface ActorEntry {
  conv: Conversation;
  /** The record as of the last completed apply write: what reads may show. */
  durable: ConversationRecord | null;
}

/** Loaded conversations of one partition, least recently applied first. */
export class ActorCache {
  readonly map = new Map<string, ActorEntry>();

  get(id: string): ActorEntry | undefined {
    return this.map.get(id);
  }

  touch(id: string, entry: ActorEntry): void {
    this.map.delete(id);
    this.map.set(id, entry);
  }

  /** Only called between apply writes, so every evicted state is on disk. */
  evict(max: number): void {
    for (const id of this.map.keys()) {
      if (this.map.size <= max) return;
      this.map.delete(id);
    }
  }
}

export class PartitionDriver {
  readonly groups = new Map<number, Group>();
  readonly actors = new ActorCache();
  private readonly dirty = new Set<Group>();
  private turnScheduled = false;
  private logWriting = false;
  private applying = false;
  private closed = false;

  constructor(
    readonly store: PartitionStore,
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly reply: ReplyFn,
    private readonly random: () => number,
    private readonly actorsMax: number,
  ) {}

  async open(groupIds: number[]): Promise<void> {
    for (const gid of groupIds) {
      const disk = await this.store.loadGroup(gid);
      const conf = { voters: [this.nodeId] };
      const storage = new MemoryStorage({
        conf,
        hardState: disk.hardState,
        snapshot: { index: disk.applied.index, term: disk.applied.term, conf },
        entries: disk.entries,
      });
      const core = new RaftCore({
        id: this.nodeId,
        group: gid,
        storage,
        applied: disk.applied.index,
        electionTicks: 10,
        heartbeatTicks: 1,
        random: this.random,
        preVote: true,
        checkQuorum: true,
        maxMsgBytes: 1 << 20,
        maxInflight: 256,
        maxApplyBytes: limits.applyBytesMax,
      });
      const g = new Group(gid, core, storage);
      g.appliedDurable = disk.applied.index;
      this.groups.set(gid, g);
      core.campaign();
      this.markDirty(g);
    }
  }

  /** Every group leads and has applied an entry of its own term. */
  isReady(): boolean {
    for (const g of this.groups.values()) {
      if (g.stopped !== null || g.appliedDurable < g.leaderSince) return false;
    }
    return true;
  }

  propose(reqId: number, gid: number, cmd: Uint8Array): void {
    const g = this.groupFor(reqId, gid);
    if (!g) return;
    patchNow(cmd, this.clock.nowMs());
    try {
      const index = g.core.propose(cmd);
      g.proposals.set(index, { reqId, term: g.core.currentTerm() });
    } catch (err) {
      this.reply(reqId, errorReply(this.groupError(g, err)));
      return;
    }
    this.markDirty(g);
  }

  read(reqId: number, gid: number, run: ReadFn): void {
    const g = this.groupFor(reqId, gid);
    if (!g) return;
    const ctx = ++g.readSeq;
    g.reads.set(ctx, { reqId, run });
    try {
      g.core.readIndex(ctx);
    } catch (err) {
      g.reads.delete(ctx);
      this.reply(reqId, errorReply(this.groupError(g, err)));
      return;
    }
    this.markDirty(g);
  }

  tick(): void {
    for (const g of this.groups.values()) {
      if (g.stopped !== null) continue;
      g.core.tick();
      if (g.core.hasReady()) this.markDirty(g);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    while (this.logWriting || this.applying) await new Promise((r) => setTimeout(r, 5));
  }

  private groupFor(reqId: number, gid: number): Group | null {
    const g = this.groups.get(gid);
    if (g === undefined) {
      this.reply(reqId, errorReply(unavailable(`group ${gid} is not served by this worker`)));
      return null;
    }
    if (g.stopped !== null) {
      this.reply(reqId, errorReply(unavailable(`group ${gid} is stopped: ${g.stopped}`)));
      return null;
    }
    return g;
  }

  private groupError(g: Group, err: unknown): AppError {
    if (err instanceof AppError) return err;
    if (err instanceof Error && err.name === 'NotLeaderError') return unavailable(`group ${g.id} has no leader yet`);
    this.stopGroup(g, err);
    return unavailable(`group ${g.id} is stopped`);
  }

  /** A violated invariant stops this group only; everything it owes gets an answer. */
  private stopGroup(g: Group, err: unknown): void {
    if (g.stopped !== null) return;
    g.stopped = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    log('error', 'group_stopped', 'group stopped after a failed invariant', {
      group: g.id,
      node: this.nodeId,
      reason: g.stopped,
      stack: err instanceof Error ? err.stack : undefined,
      status: safeStatus(g.core),
    });
    const fail = errorReply(unavailable(`group ${g.id} is stopped`));
    for (const p of g.proposals.values()) this.reply(p.reqId, fail);
    for (const r of g.reads.values()) this.reply(r.reqId, fail);
    for (const r of g.readsWaiting) this.reply(r.reqId, fail);
    g.proposals.clear();
    g.reads.clear();
    g.readsWaiting.length = 0;
    g.applyQueue = [];
    this.dirty.delete(g);
  }

  private markDirty(g: Group): void {
    this.dirty.add(g);
    if (!this.turnScheduled && !this.closed) {
      this.turnScheduled = true;
      setImmediate(() => this.turn());
    }
  }

  private turn(): void {
    this.turnScheduled = false;
    if (this.logWriting || this.dirty.size === 0) return;
    const readies: [Group, Ready][] = [];
    for (const g of this.dirty) {
      if (g.stopped !== null) continue;
      try {
        if (g.core.hasReady()) readies.push([g, g.core.ready()]);
      } catch (err) {
        this.stopGroup(g, err);
      }
    }
    this.dirty.clear();
    if (readies.length === 0) return;
    const ops: BatchOp[] = [];
    let sync = false;
    for (const [g, rd] of readies) {
      this.collect(g, rd, ops);
      sync ||= rd.mustSync;
    }
    this.startApply();
    if (ops.length === 0) {
      this.advanceAll(readies);
      return;
    }
    this.logWriting = true;
    this.store.db.write(ops, sync).then(
      () => {
        this.logWriting = false;
        this.advanceAll(readies);
      },
      (err: unknown) => {
        this.logWriting = false;
        for (const [g] of readies) this.stopGroup(g, err);
      },
    );
  }

  /** Duties 1, 3, 4 and 5 of the Ready contract for one group. */
  private collect(g: Group, rd: Ready, ops: BatchOp[]): void {
    assert(rd.snapshot === null, `group ${g.id}: snapshots need peers; single-voter groups never get one`);
    assert(rd.messages.length === 0, `group ${g.id}: single-voter group produced ${rd.messages.length} messages`);
    if (rd.softState?.role === Role.Leader) g.leaderSince = g.core.status().lastIndex;
    const conf = { voters: [this.nodeId] };
    this.store.logOps(ops, g.id, rd.hardState, conf, rd.entries);
    if (rd.entries.length > 0) {
      // A rewritten suffix (after a leader change) must not leave stale entries behind.
      const newLast = rd.entries[rd.entries.length - 1].index;
      for (let i = newLast + 1; i <= g.storage.lastIndex(); i++) ops.push({ type: 'del', key: logKey(g.id, i) });
    }
    if (rd.committedEntries.length > 0) g.applyQueue.push(...rd.committedEntries);
    for (const rs of rd.readStates) {
      const r = g.reads.get(rs.context);
      if (r === undefined) continue;
      g.reads.delete(rs.context);
      g.readsWaiting.push({ reqId: r.reqId, run: r.run, index: rs.index });
    }
    this.serveReads(g);
  }

  private advanceAll(readies: [Group, Ready][]): void {
    for (const [g, rd] of readies) {
      if (g.stopped !== null) continue;
      try {
        if (rd.hardState) g.storage.setHardState(rd.hardState);
        if (rd.entries.length > 0) g.storage.append(rd.entries);
        g.core.advance(rd);
      } catch (err) {
        this.stopGroup(g, err);
        continue;
      }
      this.markDirty(g);
    }
  }

  private startApply(): void {
    if (this.applying) return;
    this.applying = true;
    this.applyLoop().then(
      () => {
        this.applying = false;
      },
      (err: unknown) => {
        this.applying = false;
        log('error', 'apply_failed', 'apply write failed', { partition: this.store.partition, err: String(err) });
      },
    );
  }

  private async applyLoop(): Promise<void> {
    for (;;) {
      const work = [...this.groups.values()].filter((g) => g.applyQueue.length > 0 && g.stopped === null);
      if (work.length === 0) return;
      await this.prefetch(work);
      const batch = new ApplyBatch();
      const replies: [number, Reply][] = [];
      const touched = new Set<ActorEntry>();
      const appliedTo = new Map<Group, number>();
      for (const g of work) {
        const entries = g.applyQueue;
        g.applyQueue = [];
        try {
          appliedTo.set(g, this.applyEntries(g, entries, batch, replies, touched));
        } catch (err) {
          this.stopGroup(g, err);
        }
      }
      try {
        await this.store.db.write(batch.ops, false);
      } catch (err) {
        for (const g of work) this.stopGroup(g, err);
        return;
      }
      for (const a of touched) a.durable = a.conv.record;
      for (const [reqId, r] of replies) this.reply(reqId, r);
      for (const [g, index] of appliedTo) {
        g.appliedDurable = index;
        g.storage.compact(index);
        this.serveReads(g);
      }
      this.actors.evict(this.actorsMax);
    }
  }

  /** Loads every conversation the queued entries touch that is not in memory yet. */
  private async prefetch(work: Group[]): Promise<void> {
    const missing = new Map<string, number>();
    for (const g of work) {
      for (const e of g.applyQueue) {
        if (e.type !== EntryType.Normal || e.data.length === 0) continue;
        const id = commandId(e.data);
        if (this.actors.get(id) === undefined) missing.set(id, g.id);
      }
    }
    await Promise.all(
      [...missing].map(async ([id, gid]) => {
        const conv = await this.store.loadConversation(gid, id);
        this.actors.touch(id, { conv, durable: conv.record });
      }),
    );
  }

  private applyEntries(g: Group, entries: Entry[], batch: ApplyBatch, replies: [number, Reply][], touched: Set<ActorEntry>): number {
    assert(entries[0].index === g.storage.firstIndex(), `group ${g.id}: apply gap before ${entries[0].index}`);
    batch.group = g.id;
    let last = entries[0].index - 1;
    let lastTerm = 0;
    for (const e of entries) {
      assert(e.index === last + 1, `group ${g.id}: applying ${e.index} after ${last}`);
      if (e.type === EntryType.Normal && e.data.length > 0) {
        const cmd = decodeCommand(e.data);
        assert(groupOf(cmd.id) === g.id, `group ${g.id}: entry ${e.index} is for ${cmd.id} of group ${groupOf(cmd.id)}`);
        const actor = this.actors.get(cmd.id);
        assert(actor !== undefined, `group ${g.id}: conversation ${cmd.id} not loaded before apply`);
        const result = apply(actor.conv, cmd, batch);
        this.actors.touch(cmd.id, actor);
        touched.add(actor);
        const p = g.proposals.get(e.index);
        if (p !== undefined) {
          g.proposals.delete(e.index);
          const r = p.term === e.term ? applyReply(result) : errorReply(unavailable('leadership changed; retry'));
          replies.push([p.reqId, r]);
        }
      }
      batch.deleteLogEntry(g.id, e.index);
      last = e.index;
      lastTerm = e.term;
    }
    batch.setApplied(g.id, last, lastTerm);
    return last;
  }

  private serveReads(g: Group): void {
    if (g.readsWaiting.length === 0) return;
    const keep: WaitingRead[] = [];
    for (const r of g.readsWaiting) {
      if (r.index > g.appliedDurable) {
        keep.push(r);
        continue;
      }
      r.run(this.store, this.actors).then(
        (reply) => this.reply(r.reqId, reply),
        (err: unknown) => {
          log('error', 'read_failed', 'read failed', { group: g.id, err: String(err) });
          this.reply(r.reqId, errorReply(err));
        },
      );
    }
    g.readsWaiting.length = 0;
    g.readsWaiting.push(...keep);
  }
}

function safeStatus(core: RaftCore): unknown {
  try {
    return core.status();
  } catch {
    return null;
  }
}
