/**
 * @file Wrapper for kernels/matmul_subgroup_matrix.wgsl: GEMM on subgroup matrices (tensor cores)
 * for f16 A and B, f32 accumulation, f32 or f16 C. Same contract and strides as `gemm` in
 * matmul.ts (every layout: NN, NT = x·Wᵀ, TN = weight gradients, TT; batched with broadcast for
 * Muon; split-K; alpha, beta, ldc), whose dispatch sends f16 operands here when the adapter has an
 * f16 subgroup-matrix config. Reference: gemmRef.
 *
 * A kernel is generated per (fragment, tile, variant): the fragment prelude from
 * src/gpu/subgroup_matrix.ts, the tile consts and fragment load/store functions for the layouts,
 * then the kernel file. Tile choice: the autotuner's cached winner for this adapter and problem
 * (src/ops/matmul_tune.ts), else `defaultTile`.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Precision } from '../gpu/peaks.ts';
import type { Kernel, Runtime } from '../gpu/runtime.ts';
import { grid1d, MAX_GRID } from '../gpu/runtime.ts';
import {
  type FragmentConfig, fragmentLabel, fragmentLoad, fragmentPrelude, fragmentStore, pickF16Fragment, SUBGROUP_MATRIX_ENABLE,
} from '../gpu/subgroup_matrix.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { KERNEL_DIR } from '../gpu/wgsl.ts';
import type { GemmArgs } from './matmul.ts';
import { tunedChoice } from './matmul_tune.ts';

/** Workgroup tiling: WM × WN subgroups, each TM × TN fragments, BK-deep K slabs, 1 or 2 slabs in workgroup memory. */
export interface SgTile {
  WM: number;
  WN: number;
  TM: number;
  TN: number;
  BK: number;
  /** 2: double-buffered slabs, one barrier per slab (default 1). */
  stages?: 1 | 2;
}

/** Everything that picks a kernel and its grid for one product. */
export interface SgGemmPlan {
  fragment: FragmentConfig;
  tile: SgTile;
  /** K splits (1 = none); each covers kChunk elements of K, a multiple of BK. */
  splits: number;
  kChunk: number;
  /** vec4<f16> global loads (strides, offsets and stride-1 extents are multiples of 4). */
  vec4: boolean;
}

export interface SgGemmOptions {
  fragment?: FragmentConfig;
  tile?: SgTile;
  /** Force the number of K splits (rounded so each covers whole BK slabs). */
  splitK?: number;
  /** Force scalar global loads (tests exercise both paths). */
  scalarLoads?: boolean;
}

export const tileLabel = (t: SgTile): string => `${t.WM}x${t.WN}sg.${t.TM}x${t.TN}f.k${t.BK}${(t.stages ?? 1) === 2 ? '.s2' : ''}`;

/** Rows and columns of C one workgroup computes. */
export function blockShape(f: FragmentConfig, t: SgTile): { BM: number; BN: number; WG: number } {
  return { BM: t.WM * t.TM * f.M, BN: t.WN * t.TN * f.N, WG: t.WM * t.WN * f.subgroupSize };
}

/**
 * The tiling used when nothing was tuned: a 64×128 block (64×64 under 8-lane subgroups) from 2×2
 * subgroups, 32-deep double-buffered slabs. On a 16×16×16 GPU that is 8 accumulator fragments per
 * subgroup (two fragment loads per multiply), 128 threads, about 34 KiB of workgroup memory.
 */
export function defaultTile(f: FragmentConfig): SgTile {
  const BN = f.subgroupSize >= 32 ? 128 : 64;
  return { WM: 2, WN: 2, TM: Math.max(1, 64 / (2 * f.M)), TN: Math.max(1, BN / (2 * f.N)), BK: Math.max(32, f.K), stages: 2 };
}

/** Bytes of workgroup memory a tiling needs (A and B slabs with padded rows, the scratch tile). */
export function workgroupBytes(f: FragmentConfig, t: SgTile, transA: boolean, transB: boolean): number {
  const { BM, BN } = blockShape(f, t);
  const pad = (cols: number) => Math.ceil(cols / 8) * 8 + 8;
  const a = transA ? t.BK * pad(BM) : BM * pad(t.BK);
  const b = transB ? BN * pad(t.BK) : t.BK * pad(BN);
  return (a + b) * 2 * (t.stages ?? 1) + t.WM * t.WN * f.M * f.N * 4;
}

/** Why a tiling cannot run on this runtime (null when it can). */
export function tileProblem(rt: Pick<Runtime, 'limits'>, f: FragmentConfig, t: SgTile, transA = false, transB = false): string | null {
  const { BM, BN, WG } = blockShape(f, t);
  if (t.BK % f.K) return `BK ${t.BK} is not a multiple of the fragment's K ${f.K}`;
  if (WG > rt.limits.maxComputeInvocationsPerWorkgroup || WG > rt.limits.maxComputeWorkgroupSizeX) return `${WG} threads exceed the adapter's workgroup limit`;
  // every thread copies the same number of vec4s (and scalars) of each slab
  if ((BM * t.BK) % (4 * WG) || (BN * t.BK) % (4 * WG)) return `a ${BM}x${t.BK} or ${t.BK}x${BN} slab does not split evenly over ${WG} threads`;
  const bytes = workgroupBytes(f, t, transA, transB);
  if (bytes > rt.limits.maxComputeWorkgroupStorageSize) return `${bytes} bytes of workgroup memory exceed the adapter's ${rt.limits.maxComputeWorkgroupStorageSize}`;
  return null;
}

/** Concurrent workgroups to aim for (an H100 has 132 SMs; two 128-thread blocks each fit easily). */
const TARGET_WORKGROUPS = 264;
/** Fewest K elements per split worth a partial slab of its own. */
const MIN_K_PER_SPLIT = 256;
const MAX_SPLITS = 32;
const REDUCE_WG = 256;

/** K splits for a product: enough workgroups to fill a big GPU, each split at least MIN_K_PER_SPLIT deep. */
export function planSplits(M: number, N: number, K: number, batch: number, f: FragmentConfig, t: SgTile, force?: number): { splits: number; kChunk: number } {
  const { BM, BN } = blockShape(f, t);
  const blocks = Math.ceil(M / BM) * Math.ceil(N / BN) * batch;
  let want = force ?? (blocks >= TARGET_WORKGROUPS ? 1 : Math.min(Math.ceil(TARGET_WORKGROUPS / blocks), Math.floor(K / MIN_K_PER_SPLIT), MAX_SPLITS));
  want = Math.max(1, Math.min(want, Math.floor(MAX_GRID / Math.max(batch, 1))));
  const kChunk = Math.max(t.BK, Math.ceil(K / want / t.BK) * t.BK);
  const splits = Math.max(1, Math.ceil(K / kChunk));
  return { splits, kChunk: splits === 1 ? Math.max(K, 1) : kChunk };
}

/**
 * The default tiling shrunk until this adapter can run it (fewer fragments per subgroup, then
 * shallower slabs, then fewer subgroups), or null when not even the smallest fits.
 */
export function runnableDefaultTile(rt: Pick<Runtime, 'limits'>, f: FragmentConfig, transA = false, transB = false): SgTile | null {
  const d = defaultTile(f);
  const tries: SgTile[] = [
    d,
    { ...d, stages: 1 },
    { ...d, TN: Math.max(1, d.TN >> 1), stages: 1 },
    { ...d, TM: Math.max(1, d.TM >> 1), TN: Math.max(1, d.TN >> 1), stages: 1 },
    { ...d, TM: Math.max(1, d.TM >> 1), TN: Math.max(1, d.TN >> 1), BK: f.K * Math.max(1, Math.floor(16 / f.K)), stages: 1 },
    { WM: 2, WN: 1, TM: 1, TN: 1, BK: f.K * Math.max(1, Math.floor(16 / f.K)) },
    { WM: 1, WN: 1, TM: 1, TN: 1, BK: f.K * Math.max(1, Math.floor(32 / f.K)) },
  ];
  return tries.find((t) => !tileProblem(rt, f, t, transA, transB)) ?? null;
}

const fragments = new WeakMap<Runtime, FragmentConfig | null>();

/**
 * The fragment this runtime's subgroup-matrix GEMM uses, or null when the adapter has no f16
 * config (or no tiling of it fits the adapter's limits): then f16 matmuls run on SIMT kernels.
 * Decided once per runtime.
 */
export function sgmatFragment(rt: Runtime): FragmentConfig | null {
  let f = fragments.get(rt);
  if (f === undefined) {
    f = pickF16Fragment(rt.subgroupMatrix);
    if (f && [false, true].some((ta) => [false, true].some((tb) => !runnableDefaultTile(rt, f!, ta, tb)))) f = null;
    fragments.set(rt, f);
  }
  return f;
}

/** Below this in M, N or K a product is skinny: fragments would mostly multiply padding, so SIMT runs it. */
const SKINNY = 16;

/**
 * Whether `gemm` sends an f16 product here: the adapter has an f16 subgroup-matrix config and the
 * product is not skinny (the value-embedding gates' N = 2, for example, stay on SIMT).
 */
export function useSubgroupMatrix(rt: Runtime, g: Pick<GemmArgs, 'M' | 'N' | 'K'>): boolean {
  return g.M >= SKINNY && g.N >= SKINNY && g.K >= SKINNY && sgmatFragment(rt) !== null;
}

/**
 * The precision, and so the peak, that matmuls over `dtype` operands run at on this runtime: the
 * f16 matrix-unit peak when they go to subgroup matrices, else the f16 or f32 vector (FMA) peak.
 * MFU and `% of peak` use it, so no figure is flattered by the wrong denominator.
 */
export function matmulPrecision(rt: Runtime, dtype: 'f32' | 'f16'): Precision {
  return dtype === 'f32' ? 'f32' : sgmatFragment(rt) ? 'f16-matrix' : 'f16';
}

// ---------------------------------------------------------------------------------------------
// Kernel generation

export interface SgVariant {
  transA: boolean;
  transB: boolean;
  /** Output element type of the kernel's C binding: f32 partials under split-K. */
  cF16: boolean;
  vec4: boolean;
}

let kernelFile: string | null = null;
const KERNEL_FILE = 'matmul_subgroup_matrix.wgsl';

/** The complete WGSL for one fragment, tile and variant (before the #if pass). */
export function sgmatSource(f: FragmentConfig, t: SgTile, v: SgVariant): string {
  kernelFile ??= readFileSync(KERNEL_DIR + KERNEL_FILE, 'utf8');
  const parts = [
    SUBGROUP_MATRIX_ENABLE,
    fragmentPrelude(f),
    `const WM = ${t.WM}u;\nconst WN = ${t.WN}u;\nconst TM = ${t.TM}u;\nconst TN = ${t.TN}u;\nconst BK = ${t.BK}u;\nconst STAGES = ${t.stages ?? 1}u;`,
    fragmentLoad(f, 'left', { fn: 'frag_load_a', array: 'a_tile', layout: v.transA ? 'col_major' : 'row_major' }),
    fragmentLoad(f, 'right', { fn: 'frag_load_b', array: 'b_tile', layout: v.transB ? 'col_major' : 'row_major' }),
    fragmentStore(f, { fn: 'frag_store_scratch', array: 'c_scratch', layout: 'row_major' }),
  ];
  if (!v.cF16) parts.push(fragmentStore(f, { fn: 'frag_store_c', array: 'c', layout: 'row_major' }));
  return parts.join('\n') + '\n' + kernelFile;
}

/**
 * Hash of what decides the generated kernels (the tuner's cache key includes it): the kernel file
 * and the generated WGSL of every variant for a reference fragment, so an edit to the file, the
 * fragment generator or the tile consts retunes. Reads only kernels/ (the sandbox allows that).
 */
export function sgmatSourceHash(): string {
  const f: FragmentConfig = { M: 16, N: 16, K: 16, native: { M: 8, N: 8, K: 8 }, input: 'f16', result: 'f32', subgroupSize: 32, emulated: true };
  const h = createHash('sha256');
  for (let bits = 0; bits < 16; bits++) {
    h.update(sgmatSource(f, defaultTile(f), { transA: !!(bits & 1), transB: !!(bits & 2), cF16: !!(bits & 4), vec4: !!(bits & 8) }));
  }
  return h.digest('hex').slice(0, 16);
}

const kernels = new WeakMap<Runtime, Map<string, Kernel>>();

/** The compiled kernel (cached per runtime under a short key: no source text hashed per dispatch). */
export function sgmatKernel(rt: Runtime, f: FragmentConfig, t: SgTile, v: SgVariant): Kernel {
  let cache = kernels.get(rt);
  if (!cache) kernels.set(rt, (cache = new Map()));
  const key = `${fragmentLabel(f)}|${tileLabel(t)}|${+v.transA}${+v.transB}${+v.cF16}${+v.vec4}`;
  let k = cache.get(key);
  if (!k) {
    k = rt.kernel({
      source: { code: sgmatSource(f, t, v) },
      entry: 'matmul_sgmat',
      defines: { A_T: v.transA, B_T: v.transB, C_F16: v.cF16, VEC4: v.vec4 },
    });
    cache.set(key, k);
  }
  return k;
}

// ---------------------------------------------------------------------------------------------
// Dispatch

/** vec4 loads need 4-aligned offsets, strides and stride-1 extents for both operands. */
function canVec4(a: Tensor, b: Tensor, g: GemmArgs): boolean {
  const aligned = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  return aligned(a.offset, g.lda, g.strideA ?? 0, g.transA ? g.M : g.K, b.offset, g.ldb, g.strideB ?? 0, g.transB ? g.K : g.N);
}

/**
 * The plan for a product: forced parts from `o`, the rest from the tuner's cached choice for this
 * adapter and product (matmul_tune.ts) or the defaults.
 */
export function planSgGemm(rt: Runtime, a: Tensor, b: Tensor, c: Tensor, g: GemmArgs, o: SgGemmOptions = {}): SgGemmPlan {
  // a tuned choice applies unless the caller forces the fragment or the tile
  const tuned = o.fragment || o.tile ? null : tunedChoice(rt, g, c.dtype === 'f16' ? 'f16' : 'f32');
  const fragment = o.fragment ?? tuned?.fragment ?? sgmatFragment(rt);
  if (!fragment) throw new Error('subgroup-matrix GEMM: this adapter has no f16 subgroup-matrix config');
  const tile = o.tile ?? tuned?.tile ?? runnableDefaultTile(rt, fragment, !!g.transA, !!g.transB) ?? defaultTile(fragment);
  const problem = tileProblem(rt, fragment, tile, !!g.transA, !!g.transB);
  if (problem) throw new Error(`subgroup-matrix GEMM tile ${tileLabel(tile)} (${fragmentLabel(fragment)}): ${problem}`);
  const { splits, kChunk } = planSplits(g.M, g.N, g.K, g.batch ?? 1, fragment, tile, o.splitK ?? tuned?.splitK);
  return { fragment, tile, splits, kChunk, vec4: !o.scalarLoads && canVec4(a, b, g) };
}

/**
 * C = alpha·op(A)·op(B) + beta·C on subgroup matrices. A and B f16; C f16 or f32. Arguments are
 * validated by matmul.ts's gemm (which calls this); direct callers (tests, benches, the tuner)
 * pass the same GemmArgs.
 */
export function gemmSubgroupMatrix(rt: Runtime, a: Tensor, b: Tensor, c: Tensor, g: GemmArgs, o: SgGemmOptions = {}): SgGemmPlan {
  if (a.dtype !== 'f16' || b.dtype !== 'f16') throw new Error(`subgroup-matrix GEMM: A and B must be f16 (got ${a.describe()}, ${b.describe()})`);
  if (c.dtype !== 'f16' && c.dtype !== 'f32') throw new Error(`subgroup-matrix GEMM: C ${c.describe()} must be f16 or f32`);
  const { M, N, K } = g;
  const batch = g.batch ?? 1;
  const alpha = g.alpha ?? 1, beta = g.beta ?? 0;
  const plan = planSgGemm(rt, a, b, c, g, o);
  if (M === 0 || N === 0 || batch === 0) return plan;
  const { BM, BN } = blockShape(plan.fragment, plan.tile);
  const split = plan.splits > 1;
  const k = sgmatKernel(rt, plan.fragment, plan.tile, { transA: !!g.transA, transB: !!g.transB, cF16: c.dtype === 'f16' && !split, vec4: plan.vec4 });
  const gridX = Math.ceil(N / BN);
  if (gridX > MAX_GRID || batch * plan.splits > MAX_GRID) throw new Error(`subgroup-matrix GEMM ${M}×${N}×${K}: grid too large (N / ${BN} or batch × splits above ${MAX_GRID})`);
  const sc = g.strideC ?? 0;
  const total = batch * M * N;
  const partial = split ? rt.empty([plan.splits, total], 'f32', 'matmul-partials') : null;
  const maxRows = MAX_GRID * BM;
  for (let m0 = 0; m0 < M; m0 += maxRows) {
    const rows = Math.min(maxRows, M - m0);
    const aRow = g.transA ? m0 : m0 * g.lda; // element offset of row m0 of op(A)
    const cParams = partial
      ? { c_off: m0 * N, ldc: N, c_sb: M * N, c_ss: total, alpha: 1, beta: 0, direct: N % 4 === 0 ? 1 : 0 }
      : {
          c_off: c.offset + m0 * g.ldc, ldc: g.ldc, c_sb: sc, c_ss: 0, alpha, beta,
          // straight fragment stores: f32 C, nothing to scale or add, 16-byte aligned rows
          direct: c.dtype === 'f32' && alpha === 1 && beta === 0 && g.ldc % 4 === 0 && c.offset % 4 === 0 && sc % 4 === 0 ? 1 : 0,
        };
    rt.dispatch(k, [a, b, partial ?? c], {
      M: rows, N, K,
      a_off: a.offset + aRow, lda: g.lda, a_sb: g.strideA ?? 0,
      b_off: b.offset, ldb: g.ldb, b_sb: g.strideB ?? 0,
      ...cParams,
      k_chunk: plan.kChunk, splits: plan.splits,
    }, gridX, Math.ceil(rows / BM), batch * plan.splits);
  }
  if (partial) {
    const r = rt.kernel({ source: 'matmul.wgsl', entry: 'matmul_split_reduce', dtype: c.dtype, defines: { SPLIT_REDUCE: true }, overrides: { WG: REDUCE_WG } });
    const [x, y] = grid1d(Math.ceil(total / REDUCE_WG));
    rt.dispatch(r, [partial, c], { total, M, N, splits: plan.splits, c_off: c.offset, c_sm: g.ldc, c_sb: sc, alpha, beta }, x, y);
    rt.release(partial); // later users of this pooled buffer run after the reduce, in queue order
  }
  return plan;
}
