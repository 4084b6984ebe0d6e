// Token estimators (actors/tokens.ts) and the CPU pool (runtime/cpu-pool.ts).
// The core property: for every corpus item and every fast-path encoding, the
// estimator's count — and gpt-tokenizer's own count wherever the router may
// use it — equals @dqbd/tiktoken's encode(text, [], []).length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import {
  DEFAULT_ESTIMATOR_SPEC,
  DIVERGENT_SOURCE,
  FAST_ENCODE_OPTIONS,
  FAST_PATH_UNICODE,
  asciiPathLive,
  countAsciiO200k,
  countMessageTokens,
  createEstimator,
  fastEncoder,
  fastPathEligible,
  fastPathSupported,
  parseEstimatorSpec,
  referenceEncoder,
  type TiktokenEncodingName,
} from '../../actors/tokens.js';
import { CpuPool, DEFAULT_LARGE_TEXT_CHARS, countPartsTokens } from '../../runtime/cpu-pool.js';
import { TOKENIZATION_COST_MAX, tokenizationCost } from '../../actors/tokens.js';
import { ENGLISH_280, loadCorpus, prng, toolOutputBlob } from '../fixtures/tokens/corpus.js';
import { scanDivergence } from '../fixtures/tokens/unicode-scan.js';

const require = createRequire(import.meta.url);
const tiktoken = require('@dqbd/tiktoken') as typeof import('@dqbd/tiktoken');

const FAST_ENCODINGS: TiktokenEncodingName[] = ['o200k_base', 'cl100k_base'];
const DIVERGENT = new RegExp(DIVERGENT_SOURCE, 'u');
const corpus = loadCorpus();

const show = (s: string) => (s.length > 60 ? JSON.stringify(s.slice(0, 60)) + `…(${s.length})` : JSON.stringify(s));

test('o200k_base ASCII pre-tokenizer: the same pieces as gpt-tokenizer\'s split regex, on 30,000 random strings', () => {
  const { O200K_TOKEN_SPLIT_REGEX } = require('gpt-tokenizer/cjs/encodingParams/constants') as { O200K_TOKEN_SPLIT_REGEX: RegExp };
  // Weighted toward what the regex treats specially: case runs, contractions,
  // digits, whitespace kinds, newlines, '/', control chars.
  const alphabet = [..."aAzZqQ09 5'sStTdDmMlLvVeErR\t\n\r\u000b\f/.,!-_\"(\u0000\u001f\u007f", '  ', '\n\n', "'ll", "'VE", ' a', '12345'];
  const random = prng(42);
  const pieces = (text: string) => {
    const out: string[] = [];
    countAsciiO200k(text, (p) => (out.push(p), 1));
    return out;
  };
  for (let n = 0; n < 30_000; n++) {
    let text = '';
    const len = Math.floor(random() * 24);
    for (let k = 0; k < len; k++) text += random() < 0.9 ? alphabet[Math.floor(random() * alphabet.length)] : String.fromCharCode(Math.floor(random() * 128));
    const expected = [...text.matchAll(O200K_TOKEN_SPLIT_REGEX)].map((m) => m[0]);
    assert.deepEqual(pieces(text), expected, `pieces of ${JSON.stringify(text)}`);
  }
  assert.deepEqual(pieces(ENGLISH_280), [...ENGLISH_280.matchAll(O200K_TOKEN_SPLIT_REGEX)].map((m) => m[0]));
});

test('corpus is non-trivial and its committed files are small', () => {
  assert.ok(corpus.length > 5000, `corpus has ${corpus.length} items`);
  const big = corpus.find((c) => c.name === 'tool-output-100k');
  assert.ok(big !== undefined && big.text.length === 100_000);
  const committed = corpus.filter((c) => c.name.endsWith('.txt')).reduce((n, c) => n + Buffer.byteLength(c.text), 0);
  assert.ok(committed < 300_000, `committed fixtures are ${committed} bytes`);
  // Deterministic.
  assert.equal(toolOutputBlob(5000), toolOutputBlob(5000));
});

for (const encoding of FAST_ENCODINGS) {
  test(`${encoding}: estimator and gpt-tokenizer equal @dqbd/tiktoken on the corpus`, () => {
    const ref = referenceEncoder(encoding);
    const fast = fastEncoder(encoding);
    const est = createEstimator(`tiktoken:${encoding}`);
    const failures: string[] = [];
    let fastRouted = 0;
    let rawChecked = 0;
    for (const { name, text } of corpus) {
      const expected = ref.encode(text, [], []).length;
      if (ref.encode_ordinary(text).length !== expected) failures.push(`${name}: encode_ordinary differs`);
      const got = est.countText(text);
      if (got !== expected) failures.push(`${name}: estimator ${got} != reference ${expected} for ${show(text)}`);
      if (fastPathEligible(text)) fastRouted++;
      // gpt-tokenizer itself, on every text the router may hand it — and on
      // more: any text free of DIVERGENT code points, whatever its ASCII share.
      if (!DIVERGENT.test(text)) {
        rawChecked++;
        const raw = fast.countTokens(text, FAST_ENCODE_OPTIONS);
        if (raw !== expected) failures.push(`${name}: gpt-tokenizer ${raw} != reference ${expected} for ${show(text)}`);
      }
    }
    assert.deepEqual(failures.slice(0, 20), [], `${failures.length} mismatches`);
    assert.ok(rawChecked > corpus.length * 0.6, `raw check covered ${rawChecked}/${corpus.length}`);
    assert.ok(fastRouted > 2000, `router sent ${fastRouted} items to the fast path`);
  });

  test(`${encoding}: gpt-tokenizer equals the reference outside DIVERGENT on a Unicode sample`, () => {
    const cps = new Set<number>();
    const range = (a: number, b: number) => {
      for (let cp = a; cp <= b; cp++) cps.add(cp);
    };
    range(0x0000, 0x024f); // ASCII, Latin-1, Latin Extended
    range(0x0300, 0x036f); // combining marks
    range(0x2000, 0x206f); // general punctuation, Unicode spaces
    range(0x3000, 0x303f); // CJK punctuation, ideographic space
    range(0xd7f0, 0xe00f); // around and including the surrogates
    range(0xfe00, 0xfe0f); // variation selectors
    range(0xfef0, 0xffff); // BOM, specials, U+FFFD
    range(0xe0000, 0xe007f); // tags
    // Both edges of every DIVERGENT range.
    for (const m of DIVERGENT_SOURCE.matchAll(/\\u\{?([0-9A-Fa-f]+)\}?/g)) {
      const cp = parseInt(m[1], 16);
      range(Math.max(0, cp - 2), cp + 2);
    }
    const rnd = prng(2024);
    for (let i = 0; i < 1500; i++) cps.add(Math.floor(rnd() * 0x40000));
    const sample = [...cps].filter((cp) => !DIVERGENT.test(String.fromCodePoint(cp))).sort((a, b) => a - b);
    const diverging = scanDivergence(encoding, sample);
    assert.deepEqual(
      diverging.map((cp) => 'U+' + cp.toString(16).toUpperCase()),
      [],
      'code points outside DIVERGENT where gpt-tokenizer differs: extend DIVERGENT_SOURCE (run unicode-scan.js --full)',
    );
  });

  test(`${encoding}: seeded random strings near the regex edge cases agree`, () => {
    const ref = referenceEncoder(encoding);
    const est = createEstimator(`tiktoken:${encoding}`);
    const parts = [' ', '  ', '\t', '\n', '\r\n', '\r', '\n\n', '\u00a0', '\u3000', '\u2028', '\u000b', '\f', 'x', 'ab', 'AB', '1', '123', '.', '!', "'s", "'S", "'ll", '😀', '漢', 'ſ', "'ſ", '\ufeff', '\u0085'];
    const rnd = prng(99);
    const failures: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      let s = '';
      const n = 1 + Math.floor(rnd() * 8);
      for (let k = 0; k < n; k++) s += parts[Math.floor(rnd() * parts.length)];
      const expected = ref.encode(s, [], []).length;
      const got = est.countText(s);
      if (got !== expected) failures.push(`${show(s)}: ${got} != ${expected}`);
    }
    assert.deepEqual(failures.slice(0, 20), []);
  });
}

test('the fast path is live on this runtime (else counts are still right, only slower)', (t) => {
  if (!fastPathSupported()) {
    t.skip(`process.versions.unicode is ${process.versions.unicode}, DIVERGENT was derived for ${FAST_PATH_UNICODE}: reference only`);
    return;
  }
  assert.equal(createEstimator('tiktoken:gpt-4o').backend, 'gpt-tokenizer+tiktoken');
  assert.equal(createEstimator('tiktoken:gpt-4o', { fastPath: false }).backend, 'tiktoken');
  assert.equal(createEstimator('tiktoken:p50k_base').backend, 'tiktoken');
  assert.equal(asciiPathLive(), true, "gpt-tokenizer's BPE core is reachable: all-ASCII o200k_base texts skip its split regex");
  assert.equal(fastPathEligible(ENGLISH_280), true);
  assert.equal(fastPathEligible('plain ascii with a BOM \ufeff inside'), false);
  assert.equal(fastPathEligible('x'.repeat(100) + '\u0085'), false);
  assert.equal(fastPathEligible('漢字かな交じり文'), false); // mostly non-ASCII → reference
  assert.equal(fastPathEligible('résumé of the café meeting, nothing unusual here'), true);
});

test('specs map models to encodings like @dqbd/tiktoken encoding_for_model', () => {
  const cases: [string, string][] = [
    ['tiktoken:gpt-4o', 'o200k_base'],
    ['tiktoken:gpt-4o-mini', 'o200k_base'],
    ['tiktoken:gpt-4', 'cl100k_base'],
    ['tiktoken:gpt-3.5-turbo', 'cl100k_base'],
    ['tiktoken:o200k_base', 'o200k_base'],
    ['tiktoken:cl100k_base', 'cl100k_base'],
    ['tiktoken:text-davinci-003', 'p50k_base'],
  ];
  for (const [spec, encoding] of cases) {
    const est = createEstimator(spec);
    assert.equal(est.encoding, encoding, spec);
    assert.equal(est.name, spec);
    const model = spec.slice('tiktoken:'.length);
    if (!model.includes('_base')) {
      assert.equal(tiktoken.get_encoding_name_for_model(model as Parameters<typeof tiktoken.get_encoding_name_for_model>[0]), encoding);
    }
  }
  assert.equal(DEFAULT_ESTIMATOR_SPEC, 'tiktoken:gpt-4o');
  assert.equal(createEstimator(DEFAULT_ESTIMATOR_SPEC).encoding, 'o200k_base');
  // Reference-only encodings count like tiktoken too.
  const p50 = createEstimator('tiktoken:text-davinci-003');
  const ref = tiktoken.get_encoding('p50k_base');
  for (const text of [ENGLISH_280, 'def f(x):\n    return x ** 2\n', '<|endoftext|>']) {
    assert.equal(p50.countText(text), ref.encode(text, [], []).length);
  }
  ref.free();
  // Surrounding whitespace is ignored (env values).
  assert.equal(createEstimator('  tiktoken:gpt-4o\n').name, 'tiktoken:gpt-4o');
});

test('unknown specs throw a clear Error', () => {
  for (const spec of ['', 'gpt-4o', 'tiktoken', 'tiktoken:', 'tiktoken:gpt-9000', 'tiktoken:O200K_BASE', 'tiktoken:r50k', 'chars', 'chars:', 'chars:0', 'chars:-1', 'chars:1.5', 'chars:x', 'chars:4x', 'bytes:4', 'TIKTOKEN:gpt-4o']) {
    assert.throws(
      () => createEstimator(spec),
      (err: unknown) => err instanceof Error && /^unknown token estimator/.test(err.message) && err.message.includes('tiktoken:<model>'),
      `spec ${JSON.stringify(spec)}`,
    );
    assert.throws(() => parseEstimatorSpec(spec), Error);
  }
  assert.throws(() => createEstimator(undefined as unknown as string), Error);
});

test('chars:N is ceil(length / N) in UTF-16 code units', () => {
  const c4 = createEstimator('chars:4');
  assert.equal(c4.name, 'chars:4');
  assert.equal(c4.backend, 'chars');
  assert.equal(c4.countText(''), 0);
  assert.equal(c4.countText('a'), 1);
  assert.equal(c4.countText('abcd'), 1);
  assert.equal(c4.countText('abcde'), 2);
  assert.equal(c4.countText('x'.repeat(1000)), 250);
  assert.equal(c4.countText('x'.repeat(1001)), 251);
  const c1 = createEstimator('chars:1');
  assert.equal(c1.countText('😀'), 2); // one code point, two UTF-16 units
  assert.equal(c1.countText('漢字'), 2);
  assert.equal(createEstimator('chars:3').countText('abcdefg'), 3);
});

test('special-token text counts as ordinary text, never throws', () => {
  for (const encoding of FAST_ENCODINGS) {
    const ref = referenceEncoder(encoding);
    // tiktoken's default encode() refuses it; that is why the reference is encode(text, [], []).
    assert.throws(() => ref.encode('a <|endoftext|> b'), /special token/);
    for (const fastPath of [true, false]) {
      const est = createEstimator(`tiktoken:${encoding}`, { fastPath });
      const n = est.countText('<|endoftext|>');
      assert.ok(n > 1, `${encoding}: "<|endoftext|>" is ${n} ordinary tokens, not the 1 control token`);
      assert.equal(n, ref.encode_ordinary('<|endoftext|>').length);
      assert.equal(est.countText('x<|endofprompt|>y<|fim_prefix|>'), ref.encode_ordinary('x<|endofprompt|>y<|fim_prefix|>').length);
    }
  }
  assert.equal(createEstimator('tiktoken:gpt-4o').countText('<|endoftext|>'), 7);
});

test('a lone surrogate counts exactly like U+FFFD (as the reference does)', () => {
  for (const encoding of FAST_ENCODINGS) {
    const ref = referenceEncoder(encoding);
    for (const fastPath of [true, false]) {
      const est = createEstimator(`tiktoken:${encoding}`, { fastPath });
      for (const s of ['\ud800', '\udfff', 'ab\udc00cd', "it'\ud83d", 'plain ascii text then a lone \ud83d surrogate and more ascii text']) {
        const replaced = s.replace(/[\ud800-\udfff]/g, '\ufffd');
        assert.equal(est.countText(s), est.countText(replaced), `${encoding} ${show(s)}`);
        assert.equal(est.countText(s), ref.encode(s, [], []).length);
      }
    }
  }
});

test('countMessageTokens sums each text part on its own; other parts count 0', () => {
  const est = createEstimator('tiktoken:gpt-4o');
  const a = 'Hello';
  const b = ' world, how are you?';
  assert.equal(countMessageTokens(est, []), 0);
  assert.equal(countMessageTokens(est, [{ type: 'text', text: a }]), est.countText(a));
  assert.equal(
    countMessageTokens(est, [
      { type: 'text', text: a },
      { type: 'image', url: 'https://example.com/x.png' },
      { type: 'text', text: b },
      { type: 'reasoning', text: '' },
      { type: 'tool_result', text: 42 },
      { type: 'file', text: null },
      null,
      'a bare string',
      7,
      [a],
    ]),
    est.countText(a) + est.countText(b),
  );
  // Each part is encoded on its own, not concatenated.
  const x = 'a';
  const y = 'b';
  assert.notEqual(est.countText(x) + est.countText(y), est.countText(x + y));
  assert.equal(countMessageTokens(est, [{ text: x }, { text: y }]), est.countText(x) + est.countText(y));
  const c4 = createEstimator('chars:4');
  assert.equal(countMessageTokens(c4, [{ type: 'text', text: 'abcde' }, { type: 'text', text: 'abc' }]), 3);
});

test('countPartsTokens: inline without a pool, equal with one; pool basics', async () => {
  const spec = 'tiktoken:gpt-4o';
  const est = createEstimator(spec);
  const big = toolOutputBlob(50_000);
  const parts: unknown[] = [
    { type: 'text', text: ENGLISH_280 },
    { type: 'tool_result', text: big },
    { type: 'image' },
    { type: 'text', text: '漢字'.repeat(3000) },
    { type: 'text', text: '<|endoftext|>\ud800' },
  ];
  const expected = countMessageTokens(est, parts);
  assert.equal(await countPartsTokens(est, null, parts, 1000), expected);
  assert.ok(DEFAULT_LARGE_TEXT_CHARS >= 256);

  assert.throws(() => CpuPool.create({ threads: 0, estimatorSpec: spec }), /threads/);
  assert.throws(() => CpuPool.create({ threads: 1, estimatorSpec: 'tiktoken:nope' }), /unknown token estimator/);

  const pool = CpuPool.create({ threads: 2, estimatorSpec: spec });
  try {
    assert.equal(pool.estimatorSpec, spec);
    assert.equal(await countPartsTokens(est, pool, parts, 1000), expected);
    assert.equal(await countPartsTokens(est, pool, parts, 0), expected);
    assert.deepEqual(await pool.countTokens([]), []);
    // Many calls in one turn are coalesced; each gets its own counts back, in order.
    const texts = Array.from({ length: 40 }, (_, i) => `${i} `.repeat(i * 50) + '<|im_end|>' + 'é'.repeat(i));
    const results = await Promise.all(texts.map((t, i) => pool.countTokens([t, texts[39 - i]])));
    results.forEach((r, i) => assert.deepEqual(r, [est.countText(texts[i]), est.countText(texts[39 - i])]));
    // A pool counting with another spec is refused rather than silently mixed.
    await assert.rejects(countPartsTokens(createEstimator('chars:4'), pool, parts, 1000), /estimator/);
  } finally {
    await pool.close();
  }
  await assert.rejects(pool.countTokens(['x']), /closed/);
  // A closed (or failed) pool falls back to counting inline.
  assert.equal(await countPartsTokens(est, pool, parts, 1000), expected);
});

test('lazy reference: ASCII counts inline without it; other texts go to the pool, counts unchanged', async () => {
  const eager = createEstimator('tiktoken:gpt-4o');
  const lazy = createEstimator('tiktoken:gpt-4o', { lazyReference: true });
  const cjk = '漢字のテキストと한국어 문장'.repeat(8);
  assert.equal(lazy.countInline?.('plain English words'), eager.countText('plain English words'));
  assert.equal(lazy.countInline?.(cjk), undefined);
  assert.equal(eager.countInline?.(cjk), eager.countText(cjk));
  const pool = CpuPool.create({ threads: 1, estimatorSpec: 'tiktoken:gpt-4o' });
  try {
    const parts = [{ type: 'text', text: 'hello there' }, { type: 'text', text: cjk }];
    assert.equal(await countPartsTokens(lazy, pool, parts, 2048), eager.countText('hello there') + eager.countText(cjk));
  } finally {
    await pool.close();
  }
  // Without a pool the lazy estimator loads the reference on first need; counts stay equal.
  assert.equal(lazy.countText(cjk), eager.countText(cjk));
  assert.equal(lazy.countInline?.(cjk), eager.countText(cjk));
});

test('work bound: unbroken runs that would take the BPE minutes are refused with 400; prose is not', async () => {
  const est = createEstimator('tiktoken:gpt-4o');
  const prose = loadCorpus().find((c) => c.text.length > 10_000) ?? { text: ENGLISH_280.repeat(400) };
  assert.ok(tokenizationCost(prose.text) < TOKENIZATION_COST_MAX / 100);
  assert.ok(tokenizationCost('漢字'.repeat(5_000)) < TOKENIZATION_COST_MAX, '10k unbroken CJK chars stay countable');
  assert.ok(tokenizationCost('漢字。'.repeat(30_000)) < TOKENIZATION_COST_MAX / 1000, 'punctuated CJK is cheap');
  assert.ok(tokenizationCost('漢'.repeat(20_000)) > TOKENIZATION_COST_MAX, '20k unbroken CJK chars (~3 s) are refused');
  assert.ok(tokenizationCost('a'.repeat(100_000)) > TOKENIZATION_COST_MAX);
  assert.ok(tokenizationCost('😀'.repeat(30_000)) > TOKENIZATION_COST_MAX);
  assert.ok(tokenizationCost('1234567890'.repeat(100_000)) < 1000, 'digits are cut in threes');
  await assert.rejects(
    countPartsTokens(est, null, [{ type: 'text', text: 'x'.repeat(200_000) }], 2048),
    (e: unknown) => e instanceof Error && (e as { code?: string }).code === 'invalid' && /token_count/.test(e.message),
  );
  assert.equal(await countPartsTokens(est, null, [{ type: 'text', text: ENGLISH_280 }], 2048), est.countText(ENGLISH_280));
});
