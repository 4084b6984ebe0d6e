// Subscriber process of bench/fanout.ts: thousands of WebSocket connections in
// one process, on raw `net` sockets with a minimal hand-written client, so
// that the client costs as little as possible per delivered frame: the HTTP
// upgrade, then server frames (unmasked; 7/16/64-bit lengths) are delimited by
// reading the length bytes in place and counted, not decoded or parsed.
//
//   node dist/bench/fanout-client.js --port=P --path=/v1/conversations/fanout-{c}/stream
//     --conns=N --conversations=C --first=K --protocol=raw|socketio
//     --sample-every=100 --connect-concurrency=100 --report-ms=200 --max-seconds=900
//
// Connection i subscribes to conversation (K + i) % C ({c} in --path).
// Protocols:
//   raw       every text frame whose JSON starts with {"type":"message" is a
//             delivery (our server's pings, {"type":"ping"}, are not).
//   socketio  Engine.IO v4 over the websocket transport: on the open packet
//             `0{…}` send `40` (connect to namespace /); on `40{…}` send
//             `420["sub","<conv>"]` (event with ack id 0); the ack `430[…]`
//             means joined. Pings `2` are answered `3`. Deliveries are the
//             event packets, `42…`.
// Latency: every --sample-every-th delivery of a connection (the countdown
// starts at a different offset per connection, so samples spread over all
// messages) is searched for the publisher's stamp `t=<epoch ms>` and yields
// (stamp, now − stamp) on the same machine clock.
//
// Reports to stdout, one JSON line every --report-ms (and at once when every
// connection is subscribed or failed):
//   {"at", "startedAt", "allSubscribedAt", "frames", "bytes", "subscribed",
//    "failed", "lost", "failure", "samples": [stamp, latency, stamp, latency, …]}
// frames/bytes/lost are totals since start; samples are the new ones since the
// previous line. Exits after --max-seconds, or when the parent is gone.
import crypto from 'node:crypto';
import net from 'node:net';

function parseArgs(argv: string[]): Map<string, string> {
  const kv = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([^=]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`bad argument ${a}`);
    kv.set(m[1], m[2]);
  }
  return kv;
}

const args = parseArgs(process.argv.slice(2));
function intArg(name: string, dflt?: number): number {
  const v = args.get(name);
  const n = v === undefined ? dflt : Number(v);
  if (n === undefined || !Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${v}`);
  return n;
}

const port = intArg('port');
const pathTemplate = args.get('path') ?? '';
const conns = intArg('conns');
const conversations = intArg('conversations');
const first = intArg('first', 0);
const socketio = args.get('protocol') === 'socketio';
const sampleEvery = Math.max(1, intArg('sample-every', 100));
const connectConcurrency = Math.max(1, intArg('connect-concurrency', 100));
const reportMs = Math.max(10, intArg('report-ms', 200));
const maxSeconds = intArg('max-seconds', 900);
if (!pathTemplate.includes('{c}') && !socketio) throw new Error('--path needs a {c} placeholder for the conversation');

/**
 * Every socket reads into this one buffer (net's `onread`): no Buffer per read
 * and no stream machinery. Safe to share because each read is handled
 * synchronously before the next one; a split frame's bytes are copied out.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
/** Largest upgrade response we accept before giving up on the connection. */
const MAX_HANDSHAKE_BYTES = 16 * 1024;
const CR_LF_CR_LF = Buffer.from('\r\n\r\n');
const STATUS_101 = Buffer.from('HTTP/1.1 101');
const STAMP = Buffer.from('t=');
/** `{"type":"` is 9 bytes: the next one is `m` for a message event (no other event type of ours starts with m). */
const RAW_TYPE_AT = 9;
const [CH_0, CH_1, CH_2, CH_3, CH_4, CH_9, CH_M, CH_DOT] = ['0', '1', '2', '3', '4', '9', 'm', '.'].map((c) => c.charCodeAt(0));

const now = () => performance.timeOrigin + performance.now();

let frames = 0;
let bytes = 0;
let subscribed = 0;
let failed = 0;
let lost = 0;
let failure: string | null = null;
let samples: number[] = [];
const startedAt = now();
let allSubscribedAt: number | null = null;

/** A masked client text frame (RFC 6455 requires masking; the all-zero key leaves the payload as is). */
function clientText(payload: string): Buffer {
  const data = Buffer.from(payload);
  if (data.length > 125) throw new Error('client frames here are short control messages');
  return Buffer.concat([Buffer.from([0x81, 0x80 | data.length, 0, 0, 0, 0]), data]);
}

const SIO_CONNECT = clientText('40');
const SIO_PONG = clientText('3');

/** The stamp's epoch milliseconds (digits, optional fraction) starting at i, read from the bytes. */
function readStamp(b: Buffer, i: number, end: number): number {
  let v = 0;
  let digits = 0;
  while (i < end && b[i] >= CH_0 && b[i] <= CH_9) {
    v = v * 10 + (b[i++] - CH_0);
    digits++;
  }
  if (i < end && b[i] === CH_DOT) {
    let scale = 0.1;
    for (i++; i < end && b[i] >= CH_0 && b[i] <= CH_9; i++, scale /= 10) v += (b[i] - CH_0) * scale;
  }
  return digits ? v : NaN;
}

class Subscriber {
  private readonly sock: net.Socket;
  private readonly conv: number;
  /** Unconsumed bytes of a frame (or of the upgrade response) split across reads. */
  private partial: Buffer | null = null;
  private upgraded = false;
  private isSubscribed = false;
  private settled = false;
  private untilSample: number;

  constructor(index: number) {
    this.conv = (first + index) % conversations;
    this.untilSample = 1 + (index % sampleEvery);
    this.sock = net.connect({ port, host: '127.0.0.1', onread: { buffer: READ_BUFFER, callback: (n) => this.onData(n) } });
    this.sock.setNoDelay(true);
    this.sock.on('connect', () => this.sendUpgrade());
    this.sock.on('error', (e) => this.fail(e.message));
    this.sock.on('close', () => {
      if (this.isSubscribed) lost++;
      else this.fail('closed before subscribing');
    });
  }

  private sendUpgrade(): void {
    const key = crypto.randomBytes(16).toString('base64');
    const urlPath = pathTemplate.replace('{c}', String(this.conv));
    this.sock.write(
      `GET ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
  }

  /** `n` new bytes at the start of READ_BUFFER. Returns true: keep reading. */
  private onData(n: number): boolean {
    let buf = READ_BUFFER;
    let size = n;
    if (this.partial !== null) {
      buf = Buffer.concat([this.partial, READ_BUFFER.subarray(0, n)]);
      size = buf.length;
      this.partial = null;
    }
    let off = 0;
    if (!this.upgraded) {
      const end = buf.subarray(0, size).indexOf(CR_LF_CR_LF);
      if (end < 0) {
        if (size > MAX_HANDSHAKE_BYTES) this.fail('upgrade response too long');
        else this.partial = Buffer.from(buf.subarray(0, size));
        return true;
      }
      if (buf.compare(STATUS_101, 0, STATUS_101.length, 0, STATUS_101.length) !== 0) {
        this.fail(`upgrade refused: ${buf.toString('latin1', 0, buf.indexOf('\r\n'))}`);
        return true;
      }
      this.upgraded = true;
      if (!socketio) this.markSubscribed();
      off = end + 4;
    }
    while (size - off >= 2) {
      let len = buf[off + 1] & 0x7f;
      let head = 2;
      if (len === 126) {
        if (size - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        head = 4;
      } else if (len === 127) {
        if (size - off < 10) break;
        // The high 16 bits of a 64-bit length are zero for any frame that fits in memory.
        len = buf.readUIntBE(off + 4, 6);
        head = 10;
      }
      if (size - off < head + len) break;
      this.onFrame(buf, buf[off] & 0x0f, off + head, len);
      off += head + len;
    }
    // Copy the remainder: the read buffer is overwritten by the next read of any socket.
    if (off < size) this.partial = Buffer.from(buf.subarray(off, size));
    return true;
  }

  /** One complete frame. The servers here send short messages unfragmented, so continuation frames (opcode 0) do not occur. */
  private onFrame(b: Buffer, opcode: number, start: number, len: number): void {
    if (opcode === 1) {
      if (!socketio) {
        if (len > RAW_TYPE_AT && b[start + RAW_TYPE_AT] === CH_M) this.delivered(b, start, len);
        return;
      }
      const c0 = b[start];
      const c1 = len > 1 ? b[start + 1] : -1;
      if (c0 === CH_4 && c1 === CH_2) this.delivered(b, start, len);
      else if (c0 === CH_2 && len === 1) this.sock.write(SIO_PONG);
      else if (c0 === CH_0) this.sock.write(SIO_CONNECT);
      else if (c0 === CH_4 && c1 === CH_0) this.sock.write(clientText(`420["sub","${this.conv}"]`));
      else if (c0 === CH_4 && c1 === CH_3) this.markSubscribed();
      else if (c0 === CH_4 && c1 === CH_1) this.sock.destroy(); // `41`: disconnected from the namespace
    } else if (opcode === 9) {
      // Ping: answer with a pong carrying the same payload (control payloads are ≤ 125 bytes).
      this.sock.write(Buffer.concat([Buffer.from([0x8a, 0x80 | len, 0, 0, 0, 0]), b.subarray(start, start + len)]));
    } else if (opcode === 8) {
      this.sock.destroy();
    }
  }

  private delivered(b: Buffer, start: number, len: number): void {
    frames++;
    bytes += len;
    if (--this.untilSample > 0) return;
    this.untilSample = sampleEvery;
    const end = start + len;
    // Bounded to the frame: past it the shared read buffer holds stale bytes.
    const at = b.subarray(start, end).indexOf(STAMP);
    if (at < 0) return;
    const stamp = readStamp(b, start + at + STAMP.length, end);
    if (!Number.isNaN(stamp)) samples.push(stamp, now() - stamp);
  }

  private markSubscribed(): void {
    if (this.settled) return;
    this.settled = true;
    this.isSubscribed = true;
    subscribed++;
    connectionSettled();
  }

  private fail(reason: string): void {
    if (this.settled) return;
    this.settled = true;
    failed++;
    failure ??= reason;
    this.sock.destroy();
    connectionSettled();
  }
}

// Connect with a bounded number of handshakes in flight, so a full listen
// backlog (SYN retries after 1 s) does not become what the connect time measures.
let started = 0;
let settled = 0;
function startConnections(): void {
  while (started < conns && started - settled < connectConcurrency) new Subscriber(started++);
}
function connectionSettled(): void {
  settled++;
  if (settled === conns) {
    if (failed === 0) allSubscribedAt = now();
    report();
  } else startConnections();
}

function report(): void {
  const line = JSON.stringify({ at: now(), startedAt, allSubscribedAt, frames, bytes, subscribed, failed, lost, failure, samples });
  samples = [];
  process.stdout.write(line + '\n');
}

const parent = process.ppid;
setInterval(() => {
  // Reparented: the orchestrator is gone, nobody reads these reports.
  if (process.ppid !== parent) process.exit(1);
  report();
}, reportMs);
setTimeout(() => process.exit(2), maxSeconds * 1000);
process.stdout.on('error', () => process.exit(1));
if (conns === 0) report();
else startConnections();
