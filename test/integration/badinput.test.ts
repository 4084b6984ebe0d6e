// Generated malformed requests (seeded): every answer is a 4xx JSON error,
// the node stays up, and nothing is stored.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { api, startNode, type NodeProc } from './harness.js';
import { mulberry32 } from '../../runtime/prng.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20261122);
const COUNT = Number(process.env.FUZZ_COUNT ?? 3000);
const CONCURRENCY = 16;

let node: NodeProc;
before(async () => {
  node = await startNode();
  await api(node.url, 'PUT', '/v1/conversations/target', { metadata: { t: 1 } });
  await api(node.url, 'POST', '/v1/conversations/target/messages', {
    message: { role: 'user', parts: [{ type: 'text', text: 'seed' }] },
  });
  await api(node.url, 'PUT', '/v1/contexts/ctx-target', { token_budget: 100, metadata: { t: 2 } });
  await api(node.url, 'POST', '/v1/contexts/ctx-target/messages', {
    message: { role: 'user', parts: [{ type: 'text', text: 'seed' }] },
  });
});
after(async () => {
  await node.stop();
  fs.rmSync(node.dataDir, { recursive: true, force: true });
});

interface Req {
  method: string;
  path: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  what: string;
}

const VALID = { message: { role: 'user', parts: [{ type: 'text', text: 'hello' }] } };

function generator(rand: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const int = (n: number) => Math.floor(rand() * n);
  const junk = [null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 64, '', 'x', [], {}, [1], { a: 1 }, '9'.repeat(400)];
  const badIds = ['a b', 'a.b', 'é', 'x'.repeat(129), 'a/b/c/d', '<script>', 'a%00b', '%zz', 'a;b', '"q"'];
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
  const p = '/v1/conversations/target/messages';
  const post = (body: string | Buffer, what: string, headers?: Record<string, string>): Req => ({
    method: 'POST',
    path: p,
    body,
    headers,
    what,
  });
  const mutate = (path: (string | number)[], value: unknown): unknown => {
    const o = structuredClone(VALID) as any;
    let cur = o;
    for (const k of path.slice(0, -1)) cur = cur[k];
    cur[path[path.length - 1]] = value;
    return o;
  };
  const fields: (string | number)[][] = [['message'], ['message', 'role'], ['message', 'parts'], ['message', 'parts', 0], ['message', 'parts', 0, 'type']];
  const kinds: (() => Req)[] = [
    () => {
      const s = JSON.stringify(VALID);
      return post(s.slice(0, 1 + int(s.length - 2)), 'truncated JSON');
    },
    () => post(Buffer.from(Array.from({ length: 1 + int(64) }, () => int(256))), 'random bytes'),
    () => {
      const f = pick(fields);
      // a non-empty string is a valid role or part type: never generate one there
      const stringOk = f[f.length - 1] === 'role' || f[f.length - 1] === 'type';
      const wrong = junk.filter((j) => !(stringOk && typeof j === 'string' && j !== ''));
      return post(JSON.stringify(mutate(f, pick(wrong))), `wrong type at ${f.join('.')}`);
    },
    () => post(JSON.stringify({ message: { role: 'user' } }), 'missing parts'),
    () => post(JSON.stringify({ message: { parts: [{ type: 't' }] } }), 'missing role'),
    () => post(JSON.stringify({ message: { role: 'user', parts: [] } }), 'empty parts'),
    () => post(JSON.stringify({ ...VALID, message: { ...VALID.message, token_count: pick([-1, 1.5, 1e300, '5', 2 ** 53, 2 ** 40]) } }), 'bad token_count'),
    () => post(JSON.stringify({ ...VALID, if_version: pick([-1, 1.5, 2 ** 64, '1', [], {}]) }), 'bad if_version'),
    () => post(JSON.stringify({ ...VALID, idempotency_key: pick(['', 'k'.repeat(257), 5, {}, []]) }), 'bad idempotency_key'),
    () => post(`{"message":{"role":"user","parts":[{"type":"t","x":${deep(100 + int(5000))}}]}}`, 'deep nesting'),
    () => post(`{"message":{"role":"user","parts":[{"type":"t"}],"metadata":{"a":${deep(70 + int(50))}}}}`, 'deep metadata'),
    () => {
      const s = Buffer.from(JSON.stringify(VALID));
      const at = s.indexOf('hello');
      s[at + int(5)] = pick([0xff, 0xc0, 0xed, 0x80, 0xfe]);
      return post(s, 'invalid UTF-8');
    },
    () => post(JSON.stringify(VALID), 'wrong content type', { 'content-type': pick(['text/plain', 'application/xml', 'application/json; charset=latin1', 'multipart/form-data']) }),
    () => post(JSON.stringify({ ...VALID, idempotency_key: `b${int(1e6)}` }), 'conflicting idempotency keys', { 'idempotency-key': `h${int(1e6)}` }),
    () => {
      const method = pick(['GET', 'PUT', 'DELETE', 'POST']);
      const path = `/v1/conversations/${encodeURIComponent(pick(badIds)).replace(/%2F/g, '/')}`;
      return { method, path, body: method === 'GET' ? undefined : '{}', what: 'bad id' };
    },
    () => {
      const [route, param] = pick([['tail', 'limit'], ['tail', 'offset'], ['messages', 'limit'], ['messages', 'from']] as const);
      const value = pick(['-1', 'abc', '1x', '', '0x10', '1e3', '99999999999999999999', ' 1', '1.0']);
      return { method: 'GET', path: `/v1/conversations/target/${route}?${param}=${encodeURIComponent(value)}`, what: 'bad query' };
    },
    () => ({ method: 'GET', path: `/v1/conversations?${pick(['limit=0', 'limit=1001', 'cursor=-5', 'cursor=abc', 'tombstoned=yes', 'metadata.=x'])}`, what: 'bad listing query' }),
    () => ({ method: pick(['PATCH', 'OPTIONS', 'PUT', 'DELETE']), path: pick(['/v1/conversations/target/messages', '/v1/conversations/target/tail', '/v1/conversations']), body: '{}', what: 'wrong method' }),
    () => ({ method: pick(['GET', 'POST']), path: pick(['/v1', '/v1/conversations/target/nope', '/v1/conversations/a/b/c', '/v2/conversations/x', '/' + 'z'.repeat(int(300))]), what: 'unknown path' }),
    () => ({ method: 'PUT', path: '/v1/conversations/fuzz-put', body: JSON.stringify({ metadata: pick(junk.filter((j) => j === true || j === 0 || typeof j === 'string' || Array.isArray(j))) }), headers: { 'content-type': 'application/json' }, what: 'bad metadata' }),
    () => {
      const body = pick<unknown>([
        {},
        { token_budget: pick(junk.filter((j) => !(typeof j === 'number' && Number.isSafeInteger(j) && j > 0))) },
        { token_budget: 10, trigger_ratio: pick([0, -0.5, 1.5, '0.7', [], 'x']) },
        { token_budget: 10, policy: pick(junk.filter((j) => j !== null)) },
        { token_budget: 10, policy: { strategy: pick(['last_n', 'skip_parts', 'manual']), config: pick([[], 'x', 5, { limit: 0 }, { types: [1] }, { bogus: 1 }]) } },
        { token_budget: 10, metadata: pick(junk.filter((j) => j !== null && (typeof j !== 'object' || Array.isArray(j)))) },
      ]);
      return { method: 'PUT', path: '/v1/contexts/fuzz-ctx', body: JSON.stringify(body), what: 'bad context config' };
    },
    () => {
      const body = pick<unknown>([
        {},
        { replacement: pick(junk.filter((j) => !Array.isArray(j))) },
        { replacement: [pick(junk)] },
        { replacement: [{ role: 'system', parts: [] }] },
        { replacement: [{ role: 'system', parts: [{ type: 'text', text: 'ok' }] }], if_version: pick([-1, 1.5, '1', {}]) },
        { replacement: [{ role: 'system', parts: [{ type: 'text', text: 'ok' }] }], if_version: 0 },
      ]);
      return { method: 'POST', path: '/v1/contexts/ctx-target/compact', body: JSON.stringify(body), what: 'bad compaction' };
    },
    () => ({ method: 'PATCH', path: '/v1/contexts/ctx-target/metadata', body: JSON.stringify(pick<unknown>([{}, { metadata: pick(junk.filter((j) => j === null || typeof j !== 'object' || Array.isArray(j))) }, []])), what: 'bad metadata patch' }),
    () => {
      const q = pick(['budget_tokens=0', 'budget_tokens=-3', 'budget_tokens=abc', 'budget_tokens=', 'budget_tokens=1.5', 'if_version=x', 'if_version=-1', 'if_version=0']);
      return { method: 'GET', path: `/v1/contexts/ctx-target/context?${q}`, what: 'bad window query' };
    },
  ];
  return (): Req => {
    if (rand() < 0.002) return post(JSON.stringify({ message: { role: 'user', parts: [{ type: 'text', text: 'x'.repeat(1024 * 1024) }] } }), 'oversized');
    return pick(kinds)();
  };
}

test(`bad input - ${COUNT} generated malformed requests (seed ${SEED}) all get 4xx JSON and change nothing`, async () => {
  const next = generator(mulberry32(SEED));
  const reqs = Array.from({ length: COUNT }, next);
  const failures: string[] = [];
  let i = 0;
  const worker = async () => {
    while (i < reqs.length) {
      const r = reqs[i++];
      const headers = { 'content-type': 'application/json', ...r.headers };
      let res;
      try {
        res = await api(node.url, r.method, r.path, r.body, headers);
      } catch (err) {
        failures.push(`${r.what}: ${r.method} ${r.path.slice(0, 80)} → transport error ${err}`);
        continue;
      }
      const ok = res.status >= 400 && res.status < 500 && typeof res.json?.error === 'string' && typeof res.json?.message === 'string';
      if (!ok) failures.push(`${r.what}: ${r.method} ${r.path.slice(0, 80)} → ${res.status} ${res.text.slice(0, 120)}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  assert.deepEqual(failures.slice(0, 20), [], `seed ${SEED}: ${failures.length} bad answers`);
  const live = await api(node.url, 'GET', '/health/live');
  assert.equal(live.status, 200);
  const rec = await api(node.url, 'GET', '/v1/conversations/target');
  assert.equal(rec.json.last_seq, 1);
  assert.equal(rec.json.version, 1);
  assert.deepEqual(rec.json.metadata, { t: 1 });
  const ctx = await api(node.url, 'GET', '/v1/contexts/ctx-target');
  assert.equal(ctx.json.version, 1);
  assert.equal(ctx.json.token_budget, 100);
  assert.deepEqual(ctx.json.metadata, { t: 2 });
  const window = await api(node.url, 'GET', '/v1/contexts/ctx-target/context');
  assert.deepEqual(window.json.segments, [{ type: 'live', from_seq: 1, to_seq: 1 }]);
  const list = await api(node.url, 'GET', '/v1/conversations?tombstoned=all&limit=1000');
  assert.deepEqual(list.json.conversations.map((c: any) => c.id), ['ctx-target', 'target']);
});
