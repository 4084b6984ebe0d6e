import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RaftCore, NotLeaderError, RaftInvariantError, type RaftConfig } from '../../runtime/raft/core.js';
import { MemoryStorage } from '../../runtime/raft/log.js';
import { EntryType, Role, type Ready } from '../../runtime/raft/types.js';
import { enc, prng } from './net.js';

function config(storage: MemoryStorage, applied = 0): RaftConfig {
  return {
    id: 'n1',
    group: 1,
    storage,
    applied,
    electionTicks: 10,
    heartbeatTicks: 1,
    random: prng(1),
    preVote: true,
    checkQuorum: true,
    maxMsgBytes: 1 << 20,
    maxInflight: 64,
    maxApplyBytes: 1 << 20,
  };
}

/** The driver loop for one node: persist, (no peers to send to), apply, advance. */
function drain(core: RaftCore, storage: MemoryStorage, applied: string[]): Ready[] {
  const seen: Ready[] = [];
  while (core.hasReady()) {
    const rd = core.ready();
    seen.push(rd);
    if (rd.hardState) storage.setHardState(rd.hardState);
    storage.append(rd.entries);
    for (const e of rd.committedEntries) if (e.type === EntryType.Normal && e.data.byteLength > 0) applied.push(new TextDecoder().decode(e.data));
    core.advance(rd);
  }
  return seen;
}

test('single voter - campaign makes it leader at once', () => {
  const storage = new MemoryStorage({ conf: { voters: ['n1'] } });
  const core = new RaftCore(config(storage));
  assert.equal(core.status().role, Role.Follower);
  assert.throws(() => core.propose(enc('x')), NotLeaderError);
  core.campaign();
  const s = core.status();
  assert.equal(s.role, Role.Leader);
  assert.equal(s.term, 1);
  assert.equal(s.leader, 'n1');
  assert.equal(s.lastIndex, 1, 'empty entry of the new term');
});

test('single voter - propose, ready(entries, mustSync), advance, then committedEntries', () => {
  const storage = new MemoryStorage({ conf: { voters: ['n1'] } });
  const core = new RaftCore(config(storage));
  core.campaign();
  const applied: string[] = [];
  drain(core, storage, applied);
  assert.equal(core.status().commit, 1);
  assert.equal(core.hasReady(), false);

  const idx = core.propose(enc('hello'));
  assert.equal(idx, 2);
  assert.equal(core.hasReady(), true);
  const rd = core.ready();
  assert.throws(() => core.ready(), RaftInvariantError, 'ready twice without advance');
  assert.equal(core.hasReady(), false, 'no Ready while one is outstanding');
  assert.deepEqual(rd.entries.map((e) => e.index), [2]);
  assert.equal(rd.mustSync, true);
  assert.equal(rd.committedEntries.length, 0, 'not committed before it is persisted');
  assert.equal(rd.messages.length, 0);
  storage.append(rd.entries);
  core.advance(rd);
  assert.equal(core.hasReady(), true);
  const rd2 = core.ready();
  assert.deepEqual(rd2.committedEntries.map((e) => e.index), [2]);
  assert.equal(rd2.entries.length, 0, 'entries are never handed out twice');
  assert.equal(rd2.mustSync, false, 'commit-only hard state needs no fsync');
  assert.equal(rd2.hardState?.commit, 2);
  storage.setHardState(rd2.hardState!);
  core.advance(rd2);
  assert.equal(core.status().applied, 2);
  assert.equal(core.hasReady(), false);
});

test('single voter - a batch of proposals is one Ready and commits together', () => {
  const storage = new MemoryStorage({ conf: { voters: ['n1'] } });
  const core = new RaftCore(config(storage));
  core.campaign();
  const applied: string[] = [];
  drain(core, storage, applied);
  for (let i = 0; i < 100; i++) core.propose(enc(`v${i}`));
  const rds = drain(core, storage, applied);
  assert.equal(rds.length, 2);
  assert.equal(rds[0].entries.length, 100);
  assert.equal(rds[1].committedEntries.length, 100);
  assert.equal(applied.length, 100);
  assert.equal(applied[99], 'v99');
});

test('single voter - committedEntries are bounded by maxApplyBytes', () => {
  const storage = new MemoryStorage({ conf: { voters: ['n1'] } });
  const core = new RaftCore({ ...config(storage), maxApplyBytes: 10 * (24 + 2) });
  core.campaign();
  drain(core, storage, []);
  for (let i = 0; i < 35; i++) core.propose(enc(`${i % 10}${i % 10}`));
  const applied: string[] = [];
  const rds = drain(core, storage, applied);
  const sizes = rds.map((r) => r.committedEntries.length).filter((n) => n > 0);
  assert.deepEqual(sizes, [10, 10, 10, 5]);
  assert.equal(applied.length, 35);
});

test('single voter - restart from storage keeps log and term, re-applies after applied', () => {
  const storage = new MemoryStorage({ conf: { voters: ['n1'] } });
  let core = new RaftCore(config(storage));
  core.campaign();
  const applied: string[] = [];
  drain(core, storage, applied);
  core.propose(enc('a'));
  core.propose(enc('b'));
  drain(core, storage, applied);
  const before = core.status();
  assert.equal(before.commit, 3);

  // Restart: the state machine had applied up to index 2 only.
  core = new RaftCore(config(storage, 2));
  const s = core.status();
  assert.equal(s.term, before.term);
  assert.equal(s.lastIndex, 3);
  assert.equal(s.commit, 3);
  assert.equal(s.role, Role.Follower);
  const replay: string[] = [];
  drain(core, storage, replay);
  assert.deepEqual(replay, ['b'], 'entries after `applied` are handed out again');

  core.campaign();
  assert.equal(core.status().role, Role.Leader);
  assert.equal(core.status().term, before.term + 1);
  drain(core, storage, replay);
  assert.equal(core.propose(enc('c')), 5);
  drain(core, storage, replay);
  assert.deepEqual(replay, ['b', 'c']);
  assert.equal(storage.initialState().hardState.term, before.term + 1);
});

test('single voter - read index answers once an entry of the term is committed', () => {
  const storage = new MemoryStorage({ conf: { voters: ['n1'] } });
  const core = new RaftCore(config(storage));
  core.campaign();
  core.readIndex(42);
  const rd = core.ready();
  assert.equal(rd.readStates.length, 0, 'empty entry of the term not yet committed');
  storage.append(rd.entries);
  core.advance(rd);
  const rd2 = core.ready();
  assert.deepEqual(rd2.readStates, [{ context: 42, index: 1 }]);
  core.advance(rd2);
  core.readIndex(43);
  const rd3 = core.ready();
  assert.deepEqual(rd3.readStates, [{ context: 43, index: 1 }]);
  core.advance(rd3);
});

test('single voter - advance with a foreign Ready throws RaftInvariantError with context', () => {
  const storage = new MemoryStorage({ conf: { voters: ['n1'] } });
  const core = new RaftCore(config(storage));
  core.campaign();
  const rd = core.ready();
  assert.throws(
    () => core.advance({ ...rd }),
    (err: unknown) => err instanceof RaftInvariantError && /group 1 node n1 term 1/.test(err.message) && /commit 0/.test(err.message),
  );
});

test('single voter - idle ticks allocate no Ready', () => {
  const storage = new MemoryStorage({ conf: { voters: ['n1'] } });
  const core = new RaftCore(config(storage));
  core.campaign();
  drain(core, storage, []);
  for (let i = 0; i < 1000; i++) {
    core.tick();
    assert.equal(core.hasReady(), false);
  }
  assert.equal(core.status().role, Role.Leader, 'check-quorum keeps a single voter leading');
});
