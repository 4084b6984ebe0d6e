// How long membership changes take on this machine, under writes: a node
// back with an empty data dir refilled from its peers (3 nodes), a fourth
// node joining by DNS and taking over its placement, and that node leaving
// while down. Each phase runs until the coordinator has nothing left to
// change and every live node hosts exactly the groups placed on it.
//   npm run bench:membership [-- --conversations=64 --messages=50 --out=bench/results/membership-latest.md]
// Reuses the process-level test harness (real nodes, nats-server, a loopback
// DNS server). Results: bench/results/membership-latest.md (+ .json), and
// docs/BENCHMARKS.md "Membership".
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, startNode, tempDir, type NodeProc } from '../test/integration/harness.js';
import { startNats } from '../test/integration/nats-server.js';
import { startDnsServer } from '../test/integration/dns-server.js';
import { appendUntilStopped, dnsNodeEnv, text, untilPlaced } from '../test/integration/cluster-kit.js';
import { benchArgs, writeResults } from './lib.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const kv = benchArgs(process.argv.slice(2), process.env, ['conversations', 'messages', 'out'], 'bench/membership.ts');
const args = { conversations: Number(kv.get('conversations') ?? 64), messages: Number(kv.get('messages') ?? 50) };
const out = path.resolve(ROOT, kv.get('out') ?? 'bench/results/membership-latest.md');
const QUERY = 'fleet.bench';
const IPS = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];
const nameOf = (ip: string) => `fleetlm@${ip}`;

interface Member {
  ip: string;
  dataDir: string;
  node: NodeProc | null;
}

const nats = await startNats();
const dns = await startDnsServer();
const members: Member[] = IPS.map((ip) => ({ ip, dataDir: tempDir(`fleetlm-bench-${ip}-`), node: null }));
const start = async (m: Member) => {
  m.node = await startNode({ dataDir: m.dataDir, env: dnsNodeEnv(nats.url, dns.port, QUERY, m.ip) });
};
const convs = Array.from({ length: args.conversations }, (_, i) => `m-${i}`);

/** Milliseconds until the coordinator is done and each live node hosts its placement. */
const placed = (live: Member[]) => untilPlaced(live.map((m) => ({ name: nameOf(m.ip), url: m.node!.url })), 300_000);

async function phase(name: string, run: () => Promise<number>): Promise<Record<string, number | string>> {
  const writes = appendUntilStopped(() => members[0].node!.url, convs);
  const t0 = performance.now();
  const ms = await run();
  const acked = [...(await writes.stop()).values()].reduce((n, a) => n + a.length, 0);
  const seconds = (performance.now() - t0) / 1000;
  const row = { phase: name, placed_ms: ms, appends_acked: acked, appends_per_s: Math.round(acked / seconds) };
  console.log(JSON.stringify(row));
  return row;
}

const rows: Record<string, number | string>[] = [];
try {
  dns.setA(QUERY, IPS.slice(0, 3));
  await Promise.all(members.slice(0, 3).map(start));
  await Promise.all(
    convs.map(async (c) => {
      await api(members[0].node!.url, 'PUT', `/v1/conversations/${c}`, {});
      for (let k = 0; k < args.messages; k++) await api(members[0].node!.url, 'POST', `/v1/conversations/${c}/messages`, text(`${c}/${k}`));
    }),
  );
  rows.push(
    await phase('node back with an empty data dir (3 nodes, 256 groups refilled)', async () => {
      const lost = members[2];
      await lost.node!.kill9();
      fs.rmSync(lost.dataDir, { recursive: true, force: true });
      await start(lost);
      return placed(members.slice(0, 3));
    }),
  );
  rows.push(
    await phase('fourth node joins (DNS lists it)', async () => {
      dns.setA(QUERY, IPS);
      await start(members[3]);
      return placed(members);
    }),
  );
  rows.push(
    await phase('fourth node leaves while down (DNS drops it)', async () => {
      dns.setA(QUERY, IPS.slice(0, 3));
      await members[3].node!.kill9();
      members[3].node = null;
      return placed(members.slice(0, 3));
    }),
  );
  const md = [
    `# Membership changes (${new Date().toISOString().slice(0, 10)})`,
    '',
    `${args.conversations} conversations × ${args.messages} messages seeded; appends through the first node during each phase; 1 worker per node; 2 vCPU shared.`,
    '',
    '| phase | until placed | appends acknowledged meanwhile | appends/s |',
    '| --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.phase} | ${(Number(r.placed_ms) / 1000).toFixed(1)} s | ${r.appends_acked} | ${r.appends_per_s} |`),
  ].join('\n');
  writeResults(ROOT, out, md, { args, rows });
} finally {
  await Promise.all(members.map((m) => m.node?.kill9()));
  await nats.stop();
  await dns.stop();
  for (const m of members) fs.rmSync(m.dataDir, { recursive: true, force: true });
}
