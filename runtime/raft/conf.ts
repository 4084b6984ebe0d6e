// ConfState codec and the single-server change rule. Pure module.
//
// Encoding of a ConfChange entry's data (version 1):
//   u8 version=1 | u16 BE voterCount | per voter: u16 BE byteLength | UTF-8 bytes

import type { ConfState, NodeId } from './types.js';

const CONF_VERSION = 1;
const VOTERS_MAX = 64;
const ID_BYTES_MAX = 1024;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

export function encodeConfState(conf: ConfState): Uint8Array {
  if (conf.voters.length > VOTERS_MAX) throw new RangeError(`too many voters: ${conf.voters.length}`);
  const ids = conf.voters.map((v) => utf8Encoder.encode(v));
  let size = 3;
  for (const id of ids) {
    if (id.byteLength > ID_BYTES_MAX) throw new RangeError('voter id too long');
    size += 2 + id.byteLength;
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = CONF_VERSION;
  view.setUint16(1, ids.length);
  let at = 3;
  for (const id of ids) {
    view.setUint16(at, id.byteLength);
    out.set(id, at + 2);
    at += 2 + id.byteLength;
  }
  if (at !== size) throw new RangeError('conf encoding size mismatch');
  return out;
}

export function decodeConfState(data: Uint8Array): ConfState {
  if (data.byteLength < 3 || data[0] !== CONF_VERSION) throw new RangeError('bad conf state encoding');
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const count = view.getUint16(1);
  if (count > VOTERS_MAX) throw new RangeError(`too many voters: ${count}`);
  const voters: NodeId[] = [];
  let at = 3;
  for (let i = 0; i < count; i++) {
    if (at + 2 > data.byteLength) throw new RangeError('truncated conf state');
    const len = view.getUint16(at);
    if (at + 2 + len > data.byteLength) throw new RangeError('truncated conf state');
    voters.push(utf8Decoder.decode(data.subarray(at + 2, at + 2 + len)));
    at += 2 + len;
  }
  if (at !== data.byteLength) throw new RangeError('trailing bytes in conf state');
  return { voters };
}

/**
 * Why `next` is not a valid single-server change of `current`, or '' when it
 * is: exactly one voter added or exactly one removed, no duplicates, never
 * empty.
 */
export function singleServerChangeError(current: readonly NodeId[], next: readonly NodeId[]): string {
  if (next.length === 0) return 'empty voter set';
  if (new Set(next).size !== next.length) return 'duplicate voter';
  if (next.some((v) => v === '')) return 'empty voter id';
  const cur = new Set(current);
  let added = 0;
  for (const v of next) if (!cur.has(v)) added++;
  const removed = current.length - (next.length - added);
  if (added + removed !== 1) return `not a single-server change (+${added} -${removed})`;
  return '';
}

export function sameVoters(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  for (const v of b) if (!s.has(v)) return false;
  return true;
}
