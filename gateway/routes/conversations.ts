// REST — conversations (SPEC §3). Each handler validates everything before
// anything reaches a worker, so bad input changes nothing.
import { createHash } from 'node:crypto';
import type { HttpRequest, HttpResponse } from '../http.js';
import { parseIntStrict, parseJsonBody, queryInt, queryLimit, rawJson } from '../http.js';
import type { GatewayContext } from '../context.js';
import { Op, REQUIRE_CONTEXT, encodeCommand } from '../../actors/commands.js';
import { invalid, overloaded } from '../../actors/errors.js';
import { isPlainObject, messageMembers, validateAppend, validateMetadata } from '../../actors/validate.js';
import { countPartsTokens } from '../../runtime/cpu-pool.js';
import { ReqOp } from '../../runtime/wire.js';
import { groupOf } from '../../runtime/placement.js';
import { limits } from '../../runtime/limits.js';
import type { ListQuery } from '../../runtime/listing.js';
import { mergeById } from '../../runtime/listing.js';
import type { ConversationRecord } from '../../actors/conversation.js';
import { metrics, roleLabel } from '../metrics.js';
import { log, logEnabled } from '../../runtime/log.js';

const enc = (o: unknown) => Buffer.from(JSON.stringify(o));

export async function putConversation(ctx: GatewayContext, req: HttpRequest, id: string): Promise<HttpResponse> {
  const body = parseJsonBody(req, {});
  if (!isPlainObject(body)) throw invalid('invalid_body', 'body must be a JSON object');
  const metadata = body.metadata === undefined || body.metadata === null ? null : validateMetadata(body.metadata);
  const cmd = encodeCommand({ op: Op.Put, id, nowMs: 0, metadataJson: metadata === null ? null : JSON.stringify(metadata) });
  return ctx.send(ReqOp.Propose, groupOf(id), cmd);
}

/** Routes under /v1/contexts serve the same conversations, but only those that are contexts. */
export type Surface = 'conversations' | 'contexts';
const flagsOf = (surface: Surface) => (surface === 'contexts' ? REQUIRE_CONTEXT : 0);

export function getRecord(ctx: GatewayContext, id: string, surface: Surface): Promise<HttpResponse> {
  return ctx.send(ReqOp.GetRecord, groupOf(id), enc({ id, context: surface === 'contexts' }));
}

export async function deleteConversation(ctx: GatewayContext, id: string, surface: Surface): Promise<HttpResponse> {
  const res = await ctx.send(ReqOp.Propose, groupOf(id), encodeCommand({ op: Op.Tombstone, id, nowMs: 0, flags: flagsOf(surface) }));
  if (res.status === 204) log('info', 'tombstone', 'conversation tombstoned', { conversation_id: id });
  return res;
}

export async function appendMessage(ctx: GatewayContext, req: HttpRequest, id: string, source: Surface): Promise<HttpResponse> {
  const started = performance.now();
  const headerKey = req.header('idempotency-key');
  const v = validateAppend(parseJsonBody(req), headerKey === '' ? null : headerKey);
  const m = v.message;
  const tokenCount = m.tokenCount ?? (await countPartsTokens(ctx.estimator, ctx.pool, m.parts, ctx.config.poolTextChars));
  if (tokenCount > 0xffffffff) throw invalid('invalid_message', 'message has too many tokens');
  const members = messageMembers(m);
  const digest =
    v.idempotencyKey === null
      ? ''
      : createHash('sha256').update(members).update(`|${m.tokenCount ?? ''}`).digest('base64url').slice(0, 22);
  const cmd = encodeCommand({
    op: Op.Append,
    id,
    nowMs: 0,
    ifVersion: v.ifVersion ?? -1,
    tokenCount,
    idemKey: v.idempotencyKey ?? '',
    digest,
    messageMembers: members,
    flags: flagsOf(source),
  });
  if (cmd.byteLength > limits.writeBatchBytesMax / 2) throw overloaded('message too large for one log entry');
  const res = await ctx.send(ReqOp.Propose, groupOf(id), cmd);
  if (res.status === 201) {
    if (logEnabled('debug')) {
      const ack = JSON.parse(Buffer.from(res.body).toString('utf8')) as { seq: number; duplicate?: boolean };
      log('debug', 'append', 'message appended', { conversation_id: id, seq: ack.seq, duplicate: ack.duplicate === true });
    }
    metrics.appendTotal.labels(roleLabel(m.role), source).inc();
    metrics.tokenCount.observe(tokenCount);
    metrics.appendLatency.observe(performance.now() - started);
  }
  return res;
}

export function tail(ctx: GatewayContext, req: HttpRequest, id: string, surface: Surface): Promise<HttpResponse> {
  const limit = queryLimit(req);
  const offset = queryInt(req, 'offset', 0, 0);
  return ctx.sendPage(ReqOp.Tail, groupOf(id), id, enc({ id, limit, offset, context: surface === 'contexts' }));
}

export function replay(ctx: GatewayContext, req: HttpRequest, id: string, surface: Surface): Promise<HttpResponse> {
  const limit = queryLimit(req);
  const from = queryInt(req, 'from', 0, 0);
  return ctx.sendPage(ReqOp.Replay, groupOf(id), id, enc({ id, from, limit, context: surface === 'contexts' }));
}

/** Listing pages by position in id order; `cursor` is the number of matches already seen. */
export async function listConversations(ctx: GatewayContext, req: HttpRequest): Promise<HttpResponse> {
  const limit = queryLimit(req);
  const cursorRaw = req.query.get('cursor');
  const offset = cursorRaw === null || cursorRaw === '' ? 0 : parseIntStrict(cursorRaw, 'cursor', 0);
  const tomb = req.query.get('tombstoned') ?? 'false';
  if (tomb !== 'true' && tomb !== 'false' && tomb !== 'all') {
    throw invalid('invalid_tombstoned', 'tombstoned must be true, false or all');
  }
  const filters: [string, string][] = [];
  for (const [k, v] of req.query) {
    if (!k.startsWith('metadata.')) continue;
    const key = k.slice('metadata.'.length);
    if (key === '') throw invalid('invalid_filter', 'metadata filter needs a key: metadata.<key>=<value>');
    filters.push([key, v]);
  }
  const q: ListQuery = { n: offset + limit + 1, tombstoned: tomb, filters };
  const replies = await ctx.broadcastRead(ReqOp.List, enc(q));
  const runs = replies.map((b) => JSON.parse(Buffer.from(b).toString('utf8')) as ConversationRecord[]);
  const all = mergeById(runs, q.n);
  const page = all.slice(offset, offset + limit);
  const more = all.length > offset + limit;
  return rawJson(200, JSON.stringify({ conversations: page, next_cursor: more ? offset + limit : null }));
}
