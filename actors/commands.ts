// Commands are what a Raft entry carries: validated on the gateway, encoded
// once to bytes, decoded by every replica's apply. Layout (big-endian):
//   op:u8 | now_ms:f64 | idLen:u8 | id | op-specific fields
// `now_ms` is written by the leader when it proposes (patchNow), so
// timestamps are the same on every replica.
import { invalid } from './errors.js';

export const enum Op {
  Put = 1,
  Append = 2,
  Tombstone = 3,
  PutContext = 4,
  Compact = 5,
  PatchMetadata = 6,
  AckArchived = 7,
}

/** Flag of commands sent through /v1/contexts: the conversation must be a context. */
export const REQUIRE_CONTEXT = 1;

export interface PutCommand {
  op: Op.Put;
  id: string;
  nowMs: number;
  /** JSON object text, or null to keep the current metadata. */
  metadataJson: string | null;
}

export interface AppendCommand {
  op: Op.Append;
  id: string;
  nowMs: number;
  /** -1 when the client sent no if_version. */
  ifVersion: number;
  tokenCount: number;
  /** '' when the client sent no idempotency key. */
  idemKey: string;
  /** Digest of the message, to tell a retry from a different message under the same key. */
  digest: string;
  /** `"role":…,"parts":…,"metadata":…` — the message object's members, without braces. */
  messageMembers: string;
  flags: number;
}

export interface TombstoneCommand {
  op: Op.Tombstone;
  id: string;
  nowMs: number;
  flags: number;
}

export interface PutContextCommand {
  op: Op.PutContext;
  id: string;
  nowMs: number;
  /** JSON of a validated ContextConfig. */
  configJson: string;
  /** JSON object text, or null to keep the current metadata. */
  metadataJson: string | null;
}

export interface ReplacementItem {
  /** `"role":…,"parts":…,"metadata":…`, as for appends. */
  members: string;
  tokenCount: number;
}

export interface CompactCommand {
  op: Op.Compact;
  id: string;
  nowMs: number;
  /** -1 when the client sent no if_version. */
  ifVersion: number;
  replacement: ReplacementItem[];
}

export interface PatchMetadataCommand {
  op: Op.PatchMetadata;
  id: string;
  nowMs: number;
  /** JSON object whose keys are upserted into the metadata. */
  patchJson: string;
  flags: number;
}

/** The archive holds seqs 1..seq of a conversation (write-behind, storage/archive). */
export interface AckArchivedCommand {
  op: Op.AckArchived;
  id: string;
  nowMs: number;
  seq: number;
  /** Newest messages kept hot (the leader's FLEETLM_TAIL_KEEP, so every replica trims alike). */
  tailKeep: number;
}

export type Command =
  | PutCommand
  | AppendCommand
  | TombstoneCommand
  | PutContextCommand
  | CompactCommand
  | PatchMetadataCommand
  | AckArchivedCommand;

const NOW_OFFSET = 1;
const ID_RE = /^[A-Za-z0-9_:-]{1,128}$/;

export function checkId(id: string): string {
  if (!ID_RE.test(id)) throw invalid('invalid_id', 'id must be 1-128 characters of [A-Za-z0-9_:-]');
  return id;
}

class Writer {
  private buf: Buffer;
  private pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  u8(v: number): this {
    this.buf[this.pos++] = v;
    return this;
  }
  u16(v: number): this {
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }
  u32(v: number): this {
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }
  f64(v: number): this {
    this.buf.writeDoubleBE(v, this.pos);
    this.pos += 8;
    return this;
  }
  /** Length-prefixed utf8 string; `width` is the prefix size in bytes. */
  str(s: string, width: 1 | 2 | 4): this {
    const len = Buffer.byteLength(s);
    if (width === 1) this.u8(len);
    else if (width === 2) this.u16(len);
    else this.u32(len);
    this.pos += this.buf.write(s, this.pos, 'utf8');
    return this;
  }
  done(): Uint8Array {
    return new Uint8Array(this.buf.buffer, this.buf.byteOffset, this.pos);
  }
}

class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  u8(): number {
    return this.buf[this.pos++];
  }
  u16(): number {
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  f64(): number {
    const v = this.buf.readDoubleBE(this.pos);
    this.pos += 8;
    return v;
  }
  str(width: 1 | 2 | 4): string {
    const len = width === 1 ? this.u8() : width === 2 ? this.u16() : this.u32();
    const s = this.buf.toString('utf8', this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
  end(): void {
    if (this.pos !== this.buf.length) throw new Error(`command has ${this.buf.length - this.pos} trailing bytes`);
  }
}

export function encodeCommand(cmd: Command): Uint8Array {
  const head = 1 + 8 + 1 + cmd.id.length;
  switch (cmd.op) {
    case Op.Put: {
      const md = cmd.metadataJson ?? '';
      const w = new Writer(head + 1 + 4 + Buffer.byteLength(md));
      w.u8(cmd.op).f64(cmd.nowMs).str(cmd.id, 1).u8(cmd.metadataJson === null ? 0 : 1).str(md, 4);
      return w.done();
    }
    case Op.Append: {
      const size =
        head + 8 + 4 + 2 + Buffer.byteLength(cmd.idemKey) + 1 + cmd.digest.length + 4 + Buffer.byteLength(cmd.messageMembers) + 1;
      const w = new Writer(size);
      w.u8(cmd.op).f64(cmd.nowMs).str(cmd.id, 1).f64(cmd.ifVersion).u32(cmd.tokenCount);
      w.str(cmd.idemKey, 2).str(cmd.digest, 1).str(cmd.messageMembers, 4).u8(cmd.flags);
      return w.done();
    }
    case Op.Tombstone:
      return new Writer(head + 1).u8(cmd.op).f64(cmd.nowMs).str(cmd.id, 1).u8(cmd.flags).done();
    case Op.PutContext: {
      const md = cmd.metadataJson ?? '';
      const w = new Writer(head + 4 + Buffer.byteLength(cmd.configJson) + 1 + 4 + Buffer.byteLength(md));
      w.u8(cmd.op).f64(cmd.nowMs).str(cmd.id, 1).str(cmd.configJson, 4).u8(cmd.metadataJson === null ? 0 : 1).str(md, 4);
      return w.done();
    }
    case Op.Compact: {
      let size = head + 8 + 4;
      for (const r of cmd.replacement) size += 4 + 4 + Buffer.byteLength(r.members);
      const w = new Writer(size);
      w.u8(cmd.op).f64(cmd.nowMs).str(cmd.id, 1).f64(cmd.ifVersion).u32(cmd.replacement.length);
      for (const r of cmd.replacement) w.u32(r.tokenCount).str(r.members, 4);
      return w.done();
    }
    case Op.PatchMetadata: {
      const w = new Writer(head + 4 + Buffer.byteLength(cmd.patchJson) + 1);
      w.u8(cmd.op).f64(cmd.nowMs).str(cmd.id, 1).str(cmd.patchJson, 4).u8(cmd.flags);
      return w.done();
    }
    case Op.AckArchived:
      return new Writer(head + 16).u8(cmd.op).f64(cmd.nowMs).str(cmd.id, 1).f64(cmd.seq).f64(cmd.tailKeep).done();
  }
}

export function decodeCommand(bytes: Uint8Array): Command {
  const r = new Reader(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const op = r.u8();
  const nowMs = r.f64();
  const id = r.str(1);
  let cmd: Command;
  if (op === Op.Put) {
    const has = r.u8();
    const md = r.str(4);
    cmd = { op, id, nowMs, metadataJson: has ? md : null };
  } else if (op === Op.Append) {
    const ifVersion = r.f64();
    const tokenCount = r.u32();
    const idemKey = r.str(2);
    const digest = r.str(1);
    const messageMembers = r.str(4);
    cmd = { op, id, nowMs, ifVersion, tokenCount, idemKey, digest, messageMembers, flags: r.u8() };
  } else if (op === Op.Tombstone) {
    cmd = { op, id, nowMs, flags: r.u8() };
  } else if (op === Op.PutContext) {
    const configJson = r.str(4);
    const has = r.u8();
    const md = r.str(4);
    cmd = { op, id, nowMs, configJson, metadataJson: has ? md : null };
  } else if (op === Op.Compact) {
    const ifVersion = r.f64();
    const n = r.u32();
    const replacement: ReplacementItem[] = [];
    for (let i = 0; i < n; i++) {
      const tokenCount = r.u32();
      replacement.push({ tokenCount, members: r.str(4) });
    }
    cmd = { op, id, nowMs, ifVersion, replacement };
  } else if (op === Op.PatchMetadata) {
    const patchJson = r.str(4);
    cmd = { op, id, nowMs, patchJson, flags: r.u8() };
  } else if (op === Op.AckArchived) {
    const seq = r.f64();
    cmd = { op, id, nowMs, seq, tailKeep: r.f64() };
  } else {
    throw new Error(`unknown command op ${op}`);
  }
  r.end();
  return cmd;
}

/** Conversation id of an encoded command, without decoding the rest. */
export function commandId(bytes: Uint8Array): string {
  const len = bytes[9];
  return Buffer.from(bytes.buffer, bytes.byteOffset + 10, len).toString('latin1');
}

/** The leader stamps the proposal time into the encoded command in place. */
export function patchNow(bytes: Uint8Array, nowMs: number): void {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setFloat64(NOW_OFFSET, nowMs);
}
