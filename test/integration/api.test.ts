// Black-box REST tests (SPEC §3) against a real node process.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { api, listingMisses, startNode, type NodeProc } from './harness.js';

let node: NodeProc;
const msg = (text: string, extra: Record<string, unknown> = {}) => ({
  message: { role: 'user', parts: [{ type: 'text', text }], ...extra },
});

before(async () => {
  node = await startNode();
});
after(async () => {
  await node.stop();
  fs.rmSync(node.dataDir, { recursive: true, force: true });
});

describe('conversations', () => {
  test('PUT creates (200) and is idempotent; GET returns the record; unknown is 404', async () => {
    const a = await api(node.url, 'PUT', '/v1/conversations/c-put', { metadata: { team: 'x' } });
    assert.equal(a.status, 200);
    assert.deepEqual(Object.keys(a.json).sort(), [
      'archived_seq', 'created_at', 'id', 'last_seq', 'metadata', 'tombstoned', 'updated_at', 'version',
    ]);
    assert.equal(a.json.id, 'c-put');
    assert.equal(a.json.version, 0);
    assert.equal(a.json.last_seq, 0);
    assert.deepEqual(a.json.metadata, { team: 'x' });
    const b = await api(node.url, 'PUT', '/v1/conversations/c-put', {});
    assert.equal(b.status, 200);
    assert.deepEqual(b.json, a.json);
    const g = await api(node.url, 'GET', '/v1/conversations/c-put');
    assert.deepEqual(g.json, a.json);
    const n = await api(node.url, 'GET', '/v1/conversations/nope');
    assert.equal(n.status, 404);
    assert.equal(n.json.error, 'not_found');
    assert.equal(typeof n.json.message, 'string');
  });

  test('append assigns contiguous seqs, bumps version, counts tokens; reads return the shape', async () => {
    await api(node.url, 'PUT', '/v1/conversations/c-app', {});
    for (let i = 1; i <= 5; i++) {
      const r = await api(node.url, 'POST', '/v1/conversations/c-app/messages', msg(`hello number ${i}`));
      assert.equal(r.status, 201);
      assert.equal(r.json.seq, i);
      assert.equal(r.json.version, i);
      assert.ok(r.json.token_count > 0);
    }
    const given = await api(node.url, 'POST', '/v1/conversations/c-app/messages', msg('x', { token_count: 42, metadata: { k: 1 } }));
    assert.equal(given.json.token_count, 42);
    const all = await api(node.url, 'GET', '/v1/conversations/c-app/messages?from=0&limit=100');
    assert.equal(all.status, 200);
    assert.deepEqual(all.json.messages.map((m: any) => m.seq), [1, 2, 3, 4, 5, 6]);
    const m6 = all.json.messages[5];
    assert.deepEqual(Object.keys(m6).sort(), ['inserted_at', 'metadata', 'parts', 'role', 'seq', 'token_count']);
    assert.deepEqual(m6.metadata, { k: 1 });
    assert.equal(m6.token_count, 42);
    assert.ok(!Number.isNaN(Date.parse(m6.inserted_at)));
    const rec = await api(node.url, 'GET', '/v1/conversations/c-app');
    assert.equal(rec.json.last_seq, 6);
    assert.equal(rec.json.version, 6);
  });

  test('hundreds of concurrent creates and appends over every group all succeed', async () => {
    const ids = Array.from({ length: 600 }, (_, i) => `burst-${i}`);
    const puts = await Promise.all(ids.map((id) => api(node.url, 'PUT', `/v1/conversations/${id}`, {})));
    assert.deepEqual(puts.filter((r) => r.status !== 200).map((r) => r.text), []);
    const appends = await Promise.all(
      ids.flatMap((id) => [1, 2].map((n) => api(node.url, 'POST', `/v1/conversations/${id}/messages`, msg(`${id}-${n}`)))),
    );
    assert.deepEqual(appends.filter((r) => r.status !== 201).map((r) => r.text), []);
    const recs = await Promise.all(ids.map((id) => api(node.url, 'GET', `/v1/conversations/${id}`)));
    assert.ok(recs.every((r) => r.json.last_seq === 2 && r.json.version === 2));
  });

  test('append to an unknown conversation is 404 and creates nothing', async () => {
    const r = await api(node.url, 'POST', '/v1/conversations/ghost/messages', msg('x'));
    assert.equal(r.status, 404);
    assert.equal((await api(node.url, 'GET', '/v1/conversations/ghost')).status, 404);
  });

  test('tail pages newest-first, each page oldest→newest; replay pages by seq', async () => {
    await api(node.url, 'PUT', '/v1/conversations/c-tail', {});
    for (let i = 1; i <= 25; i++) await api(node.url, 'POST', '/v1/conversations/c-tail/messages', msg(`m${i}`));
    const seqs = async (p: string) => (await api(node.url, 'GET', p)).json.messages.map((m: any) => m.seq);
    assert.deepEqual(await seqs('/v1/conversations/c-tail/tail?limit=10'), [16, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
    assert.deepEqual(await seqs('/v1/conversations/c-tail/tail?limit=10&offset=10'), [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    assert.deepEqual(await seqs('/v1/conversations/c-tail/tail?limit=10&offset=20'), [1, 2, 3, 4, 5]);
    assert.deepEqual(await seqs('/v1/conversations/c-tail/tail?limit=10&offset=30'), []);
    assert.deepEqual(await seqs('/v1/conversations/c-tail/messages?from=20&limit=3'), [21, 22, 23]);
    assert.deepEqual(await seqs('/v1/conversations/c-tail/messages?from=23'), [24, 25]);
    assert.deepEqual(await seqs('/v1/conversations/c-tail/messages?from=25'), []);
    const texts = (await api(node.url, 'GET', '/v1/conversations/c-tail/tail?limit=2')).json.messages.map(
      (m: any) => m.parts[0].text,
    );
    assert.deepEqual(texts, ['m24', 'm25']);
    assert.equal((await api(node.url, 'GET', '/v1/conversations/ghost/tail')).status, 404);
  });

  test('if_version: mismatch is 409 naming the current version; exactly one of N concurrent wins', async () => {
    await api(node.url, 'PUT', '/v1/conversations/c-ver', {});
    await api(node.url, 'POST', '/v1/conversations/c-ver/messages', msg('a'));
    const bad = await api(node.url, 'POST', '/v1/conversations/c-ver/messages', { ...msg('b'), if_version: 0 });
    assert.equal(bad.status, 409);
    assert.equal(bad.json.error, 'conflict');
    assert.match(bad.json.message, /\b1\b/);
    const racers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        api(node.url, 'POST', '/v1/conversations/c-ver/messages', { ...msg(`r${i}`), if_version: 1 }),
      ),
    );
    assert.equal(racers.filter((r) => r.status === 201).length, 1);
    assert.equal(racers.filter((r) => r.status === 409).length, 19);
    assert.equal((await api(node.url, 'GET', '/v1/conversations/c-ver')).json.last_seq, 2);
  });

  test('idempotency: retry returns the original with duplicate:true; other message is 409; header works', async () => {
    await api(node.url, 'PUT', '/v1/conversations/c-idem', {});
    const a = await api(node.url, 'POST', '/v1/conversations/c-idem/messages', { ...msg('once'), idempotency_key: 'k-1' });
    assert.equal(a.status, 201);
    assert.equal(a.json.duplicate, undefined);
    await api(node.url, 'POST', '/v1/conversations/c-idem/messages', msg('other'));
    const b = await api(node.url, 'POST', '/v1/conversations/c-idem/messages', { ...msg('once'), idempotency_key: 'k-1' });
    assert.equal(b.status, 201);
    assert.deepEqual(b.json, { ...a.json, duplicate: true });
    // key is checked before if_version
    const c = await api(node.url, 'POST', '/v1/conversations/c-idem/messages', {
      ...msg('once'),
      idempotency_key: 'k-1',
      if_version: 0,
    });
    assert.equal(c.status, 201);
    const d = await api(node.url, 'POST', '/v1/conversations/c-idem/messages', { ...msg('changed'), idempotency_key: 'k-1' });
    assert.equal(d.status, 409);
    assert.equal(d.json.error, 'idempotency_conflict');
    const h = await api(node.url, 'POST', '/v1/conversations/c-idem/messages', msg('hdr'), { 'idempotency-key': 'k-2' });
    const h2 = await api(node.url, 'POST', '/v1/conversations/c-idem/messages', msg('hdr'), { 'idempotency-key': 'k-2' });
    assert.equal(h2.json.duplicate, true);
    assert.equal(h2.json.seq, h.json.seq);
    const both = await api(node.url, 'POST', '/v1/conversations/c-idem/messages', { ...msg('x'), idempotency_key: 'a' }, {
      'idempotency-key': 'b',
    });
    assert.equal(both.status, 400);
    const concurrent = await Promise.all(
      Array.from({ length: 10 }, () =>
        api(node.url, 'POST', '/v1/conversations/c-idem/messages', { ...msg('race'), idempotency_key: 'k-race' }),
      ),
    );
    assert.equal(new Set(concurrent.map((r) => r.json.seq)).size, 1);
    assert.equal(concurrent.filter((r) => r.json.duplicate === true).length, 9);
    assert.equal((await api(node.url, 'GET', '/v1/conversations/c-idem')).json.last_seq, 4);
  });

  test('DELETE tombstones: 204, appends 410, reads still work, listing hides it by default', async () => {
    await api(node.url, 'PUT', '/v1/conversations/c-del', {});
    await api(node.url, 'POST', '/v1/conversations/c-del/messages', msg('before'));
    const d = await api(node.url, 'DELETE', '/v1/conversations/c-del');
    assert.equal(d.status, 204);
    const a = await api(node.url, 'POST', '/v1/conversations/c-del/messages', msg('after'));
    assert.equal(a.status, 410);
    assert.equal(a.json.error, 'tombstoned');
    const g = await api(node.url, 'GET', '/v1/conversations/c-del');
    assert.equal(g.json.tombstoned, true);
    assert.equal((await api(node.url, 'GET', '/v1/conversations/c-del/tail')).json.messages.length, 1);
    assert.equal((await api(node.url, 'DELETE', '/v1/conversations/ghost')).status, 404);
  });

  test('listing: id order, cursor paging, tombstoned filter, metadata filters', async () => {
    for (const id of ['L-b', 'L-a', 'L-d', 'L-c']) {
      await api(node.url, 'PUT', `/v1/conversations/${id}`, { metadata: { kind: id === 'L-c' ? 'x' : 'y', n: 1 } });
    }
    await api(node.url, 'DELETE', '/v1/conversations/L-d');
    const ids = (r: any) => r.json.conversations.map((c: any) => c.id).filter((i: string) => i.startsWith('L-'));
    const all = await api(node.url, 'GET', '/v1/conversations?limit=1000');
    assert.deepEqual(ids(all), ['L-a', 'L-b', 'L-c']);
    const everyId = all.json.conversations.map((c: any) => c.id);
    assert.deepEqual(everyId, [...everyId].sort((a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    assert.deepEqual(ids(await api(node.url, 'GET', '/v1/conversations?tombstoned=true')), ['L-d']);
    assert.deepEqual(ids(await api(node.url, 'GET', '/v1/conversations?tombstoned=all&limit=1000')), ['L-a', 'L-b', 'L-c', 'L-d']);
    assert.deepEqual(ids(await api(node.url, 'GET', '/v1/conversations?metadata.kind=x')), ['L-c']);
    assert.deepEqual(ids(await api(node.url, 'GET', '/v1/conversations?metadata.kind=y&metadata.n=1')), ['L-a', 'L-b']);
    // walk every page of size 2 and get every live conversation exactly once
    const seen: string[] = [];
    let cursor: number | null = 0;
    while (cursor !== null) {
      const page: any = await api(node.url, 'GET', `/v1/conversations?limit=2&cursor=${cursor}`);
      assert.equal(page.status, 200);
      assert.ok(page.json.conversations.length <= 2);
      seen.push(...page.json.conversations.map((c: any) => c.id));
      cursor = page.json.next_cursor;
    }
    assert.deepEqual(seen, everyId);
    assert.equal((await api(node.url, 'GET', '/v1/conversations?tombstoned=maybe')).status, 400);
    assert.equal((await api(node.url, 'GET', '/v1/conversations?cursor=-1')).status, 400);
  });

  test('listing sees every acknowledged change at once (read-your-writes under load)', async () => {
    // The listing scans RocksDB, so it must wait for the state's write (runtime/driver.ts stateWritten).
    const url = () => node.url;
    assert.deepEqual(await listingMisses({ putUrl: url, listUrl: url, loadUrl: node.url, writers: 8, perWriter: 25 }), []);
  });
});

describe('input rules', () => {
  test('ids: invalid chars or length are 400 on every route', async () => {
    const bad = ['a%20b', 'a.b', 'x'.repeat(129), 'caf%C3%A9', '%'];
    for (const id of bad) {
      for (const [m, p] of [
        ['GET', ''],
        ['PUT', ''],
        ['DELETE', ''],
        ['POST', '/messages'],
        ['GET', '/messages'],
        ['GET', '/tail'],
      ] as const) {
        const r = await api(node.url, m, `/v1/conversations/${id}${p}`, m === 'POST' || m === 'PUT' ? msg('x') : undefined);
        assert.equal(r.status, 400, `${m} ${id}${p}`);
        assert.equal(r.json.error, 'invalid_id');
      }
    }
    assert.equal((await api(node.url, 'PUT', `/v1/conversations/${'x'.repeat(128)}`, {})).status, 200);
  });

  test('query integers: limit 1-1000, offset/from >= 0, decimal only', async () => {
    await api(node.url, 'PUT', '/v1/conversations/q', {});
    for (const q of ['limit=0', 'limit=1001', 'limit=abc', 'limit=1x', 'limit=-1', 'offset=-1', 'offset=1.5', 'limit=']) {
      const r = await api(node.url, 'GET', `/v1/conversations/q/tail?${q}`);
      assert.equal(r.status, 400, q);
      assert.match(r.json.error, /^invalid_/);
    }
    for (const q of ['from=-1', 'from=x', 'limit=0']) {
      assert.equal((await api(node.url, 'GET', `/v1/conversations/q/messages?${q}`)).status, 400, q);
    }
    assert.equal((await api(node.url, 'GET', '/v1/conversations/q/tail?limit=1000&offset=0')).status, 200);
  });

  test('bodies: content type 415, bad JSON 400, invalid UTF-8 400, over the limit 413', async () => {
    await api(node.url, 'PUT', '/v1/conversations/b', {});
    const p = '/v1/conversations/b/messages';
    const ct = await api(node.url, 'POST', p, JSON.stringify(msg('x')), { 'content-type': 'text/plain' });
    assert.equal(ct.status, 415);
    assert.equal(ct.json.error, 'invalid_content_type');
    const cs = await api(node.url, 'POST', p, JSON.stringify(msg('x')), { 'content-type': 'application/json; charset=utf-8' });
    assert.equal(cs.status, 201);
    assert.equal((await api(node.url, 'POST', p, '{"message":')).status, 400);
    const raw = Buffer.concat([Buffer.from('{"message":{"role":"user","parts":[{"type":"text","text":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}]}}')]);
    assert.equal((await api(node.url, 'POST', p, raw)).status, 400);
    const big = await api(node.url, 'POST', p, msg('x'.repeat(1024 * 1024 + 10)));
    assert.equal(big.status, 413);
    assert.equal(big.json.error, 'too_large');
    const shapes = [
      {},
      { message: null },
      { message: { role: 'user' } },
      { message: { role: 'user', parts: [] } },
      { message: { role: 'user', parts: [{}] } },
      { message: { role: 'user', parts: [{ type: 1 }] } },
      { message: { role: 5, parts: [{ type: 't' }] } },
      { message: { role: 'user', parts: [{ type: 't' }], token_count: -1 } },
      { message: { role: 'user', parts: [{ type: 't' }], token_count: 1.5 } },
      { message: { role: 'user', parts: [{ type: 't' }], token_count: '3' } },
      { message: { role: 'user', parts: [{ type: 't' }], metadata: [] } },
      { ...msg('x'), if_version: -1 },
      { ...msg('x'), if_version: 'one' },
      { ...msg('x'), idempotency_key: '' },
      { ...msg('x'), idempotency_key: 'k'.repeat(257) },
      [],
      'str',
    ];
    for (const s of shapes) {
      const r = await api(node.url, 'POST', p, s);
      assert.equal(r.status, 400, JSON.stringify(s).slice(0, 80));
      assert.match(r.json.error, /^invalid_/);
    }
    assert.equal((await api(node.url, 'GET', '/v1/conversations/b')).json.last_seq, 1);
  });

  test('unknown paths are 404 and wrong methods 405, as JSON', async () => {
    const r = await api(node.url, 'GET', '/v2/nothing');
    assert.equal(r.status, 404);
    assert.equal(r.json.error, 'not_found');
    const m = await api(node.url, 'PATCH', '/v1/conversations/x', {});
    assert.equal(m.status, 405);
    assert.equal(m.json.error, 'method_not_allowed');
  });
});

describe('operations', () => {
  test('health endpoints and metrics', async () => {
    assert.equal((await api(node.url, 'GET', '/health/live')).status, 200);
    assert.equal((await api(node.url, 'GET', '/health/ready')).status, 200);
    assert.equal((await api(node.url, 'GET', '/healthz')).status, 200);
    assert.equal((await api(node.url, 'GET', '/healthz?check=raft')).status, 200);
    const bad = await api(node.url, 'GET', '/healthz?check=disk');
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error, 'invalid_check');
    const m = await api(node.url, 'GET', '/metrics');
    assert.match(m.text, /fleet_lm_messages_append_total\{role="user",source="conversations"\} \d+/);
    assert.match(m.text, /fleet_lm_messages_token_count_bucket/);
    assert.match(m.text, /fleet_lm_append_latency_ms_bucket/);
    assert.match(m.text, /process_cpu_user_seconds_total/);
  });

  test('logs are one JSON object a line and say the native uWS build is used', () => {
    const lines = node.logs.filter((l) => l.startsWith('{'));
    assert.ok(lines.length > 0);
    for (const l of lines) assert.equal(typeof JSON.parse(l).type, 'string');
    assert.ok(lines.some((l) => JSON.parse(l).type === 'uws_native'));
  });
});

describe('export', () => {
  test('GET /export streams the whole history as NDJSON in seq order (more than one page)', async () => {
    await api(node.url, 'PUT', '/v1/conversations/c-export', {});
    for (let i = 0; i < 1200; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => api(node.url, 'POST', '/v1/conversations/c-export/messages', msg(`line ${i + j}`))));
    }
    const r = await fetch(`${node.url}/v1/conversations/c-export/export`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /application\/x-ndjson/);
    const lines = (await r.text()).trimEnd().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((m) => m.seq), Array.from({ length: 1200 }, (_, i) => i + 1));
    const replay = await api(node.url, 'GET', '/v1/conversations/c-export/messages?from=1100&limit=100');
    assert.deepEqual(lines.slice(1100), replay.json.messages);
    assert.equal((await fetch(`${node.url}/v1/conversations/nope/export`)).status, 404);
    assert.equal((await fetch(`${node.url}/v1/conversations/bad%20id/export`)).status, 400);
  });
});
