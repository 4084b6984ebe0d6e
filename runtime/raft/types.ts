// Raft data types shared by the pure core, the driver and the transports.
// Pure module: no node:* imports, no clocks, no randomness.

export type NodeId = string;
export type GroupId = number;

export const enum EntryType {
  Normal = 0,
  /** data = encoded ConfState: the new voter set (single-server changes only). */
  ConfChange = 1,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  data: Uint8Array;
}

export interface HardState {
  term: number;
  /** Empty string when no vote was cast in `term`. */
  vote: NodeId;
  commit: number;
}

export interface ConfState {
  voters: NodeId[];
}

export interface SnapshotMeta {
  index: number;
  term: number;
  conf: ConfState;
}

export const enum MessageType {
  App = 1,
  AppResp = 2,
  Vote = 3,
  VoteResp = 4,
  PreVote = 5,
  PreVoteResp = 6,
  Heartbeat = 7,
  HeartbeatResp = 8,
  Snap = 9,
  /** follower -> leader: ask for a read index (forwarded ReadIndex). */
  ReadIndex = 10,
  ReadIndexResp = 11,
  TimeoutNow = 12,
}

export interface Message {
  type: MessageType;
  group: GroupId;
  from: NodeId;
  to: NodeId;
  term: number;
  /** App: term of the entry at `index` (the entry preceding `entries`). */
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /**
   * AppResp reject: the follower's last index, to speed up backtracking.
   * (Precisely: the largest index <= min(rejected index, follower's last
   * index) whose term is <= the leader's `logTerm`; the response's `logTerm`
   * is the follower's term there, 0 when unknown.)
   */
  rejectHint: number;
  /** Snap: the snapshot metadata; the state itself is streamed by the driver. */
  snapshot: SnapshotMeta | null;
  /**
   * ReadIndex / ReadIndexResp: the caller's read token. Heartbeat /
   * HeartbeatResp: the leader's read round being confirmed. Vote: 1 when the
   * campaign was forced by TimeoutNow (leader transfer; ignores leases).
   */
  context: number;
}

export const enum Role {
  Follower = 0,
  PreCandidate = 1,
  Candidate = 2,
  Leader = 3,
}

export interface SoftState {
  leader: NodeId;
  role: Role;
}

export interface ReadState {
  /** The caller's token passed to readIndex(). */
  context: number;
  /** Reads with this token may be served once applied >= index. */
  index: number;
}

/**
 * Everything the driver must do for one group this turn, in order:
 *  1. persist `hardState` (if set) and `entries` (append, truncating any
 *     conflicting suffix) — synced when `mustSync`;
 *  2. send `messages` (a leader's App/Heartbeat/Snap may go before the fsync;
 *     everything else only after it);
 *  3. install `snapshot` (if set) before applying anything;
 *  4. apply `committedEntries` in order;
 *  5. serve `readStates` once applied >= index;
 *  6. call advance(ready).
 */
export interface Ready {
  softState: SoftState | null;
  hardState: HardState | null;
  entries: Entry[];
  snapshot: SnapshotMeta | null;
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
  mustSync: boolean;
}
