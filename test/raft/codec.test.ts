// The Raft message codec of the NATS transport: round trips, the routing
// fields readable without decoding, and malformed input rejected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QUIESCE_TYPE, decodeMessage, encodeMessageBytes, encodedGroup, encodedTo } from '../../runtime/raft/codec.js';
import { EntryType, MessageType, type Message } from '../../runtime/raft/types.js';
import { prng } from './net.js';

function message(over: Partial<Message> = {}): Message {
  return {
    type: MessageType.App,
    group: 201,
    from: 'node-ä1',
    to: 'n2',
    term: 7,
    logTerm: 6,
    index: 2 ** 40,
    entries: [
      { term: 7, index: 2 ** 40 + 1, type: EntryType.Normal, data: new Uint8Array([1, 2, 3]) },
      { term: 7, index: 2 ** 40 + 2, type: EntryType.ConfChange, data: new Uint8Array(0) },
    ],
    commit: 12,
    reject: true,
    rejectHint: 9,
    snapshot: { index: 5, term: 2, conf: { voters: ['a', 'b', 'c'] } },
    context: 3,
    ...over,
  };
}

test('codec - messages round trip, to and group readable in place', () => {
  for (const m of [message(), message({ entries: [], snapshot: null, reject: false }), message({ type: QUIESCE_TYPE })]) {
    const b = encodeMessageBytes(m);
    assert.deepEqual(decodeMessage(b), m);
    assert.equal(encodedTo(b), m.to);
    assert.equal(encodedGroup(b), m.group);
  }
});

test('codec - truncated, extended and corrupted messages are rejected, never half-decoded', () => {
  const b = encodeMessageBytes(message());
  for (let n = 0; n < b.length; n++) assert.throws(() => decodeMessage(b.subarray(0, n)));
  assert.throws(() => decodeMessage(new Uint8Array([...b, 0])), /trailing/);
  const badType = b.slice();
  badType[0] = 42;
  assert.throws(() => decodeMessage(badType), /unknown message type/);
  // Random corruption either throws or decodes to a well-formed message.
  const rand = prng(5);
  for (let i = 0; i < 2000; i++) {
    const c = b.slice();
    c[Math.floor(rand() * c.length)] = Math.floor(rand() * 256);
    try {
      const m = decodeMessage(c);
      for (const v of [m.term, m.logTerm, m.index, m.commit, m.rejectHint, m.context]) assert.ok(Number.isSafeInteger(v) && v >= 0);
    } catch {
      /* rejected */
    }
  }
});
