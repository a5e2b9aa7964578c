/**
 * @file Byte-level BPE: the reference's pre-split regex in JavaScript, training (the incremental
 * algorithm of rustbpe), and encoding with tiktoken's semantics. No GPU, no file system: the
 * dataloader's worker thread imports this too.
 *
 * Token ids are ranks: 0..255 are the single bytes, 256 + i is the token made by merge i. As in
 * tiktoken, encoding looks a merged pair up by its *bytes* (the rank of bytes(a) + bytes(b)), not
 * by the pair of ids, so a token is found however its halves were merged — that is what the
 * reference's tokenizer (tiktoken built from rustbpe's ranks) does.
 */

// ---------------------------------------------------------------------------------------------
// Pre-split regex

/** The reference's split pattern (GPT-4 style with 1–2 digit numbers), in its own (Rust/Python) syntax. */
export const REFERENCE_SPLIT_PATTERN = String.raw`'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`;

// Rust's (and Python `regex`'s) \s is Unicode White_Space; JavaScript's \s differs (it adds U+FEFF
// and drops U+0085), so the translation spells the property out.
const WS = String.raw`\p{White_Space}`;
const NOT_WS = String.raw`\P{White_Space}`;
// (?i:[sdmt]|ll|ve|re): JavaScript (Node 20) has no inline flags. Under Unicode case folding
// 's' also matches U+017F (ſ, long s); no other letter here has an extra fold.
const CONTRACTION = String.raw`'(?:[sdmtSDMT\u017F]|[lL][lL]|[vV][eE]|[rR][eE])`;

/**
 * The pattern with its possessive quantifiers emulated exactly, by the atomic-group idiom
 * `(?=(X))\1`: the lookahead matches X greedily once, the backreference consumes exactly that,
 * and nothing can backtrack into it. Slower; kept as the specification the fast form is tested against.
 */
export const SPLIT_REGEX_EXACT_SOURCE = [
  CONTRACTION,
  String.raw`(?=([^\r\n\p{L}\p{N}]?))\1\p{L}+`,
  String.raw`\p{N}{1,2}`,
  String.raw` ?(?=([^${WS}\p{L}\p{N}]+))\2[\r\n]*`,
  String.raw`${WS}*[\r\n]`,
  String.raw`${WS}+(?!${NOT_WS})`,
  String.raw`${WS}+`,
].join('|');

/**
 * The same pattern with the possessive quantifiers made ordinary. Equivalent here: in
 * `[^\r\n\p{L}\p{N}]?+\p{L}+` giving back the optional character cannot help, because that
 * character is not a letter; in ` ?[^\s\p{L}\p{N}]++[\r\n]*` nothing after the run can fail.
 * So no backtracking into either quantifier ever changes a match (tested against the exact form).
 */
export const SPLIT_REGEX_SOURCE = [
  CONTRACTION,
  String.raw`[^\r\n\p{L}\p{N}]?\p{L}+`,
  String.raw`\p{N}{1,2}`,
  String.raw` ?[^${WS}\p{L}\p{N}]+[\r\n]*`,
  String.raw`${WS}*[\r\n]`,
  String.raw`${WS}+(?!${NOT_WS})`,
  String.raw`${WS}+`,
].join('|');

/** A fresh global regex for a supported split pattern (the reference's); throws for any other. */
export function compileSplitPattern(pattern: string, exact = false): RegExp {
  if (pattern !== REFERENCE_SPLIT_PATTERN) {
    throw new Error(`split pattern not supported in JavaScript: ${JSON.stringify(pattern)} (only the reference's GPT-4-style pattern is translated)`);
  }
  return new RegExp(exact ? SPLIT_REGEX_EXACT_SOURCE : SPLIT_REGEX_SOURCE, 'gu');
}

/** The pieces the split regex cuts `text` into (the regex skips nothing, so they concatenate to text). */
export function splitPieces(text: string, re: RegExp = compileSplitPattern(REFERENCE_SPLIT_PATTERN)): string[] {
  const out: string[] = [];
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) out.push(m[0]);
  return out;
}

// a high surrogate not followed by a low one, or a low one not preceded by a high one (no u flag:
// this regex sees UTF-16 code units)
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Lone surrogates cannot be UTF-8 encoded; like tiktoken, replace them with U+FFFD before
 * splitting, so encode(s) decodes to s.toWellFormed().
 */
export function wellFormed(text: string): string {
  LONE_SURROGATE.lastIndex = 0;
  return LONE_SURROGATE.test(text) ? text.replace(LONE_SURROGATE, '\uFFFD') : text;
}

// ---------------------------------------------------------------------------------------------
// Training (rustbpe's incremental algorithm)

/** Progress of training: merges done out of the target. */
export type TrainProgress = (mergesDone: number, mergesTotal: number) => void;

/** Distinct pieces per shard of PieceCounter (a V8 Map holds at most 2^24 entries). */
const SHARD_MAX = 1 << 23;

/**
 * Counts split pieces over documents (the first stage of training). Iterates as [piece, count].
 * Pieces are spread over several Maps, because one Map cannot hold more than 2^24 entries and a
 * billion characters of web text can come close.
 */
export class PieceCounter implements Iterable<[string, number]> {
  readonly #shards: Map<string, number>[] = [new Map()];
  readonly #re: RegExp;
  readonly #shardMax: number;
  /** Characters seen. */
  chars = 0;

  /** `shardMax`: distinct pieces per Map (tests make it small). */
  constructor(pattern: string = REFERENCE_SPLIT_PATTERN, shardMax = SHARD_MAX) {
    this.#re = compileSplitPattern(pattern);
    this.#shardMax = shardMax;
  }

  /** Distinct pieces. */
  get size(): number {
    let n = 0;
    for (const m of this.#shards) n += m.size;
    return n;
  }

  get(piece: string): number {
    for (const m of this.#shards) {
      const c = m.get(piece);
      if (c !== undefined) return c;
    }
    return 0;
  }

  add(text: string): void {
    text = wellFormed(text);
    this.chars += text.length;
    const re = this.#re;
    const shards = this.#shards;
    re.lastIndex = 0;
    let m: RegExpExecArray | null;
    pieces: while ((m = re.exec(text)) !== null) {
      const piece = m[0];
      // early shards hold the pieces seen first, i.e. the common ones
      for (let i = 0; i < shards.length; i++) {
        const c = shards[i].get(piece);
        if (c !== undefined) {
          shards[i].set(piece, c + 1);
          continue pieces;
        }
      }
      let last = shards[shards.length - 1];
      if (last.size >= this.#shardMax) shards.push((last = new Map()));
      last.set(piece, 1);
    }
  }

  *[Symbol.iterator](): Iterator<[string, number]> {
    for (const m of this.#shards) yield* m;
  }
}

/** One heap entry: a pair, its count when pushed, and the words that may contain it. */
interface MergeJob {
  key: number;
  count: number;
  words: number[];
}

/** Max-heap on count; ties go to the smaller pair (left id, then right id), as in rustbpe. */
class JobHeap {
  readonly items: MergeJob[] = [];

  #before(a: MergeJob, b: MergeJob): boolean {
    return a.count > b.count || (a.count === b.count && a.key < b.key);
  }

  push(job: MergeJob): void {
    const h = this.items;
    h.push(job);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  pop(): MergeJob | undefined {
    const h = this.items;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.#before(h[l], h[m])) m = l;
        if (r < h.length && this.#before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

/**
 * Learns `numMerges` merges from piece counts. Merge i joins the pair [left, right] into token
 * 256 + i. Each step takes the most frequent pair (ties: smallest pair), replaces it in every word
 * that holds it, and updates the counts of the neighbouring pairs incrementally; stale heap
 * entries are refreshed lazily. Stops early if no pair is left.
 */
export function trainMerges(pieceCounts: Iterable<readonly [string, number]>, numMerges: number, onProgress?: TrainProgress): [number, number][] {
  const maxId = 256 + numMerges;
  const K = maxId; // pair key = left * K + right: an exact integer (a small one for K ≤ 32768)
  if (K > 1 << 24) throw new Error(`trainMerges: vocabulary ${maxId} too large`);

  // Words as runs in one array: word w is sym[start[w] .. start[w] + len[w]).
  const encoder = new TextEncoder();
  const bytesList: Uint8Array[] = [];
  const counts: number[] = [];
  let total = 0;
  for (const [piece, c] of pieceCounts) {
    const b = encoder.encode(piece);
    bytesList.push(b);
    counts.push(c);
    total += b.length;
  }
  const nWords = bytesList.length;
  const start = new Int32Array(nWords);
  const len = new Int32Array(nWords);
  const wcount = Float64Array.from(counts);
  counts.length = 0;
  const sym = new Int32Array(total);
  let off = 0;
  for (let w = 0; w < nWords; w++) {
    start[w] = off;
    len[w] = bytesList[w].length;
    sym.set(bytesList[w], off);
    off += len[w];
  }
  bytesList.length = 0;

  // Initial pair counts and, per pair, the words holding it (each word listed once).
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  for (let w = 0; w < nWords; w++) {
    const s = start[w];
    const c = wcount[w];
    for (let i = s; i < s + len[w] - 1; i++) {
      const key = sym[i] * K + sym[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + c);
      let ws = pairWords.get(key);
      if (!ws) pairWords.set(key, (ws = []));
      if (ws[ws.length - 1] !== w) ws.push(w);
    }
  }
  const heap = new JobHeap();
  for (const [key, words] of pairWords) heap.push({ key, count: pairCount.get(key)!, words });
  pairWords.clear();

  const merges: [number, number][] = [];
  const reportEvery = Math.max(1, Math.floor(numMerges / 100));
  const add = (key: number, delta: number) => pairCount.set(key, (pairCount.get(key) ?? 0) + delta);
  while (merges.length < numMerges) {
    const top = heap.pop();
    if (!top) break;
    const current = pairCount.get(top.key) ?? 0;
    if (top.count !== current) {
      // stale: occurrences were removed by earlier merges; requeue with the true count
      top.count = current;
      if (current > 0) heap.push(top);
      continue;
    }
    if (current <= 0) break;
    const a = Math.floor(top.key / K);
    const b = top.key - a * K;
    const id = 256 + merges.length;
    merges.push([a, b]);

    // Replace (a, b) left to right in each word; record which words gain which new pairs.
    const newPairWords = new Map<number, number[]>();
    const gained = (key: number, w: number) => {
      let ws = newPairWords.get(key);
      if (!ws) newPairWords.set(key, (ws = []));
      if (ws[ws.length - 1] !== w) ws.push(w);
    };
    for (const w of top.words) {
      const s = start[w];
      const n = len[w];
      const c = wcount[w];
      let out = s; // write cursor (in place: out <= read)
      let i = s;
      const end = s + n;
      let changed = false;
      while (i < end) {
        if (i + 1 < end && sym[i] === a && sym[i + 1] === b) {
          changed = true;
          if (out > s) {
            const x = sym[out - 1];
            add(x * K + a, -c);
            add(x * K + id, c);
            gained(x * K + id, w);
          }
          add(top.key, -c);
          if (i + 2 < end) {
            const y = sym[i + 2];
            add(b * K + y, -c);
            add(id * K + y, c);
            gained(id * K + y, w);
          }
          sym[out++] = id;
          i += 2;
        } else {
          sym[out++] = sym[i++];
        }
      }
      if (changed) len[w] = out - s;
    }
    for (const [key, words] of newPairWords) {
      const cnt = pairCount.get(key) ?? 0;
      if (cnt > 0) heap.push({ key, count: cnt, words });
    }
    if (onProgress && (merges.length % reportEvery === 0 || merges.length === numMerges)) onProgress(merges.length, numMerges);
  }
  return merges;
}

/**
 * Plain-loop reference trainer (recounts every pair at every step): the specification that
 * trainMerges is tested against on small corpora.
 */
export function trainMergesRef(pieceCounts: Iterable<readonly [string, number]>, numMerges: number): [number, number][] {
  const encoder = new TextEncoder();
  const words = [...pieceCounts].map(([p, c]) => ({ ids: [...encoder.encode(p)], c }));
  const merges: [number, number][] = [];
  for (let m = 0; m < numMerges; m++) {
    const counts = new Map<string, number>();
    for (const { ids, c } of words) {
      for (let i = 0; i + 1 < ids.length; i++) {
        const k = `${ids[i]},${ids[i + 1]}`;
        counts.set(k, (counts.get(k) ?? 0) + c);
      }
    }
    let best: [number, number] | null = null;
    let bestCount = 0;
    for (const [k, c] of counts) {
      const [x, y] = k.split(',').map(Number);
      if (c > bestCount || (c === bestCount && best && (x < best[0] || (x === best[0] && y < best[1])))) {
        best = [x, y];
        bestCount = c;
      }
    }
    if (!best) break;
    const id = 256 + m;
    merges.push(best);
    for (const w of words) {
      const out: number[] = [];
      for (let i = 0; i < w.ids.length; i++) {
        if (i + 1 < w.ids.length && w.ids[i] === best[0] && w.ids[i + 1] === best[1]) {
          out.push(id);
          i++;
        } else out.push(w.ids[i]);
      }
      w.ids = out;
    }
  }
  return merges;
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding

/** Pieces longer than this (in bytes) are merged with a heap instead of by rescanning. */
const LONG_PIECE = 64;
/** Distinct pieces remembered by the encoder's cache before it is cleared. */
const CACHE_MAX = 1 << 18;
/** Pair lookups remembered before that memo is cleared (bounded memory over long runs). */
const MEMO_MAX = 1 << 22;

function latin1(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/**
 * Encodes text with a merge table: regex split, then per piece the byte-pair merge of tiktoken
 * (repeatedly merge the adjacent pair whose joined bytes have the lowest rank, leftmost first).
 * Pieces are cached, so common words cost one Map lookup.
 */
export class BpeEncoder {
  /** Bytes of each token id (merges only; specials are not in here). */
  readonly tokenBytes: Uint8Array[];
  readonly #rankOf = new Map<string, number>();
  readonly #latin1: string[];
  readonly #pairMemo = new Map<number, number>();
  /** piece → its token (a number, the common case) or tokens. */
  readonly #cache = new Map<string, number | Int32Array>();
  readonly #re: RegExp;
  readonly #numTokens: number;
  readonly #utf8 = new TextEncoder();
  #scratch = new Uint8Array(256);
  #out: Int32Array = new Int32Array(1024);

  readonly #longPiece: number;

  /** `longPieceBytes`: pieces longer than this use the heap merge (tests force either path). */
  constructor(merges: readonly (readonly [number, number])[], pattern: string = REFERENCE_SPLIT_PATTERN, longPieceBytes = LONG_PIECE) {
    this.#re = compileSplitPattern(pattern);
    this.#longPiece = longPieceBytes;
    const bytes: Uint8Array[] = [];
    for (let i = 0; i < 256; i++) bytes.push(Uint8Array.of(i));
    for (const [i, [a, b]] of merges.entries()) {
      const id = 256 + i;
      if (!(a >= 0 && a < id && b >= 0 && b < id)) throw new Error(`merge ${i} = [${a}, ${b}] refers to a token not yet defined`);
      const joined = new Uint8Array(bytes[a].length + bytes[b].length);
      joined.set(bytes[a]);
      joined.set(bytes[b], bytes[a].length);
      bytes.push(joined);
    }
    this.tokenBytes = bytes;
    this.#numTokens = bytes.length;
    this.#latin1 = bytes.map(latin1);
    // a byte string made twice keeps its first (lowest) rank
    for (let id = bytes.length - 1; id >= 0; id--) this.#rankOf.set(this.#latin1[id], id);
  }

  get numTokens(): number {
    return this.#numTokens;
  }

  /** Rank (= id) of the token whose bytes are bytes(a) + bytes(b), or -1. */
  mergedRank(a: number, b: number): number {
    const key = a * this.#numTokens + b;
    let r = this.#pairMemo.get(key);
    if (r === undefined) {
      r = this.#rankOf.get(this.#latin1[a] + this.#latin1[b]) ?? -1;
      if (this.#pairMemo.size >= MEMO_MAX) this.#pairMemo.clear();
      this.#pairMemo.set(key, r);
    }
    return r;
  }

  /** Token ids of text (special-token strings in it are ordinary text, as encode_ordinary). */
  encode(text: string): Int32Array {
    text = wellFormed(text);
    let out: Int32Array = this.#out;
    let n = 0;
    const re = this.#re;
    re.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(text)) !== null) {
      const piece = m[0];
      let ids = this.#cache.get(piece);
      if (ids === undefined) ids = this.#encodeNew(piece);
      if (typeof ids === 'number') {
        if (n === out.length) out = this.#grow(n + 1);
        out[n++] = ids;
      } else {
        if (n + ids.length > out.length) out = this.#grow(n + ids.length);
        out.set(ids, n);
        n += ids.length;
      }
    }
    return out.slice(0, n);
  }

  #grow(need: number): Int32Array {
    const grown = new Int32Array(Math.max(this.#out.length * 2, need));
    grown.set(this.#out);
    return (this.#out = grown);
  }

  /** Token ids of one pre-split piece (cached). */
  encodePiece(piece: string): Int32Array {
    const ids = this.#cache.get(piece) ?? this.#encodeNew(piece);
    return typeof ids === 'number' ? Int32Array.of(ids) : ids;
  }

  #encodeNew(piece: string): number | Int32Array {
    const bytes = this.#pieceBytes(piece);
    let ids: number | Int32Array;
    const whole = bytes.length > 1 ? this.#rankOf.get(latin1(bytes)) : bytes.length === 1 ? bytes[0] : undefined;
    if (whole !== undefined) ids = whole;
    else {
      ids = bytes.length > this.#longPiece ? this.#mergeLong(bytes) : this.#mergeShort(bytes);
      if (ids.length === 1) ids = ids[0];
    }
    if (this.#cache.size >= CACHE_MAX) this.#cache.clear();
    this.#cache.set(piece, ids);
    return ids;
  }

  #pieceBytes(piece: string): Uint8Array {
    const need = piece.length * 3;
    if (this.#scratch.length < need) this.#scratch = new Uint8Array(need * 2);
    const { written } = this.#utf8.encodeInto(piece, this.#scratch);
    return this.#scratch.subarray(0, written);
  }

  /** tiktoken's loop: keep the rank of each adjacent pair, merge the lowest (leftmost on ties). */
  #mergeShort(bytes: Uint8Array): Int32Array {
    const n = bytes.length;
    const parts = new Int32Array(n);
    parts.set(bytes);
    const ranks = new Int32Array(Math.max(0, n - 1));
    let len = n;
    for (let i = 0; i < len - 1; i++) ranks[i] = this.mergedRank(parts[i], parts[i + 1]);
    while (len > 1) {
      let best = -1;
      let bestRank = 0x7fffffff;
      for (let i = 0; i < len - 1; i++) {
        const r = ranks[i];
        if (r >= 0 && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      parts[best] = bestRank;
      parts.copyWithin(best + 1, best + 2, len);
      ranks.copyWithin(best, best + 1, len - 1);
      len--;
      if (best > 0) ranks[best - 1] = this.mergedRank(parts[best - 1], parts[best]);
      if (best < len - 1) ranks[best] = this.mergedRank(parts[best], parts[best + 1]);
    }
    return parts.slice(0, len);
  }

  /** The same merge order for long pieces, with a linked list and a min-heap of (rank, position). */
  #mergeLong(bytes: Uint8Array): Int32Array {
    const n = bytes.length;
    const tok = Int32Array.from(bytes);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap: number[] = []; // keys rank * n + position: ordered by rank, then leftmost
    const push = (key: number) => {
      heap.push(key);
      let i = heap.length - 1;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p] <= key) break;
        heap[i] = heap[p];
        i = p;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0];
      const last = heap.pop()!;
      if (heap.length > 0) {
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          if (l >= heap.length) break;
          const r = l + 1;
          const c = r < heap.length && heap[r] < heap[l] ? r : l;
          if (heap[c] >= last) break;
          heap[i] = heap[c];
          i = c;
        }
        heap[i] = last;
      }
      return top;
    };
    const consider = (i: number) => {
      const j = next[i];
      if (j < 0) return;
      const r = this.mergedRank(tok[i], tok[j]);
      if (r >= 0) push(r * n + i);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.length) {
      const key = pop();
      const r = Math.floor(key / n);
      const i = key - r * n;
      if (tok[i] < 0) continue; // node removed
      const j = next[i];
      if (j < 0 || this.mergedRank(tok[i], tok[j]) !== r) continue; // stale entry
      tok[i] = r;
      tok[j] = -1;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      if (prev[i] >= 0) consider(prev[i]);
      consider(i);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(tok[i]);
    return Int32Array.from(out);
  }

  /** The bytes of a sequence of (non-special) token ids. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    let total = 0;
    for (let i = 0; i < ids.length; i++) total += this.#bytesOf(ids[i]).length;
    const out = new Uint8Array(total);
    let off = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.#bytesOf(ids[i]);
      out.set(b, off);
      off += b.length;
    }
    return out;
  }

  #bytesOf(id: number): Uint8Array {
    const b = this.tokenBytes[id];
    if (!b) throw new RangeError(`token id ${id} is not in the merge table (0..${this.#numTokens - 1})`);
    return b;
  }
}
