// bench/apply: the write path of one storage partition without HTTP or
// threads — a PartitionDriver (WAL + fdatasync, RocksDB) on a temp dir,
// proposals straight into it. Reports RocksDB ops per append (exact, from the
// batches the driver writes) and process CPU per append (noisy on a shared
// host: compare interleaved runs).
//
//   npm run bench:apply                          # 1,000 and 10 conversations
//   node dist/bench/apply.js --conversations=10 --appends=40000 --in-flight=20
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PartitionDriver } from '../runtime/driver.js';
import { PartitionStore } from '../storage/partition-store.js';
import { Op, encodeCommand } from '../actors/commands.js';
import { systemClock } from '../runtime/clock.js';
import { mulberry32 } from '../runtime/prng.js';
import { groupOf } from '../runtime/placement.js';
import { benchArgs } from './lib.js';

const TEXT = 'x'.repeat(237);

async function run(conversations: number, appends: number, inFlight: number): Promise<{ opsPerAppend: number; cpuUsPerAppend: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-bench-apply-'));
  const store = await PartitionStore.open(0, path.join(dir, 'state'));
  const waiting = new Map<number, () => void>();
  const driver = new PartitionDriver(
    store,
    'n1',
    systemClock,
    (reqId) => {
      waiting.get(reqId)?.();
      waiting.delete(reqId);
    },
    mulberry32(1),
    100_000,
    64 << 20,
    4 << 20,
    (g, reason) => {
      throw new Error(`group ${g} stopped: ${reason}`);
    },
    { has: () => false, emit: () => {}, emitContext: () => {} },
    { voters: () => ['n1'], mayHost: () => false, send: () => {}, leaderChanged: () => {}, retainEntries: 0, flush: () => {} },
  );
  try {
    await driver.open(new Map(Array.from({ length: 256 }, (_, g) => [g, 'n1'])), new Map(), path.join(dir, 'wal'));
    while (!driver.isReady()) await new Promise((r) => setTimeout(r, 5));
    let reqId = 0;
    const propose = (id: string, cmd: Uint8Array) =>
      new Promise<void>((resolve) => {
        waiting.set(++reqId, resolve);
        driver.propose(reqId, groupOf(id), cmd);
      });
    const ids = Array.from({ length: conversations }, (_, i) => `bench-${i}`);
    await Promise.all(ids.map((id) => propose(id, encodeCommand({ op: Op.Put, id, nowMs: 0, metadataJson: null }))));
    let ops = 0;
    const write = store.db.write.bind(store.db);
    store.db.write = (batch, sync) => {
      ops += batch.length;
      return write(batch, sync);
    };
    const random = mulberry32(7);
    const messageMembers = `"role":"user","parts":[{"type":"text","text":"${TEXT}"}],"metadata":{}`;
    let sent = 0;
    const cpu0 = process.cpuUsage();
    const client = async () => {
      while (sent < appends) {
        sent++;
        const id = ids[Math.floor(random() * conversations)];
        await propose(id, encodeCommand({ op: Op.Append, id, nowMs: 0, ifVersion: -1, tokenCount: 60, idemKey: '', digest: '', messageMembers, flags: 0 }));
      }
    };
    await Promise.all(Array.from({ length: inFlight }, client));
    await new Promise((r) => setTimeout(r, 100)); // the last state write
    const cpu = process.cpuUsage(cpu0);
    return { opsPerAppend: ops / appends, cpuUsPerAppend: (cpu.user + cpu.system) / appends };
  } finally {
    await driver.close();
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const args = benchArgs(process.argv.slice(2), process.env, ['conversations', 'appends', 'in-flight'], 'bench/apply.ts');
const appends = Number(args.get('appends') ?? 40_000);
const inFlight = Number(args.get('in-flight') ?? 20);
for (const n of (args.get('conversations') ?? '1000,10').split(',').map(Number)) {
  const r = await run(n, appends, inFlight);
  console.log(`conversations=${n} appends=${appends} in_flight=${inFlight}: ${r.opsPerAppend.toFixed(2)} RocksDB ops per append, ${r.cpuUsPerAppend.toFixed(1)} µs CPU per append`);
}
