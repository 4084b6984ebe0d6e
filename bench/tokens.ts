// Token counting cost: @dqbd/tiktoken (wasm, the reference) vs gpt-tokenizer
// (pure JS) vs the routed estimator, per call, for a 280-char English message
// and 10 KB / 100 KB texts; then the CPU pool's round trip and its cost on the
// main thread, to pick countPartsTokens' largeTextChars default: offloading
// pays once counting inline costs the main thread more than a pool call does.
//
//   npx tsc -p tsconfig.json && node dist/bench/tokens.js [--quick]
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import {
  FAST_ENCODE_OPTIONS,
  createEstimator,
  fastEncoder,
  referenceEncoder,
} from '../actors/tokens.js';
import { CpuPool, DEFAULT_LARGE_TEXT_CHARS } from '../runtime/cpu-pool.js';
import { ENGLISH_280, cjkText, englishText, toolOutputBlob } from '../test/fixtures/tokens/corpus.js';

const QUICK = process.argv.includes('--quick');
const BUDGET_MS = QUICK ? 150 : 600;
const SPEC = 'tiktoken:gpt-4o';
const ENCODING = 'o200k_base' as const;

const ref = referenceEncoder(ENCODING);
const fast = fastEncoder(ENCODING);
const est = createEstimator(SPEC);

/**
 * CPU µs consumed so far by the calling thread: Linux schedstat (ns on CPU),
 * else event-loop active time (which also counts time runnable but not running).
 */
const threadCpuUs: () => number = fs.existsSync('/proc/thread-self/schedstat')
  ? () => Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1000
  : () => performance.eventLoopUtilization().active * 1000;
const CPU_SOURCE = fs.existsSync('/proc/thread-self/schedstat') ? '/proc/thread-self/schedstat' : 'eventLoopUtilization()';

function fmt(us: number): string {
  if (us >= 10_000) return `${(us / 1000).toFixed(1)} ms`;
  if (us >= 100) return `${us.toFixed(0)} µs`;
  return `${us.toFixed(1)} µs`;
}

function table(head: string[], rows: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ') + ' |';
  console.log(line(head));
  console.log('|' + w.map((n, i) => (i === 0 ? '-'.repeat(n + 2) : '-'.repeat(n + 1) + ':')).join('|') + '|');
  for (const r of rows) console.log(line(r));
}

/**
 * CPU µs of this thread per call of f(text), cycling through `texts`, for
 * about BUDGET_MS (CPU time, not wall time: the host may be busy). `before`
 * runs before each call and is included (it only clears a cache).
 */
function perCall(texts: string[], f: (s: string) => unknown, before?: () => void): number {
  for (let i = 0; i < Math.min(20, texts.length * 3); i++) {
    before?.();
    f(texts[i % texts.length]);
  }
  let n = 0;
  const c0 = threadCpuUs();
  const deadline = performance.now() + BUDGET_MS;
  while (performance.now() < deadline || n < 5) {
    before?.();
    f(texts[n % texts.length]);
    n++;
  }
  return (threadCpuUs() - c0) / n;
}

/** Variants of a text with distinct prefixes, so no call reuses the last one's result. */
function variants(text: string, k = 8): string[] {
  return Array.from({ length: k }, (_, i) => `#${i} ${text}`.slice(0, text.length));
}

// --------------------------------------------------------------- 1. per call

const cjk10k = cjkText(10_000);

const cases: { name: string; text: string }[] = [
  { name: 'English message, 280 chars', text: ENGLISH_280 },
  { name: 'English prose, 10 KB', text: englishText(10_000) },
  { name: 'English prose, 100 KB', text: englishText(100_000) },
  { name: 'tool output (JSON logs), 10 KB', text: toolOutputBlob(10_000) },
  { name: 'tool output (JSON logs), 100 KB', text: toolOutputBlob(100_000) },
  { name: 'CJK text (no repeats), 10 KB', text: cjk10k },
];

console.log(`# Token counting, ${ENCODING} (node ${process.version}, unicode ${process.versions.unicode})\n`);
console.log('gpt-tokenizer keeps an LRU cache of merged pieces: "warm" is steady state on repeated');
console.log('vocabulary, "cold" clears it before every call (first sight of every piece).');
console.log(`Times are CPU time of the calling thread per call (${CPU_SOURCE}).\n`);
const perCallRows: string[][] = [];
const inlineCost = new Map<string, number>();
for (const c of cases) {
  const texts = variants(c.text);
  const tokens = ref.encode(c.text, [], []).length;
  const tRef = perCall(texts, (s) => ref.encode(s, [], []).length);
  const tWarm = perCall(texts, (s) => fast.countTokens(s, FAST_ENCODE_OPTIONS));
  const tCold = perCall(texts, (s) => fast.countTokens(s, FAST_ENCODE_OPTIONS), () => fast.clearMergeCache());
  const tEst = perCall(texts, (s) => est.countText(s));
  inlineCost.set(c.name, tEst);
  perCallRows.push([c.name, String(tokens), fmt(tRef), fmt(tWarm), fmt(tCold), fmt(tEst), `${(tRef / tEst).toFixed(1)}×`]);
}
table(['text', 'tokens', '@dqbd/tiktoken', 'gpt-tokenizer warm', 'gpt-tokenizer cold', 'estimator (routed)', 'speed-up'], perCallRows);

// ------------------------------------------------------------- 2. the pool

/** Main-thread CPU µs and wall µs per awaited call. */
async function poolCall(pool: CpuPool, texts: string[], calls: number): Promise<{ mainUs: number; wallUs: number }> {
  for (let i = 0; i < 5; i++) await pool.countTokens([texts[i % texts.length]]);
  const c0 = threadCpuUs();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) await pool.countTokens([texts[i % texts.length]]);
  const wall = performance.now() - t0;
  return { mainUs: (threadCpuUs() - c0) / calls, wallUs: (wall * 1000) / calls };
}

/** The same, for `k` calls issued in one turn (coalesced into ≤ threads tasks). */
async function poolBurst(pool: CpuPool, texts: string[], k: number, rounds: number): Promise<{ mainUs: number; wallUs: number }> {
  await Promise.all(texts.slice(0, k).map((t) => pool.countTokens([t])));
  const c0 = threadCpuUs();
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) await Promise.all(Array.from({ length: k }, (_, i) => pool.countTokens([texts[(r + i) % texts.length]])));
  const wall = performance.now() - t0;
  return { mainUs: (threadCpuUs() - c0) / (rounds * k), wallUs: (wall * 1000) / rounds };
}

const threads = 1;
const pool = CpuPool.create({ threads, estimatorSpec: SPEC });
await pool.countTokens(['warm up the thread']);
const calls = QUICK ? 100 : 400;

console.log(`\n# CPU pool (piscina, ${threads} thread), one text per call, awaited one after another\n`);
console.log(`main thread = main-thread CPU time per call (submit, setImmediate flush, post, result), from`);
console.log(`${CPU_SOURCE}; round trip = wall time per awaited call.\n`);
const poolRows: string[][] = [];
const tiny = await poolCall(pool, variants('ok'), calls);
poolRows.push(['2 chars (pure overhead)', fmt(tiny.mainUs), fmt(tiny.wallUs), fmt(perCall(variants('ok'), (s) => est.countText(s))), 'no']);
for (const c of cases) {
  const n = c.text.length > 50_000 ? Math.max(20, calls / 10) : calls;
  const r = await poolCall(pool, variants(c.text), n);
  const inline = inlineCost.get(c.name)!;
  poolRows.push([c.name, fmt(r.mainUs), fmt(r.wallUs), fmt(inline), inline > r.mainUs ? 'yes' : 'no']);
}
table(['text', 'pool: main thread', 'pool: round trip', 'inline (main thread)', 'pool pays'], poolRows);

const burst = await poolBurst(pool, variants(ENGLISH_280, 64), 64, QUICK ? 20 : 80);
console.log(`\n64 calls in one turn (coalesced into one task): ${fmt(burst.mainUs)} main thread per call, ${fmt(burst.wallUs)} per burst`);

// ------------------------------------------- 3. crossover → largeTextChars

console.log('\n# Crossover: inline estimator vs pool main-thread cost, by text size\n');
const sizes = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768];
const crossRows: string[][] = [];
const firstPays: Record<string, number | null> = { english: null, tool: null };
const englishBig = englishText(40_000);
const toolBig = toolOutputBlob(40_000);
for (const size of sizes) {
  const row = [String(size)];
  for (const [key, src] of [['english', englishBig], ['tool', toolBig]] as const) {
    const texts = variants(src.slice(0, size));
    const inline = perCall(texts, (s) => est.countText(s));
    const r = await poolCall(pool, texts, QUICK ? 60 : 200);
    if (firstPays[key] === null && inline > r.mainUs) firstPays[key] = size;
    row.push(fmt(inline), fmt(r.mainUs));
  }
  crossRows.push(row);
}
table(['chars', 'English inline', 'English pool main', 'tool output inline', 'tool output pool main'], crossRows);
const crossover = Math.max(firstPays.english ?? Infinity, firstPays.tool ?? Infinity);
console.log(
  `\npool starts to pay at: English ${firstPays.english ?? '> 32768'} chars, tool output ${firstPays.tool ?? '> 32768'} chars ` +
    `→ suggested largeTextChars ≈ ${Number.isFinite(crossover) ? crossover : '> 32768'} (DEFAULT_LARGE_TEXT_CHARS = ${DEFAULT_LARGE_TEXT_CHARS})`,
);
await pool.close();

// ------------------------------------ 4. how texts cross: clone vs UTF-8 buffer

console.log('\n# Posting a text to a thread: main-thread cost of the send (structured clone vs UTF-8 + transfer)\n');
const w = new Worker("const p = require('node:worker_threads').parentPort; p.on('message', () => p.postMessage(0));", { eval: true });
const enc = new TextEncoder();
/** Main-thread CPU µs per send, 100 sends at a time, waiting for the acks in between. */
async function sendCost(send: () => void): Promise<number> {
  let spent = 0;
  let n = 0;
  for (let round = 0; round < (QUICK ? 5 : 20); round++) {
    const acked = new Promise<void>((resolve) => {
      let left = 100;
      const on = () => {
        if (--left === 0) {
          w.off('message', on);
          resolve();
        }
      };
      w.on('message', on);
    });
    const c0 = threadCpuUs();
    for (let i = 0; i < 100; i++) send();
    spent += threadCpuUs() - c0;
    n += 100;
    await acked;
  }
  return spent / n;
}
const sendRows: string[][] = [];
for (const [name, text] of [
  ['English 280', ENGLISH_280],
  ['English 10 KB', englishText(10_000)],
  ['English 100 KB', englishText(100_000)],
  ['CJK 10 KB', cjk10k],
] as const) {
  const clone = await sendCost(() => w.postMessage(text));
  const utf8 = await sendCost(() => {
    const b = enc.encode(text);
    w.postMessage(b, [b.buffer]);
  });
  sendRows.push([name, fmt(clone), fmt(utf8)]);
}
table(['text', 'clone string', 'UTF-8 + transfer'], sendRows);
await w.terminate();
