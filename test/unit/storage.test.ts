import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32c } from '../../storage/crc32c.js';
import { ChecksumError, seal, unseal } from '../../storage/rocks.js';
import { PartitionStore, decodeEntry, encodeEntry } from '../../storage/partition-store.js';
import { logKey, messageKey, prefixEnd, recordKey } from '../../storage/keys.js';

test('crc32c - known vectors', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
  assert.equal(crc32c(Buffer.alloc(0)), 0);
});

test('checksums - a flipped bit anywhere is detected', () => {
  const sealed = seal(Buffer.from('{"seq":1,"role":"user"}'));
  for (let i = 0; i < sealed.length * 8; i += 7) {
    const bad = Buffer.from(sealed);
    bad[i >> 3] ^= 1 << (i & 7);
    assert.throws(() => unseal(Buffer.from('k'), bad), ChecksumError);
  }
  assert.equal(unseal(Buffer.from('k'), sealed).toString(), '{"seq":1,"role":"user"}');
});

test('keys - log and message keys sort by number, records by id bytes', () => {
  const sorted = (keys: Buffer[]) => [...keys].sort(Buffer.compare);
  const logs = [logKey(1, 256), logKey(1, 2), logKey(0, 99999), logKey(1, 10)];
  assert.deepEqual(sorted(logs), [logKey(0, 99999), logKey(1, 2), logKey(1, 10), logKey(1, 256)]);
  const msgs = [messageKey(3, 'a', 300), messageKey(3, 'a', 4), messageKey(3, 'ab', 1)];
  assert.deepEqual(sorted(msgs), [messageKey(3, 'a', 4), messageKey(3, 'a', 300), messageKey(3, 'ab', 1)]);
  assert.ok(Buffer.compare(recordKey('A'), recordKey('a')) < 0);
  assert.ok(Buffer.compare(recordKey('a:zz'), prefixEnd(recordKey('a'))) < 0);
});

test('entries - encode/decode round trip, corruption detected', () => {
  const e = { term: 7, index: 42, type: 0, data: new Uint8Array([1, 2, 3]) };
  const v = encodeEntry(e);
  assert.deepEqual(decodeEntry(logKey(5, 42), v), e);
  v[v.length - 1] ^= 0x10;
  assert.throws(() => decodeEntry(logKey(5, 42), v), ChecksumError);
});

test('partition store - group log survives reopen; a hole in the log is refused', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-ps-'));
  try {
    let s = await PartitionStore.open(0, dir);
    const ops: Parameters<typeof s.db.write>[0] = [];
    const entries = [1, 2, 3].map((i) => ({ term: 1, index: i, type: 0, data: new Uint8Array([i]) }));
    s.logOps(ops, 9, { term: 1, vote: 'n1', commit: 2 }, { voters: ['n1'] }, entries);
    await s.db.write(ops, true);
    await s.close();
    s = await PartitionStore.open(0, dir);
    const g = await s.loadGroup(9);
    assert.deepEqual(g.hardState, { term: 1, vote: 'n1', commit: 2 });
    assert.deepEqual(g.entries.map((e) => e.index), [1, 2, 3]);
    assert.deepEqual((await s.loadGroup(8)).entries, []);
    await s.db.write([{ type: 'del', key: logKey(9, 2) }], true);
    await assert.rejects(s.loadGroup(9), /log hole/);
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
