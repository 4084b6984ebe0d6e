// A cluster found by DNS (DNS_CLUSTER_QUERY against a loopback DNS server):
// three nodes found it; a fourth joins when DNS lists it and the coordinator
// moves the groups placed on it there (add, then drop the replica it
// replaces); when DNS drops it again and it dies, its groups go back to the
// three. Writes go on throughout; afterwards every replica's store is read
// directly and compared.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { api, startNode, tempDir, type NodeProc } from './harness.js';
import { startNats, type NatsServer } from './nats-server.js';
import { startDnsServer, type DnsServer } from './dns-server.js';
import { appendUntilStopped, dnsNodeEnv, readReplica, sleep, text, untilPlaced } from './cluster-kit.js';
import { groupOf, replicasOf } from '../../runtime/placement.js';

const QUERY = 'fleet.test';
const IPS = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];
const nameOf = (ip: string) => `fleetlm@${ip}`;

interface Member {
  ip: string;
  dataDir: string;
  node: NodeProc | null;
}

describe('cluster found by DNS', () => {
  let nats: NatsServer;
  let dns: DnsServer;
  const members: Member[] = IPS.map((ip) => ({ ip, dataDir: tempDir(`fleetlm-dns-${ip}-`), node: null }));
  const start = async (m: Member) => {
    m.node = await startNode({ dataDir: m.dataDir, env: dnsNodeEnv(nats.url, dns.port, QUERY, m.ip) });
  };
  const url = (i: number) => members[i].node!.url;
  const convs = Array.from({ length: 12 }, (_, i) => `dns-${i}`);
  const acked = new Map<string, string[]>(convs.map((c) => [c, []]));

  const waitPlaced = (live: Member[]) => untilPlaced(live.map((m) => ({ name: nameOf(m.ip), url: m.node!.url })), 90_000);

  /** Stops the live nodes, then every replica placed on a node holds every conversation of its groups, the same as the others. */
  async function compareReplicas(live: Member[]): Promise<void> {
    // Followers learn the last commit index from the leader's next heartbeats: let them apply it.
    await sleep(1500);
    await Promise.all(live.map((m) => m.node!.stop()));
    for (const m of live) m.node = null;
    const names = live.map((m) => nameOf(m.ip));
    for (const c of convs) {
      const holders = live.filter((m) => replicasOf(groupOf(c), names).includes(nameOf(m.ip)));
      assert.equal(holders.length, 3, c);
      const copies = await Promise.all(holders.map(async (m) => (await readReplica(m.dataDir, [c])).get(c)!));
      for (const t of acked.get(c)!) assert.ok(copies[0].includes(t), `acknowledged ${t} missing`);
      for (let i = 1; i < copies.length; i++) assert.deepEqual(copies[i], copies[0], `${c} differs on ${holders[i].ip}`);
    }
    await Promise.all(live.map(start));
  }

  async function writeWhile<T>(during: () => Promise<T>): Promise<T> {
    const writes = appendUntilStopped(() => url(0), convs);
    const out = await during();
    for (const [c, ts] of await writes.stop()) {
      assert.ok(ts.length > 0, `appends to ${c} stalled`);
      acked.get(c)!.push(...ts);
    }
    return out;
  }

  before(async () => {
    nats = await startNats();
    dns = await startDnsServer();
    dns.setA(QUERY, IPS.slice(0, 3));
    await Promise.all(members.slice(0, 3).map(start));
  });

  after(async () => {
    await Promise.all(members.map((m) => m.node?.kill9()));
    await nats?.stop();
    await dns?.stop();
    for (const m of members) fs.rmSync(m.dataDir, { recursive: true, force: true });
  });

  test('three nodes listed by DNS found the cluster and serve', async () => {
    for (const c of convs) {
      assert.equal((await api(url(0), 'PUT', `/v1/conversations/${c}`, {})).status, 200);
      const r = await api(url(2), 'POST', `/v1/conversations/${c}/messages`, text(`${c}/first`));
      assert.equal(r.status, 201, r.text);
      acked.get(c)!.push(`${c}/first`);
    }
    for (let i = 0; i < 3; i++) assert.ok(members[i].node!.logs.some((l) => l.includes('a founding member of the cluster')), `node ${i} did not found`);
  });

  test('a node DNS starts listing joins and takes over the groups placed on it', async () => {
    await writeWhile(async () => {
      dns.setA(QUERY, IPS);
      await start(members[3]);
      assert.ok(members[3].node!.logs.some((l) => l.includes('joining as a new incarnation')), 'the fourth node did not join');
      await waitPlaced(members);
    });
    // Reads through the new node see everything acknowledged.
    for (const c of convs) {
      const texts = new Set<string>();
      for (let from = 0; ; ) {
        const r = await api(url(3), 'GET', `/v1/conversations/${c}/messages?from=${from}&limit=1000`);
        assert.equal(r.status, 200, r.text);
        const page = r.json.messages as { seq: number; parts: { text: string }[] }[];
        if (page.length === 0) break;
        for (const m of page) texts.add(m.parts[0].text);
        from = page[page.length - 1].seq;
      }
      for (const t of acked.get(c)!) assert.ok(texts.has(t), `${t} not read through the new node`);
    }
    await compareReplicas(members);
  });

  test('a node DNS stops listing that is down hands its groups back to the others', async () => {
    await writeWhile(async () => {
      dns.setA(QUERY, IPS.slice(0, 3));
      await members[3].node!.kill9();
      members[3].node = null;
      await waitPlaced(members.slice(0, 3));
    });
    await compareReplicas(members.slice(0, 3));
  });
});
