// RaftCore: one Raft group's pure, deterministic state machine (etcd-raft shape).
//
// No timers, clocks, randomness or I/O: time comes from tick(), randomness
// from the injected `random`, and everything the core wants done is returned
// by ready().
//
// THE READY CONTRACT. Everything the driver must do for one group this turn,
// in order:
//  1. persist `hardState` (if set) and `entries` (append, truncating any
//     conflicting suffix) — synced when `mustSync`;
//  2. send `messages` (a leader's App/Heartbeat/Snap may go before the fsync;
//     everything else only after it);
//  3. install `snapshot` (if set) before applying anything;
//  4. apply `committedEntries` in order;
//  5. serve `readStates` once applied >= index;
//  6. call advance(ready).
//
// Details the duties rely on:
//  - ready() may be called only when no Ready is outstanding (else it throws);
//    hasReady() is false while one is. step/tick/propose may be called between
//    ready() and advance(); their effects land in the next Ready.
//  - Readies are handled strictly one after another: rd2's messages must not
//    leave before rd1's entries and hard state are durable.
//  - advance(rd) tells the core that rd.entries are in storage (so a leader
//    counts them towards its own match index: a single-voter group commits
//    right after its own write) and that rd.committedEntries were applied.
//  - Conf changes (EntryType.ConfChange, data = encoded ConfState) take effect
//    as soon as they are in the log, committed or not (Raft thesis §4.1): a
//    replica always uses the newest conf in its log, and falls back to an
//    older one if a new leader truncates it. Applying them is the driver's
//    business: it persists the conf as of the applied index with that index
//    (MemoryStorage.setConf); at boot the core takes that conf and then every
//    ConfChange in the log after `applied`. (Taking effect at apply time, as
//    etcd does, needs the applied conf durable at once: with it persisted
//    only at checkpoints, a restarted replica could campaign under a conf two
//    changes old.) A leader accepts a new conf change only once the previous
//    one is applied and an entry of its own term is (its empty first entry).
//    A leader that removed itself keeps leading, not counting itself, until
//    that change is applied, then steps down. A leader keeps replicating to
//    a removed voter until the removal is applied, so it learns of it.
//  - Snapshots. Leader: when a follower needs compacted entries the core emits
//    Snap{snapshot: storage.snapshotMeta()}; the driver streams the state
//    machine as of that meta and then calls reportSnapshot(to, ok). Follower:
//    the driver steps the Snap message once it holds the streamed state; if
//    the core wants it, the next Ready carries `snapshot`; the driver installs
//    the state durably, calls storage.applySnapshot(meta), then advance();
//    the core then resets its log to (meta.index, meta.term) and answers the
//    leader with AppResp{index: meta.index}. If no Ready carries it, the
//    streamed state is discarded.
//
// Driver loop sketch (one group; the real driver puts every group of a worker
// into one WriteBatch with one sync, then sends):
//
//   for each inbound message: core.step(m);  per tick: core.tick();  core.propose(data)
//   while (core.hasReady()) {
//     const rd = core.ready();
//     send(leader App/Heartbeat/Snap of rd.messages)        // optional: before the fsync
//     storage.setHardState(rd.hardState); storage.append(rd.entries); sync if rd.mustSync
//     send(the rest of rd.messages)
//     if (rd.snapshot) { install the streamed state; storage.applySnapshot(rd.snapshot) }
//     apply rd.committedEntries (ConfChange: storage.setConf(decodeConfState(e.data)))
//       and persist the applied index with the state
//     serve rd.readStates once applied >= index
//     core.advance(rd);
//   }
//
// Boot: load MemoryStorage from disk, new RaftCore({..., applied}); a
// single-voter group then calls campaign() and leads at once (fresh or
// restarted). A replica added later starts with an empty log whose conf is the
// group's bootstrap voter set (the conf as of index 0); it learns the rest
// from the log or a snapshot.

import { encodeConfState, decodeConfState, singleServerChangeError } from './conf.js';
import { NotLeaderError, ProposalDroppedError, RaftInvariantError } from './errors.js';
import { EMPTY_ENTRIES, RaftLog, type RaftStorage } from './log.js';
import { Progress, ProgressState } from './progress.js';
import { committedIndex, majority, voteResult, VoteResult } from './quorum.js';
import {
  EntryType,
  MessageType,
  Role,
  type ConfState,
  type Entry,
  type GroupId,
  type Message,
  type NodeId,
  type ReadState,
  type Ready,
  type SnapshotMeta,
} from './types.js';

export { NotLeaderError, ProposalDroppedError, RaftInvariantError } from './errors.js';

export interface RaftConfig {
  id: NodeId;
  group: GroupId;
  storage: RaftStorage;
  /** Highest index the driver's state machine has applied (durably). */
  applied: number;
  /** Election timeout in ticks; the randomized timeout is in [electionTicks, 2*electionTicks). */
  electionTicks: number;
  heartbeatTicks: number;
  /** Injected PRNG, values in [0, 1). */
  random: () => number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Max entry bytes per App message (at least one entry is always sent). */
  maxMsgBytes: number;
  /** Max App messages in flight per follower in Replicate state. */
  maxInflight: number;
  /** Max entry bytes of Ready.committedEntries (at least one entry). */
  maxApplyBytes: number;
}

export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressState;
}

export interface RaftStatus {
  id: NodeId;
  group: GroupId;
  role: Role;
  leader: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lastIndex: number;
  voters: NodeId[];
  /** Leader only. */
  progress?: Record<NodeId, ProgressStatus>;
}

const enum CampaignKind {
  PreElection = 0,
  Election = 1,
  Transfer = 2,
}

const enum Bcast {
  None = 0,
  /** Send new entries to followers that can take them. */
  Entries = 1,
  /**
   * A new commit index: also send empty Apps to replicas being removed (they
   * learn of their removal from its commit), and to everyone from a leader
   * being removed (it steps down). Other voters are not sent one: they
   * learn the commit with the next App, or from the heartbeat the next tick
   * sends to each follower owed it (sendOwedCommits) — half the messages of
   * an append at a cost of at most a tick in the followers' apply.
   */
  Commit = 2,
}

/** Vote.context value of a campaign started by TimeoutNow: ignores leases. */
export const CAMPAIGN_TRANSFER_CONTEXT = 1;
/** Max reads queued at a leader (local + forwarded). */
export const READS_PENDING_MAX = 4096;

const ROLE_NAMES = ['follower', 'pre-candidate', 'candidate', 'leader'];
const EMPTY_DATA = new Uint8Array(0);
const EMPTY_MESSAGES: Message[] = [];
const EMPTY_READ_STATES: ReadState[] = [];
Object.freeze(EMPTY_MESSAGES);
Object.freeze(EMPTY_READ_STATES);

interface PendingRead {
  from: NodeId;
  context: number;
  /** Commit index when the read arrived. */
  index: number;
  /** Heartbeat round that confirms it. */
  round: number;
}

function validateConfig(cfg: RaftConfig): void {
  if (cfg.id === '') throw new RangeError('raft config: empty id');
  if (!(Number.isInteger(cfg.heartbeatTicks) && cfg.heartbeatTicks >= 1)) throw new RangeError('raft config: heartbeatTicks must be >= 1');
  if (!(Number.isInteger(cfg.electionTicks) && cfg.electionTicks > cfg.heartbeatTicks)) {
    throw new RangeError('raft config: electionTicks must be > heartbeatTicks');
  }
  if (!(cfg.maxMsgBytes > 0 && cfg.maxApplyBytes > 0)) throw new RangeError('raft config: maxMsgBytes and maxApplyBytes must be > 0');
  if (!(Number.isInteger(cfg.maxInflight) && cfg.maxInflight >= 1)) throw new RangeError('raft config: maxInflight must be >= 1');
  if (!(Number.isInteger(cfg.applied) && cfg.applied >= 0)) throw new RangeError('raft config: applied must be a non-negative integer');
  if (typeof cfg.random !== 'function') throw new RangeError('raft config: random must be a function');
}

export class RaftCore {
  readonly id: NodeId;
  readonly group: GroupId;
  private readonly cfg: RaftConfig;
  private readonly log: RaftLog;

  private term = 0;
  private vote: NodeId = '';
  private lead: NodeId = '';
  private role: Role = Role.Follower;
  /** The leader this node recognized in `term`; it never changes within a term. */
  private termLeader: NodeId = '';

  /** The voters in effect: the newest conf in the log. */
  private voters: NodeId[] = [];
  private isVoter = false;
  /** Voters as of the applied index: the conf when the log holds no newer one. */
  private appliedConf: NodeId[] = [];
  /** ConfChange entries in the log after the applied index, oldest first (voters decoded). */
  private confLog: { index: number; term: number; voters: NodeId[] }[] = [];
  private readonly progress = new Map<NodeId, Progress>();
  /** Progress of every voter, in `voters` order (allocation-free iteration). */
  private voterProgress: Progress[] = [];
  /** Voters other than this node: votes and check-quorum. */
  private voterPeers: Progress[] = [];
  /** Every tracked replica other than this node (syncConf): what a leader replicates to. */
  private followers: Progress[] = [];
  private readonly votes = new Map<NodeId, boolean>();
  private quorumScratch: number[] = [];

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private stepRole: (m: Message) => void;
  private tickRole: () => void;

  private msgs: Message[] = [];
  private readStates: ReadState[] = [];

  // Leader state.
  private pendingConfIndex = 0;
  private leadTransferee: NodeId = '';
  private bcast: Bcast = Bcast.None;
  private readRound = 0;
  private pendingReads: PendingRead[] = [];
  private readsAwaitingCommit: PendingRead[] = [];
  private readBroadcast = false;

  // Follower snapshot: stepped but not yet handed out in a Ready.
  private snapshotPending: SnapshotMeta | null = null;
  private snapshotFrom: NodeId = '';

  // What the last Ready reported, to detect changes.
  private prevLeader: NodeId = '';
  private prevRole: Role = Role.Follower;
  private prevTerm = 0;
  private prevVote: NodeId = '';
  private prevCommit = 0;
  private outstanding: Ready | null = null;
  /** Highest commit index seen by checkInvariants(): commit never decreases. */
  private commitFloor = 0;

  private readonly stepFollowerFn = (m: Message): void => this.stepFollower(m);
  private readonly stepCandidateFn = (m: Message): void => this.stepCandidate(m);
  private readonly stepLeaderFn = (m: Message): void => this.stepLeader(m);
  private readonly tickElectionFn = (): void => this.tickElection();
  private readonly tickHeartbeatFn = (): void => this.tickHeartbeat();

  constructor(cfg: RaftConfig) {
    validateConfig(cfg);
    this.id = cfg.id;
    this.group = cfg.group;
    this.cfg = cfg;
    const { hardState, conf } = cfg.storage.initialState();
    const snapIndex = cfg.storage.snapshotMeta().index;
    // Applied entries were committed, even if the commit index write was not synced.
    const committed = Math.max(hardState.commit, cfg.applied, snapIndex);
    this.log = new RaftLog(cfg.storage, committed, cfg.applied, (what) => this.fail(what));
    if (hardState.term < 0 || (hardState.vote !== '' && hardState.term === 0)) this.fail(`bad hard state ${JSON.stringify(hardState)}`);
    this.term = hardState.term;
    this.vote = hardState.vote;
    this.prevTerm = hardState.term;
    this.prevVote = hardState.vote;
    this.prevCommit = hardState.commit;
    this.stepRole = this.stepFollowerFn;
    this.tickRole = this.tickElectionFn;
    this.appliedConf = conf.voters.slice();
    for (const e of this.log.confChangesIn(cfg.applied + 1, this.log.lastIndex(), cfg.maxApplyBytes)) {
      this.confLog.push({ index: e.index, term: e.term, voters: decodeConfState(e.data).voters });
    }
    this.syncConf();
    this.becomeFollower(this.term, '');
    if (this.vote !== hardState.vote) this.fail('vote lost at boot');
  }

  // ---------------------------------------------------------------- public API

  tick(): void {
    const term = this.term;
    this.tickRole();
    if (this.term < term) this.fail('term regressed on tick');
    this.checkInvariants();
  }

  step(m: Message): void {
    if (m.group !== this.group) this.fail(`message for group ${m.group}`);
    if (m.to !== this.id || m.from === this.id) this.fail(`misrouted message type ${m.type} from ${m.from} to ${m.to}`);
    if (m.term > this.term) {
      if (!this.stepHigherTerm(m)) return;
    } else if (m.term < this.term) {
      this.stepLowerTerm(m);
      return;
    }
    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) this.handleVoteRequest(m);
    else this.stepRole(m);
    if (this.term < m.term && m.type !== MessageType.PreVote && m.type !== MessageType.PreVoteResp) this.fail('higher term not adopted');
    this.checkInvariants();
  }

  /** Appends `data` as a new entry; returns its index. Leader only. */
  propose(data: Uint8Array): number {
    if (this.role !== Role.Leader) throw new NotLeaderError(this.group, this.lead);
    if (this.leadTransferee !== '') throw new ProposalDroppedError(this.group, 'leader transfer in progress');
    return this.appendEntry(EntryType.Normal, data);
  }

  /**
   * Proposes a single-server membership change (the whole new voter set).
   * Takes effect at once (newest conf in the log). Returns the entry's index.
   */
  proposeConfChange(conf: ConfState): number {
    if (this.role !== Role.Leader) throw new NotLeaderError(this.group, this.lead);
    if (this.leadTransferee !== '') throw new ProposalDroppedError(this.group, 'leader transfer in progress');
    if (this.pendingConfIndex > this.log.applied) {
      throw new ProposalDroppedError(this.group, `conf change pending at ${this.pendingConfIndex} (applied ${this.log.applied})`);
    }
    const why = singleServerChangeError(this.voters, conf.voters);
    if (why !== '') throw new ProposalDroppedError(this.group, `invalid conf change: ${why}`);
    const index = this.appendEntry(EntryType.ConfChange, encodeConfState(conf));
    this.pendingConfIndex = index;
    this.confLog.push({ index, term: this.term, voters: conf.voters.slice() });
    this.syncConf();
    this.checkInvariants();
    return index;
  }

  /**
   * Linearizable read: a ReadState{context, index} shows up in a later Ready
   * once leadership is confirmed; serve it when applied >= index. Followers
   * forward to the leader. Throws NotLeaderError when no leader is known.
   */
  readIndex(context: number): void {
    if (this.role === Role.Leader) {
      this.handleReadRequest(this.id, context);
      return;
    }
    if (this.lead === '') throw new NotLeaderError(this.group, '');
    const m = this.newMsg(MessageType.ReadIndex, this.lead);
    m.context = context;
    this.msgs.push(m);
  }

  /** Starts an election now (pre-vote first when enabled). No-op for leaders and non-voters. */
  campaign(): void {
    this.hup(this.cfg.preVote ? CampaignKind.PreElection : CampaignKind.Election);
  }

  /** Hands leadership to `to` once its log is caught up (TimeoutNow). */
  transferLeader(to: NodeId): void {
    if (this.role !== Role.Leader) throw new NotLeaderError(this.group, this.lead);
    if (to === this.id) {
      this.leadTransferee = '';
      return;
    }
    const pr = this.progress.get(to);
    if (pr === undefined) throw new ProposalDroppedError(this.group, `transferee ${to} is not a voter`);
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    this.electionElapsed = 0;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(pr, true);
  }

  /**
   * The driver learned that the leader's node is gone: forget the leader, so
   * this follower grants (pre-)votes at once instead of waiting out its lease,
   * and campaign `afterTicks` + 1 ticks from now unless a leader shows up first.
   * Time only runs early here, which safety does not depend on; a leader that
   * is in fact alive is not deposed unless a quorum also thinks it gone.
   */
  leaderGone(afterTicks: number): void {
    if (this.role !== Role.Follower || this.lead === '') return;
    if (!Number.isInteger(afterTicks) || afterTicks < 0) this.fail(`leaderGone after ${afterTicks} ticks`);
    this.lead = '';
    this.electionElapsed = Math.max(this.electionElapsed, this.randomizedElectionTimeout - 1 - afterTicks);
    this.checkInvariants();
  }

  /** The transport could not reach `to`: stop pipelining to it. */
  reportUnreachable(to: NodeId): void {
    if (this.role !== Role.Leader) return;
    const pr = this.progress.get(to);
    if (pr !== undefined && pr.state === ProgressState.Replicate) pr.becomeProbe();
  }

  /** Outcome of streaming a snapshot to `to`. */
  reportSnapshot(to: NodeId, ok: boolean): void {
    if (this.role !== Role.Leader) return;
    const pr = this.progress.get(to);
    if (pr === undefined || pr.state !== ProgressState.Snapshot) return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Success: wait for its AppResp. Failure: retry after a heartbeat reply.
    pr.probeSent = true;
  }

  /** Messages made since the last ready(), not handed out yet. */
  hasUnsentMessages(): boolean {
    return this.msgs.length > 0;
  }

  /**
   * A Ready is waiting, or one was handed out and not advanced yet (its
   * writes are in flight; hasReady() is false meanwhile, while ticks and
   * steps keep adding to the next one).
   */
  busy(): boolean {
    return this.outstanding !== null || this.hasReady();
  }

  hasReady(): boolean {
    if (this.outstanding !== null) return false;
    return (
      this.msgs.length > 0 ||
      this.readStates.length > 0 ||
      this.bcast !== Bcast.None ||
      this.readBroadcast ||
      this.lead !== this.prevLeader ||
      this.role !== this.prevRole ||
      this.term !== this.prevTerm ||
      this.vote !== this.prevVote ||
      this.log.committed !== this.prevCommit ||
      this.snapshotPending !== null ||
      this.log.hasUnstableToHandOut() ||
      this.log.hasNextCommitted()
    );
  }

  ready(): Ready {
    if (this.outstanding !== null) this.fail('ready() called again before advance()');
    this.flushBroadcasts();
    const commit = this.log.committed;
    const softChanged = this.lead !== this.prevLeader || this.role !== this.prevRole;
    const hardChanged = this.term !== this.prevTerm || this.vote !== this.prevVote || commit !== this.prevCommit;
    const snapshot = this.snapshotPending;
    this.snapshotPending = null;
    // A snapshot supersedes the log: entries accepted before it are not
    // handed out (advance() could not count them as persisted in a log the
    // snapshot replaced); restore() drops them.
    const entries = snapshot !== null ? EMPTY_ENTRIES : this.log.takeUnstable();
    const rd: Ready = {
      softState: softChanged ? { leader: this.lead, role: this.role } : null,
      hardState: hardChanged ? { term: this.term, vote: this.vote, commit } : null,
      entries,
      snapshot,
      committedEntries: snapshot !== null ? EMPTY_ENTRIES : this.log.nextCommitted(this.cfg.maxApplyBytes),
      messages: this.msgs.length > 0 ? this.msgs : EMPTY_MESSAGES,
      readStates: this.readStates.length > 0 ? this.readStates : EMPTY_READ_STATES,
      mustSync: entries.length > 0 || this.term !== this.prevTerm || this.vote !== this.prevVote,
    };
    if (this.msgs.length > 0) this.msgs = [];
    if (this.readStates.length > 0) this.readStates = [];
    this.prevLeader = this.lead;
    this.prevRole = this.role;
    this.prevTerm = this.term;
    this.prevVote = this.vote;
    this.prevCommit = commit;
    const ce = rd.committedEntries;
    if (ce.length > 0 && ce[0].index !== this.log.applied + 1) this.fail(`committed entries start at ${ce[0].index}`);
    if (ce.length > 0 && ce[ce.length - 1].index > commit) this.fail('handing out uncommitted entries');
    this.outstanding = rd;
    return rd;
  }

  advance(rd: Ready): void {
    if (this.outstanding === null) this.fail('advance() without an outstanding ready()');
    if (rd !== this.outstanding) this.fail('advance() with a Ready that is not the outstanding one');
    this.outstanding = null;
    if (rd.entries.length > 0) this.onPersisted(rd.entries[rd.entries.length - 1]);
    if (rd.snapshot !== null) this.finishSnapshot(rd.snapshot);
    else if (rd.committedEntries.length > 0) this.onApplied(rd.committedEntries);
    if (this.log.applied > this.log.committed) this.fail('applied beyond commit after advance');
    if (this.log.lastIndex() === this.log.stableIndex() && this.cfg.storage.lastIndex() !== this.log.stableIndex()) {
      this.fail(`storage last index ${this.cfg.storage.lastIndex()} != stable index ${this.log.stableIndex()}`);
    }
    this.checkInvariants();
  }

  /** The current term, without building a status object (hot path: every proposal). */
  currentTerm(): number {
    return this.term;
  }

  status(): RaftStatus {
    const s: RaftStatus = {
      id: this.id,
      group: this.group,
      role: this.role,
      leader: this.lead,
      term: this.term,
      vote: this.vote,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      voters: this.voters.slice(),
    };
    if (this.role === Role.Leader) {
      const p: Record<NodeId, ProgressStatus> = {};
      for (const pr of this.voterProgress) p[pr.id] = { match: pr.match, next: pr.next, state: pr.state };
      s.progress = p;
    }
    return s;
  }

  // ------------------------------------------------------------ transitions

  /** O(1) checks run after every public mutation. */
  private checkInvariants(): void {
    const { committed, applied } = this.log;
    if (committed < this.commitFloor) this.fail(`commit regressed from ${this.commitFloor}`);
    this.commitFloor = committed;
    if (committed > this.log.lastIndex()) this.fail('commit beyond last index');
    if (applied > committed) this.fail('applied beyond commit');
    if ((this.role === Role.Leader) !== (this.lead === this.id)) this.fail(`role/leader mismatch (leader ${this.lead})`);
    if (this.role === Role.Candidate && this.vote !== this.id) this.fail('candidate did not vote for itself');
    if (this.lead !== '' && this.lead !== this.termLeader) this.fail(`leader ${this.lead} is not the term's leader ${this.termLeader}`);
    if (this.role === Role.Leader && !this.isVoter && this.confLog.length === 0) this.fail('leader is not a voter and its removal is applied');
  }

  private fail(what: string): never {
    const log = this.log as RaftLog | undefined;
    const idx = log === undefined ? 'log n/a' : `commit ${log.committed} applied ${log.applied} last ${log.lastIndex()}`;
    throw new RaftInvariantError(
      `raft invariant violated: group ${this.group} node ${this.id} term ${this.term} ${ROLE_NAMES[this.role]} ${idx}: ${what}`,
    );
  }

  private reset(term: number): void {
    if (term < this.term) this.fail(`term regression to ${term}`);
    if (term !== this.term) {
      this.term = term;
      this.vote = '';
      this.termLeader = '';
    }
    this.lead = '';
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.leadTransferee = '';
    this.votes.clear();
    const last = this.log.lastIndex();
    for (const pr of this.progress.values()) pr.resetFor(last);
    this.pendingConfIndex = 0;
    this.bcast = Bcast.None;
    this.readRound = 0;
    this.pendingReads.length = 0;
    this.readsAwaitingCommit.length = 0;
    this.readBroadcast = false;
  }

  private resetRandomizedElectionTimeout(): void {
    const r = this.cfg.random();
    if (!(r >= 0 && r < 1)) this.fail(`random() returned ${r}, expected [0, 1)`);
    this.randomizedElectionTimeout = this.cfg.electionTicks + Math.floor(r * this.cfg.electionTicks);
  }

  private setLead(lead: NodeId): void {
    if (this.termLeader !== '' && this.termLeader !== lead) this.fail(`two leaders in one term: ${this.termLeader} and ${lead}`);
    if (lead === this.id && this.role !== Role.Leader) this.fail('self set as leader while not leader');
    this.termLeader = lead;
    this.lead = lead;
  }

  private becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.role = Role.Follower;
    this.stepRole = this.stepFollowerFn;
    this.tickRole = this.tickElectionFn;
    if (lead !== '') this.setLead(lead);
  }

  private becomePreCandidate(): void {
    if (this.role === Role.Leader) this.fail('invalid transition leader -> pre-candidate');
    if (!this.isVoter) this.fail('non-voter cannot campaign');
    this.votes.clear();
    this.lead = '';
    this.role = Role.PreCandidate;
    this.stepRole = this.stepCandidateFn;
    this.tickRole = this.tickElectionFn;
  }

  private becomeCandidate(): void {
    if (this.role === Role.Leader) this.fail('invalid transition leader -> candidate');
    if (!this.isVoter) this.fail('non-voter cannot campaign');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
    this.stepRole = this.stepCandidateFn;
    this.tickRole = this.tickElectionFn;
  }

  private becomeLeader(): void {
    if (this.role !== Role.Candidate) this.fail(`invalid transition ${ROLE_NAMES[this.role]} -> leader`);
    if (this.vote !== this.id) this.fail('leader did not vote for itself');
    this.reset(this.term);
    this.role = Role.Leader;
    this.stepRole = this.stepLeaderFn;
    this.tickRole = this.tickHeartbeatFn;
    this.setLead(this.id);
    const self = this.progress.get(this.id);
    if (self === undefined) this.fail('leader has no progress for itself');
    self.match = this.log.stableIndex();
    self.becomeReplicate();
    self.recentActive = true;
    // No conf change until this empty entry of our term is applied: entries of
    // earlier terms are then applied too, and a conf change proposed earlier
    // could overwrite one a later leader committed (the thesis's erratum).
    this.pendingConfIndex = this.appendEntry(EntryType.Normal, EMPTY_DATA);
  }

  private hup(kind: CampaignKind): void {
    if (this.role === Role.Leader || !this.isVoter) return;
    if (this.snapshotPending !== null || (this.outstanding !== null && this.outstanding.snapshot !== null)) return;
    this.campaign2(kind);
  }

  private campaign2(kind: CampaignKind): void {
    if (!this.isVoter) this.fail('non-voter campaigning');
    let voteType: MessageType;
    let term: number;
    if (kind === CampaignKind.PreElection) {
      this.becomePreCandidate();
      voteType = MessageType.PreVote;
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      voteType = MessageType.Vote;
      term = this.term;
    }
    if (this.poll(this.id, true) === VoteResult.Won) {
      // Single voter: won already.
      if (kind === CampaignKind.PreElection) this.campaign2(CampaignKind.Election);
      else this.becomeLeader();
      return;
    }
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const pr of this.voterPeers) {
      const m = this.newMsg(voteType, pr.id);
      m.term = term;
      m.index = lastIndex;
      m.logTerm = lastTerm;
      m.context = kind === CampaignKind.Transfer ? CAMPAIGN_TRANSFER_CONTEXT : 0;
      this.msgs.push(m);
    }
    if (this.role === Role.Leader) this.fail('campaign sent votes as leader');
  }

  private poll(from: NodeId, granted: boolean): VoteResult {
    if (this.role !== Role.Candidate && this.role !== Role.PreCandidate) this.fail('poll outside an election');
    if (!this.votes.has(from)) this.votes.set(from, granted);
    return voteResult(this.voters, this.votes);
  }

  // ------------------------------------------------------------------ ticks

  private tickElection(): void {
    this.electionElapsed++;
    if (!this.isVoter || this.electionElapsed < this.randomizedElectionTimeout) return;
    this.electionElapsed = 0;
    this.hup(this.cfg.preVote ? CampaignKind.PreElection : CampaignKind.Election);
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum && !this.quorumActive()) {
        this.becomeFollower(this.term, '');
        return;
      }
      // A transfer that did not finish within an election timeout is abandoned.
      this.leadTransferee = '';
    }
    if (this.role !== Role.Leader) this.fail('heartbeat tick while not leader');
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    } else this.sendOwedCommits();
  }

  /** A heartbeat to each follower that has not been told the commit index it could take. */
  private sendOwedCommits(): void {
    const commit = this.log.committed;
    for (const pr of this.followers) if (pr.sentCommit < Math.min(pr.match, commit)) this.sendHeartbeat(pr, commit);
  }

  /** Check-quorum: did a majority of voters talk to us since the last check? Resets the marks. */
  private quorumActive(): boolean {
    // A leader whose removal is pending does not count itself.
    let active = this.isVoter ? 1 : 0;
    for (const pr of this.voterPeers) {
      if (pr.recentActive) active++;
      pr.recentActive = false;
    }
    return active >= majority(this.voters.length);
  }

  // ------------------------------------------------------------------ steps

  /** Returns false when the message must be dropped. */
  private stepHigherTerm(m: Message): boolean {
    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      const force = m.type === MessageType.Vote && m.context === CAMPAIGN_TRANSFER_CONTEXT;
      const inLease = this.cfg.checkQuorum && this.lead !== '' && this.electionElapsed < this.cfg.electionTicks;
      // We heard from a live leader recently: do not let a disrupting node in.
      if (!force && inLease) return false;
    }
    if (m.type === MessageType.PreVote) return true; // never change term on a pre-vote
    if (m.type === MessageType.PreVoteResp && !m.reject) return true; // granted for our future term
    const fromLeader = m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap;
    this.becomeFollower(m.term, fromLeader ? m.from : '');
    if (this.term !== m.term) this.fail('term not adopted');
    return true;
  }

  private stepLowerTerm(m: Message): void {
    if ((this.cfg.checkQuorum || this.cfg.preVote) && (m.type === MessageType.App || m.type === MessageType.Heartbeat)) {
      // A stale leader (e.g. healed from a partition): our higher term makes it step down.
      this.msgs.push(this.newMsg(MessageType.AppResp, m.from));
    } else if (m.type === MessageType.PreVote) {
      const r = this.newMsg(MessageType.PreVoteResp, m.from);
      r.reject = true;
      this.msgs.push(r);
    }
  }

  private handleVoteRequest(m: Message): void {
    const pre = m.type === MessageType.PreVote;
    const respType = pre ? MessageType.PreVoteResp : MessageType.VoteResp;
    const canVote = this.vote === m.from || (this.vote === '' && this.lead === '') || (pre && m.term > this.term);
    const r = this.newMsg(respType, m.from);
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      r.term = m.term;
      if (!pre) {
        if (m.term !== this.term) this.fail(`vote for term ${m.term} in term ${this.term}`);
        if (this.vote !== '' && this.vote !== m.from) this.fail(`second vote in term: ${this.vote} then ${m.from}`);
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      r.reject = true;
    }
    this.msgs.push(r);
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.App:
        this.electionElapsed = 0;
        this.setLead(m.from);
        this.handleApp(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.setLead(m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.setLead(m.from);
        this.handleSnap(m);
        return;
      case MessageType.TimeoutNow:
        this.hup(CampaignKind.Transfer);
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ context: m.context, index: m.index });
        return;
      default:
        // ReadIndex sent to a non-leader, or answers to a role we left: drop.
        return;
    }
  }

  private stepCandidate(m: Message): void {
    if (m.term < this.term) this.fail(`candidate stepped a stale message of term ${m.term}`);
    switch (m.type) {
      case MessageType.App:
      case MessageType.Heartbeat:
      case MessageType.Snap:
        // A leader exists in this term: follow it.
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case MessageType.PreVoteResp:
      case MessageType.VoteResp: {
        const wanted = this.role === Role.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
        if (m.type !== wanted) return;
        const res = this.poll(m.from, !m.reject);
        if (res === VoteResult.Won) {
          if (this.role === Role.PreCandidate) this.campaign2(CampaignKind.Election);
          else this.becomeLeader();
        } else if (res === VoteResult.Lost) {
          this.becomeFollower(this.term, '');
        }
        return;
      }
      default:
        return;
    }
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.AppResp:
        this.handleAppResp(m);
        return;
      case MessageType.HeartbeatResp:
        this.handleHeartbeatResp(m);
        return;
      case MessageType.ReadIndex:
        this.handleReadRequest(m.from, m.context);
        return;
      case MessageType.App:
      case MessageType.Heartbeat:
      case MessageType.Snap:
        return this.fail(`two leaders in one term: ${this.id} and ${m.from}`);
      default:
        return;
    }
  }

  // ------------------------------------------------------- follower handlers

  private snapshotInFlight(): boolean {
    return this.snapshotPending !== null || (this.outstanding !== null && this.outstanding.snapshot !== null);
  }

  private handleApp(m: Message): void {
    if (this.role !== Role.Follower) this.fail('App handled by a non-follower');
    // While a snapshot is being installed the log must not move; the leader re-probes.
    if (this.snapshotInFlight()) return;
    const r = this.newMsg(MessageType.AppResp, m.from);
    if (m.index < this.log.committed) {
      r.index = this.log.committed;
      this.msgs.push(r);
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew >= 0) {
      if (m.entries.length > 0) this.trackConfChanges(m.entries);
      r.index = lastNew;
      this.msgs.push(r);
      return;
    }
    // Reject, with a hint: the last index whose term is <= the leader's term at m.index.
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    r.index = m.index;
    r.reject = true;
    r.rejectHint = hint;
    r.logTerm = Math.max(this.log.termOf(hint), 0);
    if (hint > this.log.lastIndex()) this.fail(`reject hint ${hint} beyond last index`);
    this.msgs.push(r);
  }

  private handleHeartbeat(m: Message): void {
    if (this.role !== Role.Follower) this.fail('Heartbeat handled by a non-follower');
    if (m.commit > this.log.lastIndex()) this.fail(`heartbeat commit ${m.commit} beyond last index`);
    this.log.commitTo(m.commit);
    const r = this.newMsg(MessageType.HeartbeatResp, m.from);
    r.context = m.context;
    this.msgs.push(r);
  }

  private handleSnap(m: Message): void {
    const meta = m.snapshot;
    if (meta === null) this.fail('Snap message without snapshot meta');
    if (this.role !== Role.Follower) this.fail('Snap handled by a non-follower');
    if (this.snapshotInFlight()) return;
    const r = this.newMsg(MessageType.AppResp, m.from);
    if (meta.index > this.log.committed && !this.log.matchTerm(meta.index, meta.term)) {
      // Wanted: handed to the driver by the next Ready; answered after advance().
      this.snapshotPending = meta;
      this.snapshotFrom = m.from;
      return;
    }
    // Stale, or our log already has it: just learn the commit index.
    if (meta.index > this.log.committed) this.log.commitTo(meta.index);
    r.index = this.log.committed;
    this.msgs.push(r);
  }

  /** advance() of the Ready that carried the snapshot: the driver installed it. */
  private finishSnapshot(meta: SnapshotMeta): void {
    if (this.role === Role.Leader) this.fail('leader installing a snapshot');
    if (this.cfg.storage.snapshotMeta().index !== meta.index) this.fail(`driver did not install snapshot ${meta.index}`);
    this.log.restore(meta);
    this.appliedConf = meta.conf.voters.slice();
    this.confLog.length = 0;
    this.syncConf();
    const to = this.lead !== '' ? this.lead : this.snapshotFrom;
    if (to !== '' && to !== this.id) {
      const r = this.newMsg(MessageType.AppResp, to);
      r.index = meta.index;
      this.msgs.push(r);
    }
  }

  // --------------------------------------------------------- leader handlers

  private handleAppResp(m: Message): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    if (m.reject) {
      this.handleAppReject(pr, m);
      return;
    }
    if (m.index > this.log.lastIndex()) this.fail(`${m.from} acked ${m.index} beyond our last index`);
    if (!(pr.maybeUpdate(m.index) || (pr.match === m.index && pr.state === ProgressState.Probe))) return;
    if (pr.state === ProgressState.Probe) {
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Snapshot && pr.match + 1 >= this.log.firstIndex()) {
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Replicate) {
      pr.inflights.freeLE(m.index);
    }
    if (this.maybeCommit()) this.bcast = Bcast.Commit;
    while (this.sendAppend(pr, false)) {
      // pipeline until paused or caught up
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) this.sendTimeoutNow(m.from);
    if (pr.match >= pr.next) this.fail(`progress ${pr.id}: match ${pr.match} >= next ${pr.next}`);
  }

  private handleAppReject(pr: Progress, m: Message): void {
    if (m.index > this.log.lastIndex()) this.fail(`${m.from} rejected index ${m.index} we never sent`);
    let hint = m.rejectHint;
    if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm);
    if (!pr.maybeDecrTo(m.index, hint)) return;
    if (pr.state === ProgressState.Replicate) pr.becomeProbe();
    this.sendAppend(pr, true);
    if (pr.next <= pr.match) this.fail(`progress ${pr.id}: next ${pr.next} <= match ${pr.match}`);
  }

  private handleHeartbeatResp(m: Message): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    pr.probeSent = false;
    if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirstOne();
    if (pr.match < this.log.lastIndex()) this.sendAppend(pr, true);
    if (m.context <= 0 || this.pendingReads.length === 0) return;
    if (m.context > this.readRound) this.fail(`heartbeat ack for read round ${m.context} > ${this.readRound}`);
    if (m.context > pr.readAck) pr.readAck = m.context;
    this.releaseConfirmedReads();
  }

  private handleReadRequest(from: NodeId, context: number): void {
    if (this.role !== Role.Leader) this.fail('read request handled by a non-leader');
    if (this.pendingReads.length + this.readsAwaitingCommit.length >= READS_PENDING_MAX) {
      if (from === this.id) throw new ProposalDroppedError(this.group, 'too many pending reads');
      return;
    }
    // Our commit index is only known to be current once an entry of our term committed.
    if (this.log.termOf(this.log.committed) !== this.term) {
      this.readsAwaitingCommit.push({ from, context, index: 0, round: 0 });
      return;
    }
    if (this.voters.length === 1 && this.isVoter) {
      this.respondRead(from, context, this.log.committed);
      return;
    }
    this.readRound++;
    this.pendingReads.push({ from, context, index: this.log.committed, round: this.readRound });
    this.readBroadcast = true;
  }

  private releaseConfirmedReads(): void {
    const scratch = this.quorumScratch;
    const vp = this.voterProgress;
    for (let i = 0; i < vp.length; i++) scratch[i] = vp[i].id === this.id ? this.readRound : vp[i].readAck;
    const confirmed = committedIndex(scratch);
    if (confirmed > this.readRound) this.fail(`confirmed read round ${confirmed} > ${this.readRound}`);
    let n = 0;
    while (n < this.pendingReads.length && this.pendingReads[n].round <= confirmed) {
      const r = this.pendingReads[n];
      this.respondRead(r.from, r.context, r.index);
      n++;
    }
    if (n > 0) this.pendingReads.splice(0, n);
  }

  private respondRead(from: NodeId, context: number, index: number): void {
    if (index > this.log.committed) this.fail(`read index ${index} beyond commit`);
    if (from === this.id) {
      this.readStates.push({ context, index });
      return;
    }
    const m = this.newMsg(MessageType.ReadIndexResp, from);
    m.index = index;
    m.context = context;
    this.msgs.push(m);
  }

  private maybeCommit(): boolean {
    if (this.role !== Role.Leader) this.fail('maybeCommit on a non-leader');
    const scratch = this.quorumScratch;
    const vp = this.voterProgress;
    for (let i = 0; i < vp.length; i++) scratch[i] = vp[i].match;
    const mci = committedIndex(scratch);
    if (mci <= this.log.committed) return false;
    // Raft §5.4.2: only entries of the current term commit by counting replicas.
    if (this.log.termOf(mci) !== this.term) return false;
    if (mci > this.log.lastIndex()) this.fail(`quorum match ${mci} beyond last index`);
    this.log.commitTo(mci);
    if (this.readsAwaitingCommit.length > 0) {
      const waiting = this.readsAwaitingCommit;
      this.readsAwaitingCommit = [];
      for (const r of waiting) this.handleReadRequest(r.from, r.context);
    }
    return true;
  }

  // ------------------------------------------------------------------ sending

  private newMsg(type: MessageType, to: NodeId): Message {
    return {
      type,
      group: this.group,
      from: this.id,
      to,
      term: this.term,
      logTerm: 0,
      index: 0,
      entries: EMPTY_ENTRIES,
      commit: 0,
      reject: false,
      rejectHint: 0,
      snapshot: null,
      context: 0,
    };
  }

  /** Sends an App (or a Snap) to `pr` if it is not paused. Returns whether a message went out. */
  private sendAppend(pr: Progress, sendIfEmpty: boolean): boolean {
    if (pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const last = this.log.lastIndex();
    if (prevIndex > last) this.fail(`progress ${pr.id}: next ${pr.next} beyond last index + 1`);
    if (prevIndex < this.log.firstIndex() - 1) return this.sendSnapshot(pr);
    const prevTerm = this.log.termOf(prevIndex);
    if (prevTerm < 0) this.fail(`no term for ${prevIndex}`);
    const ents = pr.next <= last ? this.log.slice(pr.next, last + 1, this.cfg.maxMsgBytes) : EMPTY_ENTRIES;
    if (ents.length === 0 && !sendIfEmpty) return false;
    const m = this.newMsg(MessageType.App, pr.id);
    m.index = prevIndex;
    m.logTerm = prevTerm;
    m.entries = ents;
    m.commit = this.log.committed;
    this.msgs.push(m);
    pr.sentEntries(ents.length, prevIndex + ents.length);
    pr.sentCommit = Math.max(pr.sentCommit, Math.min(m.commit, prevIndex + ents.length));
    return true;
  }

  private sendSnapshot(pr: Progress): boolean {
    // Only to nodes that answer: a snapshot is expensive.
    if (!pr.recentActive) return false;
    const meta = this.cfg.storage.snapshotMeta();
    if (meta.index < this.log.firstIndex() - 1 || meta.index === 0) this.fail(`no snapshot covers compacted index ${this.log.firstIndex() - 1}`);
    if (meta.index > this.log.committed) this.fail(`snapshot ${meta.index} beyond commit`);
    pr.becomeSnapshot(meta.index);
    const m = this.newMsg(MessageType.Snap, pr.id);
    m.snapshot = meta;
    m.index = meta.index;
    m.logTerm = meta.term;
    this.msgs.push(m);
    return true;
  }

  private sendTimeoutNow(to: NodeId): void {
    this.msgs.push(this.newMsg(MessageType.TimeoutNow, to));
  }

  private bcastHeartbeat(): void {
    if (this.role !== Role.Leader) this.fail('heartbeat from a non-leader');
    const commit = this.log.committed;
    for (const pr of this.followers) this.sendHeartbeat(pr, commit);
  }

  private sendHeartbeat(pr: Progress, commit: number): void {
    const m = this.newMsg(MessageType.Heartbeat, pr.id);
    // Never past what it has: its log may still diverge beyond its match.
    m.commit = Math.min(pr.match, commit);
    m.context = this.readRound;
    this.msgs.push(m);
    pr.sentCommit = Math.max(pr.sentCommit, m.commit);
  }

  /** Sends what propose()/commit/read calls of this turn accumulated, batched per follower. */
  private flushBroadcasts(): void {
    if (this.role !== Role.Leader) {
      if (this.bcast !== Bcast.None || this.readBroadcast) this.fail('leader broadcast pending on a non-leader');
      return;
    }
    if (this.bcast !== Bcast.None) {
      const commit = this.bcast === Bcast.Commit;
      this.bcast = Bcast.None;
      // A leader being removed steps down once that commits: it tells everyone now.
      for (const pr of this.followers) this.sendAppend(pr, commit && (!this.isVoter || !this.voterPeers.includes(pr)));
    }
    if (this.readBroadcast) {
      this.readBroadcast = false;
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  // ---------------------------------------------------------- log and conf

  private appendEntry(type: EntryType, data: Uint8Array): number {
    if (this.role !== Role.Leader) this.fail('append on a non-leader');
    const index = this.log.lastIndex() + 1;
    const e: Entry = { term: this.term, index, type, data };
    this.log.appendOne(e);
    if (this.bcast === Bcast.None) this.bcast = Bcast.Entries;
    if (this.log.lastIndex() !== index) this.fail('append did not extend the log');
    return index;
  }

  /** advance(): entries up to `last` are in storage. */
  private onPersisted(last: Entry): void {
    const before = this.log.stableIndex();
    this.log.stableTo(last.index, last.term);
    if (this.log.stableIndex() < before) this.fail('stable index regressed');
    if (this.role !== Role.Leader) return;
    const self = this.progress.get(this.id);
    if (self !== undefined) self.maybeUpdate(this.log.stableIndex());
    else if (this.isVoter) this.fail('leader has no progress for itself');
    if (this.maybeCommit()) this.bcast = Bcast.Commit;
  }

  /** advance(): `ents` were applied by the driver. Their conf changes are in effect since they were appended. */
  private onApplied(ents: Entry[]): void {
    if (ents[0].index !== this.log.applied + 1) this.fail(`applied ${ents[0].index} after ${this.log.applied}`);
    this.log.appliedTo(ents[ents.length - 1].index);
    let confs = false;
    for (let i = 0; i < ents.length; i++) {
      if (ents[i].type !== EntryType.ConfChange) continue;
      const c = this.confLog.shift();
      if (c === undefined || c.index !== ents[i].index || c.term !== ents[i].term) {
        this.fail(`applied conf change ${ents[i].index}/${ents[i].term} was not tracked (next tracked ${c === undefined ? 'none' : `${c.index}/${c.term}`})`);
      }
      this.appliedConf = c.voters;
      confs = true;
    }
    if (confs) this.syncConf();
    // Our own removal is committed: the remaining voters elect a leader among themselves.
    if (this.role === Role.Leader && !this.isVoter && this.confLog.length === 0) this.becomeFollower(this.term, '');
  }

  /** A follower appended `ents`: a truncated suffix takes its conf changes with it; new ones take effect. */
  private trackConfChanges(ents: readonly Entry[]): void {
    const cl = this.confLog;
    let n = cl.length;
    // Compacted entries were applied by the driver (ahead of advance()): committed, never truncated.
    while (n > 0 && cl[n - 1].index >= this.log.firstIndex() && !this.log.matchTerm(cl[n - 1].index, cl[n - 1].term)) n--;
    const truncated = n < cl.length;
    cl.length = n;
    const after = n > 0 ? cl[n - 1].index : this.log.applied;
    let added = false;
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i];
      if (e.type !== EntryType.ConfChange || e.index <= after) continue;
      cl.push({ index: e.index, term: e.term, voters: decodeConfState(e.data).voters });
      added = true;
    }
    if (truncated || added) this.syncConf();
  }

  /**
   * Brings voters and progress in line with the confs: the newest one votes
   * and commits; a leader also replicates to every voter of an older conf
   * still in the log, so a removed voter gets the entry that removes it (and
   * retires) — the thesis's leader forgets it at once, etcd's at apply.
   */
  private syncConf(): void {
    const newest = this.confLog.length > 0 ? this.confLog[this.confLog.length - 1].voters : this.appliedConf;
    const tracked = new Set(this.appliedConf);
    for (const c of this.confLog) for (const v of c.voters) tracked.add(v);
    const sameVoters = newest.length === this.voters.length && newest.every((v, i) => v === this.voters[i]);
    if (sameVoters && tracked.size === this.progress.size && [...tracked].every((v) => this.progress.has(v))) return;
    const voters = newest.slice();
    if (new Set(voters).size !== voters.length) this.fail(`duplicate voters in ${voters.join(',')}`);
    for (const [id, pr] of [...this.progress]) {
      if (tracked.has(id)) continue;
      this.progress.delete(id);
      // Its removal is applied: one last heartbeat tells it the commit index, if it has the entry.
      if (this.role === Role.Leader && id !== this.id) this.sendHeartbeat(pr, this.log.committed);
    }
    const added: Progress[] = [];
    for (const v of tracked) {
      if (this.progress.has(v)) continue;
      const pr = new Progress(v, this.cfg.maxInflight);
      pr.resetFor(this.log.lastIndex());
      pr.recentActive = true; // do not let check-quorum count a brand-new voter against us
      this.progress.set(v, pr);
      added.push(pr);
    }
    this.voters = voters;
    this.isVoter = voters.includes(this.id);
    this.voterProgress = voters.map((v) => this.progress.get(v) as Progress);
    this.voterPeers = this.voterProgress.filter((p) => p.id !== this.id);
    this.followers = [...this.progress.values()].filter((p) => p.id !== this.id);
    this.quorumScratch = new Array<number>(voters.length).fill(0);
    if (this.role === Role.Leader) this.onLeaderConfChanged(added);
  }

  private onLeaderConfChanged(added: Progress[]): void {
    if (this.leadTransferee !== '' && !this.progress.has(this.leadTransferee)) this.leadTransferee = '';
    if (this.maybeCommit()) this.bcast = Bcast.Commit;
    for (const pr of added) {
      if (pr.id === this.id) this.fail('leader added itself');
      this.sendAppend(pr, true);
    }
  }
}
