// Stream events on NATS (SPEC §5) with a real nats-server: every committed
// event of every conversation is published once, in order, on
// <prefix>.conversations.<id>.events; oversized events go out truncated;
// NATS credentials come from env; /healthz reports the connection.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { api, startNode, type NodeProc } from './harness.js';
import { startNats, type NatsServer } from './nats-server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Collects every message on a subject pattern: [subject, parsed payload]. */
function collect(nc: NatsConnection, subject: string): [string, any][] {
  const got: [string, any][] = [];
  const sub = nc.subscribe(subject);
  void (async () => {
    for await (const m of sub) got.push([m.subject, JSON.parse(m.string())]);
  })();
  return got;
}

describe('NATS events', () => {
  let nats: NatsServer;
  let node: NodeProc;
  let nc: NatsConnection;
  before(async () => {
    nats = await startNats('max_payload: 8192\nauthorization { token: "nats-secret" }');
    node = await startNode({ env: { NATS_URL: nats.url, FLEETLM_NATS_TOKEN: 'nats-secret', FLEETLM_NATS_SUBJECT_PREFIX: 'acme.fleet' } });
    nc = await connect({ servers: nats.url, token: 'nats-secret' });
  });
  after(async () => {
    await nc.close();
    await node.stop();
    await nats.stop();
    fs.rmSync(node.dataDir, { recursive: true, force: true });
  });

  test('every committed event is published once, in order, on the conversation subject', async () => {
    const got = collect(nc, 'acme.fleet.conversations.*.events');
    await nc.flush();
    for (const id of ['n-1', 'n-2']) await api(node.url, 'PUT', `/v1/conversations/${id}`, {});
    const appends: Promise<unknown>[] = [];
    for (let i = 1; i <= 50; i++) {
      for (const id of ['n-1', 'n-2']) {
        appends.push(api(node.url, 'POST', `/v1/conversations/${id}/messages`, { message: { role: 'user', parts: [{ type: 'text', text: `${id}#${i}` }] } }));
      }
    }
    await Promise.all(appends);
    // A retried append (same idempotency key) is not a new event.
    const retry = { message: { role: 'user', parts: [{ type: 'text', text: 'once' }] }, idempotency_key: 'k1' };
    await api(node.url, 'POST', '/v1/conversations/n-1/messages', retry);
    await api(node.url, 'POST', '/v1/conversations/n-1/messages', retry);
    await api(node.url, 'DELETE', '/v1/conversations/n-2');
    await until(() => got.length === 102, `102 events, have ${got.length}`);
    await sleep(200);
    assert.equal(got.length, 102, 'nothing extra');
    for (const id of ['n-1', 'n-2']) {
      const mine = got.filter(([s]) => s === `acme.fleet.conversations.${id}.events`).map(([, ev]) => ev);
      const seqs = mine.filter((e) => e.type === 'message').map((e) => e.seq);
      assert.deepEqual(seqs, Array.from({ length: id === 'n-1' ? 51 : 50 }, (_, k) => k + 1), id);
      assert.deepEqual(mine.filter((e) => e.type === 'message').map((e) => e.version), seqs);
      if (id === 'n-2') assert.deepEqual(mine.at(-1), { type: 'tombstone' });
    }
    const first = got.find(([s]) => s.endsWith('.n-1.events'))![1];
    assert.deepEqual(Object.keys(first.message).sort(), ['inserted_at', 'metadata', 'parts', 'role', 'token_count']);
  });

  test('an event over the server max payload is published truncated; the log has the body', async () => {
    const got = collect(nc, 'acme.fleet.conversations.n-big.events');
    await nc.flush();
    await api(node.url, 'PUT', '/v1/conversations/n-big', {});
    const text = 'y'.repeat(20_000);
    const r = await api(node.url, 'POST', '/v1/conversations/n-big/messages', {
      message: { role: 'tool', parts: [{ type: 'text', text }], token_count: 1 },
    });
    assert.equal(r.status, 201);
    await until(() => got.length === 1, 'truncated event');
    assert.deepEqual(got[0][1], { type: 'message', seq: 1, version: 1, message: null, truncated: true });
    const log = await api(node.url, 'GET', '/v1/conversations/n-big/messages');
    assert.equal(log.json.messages[0].parts[0].text, text);
  });

  test('/healthz reports the NATS connection; /metrics counts published events', async () => {
    const r = await api(node.url, 'GET', '/healthz?check=nats');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.checks, { nats: 'ok' });
    const m = (await api(node.url, 'GET', '/metrics')).text;
    assert.match(m, /fleet_lm_nats_events_published_total 10[0-9]\n/);
    assert.match(m, /fleet_lm_nats_publish_failures_total 0\n/);
  });
});

test('NATS credentials are required: a wrong token stops boot with one line naming NATS_URL', async () => {
  const nats = await startNats('authorization { token: "right" }');
  try {
    await assert.rejects(
      startNode({ env: { NATS_URL: nats.url, FLEETLM_NATS_TOKEN: 'wrong' } }),
      (err: Error) => /NATS_URL: cannot connect/.test(err.message),
    );
  } finally {
    await nats.stop();
  }
});
