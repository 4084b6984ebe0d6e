// A shard: owns some storage partitions, their Raft groups and conversation
// actors. Talks to the gateway only in batched frames (runtime/wire.ts): at
// most one postMessage per event-loop turn each way. It runs on a worker
// thread (runtime/worker.ts), or on the gateway thread itself when the node
// has no worker threads (FLEETLM_WORKERS=0, runtime/index.ts).
import fs from 'node:fs/promises';
import path from 'node:path';
import { type EventSink, PartitionDriver, type ReadFn } from './driver.js';
import { PartitionStore } from '../storage/partition-store.js';
import type { ActorCache, ActorEntry } from './actor-cache.js';
import { FrameBuffer, LEADER_STATUS, RAFT_STATUS, ReqOp, readRequests, type RequestFrame } from './wire.js';
import { decodeMessage, encodeMessageBytes } from './raft/codec.js';
import type { Message } from './raft/types.js';
import { type Reply, ReplyKind, errorReply, messagesBody } from './replies.js';
import { contextJson, recordJson, storedRecordJson, versionAt, type ConversationRecord } from '../actors/conversation.js';
import { contextEvent, headEvent, messageEvent, type StreamEvent } from '../actors/events.js';
import { type WindowResult, liveFrom, memoSignature, needsCompaction, readWindow, segments, usedTokensOfWholeWindow, windowTokens } from '../actors/context.js';
import { conflict, notFound, invalid } from '../actors/errors.js';
import { systemClock } from './clock.js';
import { mulberry32 } from './prng.js';
import { limits } from './limits.js';
import { log, setLogLevel } from './log.js';
import { groupOf, partitionOf } from './placement.js';
import { type Founding, foundingVoters, isFoundingIncarnation, replicaIdOf } from './membership.js';
import { listRecords, type ListQuery } from './listing.js';
import { WindowMemoCache } from './window-memo.js';

export interface WorkerInit {
  workerIndex: number;
  partitions: number[];
  partitionCount: number;
  dataDir: string;
  nodeId: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  walSegmentBytes: number;
  /** Emit events of every conversation (published to NATS), not only streamed ones. */
  publishAllEvents: boolean;
  /** The founding record of the cluster (runtime/membership.ts); null on a single node. */
  founding: Founding | null;
  /** This data dir's incarnation: replicas added to this node are named by it. */
  incarnation: string;
}

export type WorkerEvent =
  | { type: 'ready' }
  | { type: 'group_stopped'; group: number; reason: string }
  | { type: 'replies'; buf: ArrayBuffer }
  /** Token counts wanted for window reads (texts of each message's kept parts). */
  | { type: 'count'; id: number; texts: string[][] }
  | { type: 'closed' }
  /** The storage failed its checks at open (cluster only: the node then starts over and is repaired from peers). */
  | { type: 'damaged'; reason: string }
  | { type: 'fatal'; message: string };

export type MainCommand =
  | { type: 'requests'; buf: ArrayBuffer }
  /** Per message: its token count, or -1 when it could not be counted in bounded time. */
  | { type: 'counted'; id: number; counts: number[] }
  /** Peer nodes not heard from lately (runtime/cluster.ts): groups they lead wake up. */
  | { type: 'peers_down'; nodes: string[] }
  | { type: 'close' };

const TICK_MS = 100;
/** Committed entries a replicated group keeps behind its applied index (followers catch up from them). */
const RETAIN_ENTRIES = 512;
const HEADS_MS = 1000;
/** Most messages a context's window keeps in memory (actor-cache keepRecent). */
const WINDOW_KEEP_MAX = 4096;

/** How a shard talks to the gateway: a worker's parentPort, or the in-thread channel of runtime/index.ts. */
export interface ShardPort {
  postMessage(e: WorkerEvent, transfer?: ArrayBuffer[]): void;
  on(event: 'message', listener: (m: MainCommand) => void): unknown;
}

/** A stream event waiting for an earlier one of its conversation; ev null: still being computed. */
interface HeldEvent {
  ev: StreamEvent | null;
  leading: boolean;
}

/** Opens the shard's partitions and serves `port` until it is told to close. */
export function runShard(init: WorkerInit, port: ShardPort): void {
  setLogLevel(init.logLevel);

  const out = new FrameBuffer();
  let flushScheduled = false;

  function scheduleFlush(): void {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  }

  function reply(reqId: number, r: Reply): void {
    out.reply(reqId, r.kind, r.body);
    scheduleFlush();
  }

  /** Peers are reached through the main thread, which batches per peer node (runtime/cluster.ts). */
  const ownReplica = replicaIdOf(init.nodeId, init.incarnation);
  const links = {
    voters: (group: number) => (init.founding === null ? [init.nodeId] : foundingVoters(group, init.founding)),
    mayHost: (replica: string) => init.founding !== null && replica.startsWith(`${ownReplica}.`),
    send(m: Message): void {
      out.bytes(0, RAFT_STATUS, encodeMessageBytes(m));
      scheduleFlush();
    },
    leaderChanged(group: number, leader: string, term: number, voters: readonly string[], hosted: boolean): void {
      out.reply(0, LEADER_STATUS, `${group}\n${leader}\n${term}\n${voters.join(',')}\n${hosted ? 1 : 0}`);
      scheduleFlush();
    },
    retainEntries: init.founding === null ? 0 : RETAIN_ENTRIES,
    flush,
  };

  /** Conversations the main thread streams: only their changes become events. */
  const interest = new Set<string>();
  /** Streamed conversations that got messages since the last head announcement → their newest seq. */
  const recentHeads = new Map<string, number>();
  /**
   * Per conversation, events waiting behind a context event whose window
   * read is still running, so that the conversation's events keep their order.
   */
  const held = new Map<string, HeldEvent[]>();
  function send(ev: StreamEvent, leading: boolean): void {
    // Heads of published conversations too: gateways without a replica stream them over NATS.
    if (ev.type === 'message' && (interest.has(ev.id) || (init.publishAllEvents && leading))) recentHeads.set(ev.id, ev.seq);
    out.event(ev, init.publishAllEvents && leading);
    scheduleFlush();
  }
  function sendHeld(id: string): void {
    const q = held.get(id)!;
    while (q.length > 0 && q[0].ev !== null) {
      const h = q.shift()!;
      send(h.ev!, h.leading);
    }
    if (q.length === 0) held.delete(id);
  }
  const events: EventSink = {
    has: (id: string, leading: boolean) => (init.publishAllEvents && leading) || interest.has(id),
    emit(ev: StreamEvent, leading: boolean): void {
      const q = held.get(ev.id);
      if (q !== undefined) q.push({ ev, leading });
      else send(ev, leading);
    },
    emitContext(store: PartitionStore, actors: ActorCache, group: number, actor: ActorEntry, leading: boolean): void {
      const rec = actor.conv.record!;
      const budget = rec.context!.token_budget;
      const event = (used: number) => contextEvent(rec.id, rec.version, used, needsCompaction(rec, budget));
      const whole = usedTokensOfWholeWindow(rec, actor.conv.compactions.replacement.length);
      if (whole !== null) return events.emit(event(whole), leading);
      const slot: HeldEvent = { ev: null, leading };
      const q = held.get(rec.id);
      if (q !== undefined) q.push(slot);
      else held.set(rec.id, [slot]);
      policyWindow(store, actors, group, actor, rec, budget)
        .then(
          (w) => w.usedTokens,
          (err: unknown) => {
            log('warn', 'context_event_window_failed', 'could not read the window for a context event; used_tokens is the window before the policy', {
              conversation_id: rec.id,
              version: rec.version,
              err: String(err),
            });
            return windowTokens(rec);
          },
        )
        .then((used) => {
          slot.ev = event(used);
          sendHeld(rec.id);
        });
    },
  };

  function flush(): void {
    flushScheduled = false;
    if (out.length === 0) return;
    const buf = out.take();
    port.postMessage({ type: 'replies', buf } satisfies WorkerEvent, [buf]);
  }

  const drivers = new Map<number, PartitionDriver>();
  const windowMemo = new WindowMemoCache(limits.windowMemoBytesMax);
  /** Where each partition's archive scan continues (round-robin over pending conversations). */
  const archiveCursors = new Map<PartitionDriver, { group: number; id: string } | null>();

  /**
   * skip_parts recounts a message that lost parts with the node's estimator,
   * which lives on the main thread (with its CPU pool): loading the vocabularies
   * in every worker would cost ~135 MB each. Requests of one turn go in one message.
   */
  const recounter = (() => {
    let nextId = 1;
    let queued: { texts: string[][]; resolve: (c: number[]) => void }[] = [];
    const waiting = new Map<number, { texts: string[][]; resolve: (c: number[]) => void }[]>();
    const send = () => {
      const batch = queued;
      queued = [];
      const id = nextId++;
      waiting.set(id, batch);
      port.postMessage({ type: 'count', id, texts: batch.flatMap((b) => b.texts) } satisfies WorkerEvent);
    };
    return {
      count(texts: string[][]): Promise<number[]> {
        return new Promise((resolve) => {
          if (queued.length === 0) setImmediate(send);
          queued.push({ texts, resolve });
        });
      },
      counted(id: number, counts: number[]): void {
        const batch = waiting.get(id);
        if (batch === undefined) return;
        waiting.delete(id);
        let at = 0;
        for (const b of batch) {
          b.resolve(counts.slice(at, at + b.texts.length));
          at += b.texts.length;
        }
      },
    };
  })();

  /**
   * Fault injection for the supervisor tests: FLEETLM_FAILPOINT=worker-crash-after:N
   * makes worker 0 throw an uncaught error at its Nth proposal.
   */
  const failpoint = (() => {
    const m = /^worker-crash-after:([0-9]+)$/.exec(process.env.FLEETLM_FAILPOINT ?? '');
    let left = m && init.workerIndex === 0 ? Number(m[1]) : -1;
    return {
      onPropose(): void {
        if (left < 0 || --left !== 0) return;
        setImmediate(() => {
          throw new Error('failpoint worker-crash-after reached');
        });
      },
    };
  })();

  function driverOf(group: number): PartitionDriver | undefined {
    return drivers.get(partitionOf(group, init.partitionCount));
  }

  /** This node leads the conversation's group. */
  function leadsConversation(id: string): boolean {
    const group = groupOf(id);
    return driverOf(group)?.leads(group) === true;
  }

  const ok = (body: string): Reply => ({ kind: ReplyKind.Ok, body });

  function readParams(f: RequestFrame): Record<string, unknown> {
    return JSON.parse(Buffer.from(f.payload).toString('utf8')) as Record<string, unknown>;
  }

  /** The record, 404 when absent (or, for /v1/contexts reads, not a context). */
  function mustExist(rec: ConversationRecord | null, id: string, asContext: boolean): ConversationRecord {
    if (rec === null || (asContext && rec.context === null)) throw notFound(`${asContext ? 'context' : 'conversation'} ${id}`);
    return rec;
  }

  function recordRead(id: string, asContext: boolean): ReadFn {
    return async (store, actors) => {
      const actor = actors.get(id);
      const rec = mustExist(actor !== undefined ? actor.conv.record : await store.readRecord(id), id, asContext);
      return ok(asContext ? contextJson(rec) : recordJson(rec));
    };
  }

  /** A conversation as reads see it: in memory when loaded, else its record on disk. */
  interface ReadView {
    rec: ConversationRecord;
    lastSeq: number;
    actor: ActorEntry | undefined;
  }

  async function readView(store: PartitionStore, actors: ActorCache, id: string, asContext: boolean): Promise<ReadView> {
    const actor = actors.get(id);
    const rec = mustExist(actor !== undefined ? actor.conv.record : await store.readRecord(id), id, asContext);
    return { rec, lastSeq: rec.last_seq, actor };
  }

  /**
   * The conversation in memory, loading it when needed. A load that overlapped
   * an eviction may have read state older than what was evicted (written after
   * the load read it), so it is retried rather than cached.
   */
  async function loadActor(store: PartitionStore, actors: ActorCache, group: number, id: string): Promise<ActorEntry> {
    for (;;) {
      const cached = actors.get(id);
      if (cached !== undefined) return cached;
      const epoch = actors.evictions;
      const conv = await store.loadConversation(group, id);
      const now = actors.get(id);
      if (now !== undefined) return now;
      if (actors.evictions === epoch) return actors.add(id, conv);
    }
  }

  /** GET /v1/contexts/:id/context: the window through the policy, served from the actor in memory. */
  function windowRead(group: number, id: string, budgetOverride: number | null, ifVersion: number): ReadFn {
    return async (store, actors) => {
      const actor = await loadActor(store, actors, group, id);
      const rec = mustExist(actor.conv.record, id, true);
      if (ifVersion >= 0 && ifVersion !== rec.version) throw conflict(ifVersion, rec.version);
      const budget = budgetOverride ?? rec.context!.token_budget;
      const replacement = actor.conv.compactions.replacement;
      const w = await policyWindow(store, actors, group, actor, rec, budget);
      // used_tokens early in the body: the gateway reads it for its metrics without parsing the rest.
      return ok(
        `{"version":${rec.version},"used_tokens":${w.usedTokens},"needs_compaction":${needsCompaction(rec, budget)},` +
          `"segments":${JSON.stringify(segments(rec, replacement.length))},"messages":[${w.texts.join(',')}]}`,
      );
    };
  }

  /**
   * The window of a context through its policy (actors/context.ts readWindow),
   * as of `rec`, the actor's current record: the window is fixed before the
   * first await, so later applies do not move it.
   */
  async function policyWindow(store: PartitionStore, actors: ActorCache, group: number, actor: ActorEntry, rec: ConversationRecord, budget: number): Promise<WindowResult> {
    const view: ReadView = { rec, lastSeq: rec.last_seq, actor };
    let lowest = rec.last_seq + 1;
    const w = await readWindow(
      {
        lastSeq: rec.last_seq,
        liveFrom: liveFrom(rec),
        replacement: actor.conv.compactions.replacement,
        messages: (lo, hi) => {
          lowest = Math.min(lowest, lo);
          return messagesBetween(store, actors, group, rec.id, view, lo, hi, true);
        },
      },
      rec.context!.policy,
      budget,
      windowMemo.view(rec.id, memoSignature(rec.context!.policy, rec)),
      recounter.count,
    );
    // The window's messages stay in memory across appends (within the cache's byte bound).
    actor.keepRecent = Math.min(WINDOW_KEEP_MAX, rec.last_seq + 1 - lowest);
    return w;
  }

  /**
   * Messages lo..hi (capped at last_seq): the newest from memory, which holds
   * everything not yet written, older ones from RocksDB — kept in memory
   * afterwards when `keep` (window reads: the next read wants them again).
   */
  async function messagesBetween(
    store: PartitionStore,
    actors: ActorCache,
    group: number,
    id: string,
    v: ReadView,
    lo: number,
    hi: number,
    keep = false,
  ): Promise<string[]> {
    const top = Math.min(hi, v.lastSeq);
    const mem = v.actor === undefined ? { from: top + 1, texts: [] } : actors.cached(v.actor, lo, top);
    if (mem.from <= lo) return mem.texts;
    const older = (await store.readMessages(group, id, lo, Math.min(top, mem.from - 1))).map((b) => b.toString('utf8'));
    if (keep && v.actor !== undefined && older.length === mem.from - lo) actors.prepend(v.actor, lo, older);
    return mem.texts.length === 0 ? older : older.concat(mem.texts);
  }

  /** Newest-first page `offset` of `limit` messages, returned oldest→newest. */
  function tailRead(group: number, id: string, asContext: boolean, limit: number, offset: number): ReadFn {
    return async (store, actors) => {
      const v = await readView(store, actors, id, asContext);
      const hi = v.lastSeq - offset;
      const lo = Math.max(1, hi - limit + 1);
      return hi < 1 ? ok(messagesBody([])) : pageOf(store, actors, group, id, v, lo, hi);
    };
  }

  /**
   * Messages lo..hi as a reply. Seqs the hot tier no longer has (archived and
   * trimmed) make it a Partial reply, `{"cold":[lo,coldHi],"hot":[…]}`: the
   * gateway reads those from the archive and merges.
   */
  async function pageOf(store: PartitionStore, actors: ActorCache, group: number, id: string, v: ReadView, lo: number, hi: number): Promise<Reply> {
    const coldHi = Math.min(hi, v.rec.trimmed_seq);
    if (lo > coldHi) return ok(messagesBody(await messagesBetween(store, actors, group, id, v, lo, hi)));
    const hot = coldHi < hi ? await messagesBetween(store, actors, group, id, v, coldHi + 1, hi) : [];
    return { kind: ReplyKind.Partial, body: `{"cold":[${lo},${coldHi}],"hot":[${hot.join(',')}]}` };
  }

  /**
   * A stored message as an archive row, [seq, role, parts JSON, metadata JSON,
   * token_count, inserted_at]: the JSON columns are encoded here, on the worker,
   * so the main thread only passes them through to Postgres.
   */
  function archiveRow(text: string): [number, string, string, string, number, string] {
    const m = JSON.parse(text) as { seq: number; role: string; parts: unknown; metadata: unknown; token_count: number; inserted_at: string };
    return [m.seq, m.role, JSON.stringify(m.parts), JSON.stringify(m.metadata), m.token_count, m.inserted_at];
  }

  /**
   * Up to `limit` messages the archive lacks, from conversations marked
   * pending, taken round-robin across calls so no conversation starves:
   * `{"pending_conversations":N,"batches":[{"record":{…},"rows":[archiveRow…]}]}`.
   */
  async function archiveBatch(limit: number): Promise<Reply> {
    const batches: string[] = [];
    let pendingConversations = 0;
    let left = limit;
    for (const d of drivers.values()) {
      pendingConversations += await d.store.countArchivePending();
      let after = archiveCursors.get(d) ?? null;
      let wrapped = false;
      const seen = new Set<string>();
      scan: while (left > 0) {
        const page = await d.store.archivePending(after, 64);
        if (page.length === 0) {
          if (wrapped || after === null) break;
          wrapped = true;
          after = null;
          continue;
        }
        for (const p of page) {
          if (left <= 0 || seen.has(p.id)) break scan; // full, or round the whole index once
          seen.add(p.id);
          after = p;
          // A follower's copy is archived by the group's leader.
          if (!d.leads(p.group)) continue;
          const v = await readView(d.store, d.actors, p.id, false);
          const from = v.rec.archived_seq + 1;
          const to = Math.min(v.lastSeq, from + left - 1);
          if (to < from) continue;
          const texts = await messagesBetween(d.store, d.actors, p.group, p.id, v, from, to);
          batches.push(`{"record":${storedRecordJson(v.rec)},"rows":${JSON.stringify(texts.map(archiveRow))}}`);
          left -= texts.length;
        }
      }
      archiveCursors.set(d, after);
    }
    return ok(`{"pending_conversations":${pendingConversations},"batches":[${batches.join(',')}]}`);
  }

  /**
   * Message events with seq > from (at most `limit`), after a first line saying
   * where the log ends: `{"last_seq","tombstoned"}\n<event>\n<event>…` (JSON
   * texts have no raw newline). Versions come from the compaction seqs.
   */
  function eventsRead(group: number, id: string, from: number, limit: number): ReadFn {
    return async (store, actors) => {
      const v = await readView(store, actors, id, false);
      const compactions =
        v.actor !== undefined ? v.actor.conv.compactions : v.rec.context?.compacted ? await store.readCompactions(id) : null;
      // Below the hot tier the log lives in the archive: the events start where the hot tier
      // does, and the gateway reads the part below from the archive (main.ts readEvents),
      // numbering its versions with the compaction seqs sent along.
      const trimmed = v.rec.trimmed_seq;
      const lo = Math.max(from + 1, trimmed + 1);
      const texts = limit > 0 && lo <= v.lastSeq ? await messagesBetween(store, actors, group, id, v, lo, from + limit) : [];
      const evs = texts.map((t, i) => {
        const seq = lo + i;
        return messageEvent(id, t, compactions === null ? seq : versionAt(seq, compactions)).json;
      });
      const cold = trimmed > from ? `,"trimmed_seq":${trimmed},"compaction_seqs":${JSON.stringify(compactions?.seqs ?? [])}` : '';
      return ok([`{"last_seq":${v.lastSeq},"tombstoned":${v.rec.tombstoned}${cold}}`, ...evs].join('\n'));
    };
  }

  /** Messages with seq > from, ascending. */
  function replayRead(group: number, id: string, asContext: boolean, from: number, limit: number): ReadFn {
    return async (store, actors) => {
      const v = await readView(store, actors, id, asContext);
      const hi = Math.min(v.lastSeq, from + limit);
      return hi <= from ? ok(messagesBody([])) : pageOf(store, actors, group, id, v, from + 1, hi);
    };
  }

  /** An encoded message from a peer; malformed or foreign ones are dropped (and counted by the caller's metrics). */
  function onRaft(f: RequestFrame): void {
    let m: Message;
    try {
      m = decodeMessage(f.payload);
    } catch (err) {
      log('warn', 'raft_message_dropped', 'malformed Raft message dropped', { err: String(err) });
      return;
    }
    driverOf(m.group)?.step(m);
  }

  function onRequest(f: RequestFrame): void {
    if (f.op === ReqOp.Raft) return onRaft(f);
    const d = driverOf(f.group);
    if (f.op === ReqOp.List) {
      const q = readParams(f) as unknown as ListQuery;
      let led: number[] = [];
      // Replies leave at apply: the scan waits for every acknowledged change to reach RocksDB.
      Promise.all([...drivers.values()].map((x) => x.stateWritten()))
        .then(() => {
          if (!q.led) return listRecords([...drivers.values()].map((x) => x.store), q);
          // The groups this node answers for, fixed before the scan: their
          // records and nothing else, so a group it names is listed whole.
          // A leader still applying earlier terms' entries names none of its
          // groups; the gatherer asks again until their leaders have.
          led = [...drivers.values()].flatMap((x) => [...x.groups.keys()].filter((g) => x.leadsCaughtUp(g)));
          const answering = new Set(led);
          return listRecords([...drivers.values()].map((x) => x.store), q, (rec) => answering.has(groupOf(rec.id)));
        })
        .then(
          (recs) => {
            const records = '[' + recs.map(recordJson).join(',') + ']';
            reply(f.reqId, ok(q.led ? `{"led":${JSON.stringify(led)},"records":${records}}` : records));
          },
          (err: unknown) => reply(f.reqId, errorReply(err)),
        );
      return;
    }
    if (f.op === ReqOp.ArchiveBatch) {
      archiveBatch(Number(readParams(f).limit)).then(
        (r) => reply(f.reqId, r),
        (err: unknown) => reply(f.reqId, errorReply(err)),
      );
      return;
    }
    if (d === undefined) {
      reply(f.reqId, errorReply(invalid('invalid_group', `group ${f.group} is not on worker ${init.workerIndex}`)));
      return;
    }
    switch (f.op) {
      case ReqOp.Propose: {
        failpoint.onPropose();
        // Copy: the request buffer is shared by the whole batch and the entry outlives it.
        d.propose(f.reqId, f.group, Uint8Array.prototype.slice.call(f.payload));
        return;
      }
      case ReqOp.ConfChange: {
        const p = readParams(f) as { from: string[]; voters: string[] };
        d.changeConf(f.reqId, f.group, p.from, p.voters);
        return;
      }
      case ReqOp.TransferLeader: {
        const p = readParams(f) as { to: string };
        d.transferLeader(f.reqId, f.group, String(p.to));
        return;
      }
      case ReqOp.GetRecord: {
        const p = readParams(f);
        d.read(f.reqId, f.group, recordRead(String(p.id), p.context === true));
        return;
      }
      case ReqOp.Tail: {
        const p = readParams(f);
        d.read(f.reqId, f.group, tailRead(f.group, String(p.id), p.context === true, Number(p.limit), Number(p.offset)));
        return;
      }
      case ReqOp.Replay: {
        const p = readParams(f);
        d.read(f.reqId, f.group, replayRead(f.group, String(p.id), p.context === true, Number(p.from), Number(p.limit)));
        return;
      }
      case ReqOp.Interest: {
        const p = readParams(f);
        if (p.on === true) interest.add(String(p.id));
        else interest.delete(String(p.id));
        reply(f.reqId, ok('{}'));
        return;
      }
      case ReqOp.Events: {
        const p = readParams(f);
        d.read(f.reqId, f.group, eventsRead(f.group, String(p.id), Number(p.from), Number(p.limit)));
        return;
      }
      case ReqOp.Window: {
        const p = readParams(f);
        const budget = p.budget === null ? null : Number(p.budget);
        d.read(f.reqId, f.group, windowRead(f.group, String(p.id), budget, Number(p.if_version)));
        return;
      }
      default:
        reply(f.reqId, errorReply(invalid('invalid_op', `unknown op ${f.op}`)));
    }
  }

  async function start(): Promise<void> {
    const seed = (Date.now() ^ (init.workerIndex << 16)) >>> 0;
    for (const p of init.partitions) {
      const dir = path.join(init.dataDir, `partition-${String(p).padStart(3, '0')}`);
      await fs.mkdir(dir, { recursive: true });
      const store = await PartitionStore.open(p, path.join(dir, 'state'));
      const share = (n: number) => Math.ceil(n / init.partitions.length);
      const d = new PartitionDriver(
        store,
        init.nodeId,
        systemClock,
        reply,
        mulberry32(seed + p),
        share(limits.actorsCachedMax),
        share(limits.messageCacheBytesMax),
        init.walSegmentBytes,
        (group, reason) => port.postMessage({ type: 'group_stopped', group, reason } satisfies WorkerEvent),
        events,
        links,
      );
      const replicas = new Map<number, string>();
      const founder = init.founding === null || isFoundingIncarnation(init.nodeId, init.incarnation, init.founding);
      const records = await store.loadReplicas();
      for (let g = 0; g < limits.groupCount; g++) {
        // A group with a record changed hands here since founding: the record says what is hosted.
        if (founder && !records.has(g) && partitionOf(g, init.partitionCount) === p && links.voters(g).includes(init.nodeId)) replicas.set(g, init.nodeId);
      }
      for (const [g, r] of records) if (r.replica !== null) replicas.set(g, r.replica);
      let damage = await d.open(replicas, records, path.join(dir, 'wal'));
      drivers.set(p, d);
      if (init.founding !== null) {
        // A replica must never serve or vote on state it lost: a cluster node reads everything once at open.
        damage ??= await store.scrub().then(
          () => null,
          (err: unknown) => `state store damaged: ${String(err)}`,
        );
        if (damage !== null) {
          for (const x of drivers.values()) await x.close().then(() => x.store.close());
          port.postMessage({ type: 'damaged', reason: `partition ${p}: ${damage}` } satisfies WorkerEvent);
          return;
        }
      }
    }
    const ticker = setInterval(() => {
      for (const d of drivers.values()) d.tick();
    }, TICK_MS);
    // Once a second the newest seq of each recently active streamed conversation
    // follows its events, so the gateway notices a lost final event within a second.
    const heads = setInterval(() => {
      for (const [id, seq] of recentHeads) events.emit(headEvent(id, seq), leadsConversation(id));
      recentHeads.clear();
      if (init.founding !== null) for (const d of drivers.values()) d.announceLeaders();
    }, HEADS_MS);
    // A cluster's groups elect once enough peers are up: the worker serves (and
    // forwards) as soon as its storage is open; /health/ready tracks leaders.
    const readyCheck = setInterval(() => {
      if (init.founding !== null || [...drivers.values()].every((d) => d.isReady())) {
        clearInterval(readyCheck);
        port.postMessage({ type: 'ready' } satisfies WorkerEvent);
      }
    }, 2);
    port.on('message', (m: MainCommand) => {
      if (m.type === 'requests') readRequests(m.buf, onRequest);
      else if (m.type === 'counted') recounter.counted(m.id, m.counts);
      else if (m.type === 'peers_down') {
        const down = new Set(m.nodes);
        for (const d of drivers.values()) d.peersDown(down);
      }
      else if (m.type === 'close') {
        clearInterval(ticker);
        clearInterval(heads);
        clearInterval(readyCheck);
        void close();
      }
    });
  }

  async function close(): Promise<void> {
    for (const d of drivers.values()) await d.close();
    flush();
    for (const d of drivers.values()) await d.store.close();
    port.postMessage({ type: 'closed' } satisfies WorkerEvent);
  }

  start().catch((err: unknown) => {
    log('error', 'worker_failed', 'worker failed to start', { worker: init.workerIndex, err: String(err) });
    port.postMessage({ type: 'fatal', message: err instanceof Error ? err.message : String(err) } satisfies WorkerEvent);
  });
}
