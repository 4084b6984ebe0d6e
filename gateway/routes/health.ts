// Ops endpoints: liveness, readiness, named checks, Prometheus.
import type { HttpRequest, HttpResponse } from '../http.js';
import { json } from '../http.js';
import type { GatewayContext } from '../context.js';
import { invalid } from '../../actors/errors.js';
import { registry } from '../metrics.js';

const CHECKS = ['raft', 'nats', 'postgres'] as const;

export function live(): HttpResponse {
  return json(200, { status: 'ok' });
}

export function ready(ctx: GatewayContext): HttpResponse {
  return ctx.isReady() ? json(200, { status: 'ready' }) : json(503, { status: 'starting' });
}

/** `?check=` names one check; without it, all. A check whose feature is not configured is 'disabled'. */
export function healthz(ctx: GatewayContext, req: HttpRequest): HttpResponse {
  const only = req.query.get('check');
  if (only !== null && !(CHECKS as readonly string[]).includes(only)) {
    throw invalid('invalid_check', `check must be one of ${CHECKS.join(', ')}`);
  }
  const results: Record<string, string> = {};
  for (const c of CHECKS) {
    if (only !== null && c !== only) continue;
    results[c] = c === 'raft' ? (ctx.isReady() ? 'ok' : 'failing') : c === 'nats' ? ctx.natsStatus() : ctx.postgresStatus();
  }
  const failing = Object.entries(results).filter(([, v]) => v === 'failing').map(([k]) => k);
  return json(failing.length === 0 ? 200 : 500, { status: failing.length === 0 ? 'ok' : 'failing', checks: results, failing });
}

export async function metricsText(): Promise<HttpResponse> {
  return { status: 200, headers: { 'content-type': registry.contentType }, body: await registry.metrics() };
}
