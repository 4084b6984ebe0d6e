// Stream endpoints on the uWS app (SPEC §5): Phoenix Channels at
// /socket/websocket, raw JSON WebSocket streams, and SSE. Each connection's
// streams are Subscribers of the StreamHub; live events reach them through
// uWS topic publish (one serialization per event per stream kind) or, for
// SSE, one write per response. A connection whose send buffer passes
// FLEETLM_STREAM_BUFFER_BYTES is closed as a slow consumer, so memory stays
// bounded; the client resumes from its last seq.
import type * as UWS from 'uWebSockets.js';
import type { GatewayContext } from '../context.js';
import type { StreamHub, Subscriber } from './hub.js';
import { KIND_LABEL, Kind, PHOENIX_TOPIC_PREFIX, phoenixTopic, serialize, topicName, wants } from './formats.js';
import type { StreamEvent } from '../../actors/events.js';
import { AppError, invalid } from '../../actors/errors.js';
import { checkId } from '../../actors/commands.js';
import { nonNegativeInt } from '../../actors/validate.js';
import { parseIntStrict, type HttpResponse } from '../http.js';
import { toHttp } from '../http-errors.js';
import { bearerToken, tokenAccepted } from '../router.js';
import { writeResponse } from '../server.js';
import { groupOf } from '../../runtime/placement.js';
import { ReqOp } from '../../runtime/wire.js';
import { metrics } from '../metrics.js';

/**
 * Raw streams and SSE get a ping every pingMs (SPEC §5: 30 s); a raw stream
 * silent for 3 pings (90 s) is closed. Phoenix clients heartbeat every 30 s
 * on their own; one silent for 2 pings (60 s) is gone.
 */
const PONG_TIMEOUT_PINGS = 3;
const PHOENIX_IDLE_PINGS = 2;
/** How often send buffers and idle timers are checked. */
const SWEEP_MS = 100;
/** Inbound frames per connection per second before it is closed as a flood. */
const INBOUND_PER_SECOND_MAX = 200;
const INBOUND_BYTES_MAX = 64 * 1024;
/** A replaying subscriber that does not drain its buffer within this is a slow consumer. */
const DRAIN_TIMEOUT_MS = 10_000;
const AUTH_PROTOCOL_PREFIX = 'base64url.bearer.phx.';

/** Close codes a client can act on. */
const CLOSE = {
  slowConsumer: 4008,
  pongTimeout: 4001,
  flood: 4029,
  malformed: 4400,
  unsupported: 1003,
  tombstoned: 1000,
  shutdown: 1001,
} as const;

export interface StreamOptions {
  maxConnections: number;
  bufferBytes: number;
  pingMs: number;
  hub: () => StreamHub | null;
}

interface Conn {
  kind: 'phoenix' | 'raw';
  /** Phoenix serializer version. */
  vsn: 1 | 2;
  ws: UWS.WebSocket<Conn> | null;
  closed: boolean;
  /** Phoenix: topic → stream; raw: one entry. */
  subs: Map<string, WsSub>;
  /** Phoenix joins waiting for their existence check (created on the first join: idle sockets stay small). */
  joining: Set<string> | null;
  lastHeardMs: number;
  inboundWindowMs: number;
  inboundCount: number;
  /** Replays waiting for the send buffer to drain (created when one waits). */
  drainWaiters: (() => void)[] | null;
  /** Raw streams: set at upgrade. */
  raw: { id: string; kind: Kind; cursor: number | null } | null;
}

/** Live subscribers per conversation: per-kind counts decide what to publish; SSE and tombstones need the set. */
interface LiveSet {
  counts: number[];
  subs: Set<WsSub | SseSub>;
}

export class Streams {
  private readonly conns = new Set<Conn>();
  private readonly sse = new Set<SseSub>();
  private readonly live = new Map<string, LiveSet>();
  private readonly sweeper: NodeJS.Timeout;
  private lastPingMs = Date.now();

  constructor(
    private readonly app: UWS.TemplatedApp,
    private readonly ctx: GatewayContext,
    private readonly opts: StreamOptions,
  ) {
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /** Upgrades and SSE requests past the limit check, still awaiting their existence check. */
  private reserved = 0;

  get connections(): number {
    return this.conns.size + this.sse.size + this.reserved;
  }

  // ------------------------------------------------------------- hub side

  /** HubDeps.broadcast: one serialization per stream kind with live subscribers. */
  broadcast(id: string, ev: StreamEvent): void {
    const l = this.live.get(id);
    if (l === undefined) return;
    for (const kind of [Kind.Phoenix2, Kind.Phoenix1, Kind.Raw, Kind.RawNoMessages]) {
      const n = l.counts[kind];
      if (n === 0 || !wants(kind, ev)) continue;
      this.app.publish(topicName(kind, id), serialize(kind, ev));
      metrics.streamDeliveries.labels(KIND_LABEL[kind]).inc(n);
    }
    // A few large events can fill a stalled socket between two sweeps: check now.
    if (ev.json.length * 16 >= this.opts.bufferBytes) for (const s of l.subs) if (s instanceof WsSub) s.checkBuffer();
    if (l.counts[Kind.Sse] > 0) {
      const text = serialize(Kind.Sse, ev);
      for (const s of l.subs) if (s instanceof SseSub) s.write(text);
      metrics.streamDeliveries.labels('sse').inc(l.counts[Kind.Sse]);
    }
    if (ev.type === 'message') observeLag(ev);
    // Raw streams and SSE end with the conversation.
    if (ev.type === 'tombstone') for (const s of [...l.subs]) if (s.kind !== Kind.Phoenix1 && s.kind !== Kind.Phoenix2) s.endAfterTombstone();
  }

  setLive(sub: WsSub | SseSub, on: boolean): void {
    let l = this.live.get(sub.id);
    if (on) {
      if (l === undefined) this.live.set(sub.id, (l = { counts: [0, 0, 0, 0, 0], subs: new Set() }));
      if (l.subs.has(sub)) return;
      l.subs.add(sub);
      l.counts[sub.kind]++;
      return;
    }
    if (l === undefined || !l.subs.delete(sub)) return;
    l.counts[sub.kind]--;
    if (l.subs.size === 0) this.live.delete(sub.id);
  }

  /** Closes every stream (shutdown). */
  closeAll(): void {
    clearInterval(this.sweeper);
    for (const c of [...this.conns]) this.endConn(c, CLOSE.shutdown, 'node is shutting down');
    for (const s of [...this.sse]) s.close();
  }

  // ------------------------------------------------------------- routes

  register(uws: typeof UWS): void {
    const behavior = (kind: 'phoenix' | 'raw'): UWS.WebSocketBehavior<Conn> => ({
      maxPayloadLength: INBOUND_BYTES_MAX,
      // Our own sweep closes slow consumers with a reason at bufferBytes; this
      // hard cap (never silently skipping a message: the socket closes) only
      // bounds what one event loop turn can add.
      maxBackpressure: this.opts.bufferBytes * 4,
      closeOnBackpressureLimit: 1,
      idleTimeout: 0,
      compression: uws.DISABLED,
      upgrade: (res, req, context) => void this.upgrade(kind, res, req, context),
      open: (ws) => this.onOpen(ws),
      message: (ws, message, isBinary) => this.onMessage(ws, message, isBinary),
      drain: (ws) => this.onDrain(ws.getUserData()),
      close: (ws) => this.onClose(ws.getUserData()),
    });
    this.app.ws('/socket/websocket', behavior('phoenix'));
    this.app.ws('/v1/conversations/:id/stream', behavior('raw'));
    this.app.ws('/v1/contexts/:id/stream', behavior('raw'));
    this.app.get('/v1/conversations/:id/events', (res, req) => void this.sseRequest(res, req));
  }

  private refuse(res: UWS.HttpResponse, state: { aborted: boolean }, r: HttpResponse): void {
    if (state.aborted) return;
    state.aborted = true;
    writeResponse(res, r);
  }

  /** Holds a place under the connection limit until `release` (so concurrent upgrades cannot overshoot it). */
  private reserve(): () => void {
    if (this.connections >= this.opts.maxConnections) {
      throw new AppError('unavailable', `stream connection limit (${this.opts.maxConnections}) reached; retry later`);
    }
    this.reserved++;
    let held = true;
    return () => {
      if (held) this.reserved--;
      held = false;
    };
  }

  /** SPEC §5 auth: bearer header, `token` query parameter, or Phoenix's protocol-header token. */
  private checkAuth(authorization: string, query: URLSearchParams, protocols: string): void {
    if (this.ctx.config.apiKey === null) return;
    const fromProtocol = protocols
      .split(',')
      .map((p) => p.trim())
      .find((p) => p.startsWith(AUTH_PROTOCOL_PREFIX));
    const candidates = [bearerToken(authorization), query.get('token') ?? ''];
    if (fromProtocol) candidates.push(Buffer.from(fromProtocol.slice(AUTH_PROTOCOL_PREFIX.length), 'base64url').toString());
    if (!candidates.some((t) => t !== '' && tokenAccepted(this.ctx, t))) {
      throw new AppError('unauthorized', 'missing or invalid bearer token');
    }
  }

  /** The conversation must exist (and be a context on /v1/contexts): 404 otherwise. */
  private async checkExists(id: string, asContext: boolean): Promise<void> {
    const r = await this.ctx.send(ReqOp.GetRecord, groupOf(id), Buffer.from(JSON.stringify({ id, context: asContext })));
    if (r.status !== 200) throw httpError(r);
  }

  private async upgrade(kind: 'phoenix' | 'raw', res: UWS.HttpResponse, req: UWS.HttpRequest, context: UWS.us_socket_context_t): Promise<void> {
    const state = { aborted: false };
    res.onAborted(() => (state.aborted = true));
    const url = req.getUrl();
    const query = new URLSearchParams(req.getQuery() ?? '');
    const key = req.getHeader('sec-websocket-key');
    const protocols = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const authorization = req.getHeader('authorization');
    const rawId = kind === 'raw' ? req.getParameter(0) ?? '' : '';
    let release = () => {};
    try {
      if (this.opts.hub() === null) throw new AppError('unavailable', 'node is starting');
      this.checkAuth(authorization, query, protocols);
      release = this.reserve();
      const conn: Conn = {
        kind,
        vsn: 2,
        ws: null,
        closed: false,
        subs: new Map(),
        joining: null,
        lastHeardMs: Date.now(),
        inboundWindowMs: 0,
        inboundCount: 0,
        drainWaiters: null,
        raw: null,
      };
      let protocol = '';
      if (kind === 'phoenix') {
        const vsn = query.get('vsn') ?? '2.0.0';
        if (vsn !== '2.0.0' && vsn !== '1.0.0') throw invalid('invalid_vsn', 'vsn must be 2.0.0 or 1.0.0');
        conn.vsn = vsn === '2.0.0' ? 2 : 1;
        // A client that offers subprotocols (Phoenix's auth token) needs one chosen.
        if (protocols.split(',').some((p) => p.trim() === 'phoenix')) protocol = 'phoenix';
      } else {
        const id = checkId(decodeURIComponent(rawId));
        const asContext = url.startsWith('/v1/contexts/');
        const cursorRaw = query.get('cursor');
        const cursor = cursorRaw === null ? null : parseIntStrict(cursorRaw, 'cursor', 0);
        const include = query.get('include_messages') ?? 'true';
        if (include !== 'true' && include !== 'false') throw invalid('invalid_include_messages', 'include_messages must be true or false');
        await this.checkExists(id, asContext);
        conn.raw = { id, kind: include === 'false' ? Kind.RawNoMessages : Kind.Raw, cursor };
      }
      if (state.aborted) return;
      state.aborted = true;
      res.cork(() => res.upgrade(conn, key, protocol, extensions, context));
    } catch (err) {
      this.refuse(res, state, err instanceof URIError ? toHttp(invalid('invalid_id', 'id is not valid percent-encoding')) : toHttp(err));
    } finally {
      release();
    }
  }

  private onOpen(ws: UWS.WebSocket<Conn>): void {
    const conn = ws.getUserData();
    conn.ws = ws;
    this.conns.add(conn);
    metrics.streamConnections.labels(conn.kind).inc();
    if (conn.raw !== null) {
      const sub = new WsSub(conn.raw.id, conn, conn.raw.kind, this, '');
      conn.subs.set(conn.raw.id, sub);
      void this.opts.hub()!.join(sub, conn.raw.cursor);
    }
  }

  private onClose(conn: Conn): void {
    conn.closed = true;
    conn.ws = null;
    if (!this.conns.delete(conn)) return;
    metrics.streamConnections.labels(conn.kind).dec();
    for (const sub of conn.subs.values()) this.dropSub(sub);
    conn.subs.clear();
    const waiters = conn.drainWaiters;
    conn.drainWaiters = null;
    for (const w of waiters ?? []) w();
  }

  dropSub(sub: WsSub | SseSub): void {
    sub.closed = true;
    this.setLive(sub, false);
    this.opts.hub()?.leave(sub);
  }

  private onDrain(conn: Conn): void {
    if (conn.ws === null || conn.ws.getBufferedAmount() > this.opts.bufferBytes / 2) return;
    const waiters = conn.drainWaiters;
    conn.drainWaiters = null;
    for (const w of waiters ?? []) w();
  }

  endConn(conn: Conn, code: number, reason: string): void {
    if (conn.closed || conn.ws === null) return;
    const ws = conn.ws;
    conn.closed = true;
    ws.end(code, reason);
  }

  slow(conn: Conn): void {
    metrics.streamDrops.labels('slow_consumer').inc();
    this.endConn(conn, CLOSE.slowConsumer, `slow consumer: more than ${this.opts.bufferBytes} bytes unsent`);
  }

  /** Sweep: slow consumers, raw pings and pong timeouts, silent Phoenix clients. */
  private sweep(): void {
    const now = Date.now();
    const { pingMs } = this.opts;
    const ping = now - this.lastPingMs >= pingMs;
    if (ping) this.lastPingMs = now;
    for (const c of this.conns) {
      if (c.closed || c.ws === null) continue;
      if (c.ws.getBufferedAmount() > this.opts.bufferBytes) {
        this.slow(c);
        continue;
      }
      if (c.kind === 'raw') {
        if (now - c.lastHeardMs > PONG_TIMEOUT_PINGS * pingMs) {
          metrics.streamDrops.labels('pong_timeout').inc();
          this.endConn(c, CLOSE.pongTimeout, `no pong for ${(PONG_TIMEOUT_PINGS * pingMs) / 1000} s`);
        } else if (ping) c.ws.send('{"type":"ping"}');
      } else if (now - c.lastHeardMs > PHOENIX_IDLE_PINGS * pingMs) {
        metrics.streamDrops.labels('heartbeat_timeout').inc();
        this.endConn(c, CLOSE.pongTimeout, `no heartbeat for ${(PHOENIX_IDLE_PINGS * pingMs) / 1000} s`);
      }
    }
    if (ping) for (const s of this.sse) s.write(': ping\n\n');
  }

  // ------------------------------------------------------------- inbound

  private onMessage(ws: UWS.WebSocket<Conn>, message: ArrayBuffer, isBinary: boolean): void {
    const conn = ws.getUserData();
    if (conn.closed) return;
    const now = Date.now();
    conn.lastHeardMs = now;
    if (now - conn.inboundWindowMs >= 1000) {
      conn.inboundWindowMs = now;
      conn.inboundCount = 0;
    }
    if (++conn.inboundCount > INBOUND_PER_SECOND_MAX) {
      metrics.streamDrops.labels('flood').inc();
      return this.endConn(conn, CLOSE.flood, `more than ${INBOUND_PER_SECOND_MAX} messages a second`);
    }
    if (isBinary) {
      metrics.streamDrops.labels('malformed').inc();
      return this.endConn(conn, CLOSE.unsupported, 'binary frames are not supported');
    }
    const text = Buffer.from(message).toString('utf8');
    if (conn.kind === 'raw') return this.onRawMessage(conn, text);
    const msg = parsePhoenix(text, conn.vsn);
    if (msg === null) {
      metrics.streamDrops.labels('malformed').inc();
      return this.endConn(conn, CLOSE.malformed, 'malformed Phoenix message');
    }
    this.onPhoenixMessage(conn, msg);
  }

  private onRawMessage(conn: Conn, text: string): void {
    let type: unknown;
    try {
      type = (JSON.parse(text) as { type?: unknown } | null)?.type;
    } catch {
      type = undefined;
    }
    if (type === 'pong') return;
    if (type === 'ping') return void conn.ws?.send('{"type":"pong"}');
    conn.ws?.send('{"type":"error","reason":"expected {\\"type\\":\\"pong\\"} or {\\"type\\":\\"ping\\"}"}');
  }

  private onPhoenixMessage(conn: Conn, m: PhoenixMessage): void {
    const reply = (status: 'ok' | 'error', response: Record<string, unknown>) =>
      this.phoenixSend(conn, m.joinRef, m.ref, m.topic, 'phx_reply', JSON.stringify({ status, response }));
    if (m.topic === 'phoenix') {
      if (m.event === 'heartbeat') return reply('ok', {});
      return reply('error', { reason: 'unknown event' });
    }
    if (m.event === 'phx_join') return void this.phoenixJoin(conn, m, reply);
    const sub = conn.subs.get(m.topic);
    if (m.event === 'phx_leave') {
      conn.joining?.delete(m.topic);
      if (sub !== undefined) {
        conn.subs.delete(m.topic);
        this.dropSub(sub);
      }
      return reply('ok', {});
    }
    if (sub === undefined) return reply('error', { reason: 'unmatched topic' });
    reply('error', { reason: 'unknown event' });
  }

  private async phoenixJoin(conn: Conn, m: PhoenixMessage, reply: (status: 'ok' | 'error', response: Record<string, unknown>) => void): Promise<void> {
    if (!m.topic.startsWith(PHOENIX_TOPIC_PREFIX)) return reply('error', { reason: 'unmatched topic' });
    let id: string;
    try {
      id = checkId(m.topic.slice(PHOENIX_TOPIC_PREFIX.length));
    } catch {
      return reply('error', { reason: 'invalid topic: conversation ids are 1-128 chars of [A-Za-z0-9_:-]' });
    }
    const lastSeq = (m.payload as { last_seq?: unknown } | null)?.last_seq;
    if (lastSeq !== undefined && lastSeq !== null && !nonNegativeInt(lastSeq)) {
      return reply('error', { reason: 'last_seq must be a non-negative integer' });
    }
    // Joining a topic again replaces the old join (as Phoenix does).
    const old = conn.subs.get(m.topic);
    if (old !== undefined) {
      conn.subs.delete(m.topic);
      this.dropSub(old);
      this.phoenixSend(conn, old.joinRef, old.joinRef, m.topic, 'phx_close', '{}');
    }
    (conn.joining ??= new Set()).add(m.topic);
    try {
      await this.checkExists(id, false);
    } catch (err) {
      conn.joining.delete(m.topic);
      const r = toHttp(err);
      return reply('error', { reason: r.status === 404 ? 'not found' : errorMessage(r) });
    }
    if (conn.closed || !conn.joining.delete(m.topic)) return;
    reply('ok', {});
    const sub = new WsSub(id, conn, conn.vsn === 2 ? Kind.Phoenix2 : Kind.Phoenix1, this, m.joinRef ?? '');
    conn.subs.set(m.topic, sub);
    void this.opts.hub()?.join(sub, (lastSeq as number | null | undefined) ?? null);
  }

  phoenixSend(conn: Conn, joinRef: string | null, ref: string | null, topic: string, event: string, payload: string): void {
    if (conn.closed || conn.ws === null) return;
    const j = JSON.stringify(joinRef);
    const r = JSON.stringify(ref);
    const t = JSON.stringify(topic);
    conn.ws.send(
      conn.vsn === 2
        ? `[${j},${r},${t},"${event}",${payload}]`
        : `{"topic":${t},"event":"${event}","payload":${payload},"ref":${r},"join_ref":${j}}`,
    );
  }

  // ------------------------------------------------------------- SSE

  private async sseRequest(res: UWS.HttpResponse, req: UWS.HttpRequest): Promise<void> {
    const state = { aborted: false };
    const sub = new SseSub(res, this);
    res.onAborted(() => {
      state.aborted = true;
      sub.onAborted();
    });
    const query = new URLSearchParams(req.getQuery() ?? '');
    const lastEventId = req.getHeader('last-event-id');
    const authorization = req.getHeader('authorization');
    const rawId = req.getParameter(0) ?? '';
    let release = () => {};
    try {
      if (this.opts.hub() === null) throw new AppError('unavailable', 'node is starting');
      this.checkAuth(authorization, query, '');
      release = this.reserve();
      const id = checkId(decodeURIComponent(rawId));
      const cursorRaw = lastEventId !== '' ? lastEventId : query.get('cursor');
      const cursor = cursorRaw === null ? null : parseIntStrict(cursorRaw, lastEventId !== '' ? 'last_event_id' : 'cursor', 0);
      await this.checkExists(id, false);
      if (state.aborted) return;
      state.aborted = true; // from here on the stream owns `res`
      sub.open(id);
      this.sse.add(sub);
      metrics.streamConnections.labels('sse').inc();
      void this.opts.hub()!.join(sub, cursor);
    } catch (err) {
      this.refuse(res, state, err instanceof URIError ? toHttp(invalid('invalid_id', 'id is not valid percent-encoding')) : toHttp(err));
    } finally {
      release();
    }
  }

  sseClosed(sub: SseSub): void {
    if (!this.sse.delete(sub)) return;
    metrics.streamConnections.labels('sse').dec();
    this.dropSub(sub);
  }

  get bufferBytes(): number {
    return this.opts.bufferBytes;
  }
}

/** One stream of one WebSocket: a Phoenix channel join or a raw stream. */
class WsSub implements Subscriber {
  position = 0;
  closed = false;

  constructor(
    readonly id: string,
    private readonly conn: Conn,
    readonly kind: Kind,
    private readonly streams: Streams,
    /** Phoenix join_ref of this join. */
    readonly joinRef: string,
  ) {}

  send(ev: StreamEvent): boolean {
    const ws = this.conn.ws;
    if (this.closed || this.conn.closed || ws === null) return false;
    if (!wants(this.kind, ev)) return true;
    ws.send(serialize(this.kind, ev));
    metrics.streamDeliveries.labels(KIND_LABEL[this.kind]).inc();
    if (ev.type === 'tombstone') this.endAfterTombstone();
    return true;
  }

  backlogged(): boolean {
    const ws = this.conn.ws;
    return ws !== null && !this.conn.closed && ws.getBufferedAmount() > this.streams.bufferBytes / 2;
  }

  checkBuffer(): void {
    const ws = this.conn.ws;
    if (!this.conn.closed && ws !== null && ws.getBufferedAmount() > this.streams.bufferBytes) this.streams.slow(this.conn);
  }

  drained(): Promise<void> {
    if (!this.backlogged()) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.streams.slow(this.conn);
        resolve();
      }, DRAIN_TIMEOUT_MS);
      (this.conn.drainWaiters ??= []).push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  goLive(): void {
    if (this.closed || this.conn.closed || this.conn.ws === null) return;
    this.conn.ws.subscribe(topicName(this.kind, this.id));
    this.streams.setLive(this, true);
  }

  /** Raw streams end after a tombstone; Phoenix channels stay joined. */
  endAfterTombstone(): void {
    if (this.kind === Kind.Raw || this.kind === Kind.RawNoMessages) this.streams.endConn(this.conn, CLOSE.tombstoned, 'tombstoned');
  }

  end(reason: string): void {
    if (this.kind === Kind.Phoenix1 || this.kind === Kind.Phoenix2) {
      // The channel errors; the Phoenix client rejoins with its params.
      const topic = phoenixTopic(this.id);
      this.streams.phoenixSend(this.conn, this.joinRef, this.joinRef, topic, 'phx_error', JSON.stringify({ reason }));
      this.conn.subs.delete(topic);
      this.streams.dropSub(this);
      return;
    }
    this.streams.endConn(this.conn, 1011, reason);
  }
}

/** One SSE response. */
class SseSub implements Subscriber {
  readonly kind = Kind.Sse;
  id = '';
  position = 0;
  closed = false;
  /** Bytes written while the response was backpressured. */
  private backlog = 0;
  private waiters: (() => void)[] = [];

  constructor(
    private readonly res: UWS.HttpResponse,
    private readonly streams: Streams,
  ) {}

  open(id: string): void {
    this.id = id;
    this.res.cork(() => {
      this.res.writeStatus('200 OK');
      this.res.writeHeader('content-type', 'text/event-stream');
      this.res.writeHeader('cache-control', 'no-cache');
      this.res.write(': stream open\n\n');
    });
  }

  onAborted(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w();
    this.streams.sseClosed(this);
  }

  write(text: string): boolean {
    if (this.closed) return false;
    let ok = false;
    this.res.cork(() => (ok = this.res.write(text)));
    if (ok) return true;
    if (this.backlog === 0) {
      this.res.onWritable(() => {
        this.backlog = 0;
        for (const w of this.waiters.splice(0)) w();
        return true;
      });
    }
    this.backlog += text.length;
    if (this.backlog > this.streams.bufferBytes) {
      metrics.streamDrops.labels('slow_consumer').inc();
      this.close();
      return false;
    }
    return true;
  }

  send(ev: StreamEvent): boolean {
    if (!this.write(serialize(Kind.Sse, ev))) return false;
    metrics.streamDeliveries.labels('sse').inc();
    if (ev.type === 'tombstone') this.endAfterTombstone();
    return true;
  }

  backlogged(): boolean {
    return !this.closed && this.backlog > this.streams.bufferBytes / 2;
  }

  drained(): Promise<void> {
    if (!this.backlogged()) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        metrics.streamDrops.labels('slow_consumer').inc();
        this.close();
        resolve();
      }, DRAIN_TIMEOUT_MS);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  goLive(): void {
    if (!this.closed) this.streams.setLive(this, true);
  }

  endAfterTombstone(): void {
    this.close();
  }

  end(): void {
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.res.cork(() => this.res.end());
    this.streams.sseClosed(this);
  }
}

interface PhoenixMessage {
  joinRef: string | null;
  ref: string | null;
  topic: string;
  event: string;
  payload: unknown;
}

const refOf = (v: unknown): string | null | undefined => (v === null || v === undefined ? null : typeof v === 'string' ? v : undefined);

/** Both serializers; null for anything that is not a well-formed Phoenix message. */
function parsePhoenix(text: string, vsn: 1 | 2): PhoenixMessage | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  let fields: unknown[];
  if (vsn === 2) {
    if (!Array.isArray(v) || v.length !== 5) return null;
    fields = v;
  } else {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
    const o = v as Record<string, unknown>;
    fields = [o.join_ref, o.ref, o.topic, o.event, o.payload];
  }
  const [joinRef, ref, topic, event, payload] = fields;
  const j = refOf(joinRef);
  const r = refOf(ref);
  if (j === undefined || r === undefined || typeof topic !== 'string' || typeof event !== 'string') return null;
  if (typeof payload !== 'object' || payload === null) return null;
  return { joinRef: j, ref: r, topic, event, payload };
}

function httpError(r: HttpResponse): AppError {
  const body = JSON.parse(Buffer.from(r.body as Uint8Array).toString('utf8')) as { error: string; message: string };
  const code = r.status === 404 ? 'not_found' : r.status === 400 ? 'invalid' : r.status === 401 ? 'unauthorized' : 'unavailable';
  return new AppError(code, body.message, code === 'invalid' ? body.error : undefined);
}

function errorMessage(r: HttpResponse): string {
  try {
    return (JSON.parse(typeof r.body === 'string' ? r.body : Buffer.from(r.body).toString('utf8')) as { message: string }).message;
  } catch {
    return 'unavailable';
  }
}

/** Append → publish delay of a message event, from its inserted_at. */
function observeLag(ev: StreamEvent): void {
  const at = ev.json.lastIndexOf('"inserted_at":"');
  if (at < 0) return;
  const ms = Date.now() - Date.parse(ev.json.slice(at + 15, at + 39));
  if (ms >= 0) metrics.streamLag.observe(ms);
}
