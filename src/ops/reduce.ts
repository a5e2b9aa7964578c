/**
 * @file Wrappers for kernels/reduce.wgsl (row sums, row sums of squares, column sums; f32 results)
 * and their plain-TS references. A full-tensor sum is sumRows on a [1, n] view.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;

export interface ReduceOptions {
  /** Multiply the result (1/n for a mean). */
  alpha?: number;
  /** Write here (f32, rows or cols elements) instead of a new tensor. */
  out?: Tensor;
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
}

function rowsCols(x: Tensor): [number, number] {
  const cols = x.ndim === 0 ? 1 : x.dim(-1);
  return [cols === 0 ? 0 : x.size / cols, cols];
}

function run(rt: Runtime, entry: string, x: Tensor, rows: number, cols: number, outLen: number, grid: number, o: ReduceOptions): Tensor {
  if (x.dtype !== 'f32' && x.dtype !== 'f16') throw new Error(`${entry}: ${x.describe()} is not a float tensor`);
  const y = o.out ?? rt.empty([outLen], 'f32');
  if (y.size !== outLen || y.dtype !== 'f32') throw new Error(`${entry}: out must be f32[${outLen}], got ${y.describe()}`);
  if (o.accumulate && !o.out) throw new Error(`${entry}: accumulate needs out`);
  const k = rt.kernel({ source: 'reduce.wgsl', entry, overrides: { WG }, dtype: x.dtype });
  rt.dispatch1d(k, [x, y], { rows, cols, x_off: x.offset, y_off: y.offset, alpha: o.alpha ?? 1, accumulate: o.accumulate ? 1 : 0 }, grid);
  return y;
}

/** y[r] = alpha · Σ_j x[r, j] over the last dimension. */
export function sumRows(rt: Runtime, x: Tensor, o: ReduceOptions = {}): Tensor {
  const [rows, cols] = rowsCols(x);
  return run(rt, 'sum_rows', x, rows, cols, rows, rows, o);
}

/** y[r] = alpha · Σ_j x[r, j]² over the last dimension. */
export function sumSqRows(rt: Runtime, x: Tensor, o: ReduceOptions = {}): Tensor {
  const [rows, cols] = rowsCols(x);
  return run(rt, 'sum_sq_rows', x, rows, cols, rows, rows, o);
}

/** y[c] = alpha · Σ_r x[r, c] over all leading dimensions. */
export function sumCols(rt: Runtime, x: Tensor, o: ReduceOptions = {}): Tensor {
  const [rows, cols] = rowsCols(x);
  return run(rt, 'sum_cols', x, rows, cols, cols, Math.ceil(cols / WG), o);
}

/** Σ of all elements, times alpha, as a one-element f32 tensor. */
export function sumAll(rt: Runtime, x: Tensor, o: ReduceOptions = {}): Tensor {
  return run(rt, 'sum_rows', x, 1, x.size, 1, 1, o);
}

// ---------------------------------------------------------------------------------------------
// References

export function sumRowsRef(x: Float32Array, rows: number, cols: number, alpha = 1, squared = false): Float32Array {
  const y = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < cols; j++) {
      const v = x[r * cols + j];
      s += squared ? v * v : v;
    }
    y[r] = alpha * s;
  }
  return y;
}

export function sumColsRef(x: Float32Array, rows: number, cols: number, alpha = 1): Float32Array {
  const y = new Float32Array(cols);
  for (let c = 0; c < cols; c++) {
    let s = 0;
    for (let r = 0; r < rows; r++) s += x[r * cols + c];
    y[c] = alpha * s;
  }
  return y;
}
