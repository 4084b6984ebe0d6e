// The Postgres archive against a real PostgreSQL started by the test:
// archive rows equal the log, the hot tier keeps tail_keep, reads below it
// come from the archive unchanged, an outage fails no append and drains
// afterwards, and a node killed mid-flush re-archives without duplicates.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import pg from 'pg';
import WebSocket from 'ws';
import { api, startNode, tempDir, type NodeProc } from './harness.js';
import { startPostgres, type Postgres } from './postgres.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const msg = (text: string) => ({ message: { role: 'user', parts: [{ type: 'text', text }], metadata: { n: text } } });

async function until(cond: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

let pgServer: Postgres;
let client: pg.Client;

const archivedRows = async (id: string) =>
  (await client.query('SELECT seq, role, parts, metadata, token_count, inserted_at FROM messages WHERE conversation_id = $1 ORDER BY seq', [id])).rows;

const archiveEnv = (extra: Record<string, string> = {}) => ({
  FLEETLM_ARCHIVER_ENABLED: 'true',
  DATABASE_URL: pgServer.url,
  FLEETLM_ARCHIVE_FLUSH_INTERVAL_MS: '100',
  FLEETLM_TAIL_KEEP: '20',
  ...extra,
});

async function appendMany(node: NodeProc, id: string, from: number, count: number): Promise<void> {
  for (let i = 0; i < count; i += 50) {
    const rs = await Promise.all(
      Array.from({ length: Math.min(50, count - i) }, (_, j) => api(node.url, 'POST', `/v1/conversations/${id}/messages`, msg(`${id}-${from + i + j}`))),
    );
    for (const r of rs) assert.equal(r.status, 201, r.text);
  }
}

before(async () => {
  pgServer = await startPostgres();
  client = new pg.Client({ connectionString: pgServer.url });
  await client.connect();
});
after(async () => {
  await client.end();
  await pgServer.stop();
});

describe('archive', () => {
  let node: NodeProc;
  before(async () => {
    node = await startNode({ env: archiveEnv() });
  });
  after(async () => {
    await node.stop();
    fs.rmSync(node.dataDir, { recursive: true, force: true });
  });

  test('archive rows equal the log; the hot tier keeps tail_keep; deep reads and export come back unchanged', async () => {
    await api(node.url, 'PUT', '/v1/conversations/ar-1', { metadata: { team: 'a' } });
    await appendMany(node, 'ar-1', 1, 300);
    const log = (await api(node.url, 'GET', '/v1/conversations/ar-1/messages?from=0&limit=1000')).json.messages;
    await until(async () => (await api(node.url, 'GET', '/v1/conversations/ar-1')).json.archived_seq === 300, 'archived_seq 300');
    const rows = await archivedRows('ar-1');
    assert.equal(rows.length, 300);
    for (let i = 0; i < 300; i++) {
      const m = log[i];
      const r = rows[i];
      assert.equal(Number(r.seq), m.seq);
      assert.equal(r.role, m.role);
      assert.deepEqual(r.parts, m.parts);
      assert.deepEqual(r.metadata, m.metadata);
      assert.equal(r.token_count, m.token_count);
      assert.equal(new Date(r.inserted_at).toISOString(), m.inserted_at);
    }
    const conv = await client.query('SELECT * FROM conversations WHERE id = $1', ['ar-1']);
    assert.equal(Number(conv.rows[0].last_seq), 300);
    assert.deepEqual(conv.rows[0].metadata, { team: 'a' });
    // Reads cannot tell where a message lives: tail, replay and export equal what was appended.
    const deep = (await api(node.url, 'GET', '/v1/conversations/ar-1/messages?from=0&limit=1000')).json.messages;
    assert.deepEqual(deep, log);
    const tail = (await api(node.url, 'GET', '/v1/conversations/ar-1/tail?limit=50&offset=260')).json.messages;
    assert.deepEqual(tail, log.slice(0, 40));
    const exported = (await (await fetch(`${node.url}/v1/conversations/ar-1/export`)).text()).trimEnd().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(exported, log);
    const m = (await api(node.url, 'GET', '/metrics')).text;
    assert.match(m, /fleet_lm_archive_inserted_total [1-9]/);
    // tail_keep 20: everything but the newest 20 left the hot tier, nothing unarchived did.
    assert.match(m, /fleet_lm_archive_trimmed_total 280\n/);
    // A stream resumed from below the hot tier replays the archived part from Postgres, then
    // the hot tier, then goes live: every message once, in order, no gap (SPEC §5).
    let last = 300;
    for (const cursor of [0, 150]) {
      const ws = new WebSocket(`${node.url.replace('http', 'ws')}/v1/conversations/ar-1/stream?cursor=${cursor}`);
      const events: any[] = [];
      ws.on('message', (d) => events.push(JSON.parse(d.toString())));
      await until(async () => events.length === last - cursor, `${last - cursor} messages from cursor ${cursor}`);
      await appendMany(node, 'ar-1', ++last, 1);
      await until(async () => events.length === last - cursor, 'the live message after the replay');
      ws.close();
      assert.deepEqual(events.map((e) => e.seq), Array.from({ length: last - cursor }, (_, i) => cursor + 1 + i));
      const expected = (await api(node.url, 'GET', `/v1/conversations/ar-1/messages?from=${cursor}&limit=1000`)).json.messages;
      assert.deepEqual(
        events.map((e) => ({ type: e.type, version: e.version, message: e.message })),
        expected.map(({ seq, ...message }: any) => ({ type: 'message', version: seq, message })),
      );
    }
    // What the archive lost too cannot be healed: the stream gets the run before the hole, then a gap, then the hot tier.
    await client.query('DELETE FROM messages WHERE conversation_id = $1 AND seq = 100', ['ar-1']);
    const ws = new WebSocket(`${node.url.replace('http', 'ws')}/v1/conversations/ar-1/stream?cursor=90`);
    const events: any[] = [];
    ws.on('message', (d) => events.push(JSON.parse(d.toString())));
    await until(async () => events.at(-1)?.seq === last, 'the stream reached the newest message');
    ws.close();
    assert.deepEqual(events.slice(0, 9).map((e) => e.seq), Array.from({ length: 9 }, (_, i) => 91 + i));
    const gap = events[9];
    assert.equal(gap.type, 'gap');
    assert.equal(gap.expected, 100);
    assert.deepEqual(events.slice(10).map((e) => e.seq), Array.from({ length: last - gap.actual + 1 }, (_, i) => gap.actual + i));
  });

  test("a context stream resumed below the hot tier numbers archived messages' versions past their compactions", async () => {
    const trimmed = async () => Number(/^fleet_lm_archive_trimmed_total (\d+)/m.exec((await api(node.url, 'GET', '/metrics')).text)![1]);
    const before = await trimmed();
    assert.equal((await api(node.url, 'PUT', '/v1/contexts/ax-1', { token_budget: 1_000_000, policy: { strategy: 'manual' } })).status, 200);
    const compact = async () => {
      const r = await api(node.url, 'POST', '/v1/contexts/ax-1/compact', { replacement: [{ role: 'system', parts: [{ type: 'text', text: 'summary' }] }] });
      assert.equal(r.status, 200, r.text);
    };
    for (let i = 1; i <= 120; i++) {
      const r = await api(node.url, 'POST', '/v1/contexts/ax-1/messages', msg(`ax-${i}`));
      assert.equal(r.status, 201, r.text);
      if (i === 40 || i === 80) await compact();
    }
    // The live window starts after the second compaction: seqs 1..80 leave the hot tier.
    await until(async () => (await api(node.url, 'GET', '/v1/contexts/ax-1')).json.archived_seq === 120, 'archived_seq 120');
    await until(async () => (await trimmed()) - before >= 80, 'the context trimmed (ar-1 may trim its newest too)');
    const ws = new WebSocket(`${node.url.replace('http', 'ws')}/v1/contexts/ax-1/stream?cursor=0&include_messages=true`);
    const events: any[] = [];
    ws.on('message', (d) => events.push(JSON.parse(d.toString())));
    await until(async () => events.filter((e) => e.type === 'message').length === 120, '120 message events');
    ws.close();
    const messages = events.filter((e) => e.type === 'message');
    assert.deepEqual(messages.map((e) => e.seq), Array.from({ length: 120 }, (_, i) => i + 1));
    // A compaction takes a version: messages after the first have version seq + 1, after the second seq + 2.
    assert.deepEqual(messages.map((e) => e.version - e.seq), Array.from({ length: 120 }, (_, i) => (i < 40 ? 0 : i < 80 ? 1 : 2)));
  });

  test('Postgres down: appends keep succeeding; the backlog drains after it returns, no gap, no duplicate', async () => {
    await api(node.url, 'PUT', '/v1/conversations/ar-2', {});
    await appendMany(node, 'ar-2', 1, 50);
    await until(async () => (await api(node.url, 'GET', '/v1/conversations/ar-2')).json.archived_seq === 50, 'first flush');
    await client.end();
    await pgServer.kill();
    await appendMany(node, 'ar-2', 51, 200);
    const during = (await api(node.url, 'GET', '/v1/conversations/ar-2')).json;
    assert.equal(during.last_seq, 250);
    assert.equal(during.archived_seq, 50, 'nothing archived while Postgres is down');
    const hot = (await api(node.url, 'GET', '/v1/conversations/ar-2/tail?limit=100')).json.messages;
    assert.equal(hot.length, 100, 'hot reads keep working');
    // The health check names the database (its probe runs at most once a second).
    const pgHealth = async () => (await api(node.url, 'GET', '/healthz?check=postgres')).status;
    await until(async () => (await pgHealth()) === 500, 'healthz reports postgres failing');
    await pgServer.restart();
    client = new pg.Client({ connectionString: pgServer.url });
    await client.connect();
    await until(async () => (await api(node.url, 'GET', '/v1/conversations/ar-2')).json.archived_seq === 250, 'backlog drained', 60_000);
    await until(async () => (await pgHealth()) === 200, 'healthz reports postgres ok again');
    const rows = await archivedRows('ar-2');
    assert.deepEqual(rows.map((r) => Number(r.seq)), Array.from({ length: 250 }, (_, i) => i + 1));
  });
});

test('archive - a node killed mid-load re-archives idempotently after restart', async () => {
  const dataDir = tempDir('fleetlm-archive-kill-');
  let node = await startNode({ dataDir, env: archiveEnv({ FLEETLM_ARCHIVE_FLUSH_INTERVAL_MS: '20' }) });
  try {
    await api(node.url, 'PUT', '/v1/conversations/ar-3', {});
    await appendMany(node, 'ar-3', 1, 400);
    await node.kill9();
    node = await startNode({ dataDir, env: archiveEnv() });
    await appendMany(node, 'ar-3', 401, 100);
    await until(async () => (await api(node.url, 'GET', '/v1/conversations/ar-3')).json.archived_seq === 500, 'archived after restart');
    const rows = await archivedRows('ar-3');
    assert.deepEqual(rows.map((r) => Number(r.seq)), Array.from({ length: 500 }, (_, i) => i + 1));
  } finally {
    await node.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test('archive - an unreachable database stops boot with one line', async () => {
  await assert.rejects(
    startNode({ env: { FLEETLM_ARCHIVER_ENABLED: 'true', DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' } }),
    (err: Error) => /DATABASE_URL: cannot reach the archive database/.test(err.message),
  );
});

test('archive - a migration that fails stops boot with one line naming MIGRATE_ON_BOOT', async () => {
  // A database where the archive's table names are taken by something else.
  await client.query('CREATE DATABASE broken');
  const broken = new pg.Client({ connectionString: pgServer.url.replace(/\/postgres$/, '/broken') });
  await broken.connect();
  await broken.query('CREATE TABLE messages (x int)');
  await broken.end();
  await assert.rejects(
    startNode({ env: { FLEETLM_ARCHIVER_ENABLED: 'true', DATABASE_URL: pgServer.url.replace(/\/postgres$/, '/broken') } }),
    (err: Error) => /MIGRATE_ON_BOOT: archive migration failed/.test(err.message),
  );
});
