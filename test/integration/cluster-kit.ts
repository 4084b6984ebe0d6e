// What the cluster tests share: reading a stopped node's stores directly (to
// compare replicas), metrics, and a writer that records what was acknowledged.
import fs from 'node:fs';
import path from 'node:path';
import { PartitionStore } from '../../storage/partition-store.js';
import { groupOf, partitionOf, replicasOf } from '../../runtime/placement.js';
import { api } from './harness.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const text = (t: string) => ({ message: { role: 'user', parts: [{ type: 'text', text: t }] } });

/** A counter or gauge of the node at `url` (NaN when absent). */
export async function metric(url: string, name: string): Promise<number> {
  return Number(new RegExp(`^${name} (\\d+)`, 'm').exec((await api(url, 'GET', '/metrics')).text)?.[1]);
}

/**
 * Appends through `url()` until stopped, one loop per conversation; what was
 * acknowledged, per conversation, in order.
 */
export function appendUntilStopped(url: () => string, convs: string[]): { stop: () => Promise<Map<string, string[]>> } {
  const acked = new Map(convs.map((c) => [c, [] as string[]]));
  let running = true;
  let k = 0;
  const loops = convs.map(async (c) => {
    while (running) {
      const t = `${c}/w${k++}`;
      const r = await api(url(), 'POST', `/v1/conversations/${c}/messages`, text(t)).catch(() => null);
      if (r?.status === 201) acked.get(c)!.push(t);
      else await sleep(50);
    }
  });
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return acked;
    },
  };
}

/** Message texts of each conversation as stored in one stopped replica, by seq. */
export async function readReplica(dataDir: string, convs: string[]): Promise<Map<string, string[]>> {
  const manifest = JSON.parse(fs.readFileSync(path.join(dataDir, 'MANIFEST.json'), 'utf8')) as { partitions: number };
  const stores = new Map<number, PartitionStore>();
  const out = new Map<string, string[]>();
  try {
    for (const conv of convs) {
      const g = groupOf(conv);
      const p = partitionOf(g, manifest.partitions);
      let store = stores.get(p);
      if (store === undefined) {
        store = await PartitionStore.open(p, path.join(dataDir, `partition-${String(p).padStart(3, '0')}`, 'state'));
        stores.set(p, store);
      }
      const rec = await store.readRecord(conv);
      const msgs = await store.readMessages(g, conv, 1, rec?.last_seq ?? 0);
      out.set(
        conv,
        msgs.map((b) => (JSON.parse(b.toString()) as { parts: { text: string }[] }).parts[0].text),
      );
    }
  } finally {
    for (const s of stores.values()) await s.close();
  }
  return out;
}

/** The environment of a node named `fleetlm@<ip>` in a cluster found by DNS (`query` on the loopback DNS server at `dnsPort`). */
export function dnsNodeEnv(natsUrl: string, dnsPort: number, query: string, ip: string): Record<string, string> {
  return {
    NATS_URL: natsUrl,
    DNS_CLUSTER_QUERY: query,
    FLEETLM_DNS_SERVERS: `127.0.0.1:${dnsPort}`,
    DNS_POLL_INTERVAL_MS: '200',
    NODE_NAME: `fleetlm@${ip}`,
    FLEETLM_WORKERS: '1',
  };
}

/**
 * Waits until the coordinator (the first node: the lowest name) has nothing
 * left to change and every node hosts exactly the groups placed on it;
 * resolves to the milliseconds it took, throws after `timeoutMs`.
 */
export async function untilPlaced(nodes: { name: string; url: string }[], timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  const names = nodes.map((n) => n.name);
  const want = nodes.map((n) => Array.from({ length: 256 }, (_, g) => g).filter((g) => replicasOf(g, names).includes(n.name)).length);
  for (;;) {
    const hosted = await Promise.all(nodes.map((n) => metric(n.url, 'fleet_lm_raft_replicas')));
    const toChange = await metric(nodes[0].url, 'fleet_lm_cluster_replicas_to_replace');
    if (toChange === 0 && hosted.every((h, i) => h === want[i])) return Math.round(performance.now() - t0);
    if (performance.now() - t0 > timeoutMs) throw new Error(`groups not placed: hosted ${hosted.join(',')} (placed ${want.join(',')}), ${toChange} groups to change`);
    await sleep(100);
  }
}
