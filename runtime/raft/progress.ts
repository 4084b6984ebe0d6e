// The leader's view of one voter's log (etcd tracker.Progress). Pure module.
//
// States:
//  - Probe: the leader does not know where the follower's log matches; it
//    sends one App at a time and waits for the answer (or a heartbeat reply).
//  - Replicate: the follower is in sync; Apps are pipelined optimistically,
//    bounded by `inflights` (max messages in flight).
//  - Snapshot: the follower needs a snapshot; nothing else is sent until it
//    answers (AppResp) or the driver reports the stream's outcome.

import type { NodeId } from './types.js';

export const enum ProgressState {
  Probe = 0,
  Replicate = 1,
  Snapshot = 2,
}

/** Ring buffer of the last index of each App in flight. */
export class Inflights {
  private readonly buf: Float64Array;
  private start = 0;
  private count = 0;

  constructor(capacity: number) {
    if (!(capacity >= 1)) throw new RangeError(`maxInflight must be >= 1, got ${capacity}`);
    this.buf = new Float64Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  full(): boolean {
    return this.count === this.buf.length;
  }

  add(lastIndex: number): void {
    if (this.full()) throw new RangeError('inflights overflow');
    const cap = this.buf.length;
    if (this.count > 0 && this.buf[(this.start + this.count - 1) % cap] >= lastIndex) {
      throw new RangeError(`inflights out of order: ${lastIndex}`);
    }
    this.buf[(this.start + this.count) % cap] = lastIndex;
    this.count++;
  }

  /** Frees every App whose last index is <= `index`. */
  freeLE(index: number): void {
    const cap = this.buf.length;
    while (this.count > 0 && this.buf[this.start] <= index) {
      this.start = (this.start + 1) % cap;
      this.count--;
    }
    if (this.count === 0) this.start = 0;
  }

  freeFirstOne(): void {
    if (this.count === 0) return;
    this.start = (this.start + 1) % this.buf.length;
    this.count--;
  }

  reset(): void {
    this.start = 0;
    this.count = 0;
  }
}

export class Progress {
  readonly id: NodeId;
  /** Highest index known to be persisted on the node. */
  match = 0;
  /** Next index to send. Invariant: match < next. */
  next = 1;
  state: ProgressState = ProgressState.Probe;
  /** Snapshot state: index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** Highest commit index sent to it that its log could take (an App's or a heartbeat's). */
  sentCommit = 0;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  /** Probe state: an App is out and unanswered. */
  probeSent = false;
  /** Highest read round (heartbeat context) the node acknowledged this term. */
  readAck = 0;
  readonly inflights: Inflights;

  constructor(id: NodeId, maxInflight: number) {
    this.id = id;
    this.inflights = new Inflights(maxInflight);
  }

  /** Fresh state for a new term or a newly added voter. */
  resetFor(lastIndex: number): void {
    this.match = 0;
    this.next = lastIndex + 1;
    this.pendingSnapshot = 0;
    this.recentActive = false;
    this.readAck = 0;
    this.sentCommit = 0;
    this.resetState(ProgressState.Probe);
  }

  private resetState(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  becomeProbe(): void {
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = snapshotIndex;
  }

  /** An ack for `index` arrived. Returns false when it is stale. */
  maybeUpdate(index: number): boolean {
    if (index <= this.match) return false;
    this.match = index;
    if (this.next < index + 1) this.next = index + 1;
    this.probeSent = false;
    return true;
  }

  /**
   * A rejection of the App whose previous index was `rejected` arrived;
   * `matchHint` is the follower's guess of the last index that may match.
   * Returns false when the rejection is stale.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  /** Bookkeeping after an App carrying `count` entries ending at `lastIndex` was sent. */
  sentEntries(count: number, lastIndex: number): void {
    if (this.state === ProgressState.Replicate) {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex);
      }
    } else if (this.state === ProgressState.Probe) {
      this.probeSent = true;
    }
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent;
      case ProgressState.Replicate:
        return this.inflights.full();
      default:
        return true;
    }
  }
}
