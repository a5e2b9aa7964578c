import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BOS_TOKEN, SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer } from '../prepare.ts';
import { BpeEncoder, compileSplitPattern, PieceCounter, splitPieces, trainMerges, trainMergesRef, wellFormed } from '../src/data/bpe.ts';
import { Rng } from '../src/util/rng.ts';

const tmp = mkdtempSync(join(tmpdir(), 'prepare-tok-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// Expected pieces computed with Python's `regex` module on the reference's pattern (possessive
// quantifiers, (?i:...), \s = Unicode White_Space: the semantics of the reference's Rust regex).
const REFERENCE_SPLITS: [string, string[]][] = [
  ["don't I'M we'll they've you're IT'S x's 'd'", ['don', "'t", ' I', "'M", ' we', "'ll", ' they', "'ve", ' you', "'re", ' IT', "'S", ' x', "'s", " '", 'd', "'"]],
  ["ab'\u017f cd'LL O'Neil's", ['ab', "'\u017f", ' cd', "'LL", ' O', "'Neil", "'s"]],
  ['Numbers: 12345 and 3.14159, \u0663\u0664\u0665 \u00bd\u00b2 2024!', ['Numbers', ':', ' ', '12', '34', '5', ' and', ' ', '3', '.', '14', '15', '9', ',', ' ', '\u0663\u0664', '\u0665', ' ', '\u00bd\u00b2', ' ', '20', '24', '!']],
  ['h\u00e9llo w\u00f6rld, \u65e5\u672c\u8a9e Stra\u00dfe', ['h\u00e9llo', ' w\u00f6rld', ',', ' \u65e5\u672c\u8a9e', ' Stra\u00dfe']],
  ['a   b    c', ['a', '  ', ' b', '   ', ' c']],
  ['   \n\n  x', ['   \n\n', ' ', ' x']],
  ['trailing   ', ['trailing', '   ']],
  ['\t\tindented\ttabs', ['\t', '\tindented', '\ttabs']],
  ['nb\u00a0space\u3000ideo\u2003em', ['nb', '\u00a0space', '\u3000ideo', '\u2003em']],
  ['line1\r\nline2\n\n\nline3\r\r', ['line', '1', '\r\n', 'line', '2', '\n\n\n', 'line', '3', '\r\r']],
  ['Hello!!!\n\nWorld?!...', ['Hello', '!!!\n\n', 'World', '?!...']],
  [' ---- (a) [b]', [' ----', ' (', 'a', ')', ' [', 'b', ']']],
  ['I \u2764\ufe0f \ud83c\udf55! \ud83d\udc4d\ud83c\udffd', ['I', ' \u2764\ufe0f', ' \ud83c\udf55!', ' \ud83d\udc4d\ud83c\udffd']],
  ['def f(x):\n    return x**2\n', ['def', ' f', '(x', '):\n', '   ', ' return', ' x', '**', '2', '\n']],
  ['$1,234.56 (USD)', ['$', '1', ',', '23', '4', '.', '56', ' (', 'USD', ')']],
  ['x\u0085y\ufeffz', ['x', '\u0085y', '\ufeffz']],
  ['e\u0301 combining', ['e', '\u0301', ' combining']],
  ['x\u001cy', ['x', '\u001cy']],
  ['', []],
  [' ', [' ']],
  ['\n', ['\n']],
  ["''s", ["''", 's']],
];

// Small English-like corpus with the tricky bits (contractions, digits, unicode, whitespace runs).
function corpus(seed: number, docs: number): string[] {
  const rng = new Rng(seed);
  const words = ['the', 'whale', 'ship', "don't", "it's", 'Ishmael', 'sea', 'naïve', 'café', '日本', 'über', '2024', '42', 'and', 'of', 'a', '—', '!', '?', '😀', '\n\n', '  ', '\t'];
  return Array.from({ length: docs }, () => {
    let s = '';
    const n = 5 + rng.int(60);
    for (let i = 0; i < n; i++) s += (rng.next() < 0.8 ? ' ' : '') + words[rng.int(words.length)];
    return s;
  });
}

function tinyTokenizer(numMerges = 120): Tokenizer {
  const counter = new PieceCounter();
  for (const d of corpus(1, 200)) counter.add(d);
  return new Tokenizer(trainMerges(counter, numMerges), { dataset: 'test' });
}

describe('split regex', () => {
  it('cuts tricky strings exactly as the reference pattern does', () => {
    for (const [text, want] of REFERENCE_SPLITS) expect(splitPieces(text), JSON.stringify(text)).toEqual(want);
  });

  it('the fast form equals the exact possessive emulation on random strings', () => {
    const fast = compileSplitPattern(SPLIT_PATTERN);
    const exact = compileSplitPattern(SPLIT_PATTERN, true);
    const alphabet = [...`aZé ß'sStTlLvVeErR\u017f0123456789\u0663\u00bd\n\r\t \u00a0\u3000\u0085\ufeff\u001c.,!?-—"()#$%*+/:;<=>@\\^_\`|~`, '😀', '👍🏽', '中', '\u0301'];
    const rng = new Rng(5);
    for (let i = 0; i < 3000; i++) {
      let s = '';
      for (let n = rng.int(20); n > 0; n--) s += alphabet[rng.int(alphabet.length)];
      const pieces = splitPieces(s, fast);
      expect(pieces, JSON.stringify(s)).toEqual(splitPieces(s, exact));
      expect(pieces.join('')).toBe(s); // nothing skipped
    }
  });

  it('rejects a pattern it cannot translate', () => {
    expect(() => compileSplitPattern(String.raw`\p{L}+`)).toThrow(/not supported/);
  });

  it('replaces lone surrogates with U+FFFD and keeps pairs', () => {
    expect(wellFormed('a\uD800b\uDC00c\uD83D\uDE00')).toBe('a\uFFFDb\uFFFDc\uD83D\uDE00');
    expect(wellFormed('\uDE00\uD83D')).toBe('\uFFFD\uFFFD');
  });
});

describe('BPE training', () => {
  it('the incremental trainer matches the recount-everything reference', () => {
    const counter = new PieceCounter();
    for (const d of corpus(2, 150)) counter.add(d);
    const merges = trainMerges(counter, 150);
    expect(merges.length).toBe(150);
    expect(merges).toEqual(trainMergesRef(counter, 150));
  });

  it('counts pieces the same when they overflow into several maps', () => {
    const texts = corpus(8, 60);
    const one = new PieceCounter();
    const many = new PieceCounter(SPLIT_PATTERN, 7);
    for (const t of texts) {
      one.add(t);
      many.add(t);
    }
    expect(many.size).toBe(one.size);
    expect(one.size).toBeGreaterThan(21); // several shards of 7 were used
    expect(new Map(many)).toEqual(new Map(one));
    for (const [p, c] of one) expect(many.get(p)).toBe(c);
    expect(trainMerges(many, 50)).toEqual(trainMerges(new Map(one), 50));
  });

  it('handles overlapping pairs (aaaa) and stops when no pair is left', () => {
    const counts = new Map([['aaaaa', 3], ['ab', 1]]);
    const merges = trainMerges(counts, 10);
    expect(merges).toEqual(trainMergesRef(counts, 10));
    expect(merges[0]).toEqual([97, 97]); // 'aa' ×6 beats 'ab' ×1
    expect(merges.length).toBeLessThan(10);
  });

  it('breaks count ties by the smaller pair', () => {
    expect(trainMerges(new Map([['zy', 1], ['ba', 1]]), 1)).toEqual([[98, 97]]);
  });
});

describe('Tokenizer', () => {
  const tok = tinyTokenizer();

  it('has the special tokens after the merges, BOS first', () => {
    expect(tok.vocabSize).toBe(256 + 120 + SPECIAL_TOKENS.length);
    expect(tok.bosTokenId).toBe(256 + 120);
    expect(tok.decode([tok.bosTokenId])).toBe(BOS_TOKEN);
    expect(tok.tokenBytes[tok.bosTokenId]).toBe(0);
  });

  it('round-trips any string exactly (unicode, emoji, control characters, special-token text)', () => {
    const samples = [
      ...corpus(3, 20),
      'Hello world! Numbers: 123. Unicode: 你好',
      '👨‍👩‍👧 family, 🇺🇸 flag, e\u0301, \u0000\u0001 nul, \r\n\r\n',
      `literal ${BOS_TOKEN} is plain text`,
      ' '.repeat(300) + 'x' + '\n'.repeat(100),
    ];
    const rng = new Rng(9);
    for (let i = 0; i < 200; i++) {
      let s = '';
      for (let n = rng.int(30); n > 0; n--) s += String.fromCodePoint(rng.next() < 0.7 ? 32 + rng.int(95) : rng.next() < 0.8 ? 0xa0 + rng.int(0x2000) : 0x1f300 + rng.int(0x300));
      samples.push(s);
    }
    for (const s of samples) expect(tok.decode(tok.encode(s)), JSON.stringify(s)).toBe(s);
    // literal special-token text is not the special token
    expect([...tok.encode(BOS_TOKEN)]).not.toContain(tok.bosTokenId);
  });

  it('turns lone surrogates into U+FFFD, like tiktoken', () => {
    expect(tok.decode(tok.encode('ok\uD800 then \uDFFFend'))).toBe('ok\uFFFD then \uFFFDend');
  });

  it('counts token bytes from the token itself, never via decode (partial UTF-8 tokens)', () => {
    // a corpus of one 3-byte character: the first merge joins its first two bytes
    const counts = new Map([['日日日', 5]]);
    const t = new Tokenizer(trainMerges(counts, 2));
    const first = 256; // 日 is E6 97 A5; the tie goes to the smaller pair (97, A5): not valid UTF-8 alone
    expect([...t.merges[0]]).toEqual([0x97, 0xa5]);
    expect(t.tokenBytes[first]).toBe(2);
    expect(new TextEncoder().encode(t.decode([first])).length).toBe(6); // decode→encode: two U+FFFD
    expect(t.tokenBytes[257]).toBe(3); // the whole character
    // bytes of any encoding sum to the UTF-8 length
    const s = '日本 café 😀';
    const ids = t.encode(s);
    expect(ids.reduce((a, id) => a + t.tokenBytes[id], 0)).toBe(new TextEncoder().encode(s).length);
  });

  it('looks merges up by bytes, as tiktoken: ab·c becomes abc even if abc was made as a·bc', () => {
    // merges: 256 = b·c, 257 = a·256 ("abc"), 258 = a·b
    const enc = new BpeEncoder([[98, 99], [97, 256], [97, 98]]);
    expect([...enc.encode('abc')]).toEqual([257]); // whole piece is a token
    expect([...enc.encode('abcabd')]).toEqual([257, 258, 100]);
  });

  it('the heap merge (long pieces) gives exactly the rescanning merge', () => {
    const counter = new PieceCounter();
    for (const d of corpus(6, 100)) counter.add(d);
    for (let i = 0; i < 50; i++) counter.add(' '.repeat(1 + (i % 9)) + '=-'.repeat(i % 7) + 'x');
    const merges = trainMerges(counter, 200);
    const rescan = new BpeEncoder(merges, SPLIT_PATTERN, Infinity);
    const heap = new BpeEncoder(merges, SPLIT_PATTERN, 0);
    const rng = new Rng(4);
    const pieces = [...counter].map(([p]) => p);
    for (let i = 0; i < 100; i++) pieces.push(Array.from({ length: 1 + rng.int(300) }, () => ' =-x'[rng.int(4)]).join(''));
    let multi = 0;
    for (const p of pieces) {
      const a = [...rescan.encodePiece(p)];
      expect([...heap.encodePiece(p)], JSON.stringify(p)).toEqual(a);
      if (a.length > 1) multi++;
    }
    expect(multi).toBeGreaterThan(50); // the comparison covered real merging, not just whole-token hits
  });

  it('encodeBatch prepends BOS', () => {
    const [a, b] = tok.encodeBatch(['the whale', ''], tok.bosTokenId);
    expect(a[0]).toBe(tok.bosTokenId);
    expect(tok.decode(a.subarray(1))).toBe('the whale');
    expect([...b]).toEqual([tok.bosTokenId]);
  });

  it('saves a readable file and loads the same tokenizer', () => {
    const dir = join(tmp, 'tok');
    tok.save(dir);
    const file = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    expect(file.special_tokens[BOS_TOKEN]).toBe(tok.bosTokenId);
    expect(file.merges[0].slice(0, 2)).toEqual([...tok.merges[0]]);
    expect(typeof file.merges[0][2]).toBe('string');
    const back = Tokenizer.load(dir);
    expect(back.vocabSize).toBe(tok.vocabSize);
    expect(back.dataset).toBe('test');
    expect([...back.tokenBytes]).toEqual([...tok.tokenBytes]);
    const s = "It's 2024 — naïve café 😀";
    expect([...back.encode(s)]).toEqual([...tok.encode(s)]);
  });

  it('a missing tokenizer tells to run npm run prepare; a tampered token_bytes is refused', () => {
    expect(() => Tokenizer.load(join(tmp, 'nothing-here'))).toThrow(/npm run prepare/);
    const dir = join(tmp, 'tok2');
    tok.save(dir);
    const tb = JSON.parse(readFileSync(join(dir, 'token_bytes.json'), 'utf8'));
    tb[300] += 1;
    writeFileSync(join(dir, 'token_bytes.json'), JSON.stringify(tb));
    expect(() => Tokenizer.load(dir)).toThrow(/does not match/);
  });
});
