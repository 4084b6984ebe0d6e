// One simulated node's disks: the WAL (Raft log and hard state of each of
// its groups) and the state store (each group's applied state). A write
// lands in an unsynced tail; sync makes the tail durable; a crash keeps what
// was synced plus a random prefix of the unsynced writes (the kernel may have
// written some back), never a part of one write: a WAL batch is atomic
// through its commit record, a RocksDB WriteBatch is atomic too.
//
// The WAL is kept in segments as storage/wal.ts keeps it: batches go to the
// active segment until it is full (segmentBatches batches here); a new
// segment starts with the latest hard state of every group the WAL knows
// (retired ones too); after a restart the next write starts a new segment. A
// checkpoint recycles the segments, never the newest one, whose every entry
// is covered by its group's checkpointed applied index (runtime/driver.ts
// checkpoint: a group not hosted here counts as covered at any index) and
// that did not overwrite entries an older kept segment still holds. Recovery
// (openWal) replays the kept segments, drops per group what the state store
// has applied (0 for a group not hosted), and refuses a hole after that
// point, for EVERY group in the log: that failure stops the runtime's worker
// at every start.
//
// The state store also holds the replica records (runtime/driver.ts
// startReplica, retire; storage/partition-store.ts ReplicaRecord): which
// replica of a group this data dir hosts since the founding (null: none) and
// the highest serial retired here. A record is written synced. A node that
// loses its disk gets a new, empty SimDisk.
//
// As the runtime's WAL, recovery ignores a retired replica's records (they
// belong to no hosted replica): a group's records written before its last
// retirement here, and new segments no longer carry its hard state.
import { EntryType, type Entry, type HardState } from '../../runtime/raft/types.js';
import type { ReplicaRecord } from '../../storage/partition-store.js';
import { applyStateBatch, cloneImage, emptyImage, type GroupImage, type StateBatch } from './machine.js';
import type { Rng } from './rng.js';

export type WalOp =
  | { group: number; kind: 'hardState'; hardState: HardState }
  | { group: number; kind: 'entries'; entries: readonly Entry[] }
  /**
   * A snapshot was installed: the group's state is replaced and, as
   * runtime/driver.ts installSnapshot does, an empty entry at the snapshot
   * index is logged (on recovery it truncates whatever older log followed).
   */
  | { group: number; kind: 'install'; image: GroupImage };


export interface RecoveredGroup {
  image: GroupImage;
  hardState: HardState | null;
  /** The log after image.applied, contiguous from image.applied + 1. */
  entries: Entry[];
}

/** storage/wal.ts open() refused the log: the worker cannot start. */
export class WalOpenError extends Error {
  override readonly name = 'WalOpenError';
}

interface Batch {
  /** Order of the batch on this disk. */
  seq: number;
  ops: WalOp[];
}

interface Segment {
  batches: Batch[];
  /** Per group, the range of entry indexes written to this segment. */
  groups: Map<number, { min: number; max: number }>;
}

interface Replay {
  hardState: HardState | null;
  entries: Entry[];
}

export class SimDisk {
  private segments: Segment[] = [];
  /** Null after a restart: the next write starts a new segment. */
  private active: Segment | null = null;
  /** Latest durable hard state of every group the WAL knows: the prefix of a new segment. */
  private readonly hardStates = new Map<number, HardState>();
  private walUnsynced: WalOp[][] = [];
  private readonly state = new Map<number, GroupImage>();
  private stateUnsynced: StateBatch[] = [];
  private readonly records = new Map<number, ReplicaRecord>();
  /** Set by openWal(): what recovery found per group. */
  private recovered = new Map<number, Replay>();
  private nextBatch = 0;
  /** 'wal-retired' only: per group, the first batch recovery reads (durable with the retirement record). */
  private readonly logFrom = new Map<number, number>();

  constructor(private readonly segmentBatches: number) {}

  // --------------------------------------------------------- replica records

  /** Writes a group's replica record, synced (RocksDB: every earlier state write becomes durable too), with `deleteState`. */
  saveRecord(group: number, rec: ReplicaRecord, deleteState = false): void {
    this.syncState();
    if (deleteState) {
      this.state.delete(group);
      this.logFrom.set(group, this.nextBatch);
      this.hardStates.delete(group);
    }
    this.records.set(group, { ...rec });
  }

  replicaRecords(): ReadonlyMap<number, ReplicaRecord> {
    return this.records;
  }

  /** The last replica of `group` retired here (null: none). */
  retiredOf(group: number): string | null {
    return this.records.get(group)?.retired ?? null;
  }

  /** The durable applied index of a group's state (0: none). */
  appliedOf(group: number): number {
    return this.state.get(group)?.applied ?? 0;
  }

  // ------------------------------------------------------------------- writes

  writeWal(batch: WalOp[]): void {
    this.walUnsynced.push(batch);
  }

  syncWal(): void {
    for (const b of this.walUnsynced) this.appendDurable(b);
    this.walUnsynced = [];
  }

  writeState(batch: StateBatch): void {
    this.stateUnsynced.push(batch);
  }

  syncState(): void {
    for (const b of this.stateUnsynced) applyStateBatch(this.imageOf(b.group), b);
    this.stateUnsynced = [];
  }

  /** Power loss: what was not synced is lost, except a random prefix of it. */
  crash(rng: Rng): { walBatchesLost: number; stateBatchesLost: number } {
    const keepWal = rng.int(0, this.walUnsynced.length);
    const walBatchesLost = this.walUnsynced.length - keepWal;
    for (const b of this.walUnsynced.slice(0, keepWal)) this.appendDurable(b);
    this.walUnsynced = [];
    const keepState = rng.int(0, this.stateUnsynced.length);
    const stateBatchesLost = this.stateUnsynced.length - keepState;
    for (const b of this.stateUnsynced.slice(0, keepState)) applyStateBatch(this.imageOf(b.group), b);
    this.stateUnsynced = [];
    return { walBatchesLost, stateBatchesLost };
  }

  /**
   * Checkpoint done (storage/wal.ts release): segments whose entries are all
   * covered by `checkpointed(group)` are recycled, except the newest one and
   * one that overwrote entries an older kept segment still holds.
   */
  releaseWal(checkpointed: (group: number) => number): void {
    const keep: Segment[] = [];
    const olderMax = new Map<number, number>();
    this.segments.forEach((seg, k) => {
      let ok = k < this.segments.length - 1;
      if (ok) {
        for (const [g, r] of seg.groups) {
          const c = checkpointed(g);
          const om = olderMax.get(g);
          if (r.max > c || (om !== undefined && om >= r.min && om > c)) {
            ok = false;
            break;
          }
        }
      }
      if (ok) return;
      keep.push(seg);
      for (const [g, r] of seg.groups) olderMax.set(g, Math.max(olderMax.get(g) ?? 0, r.max));
    });
    if (this.active !== null && !keep.includes(this.active)) this.active = null;
    this.segments = keep;
  }

  // ----------------------------------------------------------------- recovery

  /**
   * storage/wal.ts open() with `applied(group)` (the state store's applied
   * index of a hosted group, 0 for any other): replays every segment and
   * checks every group's log is contiguous after that point. Throws
   * WalOpenError when it is not. The next write starts a new segment.
   */
  openWal(applied: (group: number) => number): void {
    const replays = new Map<number, Replay>();
    const of = (g: number): Replay => {
      let r = replays.get(g);
      if (r === undefined) replays.set(g, (r = { hardState: null, entries: [] }));
      return r;
    };
    for (const seg of this.segments) {
      for (const batch of seg.batches) {
        for (const op of batch.ops) {
          if (batch.seq < (this.logFrom.get(op.group) ?? 0)) continue;
          const r = of(op.group);
          if (op.kind === 'hardState') r.hardState = op.hardState;
          else if (op.kind === 'entries') overwrite(r.entries, op.entries);
          else overwrite(r.entries, [markerOf(op.image)]);
        }
      }
    }
    for (const [group, r] of replays) {
      const a = applied(group);
      r.entries = r.entries.filter((e) => e.index > a);
      for (let k = 0; k < r.entries.length; k++) {
        const want = a + 1 + k;
        if (r.entries[k].index !== want) {
          throw new WalOpenError(`wal: group ${group}: log gap after applied index ${a}: expected index ${want}, found ${r.entries[k].index}`);
        }
      }
      if (r.hardState !== null) this.hardStates.set(group, r.hardState);
    }
    this.recovered = replays;
    this.active = null;
  }

  /** What openWal() found for one hosted group, with its state (`founding`: its voters as of index 0). */
  recover(group: number, founding: readonly string[]): RecoveredGroup {
    const stored = this.state.get(group);
    const image = stored === undefined ? emptyImage(founding) : cloneImage(stored);
    const r = this.recovered.get(group);
    return { image, hardState: r?.hardState ?? null, entries: (r?.entries ?? []).slice() };
  }

  // ----------------------------------------------------------------- internal

  /** A batch becomes durable, at the end of the active segment or at the start of a new one. */
  private appendDurable(batch: WalOp[]): void {
    let seg = this.active;
    let ops = batch;
    if (seg === null || seg.batches.length >= this.segmentBatches) {
      seg = { batches: [], groups: new Map() };
      this.segments.push(seg);
      this.active = seg;
      // The first commit record of a segment covers its hard-state prefix too.
      const prefix: WalOp[] = [...this.hardStates].map(([group, hardState]) => ({ group, kind: 'hardState', hardState }));
      ops = [...prefix, ...batch];
    }
    seg.batches.push({ seq: this.nextBatch++, ops });
    for (const op of batch) {
      if (op.kind === 'hardState') this.hardStates.set(op.group, op.hardState);
      else if (op.kind === 'entries') this.noteRange(seg, op.group, op.entries[0].index, op.entries[op.entries.length - 1].index);
      else {
        this.noteRange(seg, op.group, op.image.applied, op.image.applied);
        // Unsynced state writes of this group are older than the snapshot: it replaces them.
        this.stateUnsynced = this.stateUnsynced.filter((b) => b.group !== op.group);
        this.state.set(op.group, cloneImage(op.image));
      }
    }
  }

  private noteRange(seg: Segment, group: number, min: number, max: number): void {
    const cur = seg.groups.get(group);
    if (cur === undefined) seg.groups.set(group, { min, max });
    else {
      cur.min = Math.min(cur.min, min);
      cur.max = Math.max(cur.max, max);
    }
  }

  private imageOf(group: number): GroupImage {
    let img = this.state.get(group);
    // The first batch of a group sets its voters too.
    if (img === undefined) this.state.set(group, (img = emptyImage([])));
    return img;
  }
}

/** A write at index i replaces everything from i on. */
function overwrite(log: Entry[], entries: readonly Entry[]): void {
  if (entries.length === 0) return;
  const first = entries[0].index;
  let keep = log.length;
  while (keep > 0 && log[keep - 1].index >= first) keep--;
  log.length = keep;
  for (const e of entries) log.push(e);
}

/** The empty entry runtime/driver.ts logs at a snapshot's index. */
function markerOf(image: GroupImage): Entry {
  return { index: image.applied, term: image.appliedTerm, type: EntryType.Normal, data: new Uint8Array(0) };
}
