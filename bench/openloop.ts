// Constant-rate (open-loop) load generator, wrk2-style, run as its own process
// by bench/append.ts (Debian has no wrk2).
//
// Request i is *scheduled* at t0 + i/rate regardless of how fast responses come
// back, and its latency is measured from that scheduled time to the end of its
// response, so a stalled server is charged for every request it delayed (no
// coordinated omission). Requests go over N keep-alive raw `net` connections as
// HTTP/1.1, RESP (Redis XADD) or the PostgreSQL extended query protocol (one
// prepared statement; Bind/Execute/Sync per append), to the connection with
// the fewest outstanding requests. By default a connection carries one request
// at a time (--pipeline=1: uWebSockets.js closes connections that pipeline
// requests whose responses are async); a due request that finds every
// connection busy waits in a queue, still timed from its scheduled time. The
// send loop is woken every 250 µs by a helper thread (Node's own timers have
// 1 ms granularity, like wrk2's).
//
// Usage:
//   node dist/bench/openloop.js --port=P [--host=127.0.0.1] [--proto=http|resp|pg]
//     [--rate=10000] [--duration=20] [--warmup=0] [--connections=64]
//     [--conversations=1000] [--prefix=bench-] [--text=...] [--drain=10]
//     [--tick-us=250]   (send-loop wake-up period; 0 = plain 1 ms Node timers)
//     [--pipeline=1]    (max outstanding requests per connection)
// Prints one JSON object on stdout.
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { DEFAULT_TEXT, appendBody, partsJson } from './lib.js';

type Proto = 'http' | 'resp' | 'pg';

interface Args {
  host: string;
  port: number;
  proto: Proto;
  pgUser: string;
  pgDatabase: string;
  rate: number;
  duration: number;
  warmup: number;
  connections: number;
  conversations: number;
  prefix: string;
  text: string;
  drain: number;
  maxInFlight: number;
  /** max requests outstanding per connection (1 = no pipelining) */
  pipeline: number;
  tickUs: number;
}

function parseArgs(argv: string[]): Args {
  const kv = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`bad argument ${a}`);
    kv.set(m[1], m[2] ?? 'true');
  }
  const num = (k: string, d: number) => (kv.has(k) ? Number(kv.get(k)) : d);
  const proto = (kv.get('proto') ?? 'http') as Args['proto'];
  if (proto !== 'http' && proto !== 'resp' && proto !== 'pg') throw new Error('--proto must be http, resp or pg');
  const port = num('port', 0);
  if (!port) throw new Error('--port is required');
  return {
    host: kv.get('host') ?? '127.0.0.1',
    port,
    proto,
    pgUser: kv.get('pg-user') ?? 'postgres',
    pgDatabase: kv.get('pg-database') ?? 'postgres',
    rate: num('rate', 10_000),
    duration: num('duration', 20),
    warmup: num('warmup', 0),
    connections: num('connections', 64),
    conversations: num('conversations', 1000),
    prefix: kv.get('prefix') ?? 'bench-',
    text: kv.get('text') ?? DEFAULT_TEXT,
    drain: num('drain', 10),
    maxInFlight: num('max-in-flight', 100_000),
    pipeline: Math.max(1, num('pipeline', 1)),
    tickUs: num('tick-us', 250),
  };
}

function buildRequests(a: Args): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < a.conversations; i++) {
    if (a.proto === 'http') {
      const body = appendBody(a.text);
      const head =
        `POST /v1/conversations/${a.prefix}${i}/messages HTTP/1.1\r\n` +
        `Host: ${a.host}:${a.port}\r\n` +
        `Content-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
      out.push(Buffer.from(head + body));
    } else if (a.proto === 'pg') {
      out.push(Buffer.concat([
        pgMsg('B', cstr(''), cstr('append'), int16(0), int16(2), pgParam(`${a.prefix}${i}`), pgParam(partsJson(a.text)), int16(0)),
        pgMsg('E', cstr(''), int32(0)),
        pgMsg('S'),
      ]));
    } else {
      // Same keys as redis-benchmark's conv:__rand_int__ (12-digit zero pad).
      const args = ['XADD', `conv:${String(i).padStart(12, '0')}`, '*', 'role', 'user', 'parts', partsJson(a.text)];
      let s = `*${args.length}\r\n`;
      for (const x of args) s += `$${Buffer.byteLength(x)}\r\n${x}\r\n`;
      out.push(Buffer.from(s));
    }
  }
  return out;
}

// ---- PostgreSQL wire protocol (v3) helpers
export const PG_APPEND_SQL =
  'WITH s AS (UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING id, last_seq) ' +
  "INSERT INTO messages (conversation_id, seq, role, parts) SELECT id, last_seq, 'user', $2::jsonb FROM s";
const cstr = (s: string) => Buffer.from(s + '\0');
const int16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const pgParam = (s: string) => Buffer.concat([int32(Buffer.byteLength(s)), Buffer.from(s)]);
function pgMsg(type: string, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from(type), int32(body.length + 4), body]);
}

/** Startup (trust auth), then prepare the append statement. Resolves when ready for queries. */
function pgHandshake(sock: net.Socket, a: Args): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let stage = 0; // 0: startup, 1: prepare
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 5) {
        const type = String.fromCharCode(buf[0]);
        const len = buf.readInt32BE(1);
        if (buf.length < 1 + len) return;
        const payload = buf.subarray(5, 1 + len);
        buf = buf.subarray(1 + len);
        if (type === 'E') {
          sock.off('data', onData);
          return reject(new Error(`postgres: ${payload.toString('utf8').replace(/\0/g, ' ').trim()}`));
        }
        if (type === 'R' && payload.readInt32BE(0) !== 0) {
          sock.off('data', onData);
          return reject(new Error(`postgres asks for authentication method ${payload.readInt32BE(0)}; use trust`));
        }
        if (type === 'Z') {
          if (stage === 0) {
            stage = 1;
            sock.write(Buffer.concat([pgMsg('P', cstr('append'), cstr(PG_APPEND_SQL), int16(2), int32(25), int32(25)), pgMsg('S')]));
          } else {
            sock.off('data', onData);
            return resolve();
          }
        }
      }
    };
    sock.on('data', onData);
    const params = Buffer.concat([cstr('user'), cstr(a.pgUser), cstr('database'), cstr(a.pgDatabase), cstr('')]);
    const body = Buffer.concat([int32(196608), params]);
    sock.write(Buffer.concat([int32(body.length + 4), body]));
  });
}

const CRLF = 0x0a; // we search for '\n' and check the preceding '\r'

/** Incremental in-order response framer. Returns the status of each complete response. */
class Framer {
  private buf: Buffer | null = null;
  // http state
  private bodyLeft = -1;
  private status = 0;
  private chunked = false;
  private chunkState: 'size' | 'data' | 'trailer' = 'size';

  // pg state (per response)
  private pgError = false;
  private pgRows = -1;

  constructor(private readonly proto: Proto) {}

  push(chunk: Buffer, onResponse: (status: number) => void): void {
    this.buf = this.buf && this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let off = 0;
    const b = this.buf;
    for (;;) {
      const used =
        this.proto === 'http' ? this.http(b, off, onResponse) : this.proto === 'pg' ? this.pg(b, off, onResponse) : this.resp(b, off, onResponse);
      if (used < 0) break;
      off = used;
    }
    this.buf = off >= b.length ? null : b.subarray(off);
  }

  /** Returns the new offset after consuming something, or -1 if more data is needed. */
  private http(b: Buffer, off: number, onResponse: (s: number) => void): number {
    if (this.bodyLeft < 0 && !this.chunked) {
      const end = b.indexOf('\r\n\r\n', off, 'latin1');
      if (end < 0) return -1;
      const head = b.toString('latin1', off, end);
      const sp = head.indexOf(' ');
      this.status = Number(head.slice(sp + 1, sp + 4));
      const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      this.chunked = !cl && /\r\ntransfer-encoding:\s*chunked/i.test(head);
      this.bodyLeft = cl ? Number(cl[1]) : 0;
      if (this.status === 204 || this.status === 304 || (this.status >= 100 && this.status < 200)) this.bodyLeft = 0;
      if (this.chunked) {
        this.bodyLeft = -1;
        this.chunkState = 'size';
      }
      return end + 4;
    }
    if (!this.chunked) {
      const avail = b.length - off;
      if (avail < this.bodyLeft) {
        this.bodyLeft -= avail;
        return b.length === off ? -1 : b.length;
      }
      const next = off + this.bodyLeft;
      this.bodyLeft = -1;
      onResponse(this.status);
      return next;
    }
    // chunked body
    if (this.chunkState === 'size') {
      const nl = b.indexOf(CRLF, off);
      if (nl < 0) return -1;
      const size = parseInt(b.toString('latin1', off, nl - 1).split(';')[0], 16);
      if (size === 0) this.chunkState = 'trailer';
      else {
        this.chunkState = 'data';
        this.bodyLeft = size + 2;
      }
      return nl + 1;
    }
    if (this.chunkState === 'data') {
      const avail = b.length - off;
      if (avail < this.bodyLeft) {
        this.bodyLeft -= avail;
        return b.length === off ? -1 : b.length;
      }
      const next = off + this.bodyLeft;
      this.bodyLeft = -1;
      this.chunkState = 'size';
      return next;
    }
    // trailer: lines until an empty one
    const nl = b.indexOf(CRLF, off);
    if (nl < 0) return -1;
    if (nl - off <= 1) {
      this.chunked = false;
      this.bodyLeft = -1;
      onResponse(this.status);
    }
    return nl + 1;
  }

  /** One backend message; a response ends with ReadyForQuery after our Sync. */
  private pg(b: Buffer, off: number, onResponse: (s: number) => void): number {
    if (b.length - off < 5) return -1;
    const len = b.readInt32BE(off + 1);
    const end = off + 1 + len;
    if (b.length < end) return -1;
    const t = b[off];
    if (t === 0x45 /* E */) {
      this.pgError = true;
      process.stderr.write(`openloop: postgres error ${b.toString('utf8', off + 5, end).replace(/\0/g, ' ').trim().slice(0, 300)}\n`);
    } else if (t === 0x43 /* C */) {
      const tag = b.toString('latin1', off + 5, end - 1); // "INSERT 0 1"
      this.pgRows = Number(tag.split(' ').pop());
    } else if (t === 0x5a /* Z */) {
      onResponse(this.pgError ? 500 : this.pgRows === 1 ? 201 : 404);
      this.pgError = false;
      this.pgRows = -1;
    }
    return end;
  }

  private resp(b: Buffer, off: number, onResponse: (s: number) => void): number {
    if (off >= b.length) return -1;
    const nl = b.indexOf(CRLF, off);
    if (nl < 0) return -1;
    const t = b[off];
    if (t === 0x24 /* $ */) {
      const len = Number(b.toString('latin1', off + 1, nl - 1));
      if (len < 0) {
        onResponse(500);
        return nl + 1;
      }
      const end = nl + 1 + len + 2;
      if (b.length < end) return -1;
      onResponse(201); // an entry id: the append succeeded
      return end;
    }
    if (t === 0x2b /* + */ || t === 0x3a /* : */) {
      onResponse(200);
      return nl + 1;
    }
    if (t === 0x2d /* - */) {
      process.stderr.write(`openloop: redis error ${b.toString('latin1', off, nl - 1)}\n`);
      onResponse(500);
      return nl + 1;
    }
    throw new Error(`openloop: unexpected RESP type ${String.fromCharCode(t)}`);
  }
}

interface Conn {
  sock: net.Socket;
  /** scheduled times (ms, performance.now) and actual send times of outstanding requests, FIFO */
  sched: number[];
  sent: number[];
  head: number;
  framer: Framer;
  dead: boolean;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const reqs = buildRequests(a);
  const total = Math.round(a.rate * a.duration);
  const warmN = Math.round(a.rate * a.warmup);
  // Latencies of measured requests by index (ms); NaN = never completed.
  const lat = new Float64Array(total).fill(NaN);
  const svc = new Float64Array(total).fill(NaN);
  const sendLag = new Float64Array(total).fill(NaN);
  const statusCounts: Record<string, number> = {};
  let errors = 0;
  let completed = 0;
  let warmupOk = 0;
  let notSent = 0;
  let inFlight = 0;
  let maxSendLagMs = 0;

  const conns: Conn[] = [];
  // Index of each outstanding request (parallel to sched/sent), -1 for warm-up.
  const idxQ = new Map<Conn, number[]>();
  // Requests that are due but wait for a connection with room (--pipeline), FIFO.
  const pendDue: number[] = [];
  const pendIdx: number[] = [];
  let pendHead = 0;
  const pending = () => pendDue.length - pendHead;

  const send = (c: Conn, due: number, i: number, now: number) => {
    c.sock.write(reqs[Math.floor(Math.random() * reqs.length)]);
    c.sched.push(due);
    c.sent.push(now);
    idxQ.get(c)!.push(i);
    inFlight++;
  };

  await Promise.all(
    Array.from({ length: a.connections }, () => {
      return new Promise<void>((resolve, reject) => {
        const sock = net.connect({ host: a.host, port: a.port, noDelay: true });
        const c: Conn = { sock, sched: [], sent: [], head: 0, framer: new Framer(a.proto), dead: false };
        idxQ.set(c, []);
        sock.once('connect', () => {
          const ready = a.proto === 'pg' ? pgHandshake(sock, a) : Promise.resolve();
          ready.then(() => {
            conns.push(c);
            sock.on('data', onData);
            resolve();
          }, reject);
        });
        sock.once('error', (e) => {
          if (!conns.includes(c)) reject(e);
        });
        const onData = (chunk: Buffer) => {
          const q = idxQ.get(c)!;
          c.framer.push(chunk, (status) => {
            const now = performance.now();
            const i = q[c.head];
            const s = c.sched[c.head];
            const sent = c.sent[c.head];
            c.head++;
            inFlight--;
            if (c.head > 4096) {
              c.sched.splice(0, c.head);
              c.sent.splice(0, c.head);
              q.splice(0, c.head);
              c.head = 0;
            }
            if (i === undefined || i < 0) {
              if (status >= 200 && status < 300) warmupOk++;
            } else {
              completed++;
              const key = String(status);
              statusCounts[key] = (statusCounts[key] ?? 0) + 1;
              if (status < 200 || status >= 300) errors++;
              lat[i] = now - s;
              svc[i] = now - sent;
            }
            // A connection is free again: give it the oldest request waiting for one.
            if (pendHead < pendDue.length && !c.dead && c.sched.length - c.head < a.pipeline) {
              send(c, pendDue[pendHead], pendIdx[pendHead], now);
              pendHead++;
              if (pendHead > 4096) {
                pendDue.splice(0, pendHead);
                pendIdx.splice(0, pendHead);
                pendHead = 0;
              }
            }
          });
        };
        const fail = () => {
          if (c.dead) return;
          c.dead = true;
          const q = idxQ.get(c)!;
          const lost = q.length - c.head;
          if (lost > 0) {
            errors += lost;
            inFlight -= lost;
            statusCounts.conn_lost = (statusCounts.conn_lost ?? 0) + lost;
          }
        };
        sock.on('error', fail);
        sock.on('close', fail);
      });
    }),
  );

  // Node timers have 1 ms granularity (so would add ≈0.5 ms of send lag on
  // average); a helper thread sleeping in Atomics.wait with sub-ms timeouts
  // wakes the event loop every tickUs instead, without busy-waiting.
  let ticker: Worker | null = null;
  let tickFlag: Int32Array | null = null;
  if (a.tickUs > 0) {
    tickFlag = new Int32Array(new SharedArrayBuffer(8));
    ticker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const f = new Int32Array(workerData.sab);
       while (Atomics.load(f, 1) === 0) { Atomics.wait(f, 0, 0, workerData.ms); parentPort.postMessage(0); }`,
      { eval: true, workerData: { sab: tickFlag.buffer, ms: a.tickUs / 1000 } },
    );
    await new Promise((r) => ticker!.once('online', r));
  }

  const cpu0 = process.cpuUsage();
  const t0 = performance.now() + 5; // first request a few ms from now
  const interval = 1000 / a.rate;
  const endAll = warmN + total;
  let next = 0; // next request number (warm-up ones first)
  let rr = 0;

  const pick = (): Conn | null => {
    let best: Conn | null = null;
    let bestOut = Infinity;
    const n = conns.length;
    for (let k = 0; k < n; k++) {
      const c = conns[(rr + k) % n];
      if (c.dead) continue;
      const out = c.sched.length - c.head;
      if (out < bestOut && out < a.pipeline) {
        best = c;
        bestOut = out;
        if (out === 0) break;
      }
    }
    rr = (rr + 1) % Math.max(1, n);
    return best;
  };

  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      const corked = new Set<Conn>();
      while (next < endAll) {
        const due = t0 + next * interval;
        if (due > now) break;
        const i = next - warmN; // <0: warm-up
        next++;
        if (i >= 0) {
          // The generator's own lateness (timer granularity, GC, CPU).
          maxSendLagMs = Math.max(maxSendLagMs, now - due);
          sendLag[i] = now - due;
        }
        if (inFlight + pending() >= a.maxInFlight) {
          if (i >= 0) notSent++;
          continue;
        }
        const c = pending() === 0 ? pick() : null;
        if (!c) {
          // Every connection is busy: wait for one (still timed from `due`).
          pendDue.push(due);
          pendIdx.push(i);
          continue;
        }
        if (!corked.has(c)) {
          c.sock.cork();
          corked.add(c);
        }
        send(c, due, i, now);
      }
      for (const c of corked) c.sock.uncork();
      if (next >= endAll) {
        if (timer) clearTimeout(timer);
        return resolve();
      }
      // The ticker thread (if any) wakes us every tickUs; this timer is the
      // 1 ms-granular fallback and the whole mechanism with --tick-us=0.
      if (timer) clearTimeout(timer);
      timer = setTimeout(tick, Math.max(0, t0 + next * interval - performance.now()));
    };
    let timer: NodeJS.Timeout | null = null;
    ticker?.on('message', tick);
    tick();
  });
  if (ticker) {
    Atomics.store(tickFlag!, 1, 1);
    await ticker.terminate();
  }
  const sendEnd = performance.now();

  // Drain outstanding responses.
  const drainDeadline = performance.now() + a.drain * 1000;
  while (inFlight + pending() > 0 && performance.now() < drainDeadline && conns.some((c) => !c.dead)) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const unanswered = Math.max(0, inFlight) + pending();
  const cpu = process.cpuUsage(cpu0);
  const wallS = (performance.now() - t0) / 1000;
  for (const c of conns) c.sock.destroy();

  // Percentiles over every scheduled measured request; never-completed ones
  // (unanswered, lost, not sent) count as infinitely slow.
  const all = Float64Array.from(lat, (x) => (Number.isNaN(x) ? Infinity : x)).sort();
  const done = Float64Array.from(svc.filter((x) => !Number.isNaN(x))).sort();
  const pct = (arr: Float64Array, p: number) =>
    arr.length ? arr[Math.min(arr.length - 1, Math.max(0, Math.ceil((p / 100) * arr.length) - 1))] : NaN;
  let sum = 0;
  let finite = 0;
  for (const x of all) if (Number.isFinite(x)) {
    sum += x;
    finite++;
  }
  const measuredSendS = (sendEnd - (t0 + warmN * interval)) / 1000;
  const result = {
    proto: a.proto,
    rate: a.rate,
    durationS: a.duration,
    warmupS: a.warmup,
    connections: a.connections,
    pipeline: a.pipeline,
    scheduled: total,
    warmupOk,
    completed,
    ok: Object.entries(statusCounts).filter(([k]) => /^2\d\d$/.test(k)).reduce((n, [, v]) => n + v, 0),
    errors,
    notSent,
    unanswered,
    statusCounts,
    achievedRate: completed / Math.max(1e-9, measuredSendS),
    latencyMs: {
      mean: finite ? sum / finite : NaN,
      p50: pct(all, 50),
      p90: pct(all, 90),
      p99: pct(all, 99),
      p999: pct(all, 99.9),
      max: all.length ? all[all.length - 1] : NaN,
    },
    serviceLatencyMs: { p50: pct(done, 50), p99: pct(done, 99), max: done.length ? done[done.length - 1] : NaN },
    maxSendLagMs,
    sendLagMs: (() => {
      const l = Float64Array.from(sendLag.filter((x) => !Number.isNaN(x))).sort();
      return { p50: pct(l, 50), p99: pct(l, 99), max: l.length ? l[l.length - 1] : NaN };
    })(),
    cpu: { userS: cpu.user / 1e6, sysS: cpu.system / 1e6, wallS, pct: (100 * (cpu.user + cpu.system)) / 1e6 / wallS },
  };
  process.stdout.write(JSON.stringify(result, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)) + '\n');
}

main().catch((e) => {
  process.stderr.write(`openloop: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
