import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProposalDroppedError, NotLeaderError } from '../../runtime/raft/core.js';
import { MessageType, Role } from '../../runtime/raft/types.js';
import { Net, enc } from './net.js';

const ABC = ['a', 'b', 'c'];

function propose(net: Net, data: string): number {
  const l = net.leader();
  assert.notEqual(l, '', 'a leader exists');
  const idx = net.core(l).propose(enc(data));
  net.process(l);
  return idx;
}

function followers(net: Net, leader: string): string[] {
  return net.ids().filter((id) => id !== leader);
}

/** A net with an elected leader whose empty first entry is applied (it may propose conf changes), and its followers. */
function settled(ids: string[], seed: number): { net: Net; l: string; fs: string[] } {
  const net = new Net(ids, { seed });
  const l = net.electLeader();
  net.run(1);
  return { net, l, fs: followers(net, l) };
}

test('cluster - replication: voters learn a new commit from the next tick, not from an empty App each', () => {
  // Periodic heartbeats every 10 ticks: a follower caught up after one tick was told by the owed-commit heartbeat.
  const net = new Net(ABC, { seed: 31, electionTicks: 20, heartbeatTicks: 10 });
  const l = net.electLeader();
  net.run(2);
  for (let round = 0; round < 10; round++) {
    const idx = propose(net, `c${round}`);
    net.deliverAll();
    assert.ok(net.core(l).status().commit >= idx, 'committed on the leader');
    for (const f of followers(net, l)) {
      assert.ok(net.node(f).storage.lastIndex() >= idx, `${f} has entry ${idx}`);
      assert.ok(net.core(f).status().commit < idx, `round ${round}: ${f} was not sent the commit of ${idx} on its own`);
    }
    net.tick(l);
    net.deliverAll();
    for (const f of followers(net, l)) assert.ok(net.core(f).status().commit >= idx, `round ${round}: ${f} learned commit ${idx} one tick later`);
  }
});

test('cluster - election: one leader, everyone follows it', () => {
  const net = new Net(ABC, { seed: 1 });
  const l = net.electLeader();
  net.run(3);
  const term = net.core(l).status().term;
  for (const id of ABC) {
    const s = net.core(id).status();
    assert.equal(s.leader, l, `${id} follows ${l}`);
    assert.equal(s.term, term);
    assert.equal(s.role, id === l ? Role.Leader : Role.Follower);
  }
  assert.equal([...net.leaders.values()].length, 1);
});

test('cluster - replication: proposals are applied in order on every node', () => {
  const net = new Net(ABC, { seed: 2 });
  const l = net.electLeader();
  for (let i = 0; i < 50; i++) propose(net, `v${i}`);
  net.deliverAll();
  net.run(2);
  const want = Array.from({ length: 50 }, (_, i) => `v${i}`);
  for (const id of ABC) assert.deepEqual(net.node(id).appliedData, want, `node ${id}`);
  const s = net.core(l).status();
  for (const id of ABC) assert.deepEqual(s.progress?.[id]?.match, s.lastIndex);
  net.checkLogMatching();
});

test('cluster - proposals of one turn travel as one App per follower', () => {
  const net = new Net(ABC, { seed: 3 });
  const l = net.electLeader();
  net.run(2);
  const core = net.core(l);
  for (let i = 0; i < 20; i++) core.propose(enc(`x${i}`));
  const rd = core.ready();
  const apps = rd.messages.filter((m) => m.type === MessageType.App);
  assert.equal(apps.length, 2);
  for (const m of apps) assert.equal(m.entries.length, 20);
  assert.deepEqual(rd.entries.length, 20);
  net.node(l).storage.append(rd.entries);
  core.advance(rd);
});

test('cluster - a follower\'s answer to App is released only with the persisted entries', () => {
  const net = new Net(ABC, { seed: 4 });
  const l = net.electLeader();
  net.run(2);
  net.core(l).propose(enc('p'));
  net.process(l);
  const app = net.queue.find((e) => e.msg.type === MessageType.App && e.msg.entries.length === 1);
  assert.ok(app);
  const f = net.core(app.msg.to);
  net.queue = [];
  f.step(app.msg);
  const rd = f.ready();
  assert.equal(rd.entries.length, 1);
  assert.equal(rd.mustSync, true);
  assert.ok(rd.messages.some((m) => m.type === MessageType.AppResp && m.index === rd.entries[0].index));
  net.node(app.msg.to).storage.append(rd.entries);
  f.advance(rd);
});

test('cluster - the leader counts its own entries only once persisted', () => {
  const net = new Net(ABC, { seed: 16 });
  const l = net.electLeader();
  net.run(2);
  const core = net.core(l);
  const commit0 = core.status().commit;
  core.propose(enc('x'));
  const rd = core.ready(); // the driver sends Apps in parallel with its own fsync
  const [f1, f2] = followers(net, l);
  const app1 = rd.messages.find((m) => m.type === MessageType.App && m.to === f1)!;
  const app2 = rd.messages.find((m) => m.type === MessageType.App && m.to === f2)!;
  const ack = (f: string, app: typeof app1) => {
    net.core(f).step(app);
    const frd = net.core(f).ready();
    net.node(f).storage.append(frd.entries);
    net.core(f).advance(frd);
    return frd.messages.find((m) => m.type === MessageType.AppResp)!;
  };
  core.step(ack(f1, app1));
  assert.equal(core.status().commit, commit0, 'leader (unpersisted) + one follower is not a quorum');
  net.node(l).storage.append(rd.entries);
  core.advance(rd);
  assert.equal(core.status().commit, commit0 + 1, 'committed once the leader persisted');
  core.step(ack(f2, app2));
  assert.equal(core.status().commit, commit0 + 1);
  net.queue = [];
});

test('cluster - two followers make a quorum before the leader\'s own fsync', () => {
  const net = new Net(ABC, { seed: 17 });
  const l = net.electLeader();
  net.run(2);
  const core = net.core(l);
  const commit0 = core.status().commit;
  core.propose(enc('x'));
  const rd = core.ready();
  for (const m of rd.messages.filter((x) => x.type === MessageType.App)) {
    net.core(m.to).step(m);
    const frd = net.core(m.to).ready();
    net.node(m.to).storage.append(frd.entries);
    net.core(m.to).advance(frd);
    for (const r of frd.messages) core.step(r);
  }
  assert.equal(core.status().commit, commit0 + 1);
  assert.equal(core.hasReady(), false, 'nothing new while the Ready is outstanding');
  net.node(l).storage.append(rd.entries);
  core.advance(rd);
  const rd2 = core.ready();
  assert.deepEqual(rd2.committedEntries.map((e) => e.index), [commit0 + 1]);
  core.advance(rd2);
});

test('cluster - leader crash: a new leader is elected and the old one catches up', () => {
  const net = new Net(ABC, { seed: 5 });
  const l1 = net.electLeader();
  propose(net, 'before');
  net.deliverAll();
  net.crash(l1);
  let l2 = '';
  for (let r = 0; r < 100 && (l2 === '' || l2 === l1); r++) {
    net.run(1);
    l2 = net.leader();
  }
  assert.notEqual(l2, '');
  assert.notEqual(l2, l1);
  propose(net, 'after');
  net.deliverAll();
  net.restart(l1);
  net.run(5);
  for (const id of ABC) assert.deepEqual(net.node(id).appliedData, ['before', 'after'], `node ${id}`);
  assert.ok(net.core(l2).status().term > 1);
  net.checkLogMatching();
});

test('cluster - log conflict: the old leader\'s uncommitted entries are overwritten', () => {
  const net = new Net(ABC, { seed: 6 });
  const old = net.electLeader();
  propose(net, 'c1');
  net.deliverAll();
  net.run(1);
  net.isolate(old);
  for (let i = 0; i < 30; i++) propose(net, `lost${i}`);
  const oldLast = net.core(old).status().lastIndex;
  let nl = '';
  for (let r = 0; r < 100; r++) {
    net.run(1);
    nl = followers(net, old).find((id) => net.node(id).core?.status().role === Role.Leader) ?? '';
    if (nl !== '') break;
  }
  assert.notEqual(nl, '', 'the majority side elects a leader');
  net.core(nl).propose(enc('kept'));
  net.process(nl);
  net.deliverAll();
  net.heal();
  net.run(10);
  for (const id of ABC) assert.deepEqual(net.node(id).appliedData, ['c1', 'kept'], `node ${id}`);
  const s = net.core(old).status();
  assert.equal(s.role, Role.Follower);
  assert.ok(s.lastIndex < oldLast, 'suffix truncated');
  net.checkLogMatching();
});

test('cluster - fast backtracking: a long divergent suffix is fixed in few round trips', () => {
  const net = new Net(ABC, { seed: 7, maxMsgBytes: 1 << 20 });
  const old = net.electLeader();
  net.run(1);
  net.isolate(old);
  for (let i = 0; i < 500; i++) net.core(old).propose(enc(`junk${i}`));
  net.process(old);
  let nl = '';
  for (let r = 0; r < 100 && nl === ''; r++) {
    net.run(1);
    nl = followers(net, old).find((id) => net.node(id).core?.status().role === Role.Leader) ?? '';
  }
  for (let i = 0; i < 5; i++) net.core(nl).propose(enc(`good${i}`));
  net.process(nl);
  net.deliverAll();
  net.heal();
  let rejects = 0;
  const origStep = net.core(nl).step.bind(net.core(nl));
  net.core(nl).step = (m) => {
    if (m.type === MessageType.AppResp && m.reject) rejects++;
    origStep(m);
  };
  net.run(10);
  assert.deepEqual(net.node(old).appliedData, ['good0', 'good1', 'good2', 'good3', 'good4']);
  assert.ok(rejects <= 3, `rejections: ${rejects}`);
});

test('cluster - check-quorum: a partitioned leader steps down', () => {
  const net = new Net(ABC, { seed: 8, checkQuorum: true });
  const l = net.electLeader();
  net.run(2);
  net.isolate(l);
  for (let i = 0; i < 25; i++) {
    net.tick(l);
    net.deliverAll();
  }
  const s = net.core(l).status();
  assert.equal(s.role, Role.Follower);
  assert.equal(s.leader, '');
  assert.throws(() => net.core(l).propose(enc('x')), NotLeaderError);
});

test('cluster - pre-vote: a partitioned node does not inflate its term or disrupt the leader', () => {
  const net = new Net(ABC, { seed: 9, preVote: true, checkQuorum: true });
  const l = net.electLeader();
  net.run(2);
  const term = net.core(l).status().term;
  const f = followers(net, l)[0];
  net.isolate(f);
  net.run(100);
  assert.equal(net.core(f).status().term, term, 'pre-vote never reaches a quorum');
  net.heal();
  net.run(10);
  assert.equal(net.leader(), l);
  assert.equal(net.core(l).status().term, term);
  assert.equal(net.core(f).status().leader, l);
});

test('cluster - without pre-vote the partitioned node inflates its term and disrupts on heal', () => {
  const net = new Net(ABC, { seed: 10, preVote: false, checkQuorum: false });
  const l = net.electLeader();
  net.run(2);
  const term = net.core(l).status().term;
  const f = followers(net, l)[0];
  net.isolate(f);
  net.run(100);
  assert.ok(net.core(f).status().term > term + 2);
  net.heal();
  net.run(30);
  assert.ok(net.core(net.electLeader()).status().term > term);
});

test('cluster - read index: leader confirms with a heartbeat quorum; followers forward', () => {
  const net = new Net(ABC, { seed: 11 });
  const l = net.electLeader();
  propose(net, 'w');
  net.deliverAll();
  net.run(1);
  const commit = net.core(l).status().commit;
  net.core(l).readIndex(7);
  net.process(l);
  assert.equal(net.node(l).readStates.length, 0, 'not before the heartbeat round');
  net.deliverAll();
  assert.deepEqual(net.node(l).readStates, [{ context: 7, index: commit }]);

  const f = followers(net, l)[0];
  net.core(f).readIndex(8);
  net.process(f);
  net.deliverAll();
  assert.deepEqual(net.node(f).readStates, [{ context: 8, index: commit }]);

  // A leader cut off from the quorum cannot confirm reads.
  net.isolate(l);
  net.core(l).readIndex(9);
  net.process(l);
  net.deliverAll();
  assert.equal(net.node(l).readStates.length, 1);
});

test('cluster - snapshot: a lagging follower is caught up by snapshot after compaction', () => {
  const net = new Net(ABC, { seed: 12 });
  const l = net.electLeader();
  net.run(1);
  const lag = followers(net, l)[0];
  net.crash(lag);
  for (let i = 0; i < 40; i++) propose(net, `s${i}`);
  net.deliverAll();
  net.run(1);
  for (const id of ABC) {
    const n = net.node(id);
    if (n.up) n.storage.compact(n.applied - 5);
  }
  assert.ok(net.node(l).storage.firstIndex() > 30);
  net.restart(lag);
  let snaps = 0;
  const core = net.core(lag);
  const orig = core.step.bind(core);
  core.step = (m) => {
    if (m.type === MessageType.Snap) snaps++;
    orig(m);
  };
  net.run(10);
  assert.ok(snaps >= 1, 'a snapshot was sent');
  const n = net.node(lag);
  assert.equal(n.storage.snapshotMeta().index, net.node(l).storage.snapshotMeta().index);
  assert.equal(n.applied, net.node(l).applied);
  propose(net, 'after-snap');
  net.deliverAll();
  net.run(1);
  assert.equal(n.appliedData.at(-1), 'after-snap');
  assert.equal(net.chainAt.get(n.applied), n.chainHead);
  net.checkLogMatching();
});

test('cluster - follower snapshot contract: Ready.snapshot first, AppResp only after advance', () => {
  const net = new Net(ABC, { seed: 18 });
  const l = net.electLeader();
  net.run(1);
  const f = followers(net, l)[0];
  net.crash(f);
  for (let i = 0; i < 10; i++) propose(net, `s${i}`);
  net.deliverAll();
  net.run(1);
  net.node(l).storage.compact(net.node(l).applied);
  net.restart(f);
  let snap = null;
  for (let r = 0; r < 50 && snap === null; r++) {
    net.tickAll();
    for (let k = 0; k < 1000 && snap === null && net.queue.length > 0; k++) {
      const head = net.queue[0];
      if (head.msg.type === MessageType.Snap && head.msg.to === f) snap = head.msg;
      else net.deliverOne();
    }
  }
  assert.ok(snap !== null && snap.snapshot !== null, 'leader sent a Snap');
  net.queue = [];
  const meta = snap.snapshot;
  assert.equal(meta.index, net.node(l).storage.snapshotMeta().index);
  const fc = net.core(f);
  fc.step(snap);
  const rd = fc.ready();
  assert.deepEqual(rd.snapshot, meta);
  assert.equal(rd.committedEntries.length, 0);
  assert.ok(!rd.messages.some((m) => m.type === MessageType.AppResp), 'no ack before the snapshot is installed');
  const fs = net.node(f).storage;
  if (rd.hardState) fs.setHardState(rd.hardState);
  fs.append(rd.entries);
  fs.applySnapshot(meta);
  fc.advance(rd);
  const s1 = fc.status();
  assert.equal(s1.commit, meta.index);
  assert.equal(s1.applied, meta.index);
  assert.equal(s1.lastIndex, meta.index);
  const rd2 = fc.ready();
  const ack = rd2.messages.find((m) => m.type === MessageType.AppResp);
  assert.ok(ack && !ack.reject && ack.index === meta.index && ack.to === l);
  fc.advance(rd2);
});

test('cluster - membership: add a voter, then remove the leader', () => {
  const net = new Net(ABC, { seed: 13 });
  const l = net.electLeader();
  propose(net, 'm0');
  net.deliverAll();
  net.run(1);
  net.addNode('d', { voters: ABC });
  const lc = net.core(l);
  assert.throws(() => lc.proposeConfChange({ voters: ['a', 'b', 'c', 'd', 'e'] }), ProposalDroppedError);
  assert.throws(() => lc.proposeConfChange({ voters: ['a'] }), ProposalDroppedError, 'two removals at once');
  assert.throws(() => lc.proposeConfChange({ voters: ['a', 'b', 'd'] }), ProposalDroppedError, 'swap is two changes');
  assert.throws(() => lc.proposeConfChange({ voters: ABC }), ProposalDroppedError, 'no change');
  net.run(1);
  const idx = lc.proposeConfChange({ voters: ['a', 'b', 'c', 'd'] });
  assert.throws(() => lc.proposeConfChange({ voters: ['a', 'b', 'c', 'd', 'e'] }), /pending/);
  assert.deepEqual([...lc.status().voters].sort(), ['a', 'b', 'c', 'd'], 'takes effect when appended, not when applied');
  net.process(l);
  net.run(5);
  for (const id of [...ABC, 'd']) {
    const s = net.core(id).status();
    assert.ok(s.applied >= idx);
    assert.deepEqual([...s.voters].sort(), ['a', 'b', 'c', 'd'], `conf on ${id}`);
  }
  assert.deepEqual(net.node('d').appliedData, ['m0']);
  assert.equal(Object.keys(net.core(l).status().progress ?? {}).length, 4);

  // Remove the leader: it keeps leading without counting itself until the
  // change is applied, then steps down; the rest elect among themselves.
  net.run(1);
  const rest = ['a', 'b', 'c', 'd'].filter((x) => x !== l);
  net.core(l).proposeConfChange({ voters: rest });
  assert.equal(net.core(l).status().role, Role.Leader, 'leads until the removal is applied');
  assert.deepEqual(net.core(l).status().voters, rest);
  const during = propose(net, 'm-during');
  net.process(l);
  net.run(3);
  assert.notEqual(net.core(l).status().role, Role.Leader);
  assert.ok(net.core(l).status().applied >= during, 'what it proposed meanwhile committed through the others');
  const nl = net.electLeader();
  assert.ok(rest.includes(nl));
  propose(net, 'm1');
  net.deliverAll();
  net.run(2);
  for (const id of rest) assert.deepEqual(net.node(id).appliedData, ['m0', 'm-during', 'm1'], `node ${id}`);
  for (let i = 0; i < 50; i++) net.run(1);
  assert.equal(net.leader(), nl, 'the removed node does not disrupt');
  net.checkLogMatching();
});

test('cluster - membership: a removed follower gets and applies the entry that removes it, then hears nothing', () => {
  const { net, l, fs: [f1, f2] } = settled(ABC, 25);
  const idx = net.core(l).proposeConfChange({ voters: [l, f1] });
  assert.deepEqual(Object.keys(net.core(l).status().progress ?? {}).sort(), [l, f1].sort(), 'only voters in status');
  net.process(l);
  net.run(3);
  assert.ok(net.node(f2).applied >= idx, 'the removed follower applied its removal');
  assert.deepEqual(net.core(f2).status().voters, [l, f1]);
  const sentToF2 = (): number => net.queue.filter((e) => e.msg.to === f2).length;
  net.tickAll();
  net.processAll();
  assert.equal(sentToF2(), 0, 'no more heartbeats to it once the removal is applied');
  net.deliverAll();
  for (let i = 0; i < 30; i++) net.run(1);
  assert.equal(net.leader(), l, 'the removed follower does not campaign');
});

test('cluster - membership: a removed leader does not count itself towards commit', () => {
  const { net, l, fs: [f1, f2] } = settled(ABC, 21);
  net.partition([l], [f2]);
  // New conf {f1, f2}: f1 alone is no majority of it, even with the leader's copy.
  const idx = net.core(l).proposeConfChange({ voters: [f1, f2] });
  net.process(l);
  net.deliverAll();
  net.run(2);
  assert.ok(net.node(f1).storage.lastIndex() >= idx, 'f1 has the entry');
  assert.ok(net.core(l).status().commit < idx, 'not committed by the leader and one of two remaining voters');
  net.heal();
  net.run(5);
  for (const id of [f1, f2]) assert.ok(net.core(id).status().applied >= idx, `applied on ${id}`);
  assert.notEqual(net.core(l).status().role, Role.Leader);
});

test('cluster - membership: a follower uses an appended conf at once and reverts when a new leader truncates it', () => {
  const ids = ['a', 'b', 'c', 'd', 'e'];
  const { net, l, fs: [f1, ...others] } = settled(ids, 22);
  const removed = others[0];
  net.partition([l, f1], others);
  const idx = net.core(l).proposeConfChange({ voters: ids.filter((x) => x !== removed) });
  net.process(l);
  net.deliverAll();
  assert.ok(net.node(f1).storage.lastIndex() >= idx);
  assert.deepEqual(net.core(f1).status().voters, ids.filter((x) => x !== removed), 'uncommitted conf in effect on the follower');
  // The majority side elects a leader that never saw the change.
  let nl = '';
  for (let r = 0; r < 200 && !others.includes(nl); r++) {
    net.run(1);
    nl = net.leader();
  }
  assert.ok(others.includes(nl), 'the majority side elected a leader');
  net.heal();
  propose(net, 'after');
  net.deliverAll();
  net.run(3);
  for (const id of [l, f1]) {
    assert.deepEqual([...net.core(id).status().voters].sort(), ids, `${id} fell back to the older conf`);
    assert.deepEqual(net.node(id).appliedData, ['after']);
  }
  net.checkLogMatching();
});

test('cluster - membership: a restarted replica uses the conf changes in its log after applied', () => {
  const { net, l, fs: [f1, f2] } = settled(ABC, 23);
  net.partition([l], [f2]);
  const conf = [l, f1].sort();
  const idx = net.core(l).proposeConfChange({ voters: conf });
  net.process(l);
  // Deliver until f1 holds the entry, then crash it before it learns the commit.
  for (let k = 0; k < 100 && net.node(f1).storage.lastIndex() < idx; k++) net.deliverOne();
  assert.ok(net.node(f1).storage.lastIndex() >= idx);
  assert.ok(net.node(f1).applied < idx, 'not applied yet');
  net.crash(f1);
  net.restart(f1);
  assert.deepEqual([...net.core(f1).status().voters].sort(), conf, 'boot takes the newest conf in the log');
  net.heal();
  net.run(5);
  assert.ok(net.node(f1).applied >= idx);
  assert.deepEqual([...net.core(f1).status().voters].sort(), conf);
});

test('cluster - membership: a new leader proposes no conf change before its first entry is applied', () => {
  const net = new Net(ABC, { seed: 24 });
  for (let r = 0; r < 1000 && net.leader() === ''; r++) if (!net.deliverOne()) net.tickAll();
  const l = net.leader();
  assert.notEqual(l, '');
  const next = followers(net, l).slice(1).concat(l);
  assert.throws(() => net.core(l).proposeConfChange({ voters: next }), /pending/);
  net.deliverAll();
  net.run(1);
  net.core(l).proposeConfChange({ voters: next });
});

test('cluster - leaderGone: followers told the leader is gone elect in their turns, well before the election timeout', () => {
  const net = new Net(ABC, { seed: 26 });
  const l = net.electLeader();
  propose(net, 'g0');
  net.deliverAll();
  net.run(1);
  const term = net.core(l).status().term;
  const [f1, f2] = followers(net, l);
  net.crash(l);
  net.core(f1).leaderGone(0);
  net.core(f2).leaderGone(2);
  assert.equal(net.core(f1).status().leader, '', 'forgotten');
  net.tickAll();
  net.deliverAll();
  assert.equal(net.leader(), f1, 'the first turn campaigns at the next tick and wins');
  assert.equal(net.core(f1).status().term, term + 1, 'one election, no split vote');
  propose(net, 'g1');
  net.deliverAll();
  net.run(1);
  assert.deepEqual(net.node(f2).appliedData, ['g0', 'g1']);
});

test('cluster - leaderGone: one follower wrong about a live leader does not depose it', () => {
  const { net, l, fs: [f1] } = settled(ABC, 27);
  const term = net.core(l).status().term;
  net.core(f1).leaderGone(0);
  net.tick(f1);
  net.deliverAll();
  for (let i = 0; i < 20; i++) net.run(1);
  assert.equal(net.leader(), l);
  assert.equal(net.core(l).status().term, term, 'the other follower, in its lease, refused the pre-vote');
  assert.equal(net.core(f1).status().leader, l, 'it follows the leader again');
});

test('cluster - leader transfer', () => {
  const net = new Net(ABC, { seed: 14 });
  const l = net.electLeader();
  propose(net, 't0');
  net.deliverAll();
  const to = followers(net, l)[1];
  net.core(l).transferLeader(to);
  net.process(l);
  assert.throws(() => net.core(l).propose(enc('x')), ProposalDroppedError);
  net.deliverAll();
  net.run(2);
  assert.equal(net.leader(), to);
  propose(net, 't1');
  net.deliverAll();
  net.run(1);
  for (const id of ABC) assert.deepEqual(net.node(id).appliedData, ['t0', 't1']);
});

test('cluster - messages with a stale term are answered so a stale leader steps down', () => {
  const net = new Net(ABC, { seed: 15 });
  const l = net.electLeader();
  net.run(1);
  const f = followers(net, l)[0];
  const term = net.core(f).status().term;
  const stale = {
    type: MessageType.App, group: 7, from: 'c', to: f, term: term - 1, logTerm: 0, index: 0, entries: [],
    commit: 0, reject: false, rejectHint: 0, snapshot: null, context: 0,
  } as const;
  net.core(f).step({ ...stale, entries: [] });
  const rd = net.core(f).ready();
  assert.deepEqual(rd.messages.map((m) => [m.type, m.term, m.to]), [[MessageType.AppResp, term, 'c']]);
  net.node(f).storage.append(rd.entries);
  net.core(f).advance(rd);
});
