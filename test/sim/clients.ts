// Simulated clients: each runs one operation at a time against the node it
// believes leads the conversation's group, follows not-leader hints, gives
// up on an attempt after a timeout, and records what it saw (history.ts).
// Commands are the real encoded ones (actors/commands.ts), as the gateway
// builds them: appends with and without if_version and idempotency keys,
// PUTs, a tombstone, and linearizable reads.
import { Op, encodeCommand } from '../../actors/commands.js';
import type { WireError } from '../../actors/errors.js';
import { groupOf } from '../../runtime/placement.js';
import type { NodeId } from '../../runtime/raft/types.js';
import { ReplyKind } from '../../runtime/replies.js';
import type { OpKind, OpRecord } from './history.js';
import type { Answer, ClientRequest } from './node.js';
import type { Rng } from './rng.js';
import type { Scheduler } from './scheduler.js';
import type { SimStats } from './stats.js';

export interface ClientKnobs {
  clients: number;
  thinkMaxMs: number;
  timeoutMs: number;
  /** Client ↔ node latency. */
  latencyMaxMs: number;
  /** Attempts per operation (not-leader hops and retries of retryable operations). */
  attemptsMax: number;
  /** Chance that an operation tombstones the seed's last conversation (once). */
  tombstoneRate: number;
}

export interface ClientEnv {
  scheduler: Scheduler;
  rng: Rng;
  stats: SimStats;
  knobs: ClientKnobs;
  /** Voters of each group, the nodes a client may talk to. */
  placement: ReadonlyMap<number, readonly NodeId[]>;
  send: (to: NodeId, req: ClientRequest) => void;
}

/** What the clients share: the conversations, what they learned about them, and the history. */
export class Workload {
  readonly history: OpRecord[] = [];
  /** Conversations some client saw created. */
  private readonly created = new Set<string>();
  /** Highest version any client saw per conversation: concurrent conditional appends race on it. */
  private readonly versions = new Map<string, number>();
  private tombstoneSent = false;
  private attempts = 0;
  /** Set for the liveness phase: clients finish what they are doing and stop. */
  stopped = false;

  constructor(
    readonly conversations: readonly string[],
    private readonly env: ClientEnv,
  ) {}

  nextAttempt(): number {
    return ++this.attempts;
  }

  /** A new operation for `client`. */
  nextOp(client: number): OpRecord {
    const rng = this.env.rng;
    const conversation = rng.pick(this.conversations);
    const id = this.history.length + 1;
    let kind: OpKind = 'append';
    let ifVersion = -1;
    let key = '';
    const r = rng.next();
    if (!this.created.has(conversation) || r < 0.05) kind = 'put';
    else if (r < 0.2) kind = 'read';
    else if (r < 0.4) key = `k${id}`;
    else if (r < 0.6) ifVersion = this.versions.get(conversation) ?? 0;
    const last = this.conversations[this.conversations.length - 1];
    if (!this.tombstoneSent && conversation === last && this.created.has(last) && rng.chance(this.env.knobs.tombstoneRate)) {
      this.tombstoneSent = true;
      kind = 'tombstone';
    }
    const op: OpRecord = {
      id,
      client,
      kind,
      conversation,
      text: `m${id}`,
      ifVersion,
      key,
      issuedAt: this.env.scheduler.now,
      doneAt: -1,
      outcome: 'pending',
      errorCode: '',
      ack: null,
      read: null,
      attempts: 0,
      maybeApplied: false,
    };
    this.history.push(op);
    this.env.stats.ops++;
    return op;
  }

  /** Learns from a finished operation. */
  learn(op: OpRecord): void {
    if (op.outcome !== 'ok') return;
    if (op.kind === 'put') this.created.add(op.conversation);
    const version = op.ack?.version ?? op.read?.record?.version;
    if (version !== undefined && version > (this.versions.get(op.conversation) ?? 0)) this.versions.set(op.conversation, version);
  }
}

/** The command an attempt of `op` proposes, encoded afresh (the leader stamps its time into it). */
function encode(op: OpRecord): Uint8Array {
  switch (op.kind) {
    case 'put':
      return encodeCommand({ op: Op.Put, id: op.conversation, nowMs: 0, metadataJson: op.id % 2 === 0 ? `{"op":${op.id}}` : null });
    case 'tombstone':
      return encodeCommand({ op: Op.Tombstone, id: op.conversation, nowMs: 0, flags: 0 });
    case 'append':
      return encodeCommand({
        op: Op.Append,
        id: op.conversation,
        nowMs: 0,
        ifVersion: op.ifVersion,
        tokenCount: op.text.length,
        idemKey: op.key,
        digest: op.key === '' ? '' : `d-${op.text}`,
        messageMembers: `"role":"user","parts":[{"type":"text","text":"${op.text}"}]`,
        flags: 0,
      });
    case 'read':
      return new Uint8Array(0);
  }
}

/** Operations whose repetition is harmless: they are retried when the outcome is unknown. */
function retryable(op: OpRecord): boolean {
  return op.kind === 'put' || op.kind === 'tombstone' || op.kind === 'read' || op.key !== '';
}

export class SimClient {
  private op: OpRecord | null = null;
  private attempt = 0;
  private readonly leaderGuess = new Map<number, NodeId>();

  constructor(
    readonly id: number,
    private readonly workload: Workload,
    private readonly env: ClientEnv,
  ) {}

  get idle(): boolean {
    return this.op === null;
  }

  start(): void {
    this.env.scheduler.after(this.env.rng.between(0, this.env.knobs.thinkMaxMs), () => this.begin());
  }

  /** An answer from a node (after the network latency). */
  onAnswer(req: ClientRequest, a: Answer): void {
    const op = this.op;
    if (op === null || req.attempt !== this.attempt) return;
    if (a.kind === 'read') {
      op.read = a.result;
      this.finish('ok', '');
      return;
    }
    const { reply, leader } = a;
    if (reply.kind !== ReplyKind.Error) {
      if (reply.kind === ReplyKind.Created) {
        const body = JSON.parse(reply.body) as { seq: number; version: number; duplicate?: boolean };
        op.ack = { seq: body.seq, version: body.version, duplicate: body.duplicate === true };
      }
      this.finish('ok', '');
      return;
    }
    const err = JSON.parse(reply.body) as WireError;
    if (err.detail === 'not_leader') {
      // Nothing happened: try the node it named, or another one.
      this.retry(leader === '' ? null : leader, err.code);
    } else if (err.code === 'unavailable') {
      if (op.kind !== 'read') op.maybeApplied = true;
      this.retry(null, err.code);
    } else {
      this.finish(op.maybeApplied ? 'unknown' : 'failed', err.code);
    }
  }

  private begin(): void {
    if (this.workload.stopped) return;
    this.op = this.workload.nextOp(this.id);
    this.sendAttempt();
  }

  private sendAttempt(): void {
    const op = this.op!;
    const group = groupOf(op.conversation);
    const voters = this.env.placement.get(group)!;
    const to = this.leaderGuess.get(group) ?? this.env.rng.pick(voters);
    const attempt = this.workload.nextAttempt();
    this.attempt = attempt;
    op.attempts++;
    this.env.stats.steps++;
    this.env.stats.clientRequests++;
    const req: ClientRequest = { client: this.id, attempt, group, kind: op.kind === 'read' ? 'read' : 'propose', cmd: encode(op), conversation: op.conversation };
    this.env.send(to, req);
    this.env.scheduler.after(this.env.knobs.timeoutMs, () => this.timedOut(attempt));
  }

  private timedOut(attempt: number): void {
    if (this.op === null || attempt !== this.attempt) return;
    if (this.op.kind !== 'read') this.op.maybeApplied = true;
    this.retry(null, 'timeout');
  }

  /** Another attempt, at `to` or at a random voter, unless the operation is out of attempts or may not be repeated. */
  private retry(to: NodeId | null, code: string): void {
    const op = this.op!;
    const group = groupOf(op.conversation);
    if (to === null) this.leaderGuess.delete(group);
    else this.leaderGuess.set(group, to);
    if (op.attempts >= this.env.knobs.attemptsMax || (op.maybeApplied && !retryable(op))) {
      this.finish(op.maybeApplied || op.kind === 'read' ? 'unknown' : 'failed', code);
      return;
    }
    this.attempt = 0; // answers to the abandoned attempt are ignored meanwhile
    this.env.scheduler.after(this.env.rng.between(1, 20), () => this.sendAttempt());
  }

  private finish(outcome: 'ok' | 'failed' | 'unknown', code: string): void {
    const op = this.op!;
    op.outcome = outcome;
    op.errorCode = code;
    op.doneAt = this.env.scheduler.now;
    if (outcome === 'ok') this.env.stats.acked++;
    else if (outcome === 'failed') this.env.stats.failed++;
    else this.env.stats.indeterminate++;
    this.workload.learn(op);
    this.op = null;
    this.start();
  }
}
