// Boot and shutdown: bad config stops boot with one line naming the variable;
// SIGTERM drains in-flight requests, closes storage cleanly and keeps every
// acknowledged append.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { api, repoRoot, startNode, tempDir } from './harness.js';

function bootWith(env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const dataDir = tempDir('fleetlm-boot-');
  const proc = spawn(process.execPath, [path.join(repoRoot, 'dist', 'runtime', 'main.js')], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', FLEETLM_RAFT_DATA_DIR: dataDir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
  return new Promise((resolve) =>
    proc.on('exit', (code) => {
      clearTimeout(timer);
      fs.rmSync(dataDir, { recursive: true, force: true });
      resolve({ code, stderr, stdout });
    }),
  );
}

test('boot - a bad value stops boot with one line naming the variable', async () => {
  const cases: [Record<string, string>, string][] = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ FLEETLM_MAX_BODY_BYTES: '1MB' }, 'FLEETLM_MAX_BODY_BYTES'],
    [{ FLEETLM_TOKEN_ESTIMATOR: 'tiktoken:no-such-model' }, 'FLEETLM_TOKEN_ESTIMATOR'],
    [{ FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS: 'soon' }, 'FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS'],
    // Nothing listens on port 1: an unreachable NATS stops boot.
    [{ NATS_URL: 'nats://127.0.0.1:1' }, 'NATS_URL'],
    [{ NATS_URL: 'http://x' }, 'NATS_URL'],
    [{ NATS_URL: 'nats://127.0.0.1:4222', FLEETLM_NATS_SUBJECT_PREFIX: 'a..b' }, 'FLEETLM_NATS_SUBJECT_PREFIX'],
    [{ NATS_URL: 'nats://127.0.0.1:4222', FLEETLM_NATS_USER: 'u' }, 'FLEETLM_NATS_PASSWORD'],
    [{ NATS_URL: 'nats://127.0.0.1:4222', FLEETLM_NATS_CREDS_FILE: '/nonexistent.creds' }, 'FLEETLM_NATS_CREDS_FILE'],
  ];
  for (const [env, variable] of cases) {
    const r = await bootWith(env);
    assert.equal(r.code, 1, `${variable}: exit code`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${variable}: stderr was ${JSON.stringify(r.stderr)}`);
    assert.match(lines[0], new RegExp(`\\b${variable}\\b`));
  }
});

// FLEETLM_WORKERS=0: the shard runs on the gateway thread (runtime/index.ts, InlineShard).
for (const workers of ['2', '0']) {
  test(`shutdown - SIGTERM answers every in-flight request, exits 0, keeps every ack (FLEETLM_WORKERS=${workers})`, async () => {
    const dataDir = tempDir('fleetlm-term-');
    const env = { FLEETLM_WORKERS: workers };
    try {
      const node = await startNode({ dataDir, env });
      assert.equal(node.logs.some((l) => l.includes('"type":"runtime_ready"') && l.includes(`"workers":${workers === '0' ? 0 : 2},`)), true, 'runtime_ready names the worker threads');
      await api(node.url, 'PUT', '/v1/conversations/t', {});
      const inflight = Array.from({ length: 300 }, (_, i) =>
        api(node.url, 'POST', '/v1/conversations/t/messages', {
          message: { role: 'user', parts: [{ type: 'text', text: `m${i}` }] },
        }).catch((err: unknown) => ({ status: 0, json: null, text: String(err) })),
      );
      await new Promise((r) => setTimeout(r, 5));
      const code = await node.stop();
      const results = await Promise.all(inflight);
      assert.equal(code, 0);
      assert.ok(node.logs.some((l) => l.includes('"type":"stopped"')), 'stopped log line');
      const acked = results.filter((r) => r.status === 201).map((r) => r.json.seq as number);
      for (const r of results) assert.ok([201, 503, 0].includes(r.status), `unexpected ${r.status} ${r.text}`);
      const again = await startNode({ dataDir, env });
      const rec = (await api(again.url, 'GET', '/v1/conversations/t')).json;
      assert.ok(rec.last_seq >= acked.length, `last_seq ${rec.last_seq} < ${acked.length} acks`);
      const msgs = (await api(again.url, 'GET', '/v1/conversations/t/messages?limit=1000')).json.messages;
      const seqs = new Set(msgs.map((m: any) => m.seq));
      for (const s of acked) assert.ok(seqs.has(s), `acked seq ${s} missing after restart`);
      // And after kill -9: every ack of the restarted node survives too.
      const more: number[] = [];
      for (let i = 0; i < 20; i++) {
        const r = await api(again.url, 'POST', '/v1/conversations/t/messages', { message: { role: 'user', parts: [{ type: 'text', text: `k${i}` }] } });
        assert.equal(r.status, 201, r.text);
        more.push(r.json.seq);
      }
      await again.kill9();
      const third = await startNode({ dataDir, env });
      const after = (await api(third.url, 'GET', `/v1/conversations/t/messages?limit=1000`)).json.messages.map((m: any) => m.seq);
      assert.deepEqual(after, Array.from({ length: after.length }, (_, i) => i + 1), 'seqs contiguous');
      for (const s of more) assert.ok(after.includes(s), `acked seq ${s} missing after kill -9`);
      await third.stop();
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
}

test('auth - FLEETLM_API_KEY guards /v1 with a bearer token; ops endpoints stay open', async () => {
  const node = await startNode({ env: { FLEETLM_API_KEY: 'sekrit-key-123' } });
  try {
    const none = await api(node.url, 'PUT', '/v1/conversations/a', {});
    assert.equal(none.status, 401);
    assert.equal(none.json.error, 'unauthorized');
    const wrong = await api(node.url, 'GET', '/v1/conversations/a', undefined, { authorization: 'Bearer nope' });
    assert.equal(wrong.status, 401);
    const ok = await api(node.url, 'PUT', '/v1/conversations/a', {}, { authorization: 'Bearer sekrit-key-123' });
    assert.equal(ok.status, 200);
    assert.equal((await api(node.url, 'GET', '/health/ready')).status, 200);
    assert.equal((await api(node.url, 'GET', '/v1/conversations', undefined, { authorization: 'Bearer sekrit-key-123' })).json.conversations.length, 1);
  } finally {
    await node.stop();
    fs.rmSync(node.dataDir, { recursive: true, force: true });
  }
});

test('logs - client IP from True-Client-IP, X-Real-IP, the first X-Forwarded-For, then the socket', async () => {
  const node = await startNode({ env: { FLEETLM_LOG_LEVEL: 'debug' } });
  try {
    await api(node.url, 'GET', '/v1/conversations/x1', undefined, { 'x-forwarded-for': '203.0.113.9, 10.0.0.1' });
    await api(node.url, 'GET', '/v1/conversations/x2', undefined, { 'x-real-ip': '198.51.100.7', 'x-forwarded-for': '203.0.113.9' });
    await api(node.url, 'GET', '/v1/conversations/x3', undefined, { 'true-client-ip': '192.0.2.1', 'x-real-ip': '198.51.100.7' });
    await api(node.url, 'GET', '/v1/conversations/x4');
    await new Promise((r) => setTimeout(r, 100));
    const ips = Object.fromEntries(
      node.logs
        .filter((l) => l.includes('"type":"http"') && l.includes('/v1/conversations/x'))
        .map((l) => JSON.parse(l))
        .map((o) => [o.msg.split(' ')[1], o.client_ip]),
    );
    assert.deepEqual(ips, {
      '/v1/conversations/x1': '203.0.113.9',
      '/v1/conversations/x2': '198.51.100.7',
      '/v1/conversations/x3': '192.0.2.1',
      '/v1/conversations/x4': '127.0.0.1',
    });
  } finally {
    await node.stop();
    fs.rmSync(node.dataDir, { recursive: true, force: true });
  }
});
