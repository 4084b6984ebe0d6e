// Node entry point: config → gateway (listening at once, not ready) →
// shard workers → ready. SIGTERM/SIGINT: stop accepting, drain in-flight
// requests, close every RocksDB instance cleanly, exit.
import { ConfigError, loadConfig, type Config } from './config.js';
import { startRuntime, type Runtime } from './index.js';
import { log, setLogLevel } from './log.js';
import { createEstimator, type TokenEstimator } from '../actors/tokens.js';
import { CpuPool, countPartsTokens } from './cpu-pool.js';
import { Dispatcher } from '../gateway/dispatch.js';
import { makeContext } from '../gateway/context.js';
import { loadNativeUws, startGateway } from '../gateway/server.js';
import { unavailable } from '../actors/errors.js';
import { metrics } from '../gateway/metrics.js';

const DRAIN_MS_MAX = 10_000;

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
  const ctx = makeContext(
    cfg,
    estimator,
    pool,
    {
      request: (op, group, payload) =>
        dispatcher ? dispatcher.request(op, group, payload) : Promise.reject(unavailable('node is starting')),
      broadcast: (op, payload) =>
        dispatcher ? dispatcher.broadcast(op, payload) : Promise.reject(unavailable('node is starting')),
    },
    () => runtime !== null && runtime.isReady(),
  );
  const gateway = await startGateway(uws, ctx, cfg.host, cfg.port);
  log('info', 'listening', `listening on ${cfg.host}:${gateway.port}`, { port: gateway.port });
  runtime = await startRuntime(cfg);
  runtime.onCount = (texts) =>
    Promise.all(
      texts.map((t) =>
        countPartsTokens(estimator, pool, t.map((text) => ({ text })), cfg.poolTextChars).catch(() => -1),
      ),
    );
  dispatcher = new Dispatcher(runtime);
  setInterval(() => metrics.inFlight.set(dispatcher?.inFlight ?? 0), 1000).unref();
  log('info', 'ready', 'node ready', { node: runtime.nodeId, port: gateway.port, ms: Math.round(performance.now() - started) });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log('info', 'draining', 'stopping: draining in-flight requests', { signal, in_flight: gateway.inFlight() });
    gateway.stopListening();
    const deadline = Date.now() + DRAIN_MS_MAX;
    while (gateway.inFlight() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    dispatcher?.failAll('node is shutting down');
    await runtime?.close();
    await pool.close();
    log('info', 'stopped', 'storage closed cleanly', {});
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) fail(err.message);
  fail(err instanceof Error ? err.message : String(err));
});
