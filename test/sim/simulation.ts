// The deterministic whole-cluster simulator: several nodes, each with
// several Raft groups (multi-raft), a simulated network and disks, simulated
// clients, and a nemesis, all in one process on virtual time, all driven by
// one seeded PRNG. A seed replays identically.
//
// One run (runSeed):
//  1. knobs: cluster shape, Raft config, network weather, fault rates and
//     client behaviour are all drawn from the seed (printed on failure);
//  2. chaos: clients write and read while the nemesis partitions (also
//     one-way), crashes (losing unsynced writes), wipes (a crash that loses
//     the disks: the node comes back as a new incarnation), restarts and
//     pauses nodes, and the network drops, delays, reorders and duplicates
//     packets, and the cluster's members change (a spare node, up but not a
//     member, joins; a member leaves, up or while down, and may come back
//     later); a simulated coordinator moves the groups' replicas to the
//     placement over the members and replaces the replicas of lost
//     incarnations through the group leaders (runtime/membership.ts
//     planSteps, compare-and-set on the voters); removed replicas retire; the
//     observer checks the Raft invariants online; runs for `steps` steps
//     (stats.ts says what a step is);
//  3. liveness: everything heals, nodes restart and the network calms down;
//     every group must elect a leader that commits in its term, whose voters
//     are exactly the current incarnations' replicas of the group's placement
//     over the final members (the coordinator finished), every replica must
//     converge, and every client must finish;
//  4. checks: log matching, identical replicas, and the client-visible
//     guarantees of SPEC §8 on the recorded history (history.ts).
//
// Wipes and member changes. A disk lost on more than a minority of a group's
// replicas can lose acknowledged writes legitimately, so a node is wiped, and
// the members change, only while the membership is settled: every group's
// voters are the replicas of its placement over the members, all current
// incarnations, all up, applied by each of them, no change pending. Hence at
// most one such change at a time is unsettled, and a group never has fewer
// than a majority of its replicas holding its data. A wiped node's old
// replicas are gone (memory and disk): the checks that compare replicas see
// only the ones that exist. Nodes are wiped and members change only in seeds
// that run the runtime's Raft config (pre-vote and check-quorum, as
// runtime/driver.ts): the coordinator relies on it.
//
// The coordinator (runtime/cluster.ts) runs on the lowest-named trusted node
// that is up (trusted: a member, or hosting a voter); its view of a group is
// updated by its own replica's reports and, now and then, the leader's
// announcements, each taken unless its term is older than the view's. Not
// modeled: the transport's trust filter (every node's packets are delivered;
// a replica removed while its node was away, which never learns it, keeps
// talking to its old group), and COORDINATE_STEPS_MAX.
//
import { foundingVoters, incarnationOf, nodeOf, planLeaderMoves, planSteps, type Founding, type GroupView, type LeaderView } from '../../runtime/membership.js';
import { groupOf, replicasOf } from '../../runtime/placement.js';
import { sameVoters } from '../../runtime/raft/conf.js';
import { EntryType, Role, type NodeId } from '../../runtime/raft/types.js';
import { SimClient, Workload, type ClientKnobs } from './clients.js';
import { checkHistory, type FinalConversation } from './history.js';
import type { GroupImage } from './machine.js';
import { SimNetwork, type NetworkKnobs } from './network.js';
import { SimNode, type Answer, type ClientRequest, type DriverKnobs, type Replica } from './node.js';
import { RaftObserver, SafetyViolation } from './observer.js';
import { Rng } from './rng.js';
import { Scheduler } from './scheduler.js';
import { emptyStats, type SimStats } from './stats.js';

interface Knobs {
  /** Founding nodes. */
  nodes: number;
  /** Nodes up from the start that are not members (they may join). */
  spares: number;
  groups: number;
  conversationsPerGroup: number;
  tickMs: number;
  driver: DriverKnobs;
  network: NetworkKnobs;
  clients: ClientKnobs;
  /** Mean time between nemesis actions. */
  faultEveryMs: number;
  crashDownMaxMs: number;
  pauseMaxMs: number;
  checkpointEveryMs: number;
  /** Chance that a crash is a wipe, when the membership is settled enough for one. */
  wipeRate: number;
  /** Mean time between coordinator rounds. */
  coordinateEveryMs: number;
  /** Chance per round that the coordinator refreshes its view of a group from the leader (else it acts on what it saw before). */
  viewRefresh: number;
  /** Chance that a fault is a change of the members, when the membership is settled enough for one. */
  memberChangeRate: number;
}

/** Virtual milliseconds per Raft tick (a tenth of production's: elections take about 100 ms). */
const TICK_MS = 10;

function drawKnobs(rng: Rng): Knobs {
  const electionTicks = rng.int(5, 15);
  // Quiescence relies on runtime/driver.ts's core config: the tick after a commit carries it to
  // every follower not yet told, before the leader falls silent, and pre-vote with check-quorum
  // keep a follower that still times out from deposing it. Without it, any config goes.
  const quiesce = rng.chance(0.8);
  // Wipes and member changes bring in the coordinator, whose view of a group takes a report only
  // if its term is not older (runtime/cluster.ts): that relies on the runtime's Raft config
  // (pre-vote, check-quorum, runtime/driver.ts), without which a replica cut off, or removed
  // without learning it, inflates its term. Other configs run without them.
  const runtimeRaft = quiesce || rng.chance(0.5);
  return {
    nodes: rng.int(3, 5),
    spares: rng.int(0, 2),
    groups: rng.int(2, 5),
    conversationsPerGroup: rng.int(1, 3),
    tickMs: TICK_MS,
    driver: {
      electionTicks,
      heartbeatTicks: rng.int(1, Math.min(3, electionTicks - 1)),
      preVote: runtimeRaft || rng.chance(0.75),
      checkQuorum: runtimeRaft || rng.chance(0.75),
      // Small: one or a few entries per App, so catching up takes many round trips.
      maxMsgBytes: rng.chance(0.3) ? rng.int(1, 400) : 1 << 20,
      maxInflight: rng.pick([1, 4, 256]),
      maxApplyBytes: rng.chance(0.3) ? rng.int(1, 400) : 4 << 20,
      retainEntries: rng.pick([0, 3, 20, 1000]),
      fsyncMinMs: 0.2,
      fsyncMaxMs: rng.between(0.5, 6),
      // Production ticks every 100 ms, keeps alive every 100 ms and calls a peer down after 500 ms.
      quiesce,
      keepaliveMs: TICK_MS,
      peerDownMs: 5 * TICK_MS,
      segmentBatches: rng.pick([2, 16, 256]),
    },
    network: {
      dropRate: rng.chance(0.2) ? 0 : rng.between(0, 0.15),
      dupRate: rng.chance(0.3) ? 0 : rng.between(0, 0.08),
      latencyMinMs: rng.between(0.1, 1),
      latencyMaxMs: rng.between(1, 15),
      spikeRate: rng.between(0, 0.05),
      spikeMaxMs: rng.between(10, 300),
    },
    clients: {
      clients: rng.int(2, 8),
      thinkMaxMs: rng.between(1, 30),
      timeoutMs: rng.between(80, 600),
      latencyMaxMs: rng.between(0.2, 3),
      attemptsMax: rng.int(3, 10),
      tombstoneRate: rng.chance(0.5) ? 0.02 : 0,
    },
    faultEveryMs: rng.between(20, 400),
    crashDownMaxMs: rng.between(10, 800),
    pauseMaxMs: rng.between(10, 600),
    checkpointEveryMs: rng.between(5, 400),
    wipeRate: runtimeRaft && !rng.chance(0.15) ? rng.between(0.2, 0.8) : 0,
    coordinateEveryMs: rng.between(5, 200),
    viewRefresh: rng.pick([1, 0.5, 0.15]),
    memberChangeRate: runtimeRaft && rng.chance(0.8) ? rng.between(0.1, 0.6) : 0,
  };
}

/** A seed's failure: what broke, the knobs, and the run's last notable events. */
export class SimFailure extends Error {
  override readonly name = 'SimFailure';
  constructor(
    readonly seed: number,
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
  }
}

/** Virtual time the liveness phase may take before the run fails. */
const LIVENESS_MS = 60_000;
/** Log matching is checked every this many steps (it compares whole logs). */
const LOG_MATCHING_EVERY_STEPS = 2_000;
const TRACE_LINES = 40;

class Simulation {
  readonly stats = emptyStats();
  private readonly rng: Rng;
  private readonly knobs: Knobs;
  private readonly scheduler = new Scheduler();
  private readonly observer = new RaftObserver();
  private readonly network: SimNetwork;
  private readonly nodes = new Map<NodeId, SimNode>();
  /** Group → its founding voters (the groups of the seed's conversations). */
  private readonly foundingVoters = new Map<number, readonly NodeId[]>();
  /** Group → the nodes it is placed on now (runtime/placement.ts replicasOf over the members); clients pick from these. */
  private readonly placement = new Map<number, readonly NodeId[]>();
  /** The nodes and incarnations the cluster was founded with. */
  private readonly founding: Founding;
  /** The cluster's members now (CLUSTER_NODES or DNS in runtime/cluster.ts). */
  private members: NodeId[];
  private readonly incarnationsUsed = new Set<string>();
  /**
   * Each node's view of the groups (runtime/cluster.ts voters/terms): group →
   * voters and the term they were reported in, by the node's own replica or
   * by the group leader's announcement, maybe a while ago. Only the
   * coordinator's is used, and it changes hands.
   */
  private readonly views = new Map<NodeId, Map<number, { voters: readonly string[]; term: number }>>();
  /** Per node and group, what its replica last reported (a replica reports a change of leader, term or voters). */
  private readonly reported = new Map<string, string>();
  private readonly workload: Workload;
  private readonly clients: SimClient[] = [];
  /** The last notable events, for the failure report. */
  private readonly trace: string[] = [];
  private nemesisOn = true;

  constructor(
    private readonly seed: number,
    private readonly echo: ((line: string) => void) | null,
  ) {
    this.rng = new Rng(seed);
    this.knobs = drawKnobs(this.rng);
    const k = this.knobs;
    const nodeIds = Array.from({ length: k.nodes + k.spares }, (_, i) => `n${i + 1}`);
    this.founding = nodeIds.slice(0, k.nodes).map((name) => ({ name, incarnation: this.newIncarnation() }));
    this.members = this.founding.map((m) => m.name);
    const conversations = this.pickConversations();
    for (const id of conversations) {
      const g = groupOf(id);
      if (!this.foundingVoters.has(g)) this.foundingVoters.set(g, foundingVoters(g, this.founding));
    }
    this.place();
    this.network = new SimNetwork(this.scheduler, this.rng, k.network, this.stats, (from, to, envs) => this.nodes.get(to)!.receive(from, envs));
    for (const id of nodeIds) {
      const peers = nodeIds.filter((n) => n !== id);
      const founder = this.founding.find((m) => m.name === id);
      const node = new SimNode(id, peers, founder?.incarnation ?? this.newIncarnation(), founder !== undefined, {
        scheduler: this.scheduler,
        rng: this.rng,
        network: this.network,
        observer: this.observer,
        stats: this.stats,
        knobs: k.driver,
        answer: (req, a) => this.answer(req, a),
        trace: (line) => this.note(line),
        stopped: (n, reason) => this.supervise(n, reason),
        foundingVoters: this.foundingVoters,
        founding: this.founding,
        incarnationOf: (node) => this.nodes.get(node)?.incarnation ?? '',
      });
      this.nodes.set(id, node);
      this.startTimers(node);
    }
    const clientEnv = {
      scheduler: this.scheduler,
      rng: this.rng,
      stats: this.stats,
      knobs: k.clients,
      placement: this.placement,
      send: (to: NodeId, req: ClientRequest) => this.scheduler.after(this.clientLatency(), () => this.nodes.get(to)!.request(req)),
    };
    this.workload = new Workload(conversations, clientEnv);
    for (let c = 0; c < k.clients.clients; c++) this.clients.push(new SimClient(c, this.workload, clientEnv));
  }

  run(steps: number): void {
    for (const c of this.clients) c.start();
    this.scheduleFault();
    this.scheduleCoordinator();
    let nextLogCheck = LOG_MATCHING_EVERY_STEPS;
    while (this.stats.steps < steps) {
      if (!this.scheduler.runNext()) throw new Error('the simulation ran out of events');
      if (this.stats.steps >= nextLogCheck) {
        this.checkLogMatching();
        nextLogCheck += LOG_MATCHING_EVERY_STEPS;
      }
    }
    this.heal();
    this.awaitConvergence();
    this.checkMembership();
    this.checkLogMatching();
    checkHistory(this.workload.history, this.finalState(), this.stats);
    this.stats.seeds = 1;
    this.stats.virtualMs = this.scheduler.now;
    this.stats.leadersElected = this.observer.leadersElected;
    this.stats.confChangesApplied = this.observer.confChangesApplied;
    this.countLingering();
  }

  /** The placement of every group over the members now. */
  private place(): void {
    for (const group of this.foundingVoters.keys()) this.placement.set(group, replicasOf(group, this.members));
  }

  failureReport(): string {
    return [`knobs: ${JSON.stringify(this.knobs)}`, `last events (virtual ms):`, ...this.trace.map((l) => `  ${l}`)].join('\n');
  }

  /** conversationsPerGroup ids for each of `groups` distinct groups. */
  private pickConversations(): string[] {
    const k = this.knobs;
    const byGroup = new Map<number, string[]>();
    for (let n = 0; byGroup.size < k.groups; n++) {
      const id = `s${this.seed}-c${n}`;
      if (!byGroup.has(groupOf(id))) byGroup.set(groupOf(id), [id]);
    }
    const out: string[] = [];
    for (const [g, ids] of byGroup) {
      for (let n = 0; ids.length < k.conversationsPerGroup; n++) {
        const id = `s${this.seed}-g${g}-${n}`;
        if (groupOf(id) === g) ids.push(id);
      }
      out.push(...ids);
    }
    return out;
  }

  private startTimers(node: SimNode): void {
    // Clocks drift apart: each node ticks at its own rate.
    const tickMs = this.knobs.tickMs * this.rng.between(0.8, 1.25);
    const tick = (): void => {
      if (node.tick()) {
        this.stats.ticks++;
        this.stats.steps++;
      }
      this.scheduler.after(tickMs, tick);
    };
    this.scheduler.after(this.rng.between(0, tickMs), tick);
    const checkpoint = (): void => {
      node.checkpoint();
      this.scheduler.after(this.knobs.checkpointEveryMs, checkpoint);
    };
    this.scheduler.after(this.rng.between(0, this.knobs.checkpointEveryMs), checkpoint);
    const keepalive = (): void => {
      node.keepalive();
      this.scheduler.after(this.knobs.driver.keepaliveMs, keepalive);
    };
    this.scheduler.after(this.rng.between(0, this.knobs.driver.keepaliveMs), keepalive);
  }

  private clientLatency(): number {
    return this.rng.between(0.05, this.knobs.clients.latencyMaxMs);
  }

  private answer(req: ClientRequest, a: Answer): void {
    this.scheduler.after(this.clientLatency(), () => this.clients[req.client].onAnswer(req, a));
  }

  private note(line: string): void {
    const stamped = `${this.scheduler.now.toFixed(1)} ${line}`;
    this.echo?.(stamped);
    this.trace.push(stamped);
    if (this.trace.length > TRACE_LINES) this.trace.shift();
  }

  // ------------------------------------------------------------ nemesis

  private scheduleFault(): void {
    this.scheduler.after(this.rng.between(0, 2 * this.knobs.faultEveryMs), () => {
      if (!this.nemesisOn) return;
      this.injectFault();
      this.scheduleFault();
    });
  }

  private injectFault(): void {
    const ids = [...this.nodes.keys()];
    const up = ids.filter((id) => this.nodes.get(id)!.up);
    const r = this.rng.next();
    if (r < 0.3) {
      this.network.heal();
      const order = this.rng.shuffle(ids);
      const k = this.rng.int(1, ids.length - 1);
      const oneWay = this.rng.chance(0.2);
      this.network.partition(order.slice(0, k), order.slice(k), oneWay);
      this.countFault();
      this.stats.partitions++;
      this.note(`partition ${order.slice(0, k).join(',')} ${oneWay ? '->' : '|'} ${order.slice(k).join(',')}`);
    } else if (r < 0.5) {
      this.network.heal();
      this.countFault();
      this.note('heal network');
    } else if (r < 0.75 && this.rng.chance(this.knobs.memberChangeRate) && this.settled()) {
      this.changeMembers();
    } else if (r < 0.75 && up.length > 0 && this.rng.chance(this.knobs.wipeRate) && this.settled()) {
      this.wipe(this.nodes.get(this.rng.pick(up))!);
    } else if (r < 0.75 && up.length > 0) {
      // Half the crashes hit a node whose fsync is in flight, when there is one.
      const syncing = up.filter((id) => this.nodes.get(id)!.syncing);
      const node = this.nodes.get(this.rng.pick(syncing.length > 0 && this.rng.chance(0.5) ? syncing : up))!;
      node.crash();
      this.countFault();
      this.stats.crashes++;
      this.note(`crash ${node.id}`);
      this.scheduler.after(this.rng.between(1, this.knobs.crashDownMaxMs), () => this.restart(node));
    } else if (r >= 0.75) {
      const running = up.filter((id) => !this.nodes.get(id)!.paused);
      if (running.length === 0) return;
      const node = this.nodes.get(this.rng.pick(running))!;
      node.pause();
      this.countFault();
      this.stats.pauses++;
      this.note(`pause ${node.id}`);
      this.scheduler.after(this.rng.between(1, this.knobs.pauseMaxMs), () => this.resume(node));
    }
  }

  /** The node crashes, loses its disks and will come back as a new incarnation. */
  private wipe(node: SimNode): void {
    const incarnation = this.newIncarnation();
    node.wipe(incarnation);
    this.countFault();
    this.stats.wipes++;
    this.note(`wipe ${node.id}: its disks are lost, it comes back as incarnation ${incarnation}`);
    this.scheduler.after(this.rng.between(1, this.knobs.crashDownMaxMs), () => this.restart(node));
  }

  /**
   * The members change (runtime/cluster.ts setMembers, from DNS): a node up
   * and not a member joins, or a member leaves, up or crashed first (it comes
   * back later, a non-member, with its disk), as long as at least REPLICAS
   * members remain.
   */
  private changeMembers(): void {
    const outside = [...this.nodes.keys()].filter((id) => !this.members.includes(id) && this.nodes.get(id)!.up);
    const join = outside.length > 0 && (this.members.length <= 3 || this.rng.chance(0.5));
    if (!join && this.members.length <= 3) return;
    this.countFault();
    if (join) {
      const id = this.rng.pick(outside);
      this.members = [...this.members, id].sort();
      this.stats.joins++;
      this.note(`members: ${id} joins (${this.members.join(',')})`);
    } else {
      const id = this.rng.pick(this.members);
      const node = this.nodes.get(id)!;
      const down = this.rng.chance(0.5);
      if (down && node.up) {
        node.crash();
        this.stats.crashes++;
        this.scheduler.after(this.rng.between(1, 4 * this.knobs.crashDownMaxMs), () => this.restart(node));
      }
      this.members = this.members.filter((n) => n !== id);
      this.stats.leaves++;
      this.note(`members: ${id} leaves${down ? ' while down' : ''} (${this.members.join(',')})`);
    }
    this.place();
  }

  /** A fresh incarnation id, from the seed. */
  private newIncarnation(): string {
    for (;;) {
      const inc = this.rng.int(0, 36 ** 5 - 1).toString(36).padStart(5, '0');
      if (this.incarnationsUsed.has(inc)) continue;
      this.incarnationsUsed.add(inc);
      return inc;
    }
  }

  /**
   * A wipe or a member change now unsettles one replica of each group it
   * hits, and no group is already short of one: every node of every group's
   * placement is up and hosts a voter of its current incarnation; all of them
   * have applied the same voter set, exactly those replicas, and have no
   * membership change in their logs beyond it.
   */
  private settled(): boolean {
    for (const [group, nodes] of this.placement) {
      let conf: readonly string[] | null = null;
      for (const id of nodes) {
        const node = this.nodes.get(id)!;
        if (!node.up) return false;
        const r = node.replica(group);
        if (r === undefined || r.joining || incarnationOf(r.self, this.founding) !== node.incarnation) return false;
        if (conf === null) conf = r.voters;
        else if (!sameVoters(conf, r.voters)) return false;
        if (confChangePending(r)) return false;
      }
      if (conf === null || conf.length !== nodes.length) return false;
      for (const v of conf) if (this.nodes.get(nodeOf(v))?.replica(group)?.self !== v) return false;
    }
    return true;
  }

  private countFault(): void {
    this.stats.faults++;
    this.stats.steps++;
  }

  private restart(node: SimNode): void {
    if (node.up) return;
    this.countFault();
    this.forgetViews(node);
    node.restart();
    this.note(`restart ${node.id}`);
  }

  /** The supervisor restarts a worker that stopped a group, after a backoff. */
  private supervise(node: SimNode, reason: string): void {
    this.stats.groupsStopped++;
    this.note(`${node.id} stopped: ${reason}`);
    this.scheduler.after(this.rng.between(1, 50), () => {
      if (node.up) return;
      this.forgetViews(node);
      node.restart();
      this.note(`supervisor restarted ${node.id}`);
    });
  }

  /** A node's view of the groups lives in its memory: a restarted node starts with none. */
  private forgetViews(node: SimNode): void {
    this.views.delete(node.id);
    for (const key of [...this.reported.keys()]) if (key.startsWith(`${node.id}/`)) this.reported.delete(key);
  }

  private resume(node: SimNode): void {
    if (!node.up || !node.paused) return;
    this.countFault();
    node.resume();
    this.note(`resume ${node.id}`);
  }

  // -------------------------------------------------------- coordinator

  private scheduleCoordinator(): void {
    this.scheduler.after(this.rng.between(0.5, 1.5) * this.knobs.coordinateEveryMs, () => {
      this.coordinate();
      this.scheduleCoordinator();
    });
  }

  /** The replica that leads the group in the highest term, as the replicas report it (runtime/cluster.ts). */
  private leaderOf(group: number): { node: SimNode; replica: Replica } | null {
    let best: { node: SimNode; replica: Replica } | null = null;
    for (const node of this.nodes.values()) {
      if (!node.up) continue;
      const r = node.replica(group);
      if (r === undefined || r.role !== Role.Leader) continue;
      if (best === null || r.core.currentTerm() > best.replica.core.currentTerm()) best = { node, replica: r };
    }
    return best;
  }

  /**
   * One round of runtime/cluster.ts coordinate() on the lowest-named live
   * node: live nodes are the trusted ones (members, and nodes hosting a
   * voter) that are up, with their current incarnations; its view of a group
   * is updated (if the report's term is not older than the view's) by its own
   * replica of the group when that reports a change (voters as of its applied
   * index), or, now and then, by the group leader's announcement; planSteps'
   * changes go to the group's leader, which proposes them only if its voters
   * are still the view's; then leadership moves (planLeaderMoves) in the
   * groups without a change.
   */
  private coordinate(): void {
    const trusted = new Set(this.members);
    for (const group of this.placement.keys()) for (const v of this.leaderOf(group)?.replica.voters ?? []) trusted.add(nodeOf(v));
    const live = new Map<string, string>();
    for (const node of this.nodes.values()) if (node.up && trusted.has(node.id)) live.set(node.id, node.incarnation);
    const coordinator = [...live.keys()].sort()[0];
    if (coordinator === undefined) return;
    let known = this.views.get(coordinator);
    if (known === undefined) this.views.set(coordinator, (known = new Map()));
    const heard = (group: number, r: Replica): void => {
      const term = r.core.currentTerm();
      if (term >= (known.get(group)?.term ?? 0)) known.set(group, { voters: r.voters.slice(), term });
    };
    for (const group of this.placement.keys()) {
      const own = this.nodes.get(coordinator)!.replica(group);
      const said = own === undefined ? '' : `${own.self}|${own.core.currentTerm()}|${own.leader}|${own.voters.join(',')}`;
      if (own !== undefined && this.reported.get(`${coordinator}/${group}`) !== said) heard(group, own);
      this.reported.set(`${coordinator}/${group}`, said);
      const lead = this.leaderOf(group);
      if (lead !== null && (!known.has(group) || this.rng.chance(this.knobs.viewRefresh))) heard(group, lead.replica);
    }
    const views: GroupView[] = [...known].map(([group, v]) => ({ group, voters: v.voters }));
    const steps = planSteps(views, live, this.founding, Number.POSITIVE_INFINITY, this.members);
    if (steps.length > 0) this.stats.coordinatorRounds++;
    for (const step of steps) {
      const lead = this.leaderOf(step.group);
      if (lead === null) continue;
      const from = known.get(step.group)!.voters;
      this.stats.confChangesRequested++;
      this.scheduler.after(this.clientLatency(), () =>
        lead.node.changeConf(step.group, from, step.voters, (outcome) => {
          if (outcome === 'stale') this.stats.confChangesStale++;
          else if (outcome === 'lagging') this.stats.confChangesLagging++;
          else if (outcome === 'refused') this.stats.confChangesRefused++;
        }),
      );
    }
    // Leaders where the placement prefers them, in groups whose membership is settled.
    const changing = new Set(steps.map((s) => s.group));
    const leading: LeaderView[] = [];
    for (const v of views) {
      const lead = this.leaderOf(v.group);
      if (lead !== null && !changing.has(v.group)) leading.push({ ...v, leaderNode: lead.node.id });
    }
    for (const m of planLeaderMoves(leading, live, this.members, this.founding, Number.POSITIVE_INFINITY)) {
      const lead = this.leaderOf(m.group)!;
      this.scheduler.after(this.clientLatency(), () => lead.node.transferLeader(m.group, m.to));
    }
  }

  // ------------------------------------------------------ liveness and checks

  /** Ends the chaos: maybe a power cut of the whole cluster first (only synced data survives anywhere). */
  private heal(): void {
    this.nemesisOn = false;
    this.workload.stopped = true;
    if (this.rng.chance(0.5)) {
      for (const node of this.nodes.values()) {
        if (!node.up) continue;
        node.crash();
        this.stats.crashes++;
      }
      this.countFault();
      this.note('power cut: every node crashes');
    }
    this.network.heal();
    this.network.calm();
    for (const node of this.nodes.values()) {
      this.restart(node);
      this.resume(node);
    }
    this.note('healed: liveness phase');
  }

  /** Every group leads and commits in its term, every replica catches up, every client finishes. */
  private awaitConvergence(): void {
    const deadline = this.scheduler.now + LIVENESS_MS;
    for (let n = 0; ; n++) {
      if (n % 64 === 0 && this.converged()) return;
      if (this.scheduler.now > deadline) throw new SafetyViolation(`liveness: no convergence ${LIVENESS_MS} ms after healing: ${this.describeGroups()}`);
      if (!this.scheduler.runNext()) throw new Error('the simulation ran out of events');
    }
  }

  private converged(): boolean {
    if (!this.clients.every((c) => c.idle)) return false;
    for (const [group, nodes] of this.placement) {
      const replicas = nodes.map((id) => this.nodes.get(id)!.replica(group));
      // A node may be down (the supervisor restarts a worker that stopped a group), or wait for its new replica.
      if (replicas.some((r) => r === undefined)) return false;
      const leader = replicas.find((r) => r!.core.status().role === Role.Leader);
      if (leader === undefined) return false;
      const s = leader.core.status();
      // The leader may commit what its followers persisted before its own write is done.
      if (s.commit !== s.lastIndex || s.commit > leader.storage.lastIndex() || leader.storage.term(s.commit) !== s.term) return false;
      if (replicas.some((r) => r!.machine.applied !== s.commit || r!.core.status().commit !== s.commit)) return false;
      // The coordinator finished: the voters are the current replicas of the group's nodes, and only they.
      if (leader.voters.length !== nodes.length || !replicas.every((r) => leader.voters.includes(r!.self))) return false;
    }
    return true;
  }

  /** After convergence: every voter is its node's current incarnation (no replica of a lost one speaks). */
  private checkMembership(): void {
    for (const [group, nodes] of this.placement) {
      for (const id of nodes) {
        const node = this.nodes.get(id)!;
        const r = node.replica(group)!;
        const inc = incarnationOf(r.self, this.founding);
        if (nodeOf(r.self) !== id || inc !== node.incarnation) {
          throw new SafetyViolation(`membership: ${id} (incarnation ${node.incarnation}) serves group ${group} as ${r.self} (incarnation ${inc})`);
        }
        if (!sameVoters(r.voters, nodes.map((n) => this.nodes.get(n)!.replica(group)!.self))) {
          throw new SafetyViolation(`membership: ${r.self} has voters ${r.voters.join(',')} for group ${group}`);
        }
      }
    }
  }

  /** Replicas still hosted that are not voters of their group: removed while their node was away, never retired. */
  private countLingering(): void {
    for (const node of this.nodes.values()) {
      for (const group of this.placement.keys()) {
        const r = node.replica(group);
        if (r === undefined || this.placement.get(group)!.includes(node.id)) continue;
        this.stats.lingering++;
        this.note(`${r.self} g${group} lingers on ${node.id}: applied ${r.machine.applied}, voters ${r.voters.join(',')}`);
      }
    }
  }

  private describeGroups(): string {
    const parts: string[] = [];
    for (const [group, nodes] of this.placement) {
      const states = nodes.map((id) => {
        const node = this.nodes.get(id)!;
        const r = node.replica(group);
        if (r === undefined) return `${id}:${node.up ? 'none' : 'down'}`;
        const s = r.core.status();
        return `${r.self}:${['F', 'P', 'C', 'L'][s.role]}t${s.term}c${s.commit}a${r.machine.applied}l${s.lastIndex}v${r.voters.join('/')}`;
      });
      parts.push(`g${group}[${states.join(' ')}]`);
    }
    const busy = this.clients.filter((c) => !c.idle).length;
    const others: string[] = [];
    for (const node of this.nodes.values()) {
      for (const group of this.placement.keys()) {
        const r = node.replica(group);
        if (r !== undefined && !this.placement.get(group)!.includes(node.id)) others.push(`${r.self}:g${group}a${r.machine.applied}v${r.voters.join('/')}`);
      }
    }
    return `${parts.join(' ')} clients busy ${busy}; members ${this.members.join(',')}; other replicas: ${others.join(' ') || 'none'}`;
  }

  /** Over every replica that exists (a wiped node's old ones are gone). */
  private checkLogMatching(): void {
    for (const group of this.placement.keys()) {
      const logs = [];
      for (const node of this.nodes.values()) {
        const r = node.replica(group);
        if (r !== undefined) logs.push({ node: r.self, storage: r.storage });
      }
      this.observer.checkLogMatching(group, logs);
    }
  }

  /** The converged state, after checking every replica of a group holds the same. */
  private finalState(): Map<string, FinalConversation> {
    const out = new Map<string, FinalConversation>();
    for (const [group, nodes] of this.placement) {
      const images = nodes.map((id) => {
        const r = this.nodes.get(id)!.replica(group)!;
        return { id: r.self, image: r.machine.image() };
      });
      const [first, ...rest] = images;
      for (const other of rest) compareImages(group, first.id, first.image, other.id, other.image);
      for (const [id, record] of first.image.records) out.set(id, { record, messages: first.image.messages.get(id) ?? [] });
    }
    return out;
  }
}

function compareImages(group: number, a: NodeId, x: GroupImage, b: NodeId, y: GroupImage): void {
  const differ = (what: string): never => {
    throw new SafetyViolation(`replicas ${a} and ${b} of group ${group} differ after convergence: ${what}`);
  };
  if (x.applied !== y.applied || x.chain !== y.chain) differ(`applied ${x.applied}/${y.applied}, chain ${x.chain}/${y.chain}`);
  if (!sameVoters(x.voters, y.voters)) differ(`voters ${x.voters.join(',')} vs ${y.voters.join(',')}`);
  if (x.records.size !== y.records.size) differ(`${x.records.size} vs ${y.records.size} conversations`);
  for (const [id, rec] of x.records) {
    if (JSON.stringify(rec) !== JSON.stringify(y.records.get(id))) differ(`record of ${id}`);
    const mx = x.messages.get(id) ?? [];
    const my = y.messages.get(id) ?? [];
    if (mx.length !== my.length || mx.some((m, i) => m !== my[i])) differ(`messages of ${id}`);
  }
}

/** Whether the replica's log holds a membership change it has not applied yet. */
function confChangePending(r: Replica): boolean {
  const from = Math.max(r.machine.applied + 1, r.storage.firstIndex());
  const to = r.storage.lastIndex();
  if (from > to) return false;
  return r.storage.entries(from, to + 1, Number.POSITIVE_INFINITY).some((e) => e.type === EntryType.ConfChange);
}

/** Runs one seed; throws a SimFailure naming the seed. `echo` gets every notable event (faults, leader changes). */
export function runSeed(seed: number, steps: number, echo: ((line: string) => void) | null = null): SimStats {
  let sim: Simulation | null = null;
  try {
    sim = new Simulation(seed, echo);
    sim.run(steps);
    return sim.stats;
  } catch (err) {
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    const report = sim === null ? '' : `\n${sim.failureReport()}`;
    throw new SimFailure(seed, `seed ${seed} failed: ${what}\nreplay: SIM_SEED=${seed} SIM_STEPS=${steps} npm run sim${report}`, { cause: err });
  }
}
