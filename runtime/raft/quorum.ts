// Majority quorum arithmetic. Pure functions, no allocation on the hot path.

import type { NodeId } from './types.js';

export const enum VoteResult {
  /** Neither a majority of grants nor of rejections yet. */
  Pending = 0,
  Lost = 1,
  Won = 2,
}

/** Smallest number of voters that forms a majority of `voterCount`. */
export function majority(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

// Scratch buffer reused by committedIndex(); the core is single-threaded.
let scratch = new Float64Array(8);

/**
 * The highest index acknowledged by a majority: the majority-th largest of
 * `matchIndexes` (one per voter). 0 for an empty voter set. Does not modify
 * its input.
 */
export function committedIndex(matchIndexes: readonly number[]): number {
  const n = matchIndexes.length;
  if (n === 0) return 0;
  if (scratch.length < n) scratch = new Float64Array(n * 2);
  // Insertion sort, descending: n is a replica count (3, 5), so this beats sort().
  for (let i = 0; i < n; i++) {
    const v = matchIndexes[i];
    let j = i - 1;
    while (j >= 0 && scratch[j] < v) {
      scratch[j + 1] = scratch[j];
      j--;
    }
    scratch[j + 1] = v;
  }
  return scratch[majority(n) - 1];
}

/**
 * Outcome of an election among `voters` given the votes received so far
 * (true = granted). Votes from non-voters are ignored.
 */
export function voteResult(voters: readonly NodeId[], votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  if (voters.length === 0) return VoteResult.Lost;
  let granted = 0;
  let rejected = 0;
  for (const v of voters) {
    const vote = votes.get(v);
    if (vote === true) granted++;
    else if (vote === false) rejected++;
  }
  const q = majority(voters.length);
  if (granted >= q) return VoteResult.Won;
  if (voters.length - rejected < q) return VoteResult.Lost;
  return VoteResult.Pending;
}
