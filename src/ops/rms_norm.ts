/**
 * @file Wrapper for kernels/rms_norm.wgsl (RMS norm over the last dimension, no learned weight,
 * eps = float32 machine epsilon, as the reference's `norm`) and the plain-TS references.
 *
 * The same kernels serve wide rows (the residual stream, C up to 2048) and short ones (QK-norm
 * per attention head, D = 128 or less): the wrapper picks how many threads share a row
 * (ROW_THREADS) from the row width, and a workgroup holds WG / ROW_THREADS rows.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

/** The reference's eps: torch.finfo(torch.float32).eps (F32_EPS in kernels/common.wgsl). */
export const RMS_NORM_EPS = 1.1920928955078125e-7;
const WG = 256;
/** Columns each thread handles before a row gets more threads (up to WG). */
const COLS_PER_THREAD = 4;

/** Threads per row: a power of two near cols / COLS_PER_THREAD, between 1 and WG. */
export function rmsNormRowThreads(cols: number): number {
  let t = 1;
  while (t * COLS_PER_THREAD < cols && t < WG) t *= 2;
  return t;
}

function check(op: string, x: Tensor): { rows: number; cols: number; dtype: 'f32' | 'f16' } {
  if (x.dtype !== 'f32' && x.dtype !== 'f16') throw new Error(`${op}: ${x.describe()} is not a float tensor`);
  if (x.ndim < 1 || x.dim(-1) === 0) throw new Error(`${op}: ${x.describe()} needs a non-empty last dimension`);
  const cols = x.dim(-1);
  return { rows: x.size / cols, cols, dtype: x.dtype };
}

/** Smallest workgroup of the subgroup variant: at least one subgroup of 64 (AMD's widest). */
const SUBGROUP_MIN_WG = 64;

/**
 * With subgroups, one row per workgroup of ROW_THREADS threads (at least SUBGROUP_MIN_WG) reduced
 * on subgroups; else WG / ROW_THREADS rows per workgroup, reduced with a tree in workgroup memory.
 */
function spec(rt: Runtime, entry: 'rms_norm_fwd' | 'rms_norm_bwd', cols: number, dtype: 'f32' | 'f16') {
  const subgroups = rt.subgroups;
  const ROW_THREADS = subgroups ? Math.max(SUBGROUP_MIN_WG, rmsNormRowThreads(cols)) : rmsNormRowThreads(cols);
  const wg = subgroups ? ROW_THREADS : WG;
  return { source: 'rms_norm.wgsl', entry, defines: { [entry === 'rms_norm_fwd' ? 'FWD' : 'BWD']: true, SUBGROUPS: subgroups }, overrides: { WG: wg, ROW_THREADS }, dtype };
}

/** y = x · rsqrt(mean(x², last dim) + eps); also returns rstd (f32, one per row) for the backward. */
export function rmsNormFwd(rt: Runtime, x: Tensor): { y: Tensor; rstd: Tensor } {
  const { rows, cols, dtype } = check('rmsNorm', x);
  const s = spec(rt, 'rms_norm_fwd', cols, dtype);
  const y = rt.empty(x.shape, dtype);
  const rstd = rt.empty([rows], 'f32');
  const k = rt.kernel(s);
  const params = { rows, cols, x_off: x.offset, dy_off: 0, y_off: y.offset, rstd_off: rstd.offset };
  rt.dispatch1d(k, [x, y, rstd], params, Math.ceil(rows / (s.overrides.WG / s.overrides.ROW_THREADS)));
  return { y, rstd };
}

/** dx = rstd·(dy − y·mean(dy·y)) with y = x·rstd, from the forward's input and saved rstd. */
export function rmsNormBwd(rt: Runtime, dy: Tensor, x: Tensor, rstd: Tensor): Tensor {
  const { rows, cols, dtype } = check('rmsNormBwd', x);
  if (dy.size !== x.size || dy.dtype !== dtype) throw new Error(`rmsNormBwd: dy ${dy.describe()} does not match x ${x.describe()}`);
  if (rstd.size !== rows || rstd.dtype !== 'f32') throw new Error(`rmsNormBwd: rstd ${rstd.describe()} must be f32[${rows}] for x ${x.describe()}`);
  const s = spec(rt, 'rms_norm_bwd', cols, dtype);
  const dx = rt.empty(x.shape, dtype);
  const k = rt.kernel(s);
  const params = { rows, cols, x_off: x.offset, dy_off: dy.offset, y_off: dx.offset, rstd_off: rstd.offset };
  rt.dispatch1d(k, [x, dy, rstd, dx], params, Math.ceil(rows / (s.overrides.WG / s.overrides.ROW_THREADS)));
  return dx;
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, written to be read.

/** RMS norm of each row of x [rows, cols]; returns y and rstd. */
export function rmsNormRef(x: Float32Array, rows: number, cols: number, eps = RMS_NORM_EPS): { y: Float32Array; rstd: Float32Array } {
  const y = new Float32Array(rows * cols);
  const rstd = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += x[r * cols + j] ** 2;
    const s = 1 / Math.sqrt(ss / cols + eps);
    rstd[r] = s;
    for (let j = 0; j < cols; j++) y[r * cols + j] = x[r * cols + j] * s;
  }
  return { y, rstd };
}

/** dx = rstd·(dy − y·mean(dy·y)) per row. */
export function rmsNormBwdRef(dy: Float32Array, x: Float32Array, rows: number, cols: number, eps = RMS_NORM_EPS): Float32Array {
  const { y, rstd } = rmsNormRef(x, rows, cols, eps);
  const dx = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += dy[r * cols + j] * y[r * cols + j];
    const m = dot / cols;
    for (let j = 0; j < cols; j++) dx[r * cols + j] = rstd[r] * (dy[r * cols + j] - y[r * cols + j] * m);
  }
  return dx;
}
