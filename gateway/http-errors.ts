// The one place that maps the closed error set to HTTP (STYLE: hono's
// single error handler). Unknown errors become a logged 500.
import { AppError, type WireError } from '../actors/errors.js';
import type { HttpResponse } from './http.js';
import { log } from '../runtime/log.js';

const STATUS: Record<AppError['code'], number> = {
  invalid: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  idempotency_conflict: 409,
  tombstoned: 410,
  too_large: 413,
  invalid_content_type: 415,
  overloaded: 429,
  unavailable: 503,
  timeout: 503,
  internal: 500,
};

const WIRE_CODE: Partial<Record<AppError['code'], string>> = {
  overloaded: 'rate_limited',
  timeout: 'unavailable',
};

export function errorResponse(code: AppError['code'], detail: string | undefined, message: string): HttpResponse {
  const status = STATUS[code] ?? 500;
  const error = detail ?? WIRE_CODE[code] ?? code;
  const headers: Record<string, string> = {};
  if (status === 503 || status === 429) headers['retry-after'] = '1';
  return { status, headers, body: JSON.stringify({ error, message }) };
}

export function toHttp(err: unknown): HttpResponse {
  if (err instanceof AppError) return errorResponse(err.code, err.detail, err.message);
  log('error', 'internal_error', 'unhandled error in request', {
    err: err instanceof Error ? err.message : String(err),
    stack: err instanceof Error ? err.stack : undefined,
  });
  return errorResponse('internal', undefined, 'internal error');
}

export function wireToHttp(w: WireError): HttpResponse {
  if (w.code === 'internal') log('error', 'internal_error', 'worker reported an internal error', { message: w.message });
  return errorResponse(w.code, w.detail, w.message);
}
