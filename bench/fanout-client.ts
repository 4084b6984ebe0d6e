// Subscriber process of bench/fanout.ts: thousands of WebSocket connections
// on raw `net` sockets with a minimal client (upgrade, then unmasked server
// frames counted by length, not parsed), so the client costs little per
// frame. Every SAMPLE_EVERY-th frame of a connection is searched for the
// publisher's `t=<epoch ms>` stamp to sample append→receive latency.
// Reports to the parent over IPC once a second: frames, bytes, samples.
//
//   node dist/bench/fanout-client.js --port=P --path=/v1/conversations/fan-{c}/stream
//     --conns=N --convs=C --first=K [--protocol=raw|socketio]
import net from 'node:net';
import crypto from 'node:crypto';

const SAMPLE_EVERY = 50;

const args = new Map(
  process.argv.slice(2).map((a) => {
    const at = a.indexOf('=');
    return [a.slice(2, at), a.slice(at + 1)] as [string, string];
  }),
);
const port = Number(args.get('port'));
const pathTemplate = args.get('path')!;
const conns = Number(args.get('conns'));
const convs = Number(args.get('convs'));
const first = Number(args.get('first') ?? 0);
const socketio = args.get('protocol') === 'socketio';

let frames = 0;
let bytes = 0;
let opened = 0;
let closed = 0;
let samples: number[] = [];
const now = () => performance.timeOrigin + performance.now();

function frameOut(payload: Buffer | string): Buffer {
  // Client frames are masked (RFC 6455); a zero mask keeps it cheap.
  const data = Buffer.from(payload);
  const head = data.length < 126 ? Buffer.from([0x81, 0x80 | data.length, 0, 0, 0, 0]) : Buffer.from([0x81, 0xfe, data.length >> 8, data.length & 255, 0, 0, 0, 0]);
  return Buffer.concat([head, data]);
}

function connect(i: number): void {
  const conv = (first + i) % convs;
  const path = pathTemplate.replace('{c}', String(conv));
  const sock = net.connect(port, '127.0.0.1');
  let buf: Buffer = Buffer.alloc(0);
  let upgraded = false;
  let count = 0;
  sock.setNoDelay(true);
  sock.on('connect', () => {
    const key = crypto.randomBytes(16).toString('base64');
    sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  });
  sock.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    if (!upgraded) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (!buf.subarray(0, 12).toString().includes('101')) {
        sock.destroy();
        return;
      }
      upgraded = true;
      opened++;
      buf = buf.subarray(end + 4);
    }
    let off = 0;
    for (;;) {
      if (buf.length - off < 2) break;
      let len = buf[off + 1] & 0x7f;
      let head = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        head = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2));
        head = 10;
      }
      if (buf.length - off < head + len) break;
      const opcode = buf[off] & 0x0f;
      const start = off + head;
      if (opcode === 1) {
        if (socketio) {
          const c0 = buf[start];
          if (c0 === 0x30) sock.write(frameOut('40')); // Engine.IO open → Socket.IO connect
          else if (c0 === 0x32 && len === 1) sock.write(frameOut('3')); // ping → pong
          else if (c0 === 0x34 && buf[start + 1] === 0x30) sock.write(frameOut(`42["sub","${conv}"]`)); // connected → subscribe
          else if (c0 === 0x34 && buf[start + 1] === 0x32) countFrame(start, len);
        } else countFrame(start, len);
      } else if (opcode === 9) sock.write(Buffer.from([0x8a, 0x80, 0, 0, 0, 0]));
      off = start + len;
    }
    buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
  });
  const countFrame = (start: number, len: number) => {
    frames++;
    bytes += len;
    if (++count % SAMPLE_EVERY !== 0) return;
    const at = buf.indexOf('t=', start);
    if (at < 0 || at > start + len) return;
    const t = parseFloat(buf.toString('latin1', at + 2, at + 22));
    if (Number.isFinite(t)) samples.push(now() - t);
  };
  sock.on('error', () => {});
  sock.on('close', () => closed++);
}

// Connect in waves so the server's accept queue is not the thing measured.
let next = 0;
const wave = () => {
  for (let k = 0; k < 200 && next < conns; k++) connect(next++);
  if (next < conns) setTimeout(wave, 5);
};
wave();
setInterval(() => {
  process.send!({ frames, bytes, opened, closed, samples });
  samples = [];
}, 1000);
process.on('disconnect', () => process.exit(0));
