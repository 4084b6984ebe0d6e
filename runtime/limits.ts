// Every bound in one place (STYLE: "limit everything"). Relationships between
// them are asserted at load so a bad edit fails at boot, not at 3 a.m.
import { assert } from './assert.js';

export const limits = {
  groupCount: 256,
  conversationIdBytesMax: 128,
  /** Idempotency keys remembered per conversation (SPEC: >= 10,000 or 24 h). */
  idempotencyKeysPerConversation: 10_000,
  idempotencyKeyRetentionMs: 24 * 3600 * 1000,
  queryLimitMax: 1000,
  /** Requests waiting for an answer from the workers, per node. */
  requestsInFlightMax: 65_536,
  /** Deadline for one request inside the node; past it the client gets 503. */
  requestDeadlineMs: 10_000,
  /** Bytes proposed per partition between two WAL writes; past it proposals get 429. */
  writeBatchBytesMax: 16 * 1024 * 1024,
  /** Default WAL segment file size (FLEETLM_WAL_SEGMENT_BYTES). */
  walSegmentBytes: 32 * 1024 * 1024,
  /** Room kept in every WAL segment for the hard states it starts with. */
  walSegmentReserveBytes: 64 * 1024,
  /** Committed entries handed to apply per group per turn. */
  applyBytesMax: 4 * 1024 * 1024,
  /** Conversation actors kept in memory per worker (LRU beyond). */
  actorsCachedMax: 200_000,
  /** Recent message records kept in memory per worker for tail reads. */
  messageCacheBytesMax: 16 * 1024 * 1024,
  /** skip_parts window results remembered per worker (runtime/window-memo.ts). */
  windowMemoBytesMax: 8 * 1024 * 1024,
  /** Default FLEETLM_POOL_TEXT_CHARS: longer texts are counted on the CPU pool (bench/tokens.ts). */
  poolTextCharsDefault: 2048,
};

assert(limits.queryLimitMax >= 100, 'default page size must fit the max');
assert(limits.writeBatchBytesMax >= 8 * 1024 * 1024 + 4096, 'one max-size body (FLEETLM_MAX_BODY_BYTES <= 8 MiB) must fit a write batch');
assert(limits.groupCount * 128 <= limits.walSegmentReserveBytes, 'every hard state fits the segment reserve');
assert(limits.applyBytesMax >= 2 * 1024 * 1024, 'one max-size entry must fit an apply turn');
assert(limits.conversationIdBytesMax < 256, 'ids are length-prefixed with one byte');

/** Bytes one WAL write may carry: it must fit one segment next to the hard states. */
export function walBatchBytesMax(segmentBytes: number): number {
  return Math.min(limits.writeBatchBytesMax, segmentBytes - limits.walSegmentReserveBytes);
}
