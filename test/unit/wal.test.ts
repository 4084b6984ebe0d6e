import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Wal, type RecoveredGroup, type WalOptions } from '../../storage/wal.js';
import type { Entry, HardState } from '../../runtime/raft/types.js';

const KIB = 1024;
const MIB = 1024 * KIB;

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-wal-'));
}

/** Runs body with a fresh temp dir, always removed afterwards. */
async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = tmpDir();
  try {
    await body(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Deterministic entry; data starts with a readable tag so tests can find it on disk. */
function entry(group: number, index: number, term: number, size = 64, type = 0): Entry {
  const tag = Buffer.from(`g${group}-i${index}-t${term}|`);
  const data = new Uint8Array(Math.max(size, tag.length));
  data.set(tag);
  for (let i = tag.length; i < data.length; i++) data[i] = (index * 31 + i * 7 + term) & 0xff;
  return { term, index, type, data };
}

function range(group: number, from: number, to: number, term: number, size = 64): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(group, i, term, size));
  return out;
}

type Applied = (group: number) => number;
const none: Applied = () => 0;

async function open(dir: string, opts: Partial<WalOptions> = {}, applied: Applied = none) {
  return Wal.open({ dir, segmentBytes: 64 * KIB, spareSegments: 2, ...opts }, applied);
}

function indexes(g: RecoveredGroup | undefined): number[] {
  return (g?.entries ?? []).map((e) => e.index);
}

function segFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((n) => /^wal-[0-9a-f]{16}\.seg$/.test(n))
    .sort();
}

/** Segment files whose header names their own seq (i.e. part of the log, not spares). */
function logFiles(dir: string): string[] {
  return segFiles(dir).filter((n) => {
    const h = Buffer.alloc(32);
    const fd = fs.openSync(path.join(dir, n), 'r');
    try {
      fs.readSync(fd, h, 0, 32, 0);
    } finally {
      fs.closeSync(fd);
    }
    const seq = h.readUInt32LE(8) + h.readUInt32LE(12) * 2 ** 32;
    return h.readUInt32LE(0) !== 0 && seq === parseInt(n.slice(4, 20), 16);
  });
}

/** File and offset of the first occurrence of `tag` in any segment file. */
function findOnDisk(dir: string, tag: string): { file: string; off: number } {
  for (const n of segFiles(dir)) {
    const file = path.join(dir, n);
    const off = fs.readFileSync(file).indexOf(Buffer.from(tag));
    if (off >= 0) return { file, off };
  }
  throw new Error(`tag ${tag} not on disk`);
}

function patchFile(file: string, off: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, off);
  } finally {
    fs.closeSync(fd);
  }
}

// ------------------------------------------------------------------ tests

test('wal - entries and hard states of several groups survive reopen', async () => {
  await withDir(async (dir) => {
    let { wal, groups } = await open(dir);
    assert.equal(groups.size, 0);
    assert.equal(wal.recovery.stop, null);
    const hs1: HardState = { term: 3, vote: 'node-a', commit: 4 };
    const hs9: HardState = { term: 9, vote: '', commit: 0 };
    wal.appendEntries(1, range(1, 1, 5, 2));
    wal.appendEntries(2, [entry(2, 1, 1, 10, 1), entry(2, 2, 1, 0)]); // ConfChange type, empty data
    wal.setHardState(1, { term: 2, vote: 'node-b', commit: 1 });
    wal.setHardState(9, hs9); // a group with a hard state only
    assert.ok(wal.pendingBytes > 0);
    await wal.write();
    assert.equal(wal.pendingBytes, 0);
    await wal.write(); // nothing buffered: no I/O
    wal.appendEntries(1, range(1, 6, 8, 3));
    wal.setHardState(1, hs1);
    await wal.write();
    assert.equal(wal.stats().syncs, 2);
    await wal.close();

    ({ wal, groups } = await open(dir));
    assert.equal(wal.recovery.stop, null);
    assert.equal(wal.recovery.batches, 2);
    assert.deepEqual(groups.get(1), { hardState: hs1, entries: [...range(1, 1, 5, 2), ...range(1, 6, 8, 3)] });
    assert.deepEqual(groups.get(2), { hardState: null, entries: [entry(2, 1, 1, 10, 1), entry(2, 2, 1, 0)] });
    assert.deepEqual(groups.get(9), { hardState: hs9, entries: [] });
    // Unicode votes round trip too.
    wal.setHardState(2, { term: 1, vote: 'nœud-β', commit: 2 });
    await wal.write();
    await wal.close();
    ({ wal, groups } = await open(dir));
    assert.deepEqual(groups.get(2)?.hardState, { term: 1, vote: 'nœud-β', commit: 2 });
    assert.deepEqual(groups.get(1)?.hardState, hs1);
    await wal.close();
  });
});

test('wal - a conflicting append overwrites: 5..9 then 7..8 recovers 5,6,7\',8\'', async () => {
  await withDir(async (dir) => {
    const applied = () => 4;
    const want = [entry(1, 5, 1), entry(1, 6, 1), entry(1, 7, 2), entry(1, 8, 2)];
    // Separate batches.
    let { wal } = await open(dir, {}, applied);
    wal.appendEntries(1, range(1, 5, 9, 1));
    await wal.write();
    wal.appendEntries(1, range(1, 7, 8, 2));
    await wal.write();
    await wal.close();
    let r = await open(dir, {}, applied);
    assert.deepEqual(r.groups.get(1)?.entries, want);
    // Within one batch (for group 2), and across a reopen + segment switch (group 1 again).
    r.wal.appendEntries(2, range(2, 5, 9, 1));
    r.wal.appendEntries(2, range(2, 7, 8, 2));
    r.wal.appendEntries(1, range(1, 7, 7, 3));
    await r.wal.write();
    await r.wal.close();
    r = await open(dir, {}, applied);
    assert.deepEqual(r.groups.get(2)?.entries, [entry(2, 5, 1), entry(2, 6, 1), entry(2, 7, 2), entry(2, 8, 2)]);
    assert.deepEqual(r.groups.get(1)?.entries, [entry(1, 5, 1), entry(1, 6, 1), entry(1, 7, 3)]);
    await r.wal.close();
  });
});

test('wal - entries the state machine already applied are not returned', async () => {
  await withDir(async (dir) => {
    const { wal } = await open(dir);
    wal.appendEntries(1, range(1, 1, 10, 1));
    wal.appendEntries(2, range(2, 1, 3, 1));
    await wal.write();
    await wal.close();
    for (const [a, want] of [
      [0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
      [4, [5, 6, 7, 8, 9, 10]],
      [10, []],
      [50, []],
    ] as const) {
      const r = await open(dir, {}, (g) => (g === 1 ? a : 0));
      assert.deepEqual(indexes(r.groups.get(1)), want, `applied ${a}`);
      assert.deepEqual(indexes(r.groups.get(2)), [1, 2, 3]);
      if (a === 4) assert.deepEqual(r.groups.get(1)?.entries[0], entry(1, 5, 1));
      await r.wal.close();
    }
  });
});

test('wal - many writes across many 64 KiB segments, all recovered; files keep their size', async () => {
  await withDir(async (dir) => {
    let { wal } = await open(dir);
    const batches = 300;
    for (let b = 0; b < batches; b++) {
      wal.appendEntries(1, range(1, b * 10 + 1, b * 10 + 10, 1 + (b >> 6), 450));
      if (b % 7 === 0) wal.setHardState(1, { term: 1 + (b >> 6), vote: 'n1', commit: b * 10 });
      await wal.write();
    }
    const st = wal.stats();
    assert.equal(st.syncs, batches);
    assert.ok(st.segments >= 20, `segments ${st.segments}`);
    await wal.close();
    for (const n of segFiles(dir)) assert.equal(fs.statSync(path.join(dir, n)).size, 64 * KIB, n);

    const r = await open(dir);
    assert.equal(r.wal.recovery.stop, null);
    assert.equal(r.wal.recovery.segments, st.segments);
    assert.equal(r.wal.recovery.batches, batches);
    const g = r.groups.get(1);
    assert.equal(g?.entries.length, batches * 10);
    g?.entries.forEach((e, i) => assert.deepEqual(e, entry(1, i + 1, 1 + (Math.floor(i / 10) >> 6), 450)));
    assert.deepEqual(g?.hardState, { term: 1 + (294 >> 6), vote: 'n1', commit: 2940 });
    await r.wal.close();
  });
});

test('wal - release() recycles segments; reopen recovers everything not released, hard states included', async () => {
  await withDir(async (dir) => {
    let { wal } = await open(dir);
    const hs1: HardState = { term: 7, vote: 'n3', commit: 5 };
    wal.appendEntries(1, range(1, 1, 5, 7));
    wal.setHardState(1, hs1); // group 1 is never written again
    await wal.write();
    let last = 0;
    const writeBatches = async (n: number) => {
      for (let b = 0; b < n; b++) {
        wal.appendEntries(2, range(2, last + 1, last + 10, 1, 450));
        wal.setHardState(2, { term: 1, vote: 'n2', commit: last + 10 });
        last += 10;
        await wal.write();
      }
    };
    await writeBatches(100);
    const before = wal.stats();
    const inodesBefore = new Set(logFiles(dir).map((n) => fs.statSync(path.join(dir, n)).ino));
    const ckpt = 800;
    await wal.release((g) => (g === 1 ? 5 : ckpt));
    const after = wal.stats();
    assert.ok(after.segments <= before.segments - 4, `segments ${before.segments} -> ${after.segments}`);
    assert.ok(after.segmentsRecycled > 0, 'some released segments were recycled');
    assert.equal(after.segmentsRecycled + after.segmentsDeleted, before.segments - after.segments);
    // Releasing again with the same checkpoint changes nothing.
    await wal.release((g) => (g === 1 ? 5 : ckpt));
    assert.equal(wal.stats().segments, after.segments);

    // Keep writing: recycled files get reused (same inode, new seq).
    await writeBatches(60);
    const inodesNow = logFiles(dir).map((n) => fs.statSync(path.join(dir, n)).ino);
    assert.ok(inodesNow.some((i) => inodesBefore.has(i)), 'a recycled segment is back in the log');
    assert.ok(segFiles(dir).length <= wal.stats().segments + 4 + 1, `files ${segFiles(dir).length}`);
    await wal.close();

    const r = await open(dir, {}, (g) => (g === 1 ? 5 : ckpt));
    assert.equal(r.wal.recovery.stop, null);
    assert.deepEqual(r.groups.get(1), { hardState: hs1, entries: [] });
    const g2 = r.groups.get(2);
    assert.deepEqual(g2?.hardState, { term: 1, vote: 'n2', commit: last });
    assert.equal(g2?.entries.length, last - ckpt);
    g2?.entries.forEach((e, i) => assert.deepEqual(e, entry(2, ckpt + 1 + i, 1, 450)));
    await r.wal.close();
  });
});

test('wal - release keeps a segment whose overwrite would resurrect entries of an older kept segment', async () => {
  await withDir(async (dir) => {
    const { wal } = await open(dir, { segmentBytes: 16 * KIB });
    // Segment A: group 1 entries 1..10 (term 1), group 2's entry 1 (never checkpointed), group 3's 1..20.
    wal.appendEntries(1, range(1, 1, 10, 1, 400));
    wal.appendEntries(2, range(2, 1, 1, 1));
    await wal.write();
    wal.appendEntries(3, range(3, 1, 20, 1, 500));
    await wal.write();
    assert.equal(wal.stats().segments, 1);
    // Segment B: the overwrite of group 1 at 5'..6' (term 2); it does not fit in A any more.
    wal.appendEntries(1, range(1, 5, 6, 2, 1000));
    await wal.write();
    assert.equal(wal.stats().segments, 2);
    // Segment C: more of group 3.
    wal.appendEntries(3, range(3, 21, 45, 1, 600));
    await wal.write();
    assert.equal(wal.stats().segments, 3);
    // Group 1 applied up to 6, group 3 up to 45, group 2 not at all: A stays (group 2),
    // and B must stay too, or A's stale entries 7..10 (term 1) would come back.
    const ckpt = (g: number) => (g === 1 ? 6 : g === 3 ? 45 : 0);
    await wal.release(ckpt);
    assert.equal(wal.stats().segments, 3);
    await wal.close();
    const r = await open(dir, { segmentBytes: 16 * KIB }, ckpt);
    assert.deepEqual(indexes(r.groups.get(1)), []);
    assert.deepEqual(indexes(r.groups.get(2)), [1]);
    // A (whose max index for group 1 is the stale 10) goes once group 1 is applied past 10 and group 2 is applied.
    r.wal.appendEntries(1, range(1, 7, 10, 2));
    await r.wal.write();
    await r.wal.release((g) => (g === 1 ? 10 : g === 2 ? 1 : 45));
    assert.equal(r.wal.stats().segments, 1);
    await r.wal.close();
  });
});

test('wal - torn tail: recovery stops before the damaged batch, keeps earlier data, and later writes survive', async () => {
  const damage: Record<string, (file: string, recordStart: number) => void> = {
    'zeroed (never written)': (file, at) => patchFile(file, at, Buffer.alloc(600)),
    'garbage bytes': (file, at) => patchFile(file, at + 40, Buffer.from(Array.from({ length: 200 }, (_, i) => (i * 97 + 13) & 0xff))),
    'file truncated mid-record': (file, at) => fs.truncateSync(file, at + 100),
  };
  for (const [name, hurt] of Object.entries(damage)) {
    await withDir(async (dir) => {
      let { wal } = await open(dir, { segmentBytes: MIB });
      for (let b = 0; b < 5; b++) {
        wal.appendEntries(1, range(1, b * 4 + 1, b * 4 + 4, 1, 300));
        wal.setHardState(1, { term: 1, vote: 'x', commit: b * 4 + 4 });
        await wal.write();
      }
      await wal.close();
      // Damage the last entry record of the last batch (entry 20).
      const { file, off } = findOnDisk(dir, 'g1-i20-t1|');
      hurt(file, off - 28);

      let r = await open(dir, { segmentBytes: MIB });
      assert.notEqual(r.wal.recovery.stop, null, name);
      assert.equal(r.wal.recovery.batches, 4, name);
      assert.deepEqual(r.groups.get(1)?.entries, range(1, 1, 16, 1, 300), name);
      assert.deepEqual(r.groups.get(1)?.hardState, { term: 1, vote: 'x', commit: 16 }, name);
      // A torn last write is not damage: nothing valid follows it (garbage amid intact records is, below).
      if (name !== 'garbage bytes') assert.equal(r.wal.recovery.validAfterDamage, 0, name);
      // Raft re-appends 17.. (different term); a second recovery sees the old log plus the new segment.
      r.wal.appendEntries(1, range(1, 17, 22, 2, 300));
      await r.wal.write();
      await r.wal.close();
      r = await open(dir, { segmentBytes: MIB });
      assert.equal(r.wal.recovery.stop, null, `${name}: sealed`);
      assert.deepEqual(r.groups.get(1)?.entries, [...range(1, 1, 16, 1, 300), ...range(1, 17, 22, 2, 300)], name);
      await r.wal.close();
    });
  }
});

test('wal - a bit flip in a middle record drops the rest of that segment (counted), later writes survive', async () => {
  await withDir(async (dir) => {
    let { wal } = await open(dir, { segmentBytes: MIB });
    for (let b = 0; b < 10; b++) {
      wal.appendEntries(1, range(1, b * 5 + 1, b * 5 + 5, 1));
      await wal.write();
    }
    await wal.close();
    const { file, off } = findOnDisk(dir, 'g1-i23-t1|');
    const buf = fs.readFileSync(file);
    patchFile(file, off + 20, Buffer.from([buf[off + 20] ^ 0x04]));

    let r = await open(dir, { segmentBytes: MIB });
    assert.deepEqual(indexes(r.groups.get(1)), range(1, 1, 20, 1).map((e) => e.index));
    assert.equal(r.wal.recovery.stop?.reason, 'crc mismatch');
    // 21, 22 (same batch, before the flip) + 24..50 (after it) passed their crc but were dropped.
    assert.equal(r.wal.recovery.droppedRecords, 2 + 27);
    assert.equal(r.wal.recovery.validAfterDamage, 27);
    assert.equal(r.wal.recovery.droppedSegments, 0);
    r.wal.appendEntries(1, range(1, 21, 25, 2));
    await r.wal.write();
    await r.wal.close();
    r = await open(dir, { segmentBytes: MIB });
    assert.equal(r.wal.recovery.stop, null);
    assert.deepEqual(r.groups.get(1)?.entries, [...range(1, 1, 20, 1), ...range(1, 21, 25, 2)]);
    await r.wal.close();
  });
});

test('wal - a bad record in segment k: the segments after k are not part of the log any more', async () => {
  await withDir(async (dir) => {
    let { wal } = await open(dir);
    for (let b = 0; b < 40; b++) {
      wal.appendEntries(1, range(1, b * 10 + 1, b * 10 + 10, 1, 450));
      await wal.write();
    }
    const segs = wal.stats().segments;
    await wal.close();
    // Entry 175 is in the second segment (13 batches of 4.8 KB fit in 64 KiB).
    const { file, off } = findOnDisk(dir, 'g1-i175-t1|');
    const damagedName = path.basename(file);
    assert.equal(logFiles(dir).indexOf(damagedName), 1);
    patchFile(file, off + 100, Buffer.from('flipped!'));

    let r = await open(dir);
    assert.equal(r.wal.recovery.stop?.reason, 'crc mismatch');
    assert.equal(r.wal.recovery.droppedSegments, segs - 2);
    assert.equal(r.groups.get(1)?.entries.length, 170);
    assert.equal(r.wal.recovery.droppedRecords, 400 - 170 - 1);
    // 171..174 were the incomplete batch before the flip; 176..400 lie after it.
    assert.equal(r.wal.recovery.validAfterDamage, 400 - 175);
    r.wal.appendEntries(1, range(1, 171, 180, 2, 450));
    await r.wal.write();
    await r.wal.close();
    // The dropped segments stay dropped (they were given new seqs: spares now).
    r = await open(dir);
    assert.equal(r.wal.recovery.stop, null);
    assert.deepEqual(r.groups.get(1)?.entries, [...range(1, 1, 170, 1, 450), ...range(1, 171, 180, 2, 450)]);
    await r.wal.close();
  });
});

test('wal - old records of a recycled segment are never resurrected', async () => {
  await withDir(async (dir) => {
    let { wal } = await open(dir, { segmentBytes: MIB });
    for (let b = 0; b < 20; b++) {
      wal.appendEntries(1, range(1, b * 10 + 1, b * 10 + 10, 1, 450));
      await wal.write();
    }
    await wal.close();
    // Make every spare a byte-for-byte copy of the log segment, as a recycled
    // file looks right after its rename: valid old header, valid old records.
    const [logSeg] = logFiles(dir);
    const content = fs.readFileSync(path.join(dir, logSeg));
    const spares = segFiles(dir).filter((n) => n !== logSeg);
    assert.ok(spares.length >= 1);
    for (const n of spares) fs.writeFileSync(path.join(dir, n), content);

    let r = await open(dir, { segmentBytes: MIB });
    assert.equal(r.wal.recovery.segments, 1);
    assert.equal(r.groups.get(1)?.entries.length, 200);
    // A short write into the recycled file, overwriting the log at 3; its old records follow on disk.
    r.wal.appendEntries(1, [entry(1, 3, 2, 450)]);
    await r.wal.write();
    await r.wal.close();
    r = await open(dir, { segmentBytes: MIB });
    assert.equal(r.wal.recovery.stop, null);
    assert.equal(r.wal.recovery.droppedRecords, 0);
    const want = [entry(1, 1, 1, 450), entry(1, 2, 1, 450), entry(1, 3, 2, 450)];
    assert.deepEqual(r.groups.get(1)?.entries, want);
    await r.wal.close();

    // Worst case: the end marker is gone and a whole old batch (valid under the
    // old seq) sits exactly where the next record would start.
    const logs = logFiles(dir);
    assert.equal(logs.length, 2);
    const stale = content.indexOf(Buffer.from('g1-i101-t1|')) - 28;
    const newSeg = path.join(dir, logs[1]);
    const endMarker = 32 + (8 + 20 + 450) + 16;
    assert.equal(fs.readFileSync(newSeg).readUInt32LE(endMarker), 0);
    patchFile(newSeg, endMarker, content.subarray(stale, stale + 10 * 478 + 16));
    r = await open(dir, { segmentBytes: MIB });
    assert.equal(r.wal.recovery.stop?.reason, 'crc mismatch');
    assert.equal(r.wal.recovery.droppedRecords, 0);
    assert.deepEqual(r.groups.get(1)?.entries, want);
    await r.wal.close();
  });
});

test('wal - a gap after the applied index throws', async () => {
  await withDir(async (dir) => {
    const { wal } = await open(dir);
    wal.appendEntries(1, range(1, 1, 3, 1));
    await wal.write();
    wal.appendEntries(1, range(1, 7, 9, 1)); // another batch: not checked at append time
    await wal.write();
    await wal.close();
    await assert.rejects(open(dir), /group 1: log gap after applied index 0: expected index 4, found 7/);
    await assert.rejects(open(dir, {}, () => 2), /group 1: log gap after applied index 2: expected index 4, found 7/);
    // Applied at or past the hole: fine.
    const r = await open(dir, {}, () => 6);
    assert.deepEqual(indexes(r.groups.get(1)), [7, 8, 9]);
    await r.wal.close();
  });
  await withDir(async (dir) => {
    // Released segments followed by a restart with an applied index below the checkpoint.
    let { wal } = await open(dir);
    for (let b = 0; b < 40; b++) {
      wal.appendEntries(1, range(1, b * 10 + 1, b * 10 + 10, 1, 450));
      await wal.write();
    }
    await wal.release(() => 300);
    await wal.close();
    await assert.rejects(open(dir, {}, () => 100), /group 1: log gap after applied index 100: expected index 101/);
    const r = await open(dir, {}, () => 300);
    assert.deepEqual(indexes(r.groups.get(1)), range(1, 301, 400, 1).map((e) => e.index));
    await r.wal.close();
  });
});

test('wal - invariants: one write in flight, contiguous entries, batch size, group range', async () => {
  await withDir(async (dir) => {
    const { wal } = await open(dir);
    wal.appendEntries(1, range(1, 1, 2, 1));
    const p = wal.write();
    assert.throws(() => wal.write(), /another write is in flight/);
    await p;
    assert.throws(() => wal.appendEntries(1, [entry(1, 3, 1), entry(1, 5, 1)]), /not contiguous/);
    wal.appendEntries(1, range(1, 3, 4, 1));
    assert.throws(() => wal.appendEntries(1, range(1, 6, 7, 1)), /not contiguous within the batch/);
    assert.throws(() => wal.appendEntries(70000, range(1, 1, 1, 1)), /not a u16/);
    await wal.write();
    wal.appendEntries(2, range(2, 1, 200, 1, 450)); // ~95 KB > 64 KiB segment
    await assert.rejects(wal.write(), /does not fit/);
    assert.throws(() => wal.appendEntries(3, range(3, 1, 1, 1)), /failed earlier/);
    await wal.close();
    const r = await open(dir);
    assert.deepEqual(indexes(r.groups.get(1)), [1, 2, 3, 4]);
    assert.equal(r.groups.get(2), undefined);
    await r.wal.close();
  });
});

test('wal - resetGroup forgets a group whose replica was retired: no log gap, no old hard state on recovery', async () => {
  await withDir(async (dir) => {
    let { wal } = await open(dir);
    // A retired replica's records: entries 50..60 (after a snapshot at 49) and a vote.
    wal.appendEntries(1, range(1, 50, 60, 3));
    wal.setHardState(1, { term: 3, vote: 'n2', commit: 58 });
    wal.appendEntries(2, range(2, 1, 5, 1));
    await wal.write();
    await wal.close();
    // Not hosted: any applied index covers it, so its records are no gap.
    let r = await open(dir, {}, (g) => (g === 1 ? Number.POSITIVE_INFINITY : 0));
    assert.deepEqual(indexes(r.groups.get(2)), [1, 2, 3, 4, 5]);
    // A new replica of group 1 starts here from nothing.
    r.wal.resetGroup(1);
    await r.wal.write();
    await r.wal.close();
    r = await open(dir);
    assert.deepEqual(indexes(r.groups.get(1)), []);
    assert.deepEqual(r.groups.get(1)?.hardState, { term: 0, vote: '', commit: 0 });
    assert.deepEqual(indexes(r.groups.get(2)), [1, 2, 3, 4, 5]);
    // Its own log follows.
    r.wal.appendEntries(1, range(1, 1, 3, 4));
    await r.wal.write();
    await r.wal.close();
    r = await open(dir);
    assert.deepEqual(indexes(r.groups.get(1)), [1, 2, 3]);
    await r.wal.close();
  });
});
