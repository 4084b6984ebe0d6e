// Frames between the main thread and shard workers. Each direction batches
// every frame of one event-loop turn into one buffer and one postMessage
// (the buffer is transferred, not copied).
//   request: reqId:u32 | op:u8 | group:u16 | len:u32 | payload
//   reply:   reqId:u32 | status:u16 | len:u32 | body (JSON, utf8)
// Stream events ride the reply direction as frames with reqId 0 and status
// EVENT_STATUS (or EVENT_PUBLISH_STATUS when the applying replica leads the
// group, so the event also goes to NATS), body `id \n seq \n type \n json`,
// in apply order. In a cluster, Raft messages ride both directions with
// reqId 0: outbound as RAFT_STATUS frames, inbound as ReqOp.Raft requests
// (body = runtime/raft/codec.ts encoding); leader changes go out as
// LEADER_STATUS frames, body `group \n leader \n term \n voters (comma-joined) \n hosted (1|0)`.
import type { EventType, StreamEvent } from '../actors/events.js';

export const enum ReqOp {
  Propose = 1,
  GetRecord = 2,
  Tail = 3,
  Replay = 4,
  List = 5,
  Window = 6,
  /** Start or stop emitting stream events of one conversation. */
  Interest = 7,
  /** Message events of a conversation from the log (stream replay and healing). */
  Events = 8,
  /** Messages the archive lacks, for the archiver (runtime/archiver.ts). */
  ArchiveBatch = 9,
  /** An encoded Raft message from a peer node (no reply). */
  Raft = 10,
  /** The coordinator's membership change for a group's leader: `{"from":[…],"voters":[…]}`. */
  ConfChange = 11,
  /** The coordinator's leadership move for a group's leader: `{"to":"<replica>"}`. */
  TransferLeader = 12,
}

export const EVENT_STATUS = 0xffff;
export const RAFT_STATUS = 0xfffe;
export const LEADER_STATUS = 0xfffd;
export const EVENT_PUBLISH_STATUS = 0xfffc;

export const REQ_HEADER_BYTES = 11;
export const REPLY_HEADER_BYTES = 10;

/** Growable byte buffer that hands out its content for transfer. */
export class FrameBuffer {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private pos = 0;

  get length(): number {
    return this.pos;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  request(reqId: number, op: ReqOp, group: number, payload: Uint8Array): void {
    this.reserve(REQ_HEADER_BYTES + payload.length);
    const b = this.buf;
    b.writeUInt32BE(reqId, this.pos);
    b[this.pos + 4] = op;
    b.writeUInt16BE(group, this.pos + 5);
    b.writeUInt32BE(payload.length, this.pos + 7);
    b.set(payload, this.pos + REQ_HEADER_BYTES);
    this.pos += REQ_HEADER_BYTES + payload.length;
  }

  reply(reqId: number, status: number, body: string): void {
    const len = Buffer.byteLength(body);
    this.reserve(REPLY_HEADER_BYTES + len);
    const b = this.buf;
    b.writeUInt32BE(reqId, this.pos);
    b.writeUInt16BE(status, this.pos + 4);
    b.writeUInt32BE(len, this.pos + 6);
    b.write(body, this.pos + REPLY_HEADER_BYTES, 'utf8');
    this.pos += REPLY_HEADER_BYTES + len;
  }

  event(ev: StreamEvent, publish: boolean): void {
    this.reply(0, publish ? EVENT_PUBLISH_STATUS : EVENT_STATUS, `${ev.id}\n${ev.seq}\n${ev.type}\n${ev.json}`);
  }

  /** A reply-direction frame with a binary body. */
  bytes(reqId: number, status: number, body: Uint8Array): void {
    this.reserve(REPLY_HEADER_BYTES + body.byteLength);
    const b = this.buf;
    b.writeUInt32BE(reqId, this.pos);
    b.writeUInt16BE(status, this.pos + 4);
    b.writeUInt32BE(body.byteLength, this.pos + 6);
    b.set(body, this.pos + REPLY_HEADER_BYTES);
    this.pos += REPLY_HEADER_BYTES + body.byteLength;
  }

  /** The frames written so far as a standalone ArrayBuffer; the buffer starts empty again. */
  take(): ArrayBuffer {
    const out = new ArrayBuffer(this.pos);
    new Uint8Array(out).set(this.buf.subarray(0, this.pos));
    this.pos = 0;
    return out;
  }
}

export interface RequestFrame {
  reqId: number;
  op: ReqOp;
  group: number;
  payload: Uint8Array;
}

export function readRequests(ab: ArrayBuffer, onFrame: (f: RequestFrame) => void): void {
  const b = Buffer.from(ab);
  let pos = 0;
  while (pos < b.length) {
    const len = b.readUInt32BE(pos + 7);
    const start = pos + REQ_HEADER_BYTES;
    onFrame({
      reqId: b.readUInt32BE(pos),
      op: b[pos + 4] as ReqOp,
      group: b.readUInt16BE(pos + 5),
      payload: new Uint8Array(ab, start, len),
    });
    pos = start + len;
  }
}

export function readReplies(ab: ArrayBuffer, onFrame: (reqId: number, status: number, body: Uint8Array) => void): void {
  const b = Buffer.from(ab);
  let pos = 0;
  while (pos < b.length) {
    const len = b.readUInt32BE(pos + 6);
    const start = pos + REPLY_HEADER_BYTES;
    onFrame(b.readUInt32BE(pos), b.readUInt16BE(pos + 4), new Uint8Array(ab, start, len));
    pos = start + len;
  }
}

export function parseEvent(body: Uint8Array): StreamEvent {
  const text = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  const a = text.indexOf('\n');
  const b = text.indexOf('\n', a + 1);
  const c = text.indexOf('\n', b + 1);
  return { id: text.slice(0, a), seq: Number(text.slice(a + 1, b)), type: text.slice(b + 1, c) as EventType, json: text.slice(c + 1) };
}
