// Configuration from the environment (SPEC §7). FLEETLM_* names win over their
// FASTPACA_* aliases. A bad value throws ConfigError naming the variable; the
// entry point prints that one line and exits.
import fs from 'node:fs';
import os from 'node:os';
import crypto from 'node:crypto';
import { limits, walBatchBytesMax } from './limits.js';
import { BASENAME_RE } from './discovery.js';

export class ConfigError extends Error {
  constructor(readonly variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

export interface Config {
  port: number;
  opsPort: number | null;
  host: string;
  nodeName: string;
  dataDir: string;
  workers: number;
  maxBodyBytes: number;
  tokenEstimator: string;
  streamMaxConnections: number;
  /** Unsent bytes a stream connection may hold before it is closed as a slow consumer. */
  streamBufferBytes: number;
  /** Ping interval of raw and SSE streams; pong and heartbeat timeouts are multiples of it. */
  streamPingMs: number;
  apiKey: string | null;
  tailKeep: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** Texts longer than this are counted on the CPU pool, not the main thread. */
  poolTextChars: number;
  walSegmentBytes: number;
  /** NATS for stream events and, in a cluster, Raft traffic; null when NATS_URL is unset. */
  nats: NatsConfig | null;
  /** Every node of the cluster (sorted, this node among them); null on a single node or with DNS discovery. */
  clusterNodes: string[] | null;
  /** DNS discovery of the cluster's nodes (DNS_CLUSTER_QUERY); null when unset. */
  dns: DnsConfig | null;
  /** The Postgres archive; null unless FLEETLM_ARCHIVER_ENABLED. */
  archive: ArchiveConfig | null;
}

export interface ArchiveConfig {
  url: string;
  flushIntervalMs: number;
  batchSize: number;
  poolSize: number;
  migrateOnBoot: boolean;
}

type Env = Record<string, string | undefined>;

/** A cluster node (static list or DNS discovery), not a single node. */
export function isClustered(cfg: Config): boolean {
  return cfg.clusterNodes !== null || cfg.dns !== null;
}

export interface DnsConfig {
  /** A name whose A records are the cluster's nodes (e.g. a headless service). */
  query: string;
  /** Node names are `<basename>@<ipv4>`. */
  basename: string;
  intervalMs: number;
  /** Resolvers to ask (`host:port`), else the system's: FLEETLM_DNS_SERVERS. */
  servers: string[] | null;
}

export interface NatsConfig {
  servers: string[];
  subjectPrefix: string;
  user: string | null;
  password: string | null;
  token: string | null;
  credsFile: string | null;
  tls: { caFile: string | null; certFile: string | null; keyFile: string | null } | null;
}


/** Value of FLEETLM_<suffix>, else FASTPACA_<suffix>, with the name it came from. */
function aliased(env: Env, suffix: string): [string, string | undefined] {
  const primary = `FLEETLM_${suffix}`;
  if (env[primary] !== undefined) return [primary, env[primary]];
  const alias = `FASTPACA_${suffix}`;
  if (env[alias] !== undefined) return [alias, env[alias]];
  return [primary, undefined];
}

function first(env: Env, names: string[]): [string, string | undefined] {
  for (const n of names) if (env[n] !== undefined) return [n, env[n]];
  return [names[0], undefined];
}

export function parseInteger(name: string, raw: string | undefined, dflt: number, min: number, max: number): number {
  if (raw === undefined || raw === '') return dflt;
  if (!/^[0-9]+$/.test(raw.trim())) throw new ConfigError(name, `must be an integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw.trim());
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `must be between ${min} and ${max}, got ${raw}`);
  }
  return n;
}

export function parseBoolean(name: string, raw: string | undefined, dflt: boolean): boolean {
  if (raw === undefined || raw === '') return dflt;
  const v = raw.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(name, `must be true or false, got ${JSON.stringify(raw)}`);
}

const NODE_NAME_RE = /^[A-Za-z0-9_.@:-]{1,64}$/;

/** CLUSTER_NODES: the node names of a cluster; more than one needs NATS_URL and this node's NODE_NAME among them. */
function clusterFrom(env: Env, nodeName: string | undefined, nats: NatsConfig | null): string[] | null {
  const [clusterVar, cluster] = first(env, ['CLUSTER_NODES', 'FASTPACA_CLUSTER_SEED']);
  if (cluster === undefined || cluster.trim() === '') return null;
  const nodes = [...new Set(cluster.split(',').map((s) => s.trim()).filter(Boolean))].sort();
  for (const n of nodes) {
    if (!NODE_NAME_RE.test(n)) throw new ConfigError(clusterVar, `node names must be 1-64 chars of [A-Za-z0-9_.@:-], got ${JSON.stringify(n)}`);
  }
  if (nodes.length <= 1) return null;
  if (nats === null) throw new ConfigError('NATS_URL', `is required for a cluster (${clusterVar} lists ${nodes.length} nodes)`);
  if (nodeName === undefined || !nodes.includes(nodeName)) {
    throw new ConfigError('NODE_NAME', `must be one of ${clusterVar} (${nodes.join(',')}), got ${JSON.stringify(nodeName ?? '')}`);
  }
  return nodes;
}

/**
 * DNS_CLUSTER_QUERY: the cluster's nodes are `<basename>@<ip>` for the A
 * records of the query, polled; this node's name defaults to
 * `<basename>@<its first non-loopback IPv4>`.
 */
function dnsFrom(env: Env, nats: NatsConfig | null): DnsConfig | null {
  const query = env.DNS_CLUSTER_QUERY?.trim();
  if (query === undefined || query === '') return null;
  if (!/^[A-Za-z0-9_.-]{1,253}$/.test(query)) throw new ConfigError('DNS_CLUSTER_QUERY', `must be a DNS name, got ${JSON.stringify(query)}`);
  const [clusterVar, cluster] = first(env, ['CLUSTER_NODES', 'FASTPACA_CLUSTER_SEED']);
  if (cluster !== undefined && cluster.trim() !== '') throw new ConfigError('DNS_CLUSTER_QUERY', `set either it or ${clusterVar}, not both`);
  if (nats === null) throw new ConfigError('NATS_URL', 'is required for a cluster (DNS_CLUSTER_QUERY is set)');
  const basename = (env.DNS_CLUSTER_NODE_BASENAME ?? 'fleetlm').trim();
  if (!BASENAME_RE.test(basename)) throw new ConfigError('DNS_CLUSTER_NODE_BASENAME', `must match ${BASENAME_RE}, got ${JSON.stringify(basename)}`);
  const servers = env.FLEETLM_DNS_SERVERS?.trim() ? env.FLEETLM_DNS_SERVERS.split(',').map((x) => x.trim()).filter(Boolean) : null;
  for (const x of servers ?? []) {
    if (!/^[0-9.]+(:[0-9]+)?$/.test(x)) throw new ConfigError('FLEETLM_DNS_SERVERS', `must be ipv4[:port] (comma-separated), got ${JSON.stringify(x)}`);
  }
  return { query, basename, intervalMs: parseInteger('DNS_POLL_INTERVAL_MS', env.DNS_POLL_INTERVAL_MS, 5000, 100, 3_600_000), servers };
}

function firstIpv4(): string | null {
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return null;
}

export function loadConfig(env: Env = process.env): Config {
  const nats = natsConfigFrom(env);
  const dns = dnsFrom(env, nats);
  const [nodeVar, givenName] = first(env, ['NODE_NAME', 'FASTPACA_NODE_NAME']);
  let nodeName = givenName;
  if (dns !== null && nodeName === undefined) {
    const ip = firstIpv4();
    if (ip === null) throw new ConfigError('NODE_NAME', 'must be set: DNS discovery found no IPv4 address of this host to name it by');
    nodeName = `${dns.basename}@${ip}`;
  }
  if (nodeName !== undefined && !NODE_NAME_RE.test(nodeName)) {
    throw new ConfigError(nodeVar, `must be 1-64 chars of [A-Za-z0-9_.@:-], got ${JSON.stringify(nodeName)}`);
  }
  const [dataVar, dataDir] = aliased(env, 'RAFT_DATA_DIR');
  if (dataDir !== undefined && dataDir.trim() === '') throw new ConfigError(dataVar, 'must not be empty');
  const [estVar, estimator] = aliased(env, 'TOKEN_ESTIMATOR');
  if (estimator !== undefined && estimator.trim() === '') throw new ConfigError(estVar, 'must not be empty');
  const [levelVar, level] = aliased(env, 'LOG_LEVEL');
  const logLevel = (level ?? 'info').trim().toLowerCase();
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) {
    throw new ConfigError(levelVar, `must be one of debug, info, warn, error, got ${JSON.stringify(level)}`);
  }
  const [keyVar, apiKey] = aliased(env, 'API_KEY');
  if (apiKey !== undefined && apiKey.length > 0 && apiKey.length < 8) {
    throw new ConfigError(keyVar, 'must be at least 8 characters');
  }
  const int = (suffix: string, dflt: number, min: number, max: number) => {
    const [name, raw] = aliased(env, suffix);
    return parseInteger(name, raw, dflt, min, max);
  };
  const flushIntervalMs = int('ARCHIVE_FLUSH_INTERVAL_MS', 5000, 1, 3_600_000);
  const batchSize = int('ARCHIVER_BATCH_SIZE', 5000, 1, 1_000_000);
  const poolSize = parseInteger('DB_POOL_SIZE', env.DB_POOL_SIZE, 10, 1, 1000);
  const [archName, arch] = aliased(env, 'ARCHIVER_ENABLED');
  let archive: ArchiveConfig | null = null;
  if (parseBoolean(archName, arch, false)) {
    const [urlVar, url] = first(env, ['DATABASE_URL', 'FLEETLM_POSTGRES_URL']);
    if (url === undefined || url.trim() === '') throw new ConfigError(urlVar, `is required when ${archName} is true`);
    if (!/^postgres(ql)?:\/\//.test(url.trim())) throw new ConfigError(urlVar, 'must be a postgres:// URL');
    archive = { url: url.trim(), flushIntervalMs, batchSize, poolSize, migrateOnBoot: parseBoolean('MIGRATE_ON_BOOT', env.MIGRATE_ON_BOOT, true) };
  }
  const [opsVar, ops] = aliased(env, 'OPS_PORT');
  const maxBodyBytes = int('MAX_BODY_BYTES', 1024 * 1024, 1024, 8 * 1024 * 1024);
  const [segVar, segRaw] = aliased(env, 'WAL_SEGMENT_BYTES');
  const walSegmentBytes = parseInteger(segVar, segRaw, limits.walSegmentBytes, 1024 * 1024, 1024 * 1024 * 1024);
  // One max-size request must fit one WAL write, which must fit one segment.
  if (walBatchBytesMax(walSegmentBytes) < maxBodyBytes + 4096) {
    throw new ConfigError(segVar, `must leave room for one FLEETLM_MAX_BODY_BYTES (${maxBodyBytes}) body: use at least ${maxBodyBytes + 4096 + limits.walSegmentReserveBytes}`);
  }
  return {
    port: parseInteger('PORT', env.PORT, 4000, 0, 65535),
    opsPort: ops === undefined || ops === '' ? null : parseInteger(opsVar, ops, 0, 0, 65535),
    host: env.HOST ?? '0.0.0.0',
    nodeName: nodeName ?? `node-${crypto.randomBytes(4).toString('hex')}`,
    dataDir: dataDir ?? './data',
    // One core is left to the gateway thread: on 2 cores, 1 worker serves more appends
    // with less CPU than 2 (docs/DESIGN.md, "Worker count").
    // 0: no worker thread, the one shard runs on the gateway thread.
    workers: int('WORKERS', Math.max(1, os.availableParallelism() - 1), 0, 64),
    maxBodyBytes,
    tokenEstimator: (estimator ?? 'tiktoken:gpt-4o').trim(),
    streamMaxConnections: int('STREAM_MAX_CONNECTIONS', 512, 1, 1_000_000),
    streamBufferBytes: int('STREAM_BUFFER_BYTES', 1024 * 1024, 64 * 1024, 256 * 1024 * 1024),
    streamPingMs: int('STREAM_PING_MS', 30_000, 100, 3_600_000),
    apiKey: apiKey ? apiKey : null,
    tailKeep: int('TAIL_KEEP', 1000, 1, 100_000_000),
    logLevel: logLevel as Config['logLevel'],
    poolTextChars: int('POOL_TEXT_CHARS', limits.poolTextCharsDefault, 256, 64 * 1024 * 1024),
    walSegmentBytes,
    nats,
    clusterNodes: dns === null ? clusterFrom(env, nodeName, nats) : null,
    dns,
    archive,
  };
}

/** NATS settings from the environment (names in README's configuration table). */
function natsConfigFrom(env: Env): NatsConfig | null {
  const url = env.NATS_URL;
  if (url === undefined || url.trim() === '') return null;
  const servers = url.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of servers) {
    if (!/^(nats|tls):\/\/[^\s/]+$/.test(s) && !/^[^\s/:]+:[0-9]+$/.test(s)) {
      throw new ConfigError('NATS_URL', `must be nats://host:port (comma-separated for several), got ${JSON.stringify(s)}`);
    }
  }
  const opt = (name: string) => {
    const v = env[name];
    return v === undefined || v === '' ? null : v;
  };
  const prefix = opt('FLEETLM_NATS_SUBJECT_PREFIX') ?? 'fleetlm';
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(prefix)) {
    throw new ConfigError('FLEETLM_NATS_SUBJECT_PREFIX', `must be dot-separated tokens of [A-Za-z0-9_-], got ${JSON.stringify(prefix)}`);
  }
  const credsFile = opt('FLEETLM_NATS_CREDS_FILE');
  const tlsFiles = { caFile: opt('FLEETLM_NATS_TLS_CA_FILE'), certFile: opt('FLEETLM_NATS_TLS_CERT_FILE'), keyFile: opt('FLEETLM_NATS_TLS_KEY_FILE') };
  for (const [name, file] of [
    ['FLEETLM_NATS_CREDS_FILE', credsFile],
    ['FLEETLM_NATS_TLS_CA_FILE', tlsFiles.caFile],
    ['FLEETLM_NATS_TLS_CERT_FILE', tlsFiles.certFile],
    ['FLEETLM_NATS_TLS_KEY_FILE', tlsFiles.keyFile],
  ] as const) {
    if (file !== null && !fs.existsSync(file)) throw new ConfigError(name, `no such file: ${file}`);
  }
  const user = opt('FLEETLM_NATS_USER');
  const password = opt('FLEETLM_NATS_PASSWORD');
  if ((user === null) !== (password === null)) {
    throw new ConfigError(user === null ? 'FLEETLM_NATS_USER' : 'FLEETLM_NATS_PASSWORD', 'NATS user and password go together');
  }
  return {
    servers,
    subjectPrefix: prefix,
    user,
    password,
    token: opt('FLEETLM_NATS_TOKEN'),
    credsFile,
    tls: tlsFiles.caFile || tlsFiles.certFile || tlsFiles.keyFile || servers.some((s) => s.startsWith('tls://')) ? tlsFiles : null,
  };
}

