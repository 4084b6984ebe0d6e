// Binary encoding of Raft messages for the transport between nodes. Pure
// module (no node:* imports). Layout, big-endian, integers as float64 (exact
// up to 2^53):
//   type:u8 group:u16 toLen:u8 to fromLen:u8 from term logTerm index commit
//   rejectHint context:f64… reject:u8 snapshot? entries
// `to` sits at a fixed offset so a router can read it without decoding the rest.
import { MessageType, type Entry, type EntryType, type Message, type SnapshotMeta } from './types.js';

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/**
 * A driver-level message that never reaches the core: the leader of an idle
 * group tells a follower it stops heartbeating at (term, index = its last
 * index), so the follower may stop its election timer too (runtime/driver.ts).
 */
export const QUIESCE_TYPE = 100 as MessageType;

const NUMBERS = 6; // term, logTerm, index, commit, rejectHint, context
const ENTRY_HEADER = 8 + 8 + 1 + 4;

export function encodedSize(m: Message): number {
  let n = 3 + 1 + m.to.length * 3 + 1 + m.from.length * 3 + NUMBERS * 8 + 1 + 1 + 4;
  if (m.snapshot !== null) n += 4 + JSON.stringify(m.snapshot).length * 3;
  for (const e of m.entries) n += ENTRY_HEADER + e.data.byteLength;
  return n;
}

/** Encodes `m` into `out` at `pos`; returns the end offset. `out` must hold encodedSize(m) bytes. */
export function encodeMessage(m: Message, out: Uint8Array, pos: number): number {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint8(pos, m.type);
  dv.setUint16(pos + 1, m.group);
  pos += 3;
  for (const s of [m.to, m.from]) {
    const r = utf8.encodeInto(s, out.subarray(pos + 1));
    if (r.written > 255) throw new Error(`node id too long: ${s}`);
    dv.setUint8(pos, r.written);
    pos += 1 + r.written;
  }
  for (const v of [m.term, m.logTerm, m.index, m.commit, m.rejectHint, m.context]) {
    dv.setFloat64(pos, v);
    pos += 8;
  }
  dv.setUint8(pos++, m.reject ? 1 : 0);
  if (m.snapshot === null) dv.setUint8(pos++, 0);
  else {
    dv.setUint8(pos++, 1);
    const r = utf8.encodeInto(JSON.stringify(m.snapshot), out.subarray(pos + 4));
    dv.setUint32(pos, r.written);
    pos += 4 + r.written;
  }
  dv.setUint32(pos, m.entries.length);
  pos += 4;
  for (const e of m.entries) {
    dv.setFloat64(pos, e.term);
    dv.setFloat64(pos + 8, e.index);
    dv.setUint8(pos + 16, e.type);
    dv.setUint32(pos + 17, e.data.byteLength);
    out.set(e.data, pos + ENTRY_HEADER);
    pos += ENTRY_HEADER + e.data.byteLength;
  }
  return pos;
}

export function encodeMessageBytes(m: Message): Uint8Array {
  const buf = new Uint8Array(encodedSize(m));
  return buf.subarray(0, encodeMessage(m, buf, 0));
}

/** The destination node of an encoded message. */
export function encodedTo(b: Uint8Array): string {
  return fromUtf8.decode(b.subarray(4, 4 + b[3]));
}

export function encodedFrom(b: Uint8Array): string {
  const at = 4 + b[3];
  return fromUtf8.decode(b.subarray(at + 1, at + 1 + b[at]));
}

export function encodedGroup(b: Uint8Array): number {
  return (b[1] << 8) | b[2];
}

/** Decodes one message; entry data are copies (the input may be reused). Throws on malformed input. */
export function decodeMessage(b: Uint8Array): Message {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const type = dv.getUint8(0) as MessageType;
  if (!(type >= MessageType.App && type <= MessageType.TimeoutNow) && type !== QUIESCE_TYPE) throw new Error(`unknown message type ${type}`);
  const group = dv.getUint16(1);
  let pos = 3;
  const str = () => {
    const n = dv.getUint8(pos);
    if (pos + 1 + n > b.byteLength) throw new Error('truncated message');
    const s = fromUtf8.decode(b.subarray(pos + 1, pos + 1 + n));
    pos += 1 + n;
    return s;
  };
  const to = str();
  const from = str();
  const nums: number[] = [];
  for (let i = 0; i < NUMBERS; i++) {
    nums.push(dv.getFloat64(pos));
    pos += 8;
  }
  for (const v of nums) if (!Number.isSafeInteger(v) || v < 0) throw new Error(`bad number ${v} in message`);
  const reject = dv.getUint8(pos++) === 1;
  let snapshot: SnapshotMeta | null = null;
  if (dv.getUint8(pos++) === 1) {
    const n = dv.getUint32(pos);
    if (pos + 4 + n > b.byteLength) throw new Error('truncated snapshot meta');
    snapshot = JSON.parse(fromUtf8.decode(b.subarray(pos + 4, pos + 4 + n))) as SnapshotMeta;
    pos += 4 + n;
  }
  const count = dv.getUint32(pos);
  pos += 4;
  const entries: Entry[] = [];
  for (let i = 0; i < count; i++) {
    if (pos + ENTRY_HEADER > b.byteLength) throw new Error('truncated entry');
    const len = dv.getUint32(pos + 17);
    if (pos + ENTRY_HEADER + len > b.byteLength) throw new Error('truncated entry data');
    entries.push({
      term: dv.getFloat64(pos),
      index: dv.getFloat64(pos + 8),
      type: dv.getUint8(pos + 16) as EntryType,
      data: b.slice(pos + ENTRY_HEADER, pos + ENTRY_HEADER + len),
    });
    pos += ENTRY_HEADER + len;
  }
  if (pos !== b.byteLength) throw new Error(`${b.byteLength - pos} trailing bytes after message`);
  const [term, logTerm, index, commit, rejectHint, context] = nums;
  return { type, group, from, to, term, logTerm, index, entries, commit, reject, rejectHint, snapshot, context };
}
