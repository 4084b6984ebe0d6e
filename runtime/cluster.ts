// The main thread's side of a cluster: the Raft transport over NATS and the
// routing of requests to group leaders (SPEC §6).
//
// Transport: the workers hand out encoded Raft messages (runtime/raft/codec.ts);
// every message for one peer node in one event-loop turn goes out as ONE NATS
// message on `<prefix>.raft.<peer>`, split by the server's max payload, and a
// single message larger than that is sent in chunks. Inbound batches from
// nodes outside CLUSTER_NODES are dropped.
//   batch: kind:u8=1 fromLen:u8 from (len:u32 message)*
//   chunk: kind:u8=2 fromLen:u8 from id:u32 index:u16 count:u16 bytes
//
// Liveness: a peer that got nothing else from this node for KEEPALIVE_MS gets
// an empty batch, so every node pair exchanges at least that ("heartbeats
// coalesced per node pair"); a peer not heard from for PEER_DOWN_MS is down,
// and the workers wake the quiesced groups it leads so their followers elect.
//
// Leader announcements: every LEADERS_MS each node publishes on
// `<prefix>.leaders` the groups it leads with their terms and voters, so a
// node without a replica of a group still knows its leader, and the
// coordinator every group's voters; a down peer's groups are forgotten until
// someone announces them.
//   leaders: fromLen:u8 from (group:u16 term:f64 votersLen:u16 voters)*   (voters comma-joined)
//
// Membership (runtime/membership.ts): every node announces its name,
// incarnation and founding record on `<prefix>.hello` each HELLO_MS (fresh
// nodes use these to found or join the cluster, awaitFounding). The
// lowest-named live node coordinates: each COORDINATE_MS it asks group
// leaders for the membership changes that replace replicas of lost
// incarnations (a node back with an empty or damaged data dir).
//
// Routing: every replica reports its group's leader; a request goes to the
// local worker when this node leads, else to the leader's `<prefix>.rpc.<node>`
// (request/reply). Without a leader it waits up to NO_LEADER_WAIT_MS, then
// answers 503 (Retry-After), so no request hangs while a group has no quorum.
//   rpc request: op:u8 group:u16 payload      rpc reply: kind:u16 body
//   (replies come to `<prefix>.reply.<self>.<id>`, one wildcard subscription:
//   a client-side request costs no subscription or error object)
//   (group ALL_WORKERS: every worker of that node; the reply body is the JSON
//   array of their bodies)
//
// Listing gathers from every node the records of the groups it leads and
// merges them in id order; a gather in which some group had no leader is
// retried until NO_LEADER_WAIT_MS, then answered 503.
//
// Fault injection for the cluster tests: FLEETLM_FAILPOINT=partition-file:<path>
// names a file listing (comma or newline separated) peers this node is cut
// off from: no Raft traffic or forwarded request goes to or comes from them.
// It is read every PARTITION_POLL_MS; a missing file cuts nothing.
import fs from 'node:fs';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { QUIESCE_TYPE, encodedFrom, encodedGroup, encodedTo } from './raft/codec.js';
import { MessageType } from './raft/types.js';
import type { Counter } from 'prom-client';
import type { Dispatcher, WorkerReply } from '../gateway/dispatch.js';
import { ReplyKind, errorReply } from './replies.js';
import { NOT_LEADER, AppError, unavailable, type WireError } from '../actors/errors.js';
import { ReqOp } from './wire.js';
import { limits } from './limits.js';
import { type Announcement, type Founding, type GroupView, type LeaderView, coordinatorOf, decideFounding, nodeOf, planLeaderMoves, planSteps } from './membership.js';
import { log } from './log.js';
import { metrics } from '../gateway/metrics.js';

/** How long a request waits for its group to have a leader before it gets 503. */
export const NO_LEADER_WAIT_MS = 2000;
/** A forwarded request the leader does not answer within this gets 503 (outcome unknown). */
const FORWARD_TIMEOUT_MS = 5000;
/** NATS framing and headers next to our payload. */
const PAYLOAD_SLACK_BYTES = 512;
/** Chunks of one message not completed within this are dropped (Raft resends). */
const CHUNK_TTL_MS = 10_000;

const PARTITION_POLL_MS = 100;
const KEEPALIVE_MS = 100;
const LEADERS_MS = 250;
const PEER_DOWN_MS = 500;
const HELLO_MS = 1000;
const FOUNDING_HELLO_MS = 200;
const COORDINATE_MS = 1000;
/** Membership changes in flight at once (each new replica is caught up by a snapshot). */
const COORDINATE_STEPS_MAX = 64;
/** Leadership moves per coordinator round: each pauses its group's writes for about a round trip. */
const LEADER_MOVES_MAX = 64;

const ALL_WORKERS = 0xffff;

const KIND_BATCH = 1;
const KIND_CHUNK = 2;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** One worker's answer to a cluster listing (runtime/listing.ts `led`). */
interface ListPart {
  led: number[];
  records: unknown[];
}

interface PartialMessage {
  parts: (Uint8Array | undefined)[];
  left: number;
  expiresMs: number;
}

export class Cluster {
  /** Leader of each group as this node's replica last reported it ('' = none known). */
  readonly leaders: string[] = new Array<string>(limits.groupCount).fill('');
  private readonly terms: number[] = new Array<number>(limits.groupCount).fill(0);
  /** Voters of each group as last reported by a replica here or announced by its leader. */
  private readonly voters: string[][] = Array.from({ length: limits.groupCount }, () => []);
  /** Live peers' incarnations, from their hellos. */
  private readonly incarnations = new Map<string, string>();
  private coordinating = false;
  private readonly leaderWaiters = new Map<number, (() => void)[]>();
  private readonly outbound = new Map<string, Uint8Array[]>();
  /** Forwarded requests and their replies of this turn: published together with the Raft batches. */
  private readonly outboxRpc: QueuedPublish[] = [];
  private flushScheduled = false;
  private readonly partials = new Map<string, PartialMessage>();
  private nextChunkId = 1;
  private readonly subs: Subscription[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  /** The cluster's nodes now (CLUSTER_NODES, or DNS: setMembers). */
  private members: Set<string>;
  /** Members and nodes hosting a voter of some group as this node knows it (trusted while the coordinator moves them out); null: recompute. */
  private trustedNodes: Set<string> | null = null;
  private readonly replicas: boolean[];
  private readonly replyPrefix: string;
  private nextReplyId = 1;
  private readonly replies = new Map<number, (m: Msg | null) => void>();
  /** Peers cut off by the partition failpoint. */
  private cutOff = new Set<string>();
  private readonly lastHeardMs = new Map<string, number>();
  private readonly lastSentMs = new Map<string, number>();
  private down = '';
  private downSentMs = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly prefix: string,
    readonly self: string,
    nodes: readonly string[],
    private readonly dispatcher: Dispatcher,
    private readonly incarnation: string,
    private readonly founding: Founding,
  ) {
    this.members = new Set(nodes);
    // Known from the workers' reports (what they opened, started and retired), not from placement.
    this.replicas = new Array<boolean>(limits.groupCount).fill(false);
    this.replyPrefix = `${prefix}.reply.${self}`;
    dispatcher.onRaft = (msg) => this.send(msg);
    metrics.raftReplicas.set(0);
    dispatcher.onLeader = (group, leader, term, voters, hosted) => {
      if (!hosted) {
        // Retired here: from now on the group's leader is learned from its announcements.
        if (this.replicas[group]) metrics.raftReplicas.dec();
        this.replicas[group] = false;
        return;
      }
      // Only a replica here reports: from now on this node knows the group first-hand.
      if (!this.replicas[group]) {
        this.replicas[group] = true;
        metrics.raftReplicas.inc();
      }
      if (term >= this.terms[group]) this.setVoters(group, voters);
      this.setLeader(group, nodeOf(leader), term);
    };
    this.subs.push(
      nc.subscribe(`${prefix}.raft.${self}`, {
        callback: (err, m) => {
          if (err === null) this.onBatch(m.data);
        },
      }),
      nc.subscribe(`${prefix}.rpc.${self}`, {
        callback: (err, m) => {
          if (err === null) void this.onRpc(m);
        },
      }),
      nc.subscribe(`${prefix}.leaders`, {
        callback: (err, m) => {
          if (err === null) this.onLeaders(m.data);
        },
      }),
      nc.subscribe(`${prefix}.hello`, {
        callback: (err, m) => {
          const a = err === null ? parseAnnouncement(m.data) : null;
          if (a === null || !this.trusted().has(a.name) || a.name === self) return;
          const before = this.incarnations.get(a.name);
          this.incarnations.set(a.name, a.incarnation);
          // Back as a new incarnation (faster than PEER_DOWN_MS): its old replicas are gone, and
          // the groups they led must elect now, not wait quiesced for a leader that no longer exists.
          if (before !== undefined && before !== a.incarnation) this.dispatcher.peersDown([a.name]);
        },
      }),
      nc.subscribe(`${this.replyPrefix}.*`, {
        callback: (err, m) => {
          if (err !== null) return;
          const id = Number(m.subject.slice(this.replyPrefix.length + 1));
          const settle = this.replies.get(id);
          this.replies.delete(id);
          settle?.(m);
        },
      }),
    );
    this.watchPeers();
    const every = (ms: number, f: () => void) => this.timers.push(setInterval(f, ms).unref());
    every(CHUNK_TTL_MS, () => this.sweepChunks());
    every(KEEPALIVE_MS, () => this.liveness());
    every(LEADERS_MS, () => this.announceLeaders());
    const hello = () => this.publish(`${prefix}.hello`, encodeAnnouncement({ name: self, incarnation, founding }));
    hello();
    every(HELLO_MS, hello);
    every(COORDINATE_MS, () => void this.coordinate());
    const partitionFile = /^partition-file:(.+)$/.exec(process.env.FLEETLM_FAILPOINT ?? '')?.[1];
    if (partitionFile !== undefined) every(PARTITION_POLL_MS, () => (this.cutOff = readPartitionFile(partitionFile)));
  }

  /** The membership changed (DNS discovery): groups are placed over the new list from the next coordinator round. */
  setMembers(nodes: readonly string[]): void {
    const next = new Set([...nodes, this.self]);
    if (next.size === this.members.size && [...next].every((n) => this.members.has(n))) return;
    log('info', 'members_changed', 'cluster membership changed', { members: [...next].sort(), before: [...this.members].sort() });
    this.members = next;
    this.trustedNodes = null;
    this.watchPeers();
  }

  /** Members and nodes hosting voters: their Raft traffic, hellos and announcements are accepted. */
  private trusted(): Set<string> {
    if (this.trustedNodes === null) {
      this.trustedNodes = new Set(this.members);
      for (const vs of this.voters) for (const v of vs) this.trustedNodes.add(nodeOf(v));
    }
    return this.trustedNodes;
  }

  private setVoters(group: number, voters: string[]): void {
    const old = this.voters[group];
    if (old.length === voters.length && old.every((v, i) => v === voters[i])) return;
    this.voters[group] = voters;
    this.trustedNodes = null;
    this.watchPeers();
  }

  /** Liveness is tracked for every trusted peer; a new one counts as heard now. */
  private watchPeers(): void {
    const now = Date.now();
    const peers = this.trusted();
    for (const n of this.lastHeardMs.keys()) if (!peers.has(n)) this.lastHeardMs.delete(n);
    for (const n of peers) if (n !== this.self && !this.lastHeardMs.has(n)) this.lastHeardMs.set(n, now);
  }

  /** This node holds a replica of the group. */
  hasReplica(group: number): boolean {
    return this.replicas[group];
  }

  /** Every group has a leader somewhere. */
  allLed(): boolean {
    return this.leaders.every((l) => l !== '');
  }

  /** Groups this node leads. */
  ledHere(): number {
    let n = 0;
    for (const l of this.leaders) if (l === this.self) n++;
    return n;
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    for (const s of this.subs) s.unsubscribe();
  }

  // ------------------------------------------------------------ routing

  /** One request to the group's leader, wherever it is. */
  async request(op: ReqOp, group: number, payload: Uint8Array): Promise<WorkerReply> {
    const deadline = Date.now() + NO_LEADER_WAIT_MS;
    for (;;) {
      const leader = this.leaders[group];
      if (leader !== '') {
        const r = leader === this.self ? await this.local(op, group, payload) : await this.forward(leader, op, group, payload);
        if (!isNotLeader(r)) return r;
      }
      // No leader known, or the one asked no longer leads: wait for news.
      const left = deadline - Date.now();
      if (left <= 0) throw unavailable(`group ${group} has no leader (no quorum); retry later`);
      await this.leaderChange(group, leader === '' ? left : Math.min(left, 100));
    }
  }

  private async local(op: ReqOp, group: number, payload: Uint8Array): Promise<WorkerReply> {
    if (op !== ReqOp.Propose) return this.dispatcher.request(op, group, payload);
    const started = performance.now();
    const r = await this.dispatcher.request(op, group, payload);
    metrics.raftCommitLatency.observe(performance.now() - started);
    return r;
  }

  /**
   * The cluster-wide listing: `payload` is a ListQuery. Returns one JSON
   * array of records per answering worker, for the gateway's merge.
   */
  async list(payload: Uint8Array): Promise<Uint8Array[]> {
    const q = { ...(JSON.parse(fromUtf8.decode(payload)) as object), led: true };
    const ledPayload = utf8.encode(JSON.stringify(q));
    const deadline = Date.now() + NO_LEADER_WAIT_MS;
    for (;;) {
      const answers = await Promise.all([this.self, ...this.lastHeardMs.keys()].map((n) => this.listOn(n, ledPayload)));
      const covered = new Set<number>();
      const runs: Uint8Array[] = [];
      for (const parts of answers) {
        for (const p of parts) {
          for (const g of p.led) covered.add(g);
          runs.push(utf8.encode(JSON.stringify(p.records)));
        }
      }
      if (covered.size === limits.groupCount) return runs;
      if (Date.now() >= deadline) throw unavailable(`listing: ${limits.groupCount - covered.size} groups have no leader; retry later`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The listing parts of one node (none when it does not answer: its groups then show as uncovered). */
  private async listOn(node: string, payload: Uint8Array): Promise<ListPart[]> {
    if (node === this.self) {
      const replies = await this.dispatcher.broadcast(ReqOp.List, payload);
      return replies.filter((r) => r.kind === ReplyKind.Ok).map((r) => JSON.parse(fromUtf8.decode(r.body)) as ListPart);
    }
    if (this.cutOff.has(node)) return [];
    const r = await this.forward(node, ReqOp.List, ALL_WORKERS, payload).catch(() => null);
    if (r === null || r.kind !== ReplyKind.Ok) return [];
    return JSON.parse(fromUtf8.decode(r.body)) as ListPart[];
  }

  /** Resolves at the group's next leader change, or after `ms`. */
  private leaderChange(group: number, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const list = this.leaderWaiters.get(group) ?? [];
      this.leaderWaiters.set(group, list);
      const done = () => {
        clearTimeout(timer);
        const at = list.indexOf(done);
        if (at >= 0) list.splice(at, 1);
        resolve();
      };
      const timer = setTimeout(done, ms);
      list.push(done);
    });
  }

  private setLeader(group: number, leader: string, term: number): void {
    if (term < this.terms[group]) return; // a late report from an older term
    if (term === this.terms[group] && leader === this.leaders[group]) return; // restated, nothing new
    if (term > this.terms[group]) metrics.raftTermChanges.inc();
    this.terms[group] = term;
    this.leaders[group] = leader;
    metrics.raftLeaders.set(this.ledHere());
    metrics.raftGroupsWithoutLeader.set(this.leaders.reduce((n, l) => n + (l === '' ? 1 : 0), 0));
    const waiters = this.leaderWaiters.get(group);
    if (waiters === undefined) return;
    this.leaderWaiters.delete(group);
    for (const w of [...waiters]) w();
  }

  private async forward(node: string, op: ReqOp, group: number, payload: Uint8Array): Promise<WorkerReply> {
    if (this.cutOff.has(node)) return notLeaderReply(`node ${node} is unreachable`);
    const req = new Uint8Array(3 + payload.byteLength);
    req[0] = op;
    req[1] = group >> 8;
    req[2] = group & 0xff;
    req.set(payload, 3);
    const res = await new Promise<Msg | null>((resolve) => {
      const id = this.nextReplyId++;
      const timer = setTimeout(() => {
        this.replies.delete(id);
        resolve(null);
      }, FORWARD_TIMEOUT_MS);
      this.replies.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.queuePublish({
        subject: `${this.prefix}.rpc.${node}`,
        data: req,
        reply: `${this.replyPrefix}.${id}`,
        failed: () => {
          this.replies.delete(id);
          clearTimeout(timer);
          resolve(null);
        },
      });
    });
    if (res === null) {
      metrics.raftForwardFailures.inc();
      throw unavailable(`the leader of group ${group} (${node}) did not answer in time; the outcome is unknown, retry with an idempotency key`);
    }
    // The server's "no responders" status: nobody listens there (node down), nothing happened.
    if (res.headers?.code === 503 || res.data.length < 2) {
      metrics.raftForwardFailures.inc();
      return notLeaderReply(`node ${node} is unreachable`);
    }
    const d = res.data;
    return { kind: ((d[0] << 8) | d[1]) as ReplyKind, body: d.subarray(2) };
  }

  private async onRpc(m: Msg): Promise<void> {
    const d = m.data;
    let r: WorkerReply;
    if (d.length < 3) r = toWorkerReply(errorReply(unavailable('malformed forwarded request')));
    else {
      try {
        // Served locally only: a forwarded request is never forwarded again.
        const group = (d[1] << 8) | d[2];
        if (group === ALL_WORKERS) {
          const parts = await this.dispatcher.broadcast(d[0] as ReqOp, d.subarray(3));
          const failed = parts.find((p) => p.kind !== ReplyKind.Ok);
          r = failed ?? { kind: ReplyKind.Ok, body: utf8.encode(`[${parts.map((p) => fromUtf8.decode(p.body)).join(',')}]`) };
        } else r = await this.dispatcher.request(d[0] as ReqOp, group, d.subarray(3));
      } catch (err) {
        r = toWorkerReply(errorReply(err));
      }
    }
    const out = new Uint8Array(2 + r.body.byteLength);
    out[0] = r.kind >> 8;
    out[1] = r.kind & 0xff;
    out.set(r.body, 2);
    if (m.reply) this.queuePublish({ subject: m.reply, data: out });
  }

  // ------------------------------------------------------------ liveness

  private liveness(): void {
    const now = Date.now();
    const down: string[] = [];
    for (const [peer, heard] of this.lastHeardMs) {
      if ((this.lastSentMs.get(peer) ?? 0) <= now - KEEPALIVE_MS && !this.cutOff.has(peer)) {
        this.publish(`${this.prefix}.raft.${peer}`, this.header(KIND_BATCH));
        this.lastSentMs.set(peer, now);
      }
      if (heard < now - PEER_DOWN_MS) down.push(peer);
    }
    const key = down.join(',');
    // On every change, and again each second while any is down (a group may have quiesced meanwhile).
    if (key !== this.down || (down.length > 0 && now - this.downSentMs >= 1000)) {
      if (key !== this.down) log(down.length > 0 ? 'warn' : 'info', 'peers_down', 'peer nodes not heard from', { down });
      this.down = key;
      this.downSentMs = now;
      this.dispatcher.peersDown(down);
      // Groups without a replica here that a down peer led: wait for an announcement.
      for (let g = 0; g < limits.groupCount; g++) {
        if (!this.replicas[g] && down.includes(this.leaders[g])) this.setLeader(g, '', this.terms[g]);
      }
    }
  }

  private announceLeaders(): void {
    const from = utf8.encode(this.self);
    const led: [number, Uint8Array][] = [];
    for (let g = 0; g < limits.groupCount; g++) if (this.leaders[g] === this.self) led.push([g, utf8.encode(this.voters[g].join(','))]);
    const out = new Uint8Array(1 + from.length + led.reduce((n, [, v]) => n + 12 + v.length, 0));
    const dv = new DataView(out.buffer);
    out[0] = from.length;
    out.set(from, 1);
    let pos = 1 + from.length;
    for (const [g, voters] of led) {
      dv.setUint16(pos, g);
      dv.setFloat64(pos + 2, this.terms[g]);
      dv.setUint16(pos + 10, voters.length);
      out.set(voters, pos + 12);
      pos += 12 + voters.length;
    }
    this.publish(`${this.prefix}.leaders`, out);
  }

  /** A peer's leader announcement: taken for the groups this node has no replica of (its own replicas know better). */
  private onLeaders(d: Uint8Array): void {
    if (d.length < 1 || d.length < 1 + d[0]) return;
    const from = fromUtf8.decode(d.subarray(1, 1 + d[0]));
    if (!this.trusted().has(from) || from === this.self || this.cutOff.has(from)) return;
    const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    for (let pos = 1 + d[0]; pos + 12 <= d.length; ) {
      const g = dv.getUint16(pos);
      const term = dv.getFloat64(pos + 2);
      const votersEnd = pos + 12 + dv.getUint16(pos + 10);
      if (votersEnd > d.length) return;
      const voters = fromUtf8.decode(d.subarray(pos + 12, votersEnd));
      pos = votersEnd;
      if (g >= limits.groupCount || this.replicas[g] || !Number.isSafeInteger(term)) continue;
      if (term >= this.terms[g]) this.setVoters(g, voters === '' ? [] : voters.split(','));
      if (term > this.terms[g] || (term === this.terms[g] && this.leaders[g] === '')) this.setLeader(g, from, term);
    }
  }

  // ------------------------------------------------------------ coordinator

  /** Live nodes → incarnation: this one, and peers heard from lately that said hello. */
  private live(): Map<string, string> {
    const now = Date.now();
    const live = new Map([[this.self, this.incarnation]]);
    for (const [peer, inc] of this.incarnations) {
      if ((this.lastHeardMs.get(peer) ?? 0) >= now - PEER_DOWN_MS && !this.cutOff.has(peer)) live.set(peer, inc);
    }
    return live;
  }

  /** One coordinator round (runtime/membership.ts planSteps), on the lowest-named live node only. */
  private async coordinate(): Promise<void> {
    const live = this.live();
    if (coordinatorOf(live.keys()) !== this.self) {
      metrics.clusterReplicasToReplace.set(0);
      metrics.clusterLeadersToMove.set(0);
      return;
    }
    if (this.coordinating) return;
    this.coordinating = true;
    try {
      const views: GroupView[] = [];
      for (let g = 0; g < limits.groupCount; g++) if (this.leaders[g] !== '' && this.voters[g].length > 0) views.push({ group: g, voters: this.voters[g] });
      const steps = planSteps(views, live, this.founding, limits.groupCount, [...this.members]);
      metrics.clusterReplicasToReplace.set(steps.length);
      await Promise.all(
        steps.slice(0, COORDINATE_STEPS_MAX).map(async (s) => {
          log('info', 'conf_change', 'coordinator: group membership change', { group: s.group, voters: s.voters, why: s.why });
          const r = await this.request(ReqOp.ConfChange, s.group, utf8.encode(JSON.stringify({ from: this.voters[s.group], voters: s.voters }))).catch((err: unknown) => toWorkerReply(errorReply(err)));
          if (r.kind !== ReplyKind.Ok) log('warn', 'conf_change_failed', 'coordinator: membership change not proposed; retried next round', { group: s.group, body: fromUtf8.decode(r.body) });
        }),
      );
      // Leaders where the placement prefers them, in groups whose membership is settled.
      const changing = new Set(steps.map((s) => s.group));
      const leading: LeaderView[] = views.filter((v) => !changing.has(v.group)).map((v) => ({ ...v, leaderNode: this.leaders[v.group] }));
      const moves = planLeaderMoves(leading, live, [...this.members], this.founding, limits.groupCount);
      metrics.clusterLeadersToMove.set(moves.length);
      await Promise.all(
        moves.slice(0, LEADER_MOVES_MAX).map(async (m) => {
          const r = await this.request(ReqOp.TransferLeader, m.group, utf8.encode(JSON.stringify({ to: m.to }))).catch((err: unknown) => toWorkerReply(errorReply(err)));
          if (r.kind !== ReplyKind.Ok) log('debug', 'leader_move_failed', 'coordinator: leadership not moved; retried next round', { group: m.group, to: m.to, body: fromUtf8.decode(r.body) });
        }),
      );
    } finally {
      this.coordinating = false;
    }
  }

  // ------------------------------------------------------------ transport

  /** Queues an encoded message for its peer; everything of this turn leaves together. */
  private send(msg: Uint8Array): void {
    const to = nodeOf(encodedTo(msg));
    let q = this.outbound.get(to);
    if (q === undefined) this.outbound.set(to, (q = []));
    q.push(msg);
    metrics.raftPendingFlush.inc();
    this.scheduleFlush();
  }

  /**
   * The NATS client writes its buffer to the socket once per microtask
   * checkpoint, which uWS runs after every HTTP request: published at once,
   * each forwarded request cost its own send syscall (socket writes were
   * the main thread's top item under bench:cluster). Queued, a turn's
   * requests and replies share one write with its Raft batches.
   */
  private queuePublish(p: QueuedPublish): void {
    this.outboxRpc.push(p);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private header(kind: number): Uint8Array {
    const from = utf8.encode(this.self);
    const h = new Uint8Array(2 + from.length);
    h[0] = kind;
    h[1] = from.length;
    h.set(from, 2);
    return h;
  }

  private flush(): void {
    this.flushScheduled = false;
    const max = (this.nc.info?.max_payload ?? 1024 * 1024) - PAYLOAD_SLACK_BYTES;
    const head = this.header(KIND_BATCH);
    for (const [peer, msgs] of this.outbound) {
      metrics.raftPendingFlush.dec(msgs.length);
      if (this.cutOff.has(peer)) continue;
      const subject = `${this.prefix}.raft.${peer}`;
      let batch: Uint8Array[] = [];
      let size = head.length;
      const publish = () => {
        if (batch.length === 0) return;
        const out = new Uint8Array(size);
        out.set(head, 0);
        let pos = head.length;
        for (const m of batch) {
          new DataView(out.buffer).setUint32(pos, m.byteLength);
          out.set(m, pos + 4);
          pos += 4 + m.byteLength;
        }
        this.publish(subject, out);
        this.lastSentMs.set(peer, Date.now());
        batch = [];
        size = head.length;
      };
      for (const m of msgs) {
        if (head.length + 4 + m.byteLength > max) {
          this.publishChunked(subject, m, max);
          continue;
        }
        if (size + 4 + m.byteLength > max) publish();
        batch.push(m);
        size += 4 + m.byteLength;
      }
      publish();
    }
    this.outbound.clear();
    for (const p of this.outboxRpc) {
      try {
        this.nc.publish(p.subject, p.data, p.reply === undefined ? undefined : { reply: p.reply });
      } catch {
        p.failed?.();
      }
    }
    this.outboxRpc.length = 0;
  }

  private publishChunked(subject: string, m: Uint8Array, max: number): void {
    const head = this.header(KIND_CHUNK);
    const room = max - head.length - 8;
    const count = Math.ceil(m.byteLength / room);
    const id = this.nextChunkId++ >>> 0;
    for (let i = 0; i < count; i++) {
      const part = m.subarray(i * room, Math.min(m.byteLength, (i + 1) * room));
      const out = new Uint8Array(head.length + 8 + part.byteLength);
      out.set(head, 0);
      const dv = new DataView(out.buffer);
      dv.setUint32(head.length, id);
      dv.setUint16(head.length + 4, i);
      dv.setUint16(head.length + 6, count);
      out.set(part, head.length + 8);
      this.publish(subject, out);
    }
  }

  private publish(subject: string, data: Uint8Array): void {
    try {
      this.nc.publish(subject, data);
      metrics.raftBatchesSent.inc();
    } catch (err) {
      // Raft resends what is lost; a closed connection is reported by the NATS status log.
      metrics.raftSendFailures.inc();
    }
  }

  private onBatch(d: Uint8Array): void {
    if (d.length < 2 || d.length < 2 + d[1]) return this.drop('short batch');
    const from = fromUtf8.decode(d.subarray(2, 2 + d[1]));
    if (!this.trusted().has(from) || from === this.self) return this.drop(`batch from non-member ${JSON.stringify(from)}`);
    if (this.cutOff.has(from)) return;
    this.lastHeardMs.set(from, Date.now());
    let pos = 2 + d[1];
    if (d[0] === KIND_CHUNK) return this.onChunk(from, d.subarray(pos));
    if (d[0] !== KIND_BATCH) return this.drop(`unknown batch kind ${d[0]}`);
    const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    while (pos + 4 <= d.length) {
      const len = dv.getUint32(pos);
      if (pos + 4 + len > d.length) return this.drop('truncated batch');
      this.deliver(from, d.subarray(pos + 4, pos + 4 + len));
      pos += 4 + len;
    }
  }

  private onChunk(from: string, d: Uint8Array): void {
    if (d.length < 8) return this.drop('short chunk');
    const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const key = `${from}/${dv.getUint32(0)}`;
    const index = dv.getUint16(4);
    const count = dv.getUint16(6);
    let p = this.partials.get(key);
    if (p === undefined) this.partials.set(key, (p = { parts: new Array(count), left: count, expiresMs: Date.now() + CHUNK_TTL_MS }));
    if (index >= p.parts.length || p.parts[index] !== undefined) return this.drop('bad chunk index');
    p.parts[index] = d.slice(8);
    if (--p.left > 0) return;
    this.partials.delete(key);
    const parts = p.parts as Uint8Array[];
    const whole = new Uint8Array(parts.reduce((n, x) => n + x.byteLength, 0));
    let pos = 0;
    for (const x of parts) {
      whole.set(x, pos);
      pos += x.byteLength;
    }
    this.deliver(from, whole);
  }

  /** A trusted node speaks only for its own replicas, to this node's. */
  private deliver(from: string, msg: Uint8Array): void {
    if (msg.byteLength < 5 || msg.byteLength < 5 + msg[3] || nodeOf(encodedTo(msg)) !== this.self) return this.drop('message for another node');
    if (nodeOf(encodedFrom(msg)) !== from) return this.drop(`message from ${from} for another node's replica`);
    receivedOfType(msg[0]).inc();
    this.dispatcher.deliverRaft(encodedGroup(msg), msg);
  }

  private sweepChunks(): void {
    const now = Date.now();
    for (const [k, p] of this.partials) if (p.expiresMs < now) this.partials.delete(k);
  }

  private drop(why: string): void {
    metrics.raftMessagesDropped.inc();
    log('debug', 'raft_dropped', 'Raft traffic dropped', { why });
  }
}

interface QueuedPublish {
  subject: string;
  data: Uint8Array;
  reply?: string;
  /** Called when the publish throws (connection closed): nothing was sent. */
  failed?: () => void;
}

/** The received-messages counter of a Raft message type (children made once: this runs per message). */
const RAFT_TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [MessageType.App, 'app'],
  [MessageType.AppResp, 'app_resp'],
  [MessageType.Vote, 'vote'],
  [MessageType.VoteResp, 'vote_resp'],
  [MessageType.PreVote, 'pre_vote'],
  [MessageType.PreVoteResp, 'pre_vote_resp'],
  [MessageType.Heartbeat, 'heartbeat'],
  [MessageType.HeartbeatResp, 'heartbeat_resp'],
  [MessageType.Snap, 'snapshot'],
  [MessageType.ReadIndex, 'read_index'],
  [MessageType.ReadIndexResp, 'read_index_resp'],
  [MessageType.TimeoutNow, 'timeout_now'],
  [QUIESCE_TYPE, 'quiesce'],
]);
const receivedByType = new Map<number, Counter.Internal>();
function receivedOfType(type: number): Counter.Internal {
  let c = receivedByType.get(type);
  if (c === undefined) {
    c = metrics.raftMessagesReceived.labels(RAFT_TYPE_NAMES.get(type) ?? 'unknown');
    receivedByType.set(type, c);
  }
  return c;
}

function readPartitionFile(file: string): Set<string> {
  try {
    return new Set(fs.readFileSync(file, 'utf8').split(/[,\s]+/).filter(Boolean));
  } catch {
    return new Set();
  }
}

function toWorkerReply(r: { kind: ReplyKind; body: string }): WorkerReply {
  return { kind: r.kind, body: utf8.encode(r.body) };
}

function notLeaderReply(message: string): WorkerReply {
  return toWorkerReply(errorReply(new AppError('unavailable', message, NOT_LEADER)));
}

function isNotLeader(r: WorkerReply): boolean {
  if (r.kind !== ReplyKind.Error) return false;
  const w = JSON.parse(fromUtf8.decode(r.body)) as WireError;
  return w.detail === NOT_LEADER;
}

function encodeAnnouncement(a: Announcement): Uint8Array {
  return utf8.encode(JSON.stringify(a));
}

function parseAnnouncement(d: Uint8Array): Announcement | null {
  try {
    const a = JSON.parse(fromUtf8.decode(d)) as Announcement;
    return typeof a.name === 'string' && typeof a.incarnation === 'string' && (a.founding === null || Array.isArray(a.founding)) ? a : null;
  } catch {
    return null;
  }
}

/**
 * A data dir without a founding record: announce this node until the
 * cluster's founding record is known (runtime/membership.ts decideFounding),
 * logging who is still awaited every few seconds.
 */
export async function awaitFounding(
  nc: NatsConnection,
  prefix: string,
  self: string,
  incarnation: string,
  listed: () => readonly string[],
  stableMs: number,
): Promise<Founding> {
  const heard = new Map<string, Announcement>([[self, { name: self, incarnation, founding: null }]]);
  let decided: Founding | null = null;
  let wake = () => {};
  let list = '';
  let listSinceMs = Date.now();
  const decide = () => {
    const now = listed();
    if (now.join(',') !== list) {
      list = now.join(',');
      listSinceMs = Date.now();
    }
    const d = decideFounding(now, heard);
    // Adopting a record is always safe; founding one waits for the list to hold still.
    const adopting = [...heard.values()].some((a) => a.founding !== null);
    if (d !== null && (adopting || Date.now() - listSinceMs >= stableMs)) decided = d;
  };
  const sub = nc.subscribe(`${prefix}.hello`, {
    callback: (err, m) => {
      const a = err === null ? parseAnnouncement(m.data) : null;
      if (a === null || a.name === self) return;
      heard.set(a.name, a);
      decide();
      if (decided !== null) wake();
    },
  });
  const started = Date.now();
  let loggedMs = 0;
  try {
    for (decide(); decided === null; decide()) {
      nc.publish(`${prefix}.hello`, encodeAnnouncement(heard.get(self)!));
      if (Date.now() - loggedMs > 5000) {
        loggedMs = Date.now();
        log('info', 'founding_wait', 'waiting for the cluster: a fresh data dir joins when any node knows the cluster, or founds it with every listed node', {
          heard: [...heard.keys()],
          waiting_for: listed().filter((n) => !heard.has(n)),
          ms: loggedMs - started,
        });
      }
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, FOUNDING_HELLO_MS);
      });
    }
    // Others may still be deciding: they hear this node's record from now on.
    nc.publish(`${prefix}.hello`, encodeAnnouncement({ name: self, incarnation, founding: decided }));
    return decided;
  } finally {
    sub.unsubscribe();
  }
}
