import { describe, expect, it } from 'vitest';
import { gemm, gemmRef, matmul, type MatmulImpl, type MatmulOptions, matmulRef, matmulShape, planGemm, TILED_CONFIGS } from '../../src/ops/matmul.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(11);
const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
const TOL = { atol: 1e-4, rtol: 1e-4 };

/** Runs matmul on random A, B (and C when beta ≠ 0) and compares with matmulRef. */
async function check(aShape: number[], bShape: number[], o: MatmulOptions = {}): Promise<void> {
  const a = rng.uniformArray(numel(aShape));
  const b = rng.uniformArray(numel(bShape));
  let out: MatmulOptions['out'];
  let c0: Float32Array | undefined;
  if (o.beta) {
    const s = matmulShape(aShape, bShape, o);
    c0 = rng.uniformArray(s.batch * s.c.sb);
    out = rt.fromArray(c0, [c0.length]);
  }
  const c = matmul(rt, rt.fromArray(a, aShape), rt.fromArray(b, bShape), { ...o, out });
  expectClose(await rt.read(c), matmulRef(a, aShape, b, bShape, { ...o, c: c0 }), TOL);
}

const LAYOUTS: [string, { transA?: boolean; transB?: boolean }][] = [
  ['NN', {}],
  ['NT', { transB: true }],
  ['TN', { transA: true }],
  ['TT', { transA: true, transB: true }],
];

/** Stored shapes of A and B for op(A) [M, K], op(B) [K, N] (with an optional batch on both). */
function shapes(M: number, N: number, K: number, t: { transA?: boolean; transB?: boolean }, batch?: number): [number[], number[]] {
  const pre = batch === undefined ? [] : [batch];
  return [[...pre, ...(t.transA ? [K, M] : [M, K])], [...pre, ...(t.transB ? [N, K] : [K, N])]];
}

describe.skipIf(!rt)('matmul', () => {
  const cases: [string, number[], number[], { transA?: boolean; transB?: boolean }][] = [
    ['NN 1x1x1', [1, 1], [1, 1], {}],
    ['NN odd', [7, 13], [13, 5], {}],
    ['NT (linear) 3-D A', [2, 9, 17], [11, 17], { transB: true }],
    ['TN (weight grad)', [19, 6], [19, 10], { transA: true }],
    ['batched NN', [3, 5, 7], [3, 7, 4], {}],
    ['batched NT', [2, 6, 9], [2, 5, 9], { transB: true }],
    ['batched TN', [2, 9, 6], [2, 9, 5], { transA: true }],
    ['broadcast A over batched B', [5, 7], [3, 7, 4], {}],
  ];
  for (const [name, aShape, bShape, o] of cases) {
    it(`auto: ${name}`, () => check(aShape, bShape, o));
  }

  it('accumulates with alpha and beta', async () => {
    const a = rng.uniformArray(4 * 3), b = rng.uniformArray(3 * 5), c0 = rng.uniformArray(4 * 5);
    const C = rt.fromArray(c0, [4, 5]);
    matmul(rt, rt.fromArray(a, [4, 3]), rt.fromArray(b, [3, 5]), { alpha: 0.5, beta: 1, out: C });
    expectClose(await rt.read(C), matmulRef(a, [4, 3], b, [3, 5], { alpha: 0.5, beta: 1, c: c0 }));
  });

  it('reads a column slice of A through lda', async () => {
    const a = rng.uniformArray(6 * 10), b = rng.uniformArray(2 * 4);
    const c = matmul(rt, rt.fromArray(a, [6, 10]), rt.fromArray(b, [2, 4]), { lda: 10, k: 4, transB: true });
    const sliced = new Float32Array(6 * 4).map((_, i) => a[Math.floor(i / 4) * 10 + (i % 4)]);
    expectClose(await rt.read(c), matmulRef(sliced, [6, 4], b, [2, 4], { transB: true }));
  });

  // Every kernel on every layout, at sizes that are not multiples of any tile (incl. 1, primes,
  // K below the K-tile, several tiles in M and N for the 128×128 config).
  const SIZES: [number, number, number][] = [
    [1, 1, 1],
    [1, 37, 5],
    [29, 1, 7],
    [131, 67, 3],
    [70, 129, 41],
    [64, 64, 16],
  ];
  describe.each(['naive', 'tiled64', 'tiled128'] as MatmulImpl[])('%s kernel', (impl) => {
    for (const [layout, t] of LAYOUTS) {
      it(`${layout} at ${SIZES.map((s) => s.join('x')).join(', ')}`, async () => {
        for (const [M, N, K] of SIZES) {
          const [aShape, bShape] = shapes(M, N, K, t);
          await check(aShape, bShape, { ...t, impl });
        }
      });
    }

    it('batched (batch 1 and 3) and broadcast A, every layout', async () => {
      for (const [, t] of LAYOUTS) {
        for (const batch of [1, 3]) {
          const [aShape, bShape] = shapes(37, 19, 23, t, batch);
          await check(aShape, bShape, { ...t, impl });
        }
        const [aShape] = shapes(37, 19, 23, t);
        const [, bShape] = shapes(37, 19, 23, t, 2);
        await check(aShape, bShape, { ...t, impl });
      }
    });

    it('alpha and beta (reads C), lda/k column slice of A', async () => {
      await check([33, 21], [21, 45], { impl, alpha: -0.75, beta: 0.5 });
      await check([2, 17, 9], [2, 17, 18], { impl, transA: true, alpha: 2, beta: 1 });
      const a = rng.uniformArray(67 * 12), b = rng.uniformArray(71 * 5);
      const c = matmul(rt, rt.fromArray(a, [67, 12]), rt.fromArray(b, [71, 5]), { impl, lda: 12, k: 5, transB: true });
      const sliced = new Float32Array(67 * 5).map((_, i) => a[Math.floor(i / 5) * 12 + (i % 5)]);
      expectClose(await rt.read(c), matmulRef(sliced, [67, 5], b, [71, 5], { transB: true }), TOL);
    });

    it('ldc: writes a column slice of a wider C and leaves the other columns alone', async () => {
      const [M, N, K, W, j0] = [37, 11, 13, 20, 6];
      for (const [, t] of LAYOUTS) {
        for (const beta of [0, 0.5]) {
          const [aShape, bShape] = shapes(M, N, K, t);
          const a = rng.uniformArray(numel(aShape)), b = rng.uniformArray(numel(bShape));
          const wide0 = rng.uniformArray(M * W);
          const wide = rt.fromArray(wide0, [M, W]);
          const out = rt.view(wide, [M * W - j0], j0);
          matmul(rt, rt.fromArray(a, aShape), rt.fromArray(b, bShape), { ...t, impl, out, ldc: W, alpha: 1.5, beta });
          const slice = matmulRef(a, aShape, b, bShape, { ...t, ldc: W, alpha: 1.5, beta, c: wide0.subarray(j0) });
          expectClose(await rt.read(wide), [...wide0.subarray(0, j0), ...slice], TOL);
        }
      }
    });

    if (impl !== 'naive') {
      it('split-K: partials and the reduce pass, with batch, alpha, beta and ldc', async () => {
        const [M, N, K] = [45, 70, 100];
        expect(planGemm(M, N, K, 2, { impl, splitK: 3 }).splits).toBe(3);
        expect(planGemm(M, N, K, 2, { impl, splitK: 3 }).kChunk % TILED_CONFIGS[impl].TILE_K).toBe(0);
        for (const [, t] of LAYOUTS) {
          const [aShape, bShape] = shapes(M, N, K, t, 2);
          await check(aShape, bShape, { ...t, impl, splitK: 3 });
        }
        await check([K, M], [K, N], { transA: true, impl, splitK: 5, alpha: 0.25, beta: -1 });
        const W = N + 3;
        const wide0 = rng.uniformArray(2 * M * W);
        const wide = rt.fromArray(wide0, [2, M, W]);
        const a = rng.uniformArray(M * K), b = rng.uniformArray(K * N);
        const o: MatmulOptions = { impl, splitK: 4, ldc: W, beta: 2 };
        matmul(rt, rt.fromArray(a, [M, K]), rt.fromArray(b, [1, K, N]), { ...o, out: rt.view(wide, [M * W]) }); // batch 1, 3-D B
        expectClose(await rt.read(wide), [...matmulRef(a, [M, K], b, [1, K, N], { ...o, c: wide0.subarray(0, M * W) }), ...wide0.subarray(M * W)], TOL);
      });

      it('split-K returns its partial buffer to the pool', async () => {
        const A = rt.fromArray(rng.uniformArray(300 * 20), [300, 20]);
        const B = rt.fromArray(rng.uniformArray(300 * 30), [300, 30]);
        const C = rt.empty([20, 30]);
        matmul(rt, A, B, { transA: true, impl, splitK: 4, out: C });
        await rt.sync();
        const inUse = rt.pool.bytesInUse;
        const created = rt.pool.created;
        for (let i = 0; i < 3; i++) matmul(rt, A, B, { transA: true, impl, splitK: 4, out: C });
        await rt.sync();
        expect(rt.pool.bytesInUse).toBe(inUse);
        expect(rt.pool.created).toBe(created);
        [A, B, C].forEach((t) => rt.release(t));
      });
    }
  });

  it('gemm: broadcast B (batch stride 0) and a column slice of B through ldb', async () => {
    const [M, N, K, batch, ldb] = [23, 6, 17, 3, 20];
    for (const impl of ['naive', 'tiled64'] as MatmulImpl[]) {
      for (const transB of [false, true]) {
        const a = rng.uniformArray(batch * M * K);
        const b = rng.uniformArray((transB ? N : K) * ldb);
        const args = { M, N, K, batch, transB, lda: K, ldb, ldc: N, strideA: M * K, strideB: 0, strideC: M * N, impl };
        const c = rt.empty([batch, M, N]);
        gemm(rt, rt.fromArray(a, [batch, M, K]), rt.fromArray(b, [b.length]), c, args);
        expectClose(await rt.read(c), gemmRef(a, b, new Float32Array(batch * M * N), args), TOL);
      }
    }
  });

  it('covers more rows than one dispatch grid holds (row chunks)', async () => {
    const M = 65535 * 16 + 5; // naive kernel: 16 rows per workgroup, 65535 workgroups per dispatch
    const a = new Float32Array(M).map((_, i) => (i % 7) - 3);
    const c = await rt.read(matmul(rt, rt.fromArray(a, [M, 1]), rt.fromArray([2], [1, 1]), { impl: 'naive' }));
    let bad = 0;
    for (let i = 0; i < M; i++) if (c[i] !== 2 * a[i]) bad++;
    expect(bad).toBe(0);
  });

  it('plans: tiny → naive, forward NT → 128 tiles, weight gradient TN → split-K', () => {
    expect(planGemm(8, 8, 8).impl).toBe('naive');
    expect(planGemm(32768, 4, 32).impl).toBe('naive'); // skinny, short K
    expect(planGemm(32768, 2048, 512)).toEqual({ impl: 'tiled128', splits: 1, kChunk: 512 });
    const dw = planGemm(2048, 512, 262144); // c_fc weight gradient: 64 tiles, K = B·T
    expect(dw.impl).toBe('tiled128');
    expect(dw.splits).toBeGreaterThan(1);
    expect(dw.kChunk % 8).toBe(0);
    expect(dw.splits * dw.kChunk).toBeGreaterThanOrEqual(262144);
    expect((dw.splits - 1) * dw.kChunk).toBeLessThan(262144);
    expect(planGemm(96, 512, 4096).impl).toBe('tiled64');
    expect(planGemm(512, 512, 512).impl).toBe('tiled64'); // Polar Express A·A: 16 big tiles would idle most SMs
    const gate = planGemm(4, 32, 262144); // ve_gate weight gradient: skinny but very long K
    expect(gate.impl).toBe('tiled64');
    expect(gate.splits).toBeGreaterThan(1);
  });

  it('throws on bad shapes, naming the op and the shapes', () => {
    const a = rt.empty([4, 3]), b = rt.empty([5, 2]);
    expect(() => matmul(rt, a, b)).toThrow(/matmul: inner dimensions differ: A \[4,3\] vs B \[5,2\]/);
    expect(() => matmul(rt, a, rt.empty([3, 2]), { ldc: 1, out: rt.empty([8]) })).toThrow(/ldc=1 is less than N=2/);
    expect(() => matmul(rt, a, rt.empty([3, 2]), { ldc: 5, out: rt.empty([16]) })).toThrow(/C tensor\[16\].*too small/);
    expect(() => matmul(rt, a, rt.empty([3, 2]), { ldc: 5 })).toThrow(/ldc=5 ≠ N=2 needs out/);
    expect(() => matmul(rt, a, rt.empty([3, 2]), { beta: 1 })).toThrow(/beta ≠ 0 needs out/);
    expect(() => gemm(rt, a, b, rt.empty([8]), { M: 4, N: 2, K: 3, lda: 2, ldb: 2, ldc: 2 })).toThrow(/gemm 4×2×3 NN: leading dimensions/);
  });
});
