/**
 * @file Wrappers for kernels/value_embed.wgsl and their plain-TS references: the value-embedding
 * gate of the reference GPT (ResFormer-style value residual), y = v + 2·sigmoid(z)·ve with
 * v, ve [B, T, Hkv, D] and one gate logit per kv head, z [B, T, Hkv] (the caller's ve_gate linear).
 * Zero-initialised ve_gate gives z = 0, a gate of exactly 1.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;

const kernel = (rt: Runtime, entry: string, define: string, wg: number, dtype: 'f32' | 'f16') =>
  rt.kernel({ source: 'value_embed.wgsl', entry, defines: { [define]: true }, overrides: { WG: wg }, dtype });

/** Rows (B·T·Hkv) and head size D; throws unless v, ve [..., Hkv, D] and z [..., Hkv] line up. */
function shapes(op: string, v: Tensor, ve: Tensor, z: Tensor, dy?: Tensor): { rows: number; D: number; dtype: 'f32' | 'f16' } {
  if (v.dtype !== 'f32' && v.dtype !== 'f16') throw new Error(`${op}: v ${v.describe()} is not a float tensor`);
  for (const t of [ve, z, ...(dy ? [dy] : [])]) {
    if (t.dtype !== v.dtype) throw new Error(`${op}: ${t.describe()} does not match v ${v.describe()}`);
  }
  const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
  if (v.ndim < 2 || !sameShape(v.shape, ve.shape) || !sameShape(v.shape.slice(0, -1), z.shape)) {
    throw new Error(`${op}: expected v, ve [..., Hkv, D] and z [..., Hkv]; got v ${v.describe()}, ve ${ve.describe()}, z ${z.describe()}`);
  }
  if (dy && !sameShape(dy.shape, v.shape)) throw new Error(`${op}: dy ${dy.describe()} does not match v ${v.describe()}`);
  return { rows: z.size, D: v.dim(-1), dtype: v.dtype };
}

/** y = v + 2·sigmoid(z)[..., None]·ve. */
export function valueEmbedFwd(rt: Runtime, v: Tensor, ve: Tensor, z: Tensor): Tensor {
  const { rows, D, dtype } = shapes('valueEmbedFwd', v, ve, z);
  const y = rt.empty(v.shape, dtype);
  const p = { n: v.size, D, rows, v_off: v.offset, ve_off: ve.offset, z_off: z.offset, dy_off: 0 };
  rt.dispatch1d(kernel(rt, 'value_embed_fwd', 'FWD', WG, dtype), [v, ve, z, y], p, Math.ceil(v.size / WG));
  return y;
}

/** Threads per row in the backward: D rounded up to a power of two, within [32, 256]. */
function bwdWorkgroup(D: number): number {
  let wg = 32;
  while (wg < D && wg < 256) wg *= 2;
  return wg;
}

/**
 * Backward of valueEmbedFwd: dve = 2σ(z)·dy and dz = Σ_d dy·ve · 2σ(z)(1−σ(z)).
 * (dv = dy: the caller passes the incoming gradient through.)
 */
export function valueEmbedBwd(rt: Runtime, dy: Tensor, ve: Tensor, z: Tensor): { dve: Tensor; dz: Tensor } {
  const { rows, D, dtype } = shapes('valueEmbedBwd', dy, ve, z, dy);
  const dve = rt.empty(ve.shape, dtype);
  const dz = rt.empty(z.shape, dtype);
  const p = { n: dy.size, D, rows, v_off: 0, ve_off: ve.offset, z_off: z.offset, dy_off: dy.offset };
  rt.dispatch1d(kernel(rt, 'value_embed_bwd', 'BWD', bwdWorkgroup(D), dtype), [dy, ve, z, dve, dz], p, rows);
  return { dve, dz };
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, written to be read. Arrays are row-major [rows, D] and [rows].

const sigmoidRef = (z: number) => 1 / (1 + Math.exp(-z));

export function valueEmbedRef(v: Float32Array, ve: Float32Array, z: Float32Array, D: number): Float32Array {
  const y = new Float32Array(v.length);
  for (let row = 0; row < z.length; row++) {
    const gate = 2 * sigmoidRef(z[row]);
    for (let d = 0; d < D; d++) y[row * D + d] = v[row * D + d] + gate * ve[row * D + d];
  }
  return y;
}

export function valueEmbedBwdRef(dy: Float32Array, ve: Float32Array, z: Float32Array, D: number): { dv: Float32Array; dve: Float32Array; dz: Float32Array } {
  const dve = new Float32Array(ve.length);
  const dz = new Float32Array(z.length);
  for (let row = 0; row < z.length; row++) {
    const s = sigmoidRef(z[row]);
    let dot = 0;
    for (let d = 0; d < D; d++) {
      dve[row * D + d] = 2 * s * dy[row * D + d];
      dot += dy[row * D + d] * ve[row * D + d];
    }
    dz[row] = dot * 2 * s * (1 - s);
  }
  return { dv: dy.slice(), dve, dz };
}
