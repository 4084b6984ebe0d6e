// Main-thread side of the worker protocol: reqId → pending map with a
// deadline and an in-flight cap; frames for each worker are batched and
// posted once per event-loop turn. Every request is answered exactly once.
import type { Runtime } from '../runtime/index.js';
import type { MainCommand } from '../runtime/shard.js';
import { EVENT_PUBLISH_STATUS, EVENT_STATUS, FrameBuffer, LEADER_STATUS, RAFT_STATUS, ReqOp, parseEvent, readReplies } from '../runtime/wire.js';
import type { StreamEvent } from '../actors/events.js';
import { ReplyKind } from '../runtime/replies.js';
import { AppError, overloaded, unavailable } from '../actors/errors.js';
import { workerOfGroup } from '../runtime/placement.js';
import { limits } from '../runtime/limits.js';

export interface WorkerReply {
  kind: ReplyKind;
  body: Uint8Array;
}

interface Pending {
  resolve: (r: WorkerReply) => void;
  reject: (e: AppError) => void;
  deadlineMs: number;
  worker: number;
}

const SWEEP_MS = 200;

export class Dispatcher {
  private readonly pending = new Map<number, Pending>();
  private readonly outboxes: FrameBuffer[];
  private nextReqId = 1;
  private flushScheduled = false;
  private readonly sweeper: NodeJS.Timeout;
  /** Stream events from the workers, in apply order; `publish` when applied by the group's leader. */
  onEvent: (ev: StreamEvent, publish: boolean) => void = () => {};
  /** Encoded Raft messages for peer nodes (runtime/cluster.ts). */
  onRaft: (msg: Uint8Array) => void = () => {};
  /** A worker's replica saw a new leader (or none: '') for the group. */
  onLeader: (group: number, leader: string, term: number, voters: string[], hosted: boolean) => void = () => {};

  constructor(private readonly runtime: Runtime) {
    this.outboxes = runtime.workers.map(() => new FrameBuffer());
    runtime.onReplies = (buf) => readReplies(buf, (reqId, kind, body) => this.onFrame(reqId, kind, body));
    runtime.onWorkerDown = (w) => this.failWorker(w);
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** Sends one request to the worker owning `group` (or worker `worker` when given). */
  request(op: ReqOp, group: number, payload: Uint8Array, worker?: number): Promise<WorkerReply> {
    if (this.pending.size >= limits.requestsInFlightMax) return Promise.reject(overloaded('node request queue'));
    const w = worker ?? workerOfGroup(group, this.runtime.partitions, this.runtime.workers.length);
    if (!this.runtime.isWorkerReady(w)) return Promise.reject(unavailable('the shard worker is restarting'));
    const reqId = this.nextReqId;
    this.nextReqId = this.nextReqId >= 0xfffffffe ? 1 : this.nextReqId + 1;
    this.outboxes[w].request(reqId, op, group, payload);
    this.scheduleFlush();
    return new Promise((resolve, reject) => {
      this.pending.set(reqId, { resolve, reject, deadlineMs: Date.now() + limits.requestDeadlineMs, worker: w });
    });
  }

  /** Hands an encoded Raft message from a peer to the worker owning its group (no reply; Raft resends what is lost). */
  deliverRaft(group: number, msg: Uint8Array): void {
    const w = workerOfGroup(group, this.runtime.partitions, this.runtime.workers.length);
    if (!this.runtime.isWorkerReady(w)) return;
    this.outboxes[w].request(0, ReqOp.Raft, group, msg);
    this.scheduleFlush();
  }

  /** Tells every worker which peer nodes are down (runtime/cluster.ts liveness). */
  peersDown(nodes: string[]): void {
    this.runtime.workers.forEach((w, i) => {
      if (this.runtime.isWorkerReady(i)) w.postMessage({ type: 'peers_down', nodes } satisfies MainCommand);
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private onFrame(reqId: number, kind: number, body: Uint8Array): void {
    switch (kind) {
      case EVENT_STATUS:
      case EVENT_PUBLISH_STATUS:
        return this.onEvent(parseEvent(body), kind === EVENT_PUBLISH_STATUS);
      case RAFT_STATUS:
        return this.onRaft(body);
      case LEADER_STATUS: {
        const [group, leader, term, voters, hosted] = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('latin1').split('\n');
        return this.onLeader(Number(group), leader, Number(term), voters === '' ? [] : voters.split(','), hosted === '1');
      }
      default:
        return this.settle(reqId, kind, body);
    }
  }

  /** The same request to every worker of this node (listing). */
  broadcast(op: ReqOp, payload: Uint8Array): Promise<WorkerReply[]> {
    return Promise.all(this.runtime.workers.map((_, w) => this.request(op, 0xffff, payload, w)));
  }

  /** Fails everything still waiting (shutdown). */
  failAll(message: string): void {
    clearInterval(this.sweeper);
    for (const p of this.pending.values()) p.reject(unavailable(message));
    this.pending.clear();
  }

  /** A worker thread is gone: its requests' outcome is unknown, so they get 503 now. */
  private failWorker(w: number): void {
    this.outboxes[w].take();
    for (const [reqId, p] of this.pending) {
      if (p.worker !== w) continue;
      this.pending.delete(reqId);
      p.reject(unavailable('the shard worker restarted; the outcome is unknown, retry with an idempotency key'));
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    for (let w = 0; w < this.outboxes.length; w++) {
      const box = this.outboxes[w];
      if (box.length === 0) continue;
      const buf = box.take();
      this.runtime.workers[w].postMessage({ type: 'requests', buf } satisfies MainCommand, [buf]);
    }
  }

  private settle(reqId: number, kind: ReplyKind, body: Uint8Array): void {
    const p = this.pending.get(reqId);
    if (p === undefined) return; // answered already (deadline passed)
    this.pending.delete(reqId);
    p.resolve({ kind, body });
  }

  private sweep(): void {
    const now = Date.now();
    for (const [reqId, p] of this.pending) {
      if (p.deadlineMs > now) continue;
      this.pending.delete(reqId);
      p.reject(unavailable('the request did not complete in time; its outcome is unknown, retry with an idempotency key'));
    }
  }
}
