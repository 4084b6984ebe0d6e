// Archive throughput while appending (`npm run bench:archive`): does the
// write-behind archive keep up with a fixed append rate, and how far behind
// is it?
//
// Starts a throwaway PostgreSQL and one node with the archiver on, creates
// --conversations conversations, then runs bench/openloop.js at --rate
// appends/s for --duration s. Every 250 ms it samples, from Postgres, the age
// of the newest archived message (now − max(inserted_at)) and the archived
// row count. After the load it measures how long the backlog takes to drain
// (archived rows = acknowledged appends). Writes bench/results/archive-latest.{md,json}.
//
//   --rate=10000 --duration=20 --conversations=1000 --flush-interval-ms=1000
//   --batch-size=20000 --pool-size=10 --tail-keep=1000 --connections=64
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  CpuMeter,
  fmtInt,
  fmtMs,
  freePort,
  httpRequest,
  installCleanupHandlers,
  log,
  machineInfo,
  percentileSorted,
  pool,
  runMeasured,
  spawnTracked,
  stopAll,
  stopTracked,
  waitHttpReady,
} from './lib.js';
// The tests' throwaway PostgreSQL (temp dir, free port, unprivileged user, stopped by PID).
import { startPostgres } from '../test/integration/postgres.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SAMPLE_MS = 250;

interface Options {
  rate: number;
  duration: number;
  conversations: number;
  connections: number;
  flushIntervalMs: number;
  batchSize: number;
  poolSize: number;
  tailKeep: number;
}

function options(argv: string[]): Options {
  const kv = new Map<string, string>();
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('BENCH_') && v) kv.set(k.slice(6).toLowerCase().replace(/_/g, '-'), v);
  for (const a of argv) {
    const m = /^--([a-z-]+)=(\d+)$/.exec(a);
    if (!m) throw new Error(`bad argument ${a} (see the header of bench/archive.ts)`);
    kv.set(m[1], m[2]);
  }
  const int = (k: string, d: number) => (kv.has(k) ? Number(kv.get(k)) : d);
  return {
    rate: int('rate', 10_000),
    duration: int('duration', 20),
    conversations: int('conversations', 1000),
    connections: int('connections', 64),
    flushIntervalMs: int('flush-interval-ms', 1000),
    batchSize: int('batch-size', 20_000),
    poolSize: int('pool-size', 10),
    tailKeep: int('tail-keep', 1000),
  };
}

async function main(): Promise<void> {
  installCleanupHandlers();
  const o = options(process.argv.slice(2));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-bench-archive-'));
  const postgres = await startPostgres();
  const client = new pg.Client({ connectionString: postgres.url });
  try {
    const port = await freePort();
    const srv = spawnTracked('server', process.execPath, [path.join(ROOT, 'dist', 'runtime', 'main.js')], {
      env: {
        ...process.env,
        PORT: String(port),
        HOST: '127.0.0.1',
        FLEETLM_RAFT_DATA_DIR: path.join(tmp, 'data'),
        FLEETLM_LOG_LEVEL: 'warn',
        FLEETLM_ARCHIVER_ENABLED: 'true',
        DATABASE_URL: postgres.url,
        FLEETLM_ARCHIVE_FLUSH_INTERVAL_MS: String(o.flushIntervalMs),
        FLEETLM_ARCHIVER_BATCH_SIZE: String(o.batchSize),
        DB_POOL_SIZE: String(o.poolSize),
        FLEETLM_TAIL_KEEP: String(o.tailKeep),
      },
    });
    await waitHttpReady(port, '/health/ready', 60_000, srv);
    await client.connect();
    await pool(32, o.conversations, async (i) => {
      const r = await httpRequest(port, 'PUT', `/v1/conversations/bench-${i}`, '{}');
      if (r.status !== 200) throw new Error(`PUT bench-${i}: ${r.status}`);
    });
    const archivedRows = async () => Number((await client.query('SELECT count(*) AS n FROM messages')).rows[0].n);
    const newestAgeMs = async () => {
      const r = await client.query("SELECT extract(epoch FROM (clock_timestamp() - max(inserted_at))) * 1000 AS ms FROM messages");
      return r.rows[0].ms === null ? null : Number(r.rows[0].ms);
    };

    log(`appending ${fmtInt(o.rate)}/s for ${o.duration} s over ${fmtInt(o.conversations)} conversations; flush every ${o.flushIntervalMs} ms, batch ${fmtInt(o.batchSize)}`);
    const ages: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      const t0 = Date.now();
      while (sampling) {
        await new Promise((r) => setTimeout(r, SAMPLE_MS));
        // Skip the first two intervals: the archive starts empty.
        const age = await newestAgeMs();
        if (age !== null && Date.now() - t0 > 2 * o.flushIntervalMs) ages.push(age);
      }
    })();
    const cpu = new CpuMeter(srv.pid);
    const load = await runMeasured(
      'openloop',
      process.execPath,
      [
        path.join(ROOT, 'dist', 'bench', 'openloop.js'),
        '--proto=http',
        `--port=${port}`,
        `--rate=${o.rate}`,
        `--duration=${o.duration}`,
        `--connections=${o.connections}`,
        `--conversations=${o.conversations}`,
        '--drain=10',
      ],
      { timeoutMs: (o.duration + 60) * 1000, tmpDir: tmp },
    );
    sampling = false;
    await sampler;
    const serverCpu = cpu.read();
    if (load.code !== 0) throw new Error(`openloop exited ${load.code}: ${load.stderr.slice(-2000)}`);
    const ol = JSON.parse(load.stdout.trim().split('\n').pop()!) as { ok: number; errors: number; achievedRate: number; latencyMs: { p50: number; p99: number } };

    // Drain: every acknowledged append must reach the archive.
    const drainStart = Date.now();
    let archived = await archivedRows();
    while (archived < ol.ok && Date.now() - drainStart < 120_000) {
      await new Promise((r) => setTimeout(r, 100));
      archived = await archivedRows();
    }
    const drainMs = Date.now() - drainStart;
    const metrics = (await httpRequest(port, 'GET', '/metrics')).body;
    const metric = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    ages.sort((a, b) => a - b);
    const result = {
      generated: new Date().toISOString(),
      machine: machineInfo(),
      options: o,
      appends: { ok: ol.ok, errors: ol.errors, achievedRate: ol.achievedRate, p50Ms: ol.latencyMs.p50, p99Ms: ol.latencyMs.p99 },
      archive: {
        rows: archived,
        complete: archived === ol.ok,
        drainAfterLoadMs: drainMs,
        newestArchivedAgeMs: { p50: percentileSorted(ages, 50), p99: percentileSorted(ages, 99), max: ages[ages.length - 1], samples: ages.length },
        inserted: metric('fleet_lm_archive_inserted_total'),
        attempted: metric('fleet_lm_archive_attempted_total'),
        trimmed: metric('fleet_lm_archive_trimmed_total'),
      },
      serverCpuPct: serverCpu.pct,
    };
    const lagOk = result.archive.newestArchivedAgeMs.p99 <= 2 * o.flushIntervalMs;
    const md = [
      '## Archive throughput while appending',
      '',
      `Generated ${result.generated} by \`npm run bench:archive\` (${Object.entries(o).map(([k, v]) => `${k}=${v}`).join(', ')}).`,
      '',
      '| appends/s (target) | achieved | errors | append p50 / p99 | archived rows | drain after load | newest archived age p50 / p99 / max | server CPU |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|',
      `| ${fmtInt(o.rate)} | ${fmtInt(ol.achievedRate)} | ${fmtInt(ol.errors)} | ${fmtMs(ol.latencyMs.p50)} / ${fmtMs(ol.latencyMs.p99)} | ${fmtInt(archived)} of ${fmtInt(ol.ok)} | ${fmtMs(drainMs)} | ${fmtMs(result.archive.newestArchivedAgeMs.p50)} / ${fmtMs(result.archive.newestArchivedAgeMs.p99)} / ${fmtMs(result.archive.newestArchivedAgeMs.max)} | ${serverCpu.pct.toFixed(0)}% |`,
      '',
      `Target: archiving keeps up with ≥ 10,000 appends/s, lag ≤ 2 flush intervals (${fmtMs(2 * o.flushIntervalMs)}): ` +
        `${ol.achievedRate >= 10_000 * 0.98 && lagOk && result.archive.complete ? 'met' : 'not met'} ` +
        `(achieved ${fmtInt(ol.achievedRate)}/s; newest archived message p99 ${fmtMs(result.archive.newestArchivedAgeMs.p99)} old; ` +
        `inserted ${fmtInt(result.archive.inserted)} of ${fmtInt(result.archive.attempted)} attempted rows, ${fmtInt(result.archive.trimmed)} trimmed from the hot tier).`,
      '',
      '"Newest archived age" is sampled every 250 ms from Postgres (`clock_timestamp() − max(inserted_at)`): how old the newest row in the archive is — the archive lag, in time.',
      '',
    ].join('\n');
    fs.mkdirSync(path.join(ROOT, 'bench', 'results'), { recursive: true });
    fs.writeFileSync(path.join(ROOT, 'bench', 'results', 'archive-latest.md'), md);
    fs.writeFileSync(path.join(ROOT, 'bench', 'results', 'archive-latest.json'), JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(md);
    await stopTracked(srv);
  } finally {
    await client.end().catch(() => {});
    await stopAll();
    await postgres.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
