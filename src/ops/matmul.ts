/**
 * @file Wrapper for kernels/matmul.wgsl and its plain-TS reference.
 *
 * Shapes (numpy-like): with B 2-D, A's leading dimensions fold into M:
 *   A [..., M, K] (transA: [..., K, M]), B [K, N] (transB: [N, K]) → C [..., M, N].
 * With B 3-D [G, K, N], A is [G, M, K] or broadcast [M, K], and C is [G, M, N] (batched).
 * `alpha`, `beta`: C = alpha·op(A)·op(B) + beta·C (beta ≠ 0 needs `out`: gradient accumulation).
 * `lda` overrides A's row stride (elements), for a column slice such as x[..., :32].
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  out?: Tensor;
  /** Row stride of A as stored (default: its last dimension). */
  lda?: number;
  /** Columns of A as stored to use as K (with lda: the slice width). Default: all. */
  k?: number;
}

export interface MatmulShape {
  batch: number;
  M: number;
  N: number;
  K: number;
  outShape: number[];
  /** Strides in elements: op(A)[m, k] = A[a_sb·b + a_sm·m + a_sk·k], likewise B and C. */
  a: { sm: number; sk: number; sb: number };
  b: { sk: number; sn: number; sb: number };
  c: { sm: number; sb: number };
}

/** Works out M, N, K, batch and strides; throws on mismatched shapes. */
export function matmulShape(aShape: readonly number[], bShape: readonly number[], o: MatmulOptions = {}): MatmulShape {
  if (aShape.length < 2 && !(aShape.length >= 1 && bShape.length === 2)) throw new Error(`matmul: A [${aShape}] needs 2+ dims`);
  if (bShape.length !== 2 && bShape.length !== 3) throw new Error(`matmul: B [${bShape}] must be 2-D or 3-D`);
  const bBatch = bShape.length === 3 ? bShape[0] : 1;
  const [bRows, bCols] = bShape.slice(-2);
  const [K, N] = o.transB ? [bCols, bRows] : [bRows, bCols];
  const aLast = aShape[aShape.length - 1];
  const lda = o.lda ?? aLast;
  let batch: number, M: number, kA: number, outShape: number[], aBatchStride: number;
  if (bShape.length === 2) {
    batch = 1;
    if (o.transA) {
      if (aShape.length !== 2) throw new Error('matmul: transA with 2-D B needs 2-D A');
      [kA, M] = aShape;
      outShape = [M, N];
    } else {
      kA = o.k ?? aLast;
      M = aShape.slice(0, -1).reduce((p, d) => p * d, 1);
      outShape = [...aShape.slice(0, -1), N];
    }
    aBatchStride = 0;
  } else {
    batch = bBatch;
    const a2 = aShape.slice(-2);
    [M, kA] = o.transA ? [a2[1], a2[0]] : [a2[0], o.k ?? a2[1]];
    const aBatch = aShape.length === 3 ? aShape[0] : 1;
    if (aShape.length > 3 || (aBatch !== batch && aBatch !== 1)) throw new Error(`matmul: A [${aShape}] vs batched B [${bShape}]`);
    outShape = [batch, M, N];
    aBatchStride = aBatch === 1 ? 0 : a2[0] * a2[1];
  }
  if (kA !== K) throw new Error(`matmul: inner dimensions differ: A [${aShape}]${o.transA ? 'ᵀ' : ''} vs B [${bShape}]${o.transB ? 'ᵀ' : ''}`);
  if (o.k !== undefined && o.k > aLast) throw new Error(`matmul: k=${o.k} exceeds A's ${aLast} columns`);
  const a = o.transA ? { sm: 1, sk: lda, sb: aBatchStride } : { sm: lda, sk: 1, sb: aBatchStride };
  const bStrides = o.transB ? { sk: 1, sn: bCols, sb: bBatch === 1 ? 0 : bRows * bCols } : { sk: bCols, sn: 1, sb: bBatch === 1 ? 0 : bRows * bCols };
  return { batch, M, N, K, outShape, a, b: bStrides, c: { sm: N, sb: M * N } };
}

/** C = alpha·op(A)·op(B) + beta·C. */
export function matmul(rt: Runtime, a: Tensor, b: Tensor, o: MatmulOptions = {}): Tensor {
  const s = matmulShape(a.shape, b.shape, o);
  const beta = o.beta ?? 0;
  if (beta !== 0 && !o.out) throw new Error('matmul: beta ≠ 0 needs out');
  const c = o.out ?? rt.empty(s.outShape, a.dtype);
  if (c.size !== s.batch * s.M * s.N) throw new Error(`matmul: out ${c.describe()} should be [${s.outShape}]`);
  const dtype = a.dtype === 'f16' ? 'f16' : 'f32';
  if (b.dtype !== a.dtype || c.dtype !== a.dtype) throw new Error(`matmul: dtypes ${a.dtype}, ${b.dtype}, ${c.dtype} differ`);
  const k = rt.kernel({ source: 'matmul.wgsl', entry: 'matmul_naive', dtype });
  rt.dispatch(
    k,
    [a, b, c],
    {
      M: s.M, N: s.N, K: s.K,
      a_off: a.offset, a_sm: s.a.sm, a_sk: s.a.sk, a_sb: s.a.sb,
      b_off: b.offset, b_sk: s.b.sk, b_sn: s.b.sn, b_sb: s.b.sb,
      c_off: c.offset, c_sm: s.c.sm, c_sb: s.c.sb,
      alpha: o.alpha ?? 1, beta,
    },
    Math.ceil(s.N / 16),
    Math.ceil(s.M / 16),
    s.batch,
  );
  return c;
}

/** Plain-TS reference with the same shape rules (float64 accumulation). */
export function matmulRef(a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[], o: MatmulOptions & { c?: Float32Array } = {}): Float32Array {
  const s = matmulShape(aShape, bShape, o);
  const c = new Float32Array(s.batch * s.M * s.N);
  const alpha = o.alpha ?? 1, beta = o.beta ?? 0;
  for (let g = 0; g < s.batch; g++) {
    for (let m = 0; m < s.M; m++) {
      for (let n = 0; n < s.N; n++) {
        let acc = 0;
        for (let k = 0; k < s.K; k++) acc += a[g * s.a.sb + m * s.a.sm + k * s.a.sk] * b[g * s.b.sb + k * s.b.sk + n * s.b.sn];
        const i = g * s.c.sb + m * s.c.sm + n;
        c[i] = alpha * acc + (beta !== 0 && o.c ? beta * o.c[i] : 0);
      }
    }
  }
  return c;
}
