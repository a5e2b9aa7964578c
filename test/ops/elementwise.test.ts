import { describe, expect, it } from 'vitest';
import { add, addScaled, addScaledRef, axpyInPlace, axpyRef, copy, lerpInPlace, lerpRef, mul, mulRef, scale, scaleByScalar, scaleByScalarInPlace, scaleRef } from '../../src/ops/elementwise.ts';
import { sumAll, sumCols, sumColsRef, sumRows, sumRowsRef, sumSqRows } from '../../src/ops/reduce.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(1);
// awkward sizes: 1, odd, around the workgroup size, several workgroups
const SIZES = [1, 7, 255, 256, 257, 1000];

describe.skipIf(!rt)('elementwise', () => {
  for (const n of SIZES) {
    it(`matches the references at n=${n}, at offsets`, async () => {
      const a = rng.uniformArray(n + 3), b = rng.uniformArray(n + 5);
      const A = rt.fromArray(a, [n + 3]), B = rt.fromArray(b, [n + 5]);
      const av = rt.view(A, [n], 3), bv = rt.view(B, [n], 5);
      const aa = a.subarray(3), bb = b.subarray(5);
      expectClose(await rt.read(addScaled(rt, av, bv, 0.5, -2)), addScaledRef(aa, bb, 0.5, -2));
      expectClose(await rt.read(add(rt, av, bv)), addScaledRef(aa, bb));
      expectClose(await rt.read(mul(rt, av, bv, 3)), mulRef(aa, bb, 3));
      expectClose(await rt.read(scale(rt, av, -1.5)), scaleRef(aa, -1.5));
      expectClose(await rt.read(copy(rt, av)), aa);
      const s = rt.fromArray([0.25], [1]);
      expectClose(await rt.read(scaleByScalar(rt, av, s, 2)), scaleRef(aa, 0.5));
      const w = copy(rt, av);
      expectClose(await rt.read(scaleByScalarInPlace(rt, w, s, -4)), scaleRef(aa, -1));
      const y = copy(rt, bv);
      expectClose(await rt.read(axpyInPlace(rt, y, av, 0.3)), axpyRef(bb, aa, 0.3));
      const z = copy(rt, bv);
      expectClose(await rt.read(lerpInPlace(rt, z, av, 0.2)), lerpRef(bb, aa, 0.2));
      // the parts of A outside the view are untouched
      expect([...(await rt.read(A)).subarray(0, 3)]).toEqual([...a.subarray(0, 3)]);
    });
  }

  it('rejects mismatched sizes', () => {
    expect(() => add(rt, rt.zeros([3]), rt.zeros([4]))).toThrow(/differ in size/);
  });
});

describe.skipIf(!rt)('reduce', () => {
  for (const [rows, cols] of [[1, 1], [1, 1000], [3, 7], [5, 300], [2, 4097]]) {
    it(`sums rows, squares and columns of [${rows}, ${cols}]`, async () => {
      const x = rng.uniformArray(rows * cols);
      const X = rt.fromArray(x, [rows, cols]);
      expectClose(await rt.read(sumRows(rt, X, { alpha: 0.5 })), sumRowsRef(x, rows, cols, 0.5), { atol: 1e-4 });
      expectClose(await rt.read(sumSqRows(rt, X)), sumRowsRef(x, rows, cols, 1, true), { atol: 1e-4 });
      expectClose(await rt.read(sumCols(rt, X, { alpha: 2 })), sumColsRef(x, rows, cols, 2), { atol: 1e-4 });
      const total = x.reduce((s, v) => s + v, 0);
      expectClose(await rt.read(sumAll(rt, X)), [total], { atol: 1e-3 });
      const acc = rt.fromArray(new Float32Array(cols).fill(1), [cols]);
      sumCols(rt, X, { out: acc, accumulate: true });
      expectClose(await rt.read(acc), sumColsRef(x, rows, cols).map((v) => v + 1), { atol: 1e-4 });
    });
  }
});
