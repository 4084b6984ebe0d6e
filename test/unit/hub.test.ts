// StreamHub against a simulated worker: reads and events arrive late and
// interleaved, events are lost (worker restarts), subscribers join at random
// cursors and leave. Every subscriber must see contiguous seqs, each once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StreamHub, type EventsPage, type Subscriber } from '../../gateway/streams/hub.js';
import { type StreamEvent, headEvent, messageEvent, tombstoneEvent } from '../../actors/events.js';
import { mulberry32 } from '../../runtime/prng.js';

const ID = 'c1';
const record = (seq: number) => `{"seq":${seq},"role":"user","parts":[],"metadata":{},"token_count":1,"inserted_at":"t"}`;

class FakeSub implements Subscriber {
  readonly id = ID;
  position = 0;
  closed = false;
  live = false;
  readonly seqs: number[] = [];
  readonly others: string[] = [];
  constructor(readonly name: string) {}
  send(ev: StreamEvent): boolean {
    if (this.closed) return false;
    if (ev.type === 'message') this.seqs.push(ev.seq);
    else this.others.push(ev.type);
    return true;
  }
  backlogged(): boolean {
    return false;
  }
  drained(): Promise<void> {
    return Promise.resolve();
  }
  goLive(): void {
    this.live = true;
  }
  end(): void {
    this.closed = true;
  }
}

/** The owning worker: a log, interest, and a FIFO of events delivered after random delays. */
function simulatedWorker(seed: number, lossRate: number) {
  const loss = { rate: lossRate };
  const rand = mulberry32(seed);
  const tick = () => new Promise<void>((r) => (rand() < 0.5 ? setImmediate(r) : queueMicrotask(r)));
  const delay = async () => {
    for (let n = Math.floor(rand() * 4); n > 0; n--) await tick();
  };
  let log = 0;
  let tombstoned = false;
  let interest = false;
  let lost = 0;
  const inFlight: StreamEvent[] = [];
  let hub!: StreamHub;
  let delivering = false;
  const deliver = async () => {
    if (delivering) return;
    delivering = true;
    while (inFlight.length > 0) {
      await delay();
      hub.onEvent(inFlight.shift()!);
    }
    delivering = false;
  };
  const emit = (ev: StreamEvent) => {
    if (!interest) return;
    if (rand() < loss.rate) {
      lost++;
      return;
    }
    inFlight.push(ev);
    void deliver();
  };
  return {
    rand,
    delay,
    loss,
    get lost() {
      return lost;
    },
    get last() {
      return log;
    },
    attach(h: StreamHub) {
      hub = h;
    },
    deps: {
      readEvents: async (_id: string, from: number, limit: number): Promise<EventsPage> => {
        await delay();
        const hi = Math.min(log, from + limit);
        const events = [];
        for (let s = from + 1; s <= hi; s++) events.push(messageEvent(ID, record(s), s));
        const page = { lastSeq: log, tombstoned, events };
        await delay();
        return page;
      },
      setInterest: (_id: string, on: boolean) => {
        interest = on;
      },
      broadcast: (_id: string, ev: StreamEvent, live: ReadonlySet<Subscriber>) => {
        for (const s of live) s.send(ev);
      },
      sleep: () => tick(),
    },
    append() {
      log++;
      emit(messageEvent(ID, record(log), log));
    },
    tombstone() {
      tombstoned = true;
      emit(tombstoneEvent(ID));
    },
  };
}

function checkContiguous(s: FakeSub, from: number, upto: number): void {
  const want = Array.from({ length: upto - from }, (_, i) => from + 1 + i);
  assert.deepEqual(s.seqs, want, `${s.name}: joined after ${from}`);
}

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) {
  // Seeds cycle through: no loss; loss healed by resyncs; loss healed only by later events.
  const lossy = seed % 3 !== 0;
  const resyncs = seed % 3 === 1;
  test(`hub - exactly once, in order, through late reads${lossy ? ', lost events' : ''}${resyncs ? ', resyncs' : ''} (seed ${seed})`, async () => {
    const w = simulatedWorker(seed, lossy ? 0.05 : 0);
    const hub = new StreamHub(w.deps);
    w.attach(hub);
    const subs: { s: FakeSub; from: number; joined: Promise<void> }[] = [];
    for (let step = 0; step < 400; step++) {
      const r = w.rand();
      if (r < 0.6) w.append();
      else if (r < 0.7) {
        const from = Math.floor(w.rand() * (w.last + 3));
        const s = new FakeSub(`s${subs.length}`);
        subs.push({ s, from, joined: hub.join(s, from) });
      } else if (r < 0.73 && subs.length > 0) {
        const victim = subs[Math.floor(w.rand() * subs.length)].s;
        victim.closed = true;
        hub.leave(victim);
      } else if (r < 0.75 && resyncs) hub.resync(() => true);
      await w.delay();
    }
    // Quiesce: a final resync notices lost final events; without resyncs, a last
    // event that arrives must heal every hole before it.
    if (resyncs) hub.resync(() => true);
    else {
      w.loss.rate = 0;
      w.append();
    }
    await Promise.all(subs.map((x) => x.joined));
    for (let i = 0; i < 200; i++) await new Promise((r) => setImmediate(r));
    const end = w.last;
    let checked = 0;
    for (const { s, from } of subs) {
      if (s.closed) {
        // Whatever it got before leaving is still a contiguous run.
        assert.deepEqual(s.seqs, s.seqs.map((_, i) => from + 1 + i), s.name);
        continue;
      }
      assert.ok(s.live, `${s.name} went live`);
      checkContiguous(s, Math.min(from, end), Math.max(end, from));
      checked++;
    }
    assert.ok(checked > 3, `only ${checked} subscribers stayed`);
  });
}

test('hub - a tombstone reaches live subscribers once, and every later joiner after its replay', async () => {
  const w = simulatedWorker(11, 0);
  const hub = new StreamHub(w.deps);
  w.attach(hub);
  const a = new FakeSub('a');
  await hub.join(a, 0);
  for (let i = 0; i < 5; i++) w.append();
  w.tombstone();
  w.tombstone();
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(a.seqs, [1, 2, 3, 4, 5]);
  assert.deepEqual(a.others, ['tombstone']);
  const b = new FakeSub('b');
  await hub.join(b, 2);
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(b.seqs, [3, 4, 5]);
  assert.deepEqual(b.others, ['tombstone']);
  hub.leave(a);
  hub.leave(b);
  assert.equal(hub.topicCount, 0, 'the topic goes with its last subscriber');
});

test('hub - live-only joins start at the head; a topic read failure is retried', async () => {
  const w = simulatedWorker(12, 0);
  let failures = 2;
  const read = w.deps.readEvents;
  w.deps.readEvents = async (id, from, limit) => {
    if (failures-- > 0) throw new Error('worker restarting');
    return read(id, from, limit);
  };
  const hub = new StreamHub(w.deps);
  w.attach(hub);
  for (let i = 0; i < 3; i++) w.append();
  const s = new FakeSub('live');
  await hub.join(s, null);
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  w.append();
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(s.seqs, [4]);
});

test('hub - a head announcement heals a lost final event', async () => {
  const w = simulatedWorker(13, 0);
  const hub = new StreamHub(w.deps);
  w.attach(hub);
  const s = new FakeSub('s');
  await hub.join(s, 0);
  w.append();
  w.append();
  w.loss.rate = 1; // the last event never arrives
  w.append();
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(s.seqs, [1, 2]);
  hub.onEvent(headEvent(ID, 3));
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(s.seqs, [1, 2, 3]);
  assert.deepEqual(s.others, [], 'the announcement itself is never delivered');
});
