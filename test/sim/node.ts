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
//         unsynced; a periodic checkpoint syncs them and recycles the WAL.
//   snapshot: a leader sends its applied state when a follower needs
//         compacted entries; the follower installs it with the Ready that
//         carries it, durably and atomically with its log reset.
//   quiescence: an idle group's leader stops ticking and tells its
//         followers, who stop too; any message but a heartbeat, a proposal or
//         a read wakes a group; per node pair keepalives, and a peer not heard
//         from for a while wakes the groups it leads (runtime/cluster.ts).
//   crash: memory is gone, the disk keeps what was synced (and maybe a
//         prefix of the rest); restart rebuilds each group from the disk.
import { patchNow } from '../../actors/commands.js';
import type { ApplyResult, ConversationRecord } from '../../actors/conversation.js';
import { notLeader, unavailable } from '../../actors/errors.js';
import { RaftCore, NotLeaderError, ProposalDroppedError } from '../../runtime/raft/core.js';
import { QUIESCE_TYPE } from '../../runtime/raft/codec.js';
import { QUIESCE_AFTER_TICKS, followerMayQuiesce, leaderIdle, quiesceMessage } from '../../runtime/quiesce.js';
import { MemoryStorage } from '../../runtime/raft/log.js';
import { MessageType, Role, type Entry, type Message, type NodeId, type Ready } from '../../runtime/raft/types.js';
import { applyReply, errorReply, type Reply } from '../../runtime/replies.js';
import { SimDisk, type WalOp } from './disk.js';
import { GroupMachine, type GroupImage } from './machine.js';
import type { Envelope, SimNetwork } from './network.js';
import type { RaftObserver } from './observer.js';
import type { Rng } from './rng.js';
import type { Scheduler } from './scheduler.js';
import type { SimStats } from './stats.js';

/** Wall-clock origin of virtual time, for the timestamps apply() writes. */
export const EPOCH_MS = Date.UTC(2025, 0, 1);
/** As runtime/cluster.ts: while peers are down, the workers are told again this often, in keepalive periods. */
const PEERS_DOWN_REPEAT_KEEPALIVES = 10;

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
}

interface Proposal {
  req: ClientRequest;
  term: number;
}

/** One group's replica on this node. */
class Replica {
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

  constructor(
    readonly group: number,
    readonly voters: readonly NodeId[],
    readonly core: RaftCore,
    readonly storage: MemoryStorage,
    public machine: GroupMachine,
  ) {}
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
  readonly disk = new SimDisk();
  /** Bumped by every crash and restart: events of an earlier life are ignored. */
  private incarnation = 0;
  private readonly replicas = new Map<number, Replica>();
  private readonly dirty = new Set<Replica>();
  private turnScheduled = false;
  private writing = false;
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
    private readonly placement: ReadonlyMap<number, readonly NodeId[]>,
    private readonly env: NodeEnv,
  ) {
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
    this.whenRunning(this.incarnation, () => {
      this.lastHeard.set(from, this.env.scheduler.now);
      for (const env of envelopes) this.step(env);
    });
    return true;
  }

  /** One timer tick for every group that is not quiesced; false when down or paused. */
  tick(): boolean {
    if (!this.up || this.paused) return false;
    for (const r of this.replicas.values()) {
      if (r.quiesced) continue;
      if (this.env.knobs.quiesce && r.voters.length > 1 && this.maybeQuiesce(r)) continue;
      r.core.tick();
      if (r.core.hasReady()) this.markDirty(r);
    }
    return true;
  }

  /** Keepalive period: empty packets to quiet peers, and peers not heard from wake the groups they lead. */
  keepalive(): void {
    if (!this.up || this.paused) return;
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
    for (const r of this.replicas.values()) if (r.quiesced && down.includes(r.leader)) this.wake(r);
  }

  /** A client request; a down node never answers (the client times out). */
  request(req: ClientRequest): void {
    if (!this.up) return;
    this.whenRunning(this.incarnation, () => (req.kind === 'propose' ? this.propose(req) : this.read(req)));
  }

  /** Makes applied state durable, then recycles the log it covers. */
  checkpoint(): void {
    if (!this.up || this.paused) return;
    this.disk.syncState();
    this.disk.releaseWal();
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

  private goDown(): void {
    this.up = false;
    this.paused = false;
    this.incarnation++;
    this.replicas.clear();
    this.dirty.clear();
    this.held = [];
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
    this.incarnation++;
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

  /** The replica's core and machine, for the liveness phase and the final checks. */
  replica(group: number): { core: RaftCore; storage: MemoryStorage; machine: GroupMachine } | undefined {
    return this.replicas.get(group);
  }

  // ---------------------------------------------------------- driving

  private boot(): void {
    for (const peer of this.peers) this.lastHeard.set(peer, this.env.scheduler.now);
    this.lastSent.clear();
    this.peersDownKey = '';
    for (const [group, voters] of this.placement) {
      const rec = this.disk.recover(group);
      const conf = { voters: [...voters] };
      const storage = new MemoryStorage({
        conf,
        hardState: rec.hardState ?? { term: 0, vote: '', commit: 0 },
        snapshot: { index: rec.image.applied, term: rec.image.appliedTerm, conf },
        entries: rec.entries,
      });
      const k = this.env.knobs;
      const core = new RaftCore({
        id: this.id,
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
      const r = new Replica(group, voters, core, storage, new GroupMachine(group, rec.image));
      this.replicas.set(group, r);
      this.markDirty(r);
    }
  }

  /** Runs `fn` now, later (paused), or never (crashed since `incarnation`). */
  private whenRunning(incarnation: number, fn: () => void): void {
    if (incarnation !== this.incarnation || !this.up) return;
    if (this.paused) this.held.push(fn);
    else fn();
  }

  private step(env: Envelope): void {
    const m = env.msg;
    const r = this.replicas.get(m.group);
    if (r === undefined || m.to !== this.id || !r.voters.includes(m.from)) return;
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

  private propose(req: ClientRequest): void {
    const r = this.replicas.get(req.group);
    if (r === undefined) throw new Error(`${this.id} does not replicate group ${req.group}`);
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
    if (r === undefined) throw new Error(`${this.id} does not replicate group ${req.group}`);
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
    if (r.core.hasReady()) {
      r.idleTicks = 0;
      return false;
    }
    const st = r.core.status();
    const idle = leaderIdle(st, r.machine.applied, r.proposals.size + r.reads.size + r.readsWaiting.length);
    r.idleTicks = idle ? r.idleTicks + 1 : 0;
    if (r.idleTicks < QUIESCE_AFTER_TICKS) return false;
    r.quiesced = true;
    this.env.stats.quiesces++;
    for (const to of r.voters) if (to !== this.id) this.sendTo(to, [{ msg: quiesceMessage(st, to), image: null }]);
    return true;
  }

  private wake(r: Replica): void {
    r.quiesced = false;
    r.idleTicks = 0;
  }

  private answerError(req: ClientRequest, r: Replica, err: unknown): void {
    if (err instanceof NotLeaderError) this.reply(req, errorReply(notLeader(`group ${r.group} is not led by ${this.id}`)), err.leader);
    else if (err instanceof ProposalDroppedError) this.reply(req, errorReply(unavailable(err.message)), r.leader);
    else throw err;
  }

  private reply(req: ClientRequest, reply: Reply, leader: NodeId): void {
    this.env.answer(req, { kind: 'reply', reply, leader });
  }

  private markDirty(r: Replica): void {
    this.dirty.add(r);
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    const incarnation = this.incarnation;
    this.env.scheduler.after(0, () => this.whenRunning(incarnation, () => this.turn()));
  }

  private turn(): void {
    this.turnScheduled = false;
    if (this.writing) return;
    const turn: Turn = { readies: [], afterSync: new Map(), installs: new Map() };
    for (const r of this.dirty) if (r.core.hasReady()) turn.readies.push([r, r.core.ready()]);
    this.dirty.clear();
    if (turn.readies.length === 0) return;
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
    const wal: WalOp[] = [];
    for (const [r, rd] of turn.readies) this.collect(r, rd, turn, beforeSync, wal);
    this.send(beforeSync);
    if (wal.length === 0) {
      this.finish(turn);
      return;
    }
    this.writing = true;
    this.disk.writeWal(wal);
    const incarnation = this.incarnation;
    const k = this.env.knobs;
    this.env.scheduler.after(this.env.rng.between(k.fsyncMinMs, k.fsyncMaxMs), () => this.whenRunning(incarnation, () => this.finish(turn)));
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
        this.env.observer.committed(r.group, this.id, r.core.currentTerm(), r.storage, r.commitSeen, rd.hardState.commit);
        r.commitSeen = rd.hardState.commit;
      }
      if (r.core.hasReady()) this.markDirty(r);
    }
  }

  /** Reports a new leadership (election safety, leader completeness) and fails what a deposed leader owes. */
  private noteLeadership(r: Replica, rd: Ready): void {
    if (rd.softState !== null) {
      r.role = rd.softState.role;
      if (r.role !== Role.Leader) this.failPending(r);
      if (r.leader !== rd.softState.leader) this.env.trace(`${this.id} g${r.group}: leader ${rd.softState.leader || 'none'} (term ${r.core.currentTerm()})`);
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
    this.env.observer.leaderElected(r.group, this.id, term, r.storage.firstIndex(), entryAt);
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
      this.env.observer.applied(r.group, this.id, e, chain);
      const p = r.proposals.get(e.index);
      if (p === undefined) return;
      r.proposals.delete(e.index);
      if (p.term !== e.term || result === null) this.reply(p.req, errorReply(unavailable('leadership changed; retry')), r.leader);
      else this.reply(p.req, applyReply(result), r.leader);
    };
    const batch = r.machine.applyEntries(entries, onApplied);
    this.env.observer.stateWritten(this.id, batch);
    this.disk.writeState(batch);
    const compactTo = r.machine.applied - this.env.knobs.retainEntries;
    if (compactTo > r.storage.snapshotMeta().index) r.storage.compact(compactTo);
  }

  /** Follower, after the fsync: the snapshot's state and log point become this replica's. */
  private install(r: Replica, rd: Ready, image: GroupImage): void {
    const meta = rd.snapshot!;
    r.storage.applySnapshot(meta);
    r.machine = new GroupMachine(r.group, image);
    this.env.observer.installed(r.group, this.id, image.applied, image.chain);
    this.env.stats.snapshotsInstalled++;
    this.serveReads(r);
  }

  /** Leader: the Snap carries the state as of the applied index (past the core's compaction point). */
  private snapshotEnvelope(r: Replica, m: Message): Envelope {
    const image = r.machine.image();
    const meta = { index: image.applied, term: image.appliedTerm, conf: { voters: [...r.voters] } };
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

function enqueue(out: Map<NodeId, Envelope[]>, env: Envelope): void {
  const list = out.get(env.msg.to);
  if (list === undefined) out.set(env.msg.to, [env]);
  else list.push(env);
}
