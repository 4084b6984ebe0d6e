// StreamHub: every subscriber of a conversation sees every committed message
// exactly once, in seq order, whatever the stream kind (SPEC §5).
//
// One Topic per streamed conversation sequences everything for it, one item
// at a time (pump): live events from the owning worker, joins, resyncs.
//   - `head` is the last seq published to the topic's live subscribers; a
//     message event at or below it is a duplicate, one above head+1 reveals a
//     hole, healed from the log before the event goes out.
//   - A joiner first replays the log on its own (it may be far behind), then
//     its join is sequenced: caught up from the log to `head`, or — when its
//     replay read is ahead of events still in flight — parked until head
//     reaches it. It goes live exactly when its position equals head, inside
//     the pump, so nothing is skipped and nothing is sent twice.
// Interest is registered with the worker before the first read of a topic,
// so every seq above what a read returned is applied after it and reaches
// the topic as an event.
import { type StreamEvent, gapEvent, tombstoneEvent } from '../../actors/events.js';
import { AppError } from '../../actors/errors.js';
import { log } from '../../runtime/log.js';

/** A page of the log as events (ReqOp.Events). */
export interface EventsPage {
  lastSeq: number;
  tombstoned: boolean;
  events: StreamEvent[];
}

export interface HubDeps {
  /** Message events with seq > from (at most `limit`), linearizable. */
  readEvents(id: string, from: number, limit: number): Promise<EventsPage>;
  /** Starts (on) or stops emitting events of a conversation on its worker; in order with readEvents. */
  setInterest(id: string, on: boolean): void;
  /** Sends an event to every live subscriber of the conversation, serialised once per stream kind. */
  broadcast(id: string, ev: StreamEvent, live: ReadonlySet<Subscriber>): void;
  /** Waits before retrying a failed read. */
  sleep(ms: number): Promise<void>;
}

/** One stream of one conversation on one connection; implemented per stream kind. */
export interface Subscriber {
  readonly id: string;
  /** Last seq this subscriber has (its cursor, then what it was sent). */
  position: number;
  closed: boolean;
  /** Sends one event to this subscriber only; false when it is gone. */
  send(ev: StreamEvent): boolean;
  /** Its send buffer is past the point where replay should wait. */
  backlogged(): boolean;
  /** Resolves once the send buffer is low again, or the subscriber was closed as too slow. */
  drained(): Promise<void>;
  /** From now on it receives the topic's broadcasts. */
  goLive(): void;
  /** Ends the stream (the hub cannot serve it); the transport calls leave() when closed. */
  end(reason: string): void;
}

type Item = { kind: 'event'; ev: StreamEvent } | { kind: 'join'; sub: Subscriber } | { kind: 'sync' };

class Topic {
  /** Last seq published to live subscribers; -1 until read. */
  head = -1;
  tombstoned = false;
  readonly live = new Set<Subscriber>();
  /** Joined, waiting for head to reach their position. */
  readonly parked = new Set<Subscriber>();
  readonly members = new Set<Subscriber>();
  readonly queue: Item[] = [];
  pumping = false;
  dropped = false;
  constructor(readonly id: string) {}
}

const REPLAY_PAGE = 1000;
const RETRY_MS = 250;
const RETRY_LOG_EVERY = 40;

export class StreamHub {
  private readonly topics = new Map<string, Topic>();

  constructor(private readonly deps: HubDeps) {}

  get topicCount(): number {
    return this.topics.size;
  }

  /**
   * Subscribes `sub` from its position (a seq: events after it are sent);
   * null position = live from now on.
   */
  async join(sub: Subscriber, from: number | null): Promise<void> {
    const t = this.topicOf(sub.id);
    t.members.add(sub);
    if (from === null) {
      sub.position = -1; // set to head when the join is sequenced
    } else {
      sub.position = from;
      await this.replay(t, sub);
    }
    if (sub.closed || t.dropped) return;
    this.enqueue(t, { kind: 'join', sub });
  }

  leave(sub: Subscriber): void {
    const t = this.topics.get(sub.id);
    if (t === undefined || !t.members.delete(sub)) return;
    t.live.delete(sub);
    t.parked.delete(sub);
    if (t.members.size > 0) return;
    t.dropped = true;
    this.topics.delete(t.id);
    this.deps.setInterest(t.id, false);
  }

  /** An event from a worker, in apply order. */
  onEvent(ev: StreamEvent): void {
    const t = this.topics.get(ev.id);
    if (t !== undefined) this.enqueue(t, { kind: 'event', ev });
  }

  /** A worker restarted: its interest is gone and events may have been lost. */
  resync(owns: (id: string) => boolean): void {
    for (const t of this.topics.values()) {
      if (!owns(t.id)) continue;
      this.deps.setInterest(t.id, true);
      this.enqueue(t, { kind: 'sync' });
    }
  }

  private topicOf(id: string): Topic {
    let t = this.topics.get(id);
    if (t === undefined) {
      t = new Topic(id);
      this.topics.set(id, t);
      this.deps.setInterest(id, true);
    }
    return t;
  }

  /** The independent part of a join: the log from the subscriber's position to its end now. */
  private async replay(t: Topic, sub: Subscriber): Promise<void> {
    for (;;) {
      const page = await this.read(t, sub.position, REPLAY_PAGE);
      if (page === null || sub.closed) return;
      this.gapBefore(sub, page);
      for (const ev of page.events) if (!(await this.paced(sub, ev))) return;
      if (page.events.length < REPLAY_PAGE || sub.position >= page.lastSeq) return;
    }
  }

  private enqueue(t: Topic, item: Item): void {
    t.queue.push(item);
    if (!t.pumping) void this.pump(t);
  }

  private async pump(t: Topic): Promise<void> {
    t.pumping = true;
    try {
      if (t.head < 0 && !(await this.readHead(t))) return;
      while (t.queue.length > 0 && !t.dropped) {
        const item = t.queue.shift()!;
        if (item.kind === 'event') await this.onTopicEvent(t, item.ev);
        else if (item.kind === 'join') await this.sequenceJoin(t, item.sub);
        else await this.sync(t);
      }
    } catch (err) {
      // A broken invariant ends this conversation's streams (clients resume
      // from their cursor), never the node.
      log('error', 'stream_failed', 'conversation stream failed', { conversation_id: t.id, err: String(err), stack: (err as Error).stack });
      this.endAll(t, 'internal error');
    } finally {
      t.pumping = false;
    }
  }

  private endAll(t: Topic, reason: string): void {
    for (const s of [...t.members]) {
      s.end(reason);
      this.leave(s);
    }
  }

  private async readHead(t: Topic): Promise<boolean> {
    const page = await this.read(t, 0, 0);
    if (page === null) return false;
    t.head = page.lastSeq;
    t.tombstoned = page.tombstoned;
    return true;
  }

  private async onTopicEvent(t: Topic, ev: StreamEvent): Promise<void> {
    if (ev.type === 'head') {
      // Every event up to it was sent before this announcement: anything missing was lost.
      if (ev.seq > t.head) await this.heal(t, ev.seq);
      return;
    }
    if (ev.type !== 'message') {
      if (ev.type === 'tombstone') {
        if (t.tombstoned) return;
        t.tombstoned = true;
      }
      this.publish(t, ev);
      for (const s of t.parked) this.sendTo(s, ev);
      return;
    }
    if (ev.seq <= t.head) return;
    if (ev.seq > t.head + 1) await this.heal(t, ev.seq - 1);
    if (ev.seq === t.head + 1) this.advance(t, ev);
  }

  /** Publishes the log from head+1 to `upto`; a part the log no longer has becomes a gap event. */
  private async heal(t: Topic, upto: number): Promise<void> {
    while (t.head < upto && !t.dropped) {
      const page = await this.read(t, t.head, Math.min(REPLAY_PAGE, upto - t.head));
      if (page === null) return;
      const first = page.events[0];
      if (first === undefined || first.seq !== t.head + 1) {
        const actual = first?.seq ?? upto + 1;
        this.publish(t, gapEvent(t.id, t.head + 1, actual));
        log('warn', 'stream_gap', 'stream hole could not be healed from the log', { conversation_id: t.id, expected: t.head + 1, actual });
        t.head = actual - 1;
        this.admit(t);
        if (first === undefined) return;
      }
      for (const ev of page.events) if (ev.seq === t.head + 1) this.advance(t, ev);
    }
  }

  private advance(t: Topic, ev: StreamEvent): void {
    this.publish(t, ev);
    t.head = ev.seq;
    this.admit(t);
  }

  /** Parked joiners whose position head has reached go live now, before the next event. */
  private admit(t: Topic): void {
    for (const s of t.parked) {
      if (s.position > t.head) continue;
      t.parked.delete(s);
      this.goLive(t, s);
    }
  }

  private async sequenceJoin(t: Topic, sub: Subscriber): Promise<void> {
    if (sub.closed || !t.members.has(sub)) return;
    if (sub.position < 0) sub.position = t.head;
    while (sub.position < t.head) {
      const page = await this.read(t, sub.position, Math.min(REPLAY_PAGE, t.head - sub.position));
      if (page === null || sub.closed) return;
      if (page.events.length === 0) {
        sub.position = t.head; // trimmed from the log: the gap was published already
        break;
      }
      this.gapBefore(sub, page);
      for (const ev of page.events) if (ev.seq <= t.head && !(await this.paced(sub, ev))) return;
    }
    if (sub.position > t.head) t.parked.add(sub);
    else this.goLive(t, sub);
  }

  private goLive(t: Topic, sub: Subscriber): void {
    t.live.add(sub);
    sub.goLive();
    if (t.tombstoned) sub.send(tombstoneEvent(t.id));
  }

  /** After a worker restart: anything applied meanwhile is healed from the log. */
  private async sync(t: Topic): Promise<void> {
    const page = await this.read(t, t.head, 0);
    if (page === null) return;
    if (page.lastSeq > t.head) await this.heal(t, page.lastSeq);
    if (page.tombstoned && !t.tombstoned) await this.onTopicEvent(t, tombstoneEvent(t.id));
  }

  private publish(t: Topic, ev: StreamEvent): void {
    if (t.live.size > 0) this.deps.broadcast(t.id, ev, t.live);
  }

  /** Neither the log nor the archive has what comes right after the subscriber's position: it is told so. */
  private gapBefore(sub: Subscriber, page: EventsPage): void {
    const first = page.events[0];
    if (first !== undefined && first.seq > sub.position + 1) sub.send(gapEvent(sub.id, sub.position + 1, first.seq));
  }

  /** A replayed event: waits for the subscriber to drain first when it is behind. */
  private async paced(sub: Subscriber, ev: StreamEvent): Promise<boolean> {
    if (sub.backlogged()) await sub.drained();
    return !sub.closed && this.sendTo(sub, ev);
  }

  private sendTo(sub: Subscriber, ev: StreamEvent): boolean {
    if (!sub.send(ev)) return false;
    if (ev.seq > 0) sub.position = ev.seq;
    return true;
  }

  /** A read that retries while the topic is wanted; null once nobody is. */
  private async read(t: Topic, from: number, limit: number): Promise<EventsPage | null> {
    for (let failures = 0; ; failures++) {
      if (t.dropped) return null;
      try {
        return await this.deps.readEvents(t.id, from, limit);
      } catch (err) {
        if (err instanceof AppError && err.code === 'not_found') {
          this.endAll(t, 'conversation not found');
          return null;
        }
        // A long outage (a leaderless group, the archive's database down) logs every ~10 s, not every retry.
        if (failures % RETRY_LOG_EVERY === 0) {
          log('warn', 'stream_read_failed', 'stream read failed; retrying', { conversation_id: t.id, failures: failures + 1, err: String(err) });
        }
        await this.deps.sleep(RETRY_MS);
      }
    }
  }
}
