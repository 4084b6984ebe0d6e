// One simulated node's disks: the WAL (Raft log and hard state of each of
// its groups) and the state store (each group's applied state). A write
// lands in an unsynced tail; sync makes the tail durable; a crash keeps what
// was synced plus a random prefix of the unsynced writes (the kernel may have
// written some back), never a part of one write: a WAL batch is atomic
// through its commit record, a RocksDB WriteBatch is atomic too.
import type { Entry, HardState } from '../../runtime/raft/types.js';
import { applyStateBatch, cloneImage, emptyImage, type GroupImage, type StateBatch } from './machine.js';
import type { Rng } from './rng.js';

export type WalOp =
  | { group: number; kind: 'hardState'; hardState: HardState }
  | { group: number; kind: 'entries'; entries: readonly Entry[] }
  /** A snapshot was installed: the group's state is replaced and its log restarts after it. */
  | { group: number; kind: 'install'; image: GroupImage };

interface WalGroup {
  hardState: HardState | null;
  /** Ascending; a write at index i replaces everything from i on. */
  entries: Entry[];
}

export interface RecoveredGroup {
  image: GroupImage;
  hardState: HardState | null;
  /** The log after image.applied, contiguous from image.applied + 1. */
  entries: Entry[];
}

export class SimDisk {
  private readonly wal = new Map<number, WalGroup>();
  private walUnsynced: WalOp[][] = [];
  private readonly state = new Map<number, GroupImage>();
  private stateUnsynced: StateBatch[] = [];

  writeWal(batch: WalOp[]): void {
    this.walUnsynced.push(batch);
  }

  syncWal(): void {
    for (const b of this.walUnsynced) this.applyWal(b);
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
    for (const b of this.walUnsynced.slice(0, keepWal)) this.applyWal(b);
    this.walUnsynced = [];
    const keepState = rng.int(0, this.stateUnsynced.length);
    const stateBatchesLost = this.stateUnsynced.length - keepState;
    for (const b of this.stateUnsynced.slice(0, keepState)) applyStateBatch(this.imageOf(b.group), b);
    this.stateUnsynced = [];
    return { walBatchesLost, stateBatchesLost };
  }

  /** Checkpoint done: log entries the durable state covers are no longer needed (WAL segment recycling). */
  releaseWal(): void {
    for (const [group, w] of this.wal) {
      const applied = this.state.get(group)?.applied ?? 0;
      if (w.entries.length > 0 && w.entries[0].index <= applied) w.entries = w.entries.filter((e) => e.index > applied);
    }
  }

  /** What a restarting node reads back for one group. */
  recover(group: number): RecoveredGroup {
    const image = cloneImage(this.state.get(group) ?? emptyImage());
    const w = this.wal.get(group);
    const entries = (w?.entries ?? []).filter((e) => e.index > image.applied);
    for (let k = 0; k < entries.length; k++) {
      const want = image.applied + 1 + k;
      if (entries[k].index !== want) throw new Error(`disk: group ${group}: log gap after applied ${image.applied}: found ${entries[k].index}, expected ${want}`);
    }
    return { image, hardState: w?.hardState ?? null, entries };
  }

  private applyWal(batch: WalOp[]): void {
    for (const op of batch) {
      const w = this.walOf(op.group);
      switch (op.kind) {
        case 'hardState':
          w.hardState = op.hardState;
          break;
        case 'entries': {
          const first = op.entries[0].index;
          let keep = w.entries.length;
          while (keep > 0 && w.entries[keep - 1].index >= first) keep--;
          w.entries.length = keep;
          for (const e of op.entries) w.entries.push(e);
          break;
        }
        case 'install':
          // Unsynced state writes of this group are older than the snapshot: it replaces them.
          this.stateUnsynced = this.stateUnsynced.filter((b) => b.group !== op.group);
          this.state.set(op.group, cloneImage(op.image));
          w.entries = [];
          break;
      }
    }
  }

  private walOf(group: number): WalGroup {
    let w = this.wal.get(group);
    if (w === undefined) this.wal.set(group, (w = { hardState: null, entries: [] }));
    return w;
  }

  private imageOf(group: number): GroupImage {
    let img = this.state.get(group);
    if (img === undefined) this.state.set(group, (img = emptyImage()));
    return img;
  }
}
