/**
 * @file Wrapper for kernels/rotary.wgsl (rotary position embedding on half-split pairs, as the
 * reference's apply_rotary_emb), the cos/sin tables, and the plain-TS references.
 *
 * Convention (REFERENCE.md): for j < D/2, x1 = x[..., j], x2 = x[..., j + D/2],
 *   y1 = x1·cos + x2·sin,  y2 = −x1·sin + x2·cos,  angle(t, j) = t · base^(−2j/D).
 * The backward is the inverse rotation (the same with sin negated).
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;

/** cos and sin of angle(t, j) = t · base^(−2j/D) as [T, D/2] arrays (computed in float64, stored f32). */
export function rotaryTablesHost(T: number, D: number, base = 10000): { cos: Float32Array; sin: Float32Array } {
  if (!Number.isInteger(D) || D < 2 || D % 2 !== 0) throw new Error(`rotaryTables: head dim ${D} must be even and >= 2`);
  if (!Number.isInteger(T) || T < 1) throw new Error(`rotaryTables: sequence length ${T}`);
  const half = D / 2;
  const cos = new Float32Array(T * half);
  const sin = new Float32Array(T * half);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < half; j++) {
      const angle = t * Math.pow(base, (-2 * j) / D);
      cos[t * half + j] = Math.cos(angle);
      sin[t * half + j] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** The tables on the GPU: kept f32 tensors [T, D/2] (uploaded once; a view of the first rows serves shorter sequences). */
export function rotaryTables(rt: Runtime, T: number, D: number, base = 10000): { cos: Tensor; sin: Tensor } {
  const host = rotaryTablesHost(T, D, base);
  return {
    cos: rt.keep(rt.fromArray(host.cos, [T, D / 2], 'f32', 'rotary.cos')),
    sin: rt.keep(rt.fromArray(host.sin, [T, D / 2], 'f32', 'rotary.sin')),
  };
}

function run(rt: Runtime, entry: 'rotary_fwd' | 'rotary_bwd', x: Tensor, cos: Tensor, sin: Tensor, out?: Tensor): Tensor {
  const op = entry === 'rotary_fwd' ? 'rotary' : 'rotaryBwd';
  if (x.dtype !== 'f32' && x.dtype !== 'f16') throw new Error(`${op}: ${x.describe()} is not a float tensor`);
  if (x.ndim !== 4) throw new Error(`${op}: x ${x.describe()} must be [B, T, H, D]`);
  const [, T, H, D] = x.shape;
  if (D % 2 !== 0) throw new Error(`${op}: head dim of ${x.describe()} must be even`);
  const half = D / 2;
  for (const tab of [cos, sin]) {
    if (tab.dtype !== 'f32' || tab.ndim !== 2 || tab.dim(1) !== half || tab.dim(0) < T) {
      throw new Error(`${op}: table ${tab.describe()} must be f32[>=${T}, ${half}] for x ${x.describe()}`);
    }
  }
  const y = out ?? rt.empty(x.shape, x.dtype);
  if (y.size !== x.size || y.dtype !== x.dtype) throw new Error(`${op}: out ${y.describe()} does not match x ${x.describe()}`);
  const pairs = x.size / 2;
  const k = rt.kernel({ source: 'rotary.wgsl', entry, overrides: { WG }, dtype: x.dtype });
  const params = { pairs, seq_len: T, H, half, x_off: x.offset, y_off: y.offset, cos_off: cos.offset, sin_off: sin.offset };
  rt.dispatch1d(k, [x, cos, sin, y], params, Math.ceil(pairs / WG));
  return y;
}

/** Rotates x [B, T, H, D] by position (row t of the tables is position t). */
export function rotaryFwd(rt: Runtime, x: Tensor, cos: Tensor, sin: Tensor, out?: Tensor): Tensor {
  return run(rt, 'rotary_fwd', x, cos, sin, out);
}

/** The gradient of rotaryFwd: dy rotated back (the inverse rotation). */
export function rotaryBwd(rt: Runtime, dy: Tensor, cos: Tensor, sin: Tensor, out?: Tensor): Tensor {
  return run(rt, 'rotary_bwd', dy, cos, sin, out);
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, written to be read. x is [B, T, H, D]; tables [>=T, D/2].

/** Calls f(at, j, t) for every pair: x1 at index at + j, x2 at at + j + D/2, table entry t·D/2 + j. */
function forEachPair(shape: readonly number[], f: (at: number, j: number, t: number) => void): void {
  const [B, T, H, D] = shape;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        for (let j = 0; j < D / 2; j++) f(((b * T + t) * H + h) * D, j, t);
      }
    }
  }
}

/** y1 = x1·cos + x2·sin, y2 = −x1·sin + x2·cos. */
export function rotaryRef(x: Float32Array, shape: readonly number[], cos: Float32Array, sin: Float32Array): Float32Array {
  const half = shape[3] / 2;
  const y = new Float32Array(x.length);
  forEachPair(shape, (at, j, t) => {
    const c = cos[t * half + j], s = sin[t * half + j];
    const x1 = x[at + j], x2 = x[at + j + half];
    y[at + j] = x1 * c + x2 * s;
    y[at + j + half] = -x1 * s + x2 * c;
  });
  return y;
}

/** The transpose of the rotation: dx1 = dy1·cos − dy2·sin, dx2 = dy1·sin + dy2·cos. */
export function rotaryBwdRef(dy: Float32Array, shape: readonly number[], cos: Float32Array, sin: Float32Array): Float32Array {
  const half = shape[3] / 2;
  const dx = new Float32Array(dy.length);
  forEachPair(shape, (at, j, t) => {
    const c = cos[t * half + j], s = sin[t * half + j];
    const dy1 = dy[at + j], dy2 = dy[at + j + half];
    dx[at + j] = dy1 * c - dy2 * s;
    dx[at + j + half] = dy1 * s + dy2 * c;
  });
  return dx;
}
