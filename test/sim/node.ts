// One simulated node: several Raft groups (multi-raft), one SimDisk, and a
// driver that follows the Ready contract at the top of runtime/raft/core.ts
// the way runtime/driver.ts does:
//   turn: every dirty group's Ready → leader App/Heartbeat/Snap leave at once;
//         hard states (when mustSync) and entries go to ONE WAL batch; the
//         committed entries (durable already) are applied and their
//         proposals answered; the fsync completes later (virtual time), and
//         only then do the other messages leave, the in-memory log mirror
//         grows and the cores advance. One turn's write in flight at a time.
//   apply: the real conversation apply(), whose writes go to the state store
//         unsynced; a periodic checkpoint syncs them and recycles the WAL
//         segments they cover (disk.ts).
//   snapshot: a leader sends its applied state when a follower needs
//         compacted entries; the follower installs it with the Ready that
//         carries it, durably and atomically with its log reset.
//   quiescence: an idle group's leader stops ticking and tells its
//         followers, who stop too; any message but a heartbeat, a proposal or
//         a read wakes a group; per node pair keepalives, and a peer not heard
//         from for a while wakes the groups it leads (runtime/cluster.ts).
//   crash: memory is gone, the disk keeps what was synced (and maybe a
//         prefix of the rest); restart rebuilds each group from the disk. A
//         WAL that storage/wal.ts would refuse at open (a hole in any group's
//         log after its applied index, hosted or not) or a replica whose core
//         cannot start fails the run: the runtime's worker would exit at
//         every start, the node would never come back.
//   membership (runtime/membership.ts): a node's data dir has an
//         incarnation; replica ids name one replica's life (founding: the
//         node name, serial 0; added later: node#incarnation.serial, the
//         serial being the log index of the conf change that adds it: the
//         group leader appends it to the coordinator's node#incarnation in
//         changeConf). A founding incarnation hosts the founding replica of
//         a group unless the group has a replica record; a record names the
//         replica hosted (or none). A leader's first App, Heartbeat or Snap
//         to an id `<node>#<incarnation>.<term>.<index>` of this node's
//         incarnation, for a group it hosts nothing of, newer than the last
//         one retired here for the group, starts it: record synced,
//         hard state reset in the next WAL write, empty with the founding
//         conf; the message is dropped (the leader resends). Messages are
//         dropped only when not for this replica or from itself (the
//         transport drops a message whose sender replica is not on the
//         sending node); conf changes take effect when in the log
//         (raft/core.ts), the voters as of the applied index are persisted
//         with the applied state and carried by snapshots. The
//         coordinator's changes are proposed only if the voters are still
//         the ones it saw, and a removal only if no remaining voter lags
//         (runtime/membership.ts lags).
//   retirement: a replica that applies a conf change without itself, after
//         the one that added it, is retired after that turn's write: it
//         stops, what it owes is answered not-leader, its state is deleted
//         and the record {replica: null, retired: its id} written in one synced write;
//         its WAL records stay until their segments are recycled.
//   wipe: the node crashes and loses its disk; it comes back as a new
//         incarnation that hosts nothing until leaders start its replicas.
import { patchNow } from '../../actors/commands.js';
import type { ApplyResult, ConversationRecord } from '../../actors/conversation.js';
import { notLeader, unavailable } from '../../actors/errors.js';
import { RaftCore, NotLeaderError, ProposalDroppedError } from '../../runtime/raft/core.js';
import { QUIESCE_TYPE } from '../../runtime/raft/codec.js';
import { QUIESCE_AFTER_TICKS, followerMayQuiesce, leaderIdle, quiesceMessage } from '../../runtime/quiesce.js';
import { campaignDelayTicks, incarnationOf, isNewerReplica, isPreferredLeader, lags, needsSerial, nodeOf, removedBy, replicaIdOf, withSerial, type Founding } from '../../runtime/membership.js';
import { sameVoters } from '../../runtime/raft/conf.js';
import { MemoryStorage } from '../../runtime/raft/log.js';
import { EntryType, MessageType, Role, type Entry, type Message, type NodeId, type Ready } from '../../runtime/raft/types.js';
import { applyReply, errorReply, type Reply } from '../../runtime/replies.js';
import { SimDisk, type RecoveredGroup, type WalOp } from './disk.js';
import { emptyImage, GroupMachine, type GroupImage } from './machine.js';
import type { Envelope, SimNetwork } from './network.js';
import type { RaftObserver } from './observer.js';
import type { Rng } from './rng.js';
import type { Scheduler } from './scheduler.js';
import type { SimStats } from './stats.js';

/** Wall-clock origin of virtual time, for the timestamps apply() writes. */
export const EPOCH_MS = Date.UTC(2025, 0, 1);
/** As runtime/cluster.ts: while peers are down, the workers are told again this often, in keepalive periods. */
const PEERS_DOWN_REPEAT_KEEPALIVES = 10;

/** The node's storage cannot be opened: the runtime would never bring it back (a liveness failure). */
export class OpenFailure extends Error {
  override readonly name = 'OpenFailure';
}

export interface DriverKnobs {
  electionTicks: number;
  heartbeatTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  maxMsgBytes: number;
  maxInflight: number;
  maxApplyBytes: number;
  /** Applied entries kept in the in-memory log for followers to catch up from (fewer: more snapshots). */
  retainEntries: number;
  fsyncMinMs: number;
  fsyncMaxMs: number;
  /** Idle groups stop ticking (runtime/driver.ts does it always). */
  quiesce: boolean;
  /** A peer that got nothing else for this long gets an empty packet. */
  keepaliveMs: number;
  /** A peer not heard from for this long is down: the quiesced groups it leads wake up. */
  peerDownMs: number;
  /** WAL segment size, in batches (storage/wal.ts segments, recycled whole). */
  segmentBatches: number;
}

/** A client's request as it reaches a node. */
export interface ClientRequest {
  client: number;
  /** Unique per attempt: answers to an attempt the client gave up on are ignored. */
  attempt: number;
  group: number;
  /** Propose: an encoded command; read: the conversation whose record and messages are read. */
  kind: 'propose' | 'read';
  cmd: Uint8Array;
  conversation: string;
}

export interface ReadResult {
  record: ConversationRecord | null;
  messages: readonly string[];
}

/** What a node answers: the runtime's Reply (as the gateway would map it), or a read's result. */
export type Answer = { kind: 'reply'; reply: Reply; leader: NodeId } | { kind: 'read'; result: ReadResult };

export interface NodeEnv {
  scheduler: Scheduler;
  rng: Rng;
  network: SimNetwork;
  observer: RaftObserver;
  stats: SimStats;
  knobs: DriverKnobs;
  answer: (req: ClientRequest, a: Answer) => void;
  trace: (line: string) => void;
  /** The driver stopped a group (an assertion failed) and killed its process: the supervisor restarts it. */
  stopped: (node: SimNode, reason: string) => void;
  /** Founding voters of every group of the run (the founding replica ids are the node names). */
  foundingVoters: ReadonlyMap<number, readonly NodeId[]>;
  founding: Founding;
  /** A node's current incarnation, as its hellos say (runtime/cluster.ts). */
  incarnationOf: (node: NodeId) => string;
}

/** What became of a coordinator's membership change at the group's leader. */
export type ConfChangeOutcome = 'proposed' | 'stale' | 'lagging' | 'refused';

interface Proposal {
  req: ClientRequest;
  term: number;
}

/** One group's replica on this node. */
export class Replica {
  readonly proposals = new Map<number, Proposal>();
  readonly reads = new Map<number, ClientRequest>();
  readonly readsWaiting: { req: ClientRequest; index: number }[] = [];
  /** States streamed with Snap messages, by applied index, until a Ready takes one or shows none was wanted. */
  readonly incomingSnapshots = new Map<number, GroupImage>();
  readSeq = 0;
  role = Role.Follower;
  leader: NodeId = '';
  /** Term of the leadership last reported to the observer. */
  leaderTerm = 0;
  /** Highest commit index reported to the observer. */
  commitSeen = 0;
  /** No ticks until a message (other than a heartbeat), a proposal, a read or a peer-down wakes it. */
  quiesced = false;
  idleTicks = 0;
  /** Applied a conf change that removed it while a voter: retired once the turn's write is done. */
  retiring = false;

  constructor(
    readonly group: number,
    /** This replica's id (runtime/membership.ts). */
    readonly self: string,
    readonly core: RaftCore,
    readonly storage: MemoryStorage,
    public machine: GroupMachine,
  ) {}

  /** Voters as of the applied index. */
  get voters(): readonly string[] {
    return this.machine.voters;
  }

  /** Not (yet) a voter in its own view: a replica added later that awaits the leader's state. */
  get joining(): boolean {
    return !this.voters.includes(this.self);
  }
}

function fromLeader(m: Message): boolean {
  return m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap;
}

interface Turn {
  readies: [Replica, Ready][];
  /** Messages that may leave only once the turn's writes are durable. */
  afterSync: Map<NodeId, Envelope[]>;
  /** Snapshot state to install, per replica whose Ready carries one. */
  installs: Map<Replica, GroupImage>;
}

export class SimNode {
  up = true;
  paused = false;
  disk: SimDisk;
  /** Bumped by every crash and restart: events of an earlier life are ignored. */
  private life = 0;
  private readonly replicas = new Map<number, Replica>();
  private readonly dirty = new Set<Replica>();
  private turnScheduled = false;
  private writing = false;
  /** WAL records buffered outside a Ready (a new replica's hard-state reset): they go with the next write. */
  private pendingWal: WalOp[] = [];
  /** Work that arrived while paused, run in order on resume. */
  private held: (() => void)[] = [];
  // The failure detector of runtime/cluster.ts: virtual times of the last packet from / to each peer.
  private readonly lastHeard = new Map<NodeId, number>();
  private readonly lastSent = new Map<NodeId, number>();
  private peersDownKey = '';
  private peersDownAt = 0;

  constructor(
    readonly id: NodeId,
    /** Every other node of the cluster. */
    private readonly peers: readonly NodeId[],
    /** The data dir's incarnation (runtime/membership.ts): replicas added here are named by it. */
    public incarnation: string,
    /** Whether this incarnation founded the cluster (it hosts the founding replicas). */
    public founder: boolean,
    private readonly env: NodeEnv,
  ) {
    this.disk = new SimDisk(env.knobs.segmentBatches);
    this.boot();
  }

  /** A turn's WAL write is in flight: a crash now may lose it. */
  get syncing(): boolean {
    return this.writing;
  }

  // ------------------------------------------------------------ inputs

  /** A packet from a peer; false when this node is down (the packet is lost). */
  receive(from: NodeId, envelopes: readonly Envelope[]): boolean {
    if (!this.up) return false;
    this.whenRunning(this.life, () => {
      this.lastHeard.set(from, this.env.scheduler.now);
      for (const env of envelopes) {
        // As runtime/cluster.ts deliver: for this node's replicas, from the sending node's own.
        if (nodeOf(env.msg.to) !== this.id || nodeOf(env.msg.from) !== from) continue;
        this.step(env);
      }
    });
    return true;
  }

  /** One timer tick for every group that is not quiesced; false when down or paused. */
  tick(): boolean {
    if (!this.up || this.paused) return false;
    for (const r of this.replicas.values()) {
      if (r.quiesced) continue;
      if (this.env.knobs.quiesce && r.voters.length > 1 && this.maybeQuiesce(r)) {
        if (!this.up) break; // a driver assertion stopped it
        continue;
      }
      r.core.tick();
      if (r.core.hasReady()) this.markDirty(r);
    }
    return true;
  }

  /** Keepalive period: empty packets to quiet peers; groups led from peers not heard from wake and elect (as runtime/driver.ts peersDown). */
  keepalive(): void {
    if (!this.up || this.paused) return;
    this.wakeLostLeaders();
    const k = this.env.knobs;
    const now = this.env.scheduler.now;
    const down: NodeId[] = [];
    for (const peer of this.peers) {
      if ((this.lastSent.get(peer) ?? -Infinity) <= now - k.keepaliveMs) this.sendTo(peer, []);
      if (this.lastHeard.get(peer)! < now - k.peerDownMs) down.push(peer);
    }
    const key = down.join(',');
    // On every change, and again now and then while any is down (a group may have quiesced meanwhile).
    if (key === this.peersDownKey && (down.length === 0 || now - this.peersDownAt < PEERS_DOWN_REPEAT_KEEPALIVES * k.keepaliveMs)) return;
    this.peersDownKey = key;
    this.peersDownAt = now;
    const downSet = new Set(down);
    for (const r of this.replicas.values()) {
      if (!downSet.has(nodeOf(r.leader))) continue;
      this.wake(r);
      r.core.leaderGone(campaignDelayTicks(r.group, r.self, r.voters, downSet));
      this.markDirty(r);
    }
  }

  /** A quiesced group led by a replica of an incarnation its node no longer has wakes up. */
  private wakeLostLeaders(): void {
    for (const r of this.replicas.values()) {
      if (!r.quiesced || r.leader === '' || r.leader === r.self) continue;
      if (incarnationOf(r.leader, this.env.founding) !== this.env.incarnationOf(nodeOf(r.leader))) this.wake(r);
    }
  }

  /** A client request; a down node never answers (the client times out). */
  request(req: ClientRequest): void {
    if (!this.up) return;
    this.whenRunning(this.life, () => (req.kind === 'propose' ? this.propose(req) : this.read(req)));
  }

  /**
   * The coordinator's single-server change of a group's voters, as
   * runtime/driver.ts changeConf: proposed only if this node's replica still
   * has the voters `from` the coordinator saw. `done` hears what became of it
   * (never, when the node is down or dies first).
   */
  changeConf(group: number, from: readonly string[], voters: string[], done: (outcome: ConfChangeOutcome, why: string) => void): void {
    if (!this.up) return;
    this.whenRunning(this.life, () => {
      const r = this.replicas.get(group);
      if (r === undefined) return done('refused', `${this.id} has no replica of group ${group}`);
      if (!sameVoters(r.voters, from)) return done('stale', `voters are ${r.voters.join(',')} now, not ${from.join(',')}`);
      if (voters.length < r.voters.length) {
        const st = r.core.status();
        const lagging = voters.find((v) => lags(st, v, st.commit));
        if (lagging !== undefined) return done('lagging', `${lagging} has not caught up yet`);
      }
      this.wake(r);
      let named: string[];
      try {
        // A new replica is named by the term and index of the change that adds it: never reused in this group.
        const st = r.core.status();
        const at = st.lastIndex + 1;
        named = voters.map((v) => (needsSerial(v) ? withSerial(v, st.term, at) : v));
        const index = r.core.proposeConfChange({ voters: named });
        if (index !== at) {
          // runtime/driver.ts asserts it: the group stops and the supervisor restarts the worker.
          this.kill();
          this.env.stopped(this, `group ${group}: conf change at ${index}, named for ${at}`);
          return;
        }
        this.env.stats.confChangesProposed++;
        this.env.trace(`${r.self} g${group}: conf change to ${named.join(',')} proposed at ${index}`);
      } catch (err) {
        if (!(err instanceof NotLeaderError || err instanceof ProposalDroppedError)) throw err;
        return done('refused', err.message);
      }
      this.markDirty(r);
      done('proposed', '');
    });
  }

  /** The coordinator's leadership move, as runtime/driver.ts transferLeader. */
  transferLeader(group: number, to: string): void {
    if (!this.up) return;
    this.whenRunning(this.life, () => {
      const r = this.replicas.get(group);
      if (r === undefined) return;
      const st = r.core.status();
      if (st.role === Role.Leader && lags(st, to, st.lastIndex)) return;
      this.wake(r);
      try {
        r.core.transferLeader(to);
      } catch (err) {
        if (!(err instanceof NotLeaderError || err instanceof ProposalDroppedError)) throw err;
        return;
      }
      this.env.stats.leaderMoves++;
      this.env.trace(`${r.self} g${group}: hands leadership to ${to}`);
      this.markDirty(r);
    });
  }

  /** Makes applied state durable, then recycles the log it covers. */
  checkpoint(): void {
    if (!this.up || this.paused) return;
    this.disk.syncState();
    // A group not hosted here (retired, or never) needs none of its log.
    this.disk.releaseWal((g) => (this.replicas.has(g) ? this.disk.appliedOf(g) : Number.POSITIVE_INFINITY));
  }

  // ------------------------------------------------------------ faults

  /** Power loss: memory is gone, the disk keeps what was synced and maybe some of the rest. */
  crash(): void {
    if (!this.up) throw new Error(`${this.id} is already down`);
    this.goDown();
    const lost = this.disk.crash(this.env.rng);
    this.env.stats.walBatchesLost += lost.walBatchesLost;
    this.env.stats.stateBatchesLost += lost.stateBatchesLost;
  }

  /**
   * The node crashes and its disks are gone (a lost or damaged data dir):
   * it will restart as `incarnation`, a new one, hosting no founding replica
   * and nothing else until leaders start its new replicas.
   */
  wipe(incarnation: string): void {
    if (this.up) this.goDown();
    this.disk = new SimDisk(this.env.knobs.segmentBatches);
    this.incarnation = incarnation;
    this.founder = false;
  }

  private goDown(): void {
    this.up = false;
    this.paused = false;
    this.life++;
    this.replicas.clear();
    this.dirty.clear();
    this.held = [];
    this.pendingWal = [];
    this.turnScheduled = false;
    this.writing = false;
  }

  /** The process dies (no power loss: what it wrote survives in the page cache). */
  kill(): void {
    if (!this.up) throw new Error(`${this.id} is already down`);
    this.disk.syncWal();
    this.disk.syncState();
    this.goDown();
  }

  restart(): void {
    if (this.up) throw new Error(`${this.id} is up`);
    this.up = true;
    this.life++;
    this.boot();
  }

  /** SIGSTOP: no ticks, no processing; what arrives waits. */
  pause(): void {
    if (this.up) this.paused = true;
  }

  resume(): void {
    if (!this.up || !this.paused) return;
    this.paused = false;
    const held = this.held;
    this.held = [];
    for (const run of held) run();
  }

  // ------------------------------------------------------- inspection

  /** The replica's core and machine, for the coordinator, the liveness phase and the final checks. */
  replica(group: number): Replica | undefined {
    return this.replicas.get(group);
  }

  /** This incarnation's replica id base, as the coordinator names it (runtime/membership.ts replicaIdOf). */
  get ownReplica(): string {
    return replicaIdOf(this.id, this.incarnation);
  }

  // ---------------------------------------------------------- driving

  /**
   * As runtime/worker.ts start and runtime/driver.ts open: the replicas this
   * data dir hosts, the WAL recovered against their applied indexes, each
   * replica's core from its state and log. Throws an OpenFailure when the
   * runtime could not open the storage.
   */
  private boot(): void {
    for (const peer of this.peers) this.lastHeard.set(peer, this.env.scheduler.now);
    this.lastSent.clear();
    this.peersDownKey = '';
    const records = this.disk.replicaRecords();
    const hosted = new Map<number, string>();
    for (const [group, voters] of this.env.foundingVoters) {
      // A group with a record changed hands here since founding: the record says what is hosted.
      if (this.founder && !records.has(group) && voters.includes(this.id)) hosted.set(group, this.id);
    }
    for (const [group, rec] of records) if (rec.replica !== null) hosted.set(group, rec.replica);
    try {
      this.disk.openWal((g) => (hosted.has(g) ? this.disk.appliedOf(g) : 0));
      for (const [group, replica] of hosted) {
        const r = this.openReplica(group, replica, this.disk.recover(group, this.env.foundingVoters.get(group)!));
        const st = r.core.status();
        this.env.trace(`${replica} g${group}: opened at applied ${st.applied}, commit ${st.commit}, last ${st.lastIndex}, term ${st.term}, voters ${r.voters.join(',')}`);
      }
    } catch (err) {
      const why = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      throw new OpenFailure(`${this.id} (incarnation ${this.incarnation}) cannot open its storage, so the runtime's worker exits at every start: ${why}`);
    }
  }

  /** Opens one replica (as runtime/driver.ts addGroup: the conf is the one as of the applied index). */
  private openReplica(group: number, self: string, rec: RecoveredGroup): Replica {
    const conf = { voters: [...rec.image.voters] };
    const storage = new MemoryStorage({
      conf,
      hardState: rec.hardState ?? { term: 0, vote: '', commit: 0 },
      snapshot: { index: rec.image.applied, term: rec.image.appliedTerm, conf },
      entries: rec.entries,
    });
    const k = this.env.knobs;
    const core = new RaftCore({
      id: self,
      group,
      storage,
      applied: rec.image.applied,
      electionTicks: k.electionTicks,
      heartbeatTicks: k.heartbeatTicks,
      random: this.env.rng.next,
      preVote: k.preVote,
      checkQuorum: k.checkQuorum,
      maxMsgBytes: k.maxMsgBytes,
      maxInflight: k.maxInflight,
      maxApplyBytes: k.maxApplyBytes,
    });
    // As runtime/driver.ts addGroup: in a fresh group the placement's preferred leader campaigns first.
    if (core.currentTerm() === 0 && isPreferredLeader(group, self, conf.voters)) core.campaign();
    const r = new Replica(group, self, core, storage, new GroupMachine(group, rec.image));
    this.replicas.set(group, r);
    this.markDirty(r);
    return r;
  }

  /**
   * A leader wrote to a replica id of this incarnation that is not here yet
   * (the coordinator added it): it is recorded (synced) and starts empty
   * with the founding conf, joining until the leader's log or snapshot makes
   * it a voter in its own view; a retired replica's hard state may still be
   * in the WAL, so a reset goes with the next write. The first message is
   * dropped.
   */
  private startReplica(group: number, replica: string, from: string): void {
    this.disk.saveRecord(group, { replica, retired: this.disk.retiredOf(group) });
    const none = { term: 0, vote: '', commit: 0 };
    this.pendingWal.push({ group, kind: 'hardState', hardState: none });
    this.openReplica(group, replica, { image: emptyImage(this.env.foundingVoters.get(group)!), hardState: none, entries: [] });
    this.env.stats.replicasStarted++;
    this.env.trace(`${replica} g${group}: started (first message from leader ${from})`);
  }

  /**
   * The replica was removed from the group's voters (runtime/driver.ts
   * retire): it stops, what it owes is answered not-leader, its state goes in
   * one synced write with the record that it is retired (never started again
   * under this serial), and the node forgets the group.
   */
  private retire(r: Replica): void {
    if (this.replicas.get(r.group) !== r) return;
    const fail = errorReply(notLeader(`group ${r.group} no longer has a replica here`));
    // A proposal's outcome is unknown: it may still commit.
    const unknown = errorReply(unavailable(`group ${r.group} no longer has a replica here; the outcome is unknown`));
    for (const p of r.proposals.values()) this.reply(p.req, unknown, '');
    for (const req of r.reads.values()) this.reply(req, fail, '');
    for (const w of r.readsWaiting) this.reply(w.req, fail, '');
    const owed = [...r.proposals.keys()];
    this.env.trace(`${r.self} g${r.group}: retired (voters ${r.voters.join(',')}); answered not-leader: proposals at ${owed.join(',') || 'none'}, ${r.reads.size + r.readsWaiting.length} reads`);
    r.proposals.clear();
    r.reads.clear();
    r.readsWaiting.length = 0;
    this.dirty.delete(r);
    this.disk.saveRecord(r.group, { replica: null, retired: r.self }, true);
    this.replicas.delete(r.group);
    this.env.stats.retirements++;
  }

  /** Runs `fn` now, later (paused), or never (crashed since life `life`). */
  private whenRunning(life: number, fn: () => void): void {
    if (life !== this.life || !this.up) return;
    if (this.paused) this.held.push(fn);
    else fn();
  }

  private step(env: Envelope): void {
    const m = env.msg;
    const r = this.replicas.get(m.group);
    if (r === undefined) {
      // As runtime/worker.ts mayHost and runtime/driver.ts step: this incarnation's ids only, newer than the one retired here.
      if (fromLeader(m) && m.to.startsWith(`${this.ownReplica}.`) && isNewerReplica(m.to, this.disk.retiredOf(m.group))) this.startReplica(m.group, m.to, m.from);
      return;
    }
    if (fromLeader(m) && m.to !== r.self && m.to.startsWith(`${this.ownReplica}.`) && isNewerReplica(m.to, r.self)) {
      // A leader writes to a newer replica of this node, so the one here was removed.
      this.env.trace(`${r.self} g${r.group}: superseded by ${m.to}`);
      r.retiring = true;
      if (!this.writing) this.retire(r);
      return;
    }
    // As runtime/driver.ts step: the voters are not checked (a replica's view of them is as of its applied index).
    if (m.to !== r.self || m.from === r.self) return;
    if (m.type === QUIESCE_TYPE) {
      if (followerMayQuiesce(r.core.status(), m)) r.quiesced = true;
      return;
    }
    // Heartbeats are keepalive traffic: a leader's last one may arrive after its quiesce message.
    if (m.type !== MessageType.Heartbeat && m.type !== MessageType.HeartbeatResp) this.wake(r);
    if (m.type === MessageType.Snap) {
      if (env.image === null || m.snapshot === null) throw new Error(`${this.id}: Snap without state`);
      // Keyed by index, as in runtime/driver.ts: a later Snap must not replace the one the core wants.
      r.incomingSnapshots.set(env.image.applied, env.image);
    }
    r.core.step(m);
    this.markDirty(r);
  }

  /** A request for a group this node has no replica of (yet): nothing happens, the client tries elsewhere. */
  private noReplica(req: ClientRequest): void {
    this.reply(req, errorReply(notLeader(`group ${req.group} has no replica on ${this.id}`)), '');
  }

  private propose(req: ClientRequest): void {
    const r = this.replicas.get(req.group);
    if (r === undefined) return this.noReplica(req);
    patchNow(req.cmd, EPOCH_MS + this.env.scheduler.now);
    this.wake(r);
    try {
      const index = r.core.propose(req.cmd);
      r.proposals.set(index, { req, term: r.core.currentTerm() });
    } catch (err) {
      this.answerError(req, r, err);
      return;
    }
    this.markDirty(r);
  }

  private read(req: ClientRequest): void {
    const r = this.replicas.get(req.group);
    if (r === undefined) return this.noReplica(req);
    const ctx = ++r.readSeq;
    this.wake(r);
    r.reads.set(ctx, req);
    try {
      r.core.readIndex(ctx);
    } catch (err) {
      r.reads.delete(ctx);
      this.answerError(req, r, err);
      return;
    }
    this.markDirty(r);
  }

  /** A leader with nothing to do for a few ticks, whose followers have everything, stops ticking and tells them. */
  private maybeQuiesce(r: Replica): boolean {
    if (r.core.busy()) {
      r.idleTicks = 0;
      return false;
    }
    const st = r.core.status();
    const idle = leaderIdle(st, r.machine.applied, r.proposals.size + r.reads.size + r.readsWaiting.length);
    r.idleTicks = idle ? r.idleTicks + 1 : 0;
    if (r.idleTicks < QUIESCE_AFTER_TICKS) return false;
    if (r.core.hasUnsentMessages()) {
      // runtime/driver.ts asserts it: the group stops and the supervisor restarts the worker from disk.
      this.kill();
      this.env.stopped(this, `group ${r.group}: quiescing with unsent messages`);
      return true;
    }
    r.quiesced = true;
    this.env.stats.quiesces++;
    for (const to of r.voters) if (to !== r.self) this.sendTo(nodeOf(to), [{ msg: quiesceMessage(st, to), image: null }]);
    return true;
  }

  private wake(r: Replica): void {
    r.quiesced = false;
    r.idleTicks = 0;
  }

  private answerError(req: ClientRequest, r: Replica, err: unknown): void {
    if (err instanceof NotLeaderError) this.reply(req, errorReply(notLeader(`group ${r.group} is not led by ${r.self}`)), err.leader);
    // As runtime/driver.ts propose: leadership is moving, nothing was appended; the client retries at the next leader.
    else if (err instanceof ProposalDroppedError) this.reply(req, errorReply(notLeader(err.message)), r.leader);
    else throw err;
  }

  /** `leader`: a replica id; the client is told its node. */
  private reply(req: ClientRequest, reply: Reply, leader: string): void {
    this.env.answer(req, { kind: 'reply', reply, leader: nodeOf(leader) });
  }

  private markDirty(r: Replica): void {
    this.dirty.add(r);
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    const life = this.life;
    this.env.scheduler.after(0, () => this.whenRunning(life, () => this.turn()));
  }

  private turn(): void {
    this.turnScheduled = false;
    if (this.writing) return;
    const turn: Turn = { readies: [], afterSync: new Map(), installs: new Map() };
    for (const r of this.dirty) if (r.core.hasReady()) turn.readies.push([r, r.core.ready()]);
    this.dirty.clear();
    if (turn.readies.length === 0 && this.pendingWal.length === 0) return;
    for (const [r, rd] of turn.readies) {
      const why = snapshotAssertion(r, rd);
      if (why !== null) {
        // runtime/driver.ts asserts it: the group stops and the supervisor restarts the worker from disk.
        this.kill();
        this.env.stopped(this, `group ${r.group}: ${why}`);
        return;
      }
    }
    const beforeSync = new Map<NodeId, Envelope[]>();
    // Records buffered since the last write go first (runtime/driver.ts: any pending WAL bytes are written by the next turn).
    const wal: WalOp[] = this.pendingWal;
    this.pendingWal = [];
    for (const [r, rd] of turn.readies) this.collect(r, rd, turn, beforeSync, wal);
    this.send(beforeSync);
    if (wal.length === 0) {
      this.finish(turn);
      return;
    }
    this.writing = true;
    this.disk.writeWal(wal);
    const life = this.life;
    const k = this.env.knobs;
    this.env.scheduler.after(this.env.rng.between(k.fsyncMinMs, k.fsyncMaxMs), () => this.whenRunning(life, () => this.finish(turn)));
  }

  /** Duties 1–5 of the Ready contract for one group, up to the fsync. */
  private collect(r: Replica, rd: Ready, turn: Turn, beforeSync: Map<NodeId, Envelope[]>, wal: WalOp[]): void {
    this.noteLeadership(r, rd);
    for (const m of rd.messages) {
      if (m.type === MessageType.Snap) {
        enqueue(beforeSync, this.snapshotEnvelope(r, m));
        r.core.reportSnapshot(m.to, true);
      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat) {
        // A leader's appends and heartbeats promise nothing: they may leave before its fsync.
        enqueue(beforeSync, { msg: m, image: null });
      } else {
        enqueue(turn.afterSync, { msg: m, image: null });
      }
    }
    if (rd.mustSync && rd.hardState !== null) wal.push({ group: r.group, kind: 'hardState', hardState: rd.hardState });
    if (rd.entries.length > 0) wal.push({ group: r.group, kind: 'entries', entries: rd.entries });
    if (rd.snapshot !== null) {
      const image = r.incomingSnapshots.get(rd.snapshot.index)!;
      if (image.appliedTerm !== rd.snapshot.term) throw new Error(`${this.id} group ${r.group}: snapshot state term ${image.appliedTerm}, meta term ${rd.snapshot.term}`);
      turn.installs.set(r, image);
      wal.push({ group: r.group, kind: 'install', image });
    }
    r.incomingSnapshots.clear();
    if (rd.committedEntries.length > 0) this.apply(r, rd.committedEntries);
    for (const rs of rd.readStates) {
      const req = r.reads.get(rs.context);
      if (req === undefined) continue;
      r.reads.delete(rs.context);
      r.readsWaiting.push({ req, index: rs.index });
    }
    this.serveReads(r);
  }

  /** The fsync is done: duty 2 for the rest of the messages, then duty 6. */
  private finish(turn: Turn): void {
    this.disk.syncWal();
    this.writing = false;
    this.send(turn.afterSync);
    for (const [r, rd] of turn.readies) {
      if (rd.hardState !== null) r.storage.setHardState(rd.hardState);
      r.storage.append(rd.entries);
      const image = turn.installs.get(r);
      if (image !== undefined) this.install(r, rd, image);
      r.core.advance(rd);
      if (rd.hardState !== null && rd.hardState.commit > r.commitSeen) {
        this.env.observer.committed(r.group, r.self, r.core.currentTerm(), r.storage, r.commitSeen, rd.hardState.commit);
        r.commitSeen = rd.hardState.commit;
      }
      if (r.core.hasReady()) this.markDirty(r);
    }
    // After the apply round and its write: replicas removed from their group retire.
    for (const [r] of turn.readies) if (r.retiring) this.retire(r);
    // Work that arrived while the write was in flight must not wait for the next tick.
    if ((this.dirty.size > 0 || this.pendingWal.length > 0) && !this.turnScheduled) {
      this.turnScheduled = true;
      const life = this.life;
      this.env.scheduler.after(0, () => this.whenRunning(life, () => this.turn()));
    }
  }

  /** Reports a new leadership (election safety, leader completeness) and fails what a deposed leader owes. */
  private noteLeadership(r: Replica, rd: Ready): void {
    if (rd.softState !== null) {
      r.role = rd.softState.role;
      if (r.role !== Role.Leader) this.failPending(r);
      if (r.leader !== rd.softState.leader) this.env.trace(`${r.self} g${r.group}: leader ${rd.softState.leader || 'none'} (term ${r.core.currentTerm()})`);
      r.leader = rd.softState.leader;
    }
    const term = r.core.currentTerm();
    // A leader may lose and regain leadership between two Readies: the term tells.
    if (r.role !== Role.Leader || (rd.softState === null && term === r.leaderTerm)) return;
    r.leaderTerm = term;
    const first = rd.entries.length > 0 ? rd.entries[0].index : Number.POSITIVE_INFINITY;
    const entryAt = (i: number): Entry | undefined => {
      if (i >= first) return rd.entries[i - first];
      if (i < r.storage.firstIndex() || i > r.storage.lastIndex()) return undefined;
      return r.storage.entries(i, i + 1, 0)[0];
    };
    this.env.observer.leaderElected(r.group, r.self, term, r.storage.firstIndex(), entryAt);
  }

  /** A replica that stopped leading cannot tell whether its proposals will commit. */
  private failPending(r: Replica): void {
    const unknown = errorReply(unavailable(`group ${r.group} lost its leader; the outcome is unknown`));
    for (const p of r.proposals.values()) this.reply(p.req, unknown, r.leader);
    const moved = errorReply(notLeader(`group ${r.group} lost its leader`));
    for (const req of r.reads.values()) this.reply(req, moved, r.leader);
    r.proposals.clear();
    r.reads.clear();
  }

  private apply(r: Replica, entries: Entry[]): void {
    const onApplied = (e: Entry, result: ApplyResult | null, chain: number): void => {
      this.env.observer.applied(r.group, r.self, e, chain);
      if (e.type === EntryType.ConfChange) {
        if (r.role === Role.Leader) this.env.trace(`${r.self} g${r.group}: conf ${r.machine.voters.join(',')} applied at ${e.index}`);
        // As runtime/driver.ts applyEntries: removed after it was added → retired after this round.
        if (r.joining && removedBy(r.self, e.index)) r.retiring = true;
      }
      const p = r.proposals.get(e.index);
      if (p === undefined) return;
      r.proposals.delete(e.index);
      if (p.term !== e.term || result === null) this.reply(p.req, errorReply(unavailable('leadership changed; retry')), r.leader);
      else this.reply(p.req, applyReply(result), r.leader);
    };
    const batch = r.machine.applyEntries(entries, onApplied);
    this.env.observer.stateWritten(r.self, batch);
    this.disk.writeState(batch);
    const compactTo = r.machine.applied - this.env.knobs.retainEntries;
    if (compactTo > r.storage.snapshotMeta().index) r.storage.compact(compactTo);
  }

  /** Follower, after the fsync: the snapshot's state and log point become this replica's. */
  private install(r: Replica, rd: Ready, image: GroupImage): void {
    const meta = rd.snapshot!;
    r.storage.applySnapshot(meta);
    r.machine = new GroupMachine(r.group, image);
    if (r.joining && removedBy(r.self, meta.index)) r.retiring = true;
    this.env.observer.installed(r.group, r.self, image.applied, image.chain);
    this.env.stats.snapshotsInstalled++;
    this.serveReads(r);
  }

  /** Leader: the Snap carries the state as of the applied index (past the core's compaction point), voters included. */
  private snapshotEnvelope(r: Replica, m: Message): Envelope {
    const image = r.machine.image();
    const meta = { index: image.applied, term: image.appliedTerm, conf: { voters: [...image.voters] } };
    return { msg: { ...m, index: meta.index, logTerm: meta.term, snapshot: meta }, image };
  }

  private serveReads(r: Replica): void {
    if (r.readsWaiting.length === 0) return;
    let kept = 0;
    for (const w of r.readsWaiting) {
      if (w.index > r.machine.applied) {
        r.readsWaiting[kept++] = w;
        continue;
      }
      const id = w.req.conversation;
      const record = r.machine.convs.get(id)?.record ?? null;
      this.env.answer(w.req, { kind: 'read', result: { record, messages: (r.machine.messages.get(id) ?? []).slice() } });
    }
    r.readsWaiting.length = kept;
  }

  private send(out: Map<NodeId, Envelope[]>): void {
    for (const [to, envelopes] of out) this.sendTo(to, envelopes);
  }

  private sendTo(to: NodeId, envelopes: Envelope[]): void {
    this.lastSent.set(to, this.env.scheduler.now);
    this.env.network.send(this.id, to, envelopes);
  }
}

/** What runtime/driver.ts's snapshot install asserts about a Ready, or null when it holds. */
function snapshotAssertion(r: Replica, rd: Ready): string | null {
  if (rd.snapshot === null) return null;
  if (rd.entries.length > 0) {
    // core.advance() could not take it either: it would look up the entries' terms in the replaced log.
    return `a Ready carries snapshot ${rd.snapshot.index} and entries ${rd.entries[0].index}..${rd.entries[rd.entries.length - 1].index}`;
  }
  if (!r.incomingSnapshots.has(rd.snapshot.index)) return `snapshot ${rd.snapshot.index} wanted without its streamed state`;
  return null;
}

/** Queues a message for the node of its replica. */
function enqueue(out: Map<NodeId, Envelope[]>, env: Envelope): void {
  const to = nodeOf(env.msg.to);
  const list = out.get(to);
  if (list === undefined) out.set(to, [env]);
  else list.push(env);
}
