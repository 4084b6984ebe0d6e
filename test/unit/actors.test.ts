import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Op, commandId, decodeCommand, encodeCommand, patchNow, type Command } from '../../actors/commands.js';
import { NO_COMPACTIONS, apply, type Compactions, type Conversation, type ConversationRecord, type IdemRecord, type WriteSink } from '../../actors/conversation.js';

class Sink implements WriteSink {
  records: ConversationRecord[] = [];
  messages: [string, number, string][] = [];
  idem: [string, string, IdemRecord | null][] = [];
  putRecord(r: ConversationRecord) {
    this.records.push(r);
  }
  putMessage(id: string, seq: number, json: string) {
    this.messages.push([id, seq, json]);
  }
  putIdem(id: string, key: string, r: IdemRecord) {
    this.idem.push([id, key, r]);
  }
  delIdem(id: string, key: string) {
    this.idem.push([id, key, null]);
  }
  compactions: [string, Compactions][] = [];
  trims: [string, number, number][] = [];
  pending: [string, boolean][] = [];
  delMessages(id: string, lo: number, hi: number) {
    this.trims.push([id, lo, hi]);
  }
  setArchivePending(id: string, pending: boolean) {
    this.pending.push([id, pending]);
  }
  putCompactions(id: string, c: Compactions) {
    this.compactions.push([id, c]);
  }
}

const fresh = (): Conversation => ({ record: null, idem: new Map(), compactions: NO_COMPACTIONS });
const put = (id = 'c1', nowMs = 1000): Command => ({ op: Op.Put, id, nowMs, metadataJson: '{"a":1}' });
const append = (over: Partial<Extract<Command, { op: Op.Append }>> = {}): Command => ({
  op: Op.Append,
  id: 'c1',
  nowMs: 2000,
  ifVersion: -1,
  tokenCount: 3,
  idemKey: '',
  digest: '',
  messageMembers: '"role":"user","parts":[{"type":"text","text":"hi"}],"metadata":{}',
  flags: 0,
  ...over,
});

test('commands - every op round-trips through bytes, id readable without decoding', () => {
  const cmds: Command[] = [
    put('conv:1'),
    { op: Op.Put, id: 'x', nowMs: 5, metadataJson: null },
    append({ idemKey: 'käy-🔑', digest: 'abc', ifVersion: 7 }),
    { op: Op.Tombstone, id: 'z_-:', nowMs: 9, flags: 0 },
  ];
  for (const c of cmds) {
    const bytes = encodeCommand(c);
    assert.deepEqual(decodeCommand(bytes), c);
    assert.equal(commandId(bytes), c.id);
  }
});

test('commands - patchNow stamps the leader time in place', () => {
  const bytes = encodeCommand(append({ nowMs: 0 }));
  patchNow(bytes, 1234567.5);
  assert.equal(decodeCommand(bytes).nowMs, 1234567.5);
});

test('commands - truncated or unknown bytes are rejected', () => {
  const bytes = encodeCommand(append());
  assert.throws(() => decodeCommand(bytes.subarray(0, bytes.length - 3)));
  const bad = Uint8Array.from(bytes);
  bad[0] = 99;
  assert.throws(() => decodeCommand(bad), /unknown command op/);
});

test('conversation - append to unknown id is not_found and writes nothing', () => {
  const sink = new Sink();
  const r = apply(fresh(), append(), sink);
  assert.equal(r.kind, 'error');
  assert.equal(r.kind === 'error' && r.error.code, 'not_found');
  assert.equal(sink.records.length + sink.messages.length, 0);
});

test('conversation - seq and version advance by one per append, timestamps from the entry', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, put(), sink);
  for (let i = 1; i <= 5; i++) {
    const r = apply(c, append({ nowMs: 2000 + i }), sink);
    assert.deepEqual(r, { kind: 'appended', seq: i, version: i, tokenCount: 3, duplicate: false, tokenEstimate: null });
  }
  assert.equal(c.record!.last_seq, 5);
  assert.deepEqual(sink.messages.map((m) => m[1]), [1, 2, 3, 4, 5]);
  const last = JSON.parse(sink.messages[4][2]);
  assert.equal(last.inserted_at, new Date(2005).toISOString());
  assert.equal(last.seq, 5);
  assert.deepEqual(last.parts, [{ type: 'text', text: 'hi' }]);
});

test('conversation - if_version mismatch is a conflict naming the current version', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, put(), sink);
  apply(c, append(), sink);
  const r = apply(c, append({ ifVersion: 0 }), sink);
  assert.ok(r.kind === 'error' && r.error.code === 'conflict');
  assert.match(r.kind === 'error' ? r.error.message : '', /current version is 1/);
  assert.equal(c.record!.version, 1);
  assert.equal(apply(c, append({ ifVersion: 1 }), sink).kind, 'appended');
});

test('conversation - idempotency key returns the original result; a different message conflicts', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, put(), sink);
  const first = apply(c, append({ idemKey: 'k1', digest: 'd1' }), sink);
  apply(c, append(), sink);
  const again = apply(c, append({ idemKey: 'k1', digest: 'd1', ifVersion: 0 }), sink);
  assert.deepEqual(again, { ...first, duplicate: true });
  const other = apply(c, append({ idemKey: 'k1', digest: 'd2' }), sink);
  assert.ok(other.kind === 'error' && other.error.code === 'idempotency_conflict');
  assert.equal(c.record!.last_seq, 2);
});

test('conversation - tombstone makes appends 410 and metadata updates 410, reads keep the record', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, put(), sink);
  assert.equal(apply(c, { op: Op.Tombstone, id: 'c1', nowMs: 3000, flags: 0 }, sink).kind, 'deleted');
  const r = apply(c, append(), sink);
  assert.ok(r.kind === 'error' && r.error.code === 'tombstoned');
  const p = apply(c, put(), sink);
  assert.ok(p.kind === 'error' && p.error.code === 'tombstoned');
  assert.equal(c.record!.last_seq, 0);
  assert.equal(c.record!.tombstoned, true);
  assert.equal(apply(c, { op: Op.Tombstone, id: 'c1', nowMs: 4000, flags: 0 }, sink).kind, 'deleted');
});

test('conversation - PUT creates once; later PUT replaces metadata and keeps created_at', () => {
  const c = fresh();
  const sink = new Sink();
  const a = apply(c, put('c1', 1000), sink);
  const b = apply(c, { op: Op.Put, id: 'c1', nowMs: 5000, metadataJson: '{"b":2}' }, sink);
  assert.ok(a.kind === 'record' && b.kind === 'record');
  assert.equal(b.record.created_at, new Date(1000).toISOString());
  assert.equal(b.record.updated_at, new Date(5000).toISOString());
  assert.deepEqual(b.record.metadata, { b: 2 });
  const same = apply(c, { op: Op.Put, id: 'c1', nowMs: 6000, metadataJson: null }, sink);
  assert.ok(same.kind === 'record' && same.record.updated_at === new Date(5000).toISOString());
});

test('conversation - a retried append after a tombstone still gets its original answer', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, put(), sink);
  const first = apply(c, append({ idemKey: 'k', digest: 'd' }), sink);
  apply(c, { op: Op.Tombstone, id: 'c1', nowMs: 3000, flags: 0 }, sink);
  assert.deepEqual(apply(c, append({ idemKey: 'k', digest: 'd' }), sink), { ...first, duplicate: true });
  const fresh410 = apply(c, append({ idemKey: 'other', digest: 'd' }), sink);
  assert.ok(fresh410.kind === 'error' && fresh410.error.code === 'tombstoned');
});

test('conversation - archive acks move archived_seq up, trim all but the hot tail, and track pending conversations', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, put(), sink);
  for (let i = 0; i < 10; i++) apply(c, append(), sink);
  assert.deepEqual(sink.pending, [['c1', true]], 'pending once, on the first unarchived message');
  const ack = (seq: number, tailKeep = 3): Command => ({ op: Op.AckArchived, id: 'c1', nowMs: 9, seq, tailKeep });
  assert.deepEqual(apply(c, ack(6), sink), { kind: 'archived', archivedSeq: 6, trimmedSeq: 6 });
  assert.deepEqual(sink.trims, [['c1', 1, 6]]);
  // The newest 3 stay hot however far the archive goes; the record says so.
  assert.deepEqual(apply(c, ack(15), sink), { kind: 'archived', archivedSeq: 10, trimmedSeq: 7 });
  assert.deepEqual(sink.trims.at(-1), ['c1', 7, 7]);
  assert.deepEqual(sink.pending.at(-1), ['c1', false]);
  assert.equal(c.record!.version, 10, 'archiving is not a client change');
  // A repeated or older ack (new leader, retry) writes nothing.
  const writes = sink.records.length;
  assert.deepEqual(apply(c, ack(4), sink), { kind: 'archived', archivedSeq: 10, trimmedSeq: 7 });
  assert.equal(sink.records.length, writes);
  apply(c, append(), sink);
  assert.deepEqual(sink.pending.at(-1), ['c1', true], 'pending again with the next message');
  // Round trip through bytes.
  assert.deepEqual(decodeCommand(encodeCommand(ack(7, 1000))), ack(7, 1000));
});
