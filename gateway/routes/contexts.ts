// REST — contexts (SPEC §4). The routes shared with conversations (GET,
// DELETE, append, tail, replay) live in conversations.ts with surface
// 'contexts'; these are the context-only ones. Everything is validated here,
// before a worker sees it, so bad input changes nothing.
import type { HttpRequest, HttpResponse } from '../http.js';
import { parseJsonBody, queryInt } from '../http.js';
import type { GatewayContext } from '../context.js';
import { Op, REQUIRE_CONTEXT, encodeCommand, type ReplacementItem } from '../../actors/commands.js';
import { REPLACEMENT_MESSAGES_MAX, validateContextConfig } from '../../actors/context.js';
import { invalid, overloaded } from '../../actors/errors.js';
import { isPlainObject, messageMembers, nonNegativeInt, validateMessage, validateMetadata } from '../../actors/validate.js';
import { countPartsTokens } from '../../runtime/cpu-pool.js';
import { ReqOp } from '../../runtime/wire.js';
import { groupOf } from '../../runtime/placement.js';
import { limits } from '../../runtime/limits.js';
import { metrics } from '../metrics.js';

function bodyObject(req: HttpRequest): Record<string, unknown> {
  const body = parseJsonBody(req);
  if (!isPlainObject(body)) throw invalid('invalid_body', 'body must be a JSON object');
  return body;
}

function optionalIfVersion(v: unknown): number {
  if (v === undefined || v === null) return -1;
  if (!nonNegativeInt(v)) throw invalid('invalid_if_version', 'if_version must be a non-negative integer');
  return v;
}

/** Proposes a command, refusing one that could not fit a log write. */
function propose(ctx: GatewayContext, id: string, cmd: Uint8Array): Promise<HttpResponse> {
  if (cmd.byteLength > limits.writeBatchBytesMax / 2) throw overloaded('request too large for one log entry');
  return ctx.send(ReqOp.Propose, groupOf(id), cmd);
}

export function putContext(ctx: GatewayContext, req: HttpRequest, id: string): Promise<HttpResponse> {
  const body = bodyObject(req);
  const config = validateContextConfig(body);
  const metadata = body.metadata === undefined || body.metadata === null ? null : validateMetadata(body.metadata);
  const cmd = encodeCommand({
    op: Op.PutContext,
    id,
    nowMs: 0,
    configJson: JSON.stringify(config),
    metadataJson: metadata === null ? null : JSON.stringify(metadata),
  });
  return propose(ctx, id, cmd);
}

export function patchMetadata(ctx: GatewayContext, req: HttpRequest, id: string): Promise<HttpResponse> {
  const body = bodyObject(req);
  const patch = validateMetadata(body.metadata);
  return propose(ctx, id, encodeCommand({ op: Op.PatchMetadata, id, nowMs: 0, patchJson: JSON.stringify(patch), flags: REQUIRE_CONTEXT }));
}

/** GET /v1/contexts/:id/context?budget_tokens=&if_version= */
export async function windowOf(ctx: GatewayContext, req: HttpRequest, id: string): Promise<HttpResponse> {
  const started = performance.now();
  const budget = req.query.has('budget_tokens') ? queryInt(req, 'budget_tokens', 0, 1) : null;
  const ifVersion = queryInt(req, 'if_version', -1, 0);
  const res = await ctx.send(ReqOp.Window, groupOf(id), Buffer.from(JSON.stringify({ id, budget, if_version: ifVersion })));
  if (res.status === 200) {
    metrics.windowLatency.observe(performance.now() - started);
    // The worker puts used_tokens near the start of the body.
    const head = Buffer.from(res.body.slice(0, 96)).toString('latin1');
    const used = /"used_tokens":([0-9]+)/.exec(head);
    if (used) metrics.snapshotTokenCount.observe(Number(used[1]));
  }
  return res;
}

export async function compact(ctx: GatewayContext, req: HttpRequest, id: string): Promise<HttpResponse> {
  let res: HttpResponse;
  try {
    res = await proposeCompaction(ctx, req, id);
  } catch (err) {
    metrics.compactionRequests.labels('rejected').inc();
    throw err;
  }
  metrics.compactionRequests.labels(res.status === 200 ? 'ok' : res.status === 409 ? 'conflict' : 'rejected').inc();
  return res;
}

async function proposeCompaction(ctx: GatewayContext, req: HttpRequest, id: string): Promise<HttpResponse> {
  const body = bodyObject(req);
  const ifVersion = optionalIfVersion(body.if_version);
  const list = body.replacement;
  if (!Array.isArray(list) || list.length > REPLACEMENT_MESSAGES_MAX) {
    throw invalid('invalid_replacement', `replacement must be an array of at most ${REPLACEMENT_MESSAGES_MAX} messages`);
  }
  // Validate every message before counting any tokens: a bad one costs nothing.
  const messages = list.map((m, i) => validateMessage(m, `replacement[${i}]`));
  const replacement: ReplacementItem[] = [];
  for (const m of messages) {
    const tokenCount = m.tokenCount ?? (await countPartsTokens(ctx.estimator, ctx.pool, m.parts, ctx.config.poolTextChars));
    if (tokenCount > 0xffffffff) throw invalid('invalid_replacement', 'a replacement message has too many tokens');
    replacement.push({ members: messageMembers(m), tokenCount });
  }
  return propose(ctx, id, encodeCommand({ op: Op.Compact, id, nowMs: 0, ifVersion, replacement }));
}
