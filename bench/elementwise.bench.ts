/**
 * @file Memory-bound basics: add (3 tensors moved), axpy in place, row sums — at the activation size
 * of the default model (B·T×C) or a small one.
 */
import { add, axpyInPlace } from '../src/ops/elementwise.ts';
import { sumSqRows } from '../src/ops/reduce.ts';
import { Rng } from '../src/util/rng.ts';
import type { BenchSuite } from './harness.ts';

const MODEL_ROWS = 16 * 2048; // DEVICE_BATCH_SIZE × MAX_SEQ_LEN
const MODEL_COLS = 512; // n_embd at depth 8
const SMALL_ROWS = 256;
const SMALL_COLS = 64;

export const suite: BenchSuite = {
  family: 'elementwise',
  cases(rt, size) {
    const [rows, cols] = size === 'model' ? [MODEL_ROWS, MODEL_COLS] : [SMALL_ROWS, SMALL_COLS];
    const n = rows * cols;
    const rng = new Rng(1);
    const a = rt.keep(rt.fromArray(rng.uniformArray(n), [rows, cols]));
    const b = rt.keep(rt.fromArray(rng.uniformArray(n), [rows, cols]));
    const y = rt.keep(rt.empty([rows, cols]));
    const sums = rt.keep(rt.empty([rows]));
    const dispose = () => [a, b, y, sums].forEach((t) => rt.release(t));
    return [
      { name: `add ${rows}x${cols}`, bytes: 3 * 4 * n, run: () => void add(rt, a, b, y) },
      { name: `axpy ${rows}x${cols}`, bytes: 3 * 4 * n, run: () => void axpyInPlace(rt, y, a, 0.5) },
      { name: `sum_sq_rows ${rows}x${cols}`, bytes: 4 * n, run: () => void sumSqRows(rt, a, { out: sums }), dispose },
    ];
  },
};
