/**
 * Subgroup-matrix GEMM against gemmRef at awkward shapes, in every layout the model uses (NN, NT =
 * x·Wᵀ, TN = weight gradients, TT, batched and broadcast as Muon uses them, split-K, alpha/beta,
 * ldc), with f32 and f16 C, vec4 and scalar loads, on the adapter's native fragment and on NVIDIA's
 * 16×16×16 / 16×8×16 / 16×8×8 built from 8×8×8 pieces in 32-lane workgroups (lavapipe 26.2).
 * Inputs are rounded to f16 on the host first, so the reference sees exactly what the GPU sees.
 * AUTORESEARCH_REQUIRE_FEATURES=chromium-experimental-subgroup-matrix makes a missing feature fail.
 */
import { describe, expect, it } from 'vitest';
import { fromF16Bits, f16Bits, type Runtime } from '../../src/gpu/runtime.ts';
import { emulatedFragment, type FragmentConfig, fragmentLabel, nativeFragments, NVIDIA_SHAPES, SUBGROUP_MATRIX_FEATURE } from '../../src/gpu/subgroup_matrix.ts';
import { gemm, type GemmArgs, gemmRef, matmul, matmulRef } from '../../src/ops/matmul.ts';
import { blockShape, defaultTile, gemmSubgroupMatrix, planSplits, runnableDefaultTile, type SgGemmOptions, sgmatSource, type SgTile, tileLabel, tileProblem, useSubgroupMatrix } from '../../src/ops/matmul_subgroup_matrix.ts';
import { loadSource } from '../../src/gpu/wgsl.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime | null;
const required = (process.env.AUTORESEARCH_REQUIRE_FEATURES ?? '').split(',').includes(SUBGROUP_MATRIX_FEATURE);
if (required && !rt?.subgroupMatrix) throw new Error(`${SUBGROUP_MATRIX_FEATURE} is required (AUTORESEARCH_REQUIRE_FEATURES) but this adapter lacks it`);
const support = rt?.subgroupMatrix ?? null;
const rng = new Rng(23);

const roundF16 = (x: Float32Array) => fromF16Bits(Uint16Array.from(x, f16Bits));

interface Case extends GemmArgs {
  cF16?: boolean;
}

/** Random f16-exact A, B (and C for beta), the GPU product with options `o`, compared with gemmRef. */
async function check(g: Case, o: SgGemmOptions): Promise<void> {
  const batch = g.batch ?? 1;
  const extent = (rows: number, ld: number, stride: number) => (batch - 1) * stride + rows * ld;
  const a = roundF16(rng.uniformArray(extent(g.transA ? g.K : g.M, g.lda, g.strideA ?? 0), -1, 1));
  const b = roundF16(rng.uniformArray(extent(g.transB ? g.N : g.K, g.ldb, g.strideB ?? 0), -1, 1));
  const cLen = extent(g.M, g.ldc, g.strideC ?? 0);
  const c0 = g.cF16 ? roundF16(rng.uniformArray(cLen, -1, 1)) : rng.uniformArray(cLen, -1, 1);
  const C = rt!.fromArray(c0, [cLen], g.cF16 ? 'f16' : 'f32');
  gemmSubgroupMatrix(rt!, rt!.fromArray(a, [a.length], 'f16'), rt!.fromArray(b, [b.length], 'f16'), C, g, o);
  const want = gemmRef(a, b, Float32Array.from(c0), g);
  // f32 C: only the summation order differs; f16 C: one rounding of the result
  expectClose(await rt!.read(C), want, g.cF16 ? { atol: 2e-3, rtol: 2e-3 } : { atol: 1e-4, rtol: 1e-4 });
  rt!.release(C);
}

/** Dense GemmArgs for op(A) M×K, op(B) K×N. */
function dense(M: number, N: number, K: number, t: { transA?: boolean; transB?: boolean } = {}, extra: Partial<Case> = {}): Case {
  return { M, N, K, ...t, lda: t.transA ? M : K, ldb: t.transB ? K : N, ldc: N, ...extra };
}

const LAYOUTS: [string, { transA?: boolean; transB?: boolean }][] = [
  ['NN', {}],
  ['NT', { transB: true }],
  ['TN', { transA: true }],
  ['TT', { transA: true, transB: true }],
];

/** Small tiles: several workgroups (interior and edge blocks) even at test sizes; `stages` 2 double-buffers. */
const small = (f: FragmentConfig, stages: 1 | 2 = 1): SgTile => ({ WM: 2, WN: 1, TM: 1, TN: 2, BK: Math.max(16, f.K), stages });

function emulatedFragments(): FragmentConfig[] {
  return support ? NVIDIA_SHAPES.map((s) => emulatedFragment(support, s)) : [];
}

describe.skipIf(!support)('subgroup-matrix GEMM', () => {
  // the native fragment: every layout with f32 and f16 C
  const native = support ? nativeFragments(support)[0] : null;
  if (native) {
    const label = fragmentLabel(native);
    for (const [name, t] of LAYOUTS) {
      it(`${label} ${name} awkward, small tiles, f32 C`, () => check(dense(37, 45, 53, t), { fragment: native, tile: small(native) }));
      const cF16 = !!t.transB; // NN, TN: straight fragment stores into f32 C; NT, TT: f16 C through the scratch tile
      it(`${label} ${name} aligned (vec4 loads), double-buffered, ${cF16 ? 'f16' : 'f32'} C`, () => check(dense(64, 48, 40, t, { cF16 }), { fragment: native, tile: small(native, 2) }));
    }
    it(`${label} NT scalar loads, default tile, f16 C`, () => check(dense(40, 70, 24, { transB: true }, { cF16: true }), { fragment: native, scalarLoads: true }));
  }
  // NVIDIA's shapes from 8×8×8 pieces: every layout once, each case varying another path
  for (const f of emulatedFragments()) {
    const label = fragmentLabel(f);
    it(`${label} NN awkward, f32 C`, () => check(dense(37, 45, 53), { fragment: f, tile: small(f) }));
    it(`${label} NT aligned (vec4 loads), double-buffered, f16 C`, () => check(dense(64, 48, 40, { transB: true }, { cF16: true }), { fragment: f, tile: small(f, 2) }));
    it(`${label} TN split-K (weight gradient), beta accumulate`, () =>
      check(dense(24, 40, 300, { transA: true }, { alpha: 0.5, beta: 1 }), { fragment: f, tile: small(f, 2), splitK: 3 }));
    it(`${label} TT aligned, direct stores to f32 C`, () => check(dense(64, 64, 48, { transA: true, transB: true }), { fragment: f, tile: small(f) }));
  }
  const f168 = emulatedFragments().find((f) => f.N === 8 && f.K === 8);
  if (f168) {
    it(`${fragmentLabel(f168)} default tile (what NVIDIA runs), awkward NT`, () => check(dense(70, 130, 40, { transB: true }), { fragment: f168 }));
  }
  for (const f of [native, emulatedFragments()[0]]) {
    if (!f) continue;
    it(`${fragmentLabel(f)} batched with broadcast A, ldc slice, alpha/beta (Muon)`, () =>
      check({ M: 20, N: 18, K: 33, batch: 3, lda: 33, ldb: 18, ldc: 24, strideA: 0, strideB: 33 * 18, strideC: 20 * 24, alpha: -0.75, beta: 0.5 }, { fragment: f, tile: small(f) }));
  }

  it('split-K reduces into f16 C and batched TN', () =>
    check(dense(16, 24, 520, { transA: true }, { cF16: true, batch: 2, strideA: 520 * 16, strideB: 520 * 24, strideC: 16 * 24 }), { tile: small(nativeFragments(support!)[0]), splitK: 4 }));

  it("type-checks the whole GEMM kernel with NVIDIA's native fragments in every variant", async () => {
    for (const shape of NVIDIA_SHAPES) {
      const f: FragmentConfig = { ...shape, native: shape, input: 'f16', result: 'f32', subgroupSize: 32, emulated: false };
      for (let bits = 0; bits < 16; bits++) {
        const v = { transA: !!(bits & 1), transB: !!(bits & 2), cF16: !!(bits & 4), vec4: !!(bits & 8) };
        const defines = { A_T: v.transA, B_T: v.transB, C_F16: v.cF16, VEC4: v.vec4 };
        const compile = async (tile: SgTile) => {
          const module = rt!.device.createShaderModule({ code: loadSource({ code: sgmatSource(f, tile, v) }, defines, 'f32').code });
          const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}: ${m.message}`);
          expect(errors, `${fragmentLabel(f)} ${tileLabel(tile)} ${JSON.stringify(v)}`).toEqual([]);
          return module;
        };
        await compile(defaultTile(f)); // NVIDIA's default tiling (its memory may exceed this adapter's limit)
        // within this adapter's limits, the pipeline may fail only for want of the hardware shape
        const module = await compile(runnableDefaultTile(rt!, f, v.transA, v.transB)!);
        rt!.device.pushErrorScope('validation');
        rt!.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'matmul_sgmat' } });
        const err = await rt!.device.popErrorScope();
        if (err) expect(err.message).toMatch(/Subgroup matrix usage found which is not supported by the device/);
      }
    }
  });

  it('matmul dispatches f16 operands here and matches the reference', async () => {
    const a = roundF16(rng.uniformArray(3 * 17 * 40, -1, 1));
    const w = roundF16(rng.uniformArray(29 * 40, -1, 1));
    const y = matmul(rt!, rt!.fromArray(a, [3, 17, 40], 'f16'), rt!.fromArray(w, [29, 40], 'f16'), { transB: true });
    expect(y.dtype).toBe('f16');
    expectClose(await rt!.read(y), matmulRef(a, [3, 17, 40], w, [29, 40], { transB: true }), { atol: 2e-3, rtol: 2e-3 });
  });

  it('skinny f16 products stay on SIMT (and still match)', async () => {
    expect(useSubgroupMatrix(rt!, { M: 256, N: 2, K: 32 })).toBe(false);
    expect(useSubgroupMatrix(rt!, { M: 256, N: 64, K: 64 })).toBe(true);
    const a = roundF16(rng.uniformArray(40 * 32, -1, 1)), w = roundF16(rng.uniformArray(2 * 32, -1, 1));
    const y = matmul(rt!, rt!.fromArray(a, [40, 32], 'f16'), rt!.fromArray(w, [2, 32], 'f16'), { transB: true });
    expectClose(await rt!.read(y), matmulRef(a, [40, 32], w, [2, 32], { transB: true }), { atol: 2e-3, rtol: 2e-3 });
  });

  it('gemm still refuses what it refused before', () => {
    const a = rt!.zeros([4, 4], 'f16');
    expect(() => gemm(rt!, a, a, a, { M: 4, N: 4, K: 8, lda: 8, ldb: 4, ldc: 4 })).toThrow();
  });
});

describe('subgroup-matrix GEMM planning', () => {
  const f16x16: FragmentConfig = { M: 16, N: 16, K: 16, native: { M: 16, N: 16, K: 16 }, input: 'f16', result: 'f32', subgroupSize: 32, emulated: false };
  const h100 = { limits: { maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupSizeX: 1024, maxComputeWorkgroupStorageSize: 49152 } as GPUSupportedLimits };

  it('default tile on NVIDIA shapes: 64×128 blocks, 128 threads, within 48 KiB', () => {
    const t = defaultTile(f16x16);
    expect(blockShape(f16x16, t)).toEqual({ BM: 64, BN: 128, WG: 128 });
    expect(tileProblem(h100, f16x16, t)).toBeNull();
    const f16x8x8 = { ...f16x16, N: 8, K: 8, native: { M: 16, N: 8, K: 8 } };
    expect(blockShape(f16x8x8, defaultTile(f16x8x8))).toEqual({ BM: 64, BN: 128, WG: 128 });
  });

  it('shrinks the default tiling to what the adapter allows', () => {
    const small16k = { limits: { ...h100.limits, maxComputeWorkgroupStorageSize: 16384 } as GPUSupportedLimits };
    const t = runnableDefaultTile(small16k, f16x16, false, true)!;
    expect(t).not.toEqual(defaultTile(f16x16));
    expect(tileProblem(small16k, f16x16, t, false, true)).toBeNull();
    expect(runnableDefaultTile(h100, f16x16)).toEqual(defaultTile(f16x16));
    const tiny = { limits: { ...h100.limits, maxComputeWorkgroupStorageSize: 1024 } as GPUSupportedLimits };
    expect(runnableDefaultTile(tiny, f16x16)).toBeNull();
  });

  it('rejects tilings the adapter cannot run', () => {
    expect(tileProblem(h100, f16x16, { WM: 4, WN: 4, TM: 4, TN: 4, BK: 64 })).toMatch(/workgroup memory/);
    expect(tileProblem(h100, f16x16, { WM: 2, WN: 2, TM: 1, TN: 1, BK: 24 })).toMatch(/multiple of the fragment's K/);
  });

  it('splits K only when blocks cannot fill the GPU', () => {
    const t = defaultTile(f16x16);
    expect(planSplits(2048, 2048, 2048, 1, f16x16, t).splits).toBe(1);
    const wgrad = planSplits(512, 512, 65536, 1, f16x16, t); // TN weight gradient: K = B·T
    expect(wgrad.splits).toBeGreaterThan(1);
    expect(wgrad.kChunk % t.BK).toBe(0);
    expect(wgrad.splits * wgrad.kChunk).toBeGreaterThanOrEqual(65536);
  });
});
