// Replica placement: rendezvous hashing of (group, node).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { replicasOf } from '../../runtime/placement.js';

test('placement - every group gets min(3, nodes) distinct voters; adding a node moves only groups it wins', () => {
  const three = ['n1', 'n2', 'n3'];
  const four = [...three, 'n4'];
  let moved = 0;
  for (let g = 0; g < 256; g++) {
    assert.deepEqual(replicasOf(g, three), three);
    assert.deepEqual(replicasOf(g, ['solo']), ['solo']);
    const r4 = replicasOf(g, four);
    assert.equal(new Set(r4).size, 3);
    assert.deepEqual(r4, [...r4].sort());
    if (r4.includes('n4')) moved++;
    else assert.deepEqual(r4, three);
  }
  // n4 is among the top 3 of 4 for about 3/4 of the groups.
  assert.ok(moved > 150 && moved < 230, `${moved} groups gained n4`);
});
