// The deterministic whole-cluster simulator: several nodes, each with
// several Raft groups (multi-raft), a simulated network and disks, simulated
// clients, and a nemesis, all in one process on virtual time, all driven by
// one seeded PRNG. A seed replays identically.
//
// One run (runSeed):
//  1. knobs: cluster shape, Raft config, network weather, fault rates and
//     client behaviour are all drawn from the seed (printed on failure);
//  2. chaos: clients write and read while the nemesis partitions (also
//     one-way), crashes (losing unsynced writes), restarts and pauses nodes,
//     and the network drops, delays, reorders and duplicates packets; the
//     observer checks the Raft invariants online; runs for `steps` steps
//     (stats.ts says what a step is);
//  3. liveness: everything heals, nodes restart and the network calms down;
//     every group must elect a leader that commits in its term, every
//     replica must converge, and every client must finish;
//  4. checks: log matching, identical replicas, and the client-visible
//     guarantees of SPEC §8 on the recorded history (history.ts).
import { groupOf, replicasOf } from '../../runtime/placement.js';
import { Role, type NodeId } from '../../runtime/raft/types.js';
import { SimClient, Workload, type ClientKnobs } from './clients.js';
import { checkHistory, type FinalConversation } from './history.js';
import type { GroupImage } from './machine.js';
import { SimNetwork, type NetworkKnobs } from './network.js';
import { SimNode, type Answer, type ClientRequest, type DriverKnobs } from './node.js';
import { RaftObserver, SafetyViolation } from './observer.js';
import { Rng } from './rng.js';
import { Scheduler } from './scheduler.js';
import { emptyStats, type SimStats } from './stats.js';

interface Knobs {
  nodes: number;
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
}

/** Virtual milliseconds per Raft tick (a tenth of production's: elections take about 100 ms). */
const TICK_MS = 10;

function drawKnobs(rng: Rng): Knobs {
  const electionTicks = rng.int(5, 15);
  // Quiescence relies on runtime/driver.ts's core config: a heartbeat every tick carries the
  // commit index to every follower before the leader falls silent, and pre-vote with check-quorum
  // keep a follower that still times out from deposing it. Without it, any config goes.
  const quiesce = rng.chance(0.8);
  return {
    nodes: rng.int(3, 5),
    groups: rng.int(2, 5),
    conversationsPerGroup: rng.int(1, 3),
    tickMs: TICK_MS,
    driver: {
      electionTicks,
      heartbeatTicks: quiesce ? 1 : rng.int(1, Math.min(3, electionTicks - 1)),
      preVote: quiesce || rng.chance(0.75),
      checkQuorum: quiesce || rng.chance(0.75),
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
  /** Group → its voters (the groups of the seed's conversations). */
  private readonly placement = new Map<number, readonly NodeId[]>();
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
    const nodeIds = Array.from({ length: k.nodes }, (_, i) => `n${i + 1}`);
    const conversations = this.pickConversations();
    for (const id of conversations) {
      const g = groupOf(id);
      if (!this.placement.has(g)) this.placement.set(g, replicasOf(g, nodeIds));
    }
    this.network = new SimNetwork(this.scheduler, this.rng, k.network, this.stats, (from, to, envs) => this.nodes.get(to)!.receive(from, envs));
    for (const id of nodeIds) {
      const hosted = new Map([...this.placement].filter(([, voters]) => voters.includes(id)));
      const peers = nodeIds.filter((n) => n !== id);
      const node = new SimNode(id, peers, hosted, {
        scheduler: this.scheduler,
        rng: this.rng,
        network: this.network,
        observer: this.observer,
        stats: this.stats,
        knobs: k.driver,
        answer: (req, a) => this.answer(req, a),
        trace: (line) => this.note(line),
        stopped: (n, reason) => this.supervise(n, reason),
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
    this.checkLogMatching();
    checkHistory(this.workload.history, this.finalState(), this.stats);
    this.stats.seeds = 1;
    this.stats.virtualMs = this.scheduler.now;
    this.stats.leadersElected = this.observer.leadersElected;
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

  private countFault(): void {
    this.stats.faults++;
    this.stats.steps++;
  }

  private restart(node: SimNode): void {
    if (node.up) return;
    this.countFault();
    node.restart();
    this.note(`restart ${node.id}`);
  }

  /** The supervisor restarts a worker that stopped a group, after a backoff. */
  private supervise(node: SimNode, reason: string): void {
    this.stats.groupsStopped++;
    this.note(`${node.id} stopped: ${reason}`);
    this.scheduler.after(this.rng.between(1, 50), () => {
      if (node.up) return;
      node.restart();
      this.note(`supervisor restarted ${node.id}`);
    });
  }

  private resume(node: SimNode): void {
    if (!node.up || !node.paused) return;
    this.countFault();
    node.resume();
    this.note(`resume ${node.id}`);
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
    for (const [group, voters] of this.placement) {
      const replicas = voters.map((id) => this.nodes.get(id)!.replica(group));
      // A node may be down: the supervisor restarts a worker that stopped a group.
      if (replicas.some((r) => r === undefined)) return false;
      const leader = replicas.find((r) => r!.core.status().role === Role.Leader);
      if (leader === undefined) return false;
      const s = leader.core.status();
      if (s.commit !== s.lastIndex || leader.storage.term(s.commit) !== s.term) return false;
      if (replicas.some((r) => r!.machine.applied !== s.commit || r!.core.status().commit !== s.commit)) return false;
    }
    return true;
  }

  private describeGroups(): string {
    const parts: string[] = [];
    for (const [group, voters] of this.placement) {
      const states = voters.map((id) => {
        const r = this.nodes.get(id)!.replica(group);
        if (r === undefined) return `${id}:down`;
        const s = r.core.status();
        return `${id}:${['F', 'P', 'C', 'L'][s.role]}t${s.term}c${s.commit}a${r.machine.applied}l${s.lastIndex}`;
      });
      parts.push(`g${group}[${states.join(' ')}]`);
    }
    const busy = this.clients.filter((c) => !c.idle).length;
    return `${parts.join(' ')} clients busy ${busy}`;
  }

  private checkLogMatching(): void {
    for (const [group, voters] of this.placement) {
      const logs = [];
      for (const id of voters) {
        const r = this.nodes.get(id)!.replica(group);
        if (r !== undefined) logs.push({ node: id, storage: r.storage });
      }
      this.observer.checkLogMatching(group, logs);
    }
  }

  /** The converged state, after checking every replica of a group holds the same. */
  private finalState(): Map<string, FinalConversation> {
    const out = new Map<string, FinalConversation>();
    for (const [group, voters] of this.placement) {
      const images = voters.map((id) => ({ id, image: this.nodes.get(id)!.replica(group)!.machine.image() }));
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
  if (x.records.size !== y.records.size) differ(`${x.records.size} vs ${y.records.size} conversations`);
  for (const [id, rec] of x.records) {
    if (JSON.stringify(rec) !== JSON.stringify(y.records.get(id))) differ(`record of ${id}`);
    const mx = x.messages.get(id) ?? [];
    const my = y.messages.get(id) ?? [];
    if (mx.length !== my.length || mx.some((m, i) => m !== my[i])) differ(`messages of ${id}`);
  }
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
