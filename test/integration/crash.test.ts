// Durability under kill -9: appends run concurrently while the node is killed
// and restarted ROUNDS times. Afterwards every acknowledged append is present
// with its seq, seqs are contiguous from 1, no message appears twice, and
// nothing that was never sent shows up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { api, startNode, tempDir, type NodeProc } from './harness.js';
import { mulberry32 } from '../../runtime/prng.js';

const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 20);
const CONVERSATIONS = 8;
const WRITERS = 24;
const SEED = Number(process.env.CRASH_SEED ?? 7);
// Small WAL segments so the run switches, checkpoints and recycles segments
// many times between kills (the default 32 MiB would never fill here).
const NODE_ENV = { FLEETLM_WAL_SEGMENT_BYTES: String(1024 * 1024), FLEETLM_MAX_BODY_BYTES: String(256 * 1024) };

interface Attempt {
  conv: string;
  text: string;
  /** seq from a 201, or null when the outcome is unknown (killed mid-request). */
  ackedSeq: number | null;
}

test(`crash - ${ROUNDS} kill -9 restarts under append load lose no acknowledged append`, async () => {
  const rand = mulberry32(SEED);
  const dataDir = tempDir('fleetlm-crash-');
  const attempts: Attempt[] = [];
  const readyMs: number[] = [];
  let node: NodeProc = await startNode({ dataDir, env: NODE_ENV });
  try {
    for (let c = 0; c < CONVERSATIONS; c++) assert.equal((await api(node.url, 'PUT', `/v1/conversations/k${c}`, {})).status, 200);
    let counter = 0;
    for (let round = 0; round < ROUNDS; round++) {
      let stop = false;
      const writer = async () => {
        while (!stop) {
          const conv = `k${Math.floor(rand() * CONVERSATIONS)}`;
          const a: Attempt = { conv, text: `r${round}-n${counter++}`, ackedSeq: null };
          attempts.push(a);
          try {
            const r = await api(node.url, 'POST', `/v1/conversations/${conv}/messages`, {
              message: { role: 'user', parts: [{ type: 'text', text: a.text }] },
            });
            if (r.status === 201) a.ackedSeq = r.json.seq;
            else if (r.status !== 503) throw new Error(`unexpected ${r.status} ${r.text}`);
          } catch (err) {
            if (!stop) throw err;
          }
        }
      };
      const writers = Array.from({ length: WRITERS }, writer);
      await new Promise((r) => setTimeout(r, 100 + rand() * 400));
      stop = true;
      await node.kill9();
      await Promise.allSettled(writers);
      const t0 = performance.now();
      node = await startNode({ dataDir, env: NODE_ENV });
      readyMs.push(performance.now() - t0);
    }
    const acked = attempts.filter((a) => a.ackedSeq !== null);
    assert.ok(acked.length > ROUNDS * 20, `too little load to prove anything: ${acked.length} acks`);
    const sent = new Map(attempts.map((a) => [a.text, a]));
    for (let c = 0; c < CONVERSATIONS; c++) {
      const conv = `k${c}`;
      const rec = (await api(node.url, 'GET', `/v1/conversations/${conv}`)).json;
      const stored: any[] = [];
      for (let from = 0; ; ) {
        const page = (await api(node.url, 'GET', `/v1/conversations/${conv}/messages?from=${from}&limit=1000`)).json.messages;
        if (page.length === 0) break;
        stored.push(...page);
        from = page[page.length - 1].seq;
      }
      assert.equal(stored.length, rec.last_seq, `${conv}: record says last_seq ${rec.last_seq}, log has ${stored.length}`);
      assert.equal(rec.version, rec.last_seq);
      stored.forEach((m, i) => assert.equal(m.seq, i + 1, `${conv}: seq gap at position ${i}`));
      const texts = new Set<string>();
      for (const m of stored) {
        const text = m.parts[0].text as string;
        assert.ok(!texts.has(text), `${conv}: ${text} stored twice`);
        texts.add(text);
        const a = sent.get(text);
        assert.ok(a !== undefined && a.conv === conv, `${conv}: ${text} was never sent to it`);
        if (a.ackedSeq !== null) assert.equal(m.seq, a.ackedSeq, `${text}: acked as seq ${a.ackedSeq}, stored at ${m.seq}`);
        assert.equal(typeof m.inserted_at, 'string');
        assert.equal(m.role, 'user');
      }
      for (const a of acked.filter((x) => x.conv === conv)) {
        assert.ok(texts.has(a.text), `${conv}: acknowledged ${a.text} (seq ${a.ackedSeq}) lost`);
      }
    }
    // Segment seqs are never reused: a highest seq above the files present means
    // segments were filled, released and recycled or deleted during the run.
    const walDir = path.join(dataDir, 'partition-000', 'wal');
    const segs = fs.readdirSync(walDir).filter((n) => n.endsWith('.seg'));
    const highest = Math.max(...segs.map((n) => parseInt(n.slice(4, 20), 16)));
    assert.ok(highest > segs.length + 2, `WAL never recycled: ${segs.length} files, highest seq ${highest}`);
    const sorted = [...readyMs].sort((a, b) => a - b);
    console.log(
      `crash: ${ROUNDS} kills, ${acked.length} acked of ${attempts.length} attempts, WAL segment seq ${highest}; restart→ready median ${sorted[sorted.length >> 1].toFixed(0)} ms, max ${sorted[sorted.length - 1].toFixed(0)} ms`,
    );
  } finally {
    await node.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
