/**
 * @file Wrapper for kernels/matmul.wgsl and its plain-TS reference.
 *
 * Two levels. `matmul` works from tensor shapes (numpy-like): with B 2-D, A's leading dimensions
 * fold into M:
 *   A [..., M, K] (transA: [..., K, M]), B [K, N] (transB: [N, K]) → C [..., M, N].
 * With B 3-D [G, K, N], A is [G, M, K] or broadcast [M, K], and C is [G, M, N] (batched).
 * `alpha`, `beta`: C = alpha·op(A)·op(B) + beta·C (beta ≠ 0 needs `out`: gradient accumulation).
 * `lda` overrides A's row stride (elements), for a column slice such as x[..., :32]; `ldc` is C's
 * row stride, for writing into a column slice of a wider `out`.
 * dtypes: A and B share f32 or f16; C has their dtype, or f32 under f16 A and B (f32 accumulation
 * always). `matmul` without `out` returns A's dtype.
 * `gemm` is BLAS-like: explicit M, N, K, row strides and batch strides (0 = broadcast) over flat
 * tensors, for what shapes cannot say (a column slice of B, a broadcast B).
 *
 * Kernel choice (`planGemm`): naive for tiny or skinny products; otherwise the tiled kernel,
 * 128×128 tiles when M and N allow, else 64×64; split-K (partials + a reduce pass) when the tiles
 * alone cannot fill a big GPU, which is the weight-gradient case (TN, K = B·T).
 */
import { grid1d, MAX_GRID, type Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

/** Kernel variants: `naive` (one thread per output) or a tiled config from TILED_CONFIGS. */
export type MatmulImpl = 'naive' | 'tiled64' | 'tiled128';

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
  /** Row stride of C as stored (default N); ldc ≠ N needs `out` covering the strided rows. */
  ldc?: number;
  /** Force a kernel variant (tests, benches); default: planGemm's choice. */
  impl?: MatmulImpl;
  /** Force the number of K splits of the tiled kernel (rounded so each covers whole K-tiles). */
  splitK?: number;
}

export interface MatmulShape {
  batch: number;
  M: number;
  N: number;
  K: number;
  outShape: number[];
  /** Strides in elements: op(A)[m, k] = A[a_sb·b + a_sm·m + a_sk·k], likewise B; C's row stride sm is ldc. */
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
  const ldc = o.ldc ?? N;
  if (ldc < N) throw new Error(`matmul: ldc=${ldc} is less than N=${N} (A [${aShape}], B [${bShape}])`);
  const a = o.transA ? { sm: 1, sk: lda, sb: aBatchStride } : { sm: lda, sk: 1, sb: aBatchStride };
  const bStrides = o.transB ? { sk: 1, sn: bCols, sb: bBatch === 1 ? 0 : bRows * bCols } : { sk: bCols, sn: 1, sb: bBatch === 1 ? 0 : bRows * bCols };
  return { batch, M, N, K, outShape, a, b: bStrides, c: { sm: ldc, sb: M * ldc } };
}

/** C = alpha·op(A)·op(B) + beta·C. */
export function matmul(rt: Runtime, a: Tensor, b: Tensor, o: MatmulOptions = {}): Tensor {
  const s = matmulShape(a.shape, b.shape, o);
  const beta = o.beta ?? 0;
  if (beta !== 0 && !o.out) throw new Error('matmul: beta ≠ 0 needs out');
  const ldc = o.ldc ?? s.N;
  if (ldc !== s.N && !o.out) throw new Error(`matmul: ldc=${ldc} ≠ N=${s.N} needs out`);
  const c = o.out ?? rt.empty(s.outShape, a.dtype);
  if (o.ldc === undefined && c.size !== s.batch * s.M * s.N) throw new Error(`matmul: out ${c.describe()} should be [${s.outShape}]`);
  gemm(rt, a, b, c, {
    M: s.M, N: s.N, K: s.K, batch: s.batch,
    transA: o.transA, transB: o.transB,
    lda: o.transA ? s.a.sk : s.a.sm, ldb: o.transB ? s.b.sn : s.b.sk, ldc,
    strideA: s.a.sb, strideB: s.b.sb, strideC: s.c.sb,
    alpha: o.alpha, beta, impl: o.impl, splitK: o.splitK,
  });
  return c;
}

// ---------------------------------------------------------------------------------------------
// BLAS-like level: explicit sizes and strides over flat tensors

export interface GemmArgs {
  M: number;
  N: number;
  K: number;
  /** Independent products (grid z). Default 1. */
  batch?: number;
  /** A stored [K, M] (else [M, K]). */
  transA?: boolean;
  /** B stored [N, K] (else [K, N]). */
  transB?: boolean;
  /** Row strides as stored, in elements: lda ≥ (transA ? M : K), ldb ≥ (transB ? K : N), ldc ≥ N. */
  lda: number;
  ldb: number;
  ldc: number;
  /** Elements between consecutive batch items; 0 broadcasts one matrix to every item. Default 0. */
  strideA?: number;
  strideB?: number;
  strideC?: number;
  alpha?: number;
  beta?: number;
  impl?: MatmulImpl;
  splitK?: number;
}

/** Tile shapes of the tiled kernel (see the header of kernels/matmul.wgsl). */
export const TILED_CONFIGS = {
  tiled64: { TILE_M: 64, TILE_N: 64, TILE_K: 16, block8x8: false },
  tiled128: { TILE_M: 128, TILE_N: 128, TILE_K: 8, block8x8: true },
} as const;

/** Concurrent workgroups to aim for: an H100 has 132 SMs and the 128×128 kernel fits 2 per SM. */
const TARGET_WORKGROUPS = 264;
/** Fewest K elements per split worth a partial slab of its own. */
const MIN_K_PER_SPLIT = 256;
const MAX_SPLITS = 32;
/** Below this many multiply-adds the naive kernel is as good. */
const NAIVE_MAX_MACS = 1 << 18;
/** Skinny products (M or N under 16) stay naive unless K is long enough to want split-K instead. */
const NAIVE_SKINNY_MAX_K = 4096;
const NAIVE_WG = 16;
const REDUCE_WG = 256;

export interface GemmPlan {
  impl: MatmulImpl;
  /** K splits (1 = none); each covers kChunk elements of K, a multiple of TILE_K. */
  splits: number;
  kChunk: number;
}

/** Which kernel and how many K splits for an M×N×K product over `batch` items. */
export function planGemm(M: number, N: number, K: number, batch = 1, force: { impl?: MatmulImpl; splitK?: number } = {}): GemmPlan {
  const tiled = (impl: 'tiled64' | 'tiled128'): GemmPlan & { workgroups: number } => {
    const cfg = TILED_CONFIGS[impl];
    const tiles = Math.ceil(M / cfg.TILE_M) * Math.ceil(N / cfg.TILE_N) * batch;
    let want = force.splitK ?? (tiles >= TARGET_WORKGROUPS ? 1 : Math.min(Math.ceil(TARGET_WORKGROUPS / tiles), Math.floor(K / MIN_K_PER_SPLIT), MAX_SPLITS));
    want = Math.max(1, Math.min(want, Math.floor(MAX_GRID / Math.max(batch, 1))));
    const kChunk = Math.max(cfg.TILE_K, Math.ceil(K / want / cfg.TILE_K) * cfg.TILE_K);
    const splits = Math.max(1, Math.ceil(K / kChunk));
    return { impl, splits, kChunk: splits === 1 ? K : kChunk, workgroups: tiles * splits };
  };
  const plan = (): GemmPlan & { workgroups?: number } => {
    if (force.impl === 'naive') return { impl: 'naive', splits: 1, kChunk: K };
    if (force.impl) return tiled(force.impl);
    const skinny = M < 16 || N < 16;
    if (M * N * K * batch <= NAIVE_MAX_MACS || (skinny && K <= NAIVE_SKINNY_MAX_K)) return { impl: 'naive', splits: 1, kChunk: K };
    if (M < 128 || N < 128) return tiled('tiled64');
    // 128×128 tiles do the most work per shared-memory read; 64×64 when that leaves most SMs idle
    const big = tiled('tiled128');
    if (big.workgroups >= TARGET_WORKGROUPS / 2) return big;
    const small = tiled('tiled64');
    return small.workgroups > big.workgroups ? small : big;
  };
  const { impl, splits, kChunk } = plan();
  return { impl, splits, kChunk };
}

function checkExtent(op: string, t: Tensor, rows: number, cols: number, ld: number, batch: number, stride: number, what: string): void {
  if (rows === 0 || cols === 0 || batch === 0) return;
  const last = (batch - 1) * stride + (rows - 1) * ld + cols; // one past the last element touched
  if (last > t.size) throw new Error(`${op}: ${what} ${t.describe()} is too small for ${batch > 1 ? `${batch} × ` : ''}${rows}×${cols} rows of stride ${ld}${batch > 1 ? ` (batch stride ${stride})` : ''}`);
}

/** C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b] with explicit strides (BLAS sgemm, batched). */
export function gemm(rt: Runtime, a: Tensor, b: Tensor, c: Tensor, g: GemmArgs): void {
  const { M, N, K } = g;
  const batch = g.batch ?? 1;
  const alpha = g.alpha ?? 1, beta = g.beta ?? 0;
  const sa = g.strideA ?? 0, sb = g.strideB ?? 0, sc = g.strideC ?? 0;
  const op = `gemm ${M}×${N}×${K}${batch > 1 ? ` ×${batch}` : ''} ${g.transA ? 'T' : 'N'}${g.transB ? 'T' : 'N'}`;
  for (const [name, v] of Object.entries({ M, N, K, batch, lda: g.lda, ldb: g.ldb, ldc: g.ldc, strideA: sa, strideB: sb, strideC: sc })) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${op}: ${name} = ${v} must be a non-negative integer`);
  }
  if (g.lda < (g.transA ? M : K) || g.ldb < (g.transB ? K : N) || g.ldc < N) {
    throw new Error(`${op}: leading dimensions lda=${g.lda}, ldb=${g.ldb}, ldc=${g.ldc} are too small`);
  }
  if (batch > 1 && sc < M * g.ldc && sc !== 0) throw new Error(`${op}: batch stride of C ${sc} overlaps rows (M·ldc = ${M * g.ldc})`);
  if (batch > 1 && sc === 0) throw new Error(`${op}: batched C needs a batch stride`);
  const dtypes = [a.dtype, b.dtype, c.dtype];
  if (a.dtype !== 'f32' && a.dtype !== 'f16') throw new Error(`${op}: A ${a.describe()} is not a float tensor`);
  // C may be f32 under f16 operands (mixed precision: weight gradients into f32 master gradients)
  const cF32 = a.dtype === 'f16' && c.dtype === 'f32';
  if (b.dtype !== a.dtype || (c.dtype !== a.dtype && !cF32)) throw new Error(`matmul: dtypes ${dtypes.join(', ')} differ (C may be f32 under f16 A and B)`);
  checkExtent(op, a, g.transA ? K : M, g.transA ? M : K, g.lda, batch, sa, 'A');
  checkExtent(op, b, g.transB ? N : K, g.transB ? K : N, g.ldb, batch, sb, 'B');
  checkExtent(op, c, M, N, g.ldc, batch, sc, 'C');
  if (M === 0 || N === 0 || batch === 0) return;
  const dtype = a.dtype;

  const plan = planGemm(M, N, K, batch, g);
  const strides = {
    a_sm: g.transA ? 1 : g.lda, a_sk: g.transA ? g.lda : 1, a_sb: sa,
    b_sk: g.transB ? 1 : g.ldb, b_sn: g.transB ? g.ldb : 1, b_sb: sb,
  };
  if (plan.impl === 'naive') {
    const k = rt.kernel({ source: 'matmul.wgsl', entry: 'matmul_naive', dtype, defines: { C_F32: cF32 } });
    if (Math.ceil(N / NAIVE_WG) > MAX_GRID || batch > MAX_GRID) throw new Error(`${op}: too large for the naive kernel's grid`);
    forRowChunks(M, NAIVE_WG, (m0, rows) =>
      rt.dispatch(k, [a, b, c], {
        M: rows, N, K, ...strides,
        a_off: a.offset + m0 * strides.a_sm, b_off: b.offset,
        c_off: c.offset + m0 * g.ldc, c_sm: g.ldc, c_sb: sc, c_ss: 0, k_chunk: K, splits: 1,
        alpha, beta,
      }, Math.ceil(N / NAIVE_WG), Math.ceil(rows / NAIVE_WG), batch),
    );
    return;
  }

  const cfg = TILED_CONFIGS[plan.impl];
  const split = plan.splits > 1;
  const k = rt.kernel({
    source: 'matmul.wgsl',
    entry: 'matmul_tiled',
    dtype,
    defines: { BLOCK_8X8: cfg.block8x8, A_T: !!g.transA, B_T: !!g.transB, SPLIT_K: split, C_F32: cF32 && !split },
    overrides: { TILE_M: cfg.TILE_M, TILE_N: cfg.TILE_N, TILE_K: cfg.TILE_K },
  });
  const gridX = Math.ceil(N / cfg.TILE_N);
  if (gridX > MAX_GRID || batch * plan.splits > MAX_GRID) throw new Error(`${op}: grid too large (N / ${cfg.TILE_N} or batch × splits above ${MAX_GRID})`);
  // split-K: raw f32 partials [split][batch][M][N], summed (with alpha, beta) by matmul_split_reduce
  const total = batch * M * N;
  const partial = split ? rt.empty([plan.splits, total], 'f32', 'matmul-partials') : null;
  forRowChunks(M, cfg.TILE_M, (m0, rows) =>
    rt.dispatch(k, [a, b, partial ?? c], {
      M: rows, N, K, ...strides,
      a_off: a.offset + m0 * strides.a_sm, b_off: b.offset,
      ...(partial
        ? { c_off: m0 * N, c_sm: N, c_sb: M * N, c_ss: total, alpha: 1, beta: 0 }
        : { c_off: c.offset + m0 * g.ldc, c_sm: g.ldc, c_sb: sc, c_ss: 0, alpha, beta }),
      k_chunk: plan.kChunk, splits: plan.splits,
    }, gridX, Math.ceil(rows / cfg.TILE_M), batch * plan.splits),
  );
  if (partial) {
    const r = rt.kernel({ source: 'matmul.wgsl', entry: 'matmul_split_reduce', dtype, defines: { SPLIT_REDUCE: true, C_F32: cF32 }, overrides: { WG: REDUCE_WG } });
    const [x, y] = grid1d(Math.ceil(total / REDUCE_WG));
    rt.dispatch(r, [partial, c], { total, M, N, splits: plan.splits, c_off: c.offset, c_sm: g.ldc, c_sb: sc, alpha, beta }, x, y);
    rt.release(partial); // later users of this pooled buffer run after the reduce, in queue order
  }
}

/** Calls fn for row ranges small enough that ceil(rows / tileRows) fits the grid's y limit. */
function forRowChunks(M: number, tileRows: number, fn: (m0: number, rows: number) => void): void {
  const maxRows = MAX_GRID * tileRows;
  for (let m0 = 0; m0 < M; m0 += maxRows) fn(m0, Math.min(maxRows, M - m0));
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, written to be read (float64 accumulation).

/** In place on c: C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b], with gemm's strides. */
export function gemmRef(a: Float32Array, b: Float32Array, c: Float32Array, g: GemmArgs): Float32Array {
  const batch = g.batch ?? 1, alpha = g.alpha ?? 1, beta = g.beta ?? 0;
  const sa = g.strideA ?? 0, sb = g.strideB ?? 0, sc = g.strideC ?? 0;
  const aAt = (i: number, m: number, k: number) => a[i * sa + (g.transA ? k * g.lda + m : m * g.lda + k)];
  const bAt = (i: number, k: number, n: number) => b[i * sb + (g.transB ? n * g.ldb + k : k * g.ldb + n)];
  for (let i = 0; i < batch; i++) {
    for (let m = 0; m < g.M; m++) {
      for (let n = 0; n < g.N; n++) {
        let acc = 0;
        for (let k = 0; k < g.K; k++) acc += aAt(i, m, k) * bAt(i, k, n);
        const ci = i * sc + m * g.ldc + n;
        c[ci] = alpha * acc + (beta !== 0 ? beta * c[ci] : 0);
      }
    }
  }
  return c;
}

/**
 * Plain-TS reference with matmul's shape rules. Returns C as stored: batch·M·ldc elements, or a
 * copy of `o.c` (the prior contents of out, read when beta ≠ 0 and kept outside the written slice).
 */
export function matmulRef(a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[], o: MatmulOptions & { c?: Float32Array } = {}): Float32Array {
  const s = matmulShape(aShape, bShape, o);
  const c = o.c ? Float32Array.from(o.c) : new Float32Array(s.batch * s.c.sb);
  return gemmRef(a, b, c, {
    M: s.M, N: s.N, K: s.K, batch: s.batch, transA: o.transA, transB: o.transB,
    lda: o.transA ? s.a.sk : s.a.sm, ldb: o.transB ? s.b.sn : s.b.sk, ldc: s.c.sm,
    strideA: s.a.sb, strideB: s.b.sb, strideC: s.c.sb, alpha: o.alpha, beta: o.beta,
  });
}
