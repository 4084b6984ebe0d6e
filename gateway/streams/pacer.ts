// FanoutPacer: live events reach the StreamHub in bursts, not every loop turn,
// once fanning them out is what keeps the gateway thread busy.
//
// A broadcast costs one socket write per subscriber: uWS drains its topics
// once per loop turn and corks every frame a socket has pending into one
// write. When each turn's fan-out takes most of the thread, the appends that
// produce events wait behind it, and every flush carries one or two events
// per conversation: thousands of writes of one frame each. Holding events
// back until the thread has had as long again for other work lets appends
// proceed meanwhile and packs more frames into each write (bench/fanout:
// docs/BENCHMARKS.md). A long hold only pays while events pile up per
// conversation (a burst): at a steady rate below saturation each socket gets
// one frame per write however long we wait, so there the hold stays short.
// Order is kept: events are only delayed, as if the worker had sent them
// later, which the hub already handles.
import type { StreamEvent } from '../../actors/events.js';

export interface PacerClock {
  now(): number;
  /** Runs fn after ms, at the earliest in a later loop turn. */
  setTimer(fn: () => void, ms: number): void;
}

export interface PacerOptions {
  /** Most of the thread's time fan-out may take while it is the bottleneck. */
  busyShare: number;
  /** A flush cheaper than this does not delay the next one. */
  minCostMs: number;
  /** Longest an event is held back beyond the last flush's cost, when that flush carried ≥ 2 events per conversation. */
  maxHoldMs: number;
  /** The same when it carried fewer: holding then buys no fewer writes, only latency. */
  maxHoldUnbatchedMs: number;
}

export const PACER_DEFAULTS: PacerOptions = { busyShare: 0.5, minCostMs: 2, maxHoldMs: 50, maxHoldUnbatchedMs: 10 };

export class FanoutPacer {
  private pending: StreamEvent[] = [];
  /** A flush is queued (microtask or timer). */
  private scheduled = false;
  /** A flush ran and its cost is not known yet: the sockets are written at the end of its turn. */
  private measuring = false;
  private nextFlushAt = 0;

  constructor(
    private readonly deliver: (ev: StreamEvent) => void,
    private readonly clock: PacerClock,
    private readonly opts: PacerOptions = PACER_DEFAULTS,
  ) {}

  push(ev: StreamEvent): void {
    this.pending.push(ev);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.measuring || this.pending.length === 0) return;
    this.scheduled = true;
    const wait = this.nextFlushAt - this.clock.now();
    // A microtask still joins the events of the same worker batch into one flush.
    if (wait > 0) this.clock.setTimer(() => this.flush(), wait);
    else queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    const events = this.pending;
    this.pending = [];
    const start = this.clock.now();
    this.measuring = true;
    const conversations = new Set<string>();
    try {
      for (const ev of events) {
        conversations.add(ev.id);
        this.deliver(ev);
      }
    } finally {
      // At least two events per conversation on average: holding packs frames.
      const batched = events.length >= 2 * conversations.size;
      this.clock.setTimer(() => this.measured(start, batched), 0);
    }
  }

  private measured(start: number, batched: boolean): void {
    this.measuring = false;
    const cost = this.clock.now() - start;
    const { busyShare, minCostMs } = this.opts;
    const maxHold = batched ? this.opts.maxHoldMs : this.opts.maxHoldUnbatchedMs;
    this.nextFlushAt = cost < minCostMs ? 0 : start + Math.min(cost / busyShare, cost + maxHold);
    this.schedule();
  }
}
