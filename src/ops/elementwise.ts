/**
 * @file Wrappers for kernels/elementwise.wgsl and their plain-TS references.
 * Outputs are new pool tensors unless an `out` is given; in-place ops say so in their name.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;
const spec = (entry: string, group: 'BINARY' | 'UNARY' | 'INPLACE', dtype: 'f32' | 'f16') =>
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

/** y = alpha·s·a where s is a one-element tensor on the GPU (no readback). */
export function scaleByScalar(rt: Runtime, a: Tensor, s: Tensor, alpha = 1, out?: Tensor): Tensor {
  if (s.size !== 1) throw new Error(`scaleByScalar: ${s.describe()} is not a scalar`);
  const y = out ?? rt.empty(a.shape, a.dtype);
  const k = rt.kernel(spec('scale_by_scalar', 'BINARY', floatDtype(a)));
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

/** y ← alpha·s·y in place, where s is a one-element tensor on the GPU. */
export function scaleByScalarInPlace(rt: Runtime, y: Tensor, s: Tensor, alpha = 1): Tensor {
  if (s.size !== 1) throw new Error(`scaleByScalarInPlace: ${s.describe()} is not a scalar`);
  const k = rt.kernel(spec('scale_by_scalar_inplace', 'INPLACE', floatDtype(y)));
  rt.dispatch1d(k, [s, y], { n: y.size, a_off: s.offset, b_off: 0, y_off: y.offset, alpha, beta: 0 }, Math.ceil(y.size / WG));
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

export function lerpRef(y: Float32Array, x: Float32Array, w: number): Float32Array {
  return y.map((v, i) => v + w * (x[i] - v));
}
