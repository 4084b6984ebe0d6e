// FanoutPacer on a fake clock: cheap flushes go out at once, an expensive one
// holds the next events back (as long again, capped: longer when the flush
// carried several events per conversation), in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutPacer, PACER_DEFAULTS } from '../../gateway/streams/pacer.js';
import { type StreamEvent, headEvent } from '../../actors/events.js';

const ev = (seq: number, id = 'c1'): StreamEvent => headEvent(id, seq);

class FakeClock {
  t = 0;
  private timers: { at: number; fn: () => void }[] = [];
  now = (): number => this.t;
  setTimer = (fn: () => void, ms: number): void => {
    this.timers.push({ at: this.t + Math.max(1, ms), fn });
  };
  /** Runs due timers in time order (and the microtasks they queue) up to `to`. */
  async advanceTo(to: number): Promise<void> {
    for (;;) {
      await settle();
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (next === undefined || next.at > to) break;
      this.timers.shift();
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = Math.max(this.t, to);
    await settle();
  }
}
const settle = () => new Promise<void>((r) => setImmediate(r));

/** A pacer whose flushes take `costOf(events)` ms of the fake clock; records each flush's start and seqs. */
function setup(costOf: (events: number) => number) {
  const clock = new FakeClock();
  const flushes: { at: number; seqs: number[] }[] = [];
  let open: { at: number; seqs: number[] } | null = null;
  const pacer = new FanoutPacer(
    (e) => {
      if (open === null) {
        const flush = (open = { at: clock.t, seqs: [] });
        flushes.push(flush);
        // The flush's socket writes happen once it has returned, before the next loop turn.
        queueMicrotask(() => {
          clock.t += costOf(flush.seqs.length);
          open = null;
        });
      }
      open.seqs.push(e.seq);
    },
    { now: clock.now, setTimer: clock.setTimer },
  );
  return { clock, flushes, pacer };
}

test('cheap flushes are not delayed; the events of one turn go out together', async () => {
  const { clock, flushes, pacer } = setup(() => 1); // below minCostMs
  pacer.push(ev(1));
  pacer.push(ev(2));
  await settle();
  assert.deepEqual(flushes, [{ at: 0, seqs: [1, 2] }]);
  await clock.advanceTo(1); // the flush's cost is known: 1 ms
  pacer.push(ev(3));
  await settle();
  assert.deepEqual(flushes[1], { at: 1, seqs: [3] }, 'a 1 ms flush does not hold the next one back');
});

test('after an expensive flush the next waits as long again, and carries everything that came meanwhile, in order', async () => {
  const { clock, flushes, pacer } = setup((n) => 8 * n);
  pacer.push(ev(1)); // flush at 0 costs 8 ms: the next is due at 0 + 8 / busyShare
  await settle();
  for (let seq = 2; seq <= 4; seq++) {
    await clock.advanceTo(clock.t + 2); // 10, 12, 14
    pacer.push(ev(seq));
  }
  await clock.advanceTo(15);
  assert.equal(flushes.length, 1, 'held back until the thread has had as long again');
  await clock.advanceTo(16);
  assert.deepEqual(flushes[1], { at: 8 / PACER_DEFAULTS.busyShare, seqs: [2, 3, 4] });
});

test('the hold is capped: after a very expensive flush of 2 events per conversation, the next waits its cost plus maxHoldMs at most', async () => {
  const { clock, flushes, pacer } = setup(() => 400);
  pacer.push(ev(1));
  pacer.push(ev(2));
  await settle();
  await clock.advanceTo(1);
  pacer.push(ev(3));
  await clock.advanceTo(10_000);
  assert.equal(flushes[1].at, 400 + PACER_DEFAULTS.maxHoldMs);
  assert.deepEqual(flushes.flatMap((f) => f.seqs), [1, 2, 3]);
});

test('a flush of one event per conversation caps the hold at maxHoldUnbatchedMs: holding would not save writes', async () => {
  const { clock, flushes, pacer } = setup(() => 400);
  pacer.push(ev(1, 'c1'));
  pacer.push(ev(1, 'c2'));
  await settle();
  await clock.advanceTo(1);
  pacer.push(ev(2, 'c1'));
  await clock.advanceTo(10_000);
  assert.ok(PACER_DEFAULTS.maxHoldUnbatchedMs < PACER_DEFAULTS.maxHoldMs);
  assert.equal(flushes[1].at, 400 + PACER_DEFAULTS.maxHoldUnbatchedMs);
  assert.deepEqual(flushes[1].seqs, [2]);
});
