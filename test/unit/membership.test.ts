// Cluster membership: replica ids, the founding decision and the coordinator's planner.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type Announcement,
  campaignDelayTicks,
  type ConfStep,
  type Founding,
  type GroupView,
  coordinatorOf,
  decideFounding,
  foundingVoters,
  incarnationOf,
  isFoundingIncarnation,
  isNewerReplica,
  isPreferredLeader,
  needsSerial,
  nodeOf,
  planLeaderMoves,
  planSteps,
  removedBy,
  replicaIdOf,
  withSerial,
} from '../../runtime/membership.js';
import { singleServerChangeError } from '../../runtime/raft/conf.js';
import { rankedNodes, replicasOf } from '../../runtime/placement.js';
import { mulberry32 } from '../../runtime/prng.js';

const GROUPS = 256;
const F3: Founding = [
  { name: 'n1', incarnation: 'a' },
  { name: 'n2', incarnation: 'b' },
  { name: 'n3', incarnation: 'c' },
];
const F4: Founding = [...F3, { name: 'n4', incarnation: 'd' }];

const foundingGroups = (founding: Founding, n = GROUPS): GroupView[] =>
  Array.from({ length: n }, (_, group) => ({ group, voters: foundingVoters(group, founding) }));

const liveOf = (founding: Founding, overrides: Record<string, string | null> = {}): Map<string, string> => {
  const live = new Map<string, string>();
  for (const m of founding) {
    const o = overrides[m.name];
    if (o === null) continue;
    live.set(m.name, o ?? m.incarnation);
  }
  return live;
};

const ann = (name: string, incarnation: string, founding: Founding | null = null): Announcement => ({ name, incarnation, founding });

test('membership - replica ids: node and incarnation round trip; founding ids take the founding incarnation', () => {
  const id = replicaIdOf('n2', 'x7');
  assert.equal(id, 'n2#x7');
  assert.equal(nodeOf(id), 'n2');
  assert.equal(incarnationOf(id, F3), 'x7');
  // A later replica's incarnation is its own, even for a founding node.
  assert.equal(incarnationOf(replicaIdOf('n1', 'zz'), F3), 'zz');
  assert.equal(nodeOf(replicaIdOf('node-with-dashes', 'i')), 'node-with-dashes');
  // Founding replicas are the plain node name.
  for (const m of F3) {
    assert.equal(nodeOf(m.name), m.name);
    assert.equal(incarnationOf(m.name, F3), m.incarnation);
  }
  assert.equal(incarnationOf('n9', F3), null);
  assert.equal(incarnationOf('n4', F3), null);
  assert.equal(incarnationOf('n4', F4), 'd');
  assert.equal(incarnationOf('n1', []), null);
});

test('membership - serials order replicas by the term, then the index of the change that added them', () => {
  const base = replicaIdOf('n2', 'x7');
  assert.ok(needsSerial(base));
  const a = withSerial(base, 2, 54);
  assert.equal(a, 'n2#x7.2.54');
  assert.ok(!needsSerial(a));
  assert.equal(nodeOf(a), 'n2');
  assert.equal(incarnationOf(a, F3), 'x7');
  // A later leader overwrote the add at 54 and added the node again at 52: that replica is the newer one.
  const b = withSerial(base, 3, 52);
  assert.ok(isNewerReplica(b, a));
  assert.ok(!isNewerReplica(a, b));
  assert.ok(isNewerReplica(withSerial(base, 2, 60), a), 'same term: the later index');
  assert.ok(!isNewerReplica(a, a), 'not newer than itself');
  assert.ok(isNewerReplica(a, 'n2'), 'newer than the founding replica');
  assert.ok(!isNewerReplica('n2', a));
  assert.ok(isNewerReplica(a, null), 'anything is newer than none');
  // A conf change without the replica removes it only after the change that added it.
  assert.ok(!removedBy(a, 40), 'an older change a new replica applies while catching up');
  assert.ok(!removedBy(a, 54));
  assert.ok(removedBy(a, 55));
  assert.ok(removedBy('n2', 1), 'a founding replica: any change');
  // Indexes past 2^32 compare as numbers.
  assert.ok(isNewerReplica(withSerial(base, 3, 2 ** 40), withSerial(base, 3, 2 ** 40 - 1)));
});

test('membership - campaignDelayTicks: the voters still up take distinct turns in the placement\'s rank order', () => {
  const voters = ['n1', 'n2#x.3.9', 'n3', 'n4#y.1.2'];
  const down = new Set(['n1']);
  for (let group = 0; group < 16; group++) {
    const up = voters.filter((v) => v !== 'n1');
    const delays = up.map((v) => campaignDelayTicks(group, v, voters, down));
    assert.equal(new Set(delays).size, delays.length, 'no two at once');
    assert.equal(Math.min(...delays), 0, 'the first goes at once');
    const byTurn = [...up].sort((a, b) => campaignDelayTicks(group, a, voters, down) - campaignDelayTicks(group, b, voters, down));
    assert.deepEqual(byTurn.map(nodeOf), rankedNodes(group, up.map(nodeOf)), 'in rank order');
    // Every node computes the same turns, whatever order it holds the voters in.
    const shuffled = [...voters].reverse();
    for (const v of up) assert.equal(campaignDelayTicks(group, v, shuffled, down), campaignDelayTicks(group, v, voters, down));
    // With everyone up, the first turn is the preferred leader's.
    for (const v of voters) assert.equal(campaignDelayTicks(group, v, voters, new Set()) === 0, isPreferredLeader(group, v, voters));
  }
});

test('membership - decideFounding waits for every listed node, then founds with all of them, sorted', () => {
  const listed = ['n3', 'n1', 'n2'];
  const heard = new Map<string, Announcement>();
  assert.equal(decideFounding(listed, heard), null);
  heard.set('n2', ann('n2', 'i2'));
  assert.equal(decideFounding(listed, heard), null);
  heard.set('n9', ann('n9', 'i9')); // not listed: does not count, is not founded with
  heard.set('n3', ann('n3', 'i3'));
  assert.equal(decideFounding(listed, heard), null);
  heard.set('n1', ann('n1', 'i1'));
  const expected: Founding = [
    { name: 'n1', incarnation: 'i1' },
    { name: 'n2', incarnation: 'i2' },
    { name: 'n3', incarnation: 'i3' },
  ];
  assert.deepEqual(decideFounding(listed, heard), expected);
  // The caller's list is not reordered.
  assert.deepEqual(listed, ['n3', 'n1', 'n2']);
});

test('membership - decideFounding: every node computes the same record whatever order it heard things in', () => {
  const anns = ['n4', 'n2', 'n10', 'n1', 'n3'].map((n) => ann(n, `inc-${n}`));
  const rnd = mulberry32(7);
  let first: Founding | null = null;
  for (let trial = 0; trial < 20; trial++) {
    const order = [...anns];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const listed = [...order.map((a) => a.name)].reverse();
    const heard = new Map(order.map((a) => [a.name, a] as const));
    const f = decideFounding(listed, heard);
    assert.ok(f !== null);
    assert.deepEqual(
      f.map((m) => m.name),
      ['n1', 'n10', 'n2', 'n3', 'n4'],
    );
    for (const m of f) assert.equal(m.incarnation, `inc-${m.name}`);
    if (first === null) first = f;
    else assert.deepEqual(f, first);
  }
  // Two explicit nodes, opposite orders.
  const a = new Map([
    ['n1', ann('n1', 'x')],
    ['n2', ann('n2', 'y')],
  ]);
  const b = new Map([
    ['n2', ann('n2', 'y')],
    ['n1', ann('n1', 'x')],
  ]);
  assert.deepEqual(decideFounding(['n1', 'n2'], a), decideFounding(['n2', 'n1'], b));
});

test('membership - decideFounding: a heard founding record wins at once', () => {
  const record: Founding = [
    { name: 'n1', incarnation: 'old1' },
    { name: 'n2', incarnation: 'old2' },
  ];
  // Not every listed node heard, but one announcement carries a record.
  const partial = new Map([
    ['n3', ann('n3', 'fresh3')],
    ['n1', ann('n1', 'old1', record)],
  ]);
  assert.deepEqual(decideFounding(['n1', 'n2', 'n3'], partial), record);
  // Everyone heard, none without a record but one: the record still wins over founding anew.
  const all = new Map([
    ['n1', ann('n1', 'new1')],
    ['n2', ann('n2', 'new2')],
    ['n3', ann('n3', 'new3', record)],
  ]);
  assert.deepEqual(decideFounding(['n1', 'n2', 'n3'], all), record);
  // Even a node that is not listed can bring it.
  const outsider = new Map([['n7', ann('n7', 'q', record)]]);
  assert.deepEqual(decideFounding(['n1', 'n2', 'n3'], outsider), record);
});

test('membership - isFoundingIncarnation needs the same name and incarnation', () => {
  assert.equal(isFoundingIncarnation('n1', 'a', F3), true);
  assert.equal(isFoundingIncarnation('n3', 'c', F3), true);
  assert.equal(isFoundingIncarnation('n1', 'b', F3), false); // n2's incarnation
  assert.equal(isFoundingIncarnation('n3', 'z', F3), false);
  assert.equal(isFoundingIncarnation('n4', 'd', F3), false);
  assert.equal(isFoundingIncarnation('n1', 'a', []), false);
});

test('membership - planSteps: a founded cluster with every node at its founding incarnation needs nothing', () => {
  assert.deepEqual(planSteps(foundingGroups(F3), liveOf(F3), F3, 1000), []);
  assert.deepEqual(planSteps(foundingGroups(F4), liveOf(F4), F4, 1000), []);
  assert.deepEqual(planSteps([], liveOf(F3), F3, 1000), []);
});

test('membership - planSteps: a voter of a lost incarnation is removed, one step per group', () => {
  const groups = foundingGroups(F3);
  const steps = planSteps(groups, liveOf(F3, { n3: 'z' }), F3, 1000);
  assert.equal(steps.length, GROUPS);
  assert.deepEqual(
    steps.map((s) => s.group),
    groups.map((g) => g.group),
  );
  for (const s of steps) {
    assert.deepEqual(s.voters, ['n1', 'n2']);
    assert.match(s.why, /n3/);
  }

  // With four founding nodes only the groups placed on n4 have anything to change.
  const g4 = foundingGroups(F4);
  const withN4 = g4.filter((g) => g.voters.includes('n4'));
  assert.ok(withN4.length > 0 && withN4.length < GROUPS, `${withN4.length} groups on n4`);
  const steps4 = planSteps(g4, liveOf(F4, { n4: 'z' }), F4, 1000);
  assert.deepEqual(
    steps4.map((s) => s.group),
    withN4.map((g) => g.group),
  );
  for (const s of steps4) {
    const before = g4[s.group].voters;
    assert.deepEqual(
      s.voters,
      before.filter((v) => v !== 'n4'),
    );
    assert.equal(s.voters.length, 2);
    assert.match(s.why, /n4/);
  }
});

test('membership - planSteps: after the removal the node is added back under its new incarnation', () => {
  const live = liveOf(F3, { n3: 'z' });
  const removed = foundingGroups(F3).map((g) => ({ group: g.group, voters: g.voters.filter((v) => v !== 'n3') }));
  const steps = planSteps(removed, live, F3, 1000);
  assert.equal(steps.length, GROUPS);
  for (const s of steps) {
    assert.deepEqual(s.voters, ['n1', 'n2', 'n3#z']);
    assert.match(s.why, /n3/);
  }
  // Up to date: nothing more to do.
  const added = removed.map((g) => ({ group: g.group, voters: [...g.voters, 'n3#z'] }));
  assert.deepEqual(planSteps(added, live, F3, 1000), []);
  // The node loses its data again: its `n3#z` replicas go, then `n3#y` comes.
  const live2 = liveOf(F3, { n3: 'y' });
  const again = planSteps(added, live2, F3, 1000);
  assert.equal(again.length, GROUPS);
  for (const s of again) {
    assert.deepEqual(s.voters, ['n1', 'n2']);
    assert.match(s.why, /n3#z/);
  }
  const readd = planSteps(
    again.map((s) => ({ group: s.group, voters: s.voters })),
    live2,
    F3,
    1000,
  );
  assert.equal(readd.length, GROUPS);
  for (const s of readd) assert.deepEqual(s.voters, ['n1', 'n2', 'n3#y']);
  // A node that came back at its founding incarnation after all is not a stale voter.
  assert.deepEqual(planSteps(foundingGroups(F3), liveOf(F3, { n3: 'c' }), F3, 1000), []);
});

test('membership - planSteps: a node that is not live is neither removed nor added', () => {
  const down = liveOf(F3, { n3: null });
  assert.deepEqual(planSteps(foundingGroups(F3), down, F3, 1000), []);
  const missing = foundingGroups(F3).map((g) => ({ group: g.group, voters: g.voters.filter((v) => v !== 'n3') }));
  assert.deepEqual(planSteps(missing, down, F3, 1000), []);
  const later = foundingGroups(F3).map((g) => ({ group: g.group, voters: ['n1', 'n2', 'n3#z'] }));
  assert.deepEqual(planSteps(later, down, F3, 1000), []);
  // Nobody live at all.
  assert.deepEqual(planSteps(missing, new Map(), F3, 1000), []);
  // Another node down does not stop the live stale one from being handled.
  const steps = planSteps(foundingGroups(F3), liveOf(F3, { n1: null, n3: 'z' }), F3, 1000);
  assert.equal(steps.length, GROUPS);
  for (const s of steps) assert.deepEqual(s.voters, ['n1', 'n2']);
});

test('membership - planSteps: a live voter outside the placement is replaced add-first, a down one remove-first', () => {
  const live = new Map([...liveOf(F3), ['n4', 'q']]);
  // n4 is up but not a member: n3 (placed, missing) joins first, the group never runs short.
  assert.deepEqual(
    planSteps([{ group: 0, voters: ['n1', 'n2', 'n4#q'] }], live, F3, 10).map((s) => s.voters),
    [['n1', 'n2', 'n4#q', 'n3#c']],
  );
  // Then, over its placement size, the replica that is no longer placed there goes.
  const over = planSteps([{ group: 0, voters: ['n1', 'n2', 'n4#q', 'n3#c'] }], live, F3, 10);
  assert.deepEqual(over.map((s) => s.voters), [['n1', 'n2', 'n3#c']]);
  assert.match(over[0].why, /n4#q is no longer placed here/);
  // n4 down and not a member: it is removed first, then n3 added.
  const down = liveOf(F3);
  assert.deepEqual(planSteps([{ group: 0, voters: ['n1', 'n2', 'n4#q'] }], down, F3, 10).map((s) => s.voters), [['n1', 'n2']]);
  assert.deepEqual(planSteps([{ group: 0, voters: ['n1', 'n2'] }], down, F3, 10).map((s) => s.voters), [['n1', 'n2', 'n3#c']]);
  // With a seat free, the missing placement node is added even while another voter is down.
  assert.deepEqual(
    planSteps([{ group: 0, voters: ['n1', 'n4#q'] }], live, F3, 10).map((s) => s.voters),
    [['n1', 'n4#q', 'n2#b']],
  );
  // A full group with a down voter (still a member) gets no new voter on top: it waits.
  assert.deepEqual(planSteps([{ group: 0, voters: ['n1', 'n2', 'n3'] }], liveOf(F3, { n3: null }), F3, 10), []);
});

test('membership - planSteps: a node joining the members takes over the groups placed on it, one step at a time', () => {
  const members = ['n1', 'n2', 'n3', 'n4'];
  const live = new Map([...liveOf(F3), ['n4', 'q']]);
  let groups = foundingGroups(F3);
  const moved = groups.filter((g) => replicasOf(g.group, members).includes('n4')).length;
  assert.ok(moved > 32 && moved < 256, `${moved} groups placed on n4`);
  let rounds = 0;
  let steps: ConfStep[];
  while ((steps = planSteps(groups, live, F3, 1000, members)).length > 0) {
    assert.ok(++rounds <= 4, 'did not converge');
    const byGroup = new Map(steps.map((s) => [s.group, s]));
    for (const s of steps) assert.equal(singleServerChangeError(groups[s.group].voters, s.voters), '', s.why);
    groups = groups.map((g) => (byGroup.has(g.group) ? { group: g.group, voters: byGroup.get(g.group)!.voters } : g));
    // Never fewer voters than the placement: a live replica leaves only after its replacement joined.
    for (const g of groups) assert.ok(g.voters.length >= 3, `group ${g.group} down to ${g.voters.join(',')}`);
  }
  assert.equal(rounds, 2); // add n4, then drop the replica it replaces
  for (const g of groups) assert.deepEqual(g.voters.map(nodeOf).sort(), replicasOf(g.group, members), `group ${g.group}`);
});

test('membership - planSteps: max caps the steps of a round', () => {
  const groups = foundingGroups(F3);
  const live = liveOf(F3, { n3: 'z' });
  for (const max of [0, 1, 5, GROUPS - 1]) {
    const steps = planSteps(groups, live, F3, max);
    assert.equal(steps.length, max);
    assert.deepEqual(
      steps.map((s) => s.group),
      groups.slice(0, max).map((g) => g.group),
    );
  }
  assert.equal(planSteps(groups, live, F3, GROUPS + 10).length, GROUPS);
  const removed = groups.map((g) => ({ group: g.group, voters: ['n1', 'n2'] }));
  assert.equal(planSteps(removed, live, F3, 3).length, 3);
});

test('membership - planSteps: no removal that would leave less than a majority of the old voters', () => {
  const live = liveOf(F3, { n3: 'z' });
  // Two voters, one stale: the survivor alone is not a majority of two.
  assert.deepEqual(planSteps([{ group: 0, voters: ['n1', 'n3'] }], live, F3, 10), []);
  assert.deepEqual(planSteps([{ group: 0, voters: ['n3', 'n1'] }], live, F3, 10), []);
  // Nor is the node's new replica added while the stale one is still a voter.
  assert.deepEqual(planSteps([{ group: 0, voters: ['n1', 'n3'] }], live, F3, 10), []);
  // A lone stale voter is never removed (it would leave no voters).
  assert.deepEqual(planSteps([{ group: 0, voters: ['n3'] }], live, F3, 10), []);
  // Three voters: two remain, a majority of three.
  assert.deepEqual(planSteps([{ group: 0, voters: ['n1', 'n2', 'n3'] }], live, F3, 10), [
    { group: 0, voters: ['n1', 'n2'], why: 'n3 belongs to a lost incarnation' },
  ]);
  // Two stale voters in one group: only one is removed this round.
  const two = planSteps([{ group: 0, voters: ['n1', 'n2', 'n3'] }], liveOf(F3, { n2: 'y', n3: 'z' }), F3, 10);
  assert.equal(two.length, 1);
  assert.equal(two[0].voters.length, 2);
  assert.ok(two[0].voters.includes('n1'));
});

test('membership - planSteps: every step is one single-server change (random clusters and groups)', () => {
  const rnd = mulberry32(0xc0ffee);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const incs = ['a', 'b', 'c', 'x', 'y', 'z'];
  let removals = 0;
  let adds = 0;
  for (let round = 0; round < 300; round++) {
    const size = 1 + Math.floor(rnd() * 5);
    const founding: Founding = Array.from({ length: size }, (_, i) => ({ name: `n${i + 1}`, incarnation: pick(incs) }));
    const live = new Map<string, string>();
    for (const m of founding) {
      const r = rnd();
      if (r < 0.15) continue; // down
      live.set(m.name, r < 0.6 ? m.incarnation : pick(incs));
    }
    const groups: GroupView[] = [];
    for (let group = 0; group < 32; group++) {
      const want = foundingVoters(group, founding);
      const voters: string[] = [];
      for (const n of want) {
        const r = rnd();
        if (r < 0.2) continue; // not a voter (removed earlier)
        const id = r < 0.6 ? n : replicaIdOf(n, pick(incs));
        if (!voters.includes(id)) voters.push(id);
      }
      if (voters.length === 0) voters.push(want[0]);
      groups.push({ group, voters });
    }
    const max = rnd() < 0.2 ? Math.floor(rnd() * 8) : 1000;
    const steps: ConfStep[] = planSteps(groups, live, founding, max);
    assert.ok(steps.length <= max);
    const seen = new Set<number>();
    for (const s of steps) {
      assert.ok(!seen.has(s.group), `two steps for group ${s.group}`);
      seen.add(s.group);
      const before = groups.find((g) => g.group === s.group);
      assert.ok(before !== undefined);
      assert.equal(singleServerChangeError(before.voters, s.voters), '', `${before.voters} -> ${s.voters}`);
      if (s.voters.length < before.voters.length) {
        removals++;
        const gone = before.voters.find((v) => !s.voters.includes(v))!;
        const current = live.get(nodeOf(gone));
        // Only a voter of a live node's lost incarnation goes, and a majority of the old set remains.
        assert.ok(current !== undefined, `${gone} removed though its node is down`);
        assert.notEqual(incarnationOf(gone, founding), current);
        assert.ok(s.voters.length >= Math.floor(before.voters.length / 2) + 1);
      } else {
        adds++;
        const added = s.voters.find((v) => !before.voters.includes(v))!;
        const node = nodeOf(added);
        // Only the current incarnation of a live node the group is placed on, into a group with no stale voter.
        assert.equal(added, replicaIdOf(node, live.get(node)!));
        assert.ok(foundingVoters(s.group, founding).includes(node));
        assert.ok(!before.voters.some((v) => nodeOf(v) === node));
        assert.ok(s.voters.length <= foundingVoters(s.group, founding).length);
        for (const v of before.voters) {
          const cur = live.get(nodeOf(v));
          assert.ok(cur === undefined || incarnationOf(v, founding) === cur, `${v} is stale but ${added} was added`);
        }
      }
    }
  }
  assert.ok(removals > 100 && adds > 100, `${removals} removals, ${adds} adds`);
});

test('membership - planSteps: applying the steps round by round converges on the live incarnations', () => {
  const rnd = mulberry32(42);
  for (let trial = 0; trial < 30; trial++) {
    const size = 3 + Math.floor(rnd() * 4);
    const founding: Founding = Array.from({ length: size }, (_, i) => ({ name: `n${i + 1}`, incarnation: `f${i}` }));
    const lost = founding[Math.floor(rnd() * size)].name;
    const live = liveOf(founding, { [lost]: `new${trial}` });
    const byGroup = new Map(foundingGroups(founding, 64).map((g) => [g.group, g.voters]));
    let rounds = 0;
    for (;;) {
      const steps = planSteps(
        [...byGroup].map(([group, voters]) => ({ group, voters })),
        live,
        founding,
        7,
      );
      if (steps.length === 0) break;
      for (const s of steps) byGroup.set(s.group, s.voters);
      assert.ok(++rounds < 100, 'does not converge');
    }
    for (const [group, voters] of byGroup) {
      const expected = foundingVoters(group, founding).map((n) => (n === lost ? replicaIdOf(n, `new${trial}`) : n));
      assert.deepEqual([...voters].sort(), [...expected].sort());
    }
  }
});

test('membership - planLeaderMoves: leaders spread evenly over the members, and only moves that change something', () => {
  const members = F3.map((m) => m.name);
  const live = liveOf(F3);
  // Every group led from n2 (as after elections that all went one way).
  const views = foundingGroups(F3, 256).map((g) => ({ ...g, leaderNode: 'n2' }));
  const moves = planLeaderMoves(views, live, members, F3, 1000);
  const led = new Map(members.map((n) => [n, 0]));
  const after = new Map(views.map((v) => [v.group, v.leaderNode]));
  for (const m of moves) {
    assert.ok(views[m.group].voters.includes(m.to), 'to one of its voters');
    assert.notEqual(nodeOf(m.to), 'n2', 'never to where it is');
    after.set(m.group, nodeOf(m.to));
  }
  for (const n of after.values()) led.set(n, led.get(n)! + 1);
  for (const [n, c] of led) assert.ok(c >= 256 / 3 - 25 && c <= 256 / 3 + 25, `${n} leads ${c} of 256`);
  // Applying the moves leaves nothing to do; max caps a round.
  const settled = views.map((v) => ({ ...v, leaderNode: after.get(v.group)! }));
  assert.deepEqual(planLeaderMoves(settled, live, members, F3, 1000), []);
  assert.equal(planLeaderMoves(views, live, members, F3, 5).length, 5);
  // The preferred node is the first ranked one that is live and hosts a voter of its current incarnation.
  const g = settled.find((v) => rankedNodes(v.group, members)[0] === 'n1')!;
  const down = liveOf(F3, { n1: null });
  const [m] = planLeaderMoves([{ ...g, leaderNode: 'n1' }], down, members, F3, 10);
  assert.equal(nodeOf(m.to), rankedNodes(g.group, members)[1], 'n1 down: the next ranked');
  const wiped = liveOf(F3, { n1: 'new' });
  assert.equal(planLeaderMoves([{ ...g, leaderNode: 'n1' }], wiped, members, F3, 10)[0]?.to, m.to, 'n1 back without its data: its old replica is not preferred');
  // A fresh group's first campaign comes from the replica the planner would move leadership to.
  for (const v of views.slice(0, 32)) {
    const preferred = v.voters.filter((r) => isPreferredLeader(v.group, r, v.voters));
    assert.equal(preferred.length, 1, `group ${v.group}: one preferred replica`);
    const move = planLeaderMoves([{ ...v, leaderNode: 'elsewhere' }], live, members, F3, 1)[0];
    assert.equal(move.to, preferred[0]);
  }
});

test('membership - coordinatorOf is the lowest name, null without nodes', () => {
  assert.equal(coordinatorOf(['n2', 'n3', 'n1']), 'n1');
  assert.equal(coordinatorOf(new Set(['b', 'a10', 'a2'])), 'a10');
  assert.equal(coordinatorOf(new Map([['z', 'i'], ['m', 'j']]).keys()), 'm');
  assert.equal(coordinatorOf(['solo']), 'solo');
  assert.equal(coordinatorOf([]), null);
  assert.equal(coordinatorOf(new Set<string>()), null);
});
