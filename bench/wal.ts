// Durable Raft-log write throughput: our preallocated-segment WAL
// (storage/wal.ts) against RocksDB with {sync:true}, same batches, same disk,
// same run. Each phase is a closed loop of one batch in flight for
// --duration seconds: append 30 entries x 450 bytes (+ a hard state), write,
// wait until durable, repeat.
//
//   npx tsc -p tsconfig.json && node dist/bench/wal.js [--duration=4] [--entries=30] [--bytes=450]
//       [--segment-mib=32] [--rounds=1] [--dir=<tmp parent>] [--only=wal,rocks,append]
//
// Phases: `wal` (release() every 50 batches, checkpoint 100 batches behind, so
// segments are recycled as in steady state), `rocks` (one WriteBatch per batch:
// a put per entry and one for the hard state, sync), and `append` (reference:
// the same bytes appended to a plain file + fdatasync through fs.promises,
// i.e. what a WAL that grows its file pays, and what two round trips through
// the libuv pool cost in CPU against the WAL's synchronous write).
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Wal } from '../storage/wal.js';
import { RocksPartition, seal, type BatchOp } from '../storage/rocks.js';
import type { Entry } from '../runtime/raft/types.js';
import { fmtInt, fmtMs, fsType, fsyncProbe, machineInfo, percentileSorted, sleep } from './lib.js';

function arg(name: string, def: string): string {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : (process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`] ?? def);
}

const DURATION_S = Number(arg('duration', '4'));
const ENTRIES = Number(arg('entries', '30'));
const BYTES = Number(arg('bytes', '450'));
const SEGMENT_MIB = Number(arg('segment-mib', '32'));
const ROUNDS = Number(arg('rounds', '1'));
const ONLY = arg('only', 'wal,rocks,append').split(',');
const PARENT = arg('dir', os.tmpdir());
const GROUP = 7;

interface Result {
  name: string;
  /** MiB/s written to the disk by the whole machine during the phase (ours + anybody else's). */
  diskMiBs?: number;
  load?: number;
  batches: number;
  seconds: number;
  p50: number;
  p99: number;
  max: number;
  /** this process's CPU (user + system, all its threads) per batch, µs */
  cpuUs: number;
  extra: string;
}

const payload = new Uint8Array(BYTES);
for (let i = 0; i < BYTES; i++) payload[i] = (i * 131 + 7) & 0xff;

function makeEntries(first: number, term: number): Entry[] {
  const out: Entry[] = new Array(ENTRIES);
  for (let i = 0; i < ENTRIES; i++) out[i] = { term, index: first + i, type: 0, data: payload };
  return out;
}

/** Sectors written so far to the block device holding `dir` (whole machine), or NaN. */
function diskSectorsWritten(dev: string): number {
  try {
    for (const line of fs.readFileSync('/proc/diskstats', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[2] === dev) return Number(f[9]);
    }
  } catch {
    /* not Linux */
  }
  return NaN;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function summarize(name: string, r: { lat: number[]; seconds: number; cpuUs: number }, extra: string): Result {
  const s = Float64Array.from(r.lat).sort();
  const cpuUs = r.cpuUs / r.lat.length;
  return { name, batches: r.lat.length, seconds: r.seconds, p50: percentileSorted(s, 50), p99: percentileSorted(s, 99), max: s[s.length - 1], cpuUs, extra };
}

async function loop(step: (i: number) => Promise<void>): Promise<{ lat: number[]; seconds: number; cpuUs: number }> {
  // 300 ms warm-up, not measured.
  const w0 = performance.now();
  let i = 0;
  while (performance.now() - w0 < 300) await step(i++);
  const lat: number[] = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + DURATION_S * 1000;
  let now = t0;
  while (now < end) {
    await step(i++);
    const t = performance.now();
    lat.push(t - now);
    now = t;
  }
  const cpu = process.cpuUsage(cpu0);
  return { lat, seconds: (now - t0) / 1000, cpuUs: cpu.user + cpu.system };
}

async function benchWal(dir: string): Promise<Result> {
  const { wal } = await Wal.open({ dir, segmentBytes: SEGMENT_MIB << 20, spareSegments: 2 }, () => 0);
  // Let the background spare creation finish so it does not overlap the measurement.
  while (wal.stats().spares < 2) await sleep(20);
  let last = 0;
  let releasing: Promise<void> | null = null;
  const r = await loop(async (i) => {
    wal.appendEntries(GROUP, makeEntries(last + 1, 1));
    last += ENTRIES;
    wal.setHardState(GROUP, { term: 1, vote: 'n1', commit: last - ENTRIES });
    await wal.write();
    if (i % 50 === 0 && releasing === null) {
      const ckpt = last - 100 * ENTRIES;
      releasing = wal.release(() => ckpt).finally(() => {
        releasing = null;
      });
    }
  });
  if (releasing) await releasing;
  const st = wal.stats();
  await wal.close();
  const extra =
    `${(st.bytesWritten / st.syncs / 1024).toFixed(1)} KiB/write, ${fmtInt(st.bytesWritten / r.seconds / 2 ** 20)} MiB/s; ` +
    `segments ${st.segments}, spares ${st.spares}, created ${st.sparesCreated}, recycled ${st.segmentsRecycled}, ` +
    `deleted ${st.segmentsDeleted}, spare stalls ${st.spareStalls}`;
  return summarize('wal (preallocated segments)', r, extra);
}

function logKey(group: number, index: number): Buffer {
  const k = Buffer.allocUnsafe(11);
  k[0] = 0x4c;
  k.writeUInt16BE(group, 1);
  k.writeBigUInt64BE(BigInt(index), 3);
  return k;
}

async function benchRocks(dir: string): Promise<Result> {
  const db = await RocksPartition.open(dir);
  const hsKey = Buffer.from([0x48, 0, GROUP]);
  let last = 0;
  let bytes = 0;
  const r = await loop(async () => {
    const ops: BatchOp[] = [];
    for (const e of makeEntries(last + 1, 1)) {
      const body = Buffer.allocUnsafe(9 + e.data.length);
      body.writeDoubleBE(e.term, 0);
      body[8] = e.type;
      body.set(e.data, 9);
      const value = seal(body);
      bytes += 11 + value.length;
      ops.push({ type: 'put', key: logKey(GROUP, e.index), value });
    }
    last += ENTRIES;
    ops.push({ type: 'put', key: hsKey, value: seal(Buffer.from(JSON.stringify({ term: 1, vote: 'n1', commit: last - ENTRIES }))) });
    await db.write(ops, true);
  });
  await db.close();
  return summarize('rocksdb {sync:true}', r, `${(bytes / (r.lat.length + 1) / 1024).toFixed(1)} KiB of keys+values/batch`);
}

async function benchAppend(dir: string): Promise<Result> {
  const fh = await fsp.open(path.join(dir, 'append.log'), 'w');
  const buf = Buffer.alloc(ENTRIES * (BYTES + 28) + 46, 1);
  let pos = 0;
  const r = await loop(async () => {
    await fh.write(buf, 0, buf.length, pos);
    pos += buf.length;
    await fh.datasync();
  });
  await fh.close();
  return summarize('plain append + fdatasync (fs.promises)', r, `${(buf.length / 1024).toFixed(1)} KiB/write (reference)`);
}

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(PARENT, 'fleetlm-walbench-'));
  const results: Result[] = [];
  try {
    const m = machineInfo();
    console.log(`# WAL vs RocksDB durable log writes`);
    console.log(`machine: ${m.nproc} cpu (${m.cpu}), ${m.memory}, ${m.kernel}, node ${m.node}`);
    const fst = fsType(root);
    const dev = /\(\/dev\/([^)]+)\)/.exec(fst)?.[1] ?? '';
    console.log(`disk: ${fst} at ${root}`);
    const probe = fsyncProbe(root, 500);
    console.log(`fsync probe (4 KiB overwrite + fdatasync): p50 ${fmtMs(probe.p50Ms)}, p99 ${fmtMs(probe.p99Ms)}`);
    console.log(`batch: ${ENTRIES} entries x ${BYTES} B + hard state; ${DURATION_S} s per phase; WAL segments ${SEGMENT_MIB} MiB\n`);
    for (let round = 0; round < ROUNDS; round++) {
      for (const name of ONLY) {
        const dir = fs.mkdtempSync(path.join(root, `${name}-`));
        const d0 = diskSectorsWritten(dev);
        const load = os.loadavg()[0];
        const res = name === 'wal' ? await benchWal(dir) : name === 'rocks' ? await benchRocks(dir) : await benchAppend(dir);
        res.diskMiBs = ((diskSectorsWritten(dev) - d0) * 512) / 2 ** 20 / (res.seconds + 0.3);
        res.load = load;
        results.push(res);
        fs.rmSync(dir, { recursive: true, force: true });
        console.error(`[bench] ${res.name}: ${fmtInt(res.batches / res.seconds)} batches/s`);
      }
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  console.log('| target | batches/s | entries/s | p50 | p99 | max | CPU µs/batch | load1 | disk MiB/s (machine) | notes |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const r of results) {
    const bps = r.batches / r.seconds;
    console.log(
      `| ${r.name} | ${fmtInt(bps)} | ${fmtInt(bps * ENTRIES)} | ${fmtMs(r.p50)} | ${fmtMs(r.p99)} | ${fmtMs(r.max)} | ${r.cpuUs.toFixed(0)} | ` +
        `${r.load?.toFixed(1)} | ${r.diskMiBs?.toFixed(0)} | ${r.extra} |`,
    );
  }
  if (ROUNDS > 1) {
    console.log(`\nMedian over ${ROUNDS} rounds:\n`);
    console.log('| target | batches/s | entries/s | p50 | p99 | CPU µs/batch |');
    console.log('|---|---:|---:|---:|---:|---:|');
    for (const name of [...new Set(results.map((r) => r.name))]) {
      const rs = results.filter((r) => r.name === name);
      const bps = median(rs.map((r) => r.batches / r.seconds));
      console.log(
        `| ${name} | ${fmtInt(bps)} | ${fmtInt(bps * ENTRIES)} | ${fmtMs(median(rs.map((r) => r.p50)))} | ${fmtMs(median(rs.map((r) => r.p99)))} | ${median(rs.map((r) => r.cpuUs)).toFixed(0)} |`,
      );
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
