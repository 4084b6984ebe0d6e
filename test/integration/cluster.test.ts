// A real 3-node cluster: three node processes and a nats-server on loopback.
// Any node serves any request; acknowledged appends survive kill -9 of any
// node, leaders or not; a group without quorum answers 503 within the bound
// and heals by itself; concurrent if_version appends have one winner; Raft
// traffic from outside the membership is dropped; SIGSTOP pauses and network
// partitions (a transport-level cut, FLEETLM_FAILPOINT=partition-file) lose
// nothing acknowledged; a replica far behind catches up from a snapshot. Afterwards the stopped
// replicas' stores are read directly: every replica holds the same value at
// every seq, and every acknowledged append is there.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { connect } from '@nats-io/transport-node';
import WebSocket from 'ws';
import { api, listingMisses, startNode, tempDir, type NodeProc } from './harness.js';
import { appendUntilStopped, metric as metricOf, readReplica, sleep, text } from './cluster-kit.js';
import { startNats, type NatsServer } from './nats-server.js';
import { PartitionStore } from '../../storage/partition-store.js';
import { PREFIX } from '../../storage/keys.js';
import { mulberry32 } from '../../runtime/prng.js';
import { encodeMessageBytes } from '../../runtime/raft/codec.js';
import { MessageType } from '../../runtime/raft/types.js';

const NAMES = ['n1', 'n2', 'n3'];
const CONVERSATIONS = 12;
const FAULT_ROUNDS = Number(process.env.CLUSTER_FAULT_ROUNDS ?? 4);

type Fault = 'kill' | 'pause' | 'partition';

interface Member {
  name: string;
  dataDir: string;
  /** FLEETLM_FAILPOINT=partition-file: the peers this node is cut off from. */
  partitionFile: string;
  node: NodeProc | null;
}


describe('cluster of three', () => {
  let nats: NatsServer;
  const members: Member[] = NAMES.map((name) => {
    const dataDir = tempDir(`fleetlm-${name}-`);
    return { name, dataDir, partitionFile: `${dataDir}.partition`, node: null };
  });

  const envOf = (m: Member) => ({
    NATS_URL: nats.url,
    CLUSTER_NODES: NAMES.join(','),
    NODE_NAME: m.name,
    // The third node runs its shard on the gateway thread: every fault below covers that mode too.
    FLEETLM_WORKERS: m.name === NAMES[2] ? '0' : '1',
    FLEETLM_FAILPOINT: `partition-file:${m.partitionFile}`,
  });
  const startMember = async (m: Member) => {
    m.node = await startNode({ dataDir: m.dataDir, env: envOf(m) });
  };
  const live = () => members.filter((m) => m.node !== null);
  const urlOf = (i: number) => members[i].node!.url;

  before(async () => {
    nats = await startNats();
    // Each node becomes ready once every group has a leader, which needs a
    // quorum: start them together.
    await Promise.all(members.map(startMember));
  });

  after(async () => {
    await Promise.all(members.map((m) => m.node?.kill9()));
    await nats?.stop();
    for (const m of members) {
      fs.rmSync(m.dataDir, { recursive: true, force: true });
      fs.rmSync(m.partitionFile, { force: true });
    }
  });

  test('any node serves any request: written through one, read through the others', async () => {
    assert.equal((await api(urlOf(0), 'PUT', '/v1/conversations/any-node', { metadata: { k: 'v' } })).status, 200);
    for (let i = 0; i < 3; i++) {
      const r = await api(urlOf(i), 'POST', '/v1/conversations/any-node/messages', text(`via ${i}`));
      assert.equal(r.status, 201, r.text);
      assert.equal(r.json.seq, i + 1);
      // Linearizable: the next read, through any node, sees it.
      const seen = await api(urlOf((i + 1) % 3), 'GET', '/v1/conversations/any-node');
      assert.equal(seen.json.last_seq, i + 1);
    }
    const page = await api(urlOf(2), 'GET', '/v1/conversations/any-node/messages?from=0');
    assert.deepEqual(
      page.json.messages.map((m: { parts: { text: string }[] }) => m.parts[0].text),
      ['via 0', 'via 1', 'via 2'],
    );
    const metrics = await Promise.all([0, 1, 2].map((i) => api(urlOf(i), 'GET', '/metrics')));
    const led = metrics.map((m) => Number(/^fleet_lm_raft_leaders (\d+)/m.exec(m.text)![1]));
    assert.equal(led.reduce((a, b) => a + b, 0), 256, `groups led per node: ${led}`);
  });

  test('listing through any node gathers every group from its leader, in id order, each once', async () => {
    const ids = Array.from({ length: 40 }, (_, k) => `list-${String(k).padStart(2, '0')}`);
    for (const [k, id] of ids.entries()) {
      assert.equal((await api(urlOf(k % 3), 'PUT', `/v1/conversations/${id}`, { metadata: { suite: 'list' } })).status, 200);
    }
    for (let i = 0; i < 3; i++) {
      const seen: string[] = [];
      let cursor: number | null = 0;
      while (cursor !== null) {
        const r = await api(urlOf(i), 'GET', `/v1/conversations?metadata.suite=list&limit=15&cursor=${cursor}`);
        assert.equal(r.status, 200, r.text);
        seen.push(...r.json.conversations.map((c: { id: string }) => c.id));
        cursor = r.json.next_cursor;
      }
      assert.deepEqual(seen, ids);
    }
  });

  test('a listing through any node sees a change acknowledged through another one at once', async () => {
    const misses = await listingMisses({ putUrl: (w) => urlOf(w % 3), listUrl: (w) => urlOf((w + 1) % 3), loadUrl: urlOf(0), writers: 6, perWriter: 10 });
    assert.deepEqual(misses, []);
  });

  test('idle groups quiesce: no Raft message flows while nothing changes, and a write wakes its group', async () => {
    /** Per node: Raft messages received, by type. */
    const byType = async (i: number) => {
      const counts = new Map<string, number>();
      for (const m of (await api(urlOf(i), 'GET', '/metrics')).text.matchAll(/^fleet_lm_raft_messages_received_total\{type="(\w+)"\} (\d+)/gm)) counts.set(m[1], Number(m[2]));
      return counts;
    };
    const sum = (c: Map<string, number>) => [...c.values()].reduce((a, b) => a + b, 0);
    const received = async () => Promise.all([0, 1, 2].map(async (i) => sum(await byType(i))));
    // The coordinator (n1) first moves leaders to where the placement prefers them.
    for (let i = 0; i < 200 && (await metricOf(urlOf(0), 'fleet_lm_cluster_leaders_to_move')) !== 0; i++) await sleep(100);
    await sleep(1500);
    const before = await received();
    await sleep(1000);
    assert.deepEqual(await received(), before);
    assert.equal((await api(urlOf(1), 'POST', '/v1/conversations/any-node/messages', text('wake up'))).status, 201);
    const after = await received();
    assert.ok(after.some((n, i) => n > before[i]), 'the write replicated without a message?');
    // The woken group replicated the entry (app) and went quiet again (quiesce) on its followers.
    await sleep(1000);
    const types = await Promise.all([0, 1, 2].map(byType));
    assert.ok(types.some((c) => (c.get('app') ?? 0) > 0) && types.some((c) => (c.get('quiesce') ?? 0) > 0), JSON.stringify(types.map((c) => [...c])));
  });

  test('exactly one of concurrent if_version appends through different nodes wins', async () => {
    assert.equal((await api(urlOf(1), 'PUT', '/v1/conversations/race', {})).status, 200);
    for (let round = 0; round < 5; round++) {
      const rs = await Promise.all(
        Array.from({ length: 9 }, (_, k) =>
          api(urlOf(k % 3), 'POST', '/v1/conversations/race/messages', { ...text(`r${round}-${k}`), if_version: round }),
        ),
      );
      const codes = rs.map((r) => r.status).sort();
      assert.deepEqual(codes, [201, 409, 409, 409, 409, 409, 409, 409, 409], rs.map((r) => r.text).join('\n'));
    }
  });

  test('leadership spreads over the nodes and returns to a restarted node, without failing writes', async () => {
    const led = () => Promise.all(live().map((m) => metricOf(m.node!.url, 'fleet_lm_raft_leaders')));
    const untilEach = async (min: number, what: string) => {
      let last: number[] = [];
      for (let i = 0; i < 300; i++) {
        last = await led();
        if (last.length === 3 && last.every((n) => n >= min)) return;
        await sleep(100);
      }
      assert.fail(`${what}: leaders per node ${last.join('/')}`);
    };
    // Of 256 groups, the placement prefers each node for about a third.
    await untilEach(60, 'leaders not spread');
    const back = members[2];
    const node = back.node!;
    back.node = null;
    await node.kill9();
    const transfersTo = (name: string) =>
      members.slice(0, 2).reduce((n, m) => n + m.node!.logs.filter((l) => l.includes('"leader_transfer"') && l.includes(`"to":"${name}`)).length, 0);
    const before = transfersTo(back.name);
    await startMember(back);
    const convs = Array.from({ length: 16 }, (_, k) => `lead-${k}`);
    for (const c of convs) assert.equal((await api(urlOf(0), 'PUT', `/v1/conversations/${c}`, {})).status, 200);
    // Writers through both other nodes while the coordinator moves leaders back.
    const failed: string[] = [];
    let moving = true;
    let written = 0;
    const writer = async (w: number) => {
      for (let k = w; moving; k += 4) {
        const r = await api(urlOf(k % 2), 'POST', `/v1/conversations/${convs[k % convs.length]}/messages`, text(`m${k}`));
        if (r.status === 201) written++;
        else failed.push(`${r.status} ${r.text}`);
      }
    };
    const writers = [0, 1, 2, 3].map(writer);
    await untilEach(60, 'leadership did not come back');
    moving = false;
    await Promise.all(writers);
    assert.deepEqual(failed, [], 'writes failed while leaders moved');
    assert.ok(written > 0);
    assert.ok(transfersTo(back.name) > before, 'the leaders came back by transfers');
  });

  test('Raft traffic from a node outside the membership is dropped', async () => {
    const dropped = async () => Number(/^fleet_lm_raft_messages_dropped_total (\d+)/m.exec((await api(urlOf(0), 'GET', '/metrics')).text)![1]);
    const before = await dropped();
    const termsBefore = Number(/^fleet_lm_raft_term_changes_total (\d+)/m.exec((await api(urlOf(0), 'GET', '/metrics')).text)![1]);
    const nc = await connect({ servers: nats.url });
    // A well-formed batch from "intruder": a vote request with a far higher term for n1's group 0.
    const vote = encodeMessageBytes({
      type: MessageType.Vote, group: 0, from: 'intruder', to: 'n1', term: 1e6, logTerm: 1e6, index: 1e6,
      entries: [], commit: 0, reject: false, rejectHint: 0, snapshot: null, context: 0,
    });
    const from = Buffer.from('intruder');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(vote.byteLength);
    nc.publish('fleetlm.raft.n1', Buffer.concat([Buffer.from([1, from.length]), from, len, vote]));
    await nc.flush();
    await nc.close();
    for (let i = 0; i < 100 && (await dropped()) === before; i++) await sleep(20);
    assert.equal(await dropped(), before + 1);
    await sleep(300);
    const termsAfter = Number(/^fleet_lm_raft_term_changes_total (\d+)/m.exec((await api(urlOf(0), 'GET', '/metrics')).text)![1]);
    assert.equal(termsAfter, termsBefore, 'the intruder moved a term');
    assert.equal((await api(urlOf(0), 'GET', '/health/ready')).status, 200);
  });

  /**
   * Writers append through random live nodes, plain and with if_version,
   * while `rounds` faults of the given kinds hit random nodes; then every
   * guarantee is checked through the API and on the stopped replicas' disks.
   */
  async function underFaults(t: TestContext, kinds: Fault[], rounds: number, seed: number): Promise<void> {
    const rand = mulberry32(seed);
    const convs = Array.from({ length: CONVERSATIONS }, (_, c) => `f${seed}-${c}`);
    for (const c of convs) assert.equal((await api(urlOf(0), 'PUT', `/v1/conversations/${c}`, {})).status, 200);
    const acked = new Map<string, { conv: string; seq: number; ifVersion: number | null }>();
    const unknown = new Set<string>();
    const failures: string[] = [];
    const injected: string[] = [];
    let counter = 0;
    let stop = false;
    const writer = (conditional: boolean) => async () => {
      while (!stop) {
        const targets = live();
        const m = targets[Math.floor(rand() * targets.length)];
        const node = m.node!;
        const conv = convs[Math.floor(rand() * convs.length)];
        const tag = `w${counter++}`;
        try {
          let ifVersion: number | null = null;
          if (conditional) {
            const rec = await api(node.url, 'GET', `/v1/conversations/${conv}`);
            if (rec.status !== 200) continue;
            ifVersion = rec.json.version as number;
          }
          const body = ifVersion === null ? text(tag) : { ...text(tag), if_version: ifVersion };
          const r = await api(node.url, 'POST', `/v1/conversations/${conv}/messages`, body);
          if (r.status === 201) acked.set(tag, { conv, seq: r.json.seq, ifVersion });
          else if (r.status === 503) unknown.add(tag);
          else if (!(r.status === 409 && conditional)) failures.push(`${tag}: unexpected ${r.status} ${r.text}`);
        } catch (err) {
          unknown.add(tag);
          // Only a node killed under the request may fail to answer.
          if (m.node === node) failures.push(`${tag}: ${String(err)}`);
        }
      }
    };
    const writers = [...Array.from({ length: 9 }, writer(false)), ...Array.from({ length: 3 }, writer(true))];
    try {
      for (let round = 0; round < rounds; round++) {
        await sleep(400 + rand() * 400);
        const victim = members[Math.floor(rand() * members.length)];
        const kind = kinds[Math.floor(rand() * kinds.length)];
        injected.push(`${kind} ${victim.name}`);
        const node = victim.node!;
        if (kind === 'kill') {
          victim.node = null;
          await node.kill9();
          await sleep(300 + rand() * 700);
          await startMember(victim);
        } else if (kind === 'pause') {
          process.kill(node.proc.pid!, 'SIGSTOP');
          await sleep(1000 + rand() * 1500);
          process.kill(node.proc.pid!, 'SIGCONT');
        } else {
          for (const m of members) fs.writeFileSync(m.partitionFile, m === victim ? NAMES.filter((n) => n !== m.name).join(',') : victim.name);
          await sleep(1500 + rand() * 1500);
          for (const m of members) fs.writeFileSync(m.partitionFile, '');
        }
      }
      await sleep(1000);
    } finally {
      stop = true;
      await Promise.all(writers);
    }
    t.diagnostic(`${acked.size} acknowledged, ${unknown.size} with unknown outcome; faults: ${injected.join(', ')}`);
    assert.deepEqual(failures, []);
    assert.ok(acked.size > 200, `only ${acked.size} appends acknowledged`);

    // Every acknowledged append is there with its seq, seqs contiguous, nothing twice.
    for (const conv of convs) {
      const rec = (await api(urlOf(2), 'GET', `/v1/conversations/${conv}`)).json;
      const messages: { seq: number; parts: { text: string }[] }[] = [];
      for (;;) {
        const page = await api(urlOf(1), 'GET', `/v1/conversations/${conv}/messages?from=${messages.length}&limit=1000`);
        messages.push(...page.json.messages);
        if (page.json.messages.length < 1000) break;
      }
      const texts = messages.map((m) => m.parts[0].text);
      assert.deepEqual(
        messages.map((m) => m.seq),
        Array.from({ length: rec.last_seq }, (_, k) => k + 1),
      );
      assert.equal(new Set(texts).size, texts.length, `${conv}: a message appears twice`);
      for (const x of texts) assert.ok(acked.has(x) || unknown.has(x), `${conv}: ${x} was never sent`);
    }
    for (const [x, a] of acked) {
      const r = await api(urlOf(0), 'GET', `/v1/conversations/${a.conv}/messages?from=${a.seq - 1}&limit=1`);
      assert.equal(r.json.messages[0]?.parts[0].text, x, `acknowledged ${x} at ${a.conv}/${a.seq} is missing`);
      // One winner per if_version: the append made at version v is message v + 1.
      if (a.ifVersion !== null) assert.equal(a.seq, a.ifVersion + 1, `${x}: if_version ${a.ifVersion} acknowledged at seq ${a.seq}`);
    }

    // Compare the replicas' stores directly.
    const replicas = await stopAndReadReplicas(convs, 1000);
    for (const conv of convs) {
      const [a, b, c] = replicas.map((r) => r.get(conv)!);
      assert.ok(a.length > 0);
      assert.deepEqual(b, a, `${conv}: replicas n1 and n2 differ`);
      assert.deepEqual(c, a, `${conv}: replicas n1 and n3 differ`);
    }
    for (const [x, a] of acked) assert.equal(replicas[0].get(a.conv)![a.seq - 1], x);
    // Bring the cluster back for the next test.
    await Promise.all(members.map(startMember));
  }

  test(`kill -9 of any node under append load loses no acknowledged append (${FAULT_ROUNDS} rounds)`, (t) =>
    underFaults(t, ['kill'], FAULT_ROUNDS, 11));

  test(`SIGSTOP pauses and network partitions lose no acknowledged append (${FAULT_ROUNDS} rounds)`, (t) =>
    underFaults(t, ['pause', 'partition'], FAULT_ROUNDS, 23));

  test('a replica that missed more than the retained log catches up from a snapshot', async () => {
    const conv = 'snap-1';
    assert.equal((await api(urlOf(0), 'PUT', `/v1/conversations/${conv}`, {})).status, 200);
    const behind = members[2];
    const node = behind.node!;
    behind.node = null;
    await node.kill9();
    // More entries in the conversation's group than a replica keeps behind its applied index (512).
    const COUNT = 700;
    let next = 0;
    const writer = async () => {
      while (next < COUNT) {
        const k = next++;
        const r = await api(urlOf(k % 2), 'POST', `/v1/conversations/${conv}/messages`, text(`s${k}`));
        assert.equal(r.status, 201, r.text);
      }
    };
    await Promise.all(Array.from({ length: 16 }, writer));
    await startMember(behind);
    const installed = () => behind.node!.logs.some((l) => l.includes('"snapshot_installed"'));
    for (let i = 0; i < 200 && !installed(); i++) await sleep(50);
    assert.ok(installed(), 'no snapshot was installed');
    // It keeps replicating after the snapshot.
    assert.equal((await api(urlOf(2), 'POST', `/v1/conversations/${conv}/messages`, text('after'))).status, 201);
    const replicas = await stopAndReadReplicas([conv], 1000);
    const want = replicas[0].get(conv)!;
    assert.equal(want.length, COUNT + 1);
    assert.equal(want.at(-1), 'after');
    assert.deepEqual(replicas[2].get(conv), want);
    assert.deepEqual(replicas[1].get(conv), want);
    await Promise.all(members.map(startMember));
  });

  test('a stream on one node delivers every message once, in order, through kill -9 of the other nodes', async () => {
    const conv = 'stream-fo';
    assert.equal((await api(urlOf(0), 'PUT', `/v1/conversations/${conv}`, {})).status, 200);
    const seqs: number[] = [];
    const texts: string[] = [];
    const ws = new WebSocket(`${urlOf(2).replace('http', 'ws')}/v1/conversations/${conv}/stream?cursor=0`);
    ws.on('message', (d) => {
      const ev = JSON.parse(d.toString());
      if (ev.type !== 'message') return;
      seqs.push(ev.seq);
      texts.push(ev.message.parts[0].text);
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const COUNT = 240;
    let next = 0;
    // Appends through n1 and n2 with idempotency keys, retried until acknowledged.
    const writer = async () => {
      while (next < COUNT) {
        const k = next++;
        for (;;) {
          const live = [members[0], members[1]].filter((m) => m.node !== null);
          const node = live[k % live.length].node!;
          const r = await api(node.url, 'POST', `/v1/conversations/${conv}/messages`, text(`m${k}`), { 'idempotency-key': `k${k}` }).catch(() => null);
          if (r?.status === 201) break;
          await sleep(50);
        }
      }
    };
    const writers = Array.from({ length: 6 }, writer);
    for (const victim of [members[0], members[1]]) {
      await sleep(700);
      const node = victim.node!;
      victim.node = null;
      await node.kill9();
      await sleep(500);
      await startMember(victim);
    }
    await Promise.all(writers);
    for (let i = 0; i < 100 && seqs.length < COUNT; i++) await sleep(50);
    ws.close();
    assert.deepEqual(seqs, Array.from({ length: COUNT }, (_, k) => k + 1));
    assert.equal(new Set(texts).size, COUNT);
  });

  const metric = (i: number, name: string) => metricOf(urlOf(i), name);

  /**
   * After `settleMs` (followers learn the last commit index from the next
   * heartbeats), every node stops cleanly and each replica's store is read.
   */
  async function stopAndReadReplicas(convs: string[], settleMs: number): Promise<Map<string, string[]>[]> {
    await sleep(settleMs);
    await Promise.all(
      members.map(async (m) => {
        await m.node!.stop();
        m.node = null;
      }),
    );
    return Promise.all(members.map((m) => readReplica(m.dataDir, convs)));
  }

  /** Conversations with `count` messages each, written through node 0. */
  async function seed(convs: string[], count: number): Promise<void> {
    await Promise.all(
      convs.map(async (c) => {
        assert.equal((await api(urlOf(0), 'PUT', `/v1/conversations/${c}`, {})).status, 200);
        for (let k = 0; k < count; k++) assert.equal((await api(urlOf(0), 'POST', `/v1/conversations/${c}/messages`, text(`${c}/${k}`))).status, 201);
      }),
    );
  }

  /** Node i hosts a replica of every group and the coordinator (n1) has nothing left to change. */
  async function waitRepaired(i: number): Promise<void> {
    let state = '';
    for (let waited = 0; waited < 90_000; waited += 250) {
      const [hosted, toReplace] = [await metric(i, 'fleet_lm_raft_replicas'), await metric(0, 'fleet_lm_cluster_replicas_to_replace')];
      state = `${hosted} replicas on ${members[i].name}, ${toReplace} groups to change`;
      if (hosted === 256 && toReplace === 0) return;
      await sleep(250);
    }
    assert.fail(`not repaired: ${state}`);
  }

  /**
   * With node 0 killed, every group needs the repaired node's replicas in
   * its quorum: each conversation takes an append through node 1. Then all
   * stop and every replica's store must hold the same messages, the
   * acknowledged ones among them.
   */
  async function checkRepairedReplicas(convs: string[], acked: Map<string, string[]>): Promise<void> {
    const first = members[0];
    await first.node!.kill9();
    first.node = null;
    await Promise.all(
      convs.map(async (c) => {
        const deadline = Date.now() + 15_000;
        for (;;) {
          const r = await api(urlOf(1), 'POST', `/v1/conversations/${c}/messages`, text(`${c}/last`)).catch(() => null);
          if (r?.status === 201) return;
          assert.ok(Date.now() < deadline, `no append to ${c} without ${first.name}: ${r?.status} ${r?.text}`);
          await sleep(100);
        }
      }),
    );
    await startMember(first);
    const replicas = await stopAndReadReplicas(convs, 1500);
    for (const c of convs) {
      const want = replicas[0].get(c)!;
      assert.equal(want.at(-1), `${c}/last`);
      for (const t of acked.get(c) ?? []) assert.ok(want.includes(t), `acknowledged ${t} missing`);
      for (let i = 1; i < members.length; i++) assert.deepEqual(replicas[i].get(c), want, `${c} differs on ${members[i].name}`);
    }
    await Promise.all(members.map(startMember));
  }

  test('a node that lost its data dir rejoins as a new incarnation and is repaired from its peers', async () => {
    const convs = Array.from({ length: 8 }, (_, i) => `lost-${i}`);
    await seed(convs, 20);
    const lost = members[2];
    await lost.node!.kill9();
    lost.node = null;
    fs.rmSync(lost.dataDir, { recursive: true, force: true });
    const writes = appendUntilStopped(() => urlOf(0), convs);
    await sleep(500);
    await startMember(lost);
    assert.ok(lost.node!.logs.some((l) => l.includes('"cluster_member"') && l.includes('joining as a new incarnation')), 'the node did not join as a new incarnation');
    await waitRepaired(2);
    const acked = await writes.stop();
    assert.ok([...acked.values()].every((a) => a.length > 0), 'appends stalled while the node rejoined');
    await checkRepairedReplicas(convs, acked);
  });

  for (const where of ['write-ahead log', 'state store'] as const) {
    test(`a node whose ${where} was damaged while it was stopped detects it, never serves it, and is repaired from its peers`, async () => {
      const convs = Array.from({ length: 8 }, (_, i) => `damaged-${where.length}-${i}`);
      await seed(convs, 20);
      const victim = members[1];
      await victim.node!.stop();
      victim.node = null;
      const partition = path.join(victim.dataDir, 'partition-000');
      if (where === 'write-ahead log') flipWalByte(path.join(partition, 'wal'));
      else await flipStoredValue(path.join(partition, 'state'));
      await startMember(victim);
      assert.ok(victim.node!.logs.some((l) => l.includes('"data_damaged"')), 'the damage was not detected');
      assert.ok(victim.node!.logs.some((l) => l.includes('joining as a new incarnation')), 'the node did not start over');
      const aside = fs.readdirSync(path.dirname(victim.dataDir)).filter((f) => f.startsWith(`${path.basename(victim.dataDir)}.damaged-`));
      assert.equal(aside.length, 1, 'the damaged data dir was not kept aside');
      fs.rmSync(path.join(path.dirname(victim.dataDir), aside[0]), { recursive: true, force: true });
      await waitRepaired(1);
      await checkRepairedReplicas(convs, new Map());
    });
  }

  test('a group without quorum answers 503 within the bound, and heals by itself', async () => {
    assert.equal((await api(urlOf(0), 'PUT', '/v1/conversations/quorum', {})).status, 200);
    const survivor = members[0];
    for (const m of members.slice(1)) {
      const node = m.node!;
      m.node = null;
      await node.kill9();
    }
    // The survivor's leaders step down (check-quorum); a request then waits at most 2 s for one.
    await sleep(2500);
    const t0 = performance.now();
    const r = await api(survivor.node!.url, 'POST', '/v1/conversations/quorum/messages', text('lonely'));
    const ms = performance.now() - t0;
    assert.equal(r.status, 503, r.text);
    assert.equal(r.headers.get('retry-after'), '1');
    assert.ok(ms < 3000, `503 after ${Math.round(ms)} ms`);
    assert.equal((await api(survivor.node!.url, 'GET', '/health/ready')).status, 503);
    await Promise.all(members.slice(1).map(startMember));
    const healed = await api(survivor.node!.url, 'POST', '/v1/conversations/quorum/messages', text('together'));
    assert.equal(healed.status, 201, healed.text);
  });
});

/**
 * Flips one byte in the middle of the newest write-ahead log segment's
 * records, with valid records after it: damage, not a torn last write.
 */
function flipWalByte(walDir: string): void {
  let newest: { file: string; seq: number } | null = null;
  for (const f of fs.readdirSync(walDir)) {
    const m = /^wal-([0-9a-f]{16})\.seg$/.exec(f);
    if (m === null) continue;
    const seq = parseInt(m[1], 16);
    const h = Buffer.alloc(16);
    const fd = fs.openSync(path.join(walDir, f), 'r');
    fs.readSync(fd, h, 0, 16, 0);
    fs.closeSync(fd);
    // A live segment's header names its own seq (spares name an old one or are zero).
    if (h.readUInt32LE(8) + h.readUInt32LE(12) * 2 ** 32 === seq && (newest === null || seq > newest.seq)) newest = { file: f, seq };
  }
  assert.ok(newest !== null, `no live WAL segment in ${walDir}`);
  const file = path.join(walDir, newest.file);
  const bytes = fs.readFileSync(file);
  // Walk the records (len u32 | crc u32 | payload) to the end marker: beyond it lie a recycled segment's old bytes.
  const records: number[] = [];
  for (let off = 32; off + 8 <= bytes.length && bytes.readUInt32LE(off) !== 0; off += 8 + bytes.readUInt32LE(off)) records.push(off);
  assert.ok(records.length >= 30, `the newest segment holds only ${records.length} records`);
  const at = records[Math.floor(records.length / 3)] + 8 + 1;
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from([bytes[at] ^ 0x5a]), 0, 1, at);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
}

/** Rewrites one stored message with a payload byte flipped under its old checksum, as a bit flip on disk would. */
async function flipStoredValue(stateDir: string): Promise<void> {
  const store = await PartitionStore.open(0, stateDir);
  try {
    const [[key, value]] = await store.db.scan({ gte: Buffer.from([PREFIX.message]), lt: Buffer.from([PREFIX.message + 1]), limit: 1 });
    const bad = Buffer.from(value);
    bad[bad.length - 2] ^= 0x01;
    await store.db.write([{ type: 'put', key, value: bad }], true);
  } finally {
    await store.close();
  }
}

