import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStorage, RaftLog, entryBytes } from '../../runtime/raft/log.js';
import { ErrCompacted, ErrUnavailable, RaftInvariantError } from '../../runtime/raft/errors.js';
import { decodeConfState, encodeConfState, singleServerChangeError } from '../../runtime/raft/conf.js';
import { EntryType, type Entry } from '../../runtime/raft/types.js';

const fail = (what: string): never => {
  throw new RaftInvariantError(what);
};

function ent(index: number, term: number, data = '', type = EntryType.Normal): Entry {
  return { index, term, type, data: new TextEncoder().encode(data) };
}

function terms(es: Entry[]): number[] {
  return es.map((e) => e.term);
}

test('MemoryStorage - append truncates a conflicting suffix and refuses gaps', () => {
  const s = new MemoryStorage();
  s.append([ent(1, 1), ent(2, 1), ent(3, 1)]);
  assert.equal(s.lastIndex(), 3);
  s.append([ent(2, 2)]);
  assert.equal(s.lastIndex(), 2);
  assert.equal(s.term(2), 2);
  assert.throws(() => s.append([ent(4, 2)]), RaftInvariantError);
  assert.throws(() => s.append([ent(3, 2), ent(5, 2)]), RaftInvariantError);
  s.append([ent(3, 2), ent(4, 3)]);
  assert.deepEqual(terms(s.entries(1, 5, Infinity)), [1, 2, 2, 3]);
});

test('MemoryStorage - entries() honours maxBytes but returns at least one entry', () => {
  const s = new MemoryStorage();
  s.append([ent(1, 1, 'aaaa'), ent(2, 1, 'bb'), ent(3, 1, 'c'), ent(4, 1)]);
  assert.equal(entryBytes(ent(1, 1, 'aaaa')), 28);
  assert.equal(s.entries(1, 5, 0).length, 1);
  assert.equal(s.entries(1, 5, 28).length, 1);
  assert.equal(s.entries(1, 5, 54).length, 2);
  assert.equal(s.entries(1, 5, 78).length, 2);
  assert.equal(s.entries(1, 5, 79).length, 3);
  assert.equal(s.entries(2, 2, 100).length, 0);
  assert.throws(() => s.entries(1, 6, 100), ErrUnavailable);
  const copy = s.entries(1, 3, 100);
  copy.length = 0;
  assert.equal(s.entries(1, 3, 100).length, 2, 'returns a copy');
});

test('MemoryStorage - compact keeps the term of the compaction point and derives its conf', () => {
  const s = new MemoryStorage({ conf: { voters: ['a', 'b', 'c'] } });
  s.append([ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 3)]);
  s.compact(2);
  assert.equal(s.firstIndex(), 3);
  assert.equal(s.term(2), 1);
  assert.deepEqual(s.snapshotMeta(), { index: 2, term: 1, conf: { voters: ['a', 'b', 'c'] } });
  assert.throws(() => s.term(1), ErrCompacted);
  assert.throws(() => s.entries(2, 4, 100), ErrCompacted);
  assert.throws(() => s.compact(2), ErrCompacted);
  assert.throws(() => s.compact(9), ErrUnavailable);

  s.append([ent(6, 3, '', EntryType.Normal)]);
  const conf = { type: EntryType.ConfChange, data: encodeConfState({ voters: ['a', 'b', 'c', 'd'] }) };
  s.append([{ index: 7, term: 3, ...conf }, ent(8, 3)]);
  s.compact(8);
  assert.deepEqual(s.snapshotMeta(), { index: 8, term: 3, conf: { voters: ['a', 'b', 'c', 'd'] } });
  assert.equal(s.lastIndex(), 8);
  assert.equal(s.firstIndex(), 9);
  s.append([ent(9, 4)]);
  assert.equal(s.term(9), 4);
});

test('MemoryStorage - applySnapshot replaces the log and the conf', () => {
  const s = new MemoryStorage({ conf: { voters: ['a'] } });
  s.append([ent(1, 1), ent(2, 1)]);
  s.applySnapshot({ index: 10, term: 3, conf: { voters: ['a', 'b'] } });
  assert.equal(s.firstIndex(), 11);
  assert.equal(s.lastIndex(), 10);
  assert.equal(s.term(10), 3);
  assert.deepEqual(s.initialState().conf, { voters: ['a', 'b'] });
  assert.throws(() => s.applySnapshot({ index: 10, term: 3, conf: { voters: [] } }), RaftInvariantError);
  s.append([ent(5, 1)]);
  assert.equal(s.lastIndex(), 10, 'entries below the snapshot are ignored');
  s.append([ent(11, 3)]);
  assert.equal(s.lastIndex(), 11);
});

test('MemoryStorage - loads a persisted state', () => {
  const s = new MemoryStorage({
    snapshot: { index: 5, term: 2, conf: { voters: ['a', 'b', 'c'] } },
    hardState: { term: 4, vote: 'b', commit: 7 },
    entries: [ent(6, 3), ent(7, 4)],
  });
  assert.equal(s.firstIndex(), 6);
  assert.equal(s.lastIndex(), 7);
  assert.deepEqual(s.initialState(), { hardState: { term: 4, vote: 'b', commit: 7 }, conf: { voters: ['a', 'b', 'c'] } });
});

test('conf - codec round trip and single-server rule', () => {
  for (const voters of [[], ['a'], ['n1', 'n2', 'ünïcode-☃'], Array.from({ length: 9 }, (_, i) => `node-${i}`)]) {
    assert.deepEqual(decodeConfState(encodeConfState({ voters })), { voters });
  }
  assert.throws(() => decodeConfState(new Uint8Array([1, 0, 1, 0, 5, 65])), RangeError);
  assert.throws(() => decodeConfState(new Uint8Array([2, 0, 0])), RangeError);
  assert.equal(singleServerChangeError(['a', 'b', 'c'], ['a', 'b', 'c', 'd']), '');
  assert.equal(singleServerChangeError(['a', 'b', 'c'], ['a', 'c']), '');
  assert.match(singleServerChangeError(['a', 'b', 'c'], ['a']), /single-server/);
  assert.match(singleServerChangeError(['a', 'b', 'c'], ['a', 'b', 'd']), /single-server/);
  assert.match(singleServerChangeError(['a', 'b', 'c'], ['a', 'b', 'c']), /single-server/);
  assert.match(singleServerChangeError(['a'], []), /empty/);
  assert.match(singleServerChangeError(['a', 'b'], ['a', 'b', 'b']), /duplicate/);
});

function logWith(stable: Entry[], committed = 0): { log: RaftLog; s: MemoryStorage } {
  const s = new MemoryStorage();
  s.append(stable);
  return { log: new RaftLog(s, committed, 0, fail), s };
}

test('RaftLog - maybeAppend: match, conflict truncation, commit bounded by the last new entry', () => {
  const { log } = logWith([ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 2)], 1);
  assert.equal(log.maybeAppend(6, 2, 9, [ent(7, 2)]), -1, 'gap');
  assert.equal(log.maybeAppend(3, 1, 9, [ent(4, 2)]), -1, 'term mismatch at prev');
  // Entries 3..4 match; 5 is a stale suffix beyond them: the commit must stop at 4.
  assert.equal(log.maybeAppend(2, 1, 9, [ent(3, 2), ent(4, 2)]), 4);
  assert.equal(log.committed, 4);
  assert.equal(log.lastIndex(), 5, 'matching entries do not truncate');
  assert.equal(log.maybeAppend(4, 2, 4, [ent(5, 3), ent(6, 3)]), 6);
  assert.deepEqual(terms(log.allEntries(1, 7)), [1, 1, 2, 2, 3, 3]);
  assert.throws(() => log.maybeAppend(1, 1, 4, [ent(2, 9)]), RaftInvariantError, 'never overwrite committed');
});

test('RaftLog - unstable entries are handed out once; stale stableTo after truncation is ignored', () => {
  const { log, s } = logWith([ent(1, 1), ent(2, 1)]);
  log.append([ent(3, 1), ent(4, 1)]);
  const out1 = log.takeUnstable();
  assert.deepEqual(out1.map((e) => e.index), [3, 4]);
  assert.equal(log.takeUnstable().length, 0);
  // Before the driver persisted out1, entry 4 is overwritten by a new leader.
  log.append([ent(4, 2), ent(5, 2)]);
  const out2 = log.takeUnstable();
  assert.deepEqual(out2.map((e) => [e.index, e.term]), [[4, 2], [5, 2]]);
  s.append(out1);
  log.stableTo(4, 1); // stale: entry 4 is now term 2
  assert.equal(log.stableIndex(), 2);
  s.append(out2);
  log.stableTo(5, 2);
  assert.equal(log.stableIndex(), 5);
  assert.equal(log.lastIndex(), 5);
  assert.deepEqual(terms(log.allEntries(1, 6)), [1, 1, 1, 2, 2]);
  assert.equal(log.hasUnstableToHandOut(), false);
});

test('RaftLog - slice spans storage and the unstable tail with a size limit', () => {
  const { log } = logWith([ent(1, 1, 'x'), ent(2, 1, 'x')]);
  log.append([ent(3, 1, 'x'), ent(4, 1, 'x')]);
  assert.deepEqual(log.slice(1, 5, Infinity).map((e) => e.index), [1, 2, 3, 4]);
  assert.deepEqual(log.slice(2, 4, 50).map((e) => e.index), [2, 3]);
  assert.deepEqual(log.slice(3, 5, 1).map((e) => e.index), [3]);
  assert.deepEqual(log.slice(1, 5, 75).map((e) => e.index), [1, 2, 3]);
  assert.throws(() => log.slice(1, 6, 10), RaftInvariantError);
});

test('RaftLog - committed entries are handed out only once persisted', () => {
  const { log, s } = logWith([ent(1, 1)]);
  log.append([ent(2, 1), ent(3, 1)]);
  log.commitTo(3);
  assert.deepEqual(log.nextCommitted(Infinity).map((e) => e.index), [1]);
  s.append(log.takeUnstable());
  log.stableTo(3, 1);
  assert.deepEqual(log.nextCommitted(Infinity).map((e) => e.index), [1, 2, 3]);
  log.appliedTo(3);
  assert.equal(log.hasNextCommitted(), false);
  assert.throws(() => log.appliedTo(2), RaftInvariantError);
  assert.throws(() => log.commitTo(4), RaftInvariantError);
});

test('RaftLog - findConflictByTerm and isUpToDate', () => {
  const { log } = logWith([ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 4)]);
  assert.equal(log.findConflictByTerm(5, 3), 4);
  assert.equal(log.findConflictByTerm(5, 1), 2);
  assert.equal(log.findConflictByTerm(5, 0), 0);
  assert.equal(log.findConflictByTerm(3, 9), 3);
  assert.equal(log.isUpToDate(5, 4), true);
  assert.equal(log.isUpToDate(4, 4), false);
  assert.equal(log.isUpToDate(1, 5), true);
  assert.equal(log.isUpToDate(9, 3), false);
});
