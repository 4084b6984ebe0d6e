// Node entry point: config → gateway (listening at once, not ready) →
// shard workers → ready. SIGTERM/SIGINT: stop accepting, drain in-flight
// requests, close every RocksDB instance cleanly, exit.
import { ConfigError, isClustered, loadConfig, type Config } from './config.js';
import { DamagedDataError, damagedOnDisk, loadManifest, markDataDirDamaged, saveManifest, setDataDirAside, startRuntime, type Runtime } from './index.js';
import { log, setLogLevel } from './log.js';
import { createEstimator, type TokenEstimator } from '../actors/tokens.js';
import { CpuPool, countPartsTokens } from './cpu-pool.js';
import { Dispatcher } from '../gateway/dispatch.js';
import { type ArchiveReader, makeContext } from '../gateway/context.js';
import { loadNativeUws, startGateway } from '../gateway/server.js';
import { AppError, type WireError, unavailable } from '../actors/errors.js';
import { StreamHub, type EventsPage } from '../gateway/streams/hub.js';
import { FanoutPacer } from '../gateway/streams/pacer.js';
import { type StreamEvent, messageEvent } from '../actors/events.js';
import { versionAt } from '../actors/conversation.js';
import { ReplyKind } from './replies.js';
import { ReqOp } from './wire.js';
import { groupOf, workerOfGroup } from './placement.js';
import { metrics } from '../gateway/metrics.js';
import { EventPublisher } from './nats.js';
import { openArchive, type Archive } from '../storage/archive/db.js';
import { Archiver, readArchived } from './archiver.js';
import { Cluster, awaitFounding } from './cluster.js';
import { type Founding, isFoundingIncarnation } from './membership.js';
import { DnsDiscovery } from './discovery.js';
import type { WorkerReply } from '../gateway/dispatch.js';

const DRAIN_MS_MAX = 10_000;
/** Exit status after storage damage found while running (EX_TEMPFAIL): restarted, the node starts over from its peers. */
const DAMAGED_EXIT_CODE = 75;

function fail(line: string): never {
  process.stderr.write(`fleetlm: ${line}\n`);
  process.exit(1);
}

function estimatorFrom(cfg: Config): TokenEstimator {
  try {
    return createEstimator(cfg.tokenEstimator, { lazyReference: true });
  } catch (err) {
    throw new ConfigError('FLEETLM_TOKEN_ESTIMATOR', (err as Error).message);
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  const cfg = loadConfig();
  setLogLevel(cfg.logLevel);
  const estimator = estimatorFrom(cfg);
  const uws = loadNativeUws();
  const pool = CpuPool.create({ threads: 1, estimatorSpec: cfg.tokenEstimator });
  let runtime: Runtime | null = null;
  let dispatcher: Dispatcher | null = null;
  let hub: StreamHub | null = null;
  let cluster: Cluster | null = null;
  let discovery: DnsDiscovery | null = null;
  /** A request to its group's leader: the local worker, or the leader node in a cluster. */
  const route = (op: ReqOp, group: number, payload: Uint8Array): Promise<WorkerReply> => {
    if (cluster !== null) return cluster.request(op, group, payload);
    return dispatcher ? dispatcher.request(op, group, payload) : Promise.reject(unavailable('node is starting'));
  };
  // Unreachable NATS stops boot, before anything listens.
  const publisher = cfg.nats === null ? null : await EventPublisher.connect(cfg.nats, cfg.nodeName);
  // So does an unreachable archive database or a failed migration.
  const archive = cfg.archive === null ? null : await openArchiveOrFail(cfg.archive.url, cfg.archive.poolSize, cfg.archive.migrateOnBoot);
  const archived: ArchiveReader | null = archive === null ? null : (id, lo, hi) => readArchived(archive, id, lo, hi);
  let archiver: Archiver | null = null;
  const ctx = makeContext(
    cfg,
    estimator,
    pool,
    {
      request: route,
      broadcast: async (op, payload) => {
        if (cluster !== null && op === ReqOp.List) return (await cluster.list(payload)).map((body) => ({ kind: ReplyKind.Ok, body }));
        return dispatcher ? dispatcher.broadcast(op, payload) : Promise.reject(unavailable('node is starting'));
      },
    },
    () => runtime !== null && runtime.isReady() && (cluster === null || cluster.allLed()),
    () => (publisher === null ? 'disabled' : publisher.connected ? 'ok' : 'failing'),
    () => archived,
    () => (archive === null ? 'disabled' : archive.status()),
  );
  const gateway = await startGateway(uws, ctx, cfg.host, cfg.port, () => hub);
  log('info', 'listening', `listening on ${cfg.host}:${gateway.port}`, { port: gateway.port });
  let founding: Founding | null = null;
  let incarnation = '';
  const clustered = isClustered(cfg) && publisher !== null;
  // The cluster's nodes: CLUSTER_NODES, or DNS (polled; the cluster follows its changes).
  let members: readonly string[] = cfg.clusterNodes ?? [];
  if (cfg.dns !== null) {
    discovery = new DnsDiscovery({ ...cfg.dns, servers: cfg.dns.servers ?? undefined });
    members = withSelf(await firstDnsAnswer(discovery, cfg.dns.query), cfg.nodeName);
    discovery.start((names) => {
      members = withSelf(names, cfg.nodeName);
      cluster?.setMembers(members);
    });
  }
  for (;;) {
    const damaged = damagedOnDisk(cfg);
    if (damaged !== null && clustered) {
      const aside = setDataDirAside(cfg);
      log('error', 'data_damaged', 'the data dir failed its checks; it was moved aside and this node starts over empty, repaired from its peers', { reason: damaged, moved_to: aside });
    }
    const manifest = loadManifest(cfg);
    incarnation = manifest.incarnation;
    if (clustered) {
      // DNS answers grow as nodes start: found only on a list that held still for two polls.
      const stableMs = cfg.dns === null ? 0 : 2 * cfg.dns.intervalMs;
      founding = manifest.founding ?? (await awaitFounding(publisher.nc, publisher.prefix, cfg.nodeName, manifest.incarnation, () => members, stableMs));
      if (manifest.founding === undefined) saveManifest(cfg, { ...manifest, founding });
      const founder = isFoundingIncarnation(cfg.nodeName, manifest.incarnation, founding);
      log('info', 'cluster_member', founder ? 'a founding member of the cluster' : 'joining as a new incarnation: the coordinator adds replicas here', { node: cfg.nodeName, incarnation, founding });
    }
    try {
      runtime = await startRuntime(cfg, publisher !== null, founding);
      break;
    } catch (err) {
      // Only a cluster node can start over: its peers hold everything it had. The next round sets the dir aside.
      if (!(err instanceof DamagedDataError) || founding === null) throw err;
      markDataDirDamaged(cfg, err.message);
    }
  }
  runtime.onCount = (texts) =>
    Promise.all(
      texts.map((t) =>
        countPartsTokens(estimator, pool, t.map((text) => ({ text })), cfg.poolTextChars).catch(() => -1),
      ),
    );
  const d = (dispatcher = new Dispatcher(runtime));
  if (clustered) {
    cluster = new Cluster(publisher.nc, publisher.prefix, runtime.nodeId, members, d, incarnation, founding!);
    log('info', 'cluster_joined', 'Raft traffic over NATS', { node: runtime.nodeId, nodes: members });
  }
  const rt = runtime;
  /** Streamed conversations of groups with no replica on this node → their NATS unsubscribe. */
  const remoteStreams = new Map<string, () => void>();
  const pacer = new FanoutPacer((ev) => hub?.onEvent(ev), {
    now: () => performance.now(),
    setTimer: (fn, ms) => setTimeout(fn, ms).unref(),
  });
  hub = new StreamHub({
    readEvents: (id, from, limit) => readEvents(route, archived, id, from, limit),
    setInterest: (id, on) => {
      const group = groupOf(id);
      if (cluster !== null && publisher !== null && !cluster.hasReplica(group)) {
        // No replica here: the events come from the group leader over NATS.
        if (on && !remoteStreams.has(id)) remoteStreams.set(id, publisher.subscribe(id, (ev) => pacer.push(ev)));
        if (!on) {
          remoteStreams.get(id)?.();
          remoteStreams.delete(id);
        }
        return;
      }
      // A worker that is down gets the interest restated when it is back (onWorkerReady).
      d.request(ReqOp.Interest, group, Buffer.from(JSON.stringify({ id, on }))).catch(() => {});
    },
    broadcast: (id, ev) => gateway.streams.broadcast(id, ev),
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  });
  const streamHub = hub;
  d.onEvent = (ev, publish) => {
    if (publish) publisher?.publish(ev);
    pacer.push(ev);
  };
  if (archive !== null && cfg.archive !== null) {
    archiver = new Archiver(archive, d, runtime.workers.length, cfg.archive, cfg.tailKeep);
    archiver.start();
  }
  runtime.onDamaged = (reason) => {
    markDataDirDamaged(cfg, reason);
    log('error', 'data_damaged', 'storage damage found while running: this node stops and, restarted, starts over from its peers', { reason });
    void stop('damaged', DAMAGED_EXIT_CODE);
  };
  runtime.onWorkerReady = (w) => streamHub.resync((id) => workerOfGroup(groupOf(id), rt.partitions, rt.workers.length) === w);
  setInterval(() => metrics.inFlight.set(dispatcher?.inFlight ?? 0), 1000).unref();
  log('info', 'ready', 'node ready', { node: runtime.nodeId, port: gateway.port, ms: Math.round(performance.now() - started) });

  let stopping = false;
  const stop = async (signal: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    log('info', 'draining', 'stopping: draining in-flight requests', { signal, in_flight: gateway.inFlight() });
    gateway.stopListening();
    gateway.streams.closeAll();
    const deadline = Date.now() + DRAIN_MS_MAX;
    while (gateway.inFlight() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await archiver?.stop();
    dispatcher?.failAll('node is shutting down');
    discovery?.stop();
    cluster?.close();
    await runtime?.close();
    await publisher?.close();
    await archive?.close();
    await pool.close();
    log('info', 'stopped', 'storage closed cleanly', {});
    process.exit(exitCode);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

function withSelf(names: readonly string[], self: string): string[] {
  return [...new Set([...names, self])].sort();
}

/** The first DNS answer; the cluster cannot form without one, so boot waits for it (logging why). */
async function firstDnsAnswer(discovery: DnsDiscovery, query: string): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      const names = await discovery.resolveOnce();
      if (names.length > 0) return names;
      throw new Error('no A records');
    } catch (err) {
      if (attempt === 1 || attempt % 10 === 0) log('warn', 'dns_discovery_waiting', 'waiting for DNS to list the cluster', { query, err: String(err), attempt });
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

async function openArchiveOrFail(url: string, poolSize: number, migrate: boolean): Promise<Archive> {
  let archive: Archive;
  try {
    archive = await openArchive(url, poolSize);
  } catch (err) {
    throw new ConfigError('DATABASE_URL', `cannot reach the archive database: ${(err as Error).message}`);
  }
  if (migrate) {
    try {
      await archive.migrate();
    } catch (err) {
      await archive.close();
      throw new ConfigError('MIGRATE_ON_BOOT', `archive migration failed: ${(err as Error).message}`);
    }
  }
  log('info', 'archive_ready', 'archive database reachable and migrated', { migrated: migrate });
  return archive;
}

/**
 * Message events with seq > from (at most `limit`): the hot tier's from the
 * owning worker (ReqOp.Events: a first line with where the log ends, then one
 * event per line), the part below it from the archive, so a stream resumed
 * from an old cursor gets every message (SPEC §5: `gap` only when healing is
 * impossible). Only a contiguous run of archived messages is used: the first
 * one missing from the archive shows up as a gap on the next read.
 */
async function readEvents(
  route: (op: ReqOp, group: number, payload: Uint8Array) => Promise<WorkerReply>,
  archived: ArchiveReader | null,
  id: string,
  from: number,
  limit: number,
): Promise<EventsPage> {
  const r = await route(ReqOp.Events, groupOf(id), Buffer.from(JSON.stringify({ id, from, limit })));
  const text = Buffer.from(r.body).toString('utf8');
  if (r.kind === ReplyKind.Error) {
    const w = JSON.parse(text) as WireError;
    throw new AppError(w.code, w.message, w.detail);
  }
  const lines = text.split('\n');
  const head = JSON.parse(lines[0]) as { last_seq: number; tombstoned: boolean; trimmed_seq?: number; compaction_seqs?: number[] };
  const hot: StreamEvent[] = [];
  for (let i = 1; i < lines.length; i++) {
    const json = lines[i];
    const seq = Number(json.slice(json.indexOf('"seq":') + 6, json.indexOf(',"version"')));
    hot.push({ id, seq, type: 'message', json });
  }
  const page = { lastSeq: head.last_seq, tombstoned: head.tombstoned, events: hot };
  if (archived === null || limit <= 0 || head.trimmed_seq === undefined || head.trimmed_seq <= from) return page;
  const hi = Math.min(head.trimmed_seq, from + limit);
  const compactions = { seqs: head.compaction_seqs ?? [] };
  const cold: StreamEvent[] = [];
  for (const rec of await archived(id, from + 1, hi)) {
    const seq = from + 1 + cold.length;
    if (!rec.startsWith(`{"seq":${seq},`)) break;
    cold.push(messageEvent(id, rec, versionAt(seq, compactions)));
  }
  if (cold.length === 0) return page; // the hot tier's first event shows the hole: a gap
  return { ...page, events: cold.length === hi - from ? cold.concat(hot) : cold };
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) fail(err.message);
  fail(err instanceof Error ? err.message : String(err));
});
