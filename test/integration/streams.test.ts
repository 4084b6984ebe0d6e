// Streams (SPEC §5) against a real node: the official `phoenix` client,
// raw WebSocket streams and SSE — resume from a cursor, exactly-once in-order
// delivery through random disconnects, contexts' events, slow consumers,
// limits, auth, and hostile frames.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import WebSocket from 'ws';
import { Socket, type Channel } from 'phoenix';
import { api, startNode, type NodeProc } from './harness.js';
import { mulberry32 } from '../../runtime/prng.js';

let node: NodeProc;
const wsUrl = (p: string) => node.url.replace('http', 'ws') + p;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const body = (text: string) => ({ message: { role: 'user', parts: [{ type: 'text', text }] } });

async function create(id: string): Promise<void> {
  assert.equal((await api(node.url, 'PUT', `/v1/conversations/${id}`, {})).status, 200);
}

async function append(id: string, text: string, base = node.url): Promise<number> {
  const r = await api(base, 'POST', `/v1/conversations/${id}/messages`, body(text));
  assert.equal(r.status, 201, r.text);
  return r.json.seq;
}

/** A raw stream client that records message seqs and other events. */
function rawClient(path: string) {
  const ws = new WebSocket(wsUrl(path));
  const c = {
    ws,
    seqs: [] as number[],
    texts: [] as string[],
    others: [] as any[],
    /** Every event, in arrival order. */
    events: [] as any[],
    closed: null as null | { code: number; reason: string },
    opened: new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    }),
  };
  ws.on('message', (d) => {
    const ev = JSON.parse(d.toString());
    c.events.push(ev);
    if (ev.type === 'message') {
      c.seqs.push(ev.seq);
      c.texts.push(ev.message.parts[0].text);
    } else c.others.push(ev);
  });
  ws.on('close', (code, reason) => (c.closed = { code, reason: reason.toString() }));
  return c;
}

/** Status of a refused upgrade. */
function upgradeStatus(path: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl(path), { headers });
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.once('open', () => {
      ws.close();
      resolve(101);
    });
    ws.once('error', () => {});
  });
}

before(async () => {
  node = await startNode({ env: { FLEETLM_STREAM_BUFFER_BYTES: String(256 * 1024) } });
});
after(async () => {
  await node.stop();
  fs.rmSync(node.dataDir, { recursive: true, force: true });
});

describe('phoenix channels (official client)', () => {
  const connect = (params: Record<string, unknown> = {}) => {
    const socket = new Socket(wsUrl('/socket'), { transport: WebSocket, heartbeatIntervalMs: 200, params });
    socket.connect();
    return socket;
  };
  const join = (ch: Channel) =>
    new Promise<any>((resolve, reject) => {
      ch.join().receive('ok', resolve).receive('error', (e) => reject(Object.assign(new Error('join error'), { response: e })));
    });

  test('join with last_seq replays, then live messages follow in order; heartbeats keep it open', async () => {
    await create('px-1');
    for (let i = 1; i <= 5; i++) await append('px-1', `m${i}`);
    const socket = connect();
    const ch = socket.channel('conversation:px-1', { last_seq: 2 });
    const got: any[] = [];
    ch.on('message', (p) => got.push(p));
    await join(ch);
    await until(() => got.length === 3, 'replay');
    await sleep(700); // several heartbeat round trips
    await append('px-1', 'm6');
    await until(() => got.length === 4, 'live message');
    assert.deepEqual(got.map((p) => p.seq), [3, 4, 5, 6]);
    assert.deepEqual(got.map((p) => p.version), [3, 4, 5, 6]);
    assert.equal(got[3].message.parts[0].text, 'm6');
    assert.deepEqual(Object.keys(got[0]).sort(), ['message', 'seq', 'type', 'version']);
    assert.ok(socket.isConnected());
    // Tombstone arrives as its own event; the channel stays joined.
    const tomb: any[] = [];
    ch.on('tombstone', (p) => tomb.push(p));
    assert.equal((await api(node.url, 'DELETE', '/v1/conversations/px-1')).status, 204);
    await until(() => tomb.length === 1, 'tombstone');
    assert.deepEqual(tomb[0], { type: 'tombstone' });
    socket.disconnect();
  });

  test('join without last_seq is live only; invalid and unknown topics get join errors, not a crash', async () => {
    await create('px-2');
    await append('px-2', 'old');
    const socket = connect();
    const ch = socket.channel('conversation:px-2');
    const got: any[] = [];
    ch.on('message', (p) => got.push(p));
    await join(ch);
    await append('px-2', 'new');
    await until(() => got.length === 1, 'live message');
    assert.equal(got[0].seq, 2);
    for (const [topic, reason] of [
      ['conversation:does-not-exist', /not found/],
      ['conversation:bad id!', /invalid topic/],
      ['lobby:1', /unmatched topic/],
    ] as const) {
      const c = socket.channel(topic);
      const err = await join(c).then(
        () => null,
        (e) => e.response,
      );
      assert.match(String(err?.reason), reason, topic);
      c.leave();
    }
    // (Another channel on px-2 itself would make the client leave the first one.)
    const badSeq = await join(socket.channel('conversation:px-2b', { last_seq: -1 })).catch((e) => e.response);
    assert.match(badSeq.reason, /last_seq/);
    // Still serving after the refusals.
    await append('px-2', 'after');
    await until(() => got.length === 2, 'message after refused joins');
    socket.disconnect();
  });

  test('vsn 1.0.0 (object serializer) and leave', async () => {
    await create('px-3');
    await append('px-3', 'one');
    const ws = new WebSocket(wsUrl('/socket/websocket?vsn=1.0.0'));
    const frames: any[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ topic: 'conversation:px-3', event: 'phx_join', payload: { last_seq: 0 }, ref: '1', join_ref: '1' }));
    await until(() => frames.length >= 2, 'join reply and replay');
    assert.deepEqual(frames[0], { topic: 'conversation:px-3', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '1', join_ref: '1' });
    assert.equal(frames[1].event, 'message');
    assert.equal(frames[1].payload.seq, 1);
    ws.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '2', join_ref: null }));
    ws.send(JSON.stringify({ topic: 'conversation:px-3', event: 'phx_leave', payload: {}, ref: '3', join_ref: '1' }));
    await until(() => frames.length >= 4, 'heartbeat and leave replies');
    assert.equal(frames[2].ref, '2');
    assert.equal(frames[3].payload.status, 'ok');
    await append('px-3', 'two');
    await sleep(200);
    assert.equal(frames.length, 4, 'nothing after leave');
    ws.close();
  });
});

describe('raw and SSE streams', () => {
  test('cursor replays then streams live; unknown or invalid ids are refused at upgrade', async () => {
    await create('raw-1');
    for (let i = 1; i <= 3; i++) await append('raw-1', `m${i}`);
    const c = rawClient('/v1/conversations/raw-1/stream?cursor=1');
    await c.opened;
    await until(() => c.seqs.length === 2, 'replay');
    await append('raw-1', 'm4');
    await until(() => c.seqs.length === 3, 'live');
    assert.deepEqual(c.seqs, [2, 3, 4]);
    c.ws.send('{"type":"ping"}');
    await until(() => c.others.some((e) => e.type === 'pong'), 'pong');
    c.ws.send('not json');
    await until(() => c.others.some((e) => e.type === 'error'), 'error frame');
    assert.equal(await upgradeStatus('/v1/conversations/nope/stream'), 404);
    assert.equal(await upgradeStatus('/v1/conversations/bad%20id/stream'), 400);
    assert.equal(await upgradeStatus('/v1/conversations/raw-1/stream?cursor=-1'), 400);
    assert.equal(await upgradeStatus('/v1/contexts/raw-1/stream'), 404, 'not a context');
    await api(node.url, 'DELETE', '/v1/conversations/raw-1');
    await until(() => c.closed !== null, 'close after tombstone');
    assert.deepEqual(c.others.filter((e) => e.type === 'tombstone'), [{ type: 'tombstone' }]);
    assert.equal(c.closed!.code, 1000);
  });

  test('contexts stream: message, then context event; include_messages=false sends only context and compaction', async () => {
    assert.equal((await api(node.url, 'PUT', '/v1/contexts/ctx-s', { token_budget: 100, trigger_ratio: 0.5 })).status, 200);
    const all = rawClient('/v1/contexts/ctx-s/stream');
    const quiet = rawClient('/v1/contexts/ctx-s/stream?include_messages=false');
    await Promise.all([all.opened, quiet.opened]);
    await sleep(100);
    await api(node.url, 'POST', '/v1/contexts/ctx-s/messages', { message: { role: 'user', parts: [{ type: 'text', text: 'x' }], token_count: 60 } });
    await api(node.url, 'POST', '/v1/contexts/ctx-s/compact', { replacement: [{ role: 'system', parts: [{ type: 'text', text: 's' }], token_count: 5 }] });
    await until(() => quiet.others.length === 3, 'context, compaction, context');
    assert.deepEqual(quiet.others, [
      { type: 'context', version: 1, used_tokens: 60, needs_compaction: true },
      { type: 'compaction', version: 2, range: { from_seq: 1, to_seq: 1 } },
      { type: 'context', version: 2, used_tokens: 5, needs_compaction: false },
    ]);
    assert.deepEqual(quiet.seqs, []);
    await until(() => all.seqs.length === 1 && all.others.length === 3, 'all events');
    assert.equal(all.others[0].type, 'context');
    all.ws.close();
    quiet.ws.close();
  });

  test("context events: used_tokens is the policy's answer, as GET /context gives it, and events keep their order while a window is read", async () => {
    const id = 'ctx-policy';
    const put = (config: object) => api(node.url, 'PUT', `/v1/contexts/${id}`, config);
    const add = async (parts: object[], tokens: number) => {
      const r = await api(node.url, 'POST', `/v1/contexts/${id}/messages`, { message: { role: 'user', parts, token_count: tokens } });
      assert.equal(r.status, 201, r.text);
    };
    const used = async () => (await api(node.url, 'GET', `/v1/contexts/${id}/context`)).json.used_tokens as number;
    assert.equal((await put({ token_budget: 100, trigger_ratio: 1, policy: { strategy: 'last_n', config: { limit: 2 } } })).status, 200);
    const quiet = rawClient(`/v1/contexts/${id}/stream?include_messages=false`);
    const all = rawClient(`/v1/contexts/${id}/stream`);
    await Promise.all([quiet.opened, all.opened]);
    await sleep(100);
    const text = [{ type: 'text', text: 'x' }];
    // last_n: the newest 2 (30 + 30), then 80 alone (80 + 30 is over the budget).
    const expected: number[] = [];
    for (const tokens of [30, 30, 30, 80]) {
      await add(text, tokens);
      expected.push(await used());
    }
    assert.deepEqual(expected, [30, 60, 60, 80]);
    // skip_parts: a new policy is a context event too; then a message whose
    // reasoning part is dropped counts only its text, recounted ("hello world": 2).
    assert.equal((await put({ token_budget: 1000, trigger_ratio: 1, policy: { strategy: 'skip_parts', config: {} } })).status, 200);
    expected.push(await used());
    const mixed = [{ type: 'reasoning', text: 'a long chain of thought '.repeat(20) }, { type: 'text', text: 'hello world' }];
    await add(mixed, 500);
    expected.push(await used());
    assert.deepEqual(expected.slice(4), [170, 172]);
    // Appends in flight together: every context event still follows its message.
    await Promise.all(Array.from({ length: 10 }, () => add(mixed, 500)));
    const final = await used();
    assert.equal(final, 192);
    await until(() => quiet.others.length === 16 && all.events.length === 31, 'every event');
    assert.deepEqual(
      quiet.others.map((e) => [e.type, e.version, e.used_tokens]),
      // A new policy changes no version: its event repeats version 4.
      [...[1, 2, 3, 4, 4, 5].map((v, i) => ['context', v, expected[i]]), ...Array.from({ length: 10 }, (_, i) => ['context', 6 + i, 174 + 2 * i])],
    );
    const order = all.events.map((e) => (e.type === 'message' ? `m${e.version}` : `c${e.version}`));
    const want = ['m1', 'c1', 'm2', 'c2', 'm3', 'c3', 'm4', 'c4', 'c4', ...Array.from({ length: 11 }, (_, i) => [`m${5 + i}`, `c${5 + i}`]).flat()];
    assert.deepEqual(order, want);
    quiet.ws.close();
    all.ws.close();
  });

  test('SSE: id is the seq, Last-Event-ID wins over cursor', async () => {
    await create('sse-1');
    for (let i = 1; i <= 4; i++) await append('sse-1', `m${i}`);
    const ac = new AbortController();
    const res = await fetch(`${node.url}/v1/conversations/sse-1/events?cursor=0`, { headers: { 'last-event-id': '2' }, signal: ac.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('id: 4')) text += new TextDecoder().decode((await reader.read()).value);
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    assert.deepEqual(ids, [3, 4]);
    ac.abort();
    const bad = await fetch(`${node.url}/v1/conversations/sse-1/events`, { headers: { 'last-event-id': 'x' } });
    assert.equal(bad.status, 400);
    assert.equal((await fetch(`${node.url}/v1/conversations/nope/events`)).status, 404);
  });
});

describe('delivery guarantees', () => {
  test('many subscribers with random disconnects and resumes get every message once, in order', async () => {
    const id = 'fan-1';
    await create(id);
    const rand = mulberry32(20261122);
    const TOTAL = 400;
    const SUBS = 24;
    interface Sub {
      seqs: number[];
      stop: boolean;
      done: Promise<void>;
    }
    const run = (i: number): Sub => {
      const s: Sub = { seqs: [], stop: false, done: Promise.resolve() };
      s.done = (async () => {
        while (!s.stop && (s.seqs.at(-1) ?? 0) < TOTAL) {
          const cursor = s.seqs.at(-1) ?? 0;
          const kind = (i + s.seqs.length) % 3;
          const lifetimeMs = 20 + Math.floor(rand() * 150);
          await new Promise<void>((resolve) => {
            let ws: WebSocket;
            const got = (seq: number) => s.seqs.push(seq);
            if (kind === 2) {
              // Phoenix v2 over a raw socket, so the resume cursor is explicit.
              ws = new WebSocket(wsUrl('/socket/websocket?vsn=2.0.0'));
              ws.on('open', () => ws.send(JSON.stringify(['1', '1', `conversation:${id}`, 'phx_join', { last_seq: cursor }])));
              ws.on('message', (d) => {
                const [, , , event, payload] = JSON.parse(d.toString());
                if (event === 'message') got(payload.seq);
              });
            } else {
              ws = new WebSocket(wsUrl(`/v1/conversations/${id}/stream?cursor=${cursor}`));
              ws.on('message', (d) => {
                const ev = JSON.parse(d.toString());
                if (ev.type === 'message') got(ev.seq);
              });
            }
            ws.on('error', () => {});
            const timer = setTimeout(() => ws.terminate(), lifetimeMs);
            ws.on('close', () => {
              clearTimeout(timer);
              resolve();
            });
          });
        }
      })();
      return s;
    };
    const subs = Array.from({ length: SUBS }, (_, i) => run(i));
    for (let i = 1; i <= TOTAL; i++) {
      await append(id, `n${i}`);
      if (i % 50 === 0) await sleep(30);
    }
    await Promise.race([Promise.all(subs.map((s) => s.done)), sleep(30_000)]);
    for (const [i, s] of subs.entries()) {
      s.stop = true;
      assert.deepEqual(s.seqs, Array.from({ length: TOTAL }, (_, k) => k + 1), `subscriber ${i}`);
    }
  });

  test('a slow consumer is closed with a reason; the node stays responsive', async () => {
    await create('slow-1');
    const c = rawClient('/v1/conversations/slow-1/stream?cursor=0');
    await c.opened;
    // Stop reading: the kernel buffers fill, then the node's send buffer.
    (c.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = { message: { role: 'tool', parts: [{ type: 'text', text: 'x'.repeat(64 * 1024) }], token_count: 1 } };
    const drops = async () => Number(/fleet_lm_stream_drops_total\{reason="slow_consumer"\} (\d+)/.exec((await api(node.url, 'GET', '/metrics')).text)?.[1] ?? 0);
    const before = await drops();
    // Until the node gives up on it (the paused client cannot see the close yet).
    for (let i = 0; i < 400 && (i % 10 !== 0 || (await drops()) === before); i++) {
      assert.equal((await api(node.url, 'POST', '/v1/conversations/slow-1/messages', big)).status, 201);
    }
    (c.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    await until(() => c.closed !== null, 'slow consumer close', 20_000);
    assert.equal(c.closed!.code, 4008);
    assert.match(c.closed!.reason, /slow consumer/);
    assert.equal((await api(node.url, 'GET', '/health/live')).status, 200);
    // It resumes from what it got.
    const again = rawClient(`/v1/conversations/slow-1/stream?cursor=${c.seqs.at(-1) ?? 0}`);
    await again.opened;
    const last = (await api(node.url, 'GET', '/v1/conversations/slow-1')).json.last_seq;
    await until(() => (again.seqs.at(-1) ?? c.seqs.at(-1)) === last, 'resume to the end', 20_000);
    assert.deepEqual([...c.seqs, ...again.seqs], Array.from({ length: last }, (_, k) => k + 1));
    again.ws.close();
  });

  test('malformed, binary, oversized and flooding frames close that connection only', async () => {
    await create('hostile');
    const watcher = rawClient('/v1/conversations/hostile/stream');
    await watcher.opened;
    const closeOf = (send: (ws: WebSocket) => void) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(wsUrl('/socket/websocket'));
        ws.on('open', () => send(ws));
        ws.on('close', (code) => resolve(code));
        ws.on('error', () => {});
      });
    assert.equal(await closeOf((ws) => ws.send('{{{')), 4400);
    assert.equal(await closeOf((ws) => ws.send(JSON.stringify(['1', '1', 'x', 'phx_join']))), 4400);
    assert.equal(await closeOf((ws) => ws.send(Buffer.from([1, 2, 3]))), 1003);
    assert.equal(await closeOf((ws) => ws.send('x'.repeat(200 * 1024))), 1006);
    // A flood is closed with 4029; frames still in flight when the node closes can make the
    // kernel reset the connection before the close frame is read (1006), so the reason is
    // checked on the node's drop counter.
    const floods = async () => Number(/fleet_lm_stream_drops_total\{reason="flood"\} (\d+)/.exec((await api(node.url, 'GET', '/metrics')).text)?.[1] ?? 0);
    const floodsBefore = await floods();
    const floodClose = await closeOf((ws) => { for (let i = 0; i < 500; i++) ws.send(JSON.stringify([null, String(i), 'phoenix', 'heartbeat', {}])); });
    assert.ok(floodClose === 4029 || floodClose === 1006, `flood closed with ${floodClose}`);
    assert.equal(await floods(), floodsBefore + 1);
    await append('hostile', 'still here');
    await until(() => watcher.seqs.length === 1, 'delivery after hostile clients');
    watcher.ws.close();
  });
});

describe('limits and auth', () => {
  let limited: NodeProc;
  before(async () => {
    limited = await startNode({
      env: { FLEETLM_STREAM_MAX_CONNECTIONS: '2', FLEETLM_API_KEY: 'stream-secret-1', FLEETLM_STREAM_PING_MS: '200' },
    });
    const auth = { authorization: 'Bearer stream-secret-1' };
    await api(limited.url, 'PUT', '/v1/conversations/lim', {}, auth);
  });
  after(async () => {
    await limited.stop();
    fs.rmSync(limited.dataDir, { recursive: true, force: true });
  });

  test('raw streams are pinged; a client that never answers is closed, one that pongs stays (FLEETLM_STREAM_PING_MS=200)', async () => {
    const base = limited.url.replace('http', 'ws');
    const open = (answer: boolean) => {
      const ws = new WebSocket(`${base}/v1/conversations/lim/stream?token=stream-secret-1`);
      const c = { ws, pings: 0, closed: null as null | number };
      ws.on('message', (d) => {
        if (JSON.parse(d.toString()).type !== 'ping') return;
        c.pings++;
        if (answer) ws.send('{"type":"pong"}');
      });
      ws.on('close', (code) => (c.closed = code));
      return c;
    };
    const silent = open(false);
    const polite = open(true);
    await until(() => silent.closed !== null, 'pong timeout', 5000);
    assert.equal(silent.closed, 4001);
    assert.ok(silent.pings >= 2, `${silent.pings} pings before the close`);
    // Pings go to every stream on the same sweep, so the polite client has seen as many as
    // the silent one; it must outlive the silent one's deadline and keep being pinged.
    const pingsAtClose = polite.pings;
    await until(() => polite.pings >= pingsAtClose + 2, 'pings after the silent close', 5000);
    assert.equal(polite.closed, null);
    polite.ws.close();
    await sleep(100);
  });

  test('the API key is checked on upgrade (header, token parameter, Phoenix auth token); the connection limit refuses with 503', async () => {
    const base = limited.url.replace('http', 'ws');
    const status = (p: string, headers: Record<string, string> = {}) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(base + p, { headers });
        ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.once('open', () => resolve(101));
        ws.once('error', () => {});
        ws.once('close', () => {});
        held.push(ws);
      });
    const held: WebSocket[] = [];
    assert.equal(await status('/v1/conversations/lim/stream'), 401);
    assert.equal(await status('/v1/conversations/lim/stream?token=wrong-secret'), 401);
    assert.equal((await fetch(`${limited.url}/v1/conversations/lim/events`)).status, 401);
    assert.equal(await status('/v1/conversations/lim/stream?token=stream-secret-1'), 101);
    // The official client sends its authToken in the Sec-WebSocket-Protocol header.
    const socket = new Socket(base + '/socket', { transport: WebSocket, authToken: 'stream-secret-1' });
    const opened = new Promise<void>((resolve) => socket.onOpen(resolve));
    socket.connect();
    await opened;
    assert.equal(await status('/v1/conversations/lim/stream', { authorization: 'Bearer stream-secret-1' }), 503);
    socket.disconnect();
    for (const ws of held) ws.terminate();
    await sleep(100);
    assert.equal(await status('/v1/conversations/lim/stream', { authorization: 'Bearer stream-secret-1' }), 101);
    for (const ws of held) ws.terminate();
  });
});
