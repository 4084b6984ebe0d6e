// A tiny deterministic network of RaftCores for tests.
//
// Each SimNode has a MemoryStorage (what survived on "disk"), a state machine
// reduced to a hash chain over applied entries, and a core. The Net drives
// each core's Ready loop the way the production driver must (persist, send,
// install snapshot, apply, advance) and delivers messages one at a time,
// with seeded drop / duplicate / reorder and partitions. Independent checkers
// record election safety (one leader per term across nodes) and state
// machine safety (every node applies the same entry at each index).

import { RaftCore, type RaftConfig } from '../../runtime/raft/core.js';
import { decodeConfState } from '../../runtime/raft/conf.js';
import { MemoryStorage } from '../../runtime/raft/log.js';
import {
  EntryType,
  MessageType,
  Role,
  type ConfState,
  type Entry,
  type HardState,
  type Message,
  type NodeId,
  type ReadState,
  type SnapshotMeta,
} from '../../runtime/raft/types.js';

export const GROUP = 7;

import { mulberry32 as prng } from '../../runtime/prng.js';
export { prng };

function fnv(prev: number, s: string): number {
  let h = prev ^ 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const decoder = new TextDecoder();
export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

export function entryKey(e: Entry): string {
  return `${e.term}/${e.type}/${decoder.decode(e.data)}`;
}

export interface NetOptions {
  seed: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  electionTicks?: number;
  heartbeatTicks?: number;
  maxMsgBytes?: number;
  maxInflight?: number;
  maxApplyBytes?: number;
  dropRate?: number;
  dupRate?: number;
  /** Deliver a random queued message instead of the oldest. */
  reorder?: boolean;
  /** Chance to step a queued message into a node between its ready() and advance(). */
  interleaveRate?: number;
  /** Chance that a node crashes after ready(): leader messages may already be out, nothing persisted. */
  crashBeforePersistRate?: number;
  /** Bootstrap voter set (default: every node). Other nodes start as non-voters. */
  voters?: NodeId[];
}

interface SnapState {
  index: number;
  chain: number;
}

interface Envelope {
  msg: Message;
  snap: SnapState | null;
}

export class SimNode {
  readonly id: NodeId;
  readonly storage: MemoryStorage;
  core: RaftCore | null = null;
  /** Durable state machine: applied index and hash chain (index -> chain hash). */
  applied = 0;
  chainHead = 0;
  readonly chain = new Map<number, number>();
  /** Data of applied Normal entries with data, in order. */
  readonly appliedData: string[] = [];
  readonly readStates: ReadState[] = [];
  /** Hard state as of the last sync; unsynced writes are lost on crash. */
  durableHardState: HardState;
  readonly incomingSnaps = new Map<number, SnapState>();

  constructor(id: NodeId, storage: MemoryStorage) {
    this.id = id;
    this.storage = storage;
    this.chain.set(0, 0);
    this.durableHardState = storage.initialState().hardState;
  }

  get up(): boolean {
    return this.core !== null;
  }

  raft(): RaftCore {
    if (this.core === null) throw new Error(`node ${this.id} is down`);
    return this.core;
  }
}

export class Net {
  readonly opts: NetOptions;
  readonly rng: () => number;
  readonly nodes = new Map<NodeId, SimNode>();
  queue: Envelope[] = [];
  private readonly blocked = new Set<string>();
  /** term -> leader: election safety across all nodes. */
  readonly leaders = new Map<number, NodeId>();
  /** index -> entry key of the first application anywhere: state machine safety. */
  readonly appliedAt = new Map<number, string>();
  readonly chainAt = new Map<number, number>();
  delivered = 0;
  snapshotsInstalled = 0;

  constructor(ids: NodeId[], opts: NetOptions) {
    this.opts = opts;
    this.rng = prng(opts.seed);
    for (const id of ids) this.addNode(id, { voters: opts.voters ?? ids });
  }

  config(id: NodeId, storage: MemoryStorage, applied: number): RaftConfig {
    const o = this.opts;
    return {
      id,
      group: GROUP,
      storage,
      applied,
      electionTicks: o.electionTicks ?? 10,
      heartbeatTicks: o.heartbeatTicks ?? 1,
      random: this.rng,
      preVote: o.preVote ?? true,
      checkQuorum: o.checkQuorum ?? true,
      maxMsgBytes: o.maxMsgBytes ?? 1 << 20,
      maxInflight: o.maxInflight ?? 64,
      maxApplyBytes: o.maxApplyBytes ?? 1 << 20,
    };
  }

  /** A new node with an empty log; `conf` is its bootstrap voter set (conf as of index 0). */
  addNode(id: NodeId, conf: ConfState): SimNode {
    const n = new SimNode(id, new MemoryStorage({ conf }));
    this.nodes.set(id, n);
    n.core = new RaftCore(this.config(id, n.storage, 0));
    return n;
  }

  node(id: NodeId): SimNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  core(id: NodeId): RaftCore {
    return this.node(id).raft();
  }

  ids(): NodeId[] {
    return [...this.nodes.keys()];
  }

  // ------------------------------------------------------------ faults

  crash(id: NodeId): void {
    const n = this.node(id);
    n.core = null;
    n.storage.setHardState(n.durableHardState);
    n.incomingSnaps.clear();
  }

  restart(id: NodeId): void {
    const n = this.node(id);
    if (n.core !== null) throw new Error(`${id} is up`);
    n.core = new RaftCore(this.config(id, n.storage, n.applied));
    this.process(id);
  }

  /** Cuts both directions between every node of `a` and every node of `b`. */
  partition(a: NodeId[], b: NodeId[]): void {
    for (const x of a) {
      for (const y of b) {
        this.blocked.add(`${x}>${y}`);
        this.blocked.add(`${y}>${x}`);
      }
    }
  }

  isolate(id: NodeId): void {
    this.partition(
      [id],
      this.ids().filter((x) => x !== id),
    );
  }

  heal(): void {
    this.blocked.clear();
  }

  // ----------------------------------------------------------- driving

  tick(id: NodeId): void {
    const n = this.node(id);
    if (n.core === null) return;
    n.core.tick();
    this.process(id);
  }

  tickAll(): void {
    for (const id of this.nodes.keys()) this.tick(id);
  }

  /** The driver loop: drain Readies, following the contract in core.ts. */
  process(id: NodeId): void {
    const n = this.node(id);
    for (let guard = 0; n.core !== null && n.core.hasReady(); guard++) {
      if (guard > 100_000) throw new Error(`${id}: ready loop does not converge`);
      const core = n.core;
      const rd = core.ready();
      if (this.chance(this.opts.crashBeforePersistRate)) {
        // Only a leader's App/Heartbeat/Snap may leave before the fsync.
        this.send(n, rd.messages.filter((m) => m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap));
        this.crash(id);
        return;
      }
      if (this.chance(this.opts.interleaveRate)) this.stepOneQueuedInto(id);
      if (rd.hardState !== null) n.storage.setHardState(rd.hardState);
      n.storage.append(rd.entries);
      if (rd.mustSync || rd.snapshot !== null) n.durableHardState = n.storage.initialState().hardState;
      this.send(n, rd.messages);
      if (rd.snapshot !== null) this.install(n, rd.snapshot);
      for (const e of rd.committedEntries) this.apply(n, e);
      for (const r of rd.readStates) n.readStates.push(r);
      core.advance(rd);
      this.checkLeader(n);
    }
  }

  processAll(): void {
    for (const id of this.nodes.keys()) this.process(id);
  }

  private chance(p: number | undefined): boolean {
    return p !== undefined && p > 0 && this.rng() < p;
  }

  private send(n: SimNode, msgs: Message[]): void {
    for (const m of msgs) {
      let snap: SnapState | null = null;
      if (m.type === MessageType.Snap) {
        const meta = m.snapshot as SnapshotMeta;
        const chain = n.chain.get(meta.index);
        if (chain === undefined) throw new Error(`${n.id}: no state at snapshot index ${meta.index}`);
        snap = { index: meta.index, chain };
      }
      this.queue.push({ msg: m, snap });
    }
  }

  private install(n: SimNode, meta: SnapshotMeta): void {
    const st = n.incomingSnaps.get(meta.index);
    if (st === undefined) throw new Error(`${n.id}: snapshot ${meta.index} handed out without streamed state`);
    if (meta.index <= n.applied) throw new Error(`${n.id}: snapshot ${meta.index} not ahead of applied ${n.applied}`);
    this.checkChain(n.id, meta.index, st.chain);
    n.storage.applySnapshot(meta);
    n.applied = meta.index;
    n.chainHead = st.chain;
    n.chain.set(meta.index, st.chain);
    n.incomingSnaps.clear();
    this.snapshotsInstalled++;
  }

  private apply(n: SimNode, e: Entry): void {
    if (e.index !== n.applied + 1) throw new Error(`${n.id}: applied ${e.index} after ${n.applied}`);
    const key = entryKey(e);
    const prev = this.appliedAt.get(e.index);
    if (prev !== undefined && prev !== key) {
      throw new Error(`state machine safety: ${n.id} applied ${key} at ${e.index}, another node applied ${prev}`);
    }
    this.appliedAt.set(e.index, key);
    n.chainHead = fnv(n.chainHead, key);
    n.chain.set(e.index, n.chainHead);
    this.checkChain(n.id, e.index, n.chainHead);
    if (e.type === EntryType.ConfChange) n.storage.setConf(decodeConfState(e.data));
    else if (e.data.byteLength > 0) n.appliedData.push(decoder.decode(e.data));
    n.applied = e.index;
  }

  private checkChain(id: NodeId, index: number, chain: number): void {
    const prev = this.chainAt.get(index);
    if (prev !== undefined && prev !== chain) throw new Error(`state machine safety: ${id} state at ${index} diverges`);
    this.chainAt.set(index, chain);
  }

  private checkLeader(n: SimNode): void {
    if (n.core === null) return;
    const s = n.core.status();
    if (s.role !== Role.Leader) return;
    const prev = this.leaders.get(s.term);
    if (prev !== undefined && prev !== n.id) throw new Error(`election safety: ${prev} and ${n.id} both lead term ${s.term}`);
    this.leaders.set(s.term, n.id);
  }

  private isBlocked(m: Message): boolean {
    return this.blocked.has(`${m.from}>${m.to}`);
  }

  private stepOneQueuedInto(id: NodeId): void {
    const i = this.queue.findIndex((e) => e.msg.to === id && !this.isBlocked(e.msg));
    if (i < 0) return;
    const [env] = this.queue.splice(i, 1);
    this.stepEnvelope(env, false);
  }

  /** Delivers one queued message (the oldest, or a random one with `reorder`). */
  deliverOne(): boolean {
    if (this.queue.length === 0) return false;
    const i = this.opts.reorder ? Math.floor(this.rng() * this.queue.length) : 0;
    const env = this.queue[i];
    if (!this.chance(this.opts.dupRate)) this.queue.splice(i, 1);
    this.delivered++;
    this.stepEnvelope(env, true);
    return true;
  }

  private stepEnvelope(env: Envelope, processAfter: boolean): void {
    const m = env.msg;
    const dest = this.nodes.get(m.to);
    const sender = this.nodes.get(m.from);
    const lost = dest === undefined || dest.core === null || this.isBlocked(m) || this.chance(this.opts.dropRate);
    if (lost) {
      if (m.type === MessageType.Snap && sender?.core) sender.core.reportSnapshot(m.to, false);
      // A transport notices a cut link (not a random loss): tell the sender.
      else if (this.isBlocked(m) && sender?.core) sender.core.reportUnreachable(m.to);
      return;
    }
    if (env.snap !== null) dest.incomingSnaps.set(env.snap.index, env.snap);
    dest.raft().step(m);
    if (m.type === MessageType.Snap && sender?.core) sender.core.reportSnapshot(m.to, true);
    this.checkLeader(dest);
    if (processAfter) {
      this.process(m.to);
      if (sender !== undefined) this.process(sender.id);
    }
  }

  /** Delivers until the queue is empty (or `maxMessages`). */
  deliverAll(maxMessages = 100_000): void {
    this.processAll();
    for (let k = 0; k < maxMessages && this.deliverOne(); k++) {
      // keep delivering
    }
  }

  /** Ticks everyone and delivers everything, `rounds` times. */
  run(rounds: number): void {
    for (let r = 0; r < rounds; r++) {
      this.tickAll();
      this.deliverAll();
    }
  }

  /** The up node that believes it leads the highest term, or ''. */
  leader(): NodeId {
    let best: NodeId = '';
    let bestTerm = -1;
    for (const n of this.nodes.values()) {
      if (n.core === null) continue;
      const s = n.core.status();
      if (s.role === Role.Leader && s.term > bestTerm) {
        best = n.id;
        bestTerm = s.term;
      }
    }
    return best;
  }

  /** Ticks and delivers until some node leads; returns it. */
  electLeader(maxRounds = 200): NodeId {
    for (let r = 0; r < maxRounds; r++) {
      const l = this.leader();
      if (l !== '') return l;
      this.tickAll();
      this.deliverAll();
    }
    throw new Error('no leader elected');
  }

  /** Log matching on the persisted logs: wherever two logs agree on a term, all earlier entries agree. */
  checkLogMatching(): void {
    const ns = [...this.nodes.values()];
    for (let a = 0; a < ns.length; a++) {
      for (let b = a + 1; b < ns.length; b++) checkPair(ns[a], ns[b]);
    }
  }
}

function checkPair(a: SimNode, b: SimNode): void {
  const lo = Math.max(a.storage.firstIndex(), b.storage.firstIndex());
  const hi = Math.min(a.storage.lastIndex(), b.storage.lastIndex());
  if (lo > hi) return;
  const ea = a.storage.entries(lo, hi + 1, Number.POSITIVE_INFINITY);
  const eb = b.storage.entries(lo, hi + 1, Number.POSITIVE_INFINITY);
  let agreed = false;
  for (let k = ea.length - 1; k >= 0; k--) {
    if (ea[k].term === eb[k].term) {
      agreed = true;
      if (entryKey(ea[k]) !== entryKey(eb[k])) throw new Error(`log matching: ${a.id}/${b.id} differ at ${ea[k].index} within one term`);
    } else if (agreed) {
      throw new Error(`log matching: ${a.id}/${b.id} agree above ${ea[k].index} but differ there`);
    }
  }
}
