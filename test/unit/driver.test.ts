// PartitionDriver on a real WAL and RocksDB in a temp dir, with the disk
// made slow where a race would hide.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { StreamEvent } from '../../actors/events.js';
import { PartitionDriver, type EventSink, type RaftLinks } from '../../runtime/driver.js';
import { PartitionStore, appliedPut } from '../../storage/partition-store.js';
import { Op, encodeCommand } from '../../actors/commands.js';
import { systemClock } from '../../runtime/clock.js';
import { mulberry32 } from '../../runtime/prng.js';
import { groupOf } from '../../runtime/placement.js';
import { type Reply, ReplyKind } from '../../runtime/replies.js';
import { decodeMessage, encodeMessageBytes } from '../../runtime/raft/codec.js';
import { nodeOf, replicaIdOf } from '../../runtime/membership.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** Makes an async method of `obj` wait `ms` before each call: a slow disk where a race would hide. */
function delay<T extends object>(obj: T, name: keyof T, ms: number): void {
  const f = (obj[name] as (...a: unknown[]) => Promise<unknown>).bind(obj);
  obj[name] = (async (...a: unknown[]) => {
    await sleep(ms);
    return f(...a);
  }) as T[keyof T];
}

/** A driver of node `node` on `store`; its replies and stopped groups are recorded. */
function newDriver(store: PartitionStore, node: string, seed: number, events: EventSink, links: RaftLinks) {
  const replies = new Map<number, Reply>();
  const stopped: string[] = [];
  const d = new PartitionDriver(
    store,
    node,
    systemClock,
    (reqId, r) => replies.set(reqId, r),
    mulberry32(seed),
    1000,
    1 << 20,
    4 << 20,
    (g, reason) => stopped.push(`${g}: ${reason}`),
    events,
    links,
  );
  return { d, store, replies, stopped };
}

async function openDriver(dir: string, loadDelayMs: number) {
  const store = await PartitionStore.open(0, path.join(dir, 'state'));
  delay(store, 'loadConversation', loadDelayMs);
  const streamed = new Set(['c']);
  const events: StreamEvent[] = [];
  const { d, replies, stopped } = newDriver(
    store,
    'n1',
    1,
    { has: (id) => streamed.has(id), emit: (ev) => events.push(ev), emitContext: () => assert.fail('no context here') },
    {
      voters: () => ['n1'],
      mayHost: () => false,
      send: (m) => assert.fail(`a single voter sent ${m.type}`),
      leaderChanged: () => {},
      retainEntries: 0,
      flush: () => {},
    },
  );
  await d.open(new Map(Array.from({ length: 256 }, (_, g) => [g, 'n1'])), new Map(), path.join(dir, 'wal'));
  await until(() => d.isReady(), 'groups to lead');
  return { d, store, replies, stopped, events };
}

const appendTo = (id: string, n: number) =>
  encodeCommand({
    op: Op.Append,
    id,
    nowMs: 0,
    ifVersion: -1,
    tokenCount: 1,
    idemKey: '',
    digest: '',
    messageMembers: `"role":"user","parts":[{"type":"text","text":"m${n}"}],"metadata":{}`,
    flags: 0,
  });

const put = (id: string) => encodeCommand({ op: Op.Put, id, nowMs: 0, metadataJson: null });

test('driver - entries committed while a conversation load is awaited are applied after their own load', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-driver-'));
  try {
    const { d, store, replies, stopped } = await openDriver(dir, 40);
    // Two conversations of the same group: the second commits while the
    // first one's load (40 ms) is being awaited.
    let second = 'second-0';
    for (let i = 1; groupOf(second) !== groupOf('first'); i++) second = `second-${i}`;
    d.propose(1, groupOf('first'), put('first'));
    await sleep(10);
    d.propose(2, groupOf(second), put(second));
    await until(() => replies.size === 2, 'both replies');
    assert.deepEqual(stopped, []);
    assert.equal(replies.get(1)?.kind, ReplyKind.Ok);
    assert.equal(replies.get(2)?.kind, ReplyKind.Ok, replies.get(2)?.body);
    await d.close();
    await store.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('driver - a conversation that cannot be loaded stops its group, which answers what it owes; other groups go on', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-driver-'));
  try {
    const { d, store, replies, stopped } = await openDriver(dir, 0);
    const load = store.loadConversation.bind(store);
    store.loadConversation = async (g, id) => {
      if (id === 'broken') throw new Error('simulated read failure');
      return load(g, id);
    };
    let other = 'other-0';
    for (let i = 1; groupOf(other) === groupOf('broken'); i++) other = `other-${i}`;
    d.propose(1, groupOf('broken'), put('broken'));
    await until(() => replies.has(1), 'an answer for the broken conversation');
    assert.equal(replies.get(1)?.kind, ReplyKind.Error);
    assert.match(replies.get(1)!.body, /unavailable/);
    assert.equal(stopped.length, 1);
    assert.match(stopped[0], new RegExp(`^${groupOf('broken')}: .*simulated read failure`));
    d.propose(2, groupOf(other), put(other));
    await until(() => replies.has(2), 'another group');
    assert.equal(replies.get(2)?.kind, ReplyKind.Ok, replies.get(2)?.body);
    await d.close();
    await store.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('driver - state survives a clean close and reopen (WAL + checkpointed RocksDB)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-driver-'));
  try {
    let h = await openDriver(dir, 0);
    h.d.propose(1, groupOf('c'), put('c'));
    await until(() => h.replies.size === 1, 'put');
    const append = (n: number) => appendTo('c', n);
    for (let i = 2; i <= 50; i++) h.d.propose(i, groupOf('c'), append(i));
    await until(() => h.replies.size === 50, 'appends');
    assert.deepEqual(
      [...h.replies.values()].slice(1).map((r) => JSON.parse(r.body).seq),
      Array.from({ length: 49 }, (_, i) => i + 1),
    );
    // Streamed conversations get one message event per append, in seq order.
    assert.deepEqual(
      h.events.map((e) => [e.seq, JSON.parse(e.json).version, JSON.parse(e.json).message.parts[0].text]),
      Array.from({ length: 49 }, (_, i) => [i + 1, i + 1, `m${i + 2}`]),
    );
    await h.d.close();
    await h.store.close();
    h = await openDriver(dir, 0);
    const rec = await h.store.readRecord('c');
    assert.equal(rec?.last_seq, 49);
    h.d.propose(100, groupOf('c'), append(100));
    await until(() => h.replies.has(100), 'append after reopen');
    assert.equal(JSON.parse(h.replies.get(100)!.body).seq, 50);
    await h.d.close();
    await h.store.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('driver - after a crash between a state write and its checkpoint, replay skips the entries the records already have', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-driver-'));
  try {
    let h = await openDriver(dir, 0);
    const gid = groupOf('c');
    h.d.propose(1, gid, put('c'));
    await until(() => h.replies.size === 1, 'put');
    for (let i = 2; i <= 40; i++) h.d.propose(i, gid, appendTo('c', i));
    await until(() => h.replies.size === 40, 'appends');
    await h.d.close();
    const applied = await h.store.loadApplied(gid);
    const rec = await h.store.readRecord('c');
    assert.equal(rec?.applied_index, applied.index, 'the record carries the index of the entry that wrote it');
    // What a crash leaves when the state writes of 39 appends landed but no
    // checkpoint recorded their applied index: the one from before them.
    await h.store.db.write([appliedPut(gid, { ...applied, index: applied.index - 39 })], true);
    await h.store.close();
    h = await openDriver(dir, 0);
    assert.equal((await h.store.readRecord('c'))?.last_seq, 39);
    h.d.propose(100, gid, appendTo('c', 100));
    await until(() => h.replies.has(100), 'append after the replay');
    assert.equal(JSON.parse(h.replies.get(100)!.body).seq, 40, 'replayed appends were not applied twice');
    const texts = (await h.store.readMessages(gid, 'c', 1, 100)).map((b) => JSON.parse(b.toString()).parts[0].text);
    assert.deepEqual(texts, [...Array.from({ length: 39 }, (_, i) => `m${i + 2}`), 'm100']);
    assert.deepEqual(h.stopped, []);
    await h.d.close();
    await h.store.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Three drivers wired by their links (messages through the wire codec) for
 * group `gid`: nodes `a` and `c` found it (replicas named by their node),
 * `b` hosts nothing until a leader writes to a replica of it (one the
 * coordinator added, named by node and incarnation). Nobody keeps log
 * entries behind the applied index, so a replica that is behind needs a
 * snapshot.
 */
async function openNodes(dir: string, gid: number) {
  const byNode = new Map<string, PartitionDriver>();
  // Messages travel in batches, every 2 ms, like a node pair's NATS messages:
  // a leader steps several peers' answers in one turn.
  let inTransit: Uint8Array[] = [];
  const deliver = () => {
    const batch = inTransit;
    inTransit = [];
    for (const bytes of batch) {
      const m = decodeMessage(bytes);
      byNode.get(nodeOf(m.to))?.step(m);
    }
  };
  const open = async (node: string, incarnation: string, hosted: boolean) => {
    fs.mkdirSync(path.join(dir, node));
    const h = newDriver(await PartitionStore.open(0, path.join(dir, node, 'state')), node, byNode.size + 1, { has: () => false, emit: () => {}, emitContext: () => {} }, {
      voters: () => ['a', 'c'],
      mayHost: (replica) => replica.startsWith(`${replicaIdOf(node, incarnation)}.`),
      send: (m) => {
        if (inTransit.length === 0) setTimeout(deliver, 2);
        inTransit.push(encodeMessageBytes(m));
      },
      leaderChanged: () => {},
      retainEntries: 0,
      flush: () => {},
    });
    byNode.set(node, h.d);
    await h.d.open(new Map(hosted ? [[gid, node]] : []), new Map(), path.join(dir, node, 'wal'));
    return h;
  };
  const nodes = { a: await open('a', 'i1', true), b: await open('b', 'i2', false), c: await open('c', 'i3', true) };
  // The shard's Raft clock, faster: elections, resends and probes ride on ticks.
  const ticker = setInterval(() => byNode.forEach((d) => d.tick()), 10);
  return { ...nodes, stopTicking: () => clearInterval(ticker) };
}

type Node = Awaited<ReturnType<typeof openNodes>>['a'];

/**
 * Runs `body` on the three nodes once group `gid` (that of conversation `c`)
 * has a leader and `c` exists; afterwards no group may have stopped. The
 * ticks stop and the drivers close whatever happens.
 */
async function withNodes(body: (n: { gid: number; a: Node; b: Node; c: Node; leader: Node; other: Node }) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetlm-driver-'));
  const gid = groupOf('c');
  try {
    const nodes = await openNodes(dir, gid);
    const all = [nodes.a, nodes.b, nodes.c];
    try {
      await until(() => nodes.a.d.leads(gid) || nodes.c.d.leads(gid), 'a leader');
      const [leader, other] = nodes.a.d.leads(gid) ? [nodes.a, nodes.c] : [nodes.c, nodes.a];
      leader.d.propose(1, gid, put('c'));
      await until(() => leader.replies.has(1), 'put');
      await body({ gid, ...nodes, leader, other });
      for (const h of all) assert.deepEqual(h.stopped, []);
    } finally {
      nodes.stopTicking();
      for (const h of all) {
        await h.d.close();
        await h.store.close();
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('driver - a replica caught up by snapshot while its leader applies gets all acknowledged state', () =>
  withNodes(async ({ gid, a, b, c, leader, other }) => {
    // From now on the leader's state writes take 30 ms and loading a
    // conversation 10 ms (apply rounds that load run between turns): a
    // snapshot must hold exactly the state as of the index it names, while
    // entries keep being applied around it.
    delay(leader.store.db, 'write', 30);
    delay(leader.store, 'loadConversation', 10);
    const fresh: string[] = [];
    for (let k = 0; fresh.length < 400; k++) if (groupOf(`conv-${k}`) === gid) fresh.push(`conv-${k}`);
    const created: string[] = [];
    let next = 2;
    const appending = setInterval(() => {
      for (let k = 0; k < 4; k++, next++) leader.d.propose(next, gid, appendTo('c', next));
      const id = fresh[created.length];
      created.push(id);
      leader.d.propose(next++, gid, put(id));
    }, 5);
    try {
      await sleep(50);
      leader.d.changeConf(1000, gid, ['a', 'c'], ['a', replicaIdOf('b', 'i2'), 'c']);
      await until(() => leader.replies.has(1000), 'the membership change to be proposed');
      assert.equal(leader.replies.get(1000)?.kind, ReplyKind.Ok, leader.replies.get(1000)?.body);
      await until(() => b.d.groups.has(gid) && b.d.groups.get(gid)!.applied > 0, 'b to install a snapshot');
      await sleep(50);
    } finally {
      clearInterval(appending);
    }
    const sent = next - 1;
    await until(() => leader.replies.size === sent + 1, 'every append answered');
    const acked = [...leader.replies.entries()].filter(([id, r]) => id > 1 && id !== 1000 && r.kind === ReplyKind.Created).length;
    assert.equal(acked, sent - 1 - created.length, 'every append acknowledged');
    const applied = leader.d.groups.get(gid)!.applied;
    await until(() => b.d.groups.get(gid)!.applied === applied && other.d.groups.get(gid)!.applied === applied, 'every replica to apply it all');
    await Promise.all([a.d.stateWritten(), b.d.stateWritten(), c.d.stateWritten()]);
    for (const r of [b, other]) {
      const texts = (await r.store.readMessages(gid, 'c', 1, 100_000)).map((m) => JSON.parse(m.toString()).parts[0].text);
      assert.equal(texts.length, acked, 'every acknowledged message');
      assert.deepEqual(await r.store.readRecord('c'), await leader.store.readRecord('c'));
      for (const id of created) assert.deepEqual(await r.store.readRecord(id), await leader.store.readRecord(id), `record of ${id}`);
    }
  }));

test('driver - an idle leader does not quiesce while a turn\'s writes are in flight (a slow disk), and does once they land', () =>
  withNodes(async ({ gid, leader }) => {
    // The next apply's state write takes 150 ms, fifteen ticks: the leader
    // is idle meanwhile, its Ready still outstanding and each tick's
    // heartbeats waiting in the core.
    delay(leader.store.db, 'write', 150);
    leader.d.propose(2, gid, appendTo('c', 2));
    await until(() => leader.replies.has(2), 'the append');
    const g = leader.d.groups.get(gid)!;
    await sleep(60);
    assert.equal(g.quiesced, false, 'no quiesce while the write is in flight');
    await until(() => g.quiesced, 'the leader to quiesce once the write landed');
    leader.d.propose(3, gid, appendTo('c', 3));
    await until(() => leader.replies.has(3), 'an append waking the group');
    assert.equal(leader.replies.get(3)?.kind, ReplyKind.Created, leader.replies.get(3)?.body);
  }));
