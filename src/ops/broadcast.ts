/**
 * @file Torch-like tensor math with broadcasting (kernels/broadcast.wgsl) and plain-TS references:
 * the primitives train.ts composes its optimizer (Muon, NorMuon, AdamW) and loss from.
 *
 *   binary(rt, op, a, b)  y = op(alpha·a, beta·b), numpy broadcasting of a and b (≤ 4 dims);
 *                         op: add, sub, mul, div, max, min. With `out` = a it runs in place.
 *   unary(rt, op, x)      y = alpha·f(x) + beta; f: sqrt, rsqrt, square, tanh, clamp_min (max(x, c)),
 *                         ge (1 where x ≥ c, else 0), affine (x). With `out` = x it runs in place.
 *   sumAxis(rt, x, axis)  alpha·Σ (or Σ x² with `squared`) over one axis or a contiguous range of
 *                         axes, keeping them as size 1 (torch's keepdim=True); f32 result.
 * Outputs are new pool tensors unless `out` is given.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;
const REDUCE_WG = 64; // reductions here are over rows and columns of optimizer-sized matrices
const MAX_DIMS = 4;

export const BINARY_OPS = ['add', 'sub', 'mul', 'div', 'max', 'min'] as const;
export type BinaryOp = (typeof BINARY_OPS)[number];
export const UNARY_OPS = ['sqrt', 'rsqrt', 'square', 'tanh', 'clamp_min', 'ge', 'affine'] as const;
export type UnaryOp = (typeof UNARY_OPS)[number];

function floatDtype(t: Tensor, op: string): 'f32' | 'f16' {
  if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new Error(`${op}: ${t.describe()} is not a float tensor`);
  return t.dtype;
}

function sameBuffer(a: Tensor, b: Tensor): boolean {
  return a.storage === b.storage;
}

function isSame(a: Tensor, b: Tensor): boolean {
  return a.storage === b.storage && a.offset === b.offset && a.size === b.size;
}

/** numpy's broadcast of two shapes; throws when they do not broadcast. */
export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`shapes [${a}] and [${b}] do not broadcast`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Strides (elements) of a contiguous `shape` read as `outShape` (0 where it broadcasts), padded to 4 dims. */
function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const strides = new Array<number>(outShape.length).fill(0);
  let s = 1;
  for (let i = shape.length - 1, j = outShape.length - 1; i >= 0; i--, j--) {
    strides[j] = shape[i] === 1 && outShape[j] !== 1 ? 0 : s;
    s *= shape[i];
  }
  return [...new Array<number>(MAX_DIMS - outShape.length).fill(0), ...strides];
}

export interface BinaryOptions {
  alpha?: number;
  beta?: number;
  /** Write here (the broadcast shape's size); `out` = a runs in place. */
  out?: Tensor;
}

/** y = op(alpha·a, beta·b) with a and b broadcast to a common shape. */
export function binary(rt: Runtime, op: BinaryOp, a: Tensor, b: Tensor, o: BinaryOptions = {}): Tensor {
  const name = `binary(${op})`;
  const code = BINARY_OPS.indexOf(op);
  if (code < 0) throw new Error(`binary: unknown op '${op}' (one of ${BINARY_OPS.join(', ')})`);
  const dtype = floatDtype(a, name);
  if (b.dtype !== dtype) throw new Error(`${name}: ${a.describe()} and ${b.describe()} differ in dtype`);
  const shape = broadcastShape(a.shape, b.shape);
  if (shape.length > MAX_DIMS) throw new Error(`${name}: more than ${MAX_DIMS} dimensions ([${shape}]); reshape first`);
  const n = shape.reduce((p, d) => p * d, 1);
  const inPlace = o.out !== undefined && isSame(o.out, a);
  const y = o.out ?? rt.empty(shape, dtype);
  if (y.size !== n || y.dtype !== dtype) throw new Error(`${name}: out ${y.describe()} should be ${dtype}[${shape}]`);
  if (inPlace && shape.join() !== a.shape.join()) throw new Error(`${name}: in place, ${b.describe()} must broadcast to ${a.describe()}`);
  if (inPlace ? sameBuffer(b, y) : sameBuffer(a, y) || sameBuffer(b, y)) {
    throw new Error(`${name}: out ${y.describe()} shares a buffer with an input (only out = a, exactly, runs in place)`);
  }
  if (n === 0) return y;
  const dims = [...new Array<number>(MAX_DIMS - shape.length).fill(1), ...shape];
  const [sa, sb] = [broadcastStrides(a.shape, shape), broadcastStrides(b.shape, shape)];
  const params = {
    n, d1: dims[1], d2: dims[2], d3: dims[3],
    sa0: sa[0], sa1: sa[1], sa2: sa[2], sa3: sa[3], sb0: sb[0], sb1: sb[1], sb2: sb[2], sb3: sb[3],
    a_off: a.offset, b_off: b.offset, y_off: y.offset, alpha: o.alpha ?? 1, beta: o.beta ?? 1,
  };
  const variant = inPlace ? 'INPLACE' : 'BINARY';
  const k = rt.kernel({ source: 'broadcast.wgsl', entry: inPlace ? 'binary_inplace' : 'binary', defines: { STRIDED: true, [variant]: true }, overrides: { WG, OP: code }, dtype });
  rt.dispatch1d(k, inPlace ? [b, y] : [a, b, y], params, Math.ceil(n / WG));
  return y;
}

export interface UnaryOptions {
  alpha?: number;
  beta?: number;
  /** The constant of clamp_min and ge. */
  c?: number;
  /** Write here (x's size); `out` = x runs in place. */
  out?: Tensor;
}

/** y = alpha·f(x) + beta. */
export function unary(rt: Runtime, op: UnaryOp, x: Tensor, o: UnaryOptions = {}): Tensor {
  const name = `unary(${op})`;
  const code = UNARY_OPS.indexOf(op);
  if (code < 0) throw new Error(`unary: unknown op '${op}' (one of ${UNARY_OPS.join(', ')})`);
  const dtype = floatDtype(x, name);
  if ((op === 'clamp_min' || op === 'ge') && o.c === undefined) throw new Error(`${name} needs the constant c`);
  const inPlace = o.out !== undefined && isSame(o.out, x);
  const y = o.out ?? rt.empty(x.shape, dtype);
  if (y.size !== x.size || y.dtype !== dtype) throw new Error(`${name}: out ${y.describe()} should be ${dtype}[${x.shape}]`);
  if (!inPlace && sameBuffer(x, y)) throw new Error(`${name}: out ${y.describe()} overlaps x (only out = x, exactly, runs in place)`);
  if (x.size === 0) return y;
  const params = { n: x.size, x_off: x.offset, y_off: y.offset, alpha: o.alpha ?? 1, beta: o.beta ?? 0, c: o.c ?? 0 };
  const variant = inPlace ? 'UNARY_INPLACE' : 'UNARY';
  const k = rt.kernel({ source: 'broadcast.wgsl', entry: inPlace ? 'unary_inplace' : 'unary', defines: { MAP: true, [variant]: true }, overrides: { WG, OP: code }, dtype });
  rt.dispatch1d(k, inPlace ? [y] : [x, y], params, Math.ceil(x.size / WG));
  return y;
}

export interface SumAxisOptions {
  /** Sum x² instead of x. */
  squared?: boolean;
  /** Multiply the result (1/n for a mean). */
  alpha?: number;
  /** Write here (f32, the kept-dims shape's size). */
  out?: Tensor;
}

/** [outer, n, inner] for reducing `axis` (or the contiguous axes [first, last]) of `shape`. */
function reduceDims(shape: readonly number[], axis: number | readonly [number, number]): { outer: number; n: number; inner: number; outShape: number[] } {
  const norm = (d: number) => (d < 0 ? shape.length + d : d);
  const [first, last] = typeof axis === 'number' ? [norm(axis), norm(axis)] : [norm(axis[0]), norm(axis[1])];
  if (!(first >= 0 && last < shape.length && first <= last)) throw new Error(`sumAxis: axis ${JSON.stringify(axis)} out of range for [${shape}]`);
  const prod = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
  return {
    outer: prod(shape.slice(0, first)),
    n: prod(shape.slice(first, last + 1)),
    inner: prod(shape.slice(last + 1)),
    outShape: shape.map((d, i) => (i >= first && i <= last ? 1 : d)),
  };
}

/** alpha·Σ over `axis` (a number, or [first, last] for a contiguous range), kept as size 1; f32. */
export function sumAxis(rt: Runtime, x: Tensor, axis: number | readonly [number, number], o: SumAxisOptions = {}): Tensor {
  const dtype = floatDtype(x, 'sumAxis');
  const { outer, n, inner, outShape } = reduceDims(x.shape, axis);
  const y = o.out ?? rt.empty(outShape, 'f32');
  if (y.size !== outer * inner || y.dtype !== 'f32') throw new Error(`sumAxis: out ${y.describe()} should be f32[${outShape}]`);
  if (sameBuffer(x, y)) throw new Error(`sumAxis: out ${y.describe()} shares x's buffer`);
  if (y.size === 0) return y;
  const k = rt.kernel({ source: 'broadcast.wgsl', entry: 'reduce_axis', defines: { REDUCE: true }, overrides: { WG: REDUCE_WG }, dtype });
  const params = { outer, n, inner, x_off: x.offset, y_off: y.offset, alpha: o.alpha ?? 1, squared: o.squared ? 1 : 0 };
  rt.dispatch1d(k, [x, y], params, outer * inner);
  return y;
}

// ---------------------------------------------------------------------------------------------
// References: plain loops in float64, written to be read.

const BINARY_REF: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b, sub: (a, b) => a - b, mul: (a, b) => a * b, div: (a, b) => a / b, max: Math.max, min: Math.min,
};

const UNARY_REF: Record<UnaryOp, (x: number, c: number) => number> = {
  sqrt: Math.sqrt, rsqrt: (x) => 1 / Math.sqrt(x), square: (x) => x * x, tanh: (x) => Math.tanh(x),
  clamp_min: (x, c) => Math.max(x, c), ge: (x, c) => (x >= c ? 1 : 0), affine: (x) => x,
};

/** binary's result and shape, by explicit index arithmetic over the broadcast shape. */
export function binaryRef(op: BinaryOp, a: ArrayLike<number>, aShape: readonly number[], b: ArrayLike<number>, bShape: readonly number[], alpha = 1, beta = 1): { data: Float64Array; shape: number[] } {
  const shape = broadcastShape(aShape, bShape);
  const n = shape.reduce((p, d) => p * d, 1);
  const data = new Float64Array(n);
  const at = (values: ArrayLike<number>, vShape: readonly number[], idx: number[]) => {
    let flat = 0;
    for (let i = 0; i < vShape.length; i++) flat = flat * vShape[i] + (vShape[i] === 1 ? 0 : idx[idx.length - vShape.length + i]);
    return values[flat];
  };
  for (let i = 0; i < n; i++) {
    const idx: number[] = [];
    for (let d = shape.length - 1, r = i; d >= 0; d--) {
      idx.unshift(r % shape[d]);
      r = Math.floor(r / shape[d]);
    }
    data[i] = BINARY_REF[op](alpha * at(a, aShape, idx), beta * at(b, bShape, idx));
  }
  return { data, shape };
}

export function unaryRef(op: UnaryOp, x: ArrayLike<number>, o: { alpha?: number; beta?: number; c?: number } = {}): Float64Array {
  return Float64Array.from(x, (v) => (o.alpha ?? 1) * UNARY_REF[op](v, o.c ?? 0) + (o.beta ?? 0));
}

export function sumAxisRef(x: ArrayLike<number>, shape: readonly number[], axis: number | readonly [number, number], o: { squared?: boolean; alpha?: number } = {}): { data: Float64Array; shape: number[] } {
  const { outer, n, inner, outShape } = reduceDims(shape, axis);
  const data = new Float64Array(outer * inner);
  for (let i = 0; i < outer; i++) {
    for (let j = 0; j < inner; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) {
        const v = x[(i * n + k) * inner + j];
        s += o.squared ? v * v : v;
      }
      data[i * inner + j] = (o.alpha ?? 1) * s;
    }
  }
  return { data, shape: outShape };
}
