// Validation of request bodies (SPEC §2, §3). Pure: takes parsed JSON, returns
// typed values or throws AppError('invalid', …). Nothing is stored until a
// body passes here.
import { invalid } from './errors.js';

export interface ValidMessage {
  role: string;
  parts: Record<string, unknown>[];
  metadata: Record<string, unknown>;
  /** Client-supplied count, or null to estimate. */
  tokenCount: number | null;
}

export interface ValidAppend {
  message: ValidMessage;
  ifVersion: number | null;
  idempotencyKey: string | null;
}

const DEPTH_MAX = 64;
const ROLE_CHARS_MAX = 256;
const PARTS_MAX = 10_000;

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Iterative so hostile nesting cannot blow the stack. */
export function checkDepth(value: unknown, field: string): void {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (d > DEPTH_MAX) throw invalid(`invalid_${field}`, `${field} is nested deeper than ${DEPTH_MAX} levels`);
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof child === 'object' && child !== null) stack.push([child, d + 1]);
    }
  }
}

export function nonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function validateMetadata(v: unknown, field = 'metadata'): Record<string, unknown> {
  if (!isPlainObject(v)) throw invalid(`invalid_${field}`, `${field} must be a JSON object`);
  checkDepth(v, field);
  return v;
}

export function validateMessage(v: unknown, field = 'message'): ValidMessage {
  if (!isPlainObject(v)) throw invalid('invalid_message', `${field} must be an object`);
  const { role, parts, metadata, token_count } = v;
  if (typeof role !== 'string' || role.length === 0 || role.length > ROLE_CHARS_MAX) {
    throw invalid('invalid_message', `${field}.role must be a non-empty string of at most ${ROLE_CHARS_MAX} chars`);
  }
  if (!Array.isArray(parts) || parts.length === 0) {
    throw invalid('invalid_message', `${field}.parts must be a non-empty array`);
  }
  if (parts.length > PARTS_MAX) throw invalid('invalid_message', `${field}.parts has more than ${PARTS_MAX} items`);
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (!isPlainObject(p) || typeof p.type !== 'string' || p.type.length === 0) {
      throw invalid('invalid_message', `${field}.parts[${i}] must be an object with a non-empty string "type"`);
    }
  }
  checkDepth(parts, 'message');
  let md: Record<string, unknown> = {};
  if (metadata !== undefined && metadata !== null) md = validateMetadata(metadata, 'message');
  let tokenCount: number | null = null;
  if (token_count !== undefined && token_count !== null) {
    if (!nonNegativeInt(token_count) || token_count > 0xffffffff) {
      throw invalid('invalid_message', `${field}.token_count must be a non-negative integer`);
    }
    tokenCount = token_count;
  }
  return { role, parts: parts as Record<string, unknown>[], metadata: md, tokenCount };
}

export function validateIdempotencyKey(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.length < 1 || v.length > 256) {
    throw invalid('invalid_idempotency_key', `${where} must be a string of 1-256 characters`);
  }
  return v;
}

export function validateAppend(body: unknown, headerKey: string | null): ValidAppend {
  if (!isPlainObject(body)) throw invalid('invalid_body', 'body must be a JSON object');
  const message = validateMessage(body.message);
  let ifVersion: number | null = null;
  if (body.if_version !== undefined && body.if_version !== null) {
    if (!nonNegativeInt(body.if_version)) throw invalid('invalid_if_version', 'if_version must be a non-negative integer');
    ifVersion = body.if_version;
  }
  let key: string | null = null;
  if (body.idempotency_key !== undefined && body.idempotency_key !== null) {
    key = validateIdempotencyKey(body.idempotency_key, 'idempotency_key');
  }
  if (headerKey !== null) {
    const hk = validateIdempotencyKey(headerKey, 'Idempotency-Key header');
    if (key !== null && key !== hk) {
      throw invalid('invalid_idempotency_key', 'idempotency_key in the body and the Idempotency-Key header differ');
    }
    key = hk;
  }
  return { message, ifVersion, idempotencyKey: key };
}

/** `"role":…,"parts":…,"metadata":…` — the stored message members, without braces. */
export function messageMembers(m: ValidMessage): string {
  const json = JSON.stringify({ role: m.role, parts: m.parts, metadata: m.metadata });
  return json.slice(1, -1);
}
