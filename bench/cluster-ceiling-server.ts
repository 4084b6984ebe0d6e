// What any 3-node replicated append service on this stack can reach on this
// machine: bare uWebSockets.js + one NATS connection per node, doing the
// least a majority-durable append needs — read and JSON.parse the body, check
// it is a message, number it, send it to both peers, write + fdatasync it
// locally, answer 201 once a peer has acknowledged its own fdatasync. No Raft
// (no terms, indexes, heartbeats, elections or apply), no RocksDB, no token
// count. Every loop turn is one batch: the appends it read go to the peers
// in one NATS message each, then one write + fdatasync covers them together
// with what the peers sent, then the acks leave in one message per peer.
//
// Mode `direct`: each node takes the appends that reach it as their leader.
// Mode `forward`: each conversation has one leader node (by its group),
// as in ours; an append reaching another node goes to its leader in that
// turn's NATS message for it, and the answer comes back the same way — the
// least a forwarding hop costs on this stack.
//
//   node dist/bench/cluster-ceiling-server.js <port> <nats url> <self> <peer,peer> <data file> [direct|forward]
//
// GET /health/ready answers 200 once listening and connected.
import fs from 'node:fs';
import { connect } from '@nats-io/transport-node';
import { answer, number, serveAppends, type PendingAppend } from './ceiling-app.js';
import { groupOf } from '../runtime/placement.js';

const [portArg, natsUrl, self, peersArg, file, modeArg] = process.argv.slice(2);
const port = Number(portArg);
const peers = (peersArg ?? '').split(',').filter(Boolean);
const mode = modeArg ?? 'direct';
if (!Number.isInteger(port) || !natsUrl || !self || peers.length === 0 || !file || (mode !== 'direct' && mode !== 'forward')) {
  console.error('usage: cluster-ceiling-server.js <port> <nats url> <self> <peer,peer> <data file> [direct|forward]');
  process.exit(2);
}
const nodes = [self, ...peers].sort();

/** The log is a preallocated file written round-robin, so fdatasync journals no size change (as storage/wal.ts). */
const LOG_BYTES = 64 << 20;
const fd = fs.openSync(file, 'w+');
fs.writeSync(fd, Buffer.alloc(LOG_BYTES));
fs.fsyncSync(fd);
let logPos = 0;

const KIND_BATCH = 1;
const KIND_ACK = 2;
/** (reqId:u32 idLen:u16 id lineLen:u32 line)* */
const KIND_FORWARD = 3;
/** (reqId:u32 len:u16 reply)* */
const KIND_REPLY = 4;
const enc = new TextEncoder();
const dec = new TextDecoder();
const selfBytes = enc.encode(self);

/** An append this node orders: answered here, or in a reply record to the node it was forwarded from. */
interface Led {
  line: string;
  reply: string;
  local: PendingAppend | null;
  from: string;
  reqId: number;
}

interface InFlight {
  items: Led[];
  written: boolean;
  acks: number;
}

let appends: Led[] = [];
/** Peer → bytes it sent this turn, and the batch ids to acknowledge once they are durable here. */
const received = new Map<string, { bytes: Uint8Array[]; ids: number[] }>();
const inFlight = new Map<number, InFlight>();
/** Records for each peer, sent at the end of the turn: forwarded appends (to their leader) and replies (to their entry node). */
const forwardsOut = new Map<string, Uint8Array[]>();
const repliesOut = new Map<string, Uint8Array[]>();
/** Appends this node forwarded, awaiting their leader's reply. */
const forwarded = new Map<number, PendingAppend>();
let nextBatch = 1;
let nextReq = 1;
let turnScheduled = false;

const nc = await connect({ servers: natsUrl });

function scheduleTurn(): void {
  if (turnScheduled) return;
  turnScheduled = true;
  setImmediate(() => void turn());
}

function header(kind: number, id: number, bodyBytes: number): Uint8Array {
  const out = new Uint8Array(6 + selfBytes.length + bodyBytes);
  out[0] = kind;
  out[1] = selfBytes.length;
  out.set(selfBytes, 2);
  new DataView(out.buffer).setUint32(2 + selfBytes.length, id);
  return out;
}

/** The conversation's leader node: its group (ours' placement hash), spread over the nodes. */
function leaderOf(id: string): string {
  return nodes[groupOf(id) % nodes.length];
}

function queue(out: Map<string, Uint8Array[]>, peer: string, rec: Uint8Array): void {
  let q = out.get(peer);
  if (q === undefined) out.set(peer, (q = []));
  q.push(rec);
}

function publishRecords(kind: number, out: Map<string, Uint8Array[]>): void {
  for (const [peer, recs] of out) {
    let len = 0;
    for (const r of recs) len += r.byteLength;
    const msg = header(kind, 0, len);
    let o = 6 + selfBytes.length;
    for (const r of recs) {
      msg.set(r, o);
      o += r.byteLength;
    }
    nc.publish(`ceil.${peer}`, msg);
  }
  out.clear();
}

function answerIfDone(id: number, f: InFlight): void {
  if (!f.written || f.acks < 1) return; // majority of 3: this node + one peer
  inFlight.delete(id);
  for (const a of f.items) {
    if (a.local !== null) {
      a.local.reply = a.reply;
      answer(a.local);
      continue;
    }
    const r = enc.encode(a.reply);
    const rec = new Uint8Array(6 + r.byteLength);
    const dv = new DataView(rec.buffer);
    dv.setUint32(0, a.reqId);
    dv.setUint16(4, r.byteLength);
    rec.set(r, 6);
    queue(repliesOut, a.from, rec);
    scheduleTurn();
  }
}

function writeDurably(chunks: Uint8Array[]): void {
  let len = 0;
  for (const c of chunks) len += c.byteLength;
  if (len === 0) return;
  const buf = Buffer.allocUnsafe(len);
  let o = 0;
  for (const c of chunks) {
    buf.set(c, o);
    o += c.byteLength;
  }
  if (logPos + len > LOG_BYTES) logPos = 0;
  fs.writeSync(fd, buf, 0, len, logPos);
  logPos += len;
  fs.fdatasyncSync(fd);
}

async function turn(): Promise<void> {
  turnScheduled = false;
  publishRecords(KIND_FORWARD, forwardsOut);
  const toWrite: Uint8Array[] = [];
  let mine: [number, InFlight] | null = null;
  if (appends.length > 0) {
    const id = nextBatch++;
    const body = enc.encode(appends.map((a) => a.line).join('\n') + '\n');
    const msg = header(KIND_BATCH, id, body.byteLength);
    msg.set(body, 6 + selfBytes.length);
    for (const peer of peers) nc.publish(`ceil.${peer}`, msg);
    mine = [id, { items: appends, written: false, acks: 0 }];
    inFlight.set(id, mine[1]);
    appends = [];
    toWrite.push(body);
  }
  const peersSent = [...received];
  received.clear();
  for (const [, r] of peersSent) toWrite.push(...r.bytes);
  // The NATS client writes what was published at the next microtask
  // checkpoint: let it run, so the peers get the batch before the
  // fdatasync below blocks this thread.
  await null;
  writeDurably(toWrite);
  for (const [peer, r] of peersSent) {
    const ack = header(KIND_ACK, 0, 4 * r.ids.length);
    const dv = new DataView(ack.buffer);
    r.ids.forEach((id, i) => dv.setUint32(6 + selfBytes.length + 4 * i, id));
    nc.publish(`ceil.${peer}`, ack);
  }
  if (mine !== null) {
    mine[1].written = true;
    answerIfDone(mine[0], mine[1]);
  }
  publishRecords(KIND_REPLY, repliesOut);
}

nc.subscribe(`ceil.${self}`, {
  callback: (_err, m) => {
    const d = m.data;
    const from = dec.decode(d.subarray(2, 2 + d[1]));
    const at = 2 + d[1];
    const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    if (d[0] === KIND_BATCH) {
      let r = received.get(from);
      if (r === undefined) received.set(from, (r = { bytes: [], ids: [] }));
      r.bytes.push(d.subarray(at + 4));
      r.ids.push(dv.getUint32(at));
      scheduleTurn();
    } else if (d[0] === KIND_ACK) {
      for (let o = at + 4; o + 4 <= d.byteLength; o += 4) {
        const id = dv.getUint32(o);
        const f = inFlight.get(id);
        if (f === undefined) continue; // already answered: the other peer was faster
        f.acks++;
        answerIfDone(id, f);
      }
    } else if (d[0] === KIND_FORWARD) {
      for (let o = at + 4; o < d.byteLength; ) {
        const reqId = dv.getUint32(o);
        const idLen = dv.getUint16(o + 4);
        const id = dec.decode(d.subarray(o + 6, o + 6 + idLen));
        const lineLen = dv.getUint32(o + 6 + idLen);
        const line = dec.decode(d.subarray(o + 10 + idLen, o + 10 + idLen + lineLen));
        o += 10 + idLen + lineLen;
        appends.push({ line, reply: number(id), local: null, from, reqId });
      }
      scheduleTurn();
    } else if (d[0] === KIND_REPLY) {
      for (let o = at + 4; o < d.byteLength; ) {
        const reqId = dv.getUint32(o);
        const len = dv.getUint16(o + 4);
        const p = forwarded.get(reqId);
        forwarded.delete(reqId);
        if (p !== undefined) {
          p.reply = dec.decode(d.subarray(o + 6, o + 6 + len));
          answer(p);
        }
        o += 6 + len;
      }
    }
  },
});

serveAppends(port, (p) => {
  const leader = mode === 'forward' ? leaderOf(p.id) : self;
  if (leader === self) appends.push({ line: p.line, reply: number(p.id), local: p, from: self, reqId: 0 });
  else {
    const reqId = nextReq++;
    forwarded.set(reqId, p);
    const id = enc.encode(p.id);
    const line = enc.encode(p.line);
    const rec = new Uint8Array(10 + id.byteLength + line.byteLength);
    const dv = new DataView(rec.buffer);
    dv.setUint32(0, reqId);
    dv.setUint16(4, id.byteLength);
    rec.set(id, 6);
    dv.setUint32(6 + id.byteLength, line.byteLength);
    rec.set(line, 10 + id.byteLength);
    queue(forwardsOut, leader, rec);
  }
  scheduleTurn();
});
