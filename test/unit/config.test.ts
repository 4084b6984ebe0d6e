import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../../runtime/config.js';

test('config - defaults', () => {
  const c = loadConfig({});
  assert.equal(c.port, 4000);
  assert.equal(c.dataDir, './data');
  assert.equal(c.maxBodyBytes, 1024 * 1024);
  assert.equal(c.tokenEstimator, 'tiktoken:gpt-4o');
  assert.equal(c.streamMaxConnections, 512);
  assert.equal(c.apiKey, null);
  assert.match(c.nodeName, /^node-[0-9a-f]{8}$/);
  assert.equal(c.walSegmentBytes, 32 * 1024 * 1024);
  assert.equal(loadConfig({ FLEETLM_WAL_SEGMENT_BYTES: '1048576', FLEETLM_MAX_BODY_BYTES: '262144' }).walSegmentBytes, 1048576);
});

test('config - FLEETLM_* wins over FASTPACA_* aliases', () => {
  assert.equal(loadConfig({ FASTPACA_RAFT_DATA_DIR: '/a' }).dataDir, '/a');
  assert.equal(loadConfig({ FASTPACA_RAFT_DATA_DIR: '/a', FLEETLM_RAFT_DATA_DIR: '/b' }).dataDir, '/b');
  assert.equal(loadConfig({ FASTPACA_NODE_NAME: 'n1' }).nodeName, 'n1');
  assert.equal(loadConfig({ NODE_NAME: 'n2', FASTPACA_NODE_NAME: 'n1' }).nodeName, 'n2');
});

test('config - a bad value names the variable', () => {
  const bad: [Record<string, string>, RegExp][] = [
    [{ PORT: 'abc' }, /^PORT: /],
    [{ PORT: '70000' }, /^PORT: /],
    [{ FLEETLM_ARCHIVE_FLUSH_INTERVAL_MS: '5s' }, /^FLEETLM_ARCHIVE_FLUSH_INTERVAL_MS: /],
    [{ FASTPACA_MAX_BODY_BYTES: '-1' }, /^FASTPACA_MAX_BODY_BYTES: /],
    [{ DB_POOL_SIZE: '0' }, /^DB_POOL_SIZE: /],
    [{ FLEETLM_ARCHIVER_ENABLED: 'maybe' }, /^FLEETLM_ARCHIVER_ENABLED: /],
    [{ NODE_NAME: 'bad name' }, /^NODE_NAME: /],
    [{ FLEETLM_LOG_LEVEL: 'loud' }, /^FLEETLM_LOG_LEVEL: /],
    [{ FLEETLM_WAL_SEGMENT_BYTES: '1048576', FLEETLM_MAX_BODY_BYTES: '1048576' }, /^FLEETLM_WAL_SEGMENT_BYTES: .*at least/],
  ];
  for (const [env, re] of bad) {
    assert.throws(() => loadConfig(env), (e: unknown) => e instanceof ConfigError && re.test(e.message), JSON.stringify(env));
  }
});
