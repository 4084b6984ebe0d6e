// What any 3-node replicated append service on this stack can reach on this
// machine: bare uWebSockets.js + one NATS connection per node, doing the
// least a majority-durable append needs — read and JSON.parse the body, check
// it is a message, number it, send it to both peers, write + fdatasync it
// locally, answer 201 once a peer has acknowledged its own fdatasync. No Raft
// (no terms, indexes, heartbeats, elections or apply), no RocksDB, no token
// count, no forwarding: each node takes the appends that reach it as their
// leader. Every loop turn is one batch: the appends it read go to the peers
// in one NATS message each, then one write + fdatasync covers them together
// with what the peers sent, then the acks leave in one message per peer.
//
//   node dist/bench/cluster-ceiling-server.js <port> <nats url> <self> <peer,peer> <data file>
//
// GET /health/ready answers 200 once listening and connected.
import fs from 'node:fs';
import { connect } from '@nats-io/transport-node';
import { answer, serveAppends, type PendingAppend } from './ceiling-app.js';

const [portArg, natsUrl, self, peersArg, file] = process.argv.slice(2);
const port = Number(portArg);
const peers = (peersArg ?? '').split(',').filter(Boolean);
if (!Number.isInteger(port) || !natsUrl || !self || peers.length === 0 || !file) {
  console.error('usage: cluster-ceiling-server.js <port> <nats url> <self> <peer,peer> <data file>');
  process.exit(2);
}

/** The log is a preallocated file written round-robin, so fdatasync journals no size change (as storage/wal.ts). */
const LOG_BYTES = 64 << 20;
const fd = fs.openSync(file, 'w+');
fs.writeSync(fd, Buffer.alloc(LOG_BYTES));
fs.fsyncSync(fd);
let logPos = 0;

const KIND_BATCH = 1;
const KIND_ACK = 2;
const enc = new TextEncoder();
const selfBytes = enc.encode(self);

interface InFlight {
  items: PendingAppend[];
  written: boolean;
  acks: number;
}

let appends: PendingAppend[] = [];
/** Peer → bytes it sent this turn, and the batch ids to acknowledge once they are durable here. */
const received = new Map<string, { bytes: Uint8Array[]; ids: number[] }>();
const inFlight = new Map<number, InFlight>();
let nextBatch = 1;
let turnScheduled = false;

const nc = await connect({ servers: natsUrl });

function scheduleTurn(): void {
  if (turnScheduled) return;
  turnScheduled = true;
  setImmediate(turn);
}

function header(kind: number, id: number, bodyBytes: number): Uint8Array {
  const out = new Uint8Array(6 + selfBytes.length + bodyBytes);
  out[0] = kind;
  out[1] = selfBytes.length;
  out.set(selfBytes, 2);
  new DataView(out.buffer).setUint32(2 + selfBytes.length, id);
  return out;
}

function answerIfDone(id: number, f: InFlight): void {
  if (!f.written || f.acks < 1) return; // majority of 3: this node + one peer
  inFlight.delete(id);
  for (const p of f.items) answer(p);
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

function turn(): void {
  turnScheduled = false;
  const toWrite: Uint8Array[] = [];
  let mine: [number, InFlight] | null = null;
  if (appends.length > 0) {
    const id = nextBatch++;
    const body = enc.encode(appends.map((p) => p.line).join('\n') + '\n');
    const msg = header(KIND_BATCH, id, body.byteLength);
    msg.set(body, 6 + selfBytes.length);
    for (const peer of peers) nc.publish(`ceil.${peer}`, msg);
    mine = [id, { items: appends, written: false, acks: 0 }];
    inFlight.set(id, mine[1]);
    appends = [];
    toWrite.push(body);
  }
  for (const r of received.values()) toWrite.push(...r.bytes);
  writeDurably(toWrite);
  for (const [peer, r] of received) {
    const ack = header(KIND_ACK, 0, 4 * r.ids.length);
    const dv = new DataView(ack.buffer);
    r.ids.forEach((id, i) => dv.setUint32(6 + selfBytes.length + 4 * i, id));
    nc.publish(`ceil.${peer}`, ack);
  }
  received.clear();
  if (mine !== null) {
    mine[1].written = true;
    answerIfDone(mine[0], mine[1]);
  }
}

nc.subscribe(`ceil.${self}`, {
  callback: (_err, m) => {
    const d = m.data;
    const from = new TextDecoder().decode(d.subarray(2, 2 + d[1]));
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
    }
  },
});

serveAppends(port, (p) => {
  appends.push(p);
  scheduleTurn();
});
