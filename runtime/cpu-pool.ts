// The piscina pool for CPU-heavy, stateless work (ARCHITECTURE: "piscina
// pool"). First use: counting the tokens of large texts, so a 100 KB tool
// output does not stall the main thread's event loop for milliseconds.
//
// Batching: every countTokens() call made in one event-loop turn is coalesced
// and flushed from setImmediate as at most `threads` tasks (one per thread,
// texts balanced by length), so the main thread posts at most one message per
// thread per turn. Texts cross as strings (structured clone): on the main
// thread that is cheaper than UTF-8 encoding into a transferable buffer
// (bench/tokens.ts measures both).
//
// The pool threads run the same estimator spec as the main thread, so a count
// is the same wherever it is computed (actors/tokens.ts).
import { Piscina } from 'piscina';
import { limits } from './limits.js';
import {
  TOKENIZATION_COST_MAX,
  parseEstimatorSpec,
  partText,
  tokenizationCost,
  type TokenEstimator,
} from '../actors/tokens.js';
import { invalid } from '../actors/errors.js';
import type { CpuTask, CpuTaskInit, CpuTaskResult } from './cpu-task.js';
import { log } from './log.js';

/**
 * Default for countPartsTokens' `largeTextChars`: texts longer than this go to
 * the pool. From bench/tokens.ts (o200k_base, 2 cores): a pool call costs the
 * main thread ~45–60 µs of CPU (submit, post, result) and ~100–200 µs of
 * latency; counting inline costs ~0.055 µs/char for English and ~0.09 µs/char
 * for JSON tool output (fast path), ~0.4 µs/char for CJK (reference). Inline
 * and pool break even near 1 K chars of English/JSON; at 2 K inline costs
 * 2–3× the pool's main-thread overhead, so the pool clearly pays from there,
 * while chat-sized messages (≤ 2 K chars) keep the lower latency of inline.
 */
export const DEFAULT_LARGE_TEXT_CHARS = limits.poolTextCharsDefault;

export interface CpuPoolOptions {
  /** Pool threads (fixed; started now). */
  threads: number;
  /** Token estimator spec the threads use; must match the main thread's. */
  estimatorSpec: string;
}

interface Job {
  texts: string[];
  counts: number[];
  /** Chunks of this job still running. */
  waiting: number;
  failed: boolean;
  resolve: (counts: number[]) => void;
  reject: (err: unknown) => void;
}

export class CpuPool {
  readonly #pool: Piscina<CpuTask, CpuTaskResult>;
  readonly #threads: number;
  readonly #estimatorSpec: string;
  #pending: Job[] = [];
  #scheduled = false;
  #closed = false;

  private constructor(pool: Piscina<CpuTask, CpuTaskResult>, threads: number, estimatorSpec: string) {
    this.#pool = pool;
    this.#threads = threads;
    this.#estimatorSpec = estimatorSpec;
  }

  /**
   * Starts `threads` threads; throws Error on a bad thread count or estimator
   * spec. Each thread loads the estimator's vocabularies when it starts (for
   * o200k_base ~0.6 s and ~135 MB RSS per thread).
   */
  static create(opts: CpuPoolOptions): CpuPool {
    const threads = opts.threads;
    if (!Number.isInteger(threads) || threads < 1 || threads > 1024) {
      throw new Error(`CpuPool: threads must be an integer in [1, 1024], got ${String(threads)}`);
    }
    // Validate here so a bad spec fails at boot on the caller's thread, not as
    // a rejected task later.
    const spec = parseEstimatorSpec(opts.estimatorSpec).spec;
    const workerData: CpuTaskInit = { estimatorSpec: spec };
    const pool = new Piscina<CpuTask, CpuTaskResult>({
      filename: new URL('./cpu-task.js', import.meta.url).href,
      // Threads start on the first large text and stop when idle: each one
      // holds its own vocabularies (~135 MB RSS for o200k_base).
      minThreads: 0,
      maxThreads: threads,
      idleTimeout: 60_000,
      concurrentTasksPerWorker: 1,
      // Piscina's per-task timing histograms cost main-thread time; unused.
      recordTiming: false,
      workerData,
    });
    // Piscina emits 'error' for failures not tied to a task (a thread that
    // dies while idle, a close timeout); unhandled it would crash the process.
    pool.on('error', (err: unknown) => {
      log('error', 'cpu_pool_error', 'cpu pool error', { err: err instanceof Error ? err.message : String(err) });
    });
    return new CpuPool(pool, threads, spec);
  }

  get threads(): number {
    return this.#threads;
  }

  /** The estimator spec the pool threads count with. */
  get estimatorSpec(): string {
    return this.#estimatorSpec;
  }

  /** Token counts of `texts`, in order, computed on the pool threads. */
  countTokens(texts: string[]): Promise<number[]> {
    if (this.#closed) return Promise.reject(new Error('CpuPool is closed'));
    if (texts.length === 0) return Promise.resolve([]);
    return new Promise<number[]>((resolve, reject) => {
      this.#pending.push({ texts, counts: [], waiting: 0, failed: false, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(this.#flush);
      }
    });
  }

  /** Stops accepting work, finishes what was submitted, stops the threads. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#flush();
    await this.#pool.close();
  }

  readonly #flush = (): void => {
    this.#scheduled = false;
    const jobs = this.#pending;
    if (jobs.length === 0) return;
    this.#pending = [];
    if (jobs.length === 1 && (this.#threads === 1 || jobs[0].texts.length === 1)) {
      // The common case: one call this turn, one task.
      const job = jobs[0];
      this.#pool.run({ op: 'countTokens', texts: job.texts }).then((counts) => job.resolve(Array.from(counts)), job.reject);
      return;
    }

    // Longest first onto the least-loaded of at most `threads` chunks.
    const items: { job: number; index: number; length: number }[] = [];
    for (let j = 0; j < jobs.length; j++) {
      const texts = jobs[j].texts;
      for (let i = 0; i < texts.length; i++) items.push({ job: j, index: i, length: texts[i].length });
    }
    const chunkCount = Math.min(this.#threads, items.length);
    const chunks: { items: typeof items; load: number }[] = [];
    for (let c = 0; c < chunkCount; c++) chunks.push({ items: [], load: 0 });
    if (chunkCount === 1) {
      chunks[0].items = items;
    } else {
      items.sort((a, b) => b.length - a.length);
      for (const item of items) {
        let best = chunks[0];
        for (const ch of chunks) if (ch.load < best.load) best = ch;
        best.items.push(item);
        best.load += item.length + 64; // + a per-text constant
      }
    }

    for (const chunk of chunks) {
      const touched = new Set<number>();
      for (const it of chunk.items) touched.add(it.job);
      for (const j of touched) jobs[j].waiting++;
      const texts = chunk.items.map((it) => jobs[it.job].texts[it.index]);
      this.#pool.run({ op: 'countTokens', texts }).then(
        (counts) => {
          for (let k = 0; k < chunk.items.length; k++) {
            const it = chunk.items[k];
            jobs[it.job].counts[it.index] = counts[k];
          }
          for (const j of touched) {
            const job = jobs[j];
            if (--job.waiting === 0 && !job.failed) job.resolve(job.counts);
          }
        },
        (err: unknown) => {
          for (const j of touched) {
            const job = jobs[j];
            job.waiting--;
            if (!job.failed) {
              job.failed = true;
              job.reject(err);
            }
          }
        },
      );
    }
  };
}

/**
 * Token count of a message's parts (SPEC §3, same result as
 * countMessageTokens): texts up to `largeTextChars` UTF-16 units that `est`
 * can count with what it has loaded (countInline) are counted inline, the
 * others on `pool` (inline when `pool` is null, and when the pool fails). The
 * pool must run the same estimator spec as `est`.
 */
export async function countPartsTokens(
  est: TokenEstimator,
  pool: CpuPool | null,
  parts: unknown[],
  largeTextChars: number,
): Promise<number> {
  let total = 0;
  let large: string[] | null = null;
  for (const part of parts) {
    const text = partText(part);
    if (text === undefined) continue;
    if (text.length > largeTextChars && tokenizationCost(text) > TOKENIZATION_COST_MAX) {
      throw invalid(
        'invalid_message',
        'a text part has an unbroken run too long to count tokens for in bounded time; send the message with token_count',
      );
    }
    if (pool === null) {
      total += est.countText(text);
      continue;
    }
    const inline = text.length > largeTextChars ? undefined : est.countInline ? est.countInline(text) : est.countText(text);
    if (inline === undefined) (large ??= []).push(text);
    else total += inline;
  }
  if (large !== null && pool !== null) {
    if (pool.estimatorSpec !== est.name) {
      throw new Error(`CpuPool counts with "${pool.estimatorSpec}" but the estimator is "${est.name}"`);
    }
    let counts: number[];
    try {
      counts = await pool.countTokens(large);
    } catch {
      // Pool closed (shutdown) or a thread died: the count is the same
      // inline, only slower, so the append still succeeds.
      counts = large.map((text) => est.countText(text));
    }
    for (const c of counts) total += c;
  }
  return total;
}
