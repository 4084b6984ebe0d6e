// The closed set of errors a request can end with. Thrown in actors and the
// runtime, they cross threads as {code, message} and are mapped to HTTP by
// gateway/http-errors.ts — the only place that knows status codes.

export type ErrorCode =
  | 'invalid'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'idempotency_conflict'
  | 'tombstoned'
  | 'too_large'
  | 'invalid_content_type'
  | 'overloaded'
  | 'unavailable'
  | 'timeout'
  | 'internal';

export class AppError extends Error {
  /** `detail` refines `invalid` into the wire code, e.g. `invalid_message`. */
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AppError';
  }
}

export const invalid = (detail: string, message: string) => new AppError('invalid', message, detail);
export const notFound = (what: string) => new AppError('not_found', `${what} not found`);
export const tombstoned = (id: string) =>
  new AppError('tombstoned', `conversation ${id} is tombstoned; it is read-only`);
export const conflict = (expected: number, current: number) =>
  new AppError('conflict', `version mismatch: if_version is ${expected}, current version is ${current}`);
export const overloaded = (what: string) => new AppError('overloaded', `too many requests in flight: ${what}`);
export const unavailable = (message: string) => new AppError('unavailable', message);
/** This replica does not lead the group: nothing happened, the request may go to the leader. */
export const NOT_LEADER = 'not_leader';
export const notLeader = (message: string) => new AppError('unavailable', message, NOT_LEADER);

/** Wire form used between threads and nodes. */
export interface WireError {
  code: ErrorCode;
  detail?: string;
  message: string;
}

export function toWire(err: unknown): WireError {
  if (err instanceof AppError) return { code: err.code, detail: err.detail, message: err.message };
  return { code: 'internal', message: 'internal error' };
}
