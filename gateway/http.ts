// Transport-neutral request/response shapes: routes are plain functions over
// these, testable without uWS (gateway/server.ts is the only uWS import).
import { AppError, invalid } from '../actors/errors.js';
import { limits } from '../runtime/limits.js';

export interface HttpRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  header(name: string): string;
  /** Raw body bytes (empty when none was sent). */
  body: Buffer;
  clientIp(): string;
}

export interface HttpResponse {
  status: number;
  headers?: Record<string, string>;
  body: string | Uint8Array;
}

export const json = (status: number, body: unknown): HttpResponse => ({ status, body: JSON.stringify(body) });
export const rawJson = (status: number, body: string | Uint8Array): HttpResponse => ({ status, body });

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Content type rule of SPEC §3: application/json, charset (if any) utf-8. */
export function checkJsonContentType(req: HttpRequest): void {
  const ct = req.header('content-type').toLowerCase();
  const [type, ...params] = ct.split(';').map((s) => s.trim());
  const charsetOk = params.every((p) => !p.startsWith('charset=') || /^charset="?utf-8"?$/.test(p));
  if (type !== 'application/json' || !charsetOk) {
    throw new AppError('invalid_content_type', 'request body must be sent as Content-Type: application/json');
  }
}

/** Parses the body as UTF-8 JSON; `whenEmpty` stands in for a missing body. */
export function parseJsonBody(req: HttpRequest, whenEmpty?: unknown): unknown {
  if (req.body.length === 0) {
    if (whenEmpty !== undefined) return whenEmpty;
    throw invalid('invalid_body', 'a JSON body is required');
  }
  checkJsonContentType(req);
  let text: string;
  try {
    text = utf8.decode(req.body);
  } catch {
    throw invalid('invalid_body', 'body is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw invalid('invalid_json', 'body is not valid JSON');
  }
}

/** Decimal integer query parameter within [min, max]; anything else is 400. */
export function queryInt(req: HttpRequest, name: string, dflt: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = req.query.get(name);
  if (raw === null) return dflt;
  return parseIntStrict(raw, name, min, max);
}

export function parseIntStrict(raw: string, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^[0-9]{1,16}$/.test(raw)) throw invalid(`invalid_${name}`, `${name} must be a decimal integer >= ${min}`);
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw invalid(`invalid_${name}`, `${name} must be between ${min} and ${max}`);
  }
  return n;
}

export const queryLimit = (req: HttpRequest) => queryInt(req, 'limit', 100, 1, limits.queryLimitMax);
