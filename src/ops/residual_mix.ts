/**
 * @file Wrappers for kernels/residual_mix.wgsl and their plain-TS references: the per-layer
 * residual mix of the reference GPT, x = resid_lambdas[i]·x + x0_lambdas[i]·x0. The two scalars are
 * read on the GPU from the parameter vectors, so nothing is read back.
 *
 * The backward returns full-size [n_layer] gradients for both vectors (zero except at index i):
 * n_layer is tiny, and the tape then sums the contributions of every layer with no bookkeeping.
 * x, x0 (and dy) may be f16 or f32; lambdas, mus and their gradients are always f32.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;
/** Most workgroups the backward's reduction uses; each writes one pair of partial sums. */
const MAX_PARTS = 1024;
/** Elements per thread before the backward adds another workgroup (keeps small inputs to few partials). */
const ELEMS_PER_THREAD = 4;

const kernel = (rt: Runtime, entry: string, define: string, dtype: 'f32' | 'f16') =>
  rt.kernel({ source: 'residual_mix.wgsl', entry, defines: { [define]: true }, overrides: { WG }, dtype });

function floatDtype(t: Tensor, op: string): 'f32' | 'f16' {
  if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new Error(`${op}: ${t.describe()} is not a float tensor`);
  return t.dtype;
}

function check(op: string, x: Tensor, x0: Tensor, lambdas: Tensor, mus: Tensor, i: number, dy?: Tensor): void {
  const dtype = floatDtype(x, op);
  for (const t of [x0, ...(dy ? [dy] : [])]) {
    if (t.dtype !== dtype) throw new Error(`${op}: ${t.describe()} does not match ${x.describe()}`);
  }
  for (const t of [lambdas, mus]) if (t.dtype !== 'f32') throw new Error(`${op}: ${t.describe()} must be f32 (the scalars stay f32 when x is f16)`);
  if (x0.size !== x.size) throw new Error(`${op}: x ${x.describe()} and x0 ${x0.describe()} differ in size`);
  if (dy && dy.size !== x.size) throw new Error(`${op}: dy ${dy.describe()} does not match x ${x.describe()}`);
  if (lambdas.ndim !== 1 || mus.ndim !== 1 || lambdas.size !== mus.size) {
    throw new Error(`${op}: lambdas ${lambdas.describe()} and mus ${mus.describe()} must be vectors of one length`);
  }
  if (!Number.isInteger(i) || i < 0 || i >= lambdas.size) throw new Error(`${op}: layer ${i} outside lambdas ${lambdas.describe()}`);
}

/** y = lambdas[i]·x + mus[i]·x0 (x and x0 of one size; lambdas, mus [n_layer]). */
export function residualMixFwd(rt: Runtime, x: Tensor, x0: Tensor, lambdas: Tensor, mus: Tensor, i: number): Tensor {
  check('residualMixFwd', x, x0, lambdas, mus, i);
  const y = rt.empty(x.shape, x.dtype);
  const k = kernel(rt, 'residual_mix_fwd', 'FWD', x.dtype as 'f32' | 'f16');
  rt.dispatch1d(k, [x, x0, lambdas, mus, y], params(x, x0, x, y, lambdas, mus, i, 0), Math.ceil(x.size / WG));
  return y;
}

export interface ResidualMixGrads {
  /** λ[i]·dy */
  dx: Tensor;
  /** μ[i]·dy */
  dx0: Tensor;
  /** [n_layer]: Σ dy⊙x at index i, zero elsewhere. */
  dLambdas: Tensor;
  /** [n_layer]: Σ dy⊙x0 at index i, zero elsewhere. */
  dMus: Tensor;
}

/** Backward of residualMixFwd: all four gradients in one pass over dy, x, x0 plus a tiny reduce. */
export function residualMixBwd(rt: Runtime, dy: Tensor, x: Tensor, x0: Tensor, lambdas: Tensor, mus: Tensor, i: number): ResidualMixGrads {
  check('residualMixBwd', x, x0, lambdas, mus, i, dy);
  const dtype = x.dtype as 'f32' | 'f16';
  const n = x.size;
  const parts = Math.max(1, Math.min(MAX_PARTS, Math.ceil(n / (WG * ELEMS_PER_THREAD))));
  const dx = rt.empty(x.shape, dtype);
  const dx0 = rt.empty(x0.shape, dtype);
  const dLambdas = rt.empty(lambdas.shape, 'f32');
  const dMus = rt.empty(mus.shape, 'f32');
  const partials = rt.empty([parts, 2], 'f32');
  const p = params(x, x0, dy, dx, lambdas, mus, i, parts);
  rt.dispatch1d(kernel(rt, 'residual_mix_bwd', 'BWD', dtype), [dy, x, x0, lambdas, mus, dx, dx0, partials], p, parts);
  rt.dispatch(kernel(rt, 'residual_mix_bwd_reduce', 'BWD_REDUCE', dtype), [partials, dLambdas, dMus], p, 1);
  rt.release(partials);
  return { dx, dx0, dLambdas, dMus };
}

function params(x: Tensor, x0: Tensor, dy: Tensor, y: Tensor, lambdas: Tensor, mus: Tensor, layer: number, parts: number) {
  return {
    n: x.size,
    x_off: x.offset,
    x0_off: x0.offset,
    dy_off: dy.offset,
    y_off: y.offset,
    lam_off: lambdas.offset,
    mu_off: mus.offset,
    layer,
    n_layer: lambdas.size,
    parts,
  };
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, written to be read.

export function residualMixRef(x: Float32Array, x0: Float32Array, lambdas: Float32Array, mus: Float32Array, i: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let j = 0; j < x.length; j++) y[j] = lambdas[i] * x[j] + mus[i] * x0[j];
  return y;
}

export function residualMixBwdRef(
  dy: Float32Array,
  x: Float32Array,
  x0: Float32Array,
  lambdas: Float32Array,
  mus: Float32Array,
  i: number,
): { dx: Float32Array; dx0: Float32Array; dLambdas: Float32Array; dMus: Float32Array } {
  const dx = new Float32Array(x.length);
  const dx0 = new Float32Array(x.length);
  let sx = 0;
  let sx0 = 0;
  for (let j = 0; j < x.length; j++) {
    dx[j] = lambdas[i] * dy[j];
    dx0[j] = mus[i] * dy[j];
    sx += dy[j] * x[j];
    sx0 += dy[j] * x0[j];
  }
  const dLambdas = new Float32Array(lambdas.length);
  const dMus = new Float32Array(mus.length);
  dLambdas[i] = sx;
  dMus[i] = sx0;
  return { dx, dx0, dLambdas, dMus };
}
