// A 4-node cluster, where each group lives on 3 of the 4 nodes: a stream
// served by the node without a replica of its conversation's group gets the
// group leader's events over NATS, every message once and in order, also
// when the leader is killed and another replica takes over.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import WebSocket from 'ws';
import { api, startNode, tempDir, type NodeProc } from './harness.js';
import { startNats, type NatsServer } from './nats-server.js';
import { groupOf, replicasOf } from '../../runtime/placement.js';

const NAMES = ['n1', 'n2', 'n3', 'n4'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (t: string) => ({ message: { role: 'user', parts: [{ type: 'text', text: t }] } });

describe('cluster of four', () => {
  let nats: NatsServer;
  const dirs = NAMES.map((n) => tempDir(`fleetlm-${n}-`));
  const nodes: (NodeProc | null)[] = NAMES.map(() => null);
  const start = async (i: number) => {
    nodes[i] = await startNode({
      dataDir: dirs[i],
      env: { NATS_URL: nats.url, CLUSTER_NODES: NAMES.join(','), NODE_NAME: NAMES[i], FLEETLM_WORKERS: '1' },
    });
  };

  before(async () => {
    nats = await startNats();
    await Promise.all(NAMES.map((_, i) => start(i)));
  });

  after(async () => {
    await Promise.all(nodes.map((n) => n?.kill9()));
    await nats?.stop();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  test('a stream on the node without a replica gets every message once, in order, through a kill of a replica', async () => {
    // A conversation whose group has no replica on n4.
    let k = 0;
    while (replicasOf(groupOf(`remote-${k}`), NAMES).includes('n4')) k++;
    const conv = `remote-${k}`;
    const replicas = replicasOf(groupOf(conv), NAMES).map((n) => NAMES.indexOf(n));
    assert.equal((await api(nodes[replicas[0]]!.url, 'PUT', `/v1/conversations/${conv}`, {})).status, 200);

    const seqs: number[] = [];
    const ws = new WebSocket(`${nodes[3]!.url.replace('http', 'ws')}/v1/conversations/${conv}/stream?cursor=0`);
    ws.on('message', (d) => {
      const ev = JSON.parse(d.toString());
      if (ev.type === 'message') seqs.push(ev.seq);
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });

    const COUNT = 120;
    let next = 0;
    const writer = async () => {
      while (next < COUNT) {
        const m = next++;
        for (;;) {
          const live = nodes.filter((n): n is NodeProc => n !== null);
          const r = await api(live[m % live.length].url, 'POST', `/v1/conversations/${conv}/messages`, text(`m${m}`), { 'idempotency-key': `k${m}` }).catch(() => null);
          if (r?.status === 201) break;
          await sleep(50);
        }
      }
    };
    const writers = Array.from({ length: 4 }, writer);
    await sleep(500);
    // Kill one replica of the group (the leader or not), then bring it back.
    const victim = replicas[0];
    const node = nodes[victim]!;
    nodes[victim] = null;
    await node.kill9();
    await sleep(800);
    await start(victim);
    await Promise.all(writers);
    for (let i = 0; i < 100 && seqs.length < COUNT; i++) await sleep(50);
    ws.close();
    assert.deepEqual(seqs, Array.from({ length: COUNT }, (_, i) => i + 1));
  });
});
