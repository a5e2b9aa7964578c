/**
 * @file prepare.ts throughput: BPE training on the embedded corpus, encoding (tokens/s, cold and
 * warm cache), best-fit packing alone, and the whole worker dataloader at the default batch
 * (128 × 2048; target ≥ 2 M tokens/s on one core, enough to feed an H100). CPU only; runs alone:
 *   npx tsx bench/prepare.bench.ts [--batches N]
 * Also exports `suite`: the eval_bpb kernel (the metric's cross-entropy) for bench/run.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MAX_SEQ_LEN, Tokenizer, VOCAB_SIZE } from '../prepare.ts';
import { PieceCounter, trainMerges } from '../src/data/bpe.ts';
import { embeddedCorpus } from '../src/data/embedded.ts';
import { BatchStream, BestFitPacker } from '../src/data/loader.ts';
import { writeTextParquet } from '../src/data/parquet.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { sumChunk, tokenNats } from '../src/ops/eval_bpb.ts';
import { isMain } from '../src/util/main.ts';
import { Rng } from '../src/util/rng.ts';
import type { BenchCase, BenchSuite } from './harness.ts';

const DEVICE_BATCH = 128; // the reference's DEVICE_BATCH_SIZE
const TARGET_TOKENS_PER_S = 2e6;

// eval chunk at the default sizes: 8 rows of 2048 tokens × 8192 logits (512 MiB); small on software adapters
const EVAL_MODEL = { tokens: 8 * MAX_SEQ_LEN, V: VOCAB_SIZE };
const EVAL_SMALL = { tokens: 256, V: 512 };

export const suite: BenchSuite = {
  family: 'eval_bpb',
  cases(rt: Runtime, size): BenchCase[] {
    const { tokens, V } = size === 'model' ? EVAL_MODEL : EVAL_SMALL;
    const rng = new Rng(3);
    const logits = rt.keep(rt.fromArray(rng.uniformArray(tokens * V, -15, 15), [tokens, V]));
    const targets = rt.keep(rt.fromArray(rng.intArray(tokens, V), [tokens], 'i32'));
    const tokenBytes = rt.keep(rt.fromArray(Int32Array.from({ length: V }, (_, i) => 1 + (i % 6)), [V], 'i32'));
    const nats = rt.keep(rt.empty([tokens], 'f32'));
    const bytes = rt.keep(rt.empty([tokens], 'u32'));
    const chunkNats = rt.keep(rt.empty([1], 'f32'));
    const chunkBytes = rt.keep(rt.empty([1], 'u32'));
    return [
      {
        name: `eval_token_nats + eval_sum_chunk ${tokens}x${V}`,
        bytes: tokens * V * 4,
        run: () => {
          tokenNats(rt, logits, targets, tokenBytes, nats, bytes);
          sumChunk(rt, nats, bytes, tokens, chunkNats, chunkBytes, 0);
        },
        dispose: () => [logits, targets, tokenBytes, nats, bytes, chunkNats, chunkBytes].forEach((t) => rt.release(t)),
      },
    ];
  },
};

function line(name: string, value: string, note = ''): void {
  console.log(`${name.padEnd(44)} ${value.padStart(16)}  ${note}`);
}

/** Runs the CPU benches and prints one line each. */
export async function runPrepareBench(batches = 20): Promise<void> {
  console.log(`prepare bench: node ${process.version}, ${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}`);
  const dir = mkdtempSync(join(tmpdir(), 'prepare-bench-'));
  try {
    const corpus = embeddedCorpus();
    writeTextParquet(join(dir, 'train.parquet'), corpus.train);
    const chars = corpus.train.reduce((s, d) => s + d.length, 0);

    // tokenizer training: piece counting, then merges
    let t0 = performance.now();
    const counter = new PieceCounter();
    for (const d of corpus.train) counter.add(d);
    const countS = (performance.now() - t0) / 1000;
    line('tokenizer: count pieces', `${(chars / 1e6 / countS).toFixed(1)} Mchar/s`, `${(chars / 1e6).toFixed(1)}M chars, ${counter.size} distinct pieces`);
    t0 = performance.now();
    const merges = trainMerges(counter, VOCAB_SIZE - 4 - 256);
    const mergeS = (performance.now() - t0) / 1000;
    line('tokenizer: merges', `${mergeS.toFixed(2)} s`, `${merges.length} merges (total ${(countS + mergeS).toFixed(2)} s)`);
    const tok = new Tokenizer(merges, { dataset: 'embedded' });

    // encoding: a fresh tokenizer (empty piece cache), then again (warm)
    const fresh = new Tokenizer(merges, { dataset: 'embedded' });
    for (const label of ['cold cache', 'warm cache']) {
      t0 = performance.now();
      let n = 0;
      for (const d of corpus.train) n += fresh.encode(d).length;
      const s = (performance.now() - t0) / 1000;
      line(`encode (${label})`, `${(n / s / 1e6).toFixed(2)} Mtok/s`, `${n} tokens, ${(chars / n).toFixed(2)} chars/token`);
    }

    // packing alone, on pre-tokenized documents
    const docs = tok.encodeBatch(corpus.train, tok.bosTokenId);
    const packer = new BestFitPacker(MAX_SEQ_LEN + 1);
    const row = new Int32Array(MAX_SEQ_LEN + 1);
    let next = 0;
    t0 = performance.now();
    const rows = DEVICE_BATCH * batches;
    for (let r = 0; r < rows; r++) {
      for (let pos = 0; pos < MAX_SEQ_LEN + 1; ) {
        while (packer.size < 1000) packer.add(docs[next++ % docs.length]);
        pos = packer.place(row, 0, pos);
      }
    }
    const packS = (performance.now() - t0) / 1000;
    line('best-fit packing (1000-doc buffer)', `${((rows * (MAX_SEQ_LEN + 1)) / packS / 1e6).toFixed(1)} Mtok/s`, `${rows} rows of ${MAX_SEQ_LEN + 1}`);

    // the whole dataloader: parquet → tokenize → pack in the worker → batches on this thread
    const stream = new BatchStream({ parts: [{ file: join(dir, 'train.parquet') }], merges, pattern: tok.pattern, bosTokenId: tok.bosTokenId, B: DEVICE_BATCH, T: MAX_SEQ_LEN, loop: true });
    await stream.next(); // worker start-up and the first buffer fill
    t0 = performance.now();
    let epoch = 1;
    for (let b = 0; b < batches; b++) epoch = (await stream.next())!.epoch;
    const loadS = (performance.now() - t0) / 1000;
    await stream.close();
    const rate = (batches * DEVICE_BATCH * MAX_SEQ_LEN) / loadS;
    line(`dataloader worker (${DEVICE_BATCH} x ${MAX_SEQ_LEN})`, `${(rate / 1e6).toFixed(2)} Mtok/s`, `${batches} batches, epoch ${epoch}; target ≥ ${TARGET_TOKENS_PER_S / 1e6} M: ${rate >= TARGET_TOKENS_PER_S ? 'ok' : 'BELOW TARGET'}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { batches: { type: 'string', default: '20' } } });
  await runPrepareBench(Number(values.batches));
}
