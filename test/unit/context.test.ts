// Contexts (SPEC §4): config validation, window arithmetic, policies and the
// apply of context commands — pure, without a node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_SKIP_TYPES,
  type Policy,
  type WindowMemo,
  type WindowSource,
  memoSignature,
  readWindow,
  segments,
  tokensOf,
  usedTokensOfWholeWindow,
  validateContextConfig,
  windowTokens,
} from '../../actors/context.js';
import { Op, REQUIRE_CONTEXT, decodeCommand, encodeCommand, type Command } from '../../actors/commands.js';
import { NO_COMPACTIONS, apply, messageRecordJson, versionAt, type Compactions, type Conversation, type WriteSink } from '../../actors/conversation.js';
import { AppError } from '../../actors/errors.js';
import { WindowMemoCache } from '../../runtime/window-memo.js';

type Part = Record<string, unknown>;
const members = (role: string, parts: Part[]) => JSON.stringify({ role, parts, metadata: {} }).slice(1, -1);
const record = (seq: number, parts: Part[], tokens: number) => messageRecordJson(seq, members('user', parts), tokens, 't');
const text = (t: string): Part => ({ type: 'text', text: t });

/** An in-memory window: `log[i]` is the record text of seq i + 1. */
function source(log: string[], liveFrom = 1, replacement: string[] = []): WindowSource & { fetched: number } {
  const src = {
    fetched: 0,
    lastSeq: log.length,
    liveFrom,
    replacement,
    messages: async (lo: number, hi: number) => {
      src.fetched += hi - lo + 1;
      return log.slice(lo - 1, hi);
    },
  };
  return src;
}

const memo = (): WindowMemo => new WindowMemoCache(1 << 20).view('c', 'sig');
const noRecount = async (): Promise<number[]> => assert.fail('no recount expected');
const seqs = (texts: string[]) => texts.map((t) => (JSON.parse(t) as { seq?: number }).seq ?? 'r');
const lastN = (limit?: number): Policy => ({ strategy: 'last_n', config: limit === undefined ? {} : { limit } });

test('context - config validation: budget, ratio, policies; unknown keys refused', () => {
  assert.deepEqual(validateContextConfig({ token_budget: 100 }), {
    token_budget: 100,
    trigger_ratio: 0.7,
    policy: { strategy: 'last_n', config: {} },
  });
  const ok = validateContextConfig({ token_budget: 5, trigger_ratio: 1, policy: { strategy: 'skip_parts', config: { types: ['a', 'a', 'b'] } } });
  assert.deepEqual(ok.policy, { strategy: 'skip_parts', config: { types: ['a', 'b'] } });
  assert.deepEqual(validateContextConfig({ token_budget: 5, policy: { strategy: 'manual' } }).policy, { strategy: 'manual', config: {} });
  const bad: [unknown, string][] = [
    [{}, 'invalid_token_budget'],
    [{ token_budget: 0 }, 'invalid_token_budget'],
    [{ token_budget: 1.5 }, 'invalid_token_budget'],
    [{ token_budget: '10' }, 'invalid_token_budget'],
    [{ token_budget: 10, trigger_ratio: 0 }, 'invalid_trigger_ratio'],
    [{ token_budget: 10, trigger_ratio: 1.01 }, 'invalid_trigger_ratio'],
    [{ token_budget: 10, trigger_ratio: '0.5' }, 'invalid_trigger_ratio'],
    [{ token_budget: 10, policy: 'last_n' }, 'invalid_policy'],
    [{ token_budget: 10, policy: { strategy: 'nope' } }, 'invalid_policy'],
    [{ token_budget: 10, policy: { strategy: 'last_n', config: { limit: 0 } } }, 'invalid_policy'],
    [{ token_budget: 10, policy: { strategy: 'last_n', config: { max: 3 } } }, 'invalid_policy'],
    [{ token_budget: 10, policy: { strategy: 'skip_parts', config: { types: [''] } } }, 'invalid_policy'],
    [{ token_budget: 10, policy: { strategy: 'skip_parts', config: { types: 'image' } } }, 'invalid_policy'],
    [{ token_budget: 10, policy: { strategy: 'manual', config: { limit: 1 } } }, 'invalid_policy'],
    [{ token_budget: 10, policy: { strategy: 'last_n', extra: 1 } }, 'invalid_policy'],
  ];
  for (const [body, detail] of bad) {
    assert.throws(
      () => validateContextConfig(body as Record<string, unknown>),
      (e: unknown) => e instanceof AppError && e.detail === detail,
      JSON.stringify(body),
    );
  }
});

test('context - window tokens and segments follow appends and compactions without a scan', () => {
  const base = { token_budget: 100, trigger_ratio: 0.5, policy: lastN() };
  const plain = { last_seq: 3, token_total: 30, context: { ...base, compacted: null } };
  assert.equal(windowTokens(plain), 30);
  assert.deepEqual(segments(plain, 0), [{ type: 'live', from_seq: 1, to_seq: 3 }]);
  assert.deepEqual(segments({ ...plain, last_seq: 0, token_total: 0 }, 0), []);
  const compacted = { from_seq: 1, to_seq: 3, tokens_at: 30, replacement_tokens: 4, version: 4 };
  const after = { last_seq: 5, token_total: 50, context: { ...base, compacted } };
  assert.equal(windowTokens(after), 4 + 20);
  assert.deepEqual(segments(after, 1), [
    { type: 'summary', from_seq: 1, to_seq: 3 },
    { type: 'live', from_seq: 4, to_seq: 5 },
  ]);
  // An empty replacement contributes no summary; nothing appended since, no live segment.
  assert.deepEqual(segments({ ...after, last_seq: 3, token_total: 30 }, 0), []);
});

test('context - used_tokens without a read only when the policy keeps the whole window', () => {
  const rec = (policy: Policy, budget: number) => ({ last_seq: 3, token_total: 30, context: { token_budget: budget, trigger_ratio: 1, policy, compacted: null } });
  // manual returns the window untouched, over the budget too.
  assert.equal(usedTokensOfWholeWindow(rec({ strategy: 'manual', config: {} }, 10), 0), 30);
  assert.equal(usedTokensOfWholeWindow(rec(lastN(), 30), 0), 30);
  assert.equal(usedTokensOfWholeWindow(rec(lastN(), 29), 0), null, 'over the budget: the read decides');
  assert.equal(usedTokensOfWholeWindow(rec(lastN(3), 100), 0), 30);
  assert.equal(usedTokensOfWholeWindow(rec(lastN(3), 100), 1), null, 'replacement + 3 live items are over the limit');
  assert.equal(usedTokensOfWholeWindow(rec({ strategy: 'skip_parts', config: {} }, 100), 0), null);
});

test('context - tokensOf reads the stored count, not a token_count inside metadata', () => {
  const t = messageRecordJson(4, '"role":"user","parts":[],"metadata":{"token_count":999}', 17, '2026-01-01T00:00:00.000Z');
  assert.equal(tokensOf(t), 17);
});

test('context - last_n keeps the newest limit, then fits the budget newest-first as a contiguous suffix', async () => {
  const log = [10, 10, 50, 10, 10].map((n, i) => record(i + 1, [text(`m${i + 1}`)], n));
  let r = await readWindow(source(log), lastN(3), 1000, memo(), noRecount);
  assert.deepEqual(seqs(r.texts), [3, 4, 5]);
  assert.equal(r.usedTokens, 70);
  // Budget 30: 5 and 4 fit (20), 3 does not (70) — and 2, 1 stay out although they would fit.
  r = await readWindow(source(log), lastN(), 30, memo(), noRecount);
  assert.deepEqual(seqs(r.texts), [4, 5]);
  assert.equal(r.usedTokens, 20);
  // Budget smaller than the newest message: nothing.
  r = await readWindow(source(log), lastN(), 9, memo(), noRecount);
  assert.deepEqual(r, { texts: [], usedTokens: 0 });
  // Empty window.
  r = await readWindow(source([]), lastN(5), 100, memo(), noRecount);
  assert.deepEqual(r, { texts: [], usedTokens: 0 });
});

test('context - a read walks only as far back as its result reaches', async () => {
  const log = Array.from({ length: 10_000 }, (_, i) => record(i + 1, [text('x')], 1));
  const src = source(log);
  const r = await readWindow(src, lastN(10), 1_000_000, memo(), noRecount);
  assert.deepEqual(seqs(r.texts), [9991, 9992, 9993, 9994, 9995, 9996, 9997, 9998, 9999, 10000]);
  assert.ok(src.fetched <= 64, `fetched ${src.fetched} messages for a 10-message result`);
  const all = source(log);
  assert.equal((await readWindow(all, lastN(), 1_000_000, memo(), noRecount)).texts.length, 10_000);
});

test('context - the window is the replacement followed by the live messages', async () => {
  const replacement = ['{"role":"system","parts":[{"type":"text","text":"sum"}],"metadata":{},"token_count":5,"inserted_at":"t"}'];
  const log = [1, 2, 3, 4].map((i) => record(i, [text(`m${i}`)], 10));
  // Seqs 1..2 were compacted: the live part starts at 3.
  let r = await readWindow(source(log, 3, replacement), lastN(), 100, memo(), noRecount);
  assert.deepEqual(seqs(r.texts), ['r', 3, 4]);
  assert.equal(r.usedTokens, 25);
  r = await readWindow(source(log, 3, replacement), lastN(), 24, memo(), noRecount);
  assert.deepEqual(seqs(r.texts), [3, 4]);
  r = await readWindow(source(log, 3, replacement), { strategy: 'manual', config: {} }, 1, memo(), noRecount);
  assert.deepEqual(seqs(r.texts), ['r', 3, 4], 'manual ignores the budget');
  assert.equal(r.usedTokens, 25);
});

test('context - skip_parts drops listed parts, removes emptied messages, recounts only messages that lost parts', async () => {
  const log = [
    record(1, [text('keep me')], 7),
    record(2, [{ type: 'reasoning', text: 'secret thoughts' }, text('visible answer')], 30),
    record(3, [{ type: 'image', url: 'x' }], 4),
    record(4, [{ type: 'tool_result', text: 'big output' }], 50),
    record(5, [text('has "type":"image" inside its text')], 9),
  ];
  const asked: string[][][] = [];
  const recount = async (t: string[][]) => {
    asked.push(t);
    return t.map((texts) => texts.join('').length);
  };
  const policy: Policy = { strategy: 'skip_parts', config: {} };
  const m = memo();
  const r = await readWindow(source(log), policy, 1000, m, recount);
  assert.deepEqual(seqs(r.texts), [1, 2, 5]);
  const two = JSON.parse(r.texts[1]);
  assert.deepEqual(two.parts, [text('visible answer')]);
  assert.equal(two.token_count, 'visible answer'.length);
  assert.equal(r.usedTokens, 7 + 14 + 9);
  assert.deepEqual(asked, [[['visible answer']]]);
  // The same read again is served from the memo: no new recount.
  const again = await readWindow(source(log), policy, 1000, m, recount);
  assert.deepEqual(again, r);
  assert.equal(asked.length, 1);
  // Listed types replace the defaults.
  const onlyImages = await readWindow(source(log), { strategy: 'skip_parts', config: { types: ['image'] } }, 1000, memo(), recount);
  assert.deepEqual(seqs(onlyImages.texts), [1, 2, 4, 5]);
  // A message that cannot be recounted keeps its stored count.
  const failed = await readWindow(source(log), policy, 1000, memo(), async (t) => t.map(() => -1));
  assert.equal(JSON.parse(failed.texts[1]).token_count, 30);
  assert.ok(DEFAULT_SKIP_TYPES.includes('tool-result'));
});

test('context - the memo is per context and signature; least recently read contexts go first', () => {
  const cache = new WindowMemoCache(10_000);
  const a = cache.view('a', 's1');
  a.set(1, { text: 'x'.repeat(100), tokens: 1 });
  a.set(2, null);
  a.set(3, 7);
  assert.deepEqual([a.get(1), a.get(2), a.get(3), a.get(4)], [{ text: 'x'.repeat(100), tokens: 1 }, null, 7, undefined]);
  assert.equal(cache.view('a', 's2').get(1), undefined, 'a new signature starts over');
  assert.equal(cache.view('a', 's1').get(1), undefined, 'and the old one is gone');
  const fill = (id: string) => {
    const m = cache.view(id, 's');
    m.set(1, { text: 'y'.repeat(4000), tokens: 1 });
    return m;
  };
  fill('b');
  fill('c');
  cache.view('b', 's'); // b read again: c is now the least recent
  fill('d');
  assert.ok(cache.view('b', 's').get(1) !== undefined);
  assert.equal(cache.view('c', 's').get(1), undefined);
  // A single context over the whole bound starts over instead of growing.
  const big = cache.view('e', 's');
  for (let i = 0; i < 5; i++) big.set(i, { text: 'z'.repeat(3000), tokens: i });
  assert.equal(big.get(0), undefined);
});

test('context - memo signature changes with the skip types and with each compaction', () => {
  const ctx = (types: string[] | undefined, version: number) => ({
    last_seq: 1,
    token_total: 1,
    context: {
      token_budget: 1,
      trigger_ratio: 1,
      policy: { strategy: 'skip_parts', config: types ? { types } : {} } as Policy,
      compacted: version ? { from_seq: 1, to_seq: 1, tokens_at: 1, replacement_tokens: 1, version } : null,
    },
  });
  const a = memoSignature(ctx(undefined, 0).context.policy, ctx(undefined, 0));
  assert.notEqual(a, memoSignature(ctx(['x'], 0).context.policy, ctx(['x'], 0)));
  assert.notEqual(a, memoSignature(ctx(undefined, 3).context.policy, ctx(undefined, 3)));
});

// --- apply ---------------------------------------------------------------

class Sink implements WriteSink {
  writes = 0;
  compactions: Compactions | null = null;
  putRecord() {
    this.writes++;
  }
  putMessage() {
    this.writes++;
  }
  putIdem() {}
  delIdem() {}
  delMessages() {
    this.writes++;
  }
  setArchivePending() {}
  putCompactions(_id: string, c: Compactions) {
    this.writes++;
    this.compactions = c;
  }
}

const config = JSON.stringify({ token_budget: 100, trigger_ratio: 0.5, policy: { strategy: 'last_n', config: {} } });
const putCtx = (id = 'x', nowMs = 1): Command => ({ op: Op.PutContext, id, nowMs, configJson: config, metadataJson: '{"a":1}' });
const append = (tokenCount: number, flags = REQUIRE_CONTEXT): Command => ({
  op: Op.Append,
  id: 'x',
  nowMs: 2,
  ifVersion: -1,
  tokenCount,
  idemKey: '',
  digest: '',
  messageMembers: members('user', [text('hi')]),
  flags,
});
const compact = (ifVersion: number, tokens: number[]): Command => ({
  op: Op.Compact,
  id: 'x',
  nowMs: 9,
  ifVersion,
  replacement: tokens.map((t) => ({ members: members('system', [text('s')]), tokenCount: t })),
});
const fresh = (): Conversation => ({ record: null, idem: new Map(), compactions: NO_COMPACTIONS });
const errorCode = (r: ReturnType<typeof apply>) => (r.kind === 'error' ? r.error.code : r.kind);

test('context commands - round-trip through bytes', () => {
  const cmds: Command[] = [
    putCtx(),
    { op: Op.PutContext, id: 'y', nowMs: 3, configJson: config, metadataJson: null },
    compact(4, [1, 2, 3]),
    compact(-1, []),
    { op: Op.PatchMetadata, id: 'z', nowMs: 5, patchJson: '{"k":"v"}', flags: REQUIRE_CONTEXT },
  ];
  for (const c of cmds) assert.deepEqual(decodeCommand(encodeCommand(c)), c);
});

test('context apply - appends report the window estimate; compaction swaps the window and bumps the version', () => {
  const c = fresh();
  const sink = new Sink();
  const created = apply(c, putCtx(), sink);
  assert.ok(created.kind === 'record' && created.asContext && created.record.context?.token_budget === 100);
  for (const n of [10, 20, 30]) apply(c, append(n), sink);
  const r = apply(c, append(5), sink);
  assert.ok(r.kind === 'appended');
  assert.equal(r.tokenEstimate, 65);
  // A stale if_version changes nothing.
  const before = sink.writes;
  assert.equal(errorCode(apply(c, compact(3, [7]), sink)), 'conflict');
  assert.equal(sink.writes, before);
  assert.equal(c.record!.version, 4);
  const done = apply(c, compact(4, [7, 1]), sink);
  assert.deepEqual(done, { kind: 'compacted', version: 5 });
  assert.equal(c.compactions.replacement.length, 2);
  assert.deepEqual(sink.compactions, c.compactions);
  assert.deepEqual(c.compactions.seqs, [4]);
  assert.equal(c.record!.last_seq, 4, 'the log is untouched');
  assert.deepEqual(c.record!.context!.compacted, { from_seq: 1, to_seq: 4, tokens_at: 65, replacement_tokens: 8, version: 5 });
  const next = apply(c, append(2), sink);
  assert.ok(next.kind === 'appended' && next.tokenEstimate === 10 && next.version === 6);
  // A second compaction keeps the first seq ever compacted.
  apply(c, compact(-1, []), sink);
  assert.deepEqual(c.compactions.seqs, [4, 5]);
  // Versions of past messages follow from the compaction seqs: 1..4 → 1..4, 5 → 6 (after one compaction).
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((s) => versionAt(s, c.compactions)), [1, 2, 3, 4, 6, 8]);
  assert.equal(c.record!.version, 7);
  assert.equal(c.record!.context!.compacted!.from_seq, 1);
  assert.equal(c.record!.context!.compacted!.to_seq, 5);
  assert.equal(windowTokens(c.record!), 0);
});

test('context apply - PUT on a conversation turns it into a context (window = its whole log); PUT again keeps the compaction', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, { op: Op.Put, id: 'x', nowMs: 1, metadataJson: null }, sink);
  assert.equal(errorCode(apply(c, append(4), sink)), 'not_found', 'context routes need a context');
  apply(c, append(4, 0), sink);
  apply(c, append(6, 0), sink);
  apply(c, putCtx('x', 3), sink);
  assert.equal(windowTokens(c.record!), 10);
  assert.deepEqual(c.record!.metadata, { a: 1 });
  apply(c, compact(-1, [3]), sink);
  const again = apply(c, { op: Op.PutContext, id: 'x', nowMs: 4, configJson: config, metadataJson: null }, sink);
  assert.ok(again.kind === 'record');
  assert.equal(again.record.context!.compacted!.replacement_tokens, 3);
  assert.deepEqual(again.record.metadata, { a: 1 }, 'no metadata in the body keeps it');
});

test('context apply - metadata patch upserts keys; tombstoned contexts refuse every write', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, putCtx(), sink);
  const p = apply(c, { op: Op.PatchMetadata, id: 'x', nowMs: 5, patchJson: '{"b":2,"a":3}', flags: REQUIRE_CONTEXT }, sink);
  assert.ok(p.kind === 'record' && p.asContext);
  assert.deepEqual(c.record!.metadata, { a: 3, b: 2 });
  assert.equal(c.record!.version, 0, 'metadata does not bump the version');
  assert.equal(apply(c, { op: Op.Tombstone, id: 'x', nowMs: 6, flags: REQUIRE_CONTEXT }, sink).kind, 'deleted');
  const writes = sink.writes;
  assert.equal(errorCode(apply(c, append(1), sink)), 'tombstoned');
  assert.equal(errorCode(apply(c, compact(-1, [1]), sink)), 'tombstoned');
  assert.equal(errorCode(apply(c, { op: Op.PatchMetadata, id: 'x', nowMs: 7, patchJson: '{}', flags: REQUIRE_CONTEXT }, sink)), 'tombstoned');
  assert.equal(errorCode(apply(c, putCtx(), sink)), 'tombstoned');
  assert.equal(sink.writes, writes);
  // Compacting a plain conversation, or an unknown id, is not_found.
  const plain = fresh();
  apply(plain, { op: Op.Put, id: 'x', nowMs: 1, metadataJson: null }, sink);
  assert.equal(errorCode(apply(plain, compact(-1, []), sink)), 'not_found');
  assert.equal(errorCode(apply(fresh(), compact(-1, []), sink)), 'not_found');
});

test('context apply - archive trims never reach into the live window', () => {
  const c = fresh();
  const sink = new Sink();
  apply(c, putCtx(), sink);
  for (let i = 0; i < 2; i++) apply(c, append(1), sink);
  apply(c, compact(-1, [1]), sink);
  for (let i = 0; i < 8; i++) apply(c, append(1), sink);
  const r = apply(c, { op: Op.AckArchived, id: 'x', nowMs: 5, seq: 10, tailKeep: 1 }, sink);
  assert.deepEqual(r, { kind: 'archived', archivedSeq: 10, trimmedSeq: 2 }, 'seqs 3..10 are the live window');
});
