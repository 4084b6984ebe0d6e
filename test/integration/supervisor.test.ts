// A shard worker that dies is restarted from disk by the supervisor: the
// process keeps serving, requests owed by the dead worker get 503 (never a
// hang), and every acknowledged append survives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import WebSocket from 'ws';
import { api, startNode, waitReady } from './harness.js';

test('supervisor - crashed workers are restarted from disk and lose no acknowledged append', async () => {
  const node = await startNode({ env: { FLEETLM_FAILPOINT: 'worker-crash-after:300', FLEETLM_WORKERS: '2' } });
  try {
    const convs = Array.from({ length: 8 }, (_, i) => `sv-${i}`);
    for (const c of convs) assert.equal((await api(node.url, 'PUT', `/v1/conversations/${c}`, {})).status, 200);
    const acked = new Map<string, number[]>(convs.map((c) => [c, []]));
    const statuses = new Map<number, number>();
    let n = 0;
    const deadline = Date.now() + 4000;
    const writer = async () => {
      while (Date.now() < deadline) {
        const c = convs[n++ % convs.length];
        const r = await api(node.url, 'POST', `/v1/conversations/${c}/messages`, {
          message: { role: 'user', parts: [{ type: 'text', text: `${c}-${n}` }] },
        });
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status === 201) acked.get(c)!.push(r.json.seq);
        else if (r.status === 503) await new Promise((res) => setTimeout(res, 20));
        else throw new Error(`unexpected ${r.status}: ${r.text}`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, writer));
    const restarts = node.logs.filter((l) => l.includes('"type":"worker_restart"')).length;
    assert.ok(restarts >= 1, `no worker restart happened: ${JSON.stringify([...statuses])}`);
    assert.ok((statuses.get(201) ?? 0) > 300, `too few acks: ${JSON.stringify([...statuses])}`);
    await waitReady(node.url, node.exited);
    for (const c of convs) {
      const msgs = (await api(node.url, 'GET', `/v1/conversations/${c}/messages?limit=1000`)).json.messages;
      const seqs = msgs.map((m: any) => m.seq);
      assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `${c}: seqs not contiguous`);
      for (const s of acked.get(c)!) assert.ok(s <= seqs.length, `${c}: acked seq ${s} lost`);
    }
    assert.equal(node.proc.exitCode, null, 'the process kept running');
  } finally {
    await node.stop();
    fs.rmSync(node.dataDir, { recursive: true, force: true });
  }
});

// One worker: every restart starts a worker after the last one using RocksDB exited.
test('supervisor - streams deliver every message once, in order, across worker restarts', async () => {
  const node = await startNode({ env: { FLEETLM_FAILPOINT: 'worker-crash-after:150', FLEETLM_WORKERS: '1' } });
  const sockets: WebSocket[] = [];
  try {
    const convs = Array.from({ length: 4 }, (_, i) => `st-${i}`);
    const seen = new Map<string, number[]>(convs.map((c) => [c, []]));
    for (const c of convs) {
      assert.equal((await api(node.url, 'PUT', `/v1/conversations/${c}`, {})).status, 200);
      const ws = new WebSocket(`${node.url.replace('http', 'ws')}/v1/conversations/${c}/stream?cursor=0`);
      ws.on('message', (d) => {
        const ev = JSON.parse(d.toString());
        if (ev.type === 'message') seen.get(c)!.push(ev.seq);
      });
      await new Promise((r) => ws.once('open', r));
      sockets.push(ws);
    }
    let n = 0;
    const deadline = Date.now() + 3000;
    const writer = async () => {
      while (Date.now() < deadline) {
        const c = convs[n % convs.length];
        const key = `k-${n++}`;
        // Retried until acknowledged; the key makes a retry of a landed append a no-op.
        for (;;) {
          const r = await api(node.url, 'POST', `/v1/conversations/${c}/messages`, {
            message: { role: 'user', parts: [{ type: 'text', text: key }] },
            idempotency_key: key,
          });
          if (r.status === 201) break;
          assert.equal(r.status, 503, r.text);
          await new Promise((res) => setTimeout(res, 20));
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, writer));
    const restarts = node.logs.filter((l) => l.includes('"type":"worker_restart"')).length;
    assert.ok(restarts >= 2, `only ${restarts} worker restarts`);
    await waitReady(node.url, node.exited);
    for (const c of convs) {
      const last = (await api(node.url, 'GET', `/v1/conversations/${c}`)).json.last_seq;
      const deadline2 = Date.now() + 10_000;
      while ((seen.get(c)!.at(-1) ?? 0) < last && Date.now() < deadline2) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(seen.get(c), Array.from({ length: last }, (_, i) => i + 1), `${c}: every seq once, in order`);
    }
  } finally {
    for (const ws of sockets) ws.terminate();
    await node.stop();
    fs.rmSync(node.dataDir, { recursive: true, force: true });
  }
});
