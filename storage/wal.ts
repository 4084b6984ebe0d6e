// Write-ahead log for the Raft log and hard states of many groups, in
// preallocated, recycled segment files (like PostgreSQL's WAL segments).
//
// Why: on ext4, fdatasync after appending to a file also journals the size
// change (~0.7 ms for 13.5 KB here), while overwriting blocks that are already
// allocated and written costs ~0.12 ms. So every segment is fully written
// (zero-filled) before it is used, and every later write is an overwrite.
//
// Disk layout. Files `wal-<seq:16 hex>.seg` in `dir`, each `segmentBytes`
// long. A segment is part of the log when its header is valid and names its
// own seq; any other `wal-*.seg` is a spare (zero-filled, or an old segment
// renamed to a fresh seq, whose header still names its old seq).
//
//   header (32 bytes): magic u32 | version u32 | seq u64 | segmentBytes u32 | crc32c(bytes 0..20) u32 | 8 zero bytes
//   record:            len u32 | crc u32 | payload[len]      crc = crc32c(seq u64 LE || payload)
//   len 0:             end of the segment's log
//
//   payload kinds (all little endian):
//     1 entry      kind u8 | type u8 | group u16 | index f64 | term f64 | data
//     2 hardState  kind u8 | 0 u8    | group u16 | term f64  | commit f64 | vote utf8
//     3 commit     kind u8 | 0 u8[3] | records u32   (closes one write() batch)
//
// One write() = one pwrite at the segment's tail of [records..., commit,
// 8 zero bytes] + one fdatasync. The trailing zeros are the end marker; the
// next batch overwrites them. Recovery applies a batch only when its commit
// record is read, so a batch is recovered entirely or not at all. A batch that
// does not fit goes entirely to the next segment, which starts with a
// hardState record of every group (so releasing old segments never loses
// term/vote). Seqs are never reused: a record from a segment's previous life
// carries the old seq in its crc and never validates.
//
// Recovery stops a segment at len 0; a crc mismatch, a truncated or malformed
// record, or a batch without its commit record end the whole log there (writes
// are sequential, so later segments are not part of it; they become spares).
// That stop point is then overwritten with an end marker, and new writes start
// in a fresh segment, so a later recovery reads the same log plus the new
// segments.

import fs from 'node:fs';
import fsp, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { assert } from '../runtime/assert.js';
import type { Entry, EntryType, HardState } from '../runtime/raft/types.js';
import { crc32c } from './crc32c.js';

export interface WalOptions {
  dir: string;
  /** Size of every segment file. Default 32 MiB. */
  segmentBytes?: number;
  /** Spare segments kept ready so a segment switch never waits for zero-filling. Default 2. */
  spareSegments?: number;
}

export interface RecoveredGroup {
  hardState: HardState | null;
  /** Entries after applied(group): contiguous, ascending (overwrite/truncation semantics applied). */
  entries: Entry[];
}

export interface WalStats {
  /** Segments holding log data (including the one being written). */
  segments: number;
  /** Spare segments ready for use. */
  spares: number;
  bytesWritten: number;
  syncs: number;
  /** Segment switches that had to wait for a spare to be prepared. */
  spareStalls: number;
  /** Zero-filled spares created. */
  sparesCreated: number;
  /** Released segments renamed into spares. */
  segmentsRecycled: number;
  /** Released segments deleted (enough spares already, or odd size). */
  segmentsDeleted: number;
}

export interface RecoveryInfo {
  /** Log segments read (valid header, seq order). */
  segments: number;
  /** Batches (write() calls) recovered. */
  batches: number;
  /** Entry and hardState records recovered. */
  records: number;
  /**
   * Entry and hardState records that passed their crc but were not applied:
   * the incomplete batch at the stop point, everything after a bad record in
   * that segment, and everything in the segments after it.
   */
  droppedRecords: number;
  /** Segments with a valid header after the stop point, turned into spares. */
  droppedSegments: number;
  /**
   * Of droppedRecords, those found after a bad record or bad header, or in
   * later segments: a crash tears only the last write, so these mean damage
   * (lost records that may have been acknowledged). An incomplete last batch
   * alone is not counted.
   */
  validAfterDamage: number;
  /** Where the log ended abnormally; null when every segment ended cleanly. */
  stop: { seq: number; offset: number; reason: string } | null;
}

const MIB = 1 << 20;
const DEFAULT_SEGMENT_BYTES = 32 * MIB;
const MIN_SEGMENT_BYTES = 4096;
const MAX_SEGMENT_BYTES = 0xffffffff;
const MAGIC = 0x4c415746; // 'FWAL' little endian
const VERSION = 1;
const HEADER_BYTES = 32;
const HEADER_CRC_END = 20;
const REC_HEAD = 8;
const END_MARKER = 8;
const KIND_ENTRY = 1;
const KIND_HARD = 2;
const KIND_COMMIT = 3;
const ENTRY_FIXED = 20;
const HARD_FIXED = 20;
const COMMIT_PAYLOAD = 8;
const COMMIT_RECORD = REC_HEAD + COMMIT_PAYLOAD;
const ZERO_CHUNK = MIB;
const ZERO_SYNC_EVERY = 4 * MIB;
const READ_CHUNK = 4 * MIB;
const U32 = 0x1_0000_0000;
const SEG_RE = /^wal-([0-9a-f]{16})\.seg$/;
const TMP_RE = /^wal-.*\.tmp$/;
const EMPTY = new Uint8Array(0);

let zeros: Buffer | null = null;
const zeroChunk = (): Buffer => (zeros ??= Buffer.alloc(ZERO_CHUNK));

const segName = (seq: number): string => `wal-${seq.toString(16).padStart(16, '0')}.seg`;

/** Index range of one group's entries written to one segment. */
interface Range {
  min: number;
  max: number;
}

interface Segment {
  seq: number;
  file: string;
  size: number;
  groups: Map<number, Range>;
}

interface Spare {
  seq: number;
  file: string;
  size: number;
}

interface PendingRange {
  min: number;
  max: number;
  last: number;
}

/** A growable byte buffer, reused across batches. */
class Bytes {
  buf: Buffer;
  len = 0;
  constructor(initial: number) {
    this.buf = Buffer.allocUnsafe(initial);
  }
  /** Makes room for n more bytes and returns their offset (len advances by n). */
  reserve(n: number): number {
    const off = this.len;
    const need = off + n;
    if (need > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2));
      this.buf.copy(next, 0, 0, off);
      this.buf = next;
    }
    this.len = need;
    return off;
  }
}

function putSeq(buf: Buffer, off: number, seq: number): void {
  buf.writeUInt32LE(seq % U32, off);
  buf.writeUInt32LE(Math.floor(seq / U32), off + 4);
}

function getSeq(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * U32;
}

/** crc32c(seq u64 LE || payload) of the record at off: seq is put in the record's 8 head bytes for the computation. */
function recordCrc(buf: Buffer, off: number, plen: number, seq: number): number {
  const a = buf.readUInt32LE(off);
  const b = buf.readUInt32LE(off + 4);
  putSeq(buf, off, seq);
  const crc = crc32c(buf, off, off + REC_HEAD + plen);
  buf.writeUInt32LE(a, off);
  buf.writeUInt32LE(b, off + 4);
  return crc;
}

/** Fills in len/crc of every record in buf[0, end) for segment seq (payload lengths are already in place). */
function sealRecords(buf: Buffer, end: number, seq: number): void {
  let off = 0;
  while (off < end) {
    const plen = buf.readUInt32LE(off);
    putSeq(buf, off, seq);
    const crc = crc32c(buf, off, off + REC_HEAD + plen);
    buf.writeUInt32LE(plen, off);
    buf.writeUInt32LE(crc, off + 4);
    off += REC_HEAD + plen;
  }
  assert(off === end, `wal: record framing overran the batch (${off} != ${end})`);
}

function encodeHeader(buf: Buffer, off: number, seq: number, segmentBytes: number): void {
  buf.fill(0, off, off + HEADER_BYTES);
  buf.writeUInt32LE(MAGIC, off);
  buf.writeUInt32LE(VERSION, off + 4);
  putSeq(buf, off + 8, seq);
  buf.writeUInt32LE(segmentBytes, off + 16);
  buf.writeUInt32LE(crc32c(buf, off, off + HEADER_CRC_END), off + HEADER_CRC_END);
}

type HeaderKind =
  | { kind: 'log'; seq: number }
  | { kind: 'spare'; oldSeq: number }
  | { kind: 'corrupt'; why: string }
  | { kind: 'version'; version: number };

function classifyHeader(h: Buffer, fileSeq: number): HeaderKind {
  let allZero = true;
  for (let i = 0; i < HEADER_BYTES; i++) {
    if (h[i] !== 0) {
      allZero = false;
      break;
    }
  }
  if (allZero) return { kind: 'spare', oldSeq: 0 };
  if (h.readUInt32LE(0) !== MAGIC) return { kind: 'corrupt', why: 'bad header magic' };
  if (crc32c(h, 0, HEADER_CRC_END) !== h.readUInt32LE(HEADER_CRC_END)) return { kind: 'corrupt', why: 'bad header crc' };
  const version = h.readUInt32LE(4);
  const seq = getSeq(h, 8);
  if (seq !== fileSeq) return { kind: 'spare', oldSeq: seq };
  if (version !== VERSION) return { kind: 'version', version };
  return { kind: 'log', seq };
}

async function writeFully(fh: FileHandle, buf: Buffer, off: number, len: number, pos: number): Promise<void> {
  while (len > 0) {
    const { bytesWritten } = await fh.write(buf, off, len, pos);
    assert(bytesWritten > 0, `wal: write returned ${bytesWritten}`);
    off += bytesWritten;
    pos += bytesWritten;
    len -= bytesWritten;
  }
}

function writeFullySync(fd: number, buf: Buffer, off: number, len: number, pos: number): void {
  while (len > 0) {
    const n = fs.writeSync(fd, buf, off, len, pos);
    assert(n > 0, `wal: write returned ${n}`);
    off += n;
    pos += n;
    len -= n;
  }
}

async function readFully(fh: FileHandle, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, off + done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

function checkGroup(group: number): void {
  if (!Number.isInteger(group) || group < 0 || group > 0xffff) throw new Error(`wal: group ${group} is not a u16`);
}

function hardStateBytes(hs: HardState): number {
  return REC_HEAD + HARD_FIXED + Buffer.byteLength(hs.vote, 'utf8');
}

function encodeHardState(b: Bytes, group: number, hs: HardState): void {
  const vlen = Buffer.byteLength(hs.vote, 'utf8');
  const plen = HARD_FIXED + vlen;
  const o = b.reserve(REC_HEAD + plen);
  const buf = b.buf;
  buf.writeUInt32LE(plen, o);
  buf[o + 8] = KIND_HARD;
  buf[o + 9] = 0;
  buf.writeUInt16LE(group, o + 10);
  buf.writeDoubleLE(hs.term, o + 12);
  buf.writeDoubleLE(hs.commit, o + 20);
  if (vlen > 0) buf.write(hs.vote, o + 28, vlen, 'utf8');
}

/** Reads one segment file lazily, in READ_CHUNK steps, into a shared buffer. */
class SegmentReader {
  filled = 0;
  constructor(
    private readonly fh: FileHandle,
    readonly buf: Buffer,
    readonly size: number,
  ) {}
  async ensure(end: number): Promise<void> {
    if (end <= this.filled) return;
    const target = Math.min(this.size, Math.max(end, this.filled + READ_CHUNK));
    const n = await readFully(this.fh, this.buf, this.filled, target - this.filled, this.filled);
    this.filled += n;
    if (this.filled < target) throw new Error(`wal: short read (file shrank while reading?)`);
  }
}

type Op =
  | { kind: typeof KIND_ENTRY; group: number; entry: Entry }
  | { kind: typeof KIND_HARD; group: number; hs: HardState };

interface GroupBuild {
  hs: HardState | null;
  /** Ascending; gaps possible until filtered by applied (released segments). */
  entries: Entry[];
  applied: number;
}

export class Wal {
  private readonly dir: string;
  private readonly segmentBytes: number;
  private readonly spareTarget: number;
  /** Released segments beyond this many spares are deleted instead of recycled. */
  private readonly spareCap: number;
  private dirFh: FileHandle;

  /** Log segments in seq order; the last one is `active` once a write happened. */
  private log: Segment[];
  private active: Segment | null = null;
  private activeFh: FileHandle | null = null;
  private activeOff = 0;
  /** Seq of the newest segment that has had a write completed (its header and hardState prefix are durable). */
  private durableSeq: number;
  private spares: Spare[] = [];
  private nextSeq: number;

  /** Latest hard state per group as of the last batch handed to the disk (prefix of the next segment). */
  private readonly hardStates = new Map<number, HardState>();
  private prefixBytes = 0;

  private pending = new Bytes(256 * 1024);
  private other = new Bytes(256 * 1024);
  private pendingRecords = 0;
  private pendingGroups = new Map<number, PendingRange>();
  private otherGroups = new Map<number, PendingRange>();
  private pendingHs = new Map<number, HardState>();
  private otherHs = new Map<number, HardState>();
  private readonly prefix = new Bytes(64 * 1024);

  private writing: Promise<void> | null = null;
  private failed: Error | null = null;
  private closing = false;
  private closed = false;

  /** Serial chain of spare preparation jobs (creating, recycling): keeps spare seqs ascending. */
  private prep: Promise<void> = Promise.resolve();
  private prepCreates = 0;
  private prepError: Error | null = null;
  private tmpCounter = 0;

  private bytesWritten = 0;
  private syncs = 0;
  private spareStalls = 0;
  private sparesCreated = 0;
  private segmentsRecycled = 0;
  private segmentsDeleted = 0;

  /** What open() found on disk. */
  readonly recovery: RecoveryInfo;

  private constructor(
    opts: { dir: string; segmentBytes: number; spareSegments: number },
    dirFh: FileHandle,
    log: Segment[],
    nextSeq: number,
    recovery: RecoveryInfo,
  ) {
    this.dir = opts.dir;
    this.segmentBytes = opts.segmentBytes;
    this.spareTarget = opts.spareSegments;
    this.spareCap = opts.spareSegments + Math.max(1, opts.spareSegments);
    this.dirFh = dirFh;
    this.log = log;
    this.nextSeq = nextSeq;
    this.durableSeq = log.length > 0 ? log[log.length - 1].seq : 0;
    this.recovery = recovery;
  }

  // ------------------------------------------------------------------ open / recovery

  static async open(
    opts: WalOptions,
    applied: (group: number) => number,
  ): Promise<{ wal: Wal; groups: Map<number, RecoveredGroup> }> {
    const segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    const spareSegments = opts.spareSegments ?? 2;
    if (!Number.isInteger(segmentBytes) || segmentBytes < MIN_SEGMENT_BYTES || segmentBytes > MAX_SEGMENT_BYTES) {
      throw new Error(`wal: segmentBytes ${segmentBytes} out of range [${MIN_SEGMENT_BYTES}, ${MAX_SEGMENT_BYTES}]`);
    }
    if (!Number.isInteger(spareSegments) || spareSegments < 0) throw new Error(`wal: spareSegments ${spareSegments} invalid`);
    const dir = opts.dir;
    await fsp.mkdir(dir, { recursive: true });

    const names = await fsp.readdir(dir);
    for (const n of names) if (TMP_RE.test(n)) await fsp.rm(path.join(dir, n), { force: true });
    const files = names
      .map((n) => ({ n, m: SEG_RE.exec(n) }))
      .filter((x): x is { n: string; m: RegExpExecArray } => x.m !== null)
      .map((x) => ({ seq: parseInt(x.m[1], 16), file: path.join(dir, x.n) }))
      .sort((a, b) => a.seq - b.seq);

    const info: RecoveryInfo = { segments: 0, batches: 0, records: 0, droppedRecords: 0, droppedSegments: 0, validAfterDamage: 0, stop: null };
    const builds = new Map<number, GroupBuild>();
    const build = (group: number): GroupBuild => {
      let g = builds.get(group);
      if (g === undefined) {
        const a = applied(group);
        // Infinity: a group whose records are all obsolete here (not hosted).
        if (!(Number.isSafeInteger(a) || a === Number.POSITIVE_INFINITY) || a < 0) throw new Error(`wal: applied(${group}) returned ${a}`);
        g = { hs: null, entries: [], applied: a };
        builds.set(group, g);
      }
      return g;
    };

    const log: Segment[] = [];
    const spareFiles: { seq: number; file: string; size: number }[] = [];
    let maxSeq = 0;
    let ended = false;
    let seal: { file: string; offset: number } | null = null;
    let readBuf: Buffer | null = null;
    const header = Buffer.alloc(HEADER_BYTES);

    for (const f of files) {
      maxSeq = Math.max(maxSeq, f.seq);
      const fh = await fsp.open(f.file, 'r');
      try {
        const size = (await fh.stat()).size;
        const got = await readFully(fh, header, 0, HEADER_BYTES, 0);
        if (got < HEADER_BYTES) {
          // Cannot be a segment we finished preparing; nothing of ours is in it.
          spareFiles.push({ seq: f.seq, file: f.file, size: -1 });
          continue;
        }
        const h = classifyHeader(header, f.seq);
        if (h.kind === 'version') throw new Error(`wal: ${f.file} has format version ${h.version}, this build reads ${VERSION}`);
        if (h.kind === 'spare') {
          maxSeq = Math.max(maxSeq, h.oldSeq);
          spareFiles.push({ seq: f.seq, file: f.file, size });
          continue;
        }
        if (readBuf === null || readBuf.length < size) readBuf = Buffer.allocUnsafe(Math.max(size, readBuf?.length ?? 0));
        const rd = new SegmentReader(fh, readBuf, size);
        if (ended) {
          // After the end of the log: not part of it, whatever it holds.
          if (h.kind === 'log') {
            info.droppedSegments++;
            const n = await countValid(rd, HEADER_BYTES, f.seq);
            info.droppedRecords += n;
            info.validAfterDamage += n;
          }
          spareFiles.push({ seq: f.seq, file: f.file, size });
          continue;
        }
        if (h.kind === 'corrupt') {
          ended = true;
          info.stop = { seq: f.seq, offset: 0, reason: h.why };
          const n = await countValid(rd, HEADER_BYTES, f.seq);
          info.droppedRecords += n;
          info.validAfterDamage += n;
          spareFiles.push({ seq: f.seq, file: f.file, size });
          continue;
        }

        // A log segment: apply its committed batches.
        const seg: Segment = { seq: f.seq, file: f.file, size, groups: new Map() };
        // Entries the state machine already covers are only tracked by index (no data copy).
        const r = await scanSegment(rd, f.seq, (group) => build(group).applied, (ops) => {
          for (const op of ops) {
            const g = build(op.group);
            if (op.kind === KIND_HARD) {
              g.hs = op.hs;
              continue;
            }
            const e = op.entry;
            const list = g.entries;
            while (list.length > 0 && list[list.length - 1].index >= e.index) list.pop();
            list.push(e);
            const rg = seg.groups.get(op.group);
            if (rg === undefined) seg.groups.set(op.group, { min: e.index, max: e.index });
            else {
              if (e.index < rg.min) rg.min = e.index;
              if (e.index > rg.max) rg.max = e.index;
            }
          }
          info.batches++;
          info.records += ops.length;
        });
        info.segments++;
        if (!r.clean) {
          ended = true;
          info.stop = { seq: f.seq, offset: r.batchStart, reason: r.reason };
          info.droppedRecords += r.dropped;
          info.validAfterDamage += r.validAfterBad;
          if (r.batches === 0) {
            // Nothing committed in it: reuse the file as a spare under a fresh seq.
            spareFiles.push({ seq: f.seq, file: f.file, size });
            continue;
          }
          seal = { file: f.file, offset: r.batchStart };
        }
        log.push(seg);
      } finally {
        await fh.close();
      }
    }

    // Per group: drop what the state machine has, and refuse a hole after it.
    const groups = new Map<number, RecoveredGroup>();
    for (const [group, g] of builds) {
      let i = 0;
      while (i < g.entries.length && g.entries[i].index <= g.applied) i++;
      const entries = i === 0 ? g.entries : g.entries.slice(i);
      for (let k = 0; k < entries.length; k++) {
        const want = g.applied + 1 + k;
        if (entries[k].index !== want) {
          throw new Error(
            `wal: group ${group}: log gap after applied index ${g.applied}: expected index ${want}, found ${entries[k].index}` +
              ` (entries ${want}..${entries[k].index - 1} are missing)`,
          );
        }
      }
      groups.set(group, { hardState: g.hs, entries });
    }

    // Disk fix-ups, only now that recovery succeeded. Every file that is not
    // part of the log gets a seq never used before (so records it may still
    // hold never validate again), then the torn tail is sealed.
    const dirFh = await fsp.open(dir, 'r');
    let nextSeq = maxSeq + 1;
    const spares: Spare[] = [];
    try {
      for (const s of spareFiles) {
        if (s.size !== segmentBytes) {
          await fsp.rm(s.file, { force: true });
          continue;
        }
        const seq = nextSeq++;
        const file = path.join(dir, segName(seq));
        await fsp.rename(s.file, file);
        spares.push({ seq, file, size: s.size });
      }
      if (spareFiles.length > 0) await dirFh.sync();
      if (seal !== null) {
        const fh = await fsp.open(seal.file, 'r+');
        try {
          await writeFully(fh, Buffer.alloc(END_MARKER), 0, END_MARKER, seal.offset);
          await fh.datasync();
        } finally {
          await fh.close();
        }
      }
    } catch (err) {
      await dirFh.close();
      throw err;
    }

    const wal = new Wal({ dir, segmentBytes, spareSegments }, dirFh, log, nextSeq, info);
    wal.spares = spares;
    for (const [group, g] of groups) if (g.hardState !== null) wal.rememberHardState(group, g.hardState);
    if (wal.spares.length === 0) await wal.runPrep(() => wal.createSpare(true));
    if (wal.prepError) {
      await dirFh.close();
      throw wal.prepError;
    }
    wal.topUp();
    return { wal, groups };
  }

  // ------------------------------------------------------------------ buffering

  /**
   * Forgets the group's log and hard state (a new replica of a group whose
   * retired one left records here): an entry at index 0, which recovery
   * treats like any write at an index (it replaces everything from there
   * on) and then drops as covered by any applied index.
   */
  resetGroup(group: number): void {
    this.putEntries(group, [{ index: 0, term: 0, type: 0 as EntryType, data: EMPTY }], 0);
    this.setHardState(group, { term: 0, vote: '', commit: 0 });
  }

  appendEntries(group: number, entries: Entry[]): void {
    this.putEntries(group, entries, 1);
  }

  /** Entries from index `lowest` on (only resetGroup writes index 0). */
  private putEntries(group: number, entries: Entry[], lowest: number): void {
    this.checkUsable();
    checkGroup(group);
    if (entries.length === 0) return;
    const first = entries[0].index;
    if (!Number.isSafeInteger(first) || first < lowest) throw new Error(`wal: group ${group}: bad entry index ${first}`);
    const pr = this.pendingGroups.get(group);
    assert(
      pr === undefined || first <= pr.last + 1,
      `wal: group ${group}: entries not contiguous within the batch: ${first} follows ${pr?.last}`,
    );
    for (let i = 1; i < entries.length; i++) {
      const e = entries[i];
      assert(e.index === first + i, `wal: group ${group}: entries not contiguous: index ${e.index} at position ${i} after ${first}`);
    }
    const b = this.pending;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const plen = ENTRY_FIXED + e.data.length;
      const o = b.reserve(REC_HEAD + plen);
      const buf = b.buf;
      buf.writeUInt32LE(plen, o);
      buf[o + 8] = KIND_ENTRY;
      buf[o + 9] = e.type;
      buf.writeUInt16LE(group, o + 10);
      buf.writeDoubleLE(e.index, o + 12);
      buf.writeDoubleLE(e.term, o + 20);
      buf.set(e.data, o + 28);
    }
    this.pendingRecords += entries.length;
    const last = first + entries.length - 1;
    if (pr === undefined) this.pendingGroups.set(group, { min: first, max: last, last });
    else {
      if (first < pr.min) pr.min = first;
      if (last > pr.max) pr.max = last;
      pr.last = last;
    }
  }

  setHardState(group: number, hs: HardState): void {
    this.checkUsable();
    checkGroup(group);
    if (!Number.isFinite(hs.term) || !Number.isFinite(hs.commit)) throw new Error(`wal: group ${group}: bad hard state ${JSON.stringify(hs)}`);
    encodeHardState(this.pending, group, hs);
    this.pendingRecords++;
    this.pendingHs.set(group, { term: hs.term, vote: hs.vote, commit: hs.commit });
  }

  /** Bytes of records buffered for the next write(). */
  get pendingBytes(): number {
    return this.pending.len;
  }

  // ------------------------------------------------------------------ writing

  /**
   * One pwrite of everything buffered + one fdatasync, done before this
   * returns unless a new segment must be opened first; the promise resolves
   * when durable. At most one write in flight.
   */
  write(): Promise<void> {
    assert(this.writing === null, 'wal: write() called while another write is in flight');
    this.checkUsable();
    if (this.pending.len === 0) return Promise.resolve();
    const p = this.doWrite().finally(() => {
      this.writing = null;
    });
    this.writing = p;
    return p;
  }

  private async doWrite(): Promise<void> {
    // Close the batch and take it; appends from now on go to the next one.
    const cb = this.pending;
    const co = cb.reserve(COMMIT_RECORD);
    cb.buf.writeUInt32LE(COMMIT_PAYLOAD, co);
    cb.buf.writeUInt32LE(KIND_COMMIT, co + 8);
    cb.buf.writeUInt32LE(this.pendingRecords, co + 12);
    const recLen = cb.len;
    const mo = cb.reserve(END_MARKER);
    cb.buf.fill(0, mo, mo + END_MARKER);

    const batch = cb;
    this.pending = this.other;
    this.other = batch;
    this.pending.len = 0;
    this.pendingRecords = 0;
    const groups = this.pendingGroups;
    this.pendingGroups = this.otherGroups;
    this.otherGroups = groups;
    const hsBatch = this.pendingHs;
    this.pendingHs = this.otherHs;
    this.otherHs = hsBatch;

    try {
      if (HEADER_BYTES + this.prefixBytes + recLen + END_MARKER > this.segmentBytes) {
        throw new Error(
          `wal: batch of ${recLen} bytes (+${this.prefixBytes} bytes of hard states) does not fit a ${this.segmentBytes}-byte segment`,
        );
      }
      let seg = this.active;
      let fh = this.activeFh;
      let pos = this.activeOff;
      let prefixLen = 0;
      let oldFh: FileHandle | null = null;
      if (seg === null || fh === null || pos + recLen + END_MARKER > seg.size) {
        const spare = await this.takeSpare();
        const lastSeq = this.log.length > 0 ? this.log[this.log.length - 1].seq : 0;
        assert(spare.seq > lastSeq, `wal: segment seq not increasing: ${spare.seq} after ${lastSeq}`);
        assert(spare.size === this.segmentBytes, `wal: spare ${spare.file} has ${spare.size} bytes`);
        const nfh = await fsp.open(spare.file, 'r+');
        // Header, then the latest hard state of every group (before this batch).
        const pb = this.prefix;
        pb.len = 0;
        encodeHeader(pb.buf, pb.reserve(HEADER_BYTES), spare.seq, spare.size);
        for (const [group, hs] of this.hardStates) encodeHardState(pb, group, hs);
        prefixLen = pb.len;
        sealRecords(pb.buf.subarray(HEADER_BYTES), prefixLen - HEADER_BYTES, spare.seq);
        // The first commit record of the segment covers the prefix records too.
        batch.buf.writeUInt32LE(batch.buf.readUInt32LE(co + 12) + this.hardStates.size, co + 12);
        oldFh = fh;
        seg = { seq: spare.seq, file: spare.file, size: spare.size, groups: new Map() };
        fh = nfh;
        pos = 0;
        this.log.push(seg);
        this.active = seg;
        this.activeFh = nfh;
        this.activeOff = prefixLen;
      }
      for (const [group, hs] of hsBatch) this.rememberHardState(group, hs);
      hsBatch.clear();
      for (const [group, r] of groups) {
        const cur = seg.groups.get(group);
        if (cur === undefined) seg.groups.set(group, { min: r.min, max: r.max });
        else {
          if (r.min < cur.min) cur.min = r.min;
          if (r.max > cur.max) cur.max = r.max;
        }
      }
      groups.clear();
      sealRecords(batch.buf, recLen, seg.seq);

      const total = batch.len;
      const start = this.activeOff;
      this.activeOff = start + recLen;
      // Synchronous on purpose: through the libuv pool, a write and an
      // fdatasync cost two thread round trips, 145–178 µs of CPU per batch
      // on this project's VMs against 74–77 µs blocking (docs/BENCHMARKS.md,
      // "Synchronous WAL writes"); the caller issues its other I/O first.
      if (prefixLen > 0) {
        const bufs = [this.prefix.buf.subarray(0, prefixLen), batch.buf.subarray(0, total)];
        const bytesWritten = fs.writevSync(fh.fd, bufs, pos);
        if (bytesWritten < prefixLen + total) {
          const rest = Buffer.concat(bufs).subarray(bytesWritten);
          writeFullySync(fh.fd, rest, 0, rest.length, pos + bytesWritten);
        }
        this.bytesWritten += prefixLen + total;
      } else {
        writeFullySync(fh.fd, batch.buf, 0, total, start);
        this.bytesWritten += total;
      }
      fs.fdatasyncSync(fh.fd);
      this.syncs++;
      this.durableSeq = seg.seq;
      if (oldFh !== null) await oldFh.close();
    } catch (err) {
      // Bytes of this batch may or may not be on disk: stop here (fail-stop).
      this.failed ??= err instanceof Error ? err : new Error(String(err));
      throw err;
    }
  }

  private rememberHardState(group: number, hs: HardState): void {
    const old = this.hardStates.get(group);
    if (old !== undefined) this.prefixBytes -= hardStateBytes(old);
    this.hardStates.set(group, hs);
    this.prefixBytes += hardStateBytes(hs);
  }

  private checkUsable(): void {
    if (this.closed || this.closing) throw new Error('wal: closed');
    if (this.failed) throw new Error(`wal: failed earlier: ${this.failed.message}`);
  }

  // ------------------------------------------------------------------ spares

  private runPrep(job: () => Promise<void>): Promise<void> {
    const p = this.prep.then(job).catch((err: unknown) => {
      this.prepError = err instanceof Error ? err : new Error(String(err));
    });
    this.prep = p;
    return p;
  }

  /** Queues zero-filled spares in the background up to spareSegments. */
  private topUp(): void {
    while (!this.closing && this.spares.length + this.prepCreates < this.spareTarget) {
      this.prepCreates++;
      void this.runPrep(async () => {
        try {
          await this.createSpare(false);
        } finally {
          this.prepCreates--;
        }
      });
    }
  }

  private async takeSpare(): Promise<Spare> {
    if (this.spares.length === 0) {
      this.spareStalls++;
      this.prepError = null;
      // Anything queued runs first (it may produce one); then make one for sure.
      await this.runPrep(() => (this.spares.length === 0 ? this.createSpare(true) : Promise.resolve()));
      if (this.spares.length === 0) throw this.prepError ?? new Error('wal: no spare segment could be prepared');
    }
    const s = this.spares.shift() as Spare;
    this.topUp();
    return s;
  }

  /** Writes a new segment file full of zeros (1 MiB writes), syncs it, then names it with the next seq. */
  private async createSpare(force: boolean): Promise<void> {
    if (!force && (this.closing || this.spares.length >= this.spareTarget)) return;
    const tmp = path.join(this.dir, `wal-${process.pid}-${this.tmpCounter++}.tmp`);
    const fh = await fsp.open(tmp, 'w');
    try {
      const z = zeroChunk();
      let unsynced = 0;
      for (let off = 0; off < this.segmentBytes; off += ZERO_CHUNK) {
        const n = Math.min(ZERO_CHUNK, this.segmentBytes - off);
        await writeFully(fh, z, 0, n, off);
        unsynced += n;
        if (unsynced >= ZERO_SYNC_EVERY) {
          await fh.datasync();
          unsynced = 0;
        }
      }
      await fh.sync();
    } catch (err) {
      await fh.close();
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    const seq = this.nextSeq++;
    const file = path.join(this.dir, segName(seq));
    await fsp.rename(tmp, file);
    await this.dirFh.sync();
    this.spares.push({ seq, file, size: this.segmentBytes });
    this.sparesCreated++;
  }

  /** Renames released segments to fresh seqs (spares) or deletes them; one directory sync. */
  private async recycle(segs: Segment[]): Promise<void> {
    const ready: Spare[] = [];
    for (const s of segs) {
      if (s.size === this.segmentBytes && !this.closing && this.spares.length + ready.length < this.spareCap) {
        const seq = this.nextSeq++;
        const file = path.join(this.dir, segName(seq));
        await fsp.rename(s.file, file);
        ready.push({ seq, file, size: s.size });
        this.segmentsRecycled++;
      } else {
        await fsp.rm(s.file, { force: true });
        this.segmentsDeleted++;
      }
    }
    // Renames must be durable before a spare is written under its new name.
    await this.dirFh.sync();
    this.spares.push(...ready);
  }

  // ------------------------------------------------------------------ release / close / stats

  /**
   * Segments whose every entry has index <= checkpointed(group) for its group
   * become spares (or are deleted). Call after the state machine is durably
   * stored up to those indexes; open() must later be given applied(group) >=
   * the checkpointed(group) used here.
   */
  async release(checkpointed: (group: number) => number): Promise<void> {
    if (this.closed || this.closing) throw new Error('wal: closed');
    const ckpt = new Map<number, number>();
    const cp = (g: number): number => {
      let v = ckpt.get(g);
      if (v === undefined) {
        v = checkpointed(g);
        if (typeof v !== 'number' || Number.isNaN(v)) throw new Error(`wal: checkpointed(${g}) returned ${v}`);
        ckpt.set(g, v);
      }
      return v;
    };
    const keep: Segment[] = [];
    const drop: Segment[] = [];
    // Max entry index per group over the older segments that stay.
    const olderMax = new Map<number, number>();
    for (const seg of this.log) {
      // A segment can go only once a later segment's hard-state prefix is durable.
      let ok = seg !== this.active && seg.seq < this.durableSeq;
      if (ok) {
        for (const [g, r] of seg.groups) {
          const c = cp(g);
          if (r.max > c) {
            ok = false;
            break;
          }
          // If this segment overwrote (truncated) entries of an older segment
          // that stays, dropping it would resurrect those entries.
          const om = olderMax.get(g);
          if (om !== undefined && om >= r.min && om > c) {
            ok = false;
            break;
          }
        }
      }
      if (ok) drop.push(seg);
      else {
        keep.push(seg);
        for (const [g, r] of seg.groups) olderMax.set(g, Math.max(olderMax.get(g) ?? 0, r.max));
      }
    }
    if (drop.length === 0) return;
    this.log = keep;
    this.prepError = null;
    await this.runPrep(() => this.recycle(drop));
    if (this.prepError) throw this.prepError;
  }

  /** Waits for the write in flight and background spare work, then closes files. Buffered, unwritten records are dropped. */
  async close(): Promise<void> {
    if (this.closed || this.closing) return;
    this.closing = true;
    if (this.writing) await this.writing.catch(() => undefined);
    await this.prep;
    if (this.activeFh) await this.activeFh.close();
    this.activeFh = null;
    await this.dirFh.close();
    this.closed = true;
  }

  stats(): WalStats {
    return {
      segments: this.log.length,
      spares: this.spares.length,
      bytesWritten: this.bytesWritten,
      syncs: this.syncs,
      spareStalls: this.spareStalls,
      sparesCreated: this.sparesCreated,
      segmentsRecycled: this.segmentsRecycled,
      segmentsDeleted: this.segmentsDeleted,
    };
  }
}

// ------------------------------------------------------------------ recovery helpers

interface ScanResult {
  clean: boolean;
  reason: string;
  /** Start of the first batch not applied (the seal point when not clean). */
  batchStart: number;
  batches: number;
  /** Valid records not applied (incomplete batch, and valid-looking records after a bad one). */
  dropped: number;
  /** Of `dropped`, those after a bad record. */
  validAfterBad: number;
}

/** Applies every committed batch of a log segment, in order, through `apply`. */
async function scanSegment(
  rd: SegmentReader,
  seq: number,
  appliedOf: (group: number) => number,
  apply: (ops: Op[]) => void,
): Promise<ScanResult> {
  const buf = rd.buf;
  const size = rd.size;
  let off = HEADER_BYTES;
  let batchStart = off;
  let batches = 0;
  let ops: Op[] = [];
  let reason: string;
  let bad = false;
  for (;;) {
    if (off + REC_HEAD > size) {
      reason = 'end of file';
      break;
    }
    await rd.ensure(off + REC_HEAD);
    const plen = buf.readUInt32LE(off);
    if (plen === 0) {
      reason = 'end marker';
      break;
    }
    if (plen > size - off - REC_HEAD) {
      reason = `truncated record (len ${plen})`;
      bad = true;
      break;
    }
    await rd.ensure(off + REC_HEAD + plen);
    if (recordCrc(buf, off, plen, seq) !== buf.readUInt32LE(off + 4)) {
      reason = 'crc mismatch';
      bad = true;
      break;
    }
    const p = off + REC_HEAD;
    const kind = buf[p];
    if (kind === KIND_ENTRY && plen >= ENTRY_FIXED) {
      const group = buf.readUInt16LE(p + 2);
      const index = buf.readDoubleLE(p + 4);
      let data = EMPTY;
      if (index > appliedOf(group)) {
        data = new Uint8Array(plen - ENTRY_FIXED);
        data.set(buf.subarray(p + ENTRY_FIXED, p + plen));
      }
      ops.push({ kind: KIND_ENTRY, group, entry: { index, term: buf.readDoubleLE(p + 12), type: buf[p + 1] as EntryType, data } });
    } else if (kind === KIND_HARD && plen >= HARD_FIXED) {
      ops.push({
        kind: KIND_HARD,
        group: buf.readUInt16LE(p + 2),
        hs: { term: buf.readDoubleLE(p + 4), commit: buf.readDoubleLE(p + 12), vote: buf.toString('utf8', p + HARD_FIXED, p + plen) },
      });
    } else if (kind === KIND_COMMIT && plen === COMMIT_PAYLOAD && buf.readUInt32LE(p + 4) === ops.length) {
      apply(ops);
      ops = [];
      batches++;
      batchStart = off + REC_HEAD + plen;
    } else {
      reason = `malformed record (kind ${kind}, len ${plen})`;
      bad = true;
      break;
    }
    off += REC_HEAD + plen;
  }
  const validAfterBad = bad ? await countValid(rd, off, seq) : 0;
  if (!bad && ops.length > 0) reason = `incomplete batch (${ops.length} records without commit) at ${reason}`;
  return { clean: !bad && ops.length === 0, reason, batchStart, batches, dropped: ops.length + validAfterBad, validAfterBad };
}

/** Entry/hardState records from `off` on whose crc validates for `seq` (walking by len, skipping bad ones). */
async function countValid(rd: SegmentReader, off: number, seq: number): Promise<number> {
  const buf = rd.buf;
  let n = 0;
  while (off + REC_HEAD <= rd.size) {
    await rd.ensure(off + REC_HEAD);
    const plen = buf.readUInt32LE(off);
    if (plen === 0 || plen > rd.size - off - REC_HEAD) break;
    await rd.ensure(off + REC_HEAD + plen);
    if (recordCrc(buf, off, plen, seq) === buf.readUInt32LE(off + 4)) {
      const kind = buf[off + REC_HEAD];
      if (kind === KIND_ENTRY || kind === KIND_HARD) n++;
    }
    off += REC_HEAD + plen;
  }
  return n;
}
