// Public surface of the Raft core. Pure module.

export { RaftCore, CAMPAIGN_TRANSFER_CONTEXT, READS_PENDING_MAX } from './core.js';
export type { RaftConfig, RaftStatus, ProgressStatus } from './core.js';
export { MemoryStorage, RaftLog, entryBytes, ENTRY_OVERHEAD_BYTES } from './log.js';
export type { RaftStorage, MemoryStorageInit } from './log.js';
export { committedIndex, voteResult, majority, VoteResult } from './quorum.js';
export { encodeConfState, decodeConfState, singleServerChangeError } from './conf.js';
export { RaftInvariantError, NotLeaderError, ProposalDroppedError, ErrCompacted, ErrUnavailable } from './errors.js';
export { ProgressState } from './progress.js';
export * from './types.js';
