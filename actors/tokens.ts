// Token estimators (SPEC §3 token_count, §7 FLEETLM_TOKEN_ESTIMATOR).
//
// Specs:
//   tiktoken:<model>     model → encoding exactly as @dqbd/tiktoken's
//                        encoding_for_model maps it (gpt-4o, gpt-4o-mini, o1… →
//                        o200k_base; gpt-4, gpt-3.5-turbo… → cl100k_base; …)
//   tiktoken:<encoding>  o200k_base, cl100k_base (also p50k_base, p50k_edit,
//                        r50k_base, gpt2)
//   chars:<N>            ceil(text.length / N), N an integer ≥ 1: a cheap
//                        heuristic (length in UTF-16 code units)
// Default: tiktoken:gpt-4o (= o200k_base).
//
// Reference semantics: a text's count is
//   new Tiktoken(<encoding>).encode(text, [], []).length            (@dqbd/tiktoken)
// i.e. with no special token allowed AND none disallowed, so special-token
// text such as "<|endoftext|>" typed by a user is counted as the ordinary
// text it is ("<|endoftext|>" = 7 o200k tokens), never as the 1 control token
// and never an error (tiktoken's default encode(text) would THROW on it). This
// equals encode_ordinary(text). Lone surrogates: the string crosses into wasm
// as UTF-8 (TextEncoder), which turns each lone surrogate into U+FFFD, so a
// lone surrogate counts exactly like U+FFFD; the fast path agrees (it also
// UTF-8-encodes with TextEncoder, and both regexes classify U+FFFD and a lone
// surrogate as "other"). Tests pin both behaviours.
//
// Fast path. gpt-tokenizer (pure JS) counts English, code and JSON 3–8× faster
// than the wasm reference (bench/tokens.ts), but is several times slower on
// text dominated by non-ASCII pieces it has not cached (CJK: ~6×; its
// byte-level merge path is costly), and its JS regex classes differ
// from the reference's Rust regex on a few code points:
//   - U+0085 and U+FEFF: JS `\s` vs Rust White_Space;
//   - letters/marks added in Unicode 17.0: V8 (Node 20's ICU, Unicode 17.0)
//     knows them, the wasm's Rust tables (Unicode 16.0) do not;
//   - U+017F (ſ): Rust's `(?i:'s)` matches "'ſ", JS's `'[sS]` does not (no
//     count difference found, guarded anyway).
// So a text goes to gpt-tokenizer only when (1) at most 1/10 of its UTF-16
// units are non-ASCII, (2) it contains none of DIVERGENT below, and (3) the
// runtime's Unicode version is the one DIVERGENT was computed for; everything
// else goes to @dqbd/tiktoken. test/unit/tokens.test.ts proves fast count ===
// reference count on the corpus (test/fixtures/tokens) and on a Unicode sample;
// test/fixtures/tokens/unicode-scan.ts --full re-derives DIVERGENT (minutes).
// The versions of both libraries are pinned in package.json; re-run the full
// scan when either changes.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export interface TokenEstimator {
  /** The spec it was created from, e.g. "tiktoken:gpt-4o". */
  readonly name: string;
  countText(text: string): number;
  /** Resolved tiktoken encoding (tiktoken specs only). */
  readonly encoding?: string;
  /** "gpt-tokenizer+tiktoken" (routed), "tiktoken" (reference only) or "chars". */
  readonly backend?: string;
  /**
   * The count if it needs nothing not yet loaded, else undefined (the lazily
   * loaded reference encoder would be needed: count such texts on the pool).
   * Absent when countText never loads anything.
   */
  readonly countInline?: (text: string) => number | undefined;
}

export const DEFAULT_ESTIMATOR_SPEC = 'tiktoken:gpt-4o';

export type TiktokenEncodingName = 'gpt2' | 'r50k_base' | 'p50k_base' | 'p50k_edit' | 'cl100k_base' | 'o200k_base';

const ENCODINGS: ReadonlySet<string> = new Set<TiktokenEncodingName>([
  'gpt2',
  'r50k_base',
  'p50k_base',
  'p50k_edit',
  'cl100k_base',
  'o200k_base',
]);

/** Encodings with a proven gpt-tokenizer fast path. */
const FAST_ENCODINGS: ReadonlySet<string> = new Set<TiktokenEncodingName>(['cl100k_base', 'o200k_base']);

export type EstimatorSpec =
  | { kind: 'tiktoken'; spec: string; encoding: TiktokenEncodingName }
  | { kind: 'chars'; spec: string; perToken: number };

const SPEC_HELP = 'expected tiktoken:<model> (e.g. tiktoken:gpt-4o), tiktoken:<encoding> (o200k_base, cl100k_base) or chars:<N> (N an integer >= 1)';

type TiktokenModule = typeof import('@dqbd/tiktoken');
type Tiktoken = import('@dqbd/tiktoken').Tiktoken;
type GptEncoding = import('gpt-tokenizer/GptEncoding').GptEncoding;
/** What gpt-tokenizer's countNative does per regex match, for the ASCII path (the field is private in its typings). */
interface BpeCore {
  getBpeRankFromString(piece: string): number | undefined;
  bytePairEncode(piece: string): ArrayLike<number>;
}

let tiktokenModule: TiktokenModule | null = null;
function tiktoken(): TiktokenModule {
  // Loaded on first use (instantiates the wasm; ranks are loaded per encoding).
  tiktokenModule ??= require('@dqbd/tiktoken') as TiktokenModule;
  return tiktokenModule;
}

/** Parses and validates a spec without loading any vocabulary. Throws Error. */
export function parseEstimatorSpec(spec: string): EstimatorSpec {
  if (typeof spec !== 'string') throw new Error(`token estimator spec must be a string; ${SPEC_HELP}`);
  const s = spec.trim();
  const colon = s.indexOf(':');
  const kind = colon < 0 ? s : s.slice(0, colon);
  const arg = colon < 0 ? '' : s.slice(colon + 1);
  if (kind === 'tiktoken' && arg !== '') {
    if (ENCODINGS.has(arg)) return { kind: 'tiktoken', spec: s, encoding: arg as TiktokenEncodingName };
    const tk = tiktoken();
    let encoding: string;
    try {
      encoding = tk.get_encoding_name_for_model(arg as Parameters<TiktokenModule['get_encoding_name_for_model']>[0]);
    } catch {
      throw new Error(`unknown token estimator "${s}": "${arg}" is neither a model known to @dqbd/tiktoken nor an encoding; ${SPEC_HELP}`);
    }
    if (!ENCODINGS.has(encoding)) throw new Error(`unknown token estimator "${s}": model maps to unsupported encoding ${encoding}`);
    return { kind: 'tiktoken', spec: s, encoding: encoding as TiktokenEncodingName };
  }
  if (kind === 'chars' && /^[1-9][0-9]{0,8}$/.test(arg)) {
    return { kind: 'chars', spec: s, perToken: Number(arg) };
  }
  throw new Error(`unknown token estimator "${s}"; ${SPEC_HELP}`);
}

// ---------------------------------------------------------------------------
// Fast-path routing

/**
 * Code points whose pre-tokenization differs between gpt-tokenizer 3.4.0 (V8
 * regex, Unicode 17.0) and @dqbd/tiktoken 1.0.22 (Rust regex, Unicode 16.0),
 * found by test/fixtures/tokens/unicode-scan.ts --full over all of planes 0–3
 * and 14 in 12 contexts, for both o200k_base and cl100k_base (union), plus
 * U+017F (see header).
 */
export const DIVERGENT_SOURCE =
  '[\\u0085\\u017F\\u088F\\u0C5C\\u0CDC\\u1ACF-\\u1ADD\\u1AE0-\\u1AEB\\uA7CE\\uA7CF\\uA7D2\\uA7D4\\uA7F1\\uFEFF' +
  '\\u{10940}-\\u{10959}\\u{10EC5}-\\u{10EC7}\\u{10EFA}\\u{10EFB}\\u{11B60}-\\u{11B67}\\u{11DB0}-\\u{11DDB}' +
  '\\u{11DE0}-\\u{11DE9}\\u{16EA0}-\\u{16EB8}\\u{16EBB}-\\u{16ED3}\\u{16FF2}-\\u{16FF6}\\u{187F8}-\\u{187FF}' +
  '\\u{18D09}-\\u{18D1E}\\u{18D80}-\\u{18DF2}\\u{1E6C0}-\\u{1E6DE}\\u{1E6E0}-\\u{1E6F5}\\u{1E6FE}\\u{1E6FF}' +
  '\\u{2B73A}-\\u{2B73F}\\u{2CEA2}-\\u{2CEAD}\\u{323B0}-\\u{33479}]';
const DIVERGENT = new RegExp(DIVERGENT_SOURCE, 'u');

/** The runtime Unicode version DIVERGENT is valid for (process.versions.unicode). */
export const FAST_PATH_UNICODE = '17.0';

/** Whether this runtime may use the gpt-tokenizer fast path at all. */
export function fastPathSupported(): boolean {
  return process.versions.unicode === FAST_PATH_UNICODE;
}

/** Above this share of non-ASCII UTF-16 units the reference is faster (bench/tokens.ts). */
export const FAST_MAX_NON_ASCII = 0.1;

/** Which counter a text may take, decided in one pass over it. */
const enum FastRoute {
  /** The reference (@dqbd/tiktoken). */
  Reference,
  /** gpt-tokenizer: mostly ASCII and free of DIVERGENT code points. */
  Library,
  /** gpt-tokenizer, all ASCII: o200k_base may skip its split regex (countAsciiO200k). */
  Ascii,
}

function fastRoute(text: string): FastRoute {
  const limit = Math.floor(text.length * FAST_MAX_NON_ASCII);
  let nonAscii = 0;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0x7f && ++nonAscii > limit) return FastRoute.Reference;
  }
  if (nonAscii === 0) return FastRoute.Ascii;
  return DIVERGENT.test(text) ? FastRoute.Reference : FastRoute.Library;
}

/**
 * True when `text` may be counted by gpt-tokenizer: mostly ASCII and free of
 * DIVERGENT code points. (Correctness only needs the DIVERGENT part; the
 * ASCII share is a speed choice.)
 */
export function fastPathEligible(text: string): boolean {
  return fastRoute(text) !== FastRoute.Reference;
}

// ---------------------------------------------------------------------------
// Backends (loaded once per encoding per thread)

const referenceCache = new Map<string, Tiktoken>();
/** The @dqbd/tiktoken encoder for `encoding` (shared; do not free()). */
export function referenceEncoder(encoding: TiktokenEncodingName): Tiktoken {
  let enc = referenceCache.get(encoding);
  if (enc === undefined) {
    enc = tiktoken().get_encoding(encoding);
    referenceCache.set(encoding, enc);
  }
  return enc;
}

/** The reference count: @dqbd/tiktoken encode(text, [], []).length. */
export function referenceCount(encoding: TiktokenEncodingName, text: string): number {
  return referenceEncoder(encoding).encode(text, [], []).length;
}

const fastCache = new Map<string, GptEncoding>();
/**
 * gpt-tokenizer's encoder for `encoding` (cl100k_base / o200k_base only),
 * built here rather than through its `encoding/<name>` module so that its
 * BPE core is reachable (bpeCore); one instance per thread either way.
 */
export function fastEncoder(encoding: TiktokenEncodingName): GptEncoding {
  if (!FAST_ENCODINGS.has(encoding)) throw new Error(`no fast path for ${encoding}`);
  let enc = fastCache.get(encoding);
  if (enc === undefined) {
    const { GptEncoding } = require('gpt-tokenizer/cjs/GptEncoding') as typeof import('gpt-tokenizer/GptEncoding');
    const ranks = (require(`gpt-tokenizer/cjs/bpeRanks/${encoding}`) as { default: unknown }).default;
    enc = GptEncoding.getEncodingApi(encoding as Parameters<typeof GptEncoding.getEncodingApi>[0], () => ranks as never);
    fastCache.set(encoding, enc);
  }
  return enc;
}

/** Whether o200k_base counts all-ASCII texts with countAsciiO200k (the BPE core is reachable). */
export function asciiPathLive(): boolean {
  return bpeCore(fastEncoder('o200k_base')) !== null;
}

/** The encoder's BPE core, or null if this gpt-tokenizer version hides it (then texts go through countTokens). */
function bpeCore(enc: GptEncoding): BpeCore | null {
  const core = (enc as unknown as { bytePairEncodingCoreProcessor?: BpeCore }).bytePairEncodingCoreProcessor;
  return typeof core?.getBpeRankFromString === 'function' && typeof core.bytePairEncode === 'function' ? core : null;
}

/** gpt-tokenizer options equivalent to tiktoken's encode(text, [], []). */
export const FAST_ENCODE_OPTIONS = Object.freeze({
  allowedSpecial: new Set<string>(),
  disallowedSpecial: new Set<string>(),
});

// ---------------------------------------------------------------------------
// o200k_base pre-tokenizer for all-ASCII text. gpt-tokenizer splits with its
// Unicode regex through matchAll (a RegExp clone and a match object per
// piece), a large part of the ≈ 10 µs a 300-byte message cost on the
// gateway thread. For ASCII the regex reduces to the scan below; each piece
// then goes to gpt-tokenizer's BPE core exactly as its countNative hands it
// a regex match (pieces equal to the regex's: test/unit/tokens.test.ts).

/** Character classes of the o200k_base split regex, for ASCII. */
const enum Ascii {
  Upper,
  Lower,
  Digit,
  /** \r \n */
  Newline,
  /** \s other than \r \n: space, \t, \v, \f */
  Space,
  /** everything else: [^\s\p{L}\p{N}] */
  Other,
}

const ASCII_CLASS = new Uint8Array(128).fill(Ascii.Other);
for (let c = 65; c <= 90; c++) ASCII_CLASS[c] = Ascii.Upper;
for (let c = 97; c <= 122; c++) ASCII_CLASS[c] = Ascii.Lower;
for (let c = 48; c <= 57; c++) ASCII_CLASS[c] = Ascii.Digit;
ASCII_CLASS[10] = ASCII_CLASS[13] = Ascii.Newline;
for (const c of [9, 11, 12, 32]) ASCII_CLASS[c] = Ascii.Space;

/** Length of a contraction ('s 't 're 've 'm 'll 'd, any case) at `i`, or 0. */
function contractionAt(text: string, i: number): number {
  if (text.charCodeAt(i) !== 39) return 0;
  const a = text.charCodeAt(i + 1) | 0x20;
  if (a === 0x73 || a === 0x64 || a === 0x6d || a === 0x74) return 2; // s d m t
  const b = text.charCodeAt(i + 2) | 0x20;
  if ((a === 0x6c && b === 0x6c) || (a === 0x76 && b === 0x65) || (a === 0x72 && b === 0x65)) return 3; // ll ve re
  return 0;
}

/**
 * Sum of `countPiece` over the pieces o200k_base's split regex cuts an
 * all-ASCII `text` into, alternative by alternative:
 *   [^\r\n\p{L}\p{N}]?\p{Lu}*\p{Ll}+'(s|t|re|ve|m|ll|d)?  |  …\p{Lu}+\p{Ll}*…
 *   \p{N}{1,3}  |   ?[^\s\p{L}\p{N}]+[\r\n/]*  |  \s*[\r\n]+  |  \s+(?!\S)  |  \s+
 */
export function countAsciiO200k(text: string, countPiece: (piece: string) => number): number {
  const len = text.length;
  const cls = (i: number) => (i < len ? ASCII_CLASS[text.charCodeAt(i)] : -1);
  let total = 0;
  let i = 0;
  while (i < len) {
    const c = cls(i);
    let end: number;
    const letterAt = c <= Ascii.Lower ? i : (c === Ascii.Space || c === Ascii.Other) && cls(i + 1) <= Ascii.Lower && i + 1 < len ? i + 1 : -1;
    if (letterAt >= 0) {
      end = letterAt;
      while (cls(end) === Ascii.Upper) end++;
      while (cls(end) === Ascii.Lower) end++;
      end += contractionAt(text, end);
    } else if (c === Ascii.Digit) {
      end = i + 1;
      while (end < i + 3 && cls(end) === Ascii.Digit) end++;
    } else if (c === Ascii.Other || (text.charCodeAt(i) === 32 && cls(i + 1) === Ascii.Other)) {
      end = c === Ascii.Other ? i + 1 : i + 2;
      while (cls(end) === Ascii.Other) end++;
      while (cls(end) === Ascii.Newline || text.charCodeAt(end) === 47) end++;
    } else {
      // A whitespace run: up to its last newline if it has one; else all of
      // it at the end of the text, all but its last char before more text
      // (that char starts the next piece), or the single char.
      let runEnd = i;
      let lastNewline = -1;
      for (let k = cls(runEnd); k === Ascii.Space || k === Ascii.Newline; k = cls(++runEnd)) if (k === Ascii.Newline) lastNewline = runEnd;
      if (lastNewline >= 0) end = lastNewline + 1;
      else if (runEnd === len || runEnd - i === 1) end = runEnd;
      else end = runEnd - 1;
    }
    total += countPiece(text.slice(i, end));
    i = end;
  }
  return total;
}

export interface CreateEstimatorOptions {
  /** Use the gpt-tokenizer fast path where proven equal (default true). */
  fastPath?: boolean;
  /**
   * With the fast path, load the reference encoder (~86 MB RSS for o200k_base)
   * only when a text first needs it. The gateway sets this and sends such
   * texts to the CPU pool, so its own thread never pays for it.
   */
  lazyReference?: boolean;
}

/**
 * Builds the estimator for `spec`; throws Error with a clear message for an
 * unknown spec. Loads the vocabularies now (boot), not on the first request:
 * o200k_base costs ~0.6 s and ~135 MB RSS for both backends.
 */
export function createEstimator(spec: string, opts: CreateEstimatorOptions = {}): TokenEstimator {
  const parsed = parseEstimatorSpec(spec);
  if (parsed.kind === 'chars') {
    const n = parsed.perToken;
    return {
      name: parsed.spec,
      backend: 'chars',
      countText: (text: string) => Math.ceil(text.length / n),
    };
  }
  const encoding = parsed.encoding;
  const useFast = (opts.fastPath ?? true) && FAST_ENCODINGS.has(encoding) && fastPathSupported();
  if (!useFast) {
    const ref = referenceEncoder(encoding);
    return {
      name: parsed.spec,
      encoding,
      backend: 'tiktoken',
      countText: (text: string) => (text.length === 0 ? 0 : ref.encode(text, [], []).length),
    };
  }
  const fast = fastEncoder(encoding);
  const options = FAST_ENCODE_OPTIONS;
  const core = encoding === 'o200k_base' ? bpeCore(fast) : null;
  const countPiece = core && ((piece: string) => (core.getBpeRankFromString(piece) !== undefined ? 1 : core.bytePairEncode(piece).length));
  const countFast = (text: string, route: FastRoute) =>
    route === FastRoute.Ascii && countPiece !== null ? countAsciiO200k(text, countPiece) : fast.countTokens(text, options);
  const lazy = opts.lazyReference ?? false;
  let ref: Tiktoken | null = lazy ? null : referenceEncoder(encoding);
  return {
    name: parsed.spec,
    encoding,
    backend: 'gpt-tokenizer+tiktoken',
    countInline: (text: string) => {
      if (text.length === 0) return 0;
      const route = fastRoute(text);
      if (route !== FastRoute.Reference) return countFast(text, route);
      return ref === null ? undefined : ref.encode(text, [], []).length;
    },
    countText: (text: string) => {
      if (text.length === 0) return 0;
      const route = fastRoute(text);
      if (route !== FastRoute.Reference) return countFast(text, route);
      ref ??= referenceEncoder(encoding);
      return ref.encode(text, [], []).length;
    },
  };
}

/** The `text` of a message part, if it is an object with a string `text` field. */
export function partText(part: unknown): string | undefined {
  if (typeof part !== 'object' || part === null) return undefined;
  const text = (part as { text?: unknown }).text;
  return typeof text === 'string' ? text : undefined;
}

/**
 * SPEC §3: sum over the parts that are objects with a string `text` field of
 * est.countText(text), each part counted on its own; other parts count 0.
 */
export function countMessageTokens(est: TokenEstimator, parts: unknown[]): number {
  let total = 0;
  for (const part of parts) {
    const text = partText(part);
    if (text !== undefined) total += est.countText(text);
  }
  return total;
}

// ---------------------------------------------------------------------------
// Work bound

/**
 * Both tokenizers merge each pre-tokenized piece with an O(n²) BPE over its
 * UTF-8 bytes, so one long unbroken run (1 MB of "aaaa…", a wall of emoji or
 * unpunctuated CJK) would occupy a thread for minutes. `tokenizationCost`
 * over-estimates Σ piece_bytes² in one linear pass (runs of whitespace, of
 * ASCII punctuation, and of everything else except digits, which the
 * pre-tokenizer cuts into threes). Measured here: 20,000 × "a" (4e8) ≈ 0.3 s,
 * 20,000 × "漢" (3.6e9) ≈ 2.4–3 s. Texts above TOKENIZATION_COST_MAX (≈ 2 s)
 * are refused and the client is asked to send token_count itself; ordinary
 * prose, code and punctuated CJK stay orders of magnitude below it.
 */
export const TOKENIZATION_COST_MAX = 2.5e9;

const enum RunClass {
  Digit = 0,
  Space = 1,
  Punct = 2,
  Word = 3,
}

function runClass(c: number): RunClass {
  if (c >= 48 && c <= 57) return RunClass.Digit;
  if (c <= 32 || c === 0x85 || c === 0xa0 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x3000) {
    return RunClass.Space;
  }
  if (c < 128) return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) ? RunClass.Word : RunClass.Punct;
  // General, CJK and fullwidth punctuation break runs of letters as ASCII punctuation does.
  if ((c >= 0x2010 && c <= 0x2027) || (c >= 0x3001 && c <= 0x303f) || (c >= 0xff01 && c <= 0xff0f) || (c >= 0xff1a && c <= 0xff20)) {
    return RunClass.Punct;
  }
  return RunClass.Word;
}

/** UTF-8 bytes of one UTF-16 unit (a surrogate half counts 2 of its pair's 4). */
const utf8Units = (c: number) => (c < 0x80 ? 1 : c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 2 : 3);

export function tokenizationCost(text: string): number {
  let cost = 0;
  let run = 0;
  let cls = RunClass.Digit;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const k = runClass(c);
    if (k === cls && k !== RunClass.Digit) run += utf8Units(c);
    else {
      cost += run * run;
      run = k === RunClass.Digit ? 0 : utf8Units(c);
      cls = k;
    }
  }
  return cost + run * run;
}
