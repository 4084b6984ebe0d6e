// Black-box tests of contexts (SPEC §4) against a real node process: config,
// window reads through each policy, compaction, metadata, and a window that
// survives restarts (clean and kill -9).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { api, startNode, type NodeProc } from './harness.js';

let node: NodeProc;

const textPart = (text: string) => ({ type: 'text', text });
const msg = (parts: Record<string, unknown>[], extra: Record<string, unknown> = {}) => ({
  message: { role: 'assistant', parts, ...extra },
});
const ctxPath = (id: string, rest = '') => `/v1/contexts/${id}${rest}`;

async function putCtx(id: string, body: Record<string, unknown>) {
  const r = await api(node.url, 'PUT', ctxPath(id), body);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

async function appendText(id: string, text: string, extra: Record<string, unknown> = {}) {
  const r = await api(node.url, 'POST', ctxPath(id, '/messages'), msg([textPart(text)], extra));
  assert.equal(r.status, 201, r.text);
  return r.json;
}

async function windowOf(id: string, query = '') {
  const r = await api(node.url, 'GET', ctxPath(id, `/context${query}`));
  assert.equal(r.status, 200, r.text);
  return r.json;
}

before(async () => {
  node = await startNode();
});
after(async () => {
  await node.stop();
  fs.rmSync(node.dataDir, { recursive: true, force: true });
});

describe('contexts', () => {
  test('PUT validates and returns the context record; GET/DELETE; a plain conversation is not a context', async () => {
    for (const body of [
      {},
      { token_budget: 0 },
      { token_budget: 10, trigger_ratio: 2 },
      { token_budget: 10, policy: { strategy: 'summarize' } },
      { token_budget: 10, metadata: [1] },
    ]) {
      const r = await api(node.url, 'PUT', ctxPath('k-put'), body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.json.error, /^invalid_/);
    }
    assert.equal((await api(node.url, 'GET', ctxPath('k-put'))).status, 404, 'a refused PUT created nothing');
    const rec = await putCtx('k-put', { token_budget: 1000, policy: { strategy: 'last_n', config: { limit: 5 } }, metadata: { t: 1 } });
    for (const k of ['id', 'token_budget', 'trigger_ratio', 'policy', 'version', 'metadata', 'created_at', 'updated_at']) {
      assert.ok(k in rec, k);
    }
    assert.equal(rec.trigger_ratio, 0.7);
    assert.deepEqual(rec.policy, { strategy: 'last_n', config: { limit: 5 } });
    assert.deepEqual((await api(node.url, 'GET', ctxPath('k-put'))).json, rec);
    // The same id is a conversation too (one namespace).
    assert.equal((await api(node.url, 'GET', '/v1/conversations/k-put')).json.id, 'k-put');
    await api(node.url, 'PUT', '/v1/conversations/k-plain', {});
    for (const [m, p] of [
      ['GET', ''],
      ['GET', '/context'],
      ['GET', '/tail'],
      ['DELETE', ''],
    ]) {
      const r = await api(node.url, m, ctxPath('k-plain', p));
      assert.equal(r.status, 404, `${m} ${p}`);
    }
    assert.equal((await api(node.url, 'POST', ctxPath('k-plain', '/messages'), msg([textPart('x')]))).status, 404);
    assert.equal((await api(node.url, 'GET', '/v1/conversations/k-plain')).json.last_seq, 0, 'nothing appended');
    assert.equal((await api(node.url, 'DELETE', ctxPath('k-put'))).status, 204);
    const late = await api(node.url, 'POST', ctxPath('k-put', '/messages'), msg([textPart('x')]));
    assert.equal(late.status, 410);
    assert.equal((await api(node.url, 'GET', ctxPath('k-put', '/context'))).status, 200, 'reads still work');
  });

  test('append answers token_estimate; tail and replay work under /v1/contexts', async () => {
    await putCtx('k-app', { token_budget: 100 });
    const a = await appendText('k-app', 'one', { token_count: 10 });
    assert.deepEqual(a, { seq: 1, version: 1, token_count: 10, token_estimate: 10 });
    const b = await appendText('k-app', 'two', { token_count: 15 });
    assert.equal(b.token_estimate, 25);
    const tail = await api(node.url, 'GET', ctxPath('k-app', '/tail?limit=1'));
    assert.deepEqual(tail.json.messages.map((m: any) => m.seq), [2]);
    const replay = await api(node.url, 'GET', ctxPath('k-app', '/messages?from=1'));
    assert.deepEqual(replay.json.messages.map((m: any) => m.seq), [2]);
  });

  test('GET /context: last_n, budget override, needs_compaction, if_version, query rules', async () => {
    await putCtx('k-win', { token_budget: 100, trigger_ratio: 0.5, policy: { strategy: 'last_n', config: { limit: 3 } } });
    const empty = await windowOf('k-win');
    assert.deepEqual(empty, { version: 0, used_tokens: 0, needs_compaction: false, segments: [], messages: [] });
    for (let i = 1; i <= 6; i++) await appendText('k-win', `m${i}`, { token_count: 10 });
    const w = await windowOf('k-win');
    assert.deepEqual(w.messages.map((m: any) => m.seq), [4, 5, 6]);
    assert.equal(w.used_tokens, 30);
    assert.equal(w.needs_compaction, true, '60 > 0.5 × 100');
    assert.deepEqual(w.segments, [{ type: 'live', from_seq: 1, to_seq: 6 }]);
    assert.deepEqual(Object.keys(w.messages[0]).sort(), ['inserted_at', 'metadata', 'parts', 'role', 'seq', 'token_count']);
    const small = await windowOf('k-win', '?budget_tokens=25');
    assert.deepEqual(small.messages.map((m: any) => m.seq), [5, 6]);
    assert.equal(small.needs_compaction, true);
    assert.equal((await windowOf('k-win', '?budget_tokens=200')).needs_compaction, false, '60 <= 0.5 × 200');
    assert.deepEqual((await windowOf('k-win', '?budget_tokens=5')).messages, [], 'budget below one message');
    assert.equal((await windowOf('k-win', '?if_version=6')).version, 6);
    const stale = await api(node.url, 'GET', ctxPath('k-win', '/context?if_version=5'));
    assert.equal(stale.status, 409);
    assert.match(stale.json.message, /current version is 6/);
    for (const q of ['budget_tokens=0', 'budget_tokens=abc', 'budget_tokens=-1', 'budget_tokens=', 'if_version=x']) {
      const r = await api(node.url, 'GET', ctxPath('k-win', `/context?${q}`));
      assert.equal(r.status, 400, q);
    }
  });

  test('skip_parts drops reasoning and tool results and recounts with the estimator', async () => {
    await putCtx('k-skip', { token_budget: 10_000, policy: { strategy: 'skip_parts' } });
    const answer = 'The capital of France is Paris, which is also its largest city.';
    // Reference count of the kept text, counted by the node itself.
    await api(node.url, 'PUT', '/v1/conversations/k-skip-ref', {});
    const ref = await api(node.url, 'POST', '/v1/conversations/k-skip-ref/messages', msg([textPart(answer)]));
    const mixed = await api(
      node.url,
      'POST',
      ctxPath('k-skip', '/messages'),
      msg([{ type: 'reasoning', text: 'The user asks about geography; recall European capitals.' }, textPart(answer)], { token_count: 5 }),
    );
    assert.equal(mixed.status, 201);
    await api(node.url, 'POST', ctxPath('k-skip', '/messages'), msg([{ type: 'tool_result', text: 'only output' }]));
    await api(node.url, 'POST', ctxPath('k-skip', '/messages'), msg([{ type: 'image', url: 'https://example.invalid/a.png' }]));
    await appendText('k-skip', 'last words');
    const w = await windowOf('k-skip');
    assert.deepEqual(w.messages.map((m: any) => m.seq), [1, 4]);
    assert.deepEqual(w.messages[0].parts, [textPart(answer)]);
    assert.equal(w.messages[0].token_count, ref.json.token_count, 'recounted like an append of the kept parts');
    assert.equal(w.used_tokens, ref.json.token_count + w.messages[1].token_count);
    // The log itself still has every part.
    const raw = await api(node.url, 'GET', ctxPath('k-skip', '/messages'));
    assert.equal(raw.json.messages[0].parts.length, 2);
    assert.equal(raw.json.messages[0].token_count, 5);
    // Changing the policy applies to the next read.
    await putCtx('k-skip', { token_budget: 10_000, policy: { strategy: 'skip_parts', config: { types: ['image'] } } });
    assert.deepEqual((await windowOf('k-skip')).messages.map((m: any) => m.seq), [1, 2, 4]);
  });

  test('compaction replaces the window atomically; a bad replacement changes nothing', async () => {
    await putCtx('k-cmp', { token_budget: 1000, policy: { strategy: 'manual' } });
    for (let i = 1; i <= 4; i++) await appendText('k-cmp', `turn ${i}`, { token_count: 100 });
    const before = await windowOf('k-cmp');
    const bad = [
      { replacement: [{ role: 'system', parts: [] }] },
      { replacement: [{ role: 'system', parts: [textPart('ok')] }, { parts: [textPart('no role')] }] },
      { replacement: 'summary' },
      { replacement: [], if_version: -1 },
    ];
    for (const body of bad) {
      const r = await api(node.url, 'POST', ctxPath('k-cmp', '/compact'), body);
      assert.equal(r.status, 400, JSON.stringify(body));
    }
    assert.deepEqual(await windowOf('k-cmp'), before, 'nothing changed');
    const stale = await api(node.url, 'POST', ctxPath('k-cmp', '/compact'), { replacement: [], if_version: 3 });
    assert.equal(stale.status, 409);
    const ok = await api(node.url, 'POST', ctxPath('k-cmp', '/compact'), {
      replacement: [{ role: 'system', parts: [textPart('Summary: four turns happened.')] }],
      if_version: 4,
    });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, { version: 5 });
    await appendText('k-cmp', 'turn 5', { token_count: 7 });
    const w = await windowOf('k-cmp');
    assert.equal(w.version, 6);
    assert.equal(w.messages.length, 2);
    assert.equal(w.messages[0].role, 'system');
    assert.equal(w.messages[0].seq, undefined, 'a replacement message is not a log entry');
    assert.ok(w.messages[0].token_count > 0, 'replacement tokens are counted');
    assert.equal(w.used_tokens, w.messages[0].token_count + 7);
    assert.deepEqual(w.segments, [
      { type: 'summary', from_seq: 1, to_seq: 4 },
      { type: 'live', from_seq: 5, to_seq: 5 },
    ]);
    const log = await api(node.url, 'GET', ctxPath('k-cmp', '/messages'));
    assert.deepEqual(log.json.messages.map((m: any) => m.seq), [1, 2, 3, 4, 5], 'raw log untouched');
  });

  test('compaction racing appends with the same if_version: exactly one wins', async () => {
    await putCtx('k-race', { token_budget: 1000 });
    for (let round = 0; round < 5; round++) {
      const version = (await api(node.url, 'GET', ctxPath('k-race'))).json.version;
      const attempts = [
        api(node.url, 'POST', ctxPath('k-race', '/compact'), { replacement: [{ role: 'system', parts: [textPart(`s${round}`)] }], if_version: version }),
        ...Array.from({ length: 4 }, (_, i) =>
          api(node.url, 'POST', ctxPath('k-race', '/messages'), { ...msg([textPart(`r${round}-${i}`)]), if_version: version }),
        ),
      ];
      const results = await Promise.all(attempts);
      const wins = results.filter((r) => r.status === 200 || r.status === 201);
      assert.equal(wins.length, 1, results.map((r) => r.status).join(','));
      assert.ok(results.every((r) => [200, 201, 409].includes(r.status)));
      assert.equal((await windowOf('k-race')).version, version + 1);
    }
  });

  test('PATCH metadata upserts keys; bad bodies are 400', async () => {
    await putCtx('k-md', { token_budget: 10, metadata: { a: 1, b: 2 } });
    const r = await api(node.url, 'PATCH', ctxPath('k-md', '/metadata'), { metadata: { b: 3, c: 4 } });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.metadata, { a: 1, b: 3, c: 4 });
    assert.equal(r.json.token_budget, 10);
    for (const body of [{}, { metadata: 'x' }, { metadata: [1] }, []]) {
      assert.equal((await api(node.url, 'PATCH', ctxPath('k-md', '/metadata'), body)).status, 400, JSON.stringify(body));
    }
    assert.equal((await api(node.url, 'PATCH', ctxPath('nope', '/metadata'), { metadata: {} })).status, 404);
  });

  test('metrics: window latency, compaction requests, snapshot token count', async () => {
    const r = await api(node.url, 'GET', '/metrics');
    assert.match(r.text, /fleet_lm_window_latency_ms_count [1-9]/);
    assert.match(r.text, /fleet_lm_compaction_requests_total\{result="ok"\} [1-9]/);
    assert.match(r.text, /fleet_lm_compaction_requests_total\{result="conflict"\} [1-9]/);
    assert.match(r.text, /fleet_lm_snapshot_token_count_count [1-9]/);
  });
});

describe('contexts across restarts', () => {
  test('the window, the compaction and the policy survive SIGTERM and kill -9', async () => {
    await putCtx('k-dur', { token_budget: 500, policy: { strategy: 'skip_parts' } });
    for (let i = 1; i <= 30; i++) {
      await api(node.url, 'POST', ctxPath('k-dur', '/messages'), msg([{ type: 'reasoning', text: `why ${i}` }, textPart(`turn ${i}`)]));
    }
    await api(node.url, 'POST', ctxPath('k-dur', '/compact'), { replacement: [{ role: 'system', parts: [textPart('the first thirty turns')] }] });
    for (let i = 31; i <= 35; i++) await appendText('k-dur', `turn ${i}`);
    const want = await windowOf('k-dur');
    assert.equal(want.messages.length, 6);

    const dataDir = node.dataDir;
    assert.equal(await node.stop(), 0);
    node = await startNode({ dataDir });
    assert.deepEqual(await windowOf('k-dur'), want, 'after a clean restart');

    // Unsynced state is rebuilt from the log on restart after kill -9.
    await appendText('k-dur', 'turn 36');
    await api(node.url, 'POST', ctxPath('k-dur', '/compact'), { replacement: [{ role: 'system', parts: [textPart('thirty-six turns')] }] });
    const want2 = await windowOf('k-dur');
    await node.kill9();
    node = await startNode({ dataDir });
    assert.deepEqual(await windowOf('k-dur'), want2, 'after kill -9');
    assert.deepEqual(want2.segments, [{ type: 'summary', from_seq: 1, to_seq: 36 }]);
  });
});
