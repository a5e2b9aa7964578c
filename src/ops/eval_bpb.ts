/**
 * @file Wrappers for kernels/eval_bpb.wgsl and their plain-TS references: the evaluation's own
 * cross-entropy (nats per target, masked by the target's byte count), per-chunk sums, and the
 * causality check's logit difference. Used only by evaluateBpb in prepare.ts: the harness computes
 * the metric with these, never with the model's loss.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;

type Variant = 'NATS' | 'SUM' | 'DIFF';

function kernel(rt: Runtime, entry: string, variant: Variant, dtype: 'f32' | 'f16' = 'f32') {
  return rt.kernel({ source: 'eval_bpb.wgsl', entry, defines: { [variant]: true }, overrides: { WG }, dtype });
}

function params(o: Partial<Record<'rows' | 'cols' | 'a_off' | 'b_off' | 'seq' | 'slot', number>>) {
  return { rows: 0, cols: 0, a_off: 0, b_off: 0, seq: 1, slot: 0, ...o };
}

function floatDtype(op: string, t: Tensor): 'f32' | 'f16' {
  if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new Error(`${op}: ${t.describe()} must be f32 or f16`);
  return t.dtype;
}

function checkOwned(op: string, t: Tensor, dtype: string, minSize: number): void {
  if (t.dtype !== dtype || t.offset !== 0 || t.size < minSize) {
    throw new Error(`${op}: ${t.describe()} must be a ${dtype} tensor of at least ${minSize} elements at offset 0`);
  }
}

/**
 * Per-token nats and bytes for n = logits.size / V rows of logits ([..., V]) against targets (i32,
 * n elements): nats[r] = logsumexp(logits[r]) − logits[r, target] where tokenBytes[target] > 0, else 0;
 * bytes[r] = tokenBytes[target]. Writes the first n elements of `nats` (f32) and `bytes` (u32).
 */
export function tokenNats(rt: Runtime, logits: Tensor, targets: Tensor, tokenBytes: Tensor, nats: Tensor, bytes: Tensor): void {
  const op = 'tokenNats';
  const dtype = floatDtype(op, logits);
  const V = logits.dim(-1);
  const n = V === 0 ? 0 : logits.size / V;
  if (targets.dtype !== 'i32' || targets.size !== n) throw new Error(`${op}: targets ${targets.describe()} must be i32 with ${n} elements for logits ${logits.describe()}`);
  checkOwned(op, tokenBytes, 'i32', V);
  if (tokenBytes.size !== V) throw new Error(`${op}: tokenBytes ${tokenBytes.describe()} must have V = ${V} elements`);
  checkOwned(op, nats, 'f32', n);
  checkOwned(op, bytes, 'u32', n);
  rt.dispatch1d(kernel(rt, 'eval_token_nats', 'NATS', dtype), [logits, targets, tokenBytes, nats, bytes], params({ rows: n, cols: V, a_off: logits.offset, b_off: targets.offset }), n);
}

/** chunkNats[slot] = Σ nats[0..n), chunkBytes[slot] = Σ bytes[0..n) (u32, exact). */
export function sumChunk(rt: Runtime, nats: Tensor, bytes: Tensor, n: number, chunkNats: Tensor, chunkBytes: Tensor, slot: number): void {
  const op = 'sumChunk';
  checkOwned(op, nats, 'f32', n);
  checkOwned(op, bytes, 'u32', n);
  checkOwned(op, chunkNats, 'f32', slot + 1);
  checkOwned(op, chunkBytes, 'u32', slot + 1);
  rt.dispatch(kernel(rt, 'eval_sum_chunk', 'SUM'), [nats, bytes, chunkNats, chunkBytes], params({ rows: n, slot }), 1);
}

/**
 * diff[r·T + t] = max_v |a[r, t, v] − b[r, t, v]| for t < bound[r], else 0, for logits a and b of
 * shape [rows, T, V]; bound is i32 [rows]. Returns diff (f32 [rows·T]).
 */
export function causalDiff(rt: Runtime, a: Tensor, b: Tensor, bound: Tensor): Tensor {
  const op = 'causalDiff';
  const dtype = floatDtype(op, a);
  if (a.ndim !== 3 || b.dtype !== a.dtype || b.shape.join() !== a.shape.join()) throw new Error(`${op}: logits ${a.describe()} and ${b.describe()} must both be [rows, T, V] of one dtype`);
  const [rows, T, V] = a.shape;
  checkOwned(op, bound, 'i32', rows);
  const diff = rt.empty([rows * T], 'f32');
  rt.dispatch1d(kernel(rt, 'eval_causal_diff', 'DIFF', dtype), [a, b, bound, diff], params({ rows: rows * T, cols: V, seq: T, a_off: a.offset, b_off: b.offset }), rows * T);
  return diff;
}

// ---------------------------------------------------------------------------------------------
// References

/** Per-row nats (f64) and bytes, as tokenNats computes them. */
export function tokenNatsRef(logits: Float32Array, targets: Int32Array, tokenBytes: Int32Array, V: number): { nats: Float64Array; bytes: Int32Array } {
  const n = targets.length;
  const nats = new Float64Array(n);
  const bytes = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, logits[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j] - m);
    const t = targets[r];
    bytes[r] = tokenBytes[t];
    nats[r] = tokenBytes[t] > 0 ? m + Math.log(s) - logits[r * V + t] : 0;
  }
  return { nats, bytes };
}

/** The sums sumChunk writes: Σ nats and Σ bytes over the first n rows. */
export function sumChunkRef(nats: ArrayLike<number>, bytes: ArrayLike<number>, n: number): [number, number] {
  let s = 0;
  let b = 0;
  for (let i = 0; i < n; i++) {
    s += nats[i];
    b += bytes[i];
  }
  return [s, b];
}

/** What causalDiff computes, for logits a and b of shape [rows, T, V]. */
export function causalDiffRef(a: Float32Array, b: Float32Array, bound: Int32Array, rows: number, T: number, V: number): Float32Array {
  const diff = new Float32Array(rows * T);
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < Math.min(T, bound[r]); t++) {
      let d = 0;
      for (let j = 0; j < V; j++) d = Math.max(d, Math.abs(a[(r * T + t) * V + j] - b[(r * T + t) * V + j]));
      diff[r * T + t] = d;
    }
  }
  return diff;
}

/** Bits per byte from nats and bytes: Σ nats / (ln 2 · Σ bytes). */
export function bitsPerByte(nats: number, bytes: number): number {
  return nats / (Math.LN2 * bytes);
}
