// PartitionDriver: the Ready loop for the Raft groups of one storage
// partition, following the contract at the top of raft/core.ts:
//   turn:   gather every dirty group's Ready → ONE RocksDB batch (synced when
//           any Ready must sync: group commit) that also carries the state
//           applied since the last write → append to the in-memory log
//           mirror → advance() → hand committed entries to apply.
//   apply:  load the conversations the entries touch, apply() them in log
//           order in memory, answer the proposals, and queue the resulting
//           state (with the applied index, so recovery never applies twice)
//           for the next turn's write.
// At most one write is in flight per partition; whatever arrives meanwhile
// rides the next one.
import type { Entry, Ready } from './raft/types.js';
import { EntryType, Role } from './raft/types.js';
import { RaftCore } from './raft/core.js';
import { MemoryStorage } from './raft/log.js';
import { ApplyBatch, type PartitionStore } from '../storage/partition-store.js';
import type { BatchOp } from '../storage/rocks.js';
import { logKey } from '../storage/keys.js';
import { apply, type IdemRecord, type ConversationRecord, type WriteSink } from '../actors/conversation.js';
import { ActorCache, type ActorEntry } from './actor-cache.js';
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

/** Writes of applied entries waiting for their (unsynced) RocksDB write. */
interface PendingWrite {
  batch: ApplyBatch;
  /** Conversation → last seq it had when the batch was built. */
  touched: Map<ActorEntry, number>;
}

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
  /** Applied in memory: what reads see. */
  applied = 0;
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

export class PartitionDriver {
  readonly groups = new Map<number, Group>();
  readonly actors: ActorCache;
  private readonly dirty = new Set<Group>();
  private turnScheduled = false;
  private writing = false;
  private applying = false;
  private readonly stateWrites: PendingWrite[] = [];
  private closed = false;

  constructor(
    readonly store: PartitionStore,
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly reply: ReplyFn,
    private readonly random: () => number,
    actorsMax: number,
    cacheBytesMax: number,
  ) {
    this.actors = new ActorCache(actorsMax, cacheBytesMax);
  }

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
      g.applied = disk.applied.index;
      this.groups.set(gid, g);
      core.campaign();
      this.markDirty(g);
    }
  }

  /** Every group leads and has applied an entry of its own term. */
  isReady(): boolean {
    for (const g of this.groups.values()) {
      if (g.stopped !== null || g.applied < g.leaderSince) return false;
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
    while (this.writing || this.applying || this.stateWrites.length > 0) {
      this.scheduleTurn();
      await new Promise((r) => setTimeout(r, 5));
    }
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
    if (!this.closed) this.scheduleTurn();
  }

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(() => this.turn());
  }

  /**
   * One RocksDB write per turn, one in flight: every dirty group's Ready
   * (entries, hard state) plus all state applied since the last write.
   * Applied state needs no sync of its own — the log it came from is durable —
   * so it rides along instead of queueing a second write behind the fsync.
   */
  private turn(): void {
    this.turnScheduled = false;
    if (this.writing) return;
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
    const ops: BatchOp[] = [];
    let sync = false;
    for (const [g, rd] of readies) {
      this.collect(g, rd, ops);
      sync ||= rd.mustSync;
    }
    this.startApply();
    const states = this.stateWrites.splice(0);
    for (const w of states) for (const op of w.batch.ops) ops.push(op);
    if (ops.length === 0) {
      this.advanceAll(readies);
      return;
    }
    this.writing = true;
    this.store.db.write(ops, sync).then(
      () => {
        this.writing = false;
        for (const w of states) for (const [a, seq] of w.touched) this.actors.persisted(a, seq);
        this.actors.evict();
        this.advanceAll(readies);
        if (this.stateWrites.length > 0) this.scheduleTurn();
      },
      (err: unknown) => {
        this.writing = false;
        // State that cannot be written cannot be trusted: stop every group it covers.
        const failed = states.length > 0 ? [...this.groups.values()] : readies.map(([g]) => g);
        for (const g of failed) this.stopGroup(g, err);
      },
    );
  }

  /** Duties 1, 3, 4 and 5 of the Ready contract for one group. */
  private collect(g: Group, rd: Ready, ops: BatchOp[]): void {
    assert(rd.snapshot === null, `group ${g.id}: snapshots need peers; single-voter groups never get one`);
    assert(rd.messages.length === 0, `group ${g.id}: single-voter group produced ${rd.messages.length} messages`);
    if (rd.softState?.role === Role.Leader) g.leaderSince = g.core.status().lastIndex;
    const conf = { voters: [this.nodeId] };
    // Commit-only changes are not written: on restart commit = max(stored, applied) and
    // a single voter re-commits the rest. Term and vote always are (mustSync).
    this.store.logOps(ops, g.id, rd.mustSync ? rd.hardState : null, conf, rd.entries);
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

  /**
   * Applies committed entries in memory and answers their proposals at once;
   * the resulting state is queued for the next write (turn). Only
   * loading conversations from disk makes this wait.
   */
  private async applyLoop(): Promise<void> {
    for (;;) {
      const work = [...this.groups.values()].filter((g) => g.applyQueue.length > 0 && g.stopped === null);
      if (work.length === 0) return;
      await this.prefetch(work);
      const pending: PendingWrite = { batch: new ApplyBatch(), touched: new Map() };
      const replies: [number, Reply][] = [];
      for (const g of work) {
        const entries = g.applyQueue;
        g.applyQueue = [];
        const opsBefore = pending.batch.ops.length;
        try {
          g.applied = this.applyEntries(g, entries, pending, replies);
          g.storage.compact(g.applied);
        } catch (err) {
          pending.batch.ops.length = opsBefore; // nothing of a failed group reaches disk
          this.stopGroup(g, err);
        }
      }
      for (const a of pending.touched.keys()) a.writesPending++;
      this.stateWrites.push(pending);
      this.scheduleTurn();
      for (const [reqId, r] of replies) this.reply(reqId, r);
      for (const g of work) this.serveReads(g);
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
    if (missing.size === 0) return;
    const loaded = await Promise.all([...missing].map(async ([id, gid]) => [id, await this.store.loadConversation(gid, id)] as const));
    for (const [id, conv] of loaded) if (this.actors.get(id) === undefined) this.actors.add(id, conv);
  }

  private applyEntries(g: Group, entries: Entry[], pending: PendingWrite, replies: [number, Reply][]): number {
    assert(entries[0].index === g.applied + 1, `group ${g.id}: applying ${entries[0].index} after ${g.applied}`);
    const batch = pending.batch;
    batch.group = g.id;
    let last = g.applied;
    let lastTerm = 0;
    for (const e of entries) {
      assert(e.index === last + 1, `group ${g.id}: applying ${e.index} after ${last}`);
      if (e.type === EntryType.Normal && e.data.length > 0) {
        const cmd = decodeCommand(e.data);
        assert(groupOf(cmd.id) === g.id, `group ${g.id}: entry ${e.index} is for ${cmd.id} of group ${groupOf(cmd.id)}`);
        const actor = this.actors.get(cmd.id);
        assert(actor !== undefined, `group ${g.id}: conversation ${cmd.id} not loaded before apply`);
        const result = apply(actor.conv, cmd, new CachingSink(batch, this.actors, actor));
        this.actors.touch(cmd.id, actor);
        pending.touched.set(actor, actor.conv.record?.last_seq ?? 0);
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
      if (r.index > g.applied) {
        keep.push(r);
        continue;
      }
      r.run(this.store, this.actors).then(
        (reply) => this.reply(r.reqId, reply),
        (err: unknown) => {
          if (!(err instanceof AppError)) log('error', 'read_failed', 'read failed', { group: g.id, err: String(err) });
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

/** Sends apply's writes to the batch and keeps new messages in the cache until persisted. */
class CachingSink implements WriteSink {
  constructor(
    private readonly batch: ApplyBatch,
    private readonly actors: ActorCache,
    private readonly actor: ActorEntry,
  ) {}
  putRecord(rec: ConversationRecord): void {
    this.batch.putRecord(rec);
  }
  putMessage(id: string, seq: number, recordJson: string): void {
    this.batch.putMessage(id, seq, recordJson);
    this.actors.noteMessage(this.actor, seq, recordJson);
  }
  putIdem(id: string, key: string, rec: IdemRecord): void {
    this.batch.putIdem(id, key, rec);
  }
  delIdem(id: string, key: string): void {
    this.batch.delIdem(id, key);
  }
}
