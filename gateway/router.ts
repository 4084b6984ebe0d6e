// dispatch(): match the path, check method, id and auth, run the handler, and
// turn any error into its response in one place.
import { timingSafeEqual } from 'node:crypto';
import type { HttpRequest, HttpResponse } from './http.js';
import type { GatewayContext } from './context.js';
import { AppError, invalid } from '../actors/errors.js';
import { checkId } from '../actors/commands.js';
import { toHttp } from './http-errors.js';
import * as conv from './routes/conversations.js';
import * as contexts from './routes/contexts.js';
import * as health from './routes/health.js';

type Handler = (ctx: GatewayContext, req: HttpRequest, id: string) => Promise<HttpResponse> | HttpResponse;
type Methods = Partial<Record<string, Handler>>;

const OPS: Record<string, Methods> = {
  '/health/live': { GET: () => health.live() },
  '/health/ready': { GET: (ctx) => health.ready(ctx) },
  '/healthz': { GET: (ctx, req) => health.healthz(ctx, req) },
  '/metrics': { GET: () => health.metricsText() },
};

const COLLECTION: Methods = { GET: (ctx, req) => conv.listConversations(ctx, req) };

/** Routes under /v1/conversations/:id, keyed by the rest of the path. */
const CONVERSATION: Record<string, Methods> = {
  '': {
    GET: (ctx, _req, id) => conv.getRecord(ctx, id, 'conversations'),
    PUT: (ctx, req, id) => conv.putConversation(ctx, req, id),
    DELETE: (ctx, _req, id) => conv.deleteConversation(ctx, id, 'conversations'),
  },
  '/messages': {
    GET: (ctx, req, id) => conv.replay(ctx, req, id, 'conversations'),
    POST: (ctx, req, id) => conv.appendMessage(ctx, req, id, 'conversations'),
  },
  '/tail': { GET: (ctx, req, id) => conv.tail(ctx, req, id, 'conversations') },
};

/** Routes under /v1/contexts/:id (SPEC §4). */
const CONTEXT: Record<string, Methods> = {
  '': {
    GET: (ctx, _req, id) => conv.getRecord(ctx, id, 'contexts'),
    PUT: (ctx, req, id) => contexts.putContext(ctx, req, id),
    DELETE: (ctx, _req, id) => conv.deleteConversation(ctx, id, 'contexts'),
  },
  '/messages': {
    GET: (ctx, req, id) => conv.replay(ctx, req, id, 'contexts'),
    POST: (ctx, req, id) => conv.appendMessage(ctx, req, id, 'contexts'),
  },
  '/tail': { GET: (ctx, req, id) => conv.tail(ctx, req, id, 'contexts') },
  '/context': { GET: (ctx, req, id) => contexts.windowOf(ctx, req, id) },
  '/compact': { POST: (ctx, req, id) => contexts.compact(ctx, req, id) },
  '/metadata': { PATCH: (ctx, req, id) => contexts.patchMetadata(ctx, req, id) },
};

const BY_ID: Record<string, Record<string, Methods>> = { conversations: CONVERSATION, contexts: CONTEXT };

const notFoundRoute = () => new AppError('not_found', 'no such route');

function methodNotAllowed(methods: Methods): HttpResponse {
  const allow = Object.keys(methods).join(', ');
  return {
    status: 405,
    headers: { allow },
    body: JSON.stringify({ error: 'method_not_allowed', message: `allowed methods: ${allow}` }),
  };
}

function decodeId(raw: string): string {
  let id = raw;
  if (raw.includes('%')) {
    try {
      id = decodeURIComponent(raw);
    } catch {
      throw invalid('invalid_id', 'id is not valid percent-encoding');
    }
  }
  return checkId(id);
}

/** The token of an `Authorization: Bearer <token>` header, or ''. */
export function bearerToken(authorization: string): string {
  const m = /^Bearer\s+(.+)$/i.exec(authorization);
  return m ? m[1].trim() : '';
}

/** Whether `token` is the node's API key (always true when none is configured). */
export function tokenAccepted(ctx: GatewayContext, token: string): boolean {
  const key = ctx.config.apiKey;
  if (key === null) return true;
  const given = Buffer.from(token);
  const want = Buffer.from(key);
  return given.length === want.length && timingSafeEqual(given, want);
}

function authorize(ctx: GatewayContext, req: HttpRequest): void {
  if (!tokenAccepted(ctx, bearerToken(req.header('authorization')))) {
    throw new AppError('unauthorized', 'missing or invalid bearer token');
  }
}

function route(req: HttpRequest): { methods: Methods; id: string } {
  const ops = OPS[req.path];
  if (ops) return { methods: ops, id: '' };
  if (req.path === '/v1/conversations' || req.path === '/v1/conversations/') return { methods: COLLECTION, id: '' };
  const m = /^\/v1\/(conversations|contexts)\/([^/]*)(\/[a-z]+)?\/?$/.exec(req.path);
  if (m === null) throw notFoundRoute();
  const methods = BY_ID[m[1]][m[3] ?? ''];
  if (methods === undefined) throw notFoundRoute();
  return { methods, id: m[2] };
}

export async function dispatch(ctx: GatewayContext, req: HttpRequest): Promise<HttpResponse> {
  try {
    const { methods, id } = route(req);
    const handler = methods[req.method];
    if (handler === undefined) return methodNotAllowed(methods);
    if (req.path.startsWith('/v1/')) authorize(ctx, req);
    const checkedId = methods === COLLECTION || OPS[req.path] ? '' : decodeId(id);
    return await handler(ctx, req, checkedId);
  } catch (err) {
    return toHttp(err);
  }
}
