import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32c } from '../../storage/crc32c.js';
import { ChecksumError, seal, sealText, unseal } from '../../storage/rocks.js';
import { ApplyBatch, PartitionStore } from '../../storage/partition-store.js';
import { messageKey, prefixEnd, recordKey } from '../../storage/keys.js';
import type { ConversationRecord } from '../../actors/conversation.js';

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

test('checksums - sealText(t) is seal(Buffer.from(t)), multi-byte UTF-8 included', () => {
  for (const t of ['', '{"seq":1}', 'héllo 世界 🎉', 'x'.repeat(5000)]) assert.deepEqual(sealText(t), seal(Buffer.from(t)));
});

test('apply batch - a conversation record written twice in one batch is one op, the last version; truncate forgets dropped ones', () => {
  const rec = (id: string, version: number) => ({ id, version }) as ConversationRecord;
  const b = new ApplyBatch();
  b.putRecord(rec('a', 1));
  b.putMessage('a', 1, '{"seq":1}');
  b.putRecord(rec('b', 1));
  b.putRecord(rec('a', 2));
  const values = () => b.ops.map((op) => (op.type === 'put' ? JSON.parse(unseal(op.key, op.value).toString()) : null));
  assert.deepEqual(values(), [{ id: 'a', version: 2 }, { seq: 1 }, { id: 'b', version: 1 }]);
  b.truncate(2);
  b.putRecord(rec('b', 2));
  b.putRecord(rec('a', 3));
  assert.deepEqual(values(), [{ id: 'a', version: 3 }, { seq: 1 }, { id: 'b', version: 2 }]);
});

test('keys - message keys sort by conversation then seq, records by id bytes', () => {
  const sorted = (keys: Buffer[]) => [...keys].sort(Buffer.compare);
  const msgs = [messageKey(3, 'a', 300), messageKey(3, 'a', 4), messageKey(3, 'ab', 1), messageKey(2, 'z', 9)];
  assert.deepEqual(sorted(msgs), [messageKey(2, 'z', 9), messageKey(3, 'a', 4), messageKey(3, 'a', 300), messageKey(3, 'ab', 1)]);
  assert.ok(Buffer.compare(recordKey('A'), recordKey('a')) < 0);
  assert.ok(Buffer.compare(recordKey('a:zz'), prefixEnd(recordKey('a'))) < 0);
});

test('partition store - applied state, records, messages and idempotency keys survive reopen; corruption is refused', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-ps-'));
  try {
    let s = await PartitionStore.open(0, dir);
    const b = new ApplyBatch();
    b.group = 9;
    const rec: ConversationRecord = {
      id: 'c',
      version: 2,
      tombstoned: false,
      last_seq: 2,
      archived_seq: 0,
      metadata: {},
      created_at: 'x',
      updated_at: 'y',
      token_total: 7,
      trimmed_seq: 0,
      applied_index: 12,
      context: {
        token_budget: 100,
        trigger_ratio: 0.5,
        policy: { strategy: 'last_n', config: { limit: 3 } },
        compacted: { from_seq: 1, to_seq: 1, tokens_at: 3, replacement_tokens: 2, version: 2 },
      },
    };
    b.putRecord(rec);
    const compactions = { replacement: ['{"role":"system","parts":[],"metadata":{},"token_count":2,"inserted_at":"z"}'], seqs: [1] };
    b.putCompactions('c', compactions);
    b.putMessage('c', 1, '{"seq":1}');
    b.putMessage('c', 2, '{"seq":2}');
    b.putIdem('c', 'k1', { seq: 2, version: 2, token_count: 1, digest: 'd', at_ms: 5 });
    b.setApplied(9, 17, 3, ['n1']);
    await s.db.write(b.ops, false);
    await s.checkpoint();
    await s.close();
    s = await PartitionStore.open(0, dir);
    assert.deepEqual(await s.loadApplied(9), { index: 17, term: 3, voters: ['n1'] });
    assert.deepEqual(await s.loadApplied(8), { index: 0, term: 0 });
    assert.deepEqual(await s.readRecord('c'), rec);
    assert.deepEqual((await s.readMessages(9, 'c', 1, 2)).map(String), ['{"seq":1}', '{"seq":2}']);
    const conv = await s.loadConversation(9, 'c');
    assert.equal(conv.idem.get('k1')?.seq, 2);
    assert.deepEqual(conv.compactions, compactions);
    assert.deepEqual(conv.record, rec);
    const bad = Buffer.from(seal(Buffer.from('{"seq":1}')));
    bad[6] ^= 4;
    await s.db.write([{ type: 'put', key: messageKey(9, 'c', 1), value: bad }], false);
    await assert.rejects(s.readMessages(9, 'c', 1, 2), ChecksumError);
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

async function withStore(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-ps-'));
  try {
    await body(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('partition store - scrub counts every key of a healthy store and finds a damaged value on any page', { timeout: 60_000 }, async () => {
  await withStore(async (dir) => {
    const s = await PartitionStore.open(0, dir);
    try {
      assert.equal(await s.scrub(), 0);
      // More than one scrub page (4096 keys): applied + 5000 messages + replica + checkpoint (unsealed).
      const b = new ApplyBatch();
      b.group = 3;
      for (let seq = 1; seq <= 5000; seq++) b.putMessage('c', seq, `{"seq":${seq}}`);
      b.setApplied(3, 5000, 2, ['n1', 'n2#x']);
      await s.db.write(b.ops, false);
      await s.saveReplica(3, { replica: 'n2#x.1.4', retired: null });
      await s.checkpoint();
      assert.equal(await s.scrub(), 5003);
      assert.equal(await s.scrub(), 5003);

      // One payload byte of the last message (past the first page) flipped in place.
      const key = messageKey(3, 'c', 5000);
      const bad = Buffer.from(seal(Buffer.from('{"seq":5000}')));
      bad[4 + 3] ^= 0x10;
      await s.db.write([{ type: 'put', key, value: bad }], true);
      await assert.rejects(s.scrub(), (err: unknown) => {
        assert.ok(err instanceof ChecksumError);
        assert.ok(err.key.equals(key));
        return true;
      });

      // Repaired, it passes again; damage to a value on the first page is found too.
      await s.db.write([{ type: 'put', key, value: seal(Buffer.from('{"seq":5000}')) }], true);
      assert.equal(await s.scrub(), 5003);
      const first = messageKey(3, 'c', 1);
      const bad1 = Buffer.from(seal(Buffer.from('{"seq":1}')));
      bad1[bad1.length - 1] ^= 0x01;
      await s.db.write([{ type: 'put', key: first, value: bad1 }], true);
      await assert.rejects(s.scrub(), ChecksumError);
      // A value too short to hold a checksum.
      await s.db.write([{ type: 'put', key: first, value: Buffer.from([1, 2]) }], true);
      await assert.rejects(s.scrub(), ChecksumError);
    } finally {
      await s.close();
    }
  });
});

test('partition store - saveReplica / loadReplicas round-trip across reopen', async () => {
  await withStore(async (dir) => {
    let s = await PartitionStore.open(0, dir);
    assert.deepEqual(await s.loadReplicas(), new Map());
    // Other keys around the replica prefix are not replicas.
    const b = new ApplyBatch();
    b.group = 7;
    b.setApplied(7, 3, 1, ['n1', 'n2', 'n3']);
    b.putMessage('c', 1, '{"seq":1}');
    b.putIdem('c', 'k', { seq: 1, version: 1, token_count: 1, digest: 'd', at_ms: 1 });
    await s.db.write(b.ops, false);
    await s.saveReplica(7, { replica: 'n2#old.1.3', retired: null });
    await s.saveReplica(0, { replica: 'n2#x.1.5', retired: null });
    await s.saveReplica(255, { replica: null, retired: 'n2' });
    await s.saveReplica(300, { replica: 'n2#y.1.9', retired: 'n2#y.1.2' }); // the key holds a u16 group, not a byte
    await s.saveReplica(7, { replica: 'n2#x.1.8', retired: 'n2#x.1.3' }); // replaces
    await s.close();
    s = await PartitionStore.open(0, dir);
    try {
      assert.deepEqual(
        await s.loadReplicas(),
        new Map([
          [0, { replica: 'n2#x.1.5', retired: null }],
          [7, { replica: 'n2#x.1.8', retired: 'n2#x.1.3' }],
          [255, { replica: null, retired: 'n2' }],
          [300, { replica: 'n2#y.1.9', retired: 'n2#y.1.2' }],
        ]),
      );
      assert.deepEqual(await s.loadApplied(7), { index: 3, term: 1, voters: ['n1', 'n2', 'n3'] });
    } finally {
      await s.close();
    }
  });
});

test('partition store - loadApplied returns the voters setApplied wrote; the latest batch wins', async () => {
  await withStore(async (dir) => {
    let s = await PartitionStore.open(0, dir);
    const b1 = new ApplyBatch();
    b1.setApplied(1, 10, 2, ['n1', 'n2', 'n3']);
    b1.setApplied(2, 4, 1, ['n1', 'n3#z']);
    await s.db.write(b1.ops, false);
    assert.deepEqual(await s.loadApplied(1), { index: 10, term: 2, voters: ['n1', 'n2', 'n3'] });
    const b2 = new ApplyBatch();
    b2.setApplied(1, 11, 3, ['n1', 'n2']);
    await s.db.write(b2.ops, false);
    await s.checkpoint();
    await s.close();
    s = await PartitionStore.open(0, dir);
    try {
      assert.deepEqual(await s.loadApplied(1), { index: 11, term: 3, voters: ['n1', 'n2'] });
      assert.deepEqual(await s.loadApplied(2), { index: 4, term: 1, voters: ['n1', 'n3#z'] });
      assert.deepEqual(await s.loadApplied(3), { index: 0, term: 0 });
    } finally {
      await s.close();
    }
  });
});
