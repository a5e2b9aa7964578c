/**
 * @file Tiny datasets for the prepare tests: parquet train/val files of seeded English-like
 * documents of varied length, a manifest, and a small tokenizer trained on them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '../prepare.ts';
import { PieceCounter, trainMerges } from '../src/data/bpe.ts';
import { writeTextParquet } from '../src/data/parquet.ts';
import { Rng } from '../src/util/rng.ts';

const WORDS = ['the', 'whale', 'ship', "don't", 'Ishmael', 'sea', 'naïve', 'café', 'über', '2024', 'and', 'of', 'a', 'to', 'in', '!', ',', '.', '😀', '\n'];

/** n documents of 1..maxWords words (seeded). */
export function makeDocs(seed: number, n: number, maxWords = 40): string[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, d) => {
    const words = [`doc${seed}_${d}`];
    for (let k = 1 + rng.int(maxWords); k > 0; k--) words.push(WORDS[rng.int(WORDS.length)]);
    return words.join(' ');
  });
}

export interface TinyDataset {
  dir: string;
  train: string[];
  val: string[];
  tokenizer: Tokenizer;
}

/** Writes train.parquet, val.parquet (single row groups) and manifest.json to dir; trains a tokenizer. */
export function makeTinyDataset(dir: string, o: { trainDocs?: number; valDocs?: number; merges?: number; maxWords?: number } = {}): TinyDataset {
  mkdirSync(dir, { recursive: true });
  const train = makeDocs(1, o.trainDocs ?? 120, o.maxWords);
  const val = makeDocs(2, o.valDocs ?? 40, o.maxWords);
  writeTextParquet(join(dir, 'train.parquet'), train, 100_000);
  writeTextParquet(join(dir, 'val.parquet'), val, 100_000);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ dataset: 'tiny', train: [{ file: 'train.parquet' }], val: [{ file: 'val.parquet' }] }));
  const counter = new PieceCounter();
  for (const t of train) counter.add(t);
  const tokenizer = new Tokenizer(trainMerges(counter, o.merges ?? 60), { dataset: 'tiny' });
  return { dir, train, val, tokenizer };
}
