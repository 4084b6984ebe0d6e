// Contexts (SPEC §4): a conversation seen through a token budget and a window
// policy. The replicated state is small and updated in O(1) per append:
//   - the record's running `token_total` (tokens of every message ever appended),
//   - the context config and the latest compaction (seq range it covers,
//     `token_total` at that moment, the replacement's token count),
//   - the replacement messages themselves (written once per compaction).
// So window tokens = replacement tokens + tokens appended since, without a
// scan; a window read walks only the newest messages it returns (readWindow).
import { invalid } from './errors.js';
import { isPlainObject, nonNegativeInt } from './validate.js';

export type Policy =
  | { strategy: 'last_n'; config: { limit?: number } }
  | { strategy: 'skip_parts'; config: { types?: string[] } }
  | { strategy: 'manual'; config: Record<string, never> };

export interface ContextConfig {
  token_budget: number;
  trigger_ratio: number;
  policy: Policy;
}

export interface Compaction {
  /** First seq ever compacted (kept across compactions). */
  from_seq: number;
  /** last_seq when the latest compaction was applied. */
  to_seq: number;
  /** The record's token_total at that moment. */
  tokens_at: number;
  replacement_tokens: number;
  /** Version the compaction produced: tells one compaction's replacement from another's. */
  version: number;
}

export interface ContextState extends ContextConfig {
  compacted: Compaction | null;
}

/** What the window arithmetic needs of a conversation record. */
export interface WindowRecord {
  last_seq: number;
  token_total: number;
  context: ContextState | null;
}

export interface Segment {
  type: 'summary' | 'live';
  from_seq: number;
  to_seq: number;
}

/** skip_parts drops these part types when the policy lists none. */
export const DEFAULT_SKIP_TYPES: readonly string[] = ['reasoning', 'tool_result', 'tool-result', 'image', 'file'];

const SKIP_TYPES_MAX = 64;
const TYPE_CHARS_MAX = 128;
export const REPLACEMENT_MESSAGES_MAX = 10_000;

/** First seq of the live part of the window (messages appended since the latest compaction). */
export function liveFrom(rec: WindowRecord): number {
  return rec.context?.compacted ? rec.context.compacted.to_seq + 1 : 1;
}

/** Tokens of the whole window before the policy: replacement + everything appended since. */
export function windowTokens(rec: WindowRecord): number {
  const c = rec.context?.compacted;
  return c ? c.replacement_tokens + rec.token_total - c.tokens_at : rec.token_total;
}

/**
 * SPEC §4: one summary segment (first seq ever compacted .. last seq at the
 * latest compaction) when the replacement is non-empty, then one live
 * segment for the seqs appended since; [] for an empty window.
 */
export function segments(rec: WindowRecord, replacementCount: number): Segment[] {
  const out: Segment[] = [];
  const c = rec.context?.compacted;
  if (c && replacementCount > 0) {
    // A compaction of an empty log covers no seq at all.
    out.push(c.to_seq >= c.from_seq ? { type: 'summary', from_seq: c.from_seq, to_seq: c.to_seq } : { type: 'summary', from_seq: 0, to_seq: 0 });
  }
  const lo = liveFrom(rec);
  if (rec.last_seq >= lo) out.push({ type: 'live', from_seq: lo, to_seq: rec.last_seq });
  return out;
}

/**
 * used_tokens of a window read when the policy keeps the whole window, found
 * without reading a message: manual always, last_n when the window is
 * within its limit and the budget. null when a read must decide (skip_parts
 * may drop and recount parts).
 */
export function usedTokensOfWholeWindow(rec: WindowRecord, replacementCount: number): number | null {
  const ctx = rec.context!;
  const tokens = windowTokens(rec);
  if (ctx.policy.strategy === 'manual') return tokens;
  if (ctx.policy.strategy === 'skip_parts') return null;
  const items = replacementCount + Math.max(0, rec.last_seq - liveFrom(rec) + 1);
  return tokens <= ctx.token_budget && items <= (ctx.policy.config.limit ?? Infinity) ? tokens : null;
}

export function needsCompaction(rec: WindowRecord, budget: number): boolean {
  const ctx = rec.context;
  return ctx !== null && windowTokens(rec) > ctx.trigger_ratio * budget;
}

/** The compaction a Compact entry produces: the window so far becomes the summary. */
export function nextCompaction(rec: WindowRecord, replacementTokens: number, version: number): Compaction {
  return {
    from_seq: rec.context?.compacted?.from_seq ?? 1,
    to_seq: rec.last_seq,
    tokens_at: rec.token_total,
    replacement_tokens: replacementTokens,
    version,
  };
}

// ---------------------------------------------------------------------------
// Validation of PUT /v1/contexts/:id bodies

function checkKeys(o: Record<string, unknown>, allowed: string[], field: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw invalid('invalid_policy', `${field} has an unknown key "${k}"`);
  }
}

export function validatePolicy(v: unknown): Policy {
  if (v === undefined || v === null) return { strategy: 'last_n', config: {} };
  if (!isPlainObject(v)) throw invalid('invalid_policy', 'policy must be an object {strategy, config}');
  checkKeys(v, ['strategy', 'config'], 'policy');
  const cfg = v.config ?? {};
  if (!isPlainObject(cfg)) throw invalid('invalid_policy', 'policy.config must be an object');
  switch (v.strategy) {
    case 'last_n': {
      checkKeys(cfg, ['limit'], 'policy.config');
      if (cfg.limit === undefined || cfg.limit === null) return { strategy: 'last_n', config: {} };
      if (!nonNegativeInt(cfg.limit) || cfg.limit < 1) {
        throw invalid('invalid_policy', 'policy.config.limit must be an integer >= 1');
      }
      return { strategy: 'last_n', config: { limit: cfg.limit } };
    }
    case 'skip_parts': {
      checkKeys(cfg, ['types'], 'policy.config');
      if (cfg.types === undefined || cfg.types === null) return { strategy: 'skip_parts', config: {} };
      const t = cfg.types;
      if (
        !Array.isArray(t) ||
        t.length > SKIP_TYPES_MAX ||
        !t.every((x) => typeof x === 'string' && x.length > 0 && x.length <= TYPE_CHARS_MAX)
      ) {
        throw invalid(
          'invalid_policy',
          `policy.config.types must be an array of at most ${SKIP_TYPES_MAX} non-empty strings of at most ${TYPE_CHARS_MAX} chars`,
        );
      }
      return { strategy: 'skip_parts', config: { types: [...new Set(t as string[])] } };
    }
    case 'manual':
      checkKeys(cfg, [], 'policy.config');
      return { strategy: 'manual', config: {} };
    default:
      throw invalid('invalid_policy', 'policy.strategy must be one of last_n, skip_parts, manual');
  }
}

export function validateContextConfig(body: Record<string, unknown>): ContextConfig {
  const budget = body.token_budget;
  if (!nonNegativeInt(budget) || budget < 1) throw invalid('invalid_token_budget', 'token_budget must be an integer > 0');
  let ratio = 0.7;
  if (body.trigger_ratio !== undefined && body.trigger_ratio !== null) {
    const r = body.trigger_ratio;
    if (typeof r !== 'number' || !Number.isFinite(r) || r <= 0 || r > 1) {
      throw invalid('invalid_trigger_ratio', 'trigger_ratio must be a number with 0 < trigger_ratio <= 1');
    }
    ratio = r;
  }
  return { token_budget: budget, trigger_ratio: ratio, policy: validatePolicy(body.policy) };
}

// ---------------------------------------------------------------------------
// Window reads

/** The window of one context as a read sees it, fixed when the read starts. */
export interface WindowSource {
  lastSeq: number;
  liveFrom: number;
  /** Replacement message texts, oldest first. */
  replacement: readonly string[];
  /** Message record texts with lo <= seq <= hi, ascending. */
  messages(lo: number, hi: number): Promise<string[]>;
}

/**
 * Token counts of message parts the policy kept, one sum per message (the
 * configured estimator, counted like an append: SPEC §3), or -1 for a message
 * that cannot be counted in bounded time.
 */
export type Recount = (keptTexts: string[][]) => Promise<number[]>;

/** A window item after skip_parts: null = dropped (no parts left). */
export type Mapped = { text: string; tokens: number } | null;

/** A remembered skip_parts result: the token count of an unchanged item, null (dropped), or the rewritten item. */
export type MemoEntry = number | Mapped;

/** skip_parts results per item, valid for one context, one set of types and one compaction (memoSignature). */
export interface WindowMemo {
  get(key: number): MemoEntry | undefined;
  set(key: number, m: MemoEntry): void;
}

/** Messages fetched per step of the newest-first walk; grows while more are needed. */
const CHUNK_FIRST = 64;
const CHUNK_MAX = 1024;

/** token_count of a stored message text (ours end with `"token_count":N,"inserted_at":"…"}`). */
export function tokensOf(text: string): number {
  const at = text.lastIndexOf('"token_count":');
  if (at < 0) throw new Error('message record has no token_count');
  return parseInt(text.slice(at + 14, at + 30), 10);
}

/** What a memoized skip_parts result depends on besides the message itself. */
export function memoSignature(policy: Policy, rec: WindowRecord): string {
  const types = policy.strategy === 'skip_parts' ? (policy.config.types ?? DEFAULT_SKIP_TYPES) : [];
  return `${JSON.stringify(types)}|${rec.context?.compacted?.version ?? 0}`;
}

interface PendingMap {
  key: number;
  obj: { parts: Record<string, unknown>[]; token_count: number };
  keptTexts: string[];
}

/**
 * skip_parts for one text. Texts are JSON.stringify output, so a listed type
 * that occurs in a part appears verbatim as `"type":"<t>"`: texts without any
 * such needle are kept as they are, unparsed.
 */
function mapSkip(text: string, types: ReadonlySet<string>, needles: readonly string[]): Mapped | PendingMap['obj'] {
  if (!needles.some((n) => text.includes(n))) return { text, tokens: tokensOf(text) };
  const obj = JSON.parse(text) as { parts: Record<string, unknown>[]; token_count: number };
  const kept = obj.parts.filter((p) => !types.has(p.type as string));
  if (kept.length === obj.parts.length) return { text, tokens: obj.token_count };
  if (kept.length === 0) return null;
  obj.parts = kept;
  return obj;
}

export interface WindowResult {
  /** Message texts, oldest first. */
  texts: string[];
  usedTokens: number;
}

/**
 * Maps the window through the policy and fits the budget newest-first:
 * last_n keeps the newest `limit`, skip_parts drops listed part types (a
 * message left with no parts goes, one that lost parts is recounted), then
 * the newest messages that fit `budget` are kept (a contiguous suffix: the
 * first that does not fit ends it). manual returns the window untouched.
 * Walks newest-first and stops as soon as the result is complete.
 */
export async function readWindow(src: WindowSource, policy: Policy, budget: number, memo: WindowMemo, recount: Recount): Promise<WindowResult> {
  if (policy.strategy === 'manual') {
    const live = src.lastSeq >= src.liveFrom ? await src.messages(src.liveFrom, src.lastSeq) : [];
    const texts = [...src.replacement, ...live];
    let used = 0;
    for (const t of texts) used += tokensOf(t);
    return { texts, usedTokens: used };
  }
  const limit = policy.strategy === 'last_n' ? (policy.config.limit ?? Infinity) : Infinity;
  const types = policy.strategy === 'skip_parts' ? new Set(policy.config.types ?? DEFAULT_SKIP_TYPES) : null;
  const needles = types === null ? [] : [...types].map((t) => `"type":${JSON.stringify(t)}`);

  const out: string[] = [];
  let used = 0;
  let done = false;
  /** Fits one mapped item; false once the result is complete. */
  const take = (m: Mapped): boolean => {
    if (m === null) return true;
    if (out.length >= limit || used + m.tokens > budget) return false;
    out.push(m.text);
    used += m.tokens;
    return true;
  };
  /** Items newest-first, keyed (seq for live messages, -(i+1) for replacement item i). */
  const walk = async (keys: number[], texts: string[]): Promise<void> => {
    if (types === null) {
      for (const t of texts) if (!take({ text: t, tokens: tokensOf(t) })) return void (done = true);
      return;
    }
    const mapped: (Mapped | undefined)[] = new Array(texts.length);
    const pending: PendingMap[] = [];
    for (let i = 0; i < texts.length; i++) {
      const hit = memo.get(keys[i]);
      if (hit !== undefined) {
        mapped[i] = typeof hit === 'number' ? { text: texts[i], tokens: hit } : hit;
        continue;
      }
      const m = mapSkip(texts[i], types, needles);
      if (m === null || 'text' in m) {
        mapped[i] = m;
        memo.set(keys[i], m === null ? null : m.tokens);
      } else {
        const keptTexts: string[] = [];
        for (const p of m.parts) if (typeof p.text === 'string') keptTexts.push(p.text);
        pending.push({ key: i, obj: m, keptTexts });
      }
    }
    if (pending.length > 0) {
      const counts = await recount(pending.map((p) => p.keptTexts));
      for (let j = 0; j < pending.length; j++) {
        const p = pending[j];
        // -1: a text too costly to count in bounded time; the stored count stands in.
        if (counts[j] >= 0) p.obj.token_count = counts[j];
        const m = { text: JSON.stringify(p.obj), tokens: p.obj.token_count };
        mapped[p.key] = m;
        memo.set(keys[p.key], m);
      }
    }
    for (const m of mapped) if (!take(m!)) return void (done = true);
  };

  let hi = src.lastSeq;
  let chunk = CHUNK_FIRST;
  while (!done && hi >= src.liveFrom) {
    const lo = Math.max(src.liveFrom, hi - chunk + 1);
    const texts = (await src.messages(lo, hi)).reverse();
    if (texts.length !== hi - lo + 1) throw new Error(`window read: expected messages ${lo}..${hi}, got ${texts.length}`);
    const keys = texts.map((_, i) => hi - i);
    await walk(keys, texts);
    hi = lo - 1;
    chunk = Math.min(chunk * 4, CHUNK_MAX);
  }
  if (!done && src.replacement.length > 0) {
    const n = src.replacement.length;
    const keys = Array.from({ length: n }, (_, i) => -(n - i));
    await walk(keys, [...src.replacement].reverse());
  }
  return { texts: out.reverse(), usedTokens: used };
}
