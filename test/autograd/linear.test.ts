import { describe, expect, it } from 'vitest';
import { linear, matmul } from '../../src/autograd/linear.ts';
import { requiresGrad, useRuntime, zeroGrad } from '../../src/autograd/tape.ts';
import { matmulRef, planGemm } from '../../src/ops/matmul.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { gradCheck, type GradInput } from '../gradcheck.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const tape = rt && useRuntime(rt); // one ambient tape for the whole file
const rng = new Rng(5);
const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
const input = (...shape: number[]): GradInput => ({ data: rng.uniformArray(numel(shape)), shape });

/** x[..., :k] as a dense [rows, k] array. */
function sliceCols(x: Float32Array, cols: number, k: number): Float32Array {
  return new Float32Array((x.length / cols) * k).map((_, i) => x[Math.floor(i / k) * cols + (i % k)]);
}

describe.skipIf(!rt)('linear', () => {
  it('forward is x·wᵀ over leading dims, and x[..., :k]·wᵀ with inFeatures', async () => {
    const x = rng.uniformArray(2 * 3 * 7), w = rng.uniformArray(5 * 7);
    const y = linear(rt.fromArray(x, [2, 3, 7]), rt.fromArray(w, [5, 7]));
    expect(y.shape).toEqual([2, 3, 5]);
    expectClose(await rt.read(y), matmulRef(x, [2, 3, 7], w, [5, 7], { transB: true }));
    const x2 = rng.uniformArray(4 * 10), w2 = rng.uniformArray(3 * 4);
    const y2 = linear(rt.fromArray(x2, [4, 10]), rt.fromArray(w2, [3, 4]), { inFeatures: 4 });
    expect(y2.shape).toEqual([4, 3]);
    expectClose(await rt.read(y2), matmulRef(sliceCols(x2, 10, 4), [4, 4], w2, [3, 4], { transB: true }));
  });

  it('matches finite differences: 2-D x, 3-D x, inFeatures (zero gradient past k), 1-D x', async () => {
    await gradCheck(rt, ([x, w]) => linear(x, w), [input(3, 4), input(5, 4)], { label: 'linear 2-D' });
    await gradCheck(rt, ([x, w]) => linear(x, w), [input(2, 3, 4), input(3, 4)], { label: 'linear 3-D' });
    await gradCheck(rt, ([x, w]) => linear(x, w, { inFeatures: 4 }), [input(2, 3, 6), input(2, 4)], { label: 'linear inFeatures' });
    await gradCheck(rt, ([x, w]) => linear(x, w), [input(5), input(3, 5)], { label: 'linear 1-D' });
  });

  it('backward at tiled sizes (split-K weight gradient) matches the reference', async () => {
    const [R, inX, k, out] = [600, 50, 40, 48];
    expect(planGemm(out, k, R).splits).toBeGreaterThan(1); // dw = dyᵀ·x takes the split-K path
    expect(planGemm(R, k, out).impl).not.toBe('naive'); // dx = dy·w is tiled
    for (const inFeatures of [inX, k]) {
      const xd = rng.uniformArray(R * inX), wd = rng.uniformArray(out * inFeatures), dyd = rng.uniformArray(R * out);
      const { gx, gw } = await rt.scopeAsync(async () => {
        const x = requiresGrad(rt.fromArray(xd, [3, R / 3, inX]));
        const w = requiresGrad(rt.fromArray(wd, [out, inFeatures]));
        const y = linear(x, w, { inFeatures });
        expectClose(await rt.read(y), matmulRef(sliceCols(xd, inX, inFeatures), [R, inFeatures], wd, [out, inFeatures], { transB: true }), { atol: 1e-4 });
        const seed = rt.fromArray(dyd, y.shape);
        const junk = rt.empty(x.shape); // dirty the pool: dx must really zero the columns past k
        rt.fill(junk, 7);
        rt.release(junk);
        tape.backward(y, seed);
        const res = { gx: await rt.read(x.grad!), gw: await rt.read(w.grad!) };
        zeroGrad(rt, [x, w]);
        return res;
      });
      const dxK = matmulRef(dyd, [R, out], wd, [out, inFeatures]);
      const dx = new Float32Array(R * inX).map((_, i) => (i % inX < inFeatures ? dxK[Math.floor(i / inX) * inFeatures + (i % inX)] : 0));
      expectClose(gx, dx, { atol: 1e-4, label: `dx (inFeatures ${inFeatures})` });
      const dw = matmulRef(dyd, [R, out], sliceCols(xd, inX, inFeatures), [R, inFeatures], { transA: true });
      expectClose(gw, dw, { atol: 1e-3, label: `dw (inFeatures ${inFeatures})` });
    }
  });

  it('frees every intermediate: pool usage returns to where it was', async () => {
    const x = requiresGrad(rt.keep(rt.fromArray(rng.uniformArray(300 * 24), [300, 24])));
    const w = requiresGrad(rt.keep(rt.fromArray(rng.uniformArray(20 * 16), [20, 16])));
    const step = () => rt.scope(() => tape.backward(linear(x, w, { inFeatures: 16 }), rt.fromArray(rng.uniformArray(300 * 20), [300, 20])));
    step();
    zeroGrad(rt, [x, w]);
    await rt.sync();
    const inUse = rt.pool.bytesInUse;
    for (let i = 0; i < 3; i++) {
      step();
      zeroGrad(rt, [x, w]);
    }
    expect(rt.pool.bytesInUse).toBe(inUse);
    rt.release(x);
    rt.release(w);
  });

  it('rejects mismatched shapes, naming them', () => {
    expect(() => linear(rt.empty([3, 4]), rt.empty([5, 3]))).toThrow(/linear: .*x tensor\[3,4\].*w tensor\[5,3\]/);
    expect(() => linear(rt.empty([3, 4]), rt.empty([5, 6]), { inFeatures: 6 })).toThrow(/linear:/);
  });
});

describe.skipIf(!rt)('matmul (differentiable)', () => {
  const layouts = [
    { transA: false, transB: false },
    { transA: false, transB: true },
    { transA: true, transB: false },
    { transA: true, transB: true },
  ];
  const stored = (rows: number, cols: number, trans: boolean, batch?: number) => [...(batch ? [batch] : []), ...(trans ? [cols, rows] : [rows, cols])];

  it('matches finite differences in 2-D, every layout', async () => {
    for (const t of layouts) {
      await gradCheck(rt, ([a, b]) => matmul(a, b, t), [input(...stored(3, 4, t.transA)), input(...stored(4, 2, t.transB))], { label: `2-D ${JSON.stringify(t)}` });
    }
  });

  it('matches finite differences for X·Xᵀ and Xᵀ·X (one tensor as both operands, as in Polar Express)', async () => {
    await gradCheck(rt, ([x]) => matmul(x, x, { transB: true }), [input(3, 5)], { label: 'X·Xᵀ' });
    await gradCheck(rt, ([x]) => matmul(x, x, { transA: true }), [input(3, 5)], { label: 'Xᵀ·X' });
  });

  it('matches finite differences with a 3-D A and a 2-D B (leading dims fold into M)', async () => {
    for (const transB of [false, true]) {
      await gradCheck(rt, ([a, b]) => matmul(a, b, { transB }), [input(2, 3, 4), input(...stored(4, 3, transB))], { label: `3-D A, transB ${transB}` });
    }
  });

  it('matches finite differences batched, every layout', async () => {
    for (const t of layouts) {
      await gradCheck(rt, ([a, b]) => matmul(a, b, t), [input(...stored(3, 4, t.transA, 2)), input(...stored(4, 2, t.transB, 2))], { label: `batched ${JSON.stringify(t)}` });
    }
  });

  it('matches finite differences with A broadcast over a batched B (dA sums over the batch)', async () => {
    for (const t of layouts) {
      await gradCheck(rt, ([a, b]) => matmul(a, b, t), [input(...stored(3, 4, t.transA)), input(...stored(4, 2, t.transB, 3))], { label: `broadcast A ${JSON.stringify(t)}` });
    }
  });
});
