// Quiescence decisions of a replicated group (docs/DESIGN.md, "Cluster"),
// shared by the driver and the simulator's model of it. Pure.
import { QUIESCE_TYPE } from './raft/codec.js';
import type { RaftStatus } from './raft/core.js';
import { Role, type Message } from './raft/types.js';

/** Idle ticks a leader waits before it quiesces. */
export const QUIESCE_AFTER_TICKS = 3;

/** A leader with nothing pending and everything applied, whose followers have every entry. */
export function leaderIdle(st: RaftStatus, applied: number, pending: number): boolean {
  return (
    st.role === Role.Leader &&
    pending === 0 &&
    st.commit === st.lastIndex &&
    applied === st.lastIndex &&
    Object.values(st.progress ?? {}).every((p) => p.match === st.lastIndex)
  );
}

/** What a quiescing leader tells follower `to`: it stops heartbeating at (term, last index, commit). */
export function quiesceMessage(st: RaftStatus, to: string): Message {
  return {
    type: QUIESCE_TYPE,
    group: st.group,
    from: st.id,
    to,
    term: st.term,
    logTerm: 0,
    index: st.lastIndex,
    entries: [],
    commit: st.commit,
    reject: false,
    rejectHint: 0,
    snapshot: null,
    context: 0,
  };
}

/** Only a follower that has everything of this leader's term stops its timer. */
export function followerMayQuiesce(st: RaftStatus, m: Message): boolean {
  return st.role === Role.Follower && st.leader === m.from && st.term === m.term && st.lastIndex === m.index && st.commit === m.commit;
}
