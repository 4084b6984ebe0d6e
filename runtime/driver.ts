// PartitionDriver: the Ready loop for the Raft groups of one storage
// partition, following the contract at the top of raft/core.ts:
//   turn:   gather every dirty group's Ready → ONE WAL write + fdatasync
//           (group commit), and in parallel ONE unsynced RocksDB batch with
//           the state applied since the last turn → append to the in-memory
//           log mirror → advance() → hand committed entries to apply.
//   apply:  load the conversations the entries touch, apply() them in log
//           order in memory, answer the proposals, and queue the resulting
//           state (each record stamped with the index of the entry that
//           wrote it) for the next turn's write.
//   checkpoint: a synced RocksDB write records each group's applied index
//           whose state is written, making it durable; WAL segments holding
//           only entries at or below it are then recycled. Recovery replays
//           the log above it and skips the entries a record already has.
// At most one turn's writes are in flight per partition; whatever arrives
// meanwhile rides the next turn. In a cluster a turn's messages go to peers
// through `links`: a leader's appends and heartbeats at once, everything else
// (acks, votes) only once the turn's WAL write is durable.
import type { Entry, HardState, Message, Ready } from './raft/types.js';
import { EntryType, MessageType, Role } from './raft/types.js';
import { RaftCore } from './raft/core.js';
import { MemoryStorage } from './raft/log.js';
import { ApplyBatch, type PartitionStore, appliedPut } from '../storage/partition-store.js';
import type { BatchOp } from '../storage/rocks.js';
import { Wal } from '../storage/wal.js';
import { apply, type Compactions, type IdemRecord, type ConversationRecord, type WriteSink } from '../actors/conversation.js';
import { ActorCache, type ActorEntry } from './actor-cache.js';
import { Op, commandId, decodeCommand, patchNow, type Command } from '../actors/commands.js';
import type { ApplyResult } from '../actors/conversation.js';
import { type StreamEvent, compactionEvent, messageEvent, tombstoneEvent } from '../actors/events.js';
import { AppError, notLeader, overloaded, unavailable } from '../actors/errors.js';
import { type Reply, ReplyKind, applyReply, errorReply } from './replies.js';
import type { Clock } from './clock.js';
import { assert } from './assert.js';
import { limits, walBatchBytesMax } from './limits.js';
import { log } from './log.js';
import { groupOf } from './placement.js';
import { campaignDelayTicks, isNewerReplica, isPreferredLeader, lags, needsSerial, nodeOf, removedBy, withSerial } from './membership.js';
import type { Applied, ReplicaRecord } from '../storage/partition-store.js';
import { decodeConfState, sameVoters } from './raft/conf.js';
import { groupKeys, installGroupSnapshot, readGroupSnapshot } from '../storage/group-snapshot.js';
import { QUIESCE_TYPE } from './raft/codec.js';
import { QUIESCE_AFTER_TICKS, followerMayQuiesce, leaderIdle, quiesceMessage } from './quiesce.js';

export type ReplyFn = (reqId: number, reply: Reply) => void;

/** Where committed changes of conversations someone streams go (runtime/worker.ts). */
export interface EventSink {
  /** `leading`: the applying replica leads the group (only a leader's events are published). */
  has(id: string, leading: boolean): boolean;
  emit(ev: StreamEvent, leading: boolean): void;
  /**
   * The `context` event of the context's current record. Its used_tokens is
   * the policy's answer (SPEC §4), which may need a window read; the
   * conversation's later events wait for it.
   */
  emitContext(store: PartitionStore, actors: ActorCache, group: number, actor: ActorEntry, leading: boolean): void;
}
/** How a partition's groups reach the rest of the cluster (a single node has no peers). */
export interface RaftLinks {
  /** The group's founding voters (its conf as of index 0). */
  voters(group: number): string[];
  /** A replica id of this node's incarnation (the driver also checks it was never retired here). */
  mayHost(replica: string): boolean;
  /** Sends a message to a peer node (batched per peer by the caller). */
  send(m: Message): void;
  /**
   * The group's known leader or voters changed (leader '' while there is
   * none); `hosted` false: the replica here was retired.
   */
  leaderChanged(group: number, leader: string, term: number, voters: readonly string[], hosted: boolean): void;
  /**
   * Committed entries kept in memory behind the applied index, so a follower
   * that fell a little behind catches up from the log (0 on a single node).
   */
  retainEntries: number;
  /**
   * Sends what is queued for the main thread (replies, events, messages)
   * now: an apply round calls it so that replies do not wait for the turn
   * to issue its writes.
   */
  flush(): void;
}

/** A read served once the group has applied (durably) up to its read index. */
export type ReadFn = (store: PartitionStore, actors: ActorCache) => Promise<Reply>;

/** Writes of applied entries waiting for their (unsynced) RocksDB write. */
interface PendingWrite {
  batch: ApplyBatch;
  /** Conversation → last seq it had when the batch was built. */
  touched: Map<ActorEntry, number>;
  /** Group → applied index (term, voters) the batch's state reaches. */
  applied: Map<Group, Applied>;
}

/** Election timeout in ticks (randomized to [1, 2) × this). */
const ELECTION_TICKS = 10;
/**
 * A leader heartbeats every third tick (and, the tick after a commit, each
 * follower not yet told it). Every tick, awake groups' heartbeats were about
 * half of a busy cluster's Raft messages (256 groups × 2 followers × 10/s,
 * each answered). Failover does not wait for them: a dead node is noticed
 * by the node-pair keepalives (runtime/cluster.ts).
 */
const HEARTBEAT_TICKS = 3;


/** How often applied state is made durable so WAL segments can be recycled. */
const CHECKPOINT_MS = 1000;

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
  appliedTerm = 0;
  /** Applied index whose state write has completed (not necessarily synced). */
  appliedWritten: Applied = { index: 0, term: 0 };
  /** Applied index as last written to RocksDB (by a checkpoint, a conf change or a snapshot). */
  appliedStored = 0;
  /**
   * Last log index recovered from the WAL at open: only entries up to it
   * may already be in a record (applied before a crash, after the stored
   * applied index).
   */
  replayThrough = 0;
  readSeq = 0;
  /** First index of the current leader term: ready once applied past it. */
  leaderSince = Number.POSITIVE_INFINITY;
  /** Leader as last reported (links.leaderChanged). */
  leader = '';
  stopped: string | null = null;
  /**
   * Quiesced: an idle group whose timers stop (no heartbeats, no election
   * timeout) until a message, a proposal or a read arrives, or the leader's
   * node stops answering (peersDown).
   */
  quiesced = false;
  idleTicks = 0;
  /**
   * Follower: states leaders streamed with Snap messages, by snapshot index,
   * until a Ready takes one (a later or duplicated Snap must not replace the
   * one the core is about to want).
   */
  readonly snapshotData = new Map<number, Uint8Array>();

  constructor(
    readonly id: number,
    /** This node's replica of the group (runtime/membership.ts). */
    readonly self: string,
    readonly core: RaftCore,
    readonly storage: MemoryStorage,
    /** As of the applied index (the core's are the newest in its log). */
    public voters: readonly string[],
  ) {}

  /** Not (yet) a voter in its own view: a replica added later that awaits the leader's state. */
  get joining(): boolean {
    return !this.voters.includes(this.self);
  }
}

export class PartitionDriver {
  readonly groups = new Map<number, Group>();
  readonly actors: ActorCache;
  private readonly dirty = new Set<Group>();
  private turnScheduled = false;
  private writing = false;
  private applying = false;
  private checkpointing = false;
  /** Bytes proposed since the last turn collected its Readies. */
  private unwrittenBytes = 0;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private wal!: Wal;
  private readonly stateWrites: PendingWrite[] = [];
  /** PendingWrites queued so far, and how many of them are in RocksDB (they are written in order). */
  private stateQueued = 0;
  private stateWrittenCount = 0;
  private stateWaiters: { upTo: number; resolve: () => void; reject: (err: unknown) => void }[] = [];
  /** Messages of this turn that may leave only once its writes are durable. */
  private afterWrite: Message[] = [];
  /** Set while a snapshot is read or installed: no turn runs, so the partition's state holds still. */
  private exclusiveRunning: Promise<void> | null = null;
  /** `group/follower` pairs a snapshot is being sent to. */
  private readonly snapshotsSending = new Set<string>();
  private closed = false;
  /** Groups whose new replica is being recorded (startReplica). */
  private readonly creating = new Set<number>();
  /** Per group, the last replica retired here: none at or below it starts again. */
  private readonly retired = new Map<number, string>();
  /** Groups whose replica here was removed from their voters: retired after the apply round. */
  private readonly retiring = new Set<Group>();

  constructor(
    readonly store: PartitionStore,
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly reply: ReplyFn,
    private readonly random: () => number,
    actorsMax: number,
    cacheBytesMax: number,
    private readonly walSegmentBytes: number,
    private readonly onGroupStopped: (group: number, reason: string) => void,
    private readonly events: EventSink,
    private readonly links: RaftLinks,
  ) {
    this.actors = new ActorCache(actorsMax, cacheBytesMax);
  }

  /**
   * Opens the partition's groups (`replicas`: group → this node's replica
   * id). Resolves to why the storage is damaged (a WAL record lost in the
   * middle of the log: acknowledged entries may be gone), or null.
   */
  async open(replicas: ReadonlyMap<number, string>, records: ReadonlyMap<number, ReplicaRecord>, walDir: string): Promise<string | null> {
    for (const [gid, r] of records) if (r.retired !== null) this.retired.set(gid, r.retired);
    const groupIds = [...replicas.keys()];
    const applied = new Map<number, Applied>();
    for (const gid of groupIds) applied.set(gid, await this.store.loadApplied(gid));
    const { wal, groups: recovered } = await Wal.open(
      { dir: walDir, segmentBytes: this.walSegmentBytes },
      // A group not hosted here left only a retired replica's records: none of them is needed.
      (gid) => applied.get(gid)?.index ?? Number.POSITIVE_INFINITY,
    );
    this.wal = wal;
    const rec = wal.recovery;
    if (rec.stop !== null) {
      // A torn last write after a crash ends the log early too; valid segments after the stop point mean damage.
      log(rec.validAfterDamage > 0 ? 'warn' : 'info', 'wal_recovered', 'write-ahead log recovery stopped early (a torn last write, or damage); records after that point were dropped', {
        partition: this.store.partition,
        segment: rec.stop.seq,
        offset: rec.stop.offset,
        reason: rec.stop.reason,
        dropped_records: rec.droppedRecords,
        dropped_segments: rec.droppedSegments,
      });
    }
    for (const gid of groupIds) {
      const rec = recovered.get(gid);
      this.addGroup(gid, replicas.get(gid)!, applied.get(gid)!, rec?.hardState ?? { term: 0, vote: '', commit: 0 }, rec?.entries ?? []);
    }
    this.checkpointTimer = setInterval(() => void this.checkpoint(), CHECKPOINT_MS);
    this.checkpointTimer.unref();
    return rec.validAfterDamage > 0
      ? `write-ahead log damaged in segment ${rec.stop!.seq} at ${rec.stop!.offset} (${rec.stop!.reason}): ${rec.validAfterDamage} valid records after it`
      : null;
  }

  private addGroup(gid: number, self: string, ap: Applied, hardState: HardState, entries: Entry[]): Group {
    const voters = ap.voters ?? this.links.voters(gid);
    const conf = { voters: [...voters] };
    const storage = new MemoryStorage({ conf, hardState, snapshot: { index: ap.index, term: ap.term, conf }, entries });
    const core = new RaftCore({
      id: self,
      group: gid,
      storage,
      applied: ap.index,
      electionTicks: ELECTION_TICKS,
      heartbeatTicks: HEARTBEAT_TICKS,
      random: this.random,
      preVote: true,
      checkQuorum: true,
      maxMsgBytes: 1 << 20,
      maxInflight: 256,
      maxApplyBytes: limits.applyBytesMax,
    });
    const g = new Group(gid, self, core, storage, voters);
    g.applied = g.appliedStored = ap.index;
    g.appliedTerm = ap.term;
    g.appliedWritten = { index: ap.index, term: ap.term, voters: [...voters] };
    g.replayThrough = entries.length > 0 ? entries[entries.length - 1].index : ap.index;
    this.groups.set(gid, g);
    // A single voter leads at once. In a fresh replicated group the replica
    // the placement prefers as leader campaigns first (the coordinator would
    // move leadership there anyway); the others elect on their timers.
    if ((voters.length === 1 && voters[0] === self) || (hardState.term === 0 && isPreferredLeader(gid, self, voters))) core.campaign();
    this.markDirty(g);
    return g;
  }

  /**
   * A leader wrote to a replica of this node that does not exist yet (the
   * coordinator added it): it is recorded (synced) and starts empty, with
   * the founding conf, not a voter in its own view until the leader's
   * snapshot or log says so. The first message is dropped; the leader resends.
   */
  private startReplica(gid: number, replica: string): void {
    if (this.creating.has(gid)) return;
    this.creating.add(gid);
    this.exclusive(async () => {
      if (this.groups.has(gid) || this.closed) return;
      // A retired replica's log and hard state may still be in the WAL: this one starts from
      // nothing, durably so before it is recorded (a restart must not hand it the old log).
      this.wal.resetGroup(gid);
      await this.wal.write();
      await this.store.saveReplica(gid, { replica, retired: this.retired.get(gid) ?? null });
      this.addGroup(gid, replica, { index: 0, term: 0 }, { term: 0, vote: '', commit: 0 }, []);
      log('info', 'replica_started', 'started a new replica the group leader writes to', { group: gid, replica });
    })
      .catch((err: unknown) => log('error', 'replica_start_failed', 'could not record a new replica', { group: gid, replica, err: String(err) }))
      .finally(() => this.creating.delete(gid));
  }

  /** This node leads the group now (only a leader archives its conversations). */
  leads(gid: number): boolean {
    const g = this.groups.get(gid);
    return g !== undefined && g.stopped === null && g.leader === g.self;
  }

  /**
   * This node leads the group and has applied every entry of earlier terms
   * (an entry of its own term too): its stored state holds all that any
   * leader acknowledged, so a listing may answer for the group.
   */
  leadsCaughtUp(gid: number): boolean {
    const g = this.groups.get(gid);
    return g !== undefined && g.stopped === null && g.leader === g.self && g.applied >= g.leaderSince;
  }

  /** Every group has a leader, and the groups this node leads have applied an entry of their term. */
  isReady(): boolean {
    for (const g of this.groups.values()) {
      if (g.stopped !== null || g.leader === '') return false;
      if (g.leader === g.self && g.applied < g.leaderSince) return false;
    }
    return true;
  }

  /** Restates every group's leader (a report lost while the main thread was starting heals within a second). */
  announceLeaders(): void {
    for (const g of this.groups.values()) if (g.stopped === null) this.links.leaderChanged(g.id, g.leader, g.core.currentTerm(), g.voters, true);
  }

  /**
   * A message from a peer replica. The transport admits only trusted nodes,
   * each speaking for its own replicas; the group's voters are not checked
   * here: a replica's view of them is as of its applied index, and a voter
   * that has not applied a change yet must still hear the replica it added
   * (as leader, or as a candidate). Stale messages are the core's terms' job.
   */
  step(m: Message): boolean {
    const g = this.groups.get(m.group);
    if (g === undefined) {
      if (this.isNewReplica(m, this.retired.get(m.group) ?? null)) this.startReplica(m.group, m.to);
      return false;
    }
    if (g.stopped !== null || m.from === g.self) return false;
    if (m.to !== g.self) {
      // The coordinator adds a replica only where the group has none, so the
      // one here was removed while this node was away. It goes.
      if (this.isNewReplica(m, g.self)) void this.retire(g);
      return false;
    }
    if (m.type === QUIESCE_TYPE) {
      if (followerMayQuiesce(g.core.status(), m)) g.quiesced = true;
      return true;
    }
    // Heartbeats are keepalive traffic: they wake nothing (a leader's last
    // heartbeat may arrive after its quiesce message, its answers after it slept).
    if (m.type !== MessageType.Heartbeat && m.type !== MessageType.HeartbeatResp) this.wake(g);
    if (m.type === MessageType.Snap) {
      // The state rides as one pseudo-entry; the core sees only the meta.
      if (m.entries.length !== 1 || m.snapshot === null || m.entries[0].index !== m.snapshot.index) return false;
      g.snapshotData.set(m.snapshot.index, m.entries[0].data);
      m = { ...m, entries: [] };
    }
    try {
      g.core.step(m);
    } catch (err) {
      this.stopGroup(g, err);
      return false;
    }
    this.markDirty(g);
    return true;
  }

  propose(reqId: number, gid: number, cmd: Uint8Array): void {
    const g = this.groupFor(reqId, gid);
    if (!g) return;
    // Bounds the next WAL write (a batch must fit one segment) and the memory
    // of a burst: past it the client is told to back off, nothing is lost.
    if (this.unwrittenBytes + cmd.byteLength > walBatchBytesMax(this.walSegmentBytes)) {
      this.reply(reqId, errorReply(overloaded('log write queue is full')));
      return;
    }
    patchNow(cmd, this.clock.nowMs());
    this.wake(g);
    try {
      const index = g.core.propose(cmd);
      this.unwrittenBytes += cmd.byteLength;
      g.proposals.set(index, { reqId, term: g.core.currentTerm() });
    } catch (err) {
      // Leadership is moving (transferLeader): nothing was appended; the router retries at the next leader.
      const moving = err instanceof Error && err.name === 'ProposalDroppedError';
      this.reply(reqId, errorReply(moving ? notLeader(`group ${gid}: ${err.message}`) : this.groupError(g, err)));
      return;
    }
    this.markDirty(g);
  }

  /** A leader writes to a replica of this node newer than `than` (the one here, or the last retired): the coordinator added it. */
  private isNewReplica(m: Message, than: string | null): boolean {
    return isFromLeader(m) && this.links.mayHost(m.to) && isNewerReplica(m.to, than);
  }

  /**
   * The coordinator's single-server membership change (the group's whole new
   * voter set), if the voters are still `from` (its view may be old).
   * Answered once proposed: the coordinator watches the voters.
   */
  changeConf(reqId: number, gid: number, from: string[], voters: string[]): void {
    const g = this.groupFor(reqId, gid);
    if (!g) return;
    if (!sameVoters(g.voters, from)) {
      this.reply(reqId, errorReply(unavailable(`group ${gid} voters are ${g.voters.join(',')} now, not ${from.join(',')}`)));
      return;
    }
    const st = g.core.status();
    if (voters.length < g.voters.length) {
      const lagging = voters.find((v) => lags(st, v, st.commit));
      if (lagging !== undefined) {
        this.reply(reqId, errorReply(unavailable(`group ${gid}: ${lagging} has not caught up yet`)));
        return;
      }
    }
    this.wake(g);
    try {
      // A new replica is named by the term and index of the change that adds it: never reused in this group.
      const at = st.lastIndex + 1;
      const named = voters.map((v) => (needsSerial(v) ? withSerial(v, st.term, at) : v));
      const index = g.core.proposeConfChange({ voters: named });
      assert(index === at, `group ${gid}: conf change at ${index}, named for ${at}`);
      log('info', 'conf_proposed', 'proposed a group membership change', { group: gid, index, voters: named });
      this.reply(reqId, { kind: ReplyKind.Ok, body: `{"index":${index}}` });
    } catch (err) {
      this.reply(reqId, errorReply(this.leaderOpError(g, err)));
      return;
    }
    this.markDirty(g);
  }

  /** A conf change or leadership move the core refused: unavailable (retried next round); anything else as groupError. */
  private leaderOpError(g: Group, err: unknown): AppError {
    return err instanceof Error && err.name === 'ProposalDroppedError' ? unavailable(err.message) : this.groupError(g, err);
  }

  /**
   * The coordinator's leadership move: this leader hands over to `to` once it
   * has caught up (so proposals, refused meanwhile, pause for about a round
   * trip); abandoned by the core after an election timeout.
   */
  transferLeader(reqId: number, gid: number, to: string): void {
    const g = this.groupFor(reqId, gid);
    if (!g) return;
    const st = g.core.status();
    if (st.role === Role.Leader && lags(st, to, st.lastIndex)) {
      this.reply(reqId, errorReply(unavailable(`group ${gid}: ${to} has not caught up yet`)));
      return;
    }
    this.wake(g);
    try {
      g.core.transferLeader(to);
    } catch (err) {
      this.reply(reqId, errorReply(this.leaderOpError(g, err)));
      return;
    }
    log('info', 'leader_transfer', 'handing group leadership over', { group: gid, to });
    this.reply(reqId, { kind: ReplyKind.Ok, body: '{}' });
    this.markDirty(g);
  }

  read(reqId: number, gid: number, run: ReadFn): void {
    const g = this.groupFor(reqId, gid);
    if (!g) return;
    const ctx = ++g.readSeq;
    this.wake(g);
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
      if (g.stopped !== null || g.quiesced) continue;
      try {
        if (g.voters.length > 1 && this.maybeQuiesce(g)) continue;
        g.core.tick();
      } catch (err) {
        this.stopGroup(g, err);
        continue;
      }
      if (g.core.hasReady()) this.markDirty(g);
    }
  }

  /**
   * Idle multi-raft groups cost heartbeats for nothing. A leader whose
   * followers have everything, with nothing pending, stops ticking after a few
   * idle ticks and tells them so; they stop too. The first message, proposal
   * or read wakes a group; a dead leader node wakes its groups (peersDown).
   */
  private maybeQuiesce(g: Group): boolean {
    // Not while a Ready's writes are in flight either (a slow disk): the
    // tick's heartbeats wait in the core, and its messages would overtake them.
    if (g.core.busy()) {
      g.idleTicks = 0;
      return false;
    }
    const st = g.core.status();
    const idle = leaderIdle(st, g.applied, g.proposals.size + g.reads.size + g.readsWaiting.length);
    g.idleTicks = idle ? g.idleTicks + 1 : 0;
    if (g.idleTicks < QUIESCE_AFTER_TICKS) return false;
    // A follower agrees to stop only once it has the commit index: whatever the core still holds would arrive after this.
    assert(!g.core.hasUnsentMessages(), `group ${g.id}: quiescing with unsent messages`);
    g.quiesced = true;
    for (const to of g.voters) if (to !== g.self) this.links.send(quiesceMessage(st, to));
    return true;
  }

  private wake(g: Group): void {
    g.quiesced = false;
    g.idleTicks = 0;
  }

  /**
   * Nodes that stopped answering: groups they lead wake up and their
   * followers forget that leader (core.leaderGone) and campaign in turns
   * (campaignDelayTicks) rather than after a random timeout: no split votes,
   * and the first turn is the next tick.
   */
  peersDown(down: ReadonlySet<string>): void {
    for (const g of this.groups.values()) {
      if (g.stopped !== null || !down.has(nodeOf(g.leader))) continue;
      this.wake(g);
      try {
        g.core.leaderGone(campaignDelayTicks(g.id, g.self, g.voters, down));
      } catch (err) {
        this.stopGroup(g, err);
        continue;
      }
      this.markDirty(g);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    while (this.writing || this.applying || this.stateWrites.length > 0 || this.checkpointing || this.exclusiveRunning !== null) {
      this.scheduleTurn();
      await new Promise((r) => setTimeout(r, 5));
    }
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    await this.checkpoint();
    await this.wal.close();
  }

  /**
   * Records the applied index of each group's written state in one synced
   * write, making that state durable, then lets the WAL recycle what it
   * covers. Not while a snapshot is read or installed or a replica retires
   * (exclusive): this write must not bring back the applied index of a
   * group whose keys that just deleted or replaced.
   */
  private async checkpoint(): Promise<void> {
    if (this.checkpointing || this.exclusiveRunning !== null) return;
    this.checkpointing = true;
    try {
      const covered = new Map<number, number>();
      const ops: BatchOp[] = [];
      const recorded: [Group, number][] = [];
      for (const g of this.groups.values()) {
        const a = g.appliedWritten;
        covered.set(g.id, a.index);
        if (a.index <= g.appliedStored) continue;
        ops.push(appliedPut(g.id, a));
        recorded.push([g, a.index]);
      }
      await this.store.checkpoint(ops);
      for (const [g, index] of recorded) g.appliedStored = Math.max(g.appliedStored, index);
      // A group not hosted here (retired) needs none of its log.
      await this.wal.release((gid) => covered.get(gid) ?? Number.POSITIVE_INFINITY);
    } catch (err) {
      log('error', 'checkpoint_failed', 'checkpoint failed; WAL segments are kept', {
        partition: this.store.partition,
        err: String(err),
      });
    } finally {
      this.checkpointing = false;
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
    if (err instanceof Error && err.name === 'NotLeaderError') return notLeader(`group ${g.id} is not led by this node`);
    this.stopGroup(g, err);
    return unavailable(`group ${g.id} is stopped`);
  }

  /** A violated invariant stops this group only; everything it owes gets an answer. */
  private stopGroup(g: Group, err: unknown): void {
    if (g.stopped !== null) return;
    const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    log('error', 'group_stopped', 'group stopped after a failed invariant', {
      group: g.id,
      node: this.nodeId,
      reason,
      stack: err instanceof Error ? err.stack : undefined,
      status: safeStatus(g.core),
    });
    this.endGroup(g, reason, unavailable(`group ${g.id} is stopped`));
    this.onGroupStopped(g.id, reason);
  }

  /** The group serves nothing more here; what it owes is answered with `err`. */
  private endGroup(g: Group, reason: string, err: AppError): void {
    g.stopped = reason;
    const fail = errorReply(err);
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
   * One turn, one set of writes in flight: every dirty group's Ready goes to
   * ONE WAL write + fdatasync, and all state applied since the last turn to
   * ONE unsynced RocksDB batch, in parallel. Applied state needs no sync of
   * its own — the log it came from is durable; checkpoint() syncs it later.
   */
  private turn(): void {
    this.turnScheduled = false;
    if (this.writing || this.exclusiveRunning !== null) return;
    const readies: [Group, Ready][] = [];
    for (const g of this.dirty) {
      if (g.stopped !== null) continue;
      try {
        if (!g.core.hasReady()) continue;
        const rd = g.core.ready();
        if (rd.snapshot !== null) void this.installSnapshot(g, rd);
        else readies.push([g, rd]);
      } catch (err) {
        this.stopGroup(g, err);
      }
    }
    this.dirty.clear();
    for (const [g, rd] of readies) {
      try {
        this.collect(g, rd);
      } catch (err) {
        this.stopGroup(g, err);
      }
    }
    this.startApply();
    // A snapshot read that started in this turn (collect → sendSnapshot)
    // reads RocksDB while this turn's writes run: the state applied above
    // waits for the next turn, or the snapshot could see half of it.
    const states = this.exclusiveRunning === null ? this.stateWrites.splice(0) : [];
    const ops: BatchOp[] = [];
    for (const w of states) for (const op of w.batch.ops) ops.push(op);
    const writes: Promise<void>[] = [];
    this.unwrittenBytes = 0; // every proposal so far is in this turn's WAL batch
    // The RocksDB batch goes to the libuv pool and this turn's messages and
    // replies to the gateway before the WAL write, which blocks this thread
    // for its fdatasync (storage/wal.ts).
    if (ops.length > 0) writes.push(this.store.db.write(ops, false));
    this.links.flush();
    if (this.wal.pendingBytes > 0) writes.push(this.wal.write());
    const deferred = this.afterWrite;
    this.afterWrite = [];
    if (writes.length === 0) {
      for (const m of deferred) this.links.send(m);
      this.statesWritten(states); // state that wrote nothing (a no-op entry) is as good as written
      this.advanceAll(readies);
      return;
    }
    this.writing = true;
    Promise.all(writes).then(
      () => {
        this.writing = false;
        // Votes and append acks promise that what they cover is on disk.
        for (const m of deferred) this.links.send(m);
        this.statesWritten(states);
        this.advanceAll(readies);
        // Work that arrived while this write was in flight (turn() returned
        // early) must not wait for the next tick.
        if (this.dirty.size > 0 || this.stateWrites.length > 0) this.scheduleTurn();
      },
      (err: unknown) => {
        this.writing = false;
        this.storageFailed(err);
      },
    );
  }

  /** Duties 1, 3, 4 and 5 of the Ready contract for one group. */
  private collect(g: Group, rd: Ready): void {
    if (rd.softState !== null) this.onSoftState(g, rd.softState.role, rd.softState.leader);
    g.snapshotData.clear(); // a Ready without a snapshot: the core wanted none of them
    for (const m of rd.messages) {
      if (m.type === MessageType.Snap) this.sendSnapshot(g, m.to);
      // A leader's appends and heartbeats may leave before its own fsync (they promise nothing).
      else if (m.type === MessageType.App || m.type === MessageType.Heartbeat) this.links.send(m);
      else this.afterWrite.push(m);
    }
    // Commit-only changes are not written: on restart commit = max(stored, applied) and
    // a single voter re-commits the rest. Term and vote always are (mustSync).
    if (rd.mustSync && rd.hardState) this.wal.setHardState(g.id, rd.hardState);
    if (rd.entries.length > 0) this.wal.appendEntries(g.id, rd.entries);
    if (rd.committedEntries.length > 0) g.applyQueue.push(...rd.committedEntries);
    for (const rs of rd.readStates) {
      const r = g.reads.get(rs.context);
      if (r === undefined) continue;
      g.reads.delete(rs.context);
      g.readsWaiting.push({ reqId: r.reqId, run: r.run, index: rs.index });
    }
    this.serveReads(g);
  }

  private onSoftState(g: Group, role: Role, leader: string): void {
    if (role === Role.Leader) g.leaderSince = g.core.status().lastIndex;
    else if (g.proposals.size > 0 || g.reads.size > 0) {
      // A deposed leader cannot tell whether its proposals will commit: the
      // client learns at once (503) instead of waiting for the deadline.
      const fail = errorReply(unavailable(`group ${g.id} lost its leader; the outcome is unknown, retry with an idempotency key`));
      for (const p of g.proposals.values()) this.reply(p.reqId, fail);
      // A read changed nothing: the gateway may send it to the new leader.
      const moved = errorReply(notLeader(`group ${g.id} lost its leader`));
      for (const r of g.reads.values()) this.reply(r.reqId, moved);
      g.proposals.clear();
      g.reads.clear();
    }
    if (leader !== g.leader) {
      g.leader = leader;
      this.links.leaderChanged(g.id, leader, g.core.currentTerm(), g.voters, true);
    }
  }

  /**
   * Runs `fn` with the partition's state holding still: no turn starts, the
   * write and apply in flight finish, and applied state not yet written is
   * written first. Snapshots are rare; the partition pauses for their reads.
   */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.exclusiveRunning !== null) await this.exclusiveRunning;
    let release!: () => void;
    this.exclusiveRunning = new Promise<void>((r) => (release = r));
    try {
      while (this.writing || this.applying || this.checkpointing) await new Promise((r) => setTimeout(r, 1));
      const states = this.stateWrites.splice(0);
      const ops = states.flatMap((w) => w.batch.ops);
      if (ops.length > 0) {
        try {
          await this.store.db.write(ops, false);
        } catch (err) {
          this.storageFailed(err);
          throw err;
        }
      }
      this.statesWritten(states);
      return await fn();
    } finally {
      this.exclusiveRunning = null;
      release();
      this.scheduleTurn();
    }
  }

  /** Storage that failed a write cannot be trusted: every group of the partition stops, and nobody waits for its state. */
  private storageFailed(err: unknown): void {
    for (const g of this.groups.values()) this.stopGroup(g, err);
    for (const w of this.stateWaiters.splice(0)) w.reject(err);
  }

  private statesWritten(states: PendingWrite[]): void {
    for (const w of states) {
      for (const [a, seq] of w.touched) this.actors.persisted(a, seq);
      for (const [g, a] of w.applied) g.appliedWritten = a;
    }
    this.stateWrittenCount += states.length;
    if (this.stateWaiters.length === 0) return;
    const waiting = this.stateWaiters;
    this.stateWaiters = [];
    for (const w of waiting) {
      if (w.upTo <= this.stateWrittenCount) w.resolve();
      else this.stateWaiters.push(w);
    }
  }

  /**
   * Resolves once all state applied before the call is in RocksDB. Replies
   * leave at apply, before the state's write: a read that scans RocksDB
   * (the listing) waits here to see every change already acknowledged.
   */
  stateWritten(): Promise<void> {
    const upTo = this.stateQueued;
    if (upTo <= this.stateWrittenCount) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.stateWaiters.push({ upTo, resolve, reject });
      this.scheduleTurn();
    });
  }

  /**
   * Leader: a follower is behind the log this node keeps. It gets the
   * group's state as of the applied index (at or past the core's compaction
   * point, so the log continues right after it) as one Snap message whose
   * single pseudo-entry carries the data; the transport chunks it.
   */
  private sendSnapshot(g: Group, to: string): void {
    const key = `${g.id}/${to}`;
    if (this.snapshotsSending.has(key)) return;
    this.snapshotsSending.add(key);
    this.exclusive(async () => {
      // The state on disk, as of the index it reaches. Not g.applied: when
      // this started inside a turn's collect step, that turn's apply round
      // ran after the flush and its state waits for the next turn.
      const applied = g.appliedWritten;
      return { applied, data: await readGroupSnapshot(this.store, g.id, applied) };
    })
      .then(
        ({ applied, data }) => {
          if (g.stopped !== null || g.leader !== g.self) return;
          const meta = { index: applied.index, term: applied.term, conf: { voters: [...g.voters] } };
          this.links.send({
            type: MessageType.Snap,
            group: g.id,
            from: g.self,
            to,
            term: g.core.currentTerm(),
            logTerm: meta.term,
            index: meta.index,
            entries: [{ term: meta.term, index: meta.index, type: EntryType.Normal, data }],
            commit: 0,
            reject: false,
            rejectHint: 0,
            snapshot: meta,
            context: 0,
          });
          log('info', 'snapshot_sent', 'sent a snapshot to a follower behind the log', { group: g.id, follower: to, index: meta.index, bytes: data.byteLength });
          g.core.reportSnapshot(to, true);
        },
        (err: unknown) => {
          log('error', 'snapshot_failed', 'could not read a snapshot for a follower', { group: g.id, follower: to, err: String(err) });
          g.core.reportSnapshot(to, false);
        },
      )
      .finally(() => {
        this.snapshotsSending.delete(key);
        this.markDirty(g);
      });
  }

  /**
   * Follower: the core took the leader's snapshot. The group's state is
   * replaced (synced), then the WAL gets an entry at the snapshot index, which
   * on recovery truncates whatever older log followed it, and the Ready's
   * hard state; only then is the Ready advanced and its messages sent.
   */
  private async installSnapshot(g: Group, rd: Ready): Promise<void> {
    const meta = rd.snapshot!;
    try {
      await this.exclusive(async () => {
        const data = g.snapshotData.get(meta.index);
        g.snapshotData.clear();
        assert(data !== undefined, `group ${g.id}: snapshot ${meta.index} wanted without its data`);
        assert(rd.committedEntries.length === 0 && rd.entries.length === 0, `group ${g.id}: snapshot Ready carries entries`);
        const applied = await installGroupSnapshot(this.store, g.id, data);
        assert(applied.index === meta.index && applied.term === meta.term, `group ${g.id}: snapshot data at ${applied.index}/${applied.term}, meta ${meta.index}/${meta.term}`);
        this.actors.dropWhere((id) => groupOf(id) === g.id);
        g.applyQueue = [];
        g.applied = g.appliedStored = meta.index;
        g.appliedTerm = meta.term;
        g.appliedWritten = applied;
        g.storage.applySnapshot(meta);
        g.voters = [...meta.conf.voters];
        this.wal.appendEntries(g.id, [{ term: meta.term, index: meta.index, type: EntryType.Normal, data: new Uint8Array(0) }]);
        if (rd.hardState) {
          this.wal.setHardState(g.id, rd.hardState);
          g.storage.setHardState(rd.hardState);
        }
        await this.wal.write();
        if (rd.softState !== null) this.onSoftState(g, rd.softState.role, rd.softState.leader);
        for (const m of rd.messages) this.links.send(m);
        g.core.advance(rd);
        this.links.leaderChanged(g.id, g.leader, g.core.currentTerm(), g.voters, true);
        log('info', 'snapshot_installed', 'replaced a group state with the leader snapshot', { group: g.id, index: meta.index });
      });
    } catch (err) {
      this.stopGroup(g, err);
    }
    // A snapshot past the change that added this replica, without it: removed meanwhile.
    if (g.stopped === null && g.joining && removedBy(g.self, meta.index)) void this.retire(g);
    this.markDirty(g);
  }

  /**
   * The replica here was removed from the group's voters: it stops, its
   * state goes (one synced write with the record that it is retired, so it
   * is never started again under this id), and the node forgets the group.
   */
  private async retire(g: Group): Promise<void> {
    try {
      await this.exclusive(async () => {
        if (this.groups.get(g.id) !== g) return;
        // Its proposals may still commit under the next leader: their outcome is unknown.
        this.endGroup(g, 'retired', unavailable(`group ${g.id} no longer has a replica here; the outcome is unknown, retry with an idempotency key`));
        const dels: BatchOp[] = (await groupKeys(this.store, g.id)).map(([key]) => ({ type: 'del', key }));
        await this.store.saveReplica(g.id, { replica: null, retired: g.self }, dels);
        this.retired.set(g.id, g.self);
        this.groups.delete(g.id);
        this.actors.dropWhere((id) => groupOf(id) === g.id);
        this.links.leaderChanged(g.id, '', g.core.currentTerm(), g.voters, false);
        log('info', 'replica_retired', 'this replica was removed from the group; its state is deleted', { group: g.id, replica: g.self, voters: g.voters });
      });
    } catch (err) {
      log('error', 'replica_retire_failed', 'could not retire a removed replica', { group: g.id, replica: g.self, err: String(err) });
    }
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

  /**
   * Applies every queued committed entry, synchronously when the
   * conversations they touch are in memory (the common case), so a turn
   * answers its proposals before it spends time issuing its own writes.
   * A round that must load conversations from disk continues after the load.
   */
  private startApply(): void {
    if (this.applying) return;
    for (;;) {
      // Take the queued entries first: entries committed while a load is
      // awaited wait for the next round, whose load covers them.
      const work: [Group, Entry[]][] = [];
      for (const g of this.groups.values()) {
        if (g.applyQueue.length === 0 || g.stopped !== null) continue;
        work.push([g, g.applyQueue]);
        g.applyQueue = [];
      }
      if (work.length === 0) return;
      const missing = this.missingConversations(work);
      if (missing.size === 0) {
        this.applyRound(work);
        continue;
      }
      this.applying = true;
      this.load(missing).then(
        () => {
          this.applying = false;
          this.applyRound(work);
          this.startApply();
        },
        (err: unknown) => {
          // Storage that cannot load what the entries touch cannot apply them:
          // their groups stop, and what they owe is answered.
          this.applying = false;
          for (const [g] of work) this.stopGroup(g, err);
          this.startApply();
        },
      );
      return;
    }
  }

  /**
   * Applies committed entries in memory and answers their proposals at once;
   * the resulting state is queued for the next write (turn).
   */
  private applyRound(work: [Group, Entry[]][]): void {
    const pending: PendingWrite = { batch: new ApplyBatch(), touched: new Map(), applied: new Map() };
    const replies: [number, Reply][] = [];
    for (const [g, entries] of work) {
      if (g.stopped !== null) continue;
      const opsBefore = pending.batch.ops.length;
      try {
        this.applyEntries(g, entries, pending, replies);
        pending.applied.set(g, { index: g.applied, term: g.appliedTerm, voters: g.voters });
        const compactTo = g.applied - this.links.retainEntries;
        if (compactTo > g.storage.snapshotMeta().index) g.storage.compact(compactTo);
      } catch (err) {
        pending.batch.truncate(opsBefore); // nothing of a failed group reaches disk
        this.stopGroup(g, err);
      }
    }
    for (const a of pending.touched.keys()) a.writesPending++;
    this.stateWrites.push(pending);
    this.stateQueued++;
    this.scheduleTurn();
    for (const [reqId, r] of replies) this.reply(reqId, r);
    for (const [g] of work) this.serveReads(g);
    this.links.flush();
    // Only here, between rounds: evicting while a load is awaited could
    // drop a conversation the round relies on.
    this.actors.evict();
    for (const g of this.retiring) void this.retire(g);
    this.retiring.clear();
  }

  /** Conversations the entries touch that are not in memory → their group. */
  private missingConversations(work: [Group, Entry[]][]): Map<string, number> {
    const missing = new Map<string, number>();
    for (const [g, entries] of work) {
      for (const e of entries) {
        if (e.type !== EntryType.Normal || e.data.length === 0) continue;
        const id = commandId(e.data);
        if (this.actors.get(id) === undefined) missing.set(id, g.id);
      }
    }
    return missing;
  }

  private async load(missing: Map<string, number>): Promise<void> {
    const loaded = await Promise.all([...missing].map(async ([id, gid]) => [id, await this.store.loadConversation(gid, id)] as const));
    for (const [id, conv] of loaded) if (this.actors.get(id) === undefined) this.actors.add(id, conv);
  }

  private applyEntries(g: Group, entries: Entry[], pending: PendingWrite, replies: [number, Reply][]): void {
    assert(entries[0].index === g.applied + 1, `group ${g.id}: applying ${entries[0].index} after ${g.applied}`);
    const batch = pending.batch;
    batch.group = g.id;
    const sink = new CachingSink(batch, this.actors);
    let last = g.applied;
    let lastTerm = 0;
    let confChanged = false;
    for (const e of entries) {
      assert(e.index === last + 1, `group ${g.id}: applying ${e.index} after ${last}`);
      last = e.index;
      lastTerm = e.term;
      if (e.type === EntryType.ConfChange) {
        g.voters = decodeConfState(e.data).voters;
        confChanged = true;
        log('info', 'conf_applied', 'group membership changed', { group: g.id, index: e.index, voters: g.voters });
        this.links.leaderChanged(g.id, g.leader, g.core.currentTerm(), g.voters, true);
        if (g.joining && removedBy(g.self, e.index)) this.retiring.add(g);
      } else if (e.type === EntryType.Normal && e.data.length > 0) {
        const cmd = decodeCommand(e.data);
        assert(groupOf(cmd.id) === g.id, `group ${g.id}: entry ${e.index} is for ${cmd.id} of group ${groupOf(cmd.id)}`);
        const actor = this.actors.get(cmd.id);
        assert(actor !== undefined, `group ${g.id}: conversation ${cmd.id} not loaded before apply`);
        const has = actor.conv.record?.applied_index ?? 0;
        if (has >= e.index) {
          // Replayed after a restart: its state write landed, the checkpoint
          // recording its applied index did not. Nothing to do again.
          assert(e.index <= g.replayThrough, `group ${g.id}: entry ${e.index} beyond the recovered log (${g.replayThrough}) is already in ${cmd.id} (written by ${has})`);
          continue;
        }
        sink.actor = actor;
        sink.index = e.index;
        const leading = g.leader === g.self;
        const streamed = this.events.has(cmd.id, leading);
        const before = actor.conv.record;
        const result = apply(actor.conv, cmd, sink);
        if (streamed) this.emitEvents(g.id, cmd, before, actor, result, sink, leading);
        this.actors.touch(cmd.id, actor);
        pending.touched.set(actor, actor.conv.record?.last_seq ?? 0);
        const p = g.proposals.get(e.index);
        if (p !== undefined) {
          g.proposals.delete(e.index);
          const r = p.term === e.term ? applyReply(result) : errorReply(unavailable('leadership changed; retry'));
          replies.push([p.reqId, r]);
        }
      }
    }
    g.applied = last;
    g.appliedTerm = lastTerm;
    // The voters as of an index are stored with it at once; otherwise the
    // next checkpoint records the applied index (replay covers the gap).
    if (confChanged) batch.setApplied(g.id, last, lastTerm, g.voters);
  }

  /** The stream events of one applied command (SPEC §5), in the order clients see them. */
  private emitEvents(group: number, cmd: Command, before: ConversationRecord | null, actor: ActorEntry, result: ApplyResult, sink: CachingSink, leading: boolean): void {
    const rec = actor.conv.record;
    if (rec === null) return;
    const emit = (ev: StreamEvent) => this.events.emit(ev, leading);
    const ctx = () => this.events.emitContext(this.store, this.actors, group, actor, leading);
    switch (result.kind) {
      case 'appended':
        if (result.duplicate) return;
        emit(messageEvent(rec.id, sink.lastMessage, result.version));
        if (rec.context !== null) ctx();
        return;
      case 'compacted': {
        const c = rec.context!.compacted!;
        emit(compactionEvent(rec.id, result.version, c.from_seq, c.to_seq));
        ctx();
        return;
      }
      case 'deleted':
        if (before !== null && !before.tombstoned) emit(tombstoneEvent(rec.id));
        return;
      case 'record':
        // A new budget or ratio can change needs_compaction.
        if (cmd.op === Op.PutContext) ctx();
        return;
    }
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

/** Messages only a leader sends: they may start (or supersede) a replica here. */
function isFromLeader(m: Message): boolean {
  return m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap;
}

function safeStatus(core: RaftCore): unknown {
  try {
    return core.status();
  } catch {
    return null;
  }
}

/**
 * Sends apply's writes to the batch and keeps new messages in the cache until
 * persisted. One per applyEntries call; `actor` is set before each apply().
 */
class CachingSink implements WriteSink {
  actor: ActorEntry | null = null;
  /** Index of the entry being applied: stamped on the records it writes. */
  index = 0;
  /** Record text of the last message written (for its stream event). */
  lastMessage = '';
  constructor(
    private readonly batch: ApplyBatch,
    private readonly actors: ActorCache,
  ) {}
  putRecord(rec: ConversationRecord): void {
    rec.applied_index = this.index;
    this.batch.putRecord(rec);
  }
  putMessage(id: string, seq: number, recordJson: string): void {
    assert(this.actor !== null && this.actor.conv.record?.id === id, `message ${id}/${seq} written for another conversation`);
    this.batch.putMessage(id, seq, recordJson);
    this.actors.noteMessage(this.actor, seq, recordJson);
    this.lastMessage = recordJson;
  }
  putIdem(id: string, key: string, rec: IdemRecord): void {
    this.batch.putIdem(id, key, rec);
  }
  delIdem(id: string, key: string): void {
    this.batch.delIdem(id, key);
  }
  putCompactions(id: string, c: Compactions): void {
    this.batch.putCompactions(id, c);
  }
  delMessages(id: string, lo: number, hi: number): void {
    this.batch.delMessages(id, lo, hi);
    this.actors.dropThrough(this.actor!, hi);
  }
  setArchivePending(id: string, pending: boolean): void {
    this.batch.setArchivePending(id, pending);
  }
}
