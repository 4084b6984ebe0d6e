import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32c } from '../../storage/crc32c.js';
import { ChecksumError, seal, unseal } from '../../storage/rocks.js';
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
