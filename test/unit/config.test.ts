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
  // 0 = no worker thread (the shard runs on the gateway thread); negative is refused.
  assert.equal(loadConfig({ FLEETLM_WORKERS: '0' }).workers, 0);
  assert.throws(() => loadConfig({ FLEETLM_WORKERS: '-1' }), (e: unknown) => e instanceof ConfigError && e.message.includes('FLEETLM_WORKERS'));
});

test('config - archive, streams and NATS settings', () => {
  assert.equal(loadConfig({}).archive, null);
  assert.equal(loadConfig({}).nats, null);
  const a = loadConfig({ FLEETLM_ARCHIVER_ENABLED: 'true', FLEETLM_POSTGRES_URL: 'postgres://u@h:5432/db', DB_POOL_SIZE: '4' }).archive;
  assert.deepEqual(a, { url: 'postgres://u@h:5432/db', flushIntervalMs: 5000, batchSize: 5000, poolSize: 4, migrateOnBoot: true });
  assert.equal(loadConfig({ FLEETLM_ARCHIVER_ENABLED: 'true', DATABASE_URL: 'postgresql://h/db', MIGRATE_ON_BOOT: 'false' }).archive!.migrateOnBoot, false);
  const s = loadConfig({ FLEETLM_STREAM_BUFFER_BYTES: '65536', FLEETLM_STREAM_PING_MS: '500' });
  assert.deepEqual([s.streamBufferBytes, s.streamPingMs], [65536, 500]);
  const n = loadConfig({ NATS_URL: 'nats://a:4222, tls://b:4443', FLEETLM_NATS_USER: 'u', FLEETLM_NATS_PASSWORD: 'p' }).nats!;
  assert.deepEqual(n.servers, ['nats://a:4222', 'tls://b:4443']);
  assert.equal(n.subjectPrefix, 'fleetlm');
  assert.deepEqual([n.user, n.password, n.token], ['u', 'p', null]);
  assert.ok(n.tls !== null, 'a tls:// server turns TLS on');
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
    [{ FLEETLM_ARCHIVER_ENABLED: 'true' }, /^DATABASE_URL: is required/],
    [{ FLEETLM_ARCHIVER_ENABLED: 'true', DATABASE_URL: 'mysql://x' }, /^DATABASE_URL: must be a postgres/],
    [{ FLEETLM_ARCHIVER_ENABLED: 'true', FLEETLM_POSTGRES_URL: 'pg://x' }, /^FLEETLM_POSTGRES_URL: /],
    [{ FLEETLM_ARCHIVER_ENABLED: 'true', DATABASE_URL: 'postgres://x/db', MIGRATE_ON_BOOT: 'sometimes' }, /^MIGRATE_ON_BOOT: /],
    [{ FLEETLM_STREAM_BUFFER_BYTES: '1000' }, /^FLEETLM_STREAM_BUFFER_BYTES: /],
    [{ FLEETLM_STREAM_PING_MS: 'soon' }, /^FLEETLM_STREAM_PING_MS: /],
    [{ FLEETLM_STREAM_MAX_CONNECTIONS: '0' }, /^FLEETLM_STREAM_MAX_CONNECTIONS: /],
    [{ NATS_URL: 'localhost' }, /^NATS_URL: /],
    [{ NATS_URL: 'nats://a:4222', FLEETLM_NATS_PASSWORD: 'p' }, /^FLEETLM_NATS_USER: /],
    [{ NATS_URL: 'nats://a:4222', FLEETLM_NATS_TLS_CA_FILE: '/no/such/ca.pem' }, /^FLEETLM_NATS_TLS_CA_FILE: /],
    [{ DNS_CLUSTER_QUERY: 'fleet.internal' }, /^NATS_URL: is required for a cluster \(DNS_CLUSTER_QUERY/],
    [{ DNS_CLUSTER_QUERY: 'bad name!', NATS_URL: 'nats://a:4222' }, /^DNS_CLUSTER_QUERY: must be a DNS name/],
    [{ DNS_CLUSTER_QUERY: 'fleet.internal', NATS_URL: 'nats://a:4222', CLUSTER_NODES: 'a,b' }, /^DNS_CLUSTER_QUERY: set either it or CLUSTER_NODES/],
    [{ DNS_CLUSTER_QUERY: 'fleet.internal', NATS_URL: 'nats://a:4222', DNS_POLL_INTERVAL_MS: 'often' }, /^DNS_POLL_INTERVAL_MS: must be an integer/],
    [{ DNS_CLUSTER_QUERY: 'fleet.internal', NATS_URL: 'nats://a:4222', DNS_CLUSTER_NODE_BASENAME: 'a@b' }, /^DNS_CLUSTER_NODE_BASENAME: /],
    [{ DNS_CLUSTER_QUERY: 'fleet.internal', NATS_URL: 'nats://a:4222', FLEETLM_DNS_SERVERS: 'dns.example' }, /^FLEETLM_DNS_SERVERS: /],
    [{ CLUSTER_NODES: 'n1,n2,n3', NODE_NAME: 'n1' }, /^NATS_URL: is required for a cluster/],
    [{ CLUSTER_NODES: 'n1,n2,n3', NATS_URL: 'nats://a:4222' }, /^NODE_NAME: must be one of CLUSTER_NODES/],
    [{ FASTPACA_CLUSTER_SEED: 'n1,n2', NATS_URL: 'nats://a:4222', NODE_NAME: 'n9' }, /^NODE_NAME: must be one of FASTPACA_CLUSTER_SEED/],
    [{ CLUSTER_NODES: 'n1,bad name', NATS_URL: 'nats://a:4222', NODE_NAME: 'n1' }, /^CLUSTER_NODES: node names/],
  ];
  for (const [env, re] of bad) {
    assert.throws(() => loadConfig(env), (e: unknown) => e instanceof ConfigError && re.test(e.message), JSON.stringify(env));
  }
});

test('config - CLUSTER_NODES: sorted, deduplicated; one name is a single node', () => {
  const c = loadConfig({ CLUSTER_NODES: ' n3,n1, n2,n1 ', NATS_URL: 'nats://a:4222', NODE_NAME: 'n2' });
  assert.deepEqual(c.clusterNodes, ['n1', 'n2', 'n3']);
  assert.equal(loadConfig({ CLUSTER_NODES: 'solo' }).clusterNodes, null);
  assert.equal(loadConfig({}).clusterNodes, null);
  const d = loadConfig({ DNS_CLUSTER_QUERY: 'fleet.internal', NATS_URL: 'nats://a:4222', NODE_NAME: 'fleetlm@10.0.0.7', DNS_POLL_INTERVAL_MS: '250', FLEETLM_DNS_SERVERS: '127.0.0.1:5353' });
  assert.deepEqual(d.dns, { query: 'fleet.internal', basename: 'fleetlm', intervalMs: 250, servers: ['127.0.0.1:5353'] });
  assert.equal(d.clusterNodes, null);
  assert.equal(d.nodeName, 'fleetlm@10.0.0.7');
});
