// The simulated network between nodes: one packet per (sender, receiver)
// per flush, carrying many groups' Raft messages (the transport batches per
// peer), or none (a keepalive). Packets are delayed (with rare long spikes, which reorders them),
// dropped, duplicated, and cut by partitions, which may be one-way. A cut is
// decided when the packet arrives, so a partition also loses what is in flight.
import type { Message, NodeId } from '../../runtime/raft/types.js';
import type { GroupImage } from './machine.js';
import type { Rng } from './rng.js';
import type { Scheduler } from './scheduler.js';
import type { SimStats } from './stats.js';

/** A Raft message; a Snap also carries the group state it stands for. */
export interface Envelope {
  msg: Message;
  image: GroupImage | null;
}

export interface NetworkKnobs {
  dropRate: number;
  dupRate: number;
  latencyMinMs: number;
  latencyMaxMs: number;
  spikeRate: number;
  spikeMaxMs: number;
}

/** Hands a packet to its destination; false when the node is down (the packet is lost). */
export type DeliverFn = (from: NodeId, to: NodeId, envelopes: readonly Envelope[]) => boolean;

export class SimNetwork {
  private readonly cut = new Set<string>();
  private readonly knobs: NetworkKnobs;

  constructor(
    private readonly scheduler: Scheduler,
    private readonly rng: Rng,
    knobs: NetworkKnobs,
    private readonly stats: SimStats,
    private readonly deliver: DeliverFn,
  ) {
    this.knobs = { ...knobs };
  }

  /** A packet; an empty one is a keepalive. */
  send(from: NodeId, to: NodeId, envelopes: Envelope[]): void {
    this.stats.raftMessages += envelopes.length;
    this.scheduler.after(this.latency(), () => this.arrive(from, to, envelopes));
    if (this.rng.chance(this.knobs.dupRate)) {
      this.stats.packetsDuplicated++;
      this.scheduler.after(this.latency(), () => this.arrive(from, to, envelopes));
    }
  }

  /** Cuts a → b for every pair (and b → a unless one-way). */
  partition(a: readonly NodeId[], b: readonly NodeId[], oneWay: boolean): void {
    for (const x of a) {
      for (const y of b) {
        this.cut.add(`${x}>${y}`);
        if (!oneWay) this.cut.add(`${y}>${x}`);
      }
    }
  }

  heal(): void {
    this.cut.clear();
  }

  /** No more loss or duplication (the liveness phase). */
  calm(): void {
    this.knobs.dropRate = 0;
    this.knobs.dupRate = 0;
    this.knobs.spikeRate = 0;
  }

  private latency(): number {
    const k = this.knobs;
    const base = this.rng.between(k.latencyMinMs, k.latencyMaxMs);
    return this.rng.chance(k.spikeRate) ? base + this.rng.between(0, k.spikeMaxMs) : base;
  }

  private arrive(from: NodeId, to: NodeId, envelopes: readonly Envelope[]): void {
    this.stats.steps++;
    const lost = this.cut.has(`${from}>${to}`) || this.rng.chance(this.knobs.dropRate) || !this.deliver(from, to, envelopes);
    if (lost) this.stats.packetsDropped++;
    else this.stats.packetsDelivered++;
  }
}
