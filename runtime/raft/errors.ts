// Errors of the Raft core. Pure module.
//
// Two families, kept apart on purpose:
//  - programmer errors: RaftInvariantError. The core (or the storage under
//    it) is in a state the protocol forbids; the driver must stop the group
//    and let a supervisor restart it from disk. Never caught inside the core.
//  - operating errors: NotLeaderError, ProposalDroppedError, ErrCompacted,
//    ErrUnavailable. Expected in normal operation; callers handle them.

import type { GroupId, NodeId } from './types.js';

/** A Raft safety or API-usage invariant was violated. Stop the group. */
export class RaftInvariantError extends Error {
  override readonly name = 'RaftInvariantError';
  constructor(message: string) {
    super(message);
  }
}

/** propose()/readIndex() on a node that cannot serve it. `leader` is '' when unknown. */
export class NotLeaderError extends Error {
  override readonly name = 'NotLeaderError';
  readonly group: GroupId;
  readonly leader: NodeId;
  constructor(group: GroupId, leader: NodeId) {
    super(`group ${group}: not leader (leader: ${leader === '' ? 'unknown' : leader})`);
    this.group = group;
    this.leader = leader;
  }
}

/**
 * The leader refused a proposal it could otherwise accept: a leader transfer
 * is in flight, a conf change is already pending, the conf change is not a
 * single-server change, or too many reads are queued.
 */
export class ProposalDroppedError extends Error {
  override readonly name = 'ProposalDroppedError';
  readonly group: GroupId;
  readonly reason: string;
  constructor(group: GroupId, reason: string) {
    super(`group ${group}: proposal dropped: ${reason}`);
    this.group = group;
    this.reason = reason;
  }
}

/** Storage: the requested index is at or below the compaction point. */
export class ErrCompacted extends Error {
  override readonly name = 'ErrCompacted';
  constructor(index: number, firstIndex: number) {
    super(`index ${index} is compacted (first index ${firstIndex})`);
  }
}

/** Storage: the requested index is past the last index. */
export class ErrUnavailable extends Error {
  override readonly name = 'ErrUnavailable';
  constructor(index: number, lastIndex: number) {
    super(`index ${index} is unavailable (last index ${lastIndex})`);
  }
}
