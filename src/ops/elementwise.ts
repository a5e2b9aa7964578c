/**
 * @file Wrappers for kernels/elementwise.wgsl and their plain-TS references.
 * Outputs are new pool tensors unless an `out` is given; in-place ops say so in their name.
 */
import { f16Bits, fromF16Bits, type Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;
const spec = (entry: string, group: 'BINARY' | 'UNARY' | 'INPLACE' | 'SCALAR' | 'SCALAR_INPLACE', dtype: 'f32' | 'f16') =>
  ({ source: 'elementwise.wgsl', entry, defines: { [group]: true }, overrides: { WG }, dtype }) as const;

function floatDtype(t: Tensor): 'f32' | 'f16' {
  if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new Error(`${t.describe()}: elementwise ops take float tensors`);
  return t.dtype;
}

function sameSize(a: Tensor, b: Tensor, op: string): void {
  if (a.size !== b.size) throw new Error(`${op}: ${a.describe()} and ${b.describe()} differ in size`);
}

function binary(rt: Runtime, entry: string, a: Tensor, b: Tensor, alpha: number, beta: number, out?: Tensor): Tensor {
  sameSize(a, b, entry);
  const y = out ?? rt.empty(a.shape, a.dtype);
  sameSize(a, y, entry);
  const k = rt.kernel(spec(entry, 'BINARY', floatDtype(a)));
  rt.dispatch1d(k, [a, b, y], { n: a.size, a_off: a.offset, b_off: b.offset, y_off: y.offset, alpha, beta }, Math.ceil(a.size / WG));
  return y;
}

/** y = alpha·a + beta·b */
export function addScaled(rt: Runtime, a: Tensor, b: Tensor, alpha = 1, beta = 1, out?: Tensor): Tensor {
  return binary(rt, 'add_scaled', a, b, alpha, beta, out);
}

/** y = a + b */
export function add(rt: Runtime, a: Tensor, b: Tensor, out?: Tensor): Tensor {
  return binary(rt, 'add_scaled', a, b, 1, 1, out);
}

/** y = alpha·a·b (elementwise) */
export function mul(rt: Runtime, a: Tensor, b: Tensor, alpha = 1, out?: Tensor): Tensor {
  return binary(rt, 'mul', a, b, alpha, 0, out);
}

/** y = alpha·s·a where s is a one-element f32 tensor on the GPU (no readback); a, y f32 or f16. */
export function scaleByScalar(rt: Runtime, a: Tensor, s: Tensor, alpha = 1, out?: Tensor): Tensor {
  if (s.size !== 1 || s.dtype !== 'f32') throw new Error(`scaleByScalar: ${s.describe()} is not an f32 scalar`);
  const y = out ?? rt.empty(a.shape, a.dtype);
  const k = rt.kernel(spec('scale_by_scalar', 'SCALAR', floatDtype(a)));
  rt.dispatch1d(k, [a, s, y], { n: a.size, a_off: a.offset, b_off: s.offset, y_off: y.offset, alpha, beta: 0 }, Math.ceil(a.size / WG));
  return y;
}

/** y = alpha·a (a copy when alpha = 1) */
export function scale(rt: Runtime, a: Tensor, alpha: number, out?: Tensor): Tensor {
  const y = out ?? rt.empty(a.shape, a.dtype);
  sameSize(a, y, 'scale');
  const k = rt.kernel(spec('scale', 'UNARY', floatDtype(a)));
  rt.dispatch1d(k, [a, y], { n: a.size, a_off: a.offset, b_off: 0, y_off: y.offset, alpha, beta: 0 }, Math.ceil(a.size / WG));
  return y;
}

/** A copy of a (into `out` if given). */
export function copy(rt: Runtime, a: Tensor, out?: Tensor): Tensor {
  return scale(rt, a, 1, out);
}

/** y += alpha·x, in place on y. */
export function axpyInPlace(rt: Runtime, y: Tensor, x: Tensor, alpha = 1): Tensor {
  sameSize(x, y, 'axpy');
  const k = rt.kernel(spec('axpy', 'INPLACE', floatDtype(y)));
  rt.dispatch1d(k, [x, y], { n: y.size, a_off: x.offset, b_off: 0, y_off: y.offset, alpha, beta: 0 }, Math.ceil(y.size / WG));
  return y;
}

/** y ← alpha·s·y in place, where s is a one-element f32 tensor on the GPU; y f32 or f16. */
export function scaleByScalarInPlace(rt: Runtime, y: Tensor, s: Tensor, alpha = 1): Tensor {
  if (s.size !== 1 || s.dtype !== 'f32') throw new Error(`scaleByScalarInPlace: ${s.describe()} is not an f32 scalar`);
  const k = rt.kernel(spec('scale_by_scalar_inplace', 'SCALAR_INPLACE', floatDtype(y)));
  rt.dispatch1d(k, [s, y], { n: y.size, a_off: s.offset, b_off: 0, y_off: y.offset, alpha, beta: 0 }, Math.ceil(y.size / WG));
  return y;
}

/**
 * y = alpha·a converted to `dtype` (f32 ↔ f16; a plain scaled copy when the dtypes match). The
 * conversion rounds to nearest; f16 overflows to ±inf past 65504, which the mixed-precision callers
 * keep away from (weights are small; gradients are cast f16 → f32, the safe direction).
 */
export function cast(rt: Runtime, a: Tensor, dtype: 'f32' | 'f16', alpha = 1, out?: Tensor): Tensor {
  const from = floatDtype(a);
  const y = out ?? rt.empty(a.shape, dtype);
  sameSize(a, y, 'cast');
  if (y.dtype !== dtype) throw new Error(`cast: out ${y.describe()} is not ${dtype}`);
  if (from === dtype) return scale(rt, a, alpha, y);
  // the kernel is compiled over T = f16 and reads or writes the f32 side explicitly
  const k = rt.kernel({ source: 'elementwise.wgsl', entry: 'cast_dtype', defines: { CAST: true, TO_T: dtype === 'f16' }, overrides: { WG }, dtype: 'f16' });
  rt.dispatch1d(k, [a, y], { n: a.size, a_off: a.offset, b_off: 0, y_off: y.offset, alpha, beta: 0 }, Math.ceil(a.size / WG));
  return y;
}

/** y ← y + w·(x − y), in place on y (torch's `y.lerp_(x, w)`). */
export function lerpInPlace(rt: Runtime, y: Tensor, x: Tensor, w: number): Tensor {
  sameSize(x, y, 'lerp');
  const k = rt.kernel(spec('lerp', 'INPLACE', floatDtype(y)));
  rt.dispatch1d(k, [x, y], { n: y.size, a_off: x.offset, b_off: 0, y_off: y.offset, alpha: w, beta: 0 }, Math.ceil(y.size / WG));
  return y;
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, written to be read.

export function addScaledRef(a: Float32Array, b: Float32Array, alpha = 1, beta = 1): Float32Array {
  return a.map((v, i) => alpha * v + beta * b[i]);
}

export function mulRef(a: Float32Array, b: Float32Array, alpha = 1): Float32Array {
  return a.map((v, i) => alpha * v * b[i]);
}

export function scaleRef(a: Float32Array, alpha: number): Float32Array {
  return a.map((v) => alpha * v);
}

export function axpyRef(y: Float32Array, x: Float32Array, alpha: number): Float32Array {
  return y.map((v, i) => v + alpha * x[i]);
}

/** alpha·a rounded to f16 when dtype is f16 (round to nearest even, as the GPU's conversion). */
export function castRef(a: Float32Array, dtype: 'f32' | 'f16', alpha = 1): Float32Array {
  const y = a.map((v) => alpha * v);
  return dtype === 'f16' ? roundF16(y) : y;
}

/** Each value rounded to the nearest f16 (what storing it in an f16 tensor keeps). */
export function roundF16(a: ArrayLike<number>): Float32Array {
  return fromF16Bits(Uint16Array.from(a, (v) => f16Bits(v)));
}

export function lerpRef(y: Float32Array, x: Float32Array, w: number): Float32Array {
  return y.map((v, i) => v + w * (x[i] - v));
}
