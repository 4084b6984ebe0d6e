import { test } from 'node:test';
import assert from 'node:assert/strict';
import { committedIndex, majority, voteResult, VoteResult } from '../../runtime/raft/quorum.js';

test('quorum - majority sizes', () => {
  const table: Array<[number, number]> = [[0, 1], [1, 1], [2, 2], [3, 2], [4, 3], [5, 3], [6, 4], [7, 4]];
  for (const [n, q] of table) assert.equal(majority(n), q, `majority(${n})`);
});

test('quorum - committedIndex is the majority-th largest match', () => {
  const table: Array<[number[], number]> = [
    [[], 0],
    [[5], 5],
    [[5, 3], 3],
    [[3, 5], 3],
    [[1, 2, 3], 2],
    [[3, 2, 1], 2],
    [[7, 7, 0], 7],
    [[0, 0, 9], 0],
    [[4, 4, 4], 4],
    [[1, 2, 3, 4], 2],
    [[10, 9, 1, 1], 1],
    [[10, 9, 8, 1], 8],
    [[5, 1, 4, 2, 3], 3],
    [[100, 100, 100, 0, 0], 100],
    [[100, 100, 0, 0, 0], 0],
    [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 6],
  ];
  for (const [matches, want] of table) {
    const copy = matches.slice();
    assert.equal(committedIndex(matches), want, `committedIndex(${JSON.stringify(matches)})`);
    assert.deepEqual(matches, copy, 'input not modified');
  }
});

test('quorum - voteResult tables', () => {
  const v3 = ['a', 'b', 'c'];
  const v4 = ['a', 'b', 'c', 'd'];
  const m = (o: Record<string, boolean>): Map<string, boolean> => new Map(Object.entries(o));
  const table: Array<[string[], Record<string, boolean>, VoteResult]> = [
    [['a'], {}, VoteResult.Pending],
    [['a'], { a: true }, VoteResult.Won],
    [['a'], { a: false }, VoteResult.Lost],
    [v3, {}, VoteResult.Pending],
    [v3, { a: true }, VoteResult.Pending],
    [v3, { a: true, b: true }, VoteResult.Won],
    [v3, { a: true, b: false }, VoteResult.Pending],
    [v3, { a: true, b: false, c: false }, VoteResult.Lost],
    [v3, { b: false, c: false }, VoteResult.Lost],
    [v3, { a: true, x: true, y: true }, VoteResult.Pending],
    [v4, { a: true, b: true }, VoteResult.Pending],
    [v4, { a: true, b: true, c: true }, VoteResult.Won],
    [v4, { a: true, b: false, c: false }, VoteResult.Lost],
    [v4, { a: true, b: true, c: false, d: false }, VoteResult.Lost],
    [[], { a: true }, VoteResult.Lost],
  ];
  for (const [voters, votes, want] of table) {
    assert.equal(voteResult(voters, m(votes)), want, `${voters.join('')} ${JSON.stringify(votes)}`);
  }
});
