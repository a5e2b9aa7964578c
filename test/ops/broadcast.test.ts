import { describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { BINARY_OPS, binary, binaryRef, broadcastShape, sumAxis, sumAxisRef, UNARY_OPS, unary, unaryRef } from '../../src/ops/broadcast.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(5);
const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

// [a shape, b shape]: same shape, scalars both ways, per-row and per-column stats of a stack
// [G, R, C], per-matrix scalars, 4-D, sizes around the workgroup size
const PAIRS: [number[], number[]][] = [
  [[257], [257]],
  [[3, 5, 7], [1]],
  [[1], [2, 3]],
  [[3, 5, 7], [3, 5, 1]],
  [[3, 5, 7], [3, 1, 7]],
  [[2, 33, 9], [2, 1, 1]],
  [[2, 3, 4, 5], [3, 1, 5]],
  [[4, 1], [1, 300]],
];

describe.skipIf(!rt)('broadcast', () => {
  for (const [as, bs] of PAIRS) {
    it(`binary ops match the reference for [${as}] ∘ [${bs}], at offsets`, async () => {
      const a = rng.uniformArray(numel(as) + 2, 0.5, 2), b = rng.uniformArray(numel(bs) + 1, 0.5, 2);
      const A = rt.view(rt.fromArray(a, [a.length]), as, 2), B = rt.view(rt.fromArray(b, [b.length]), bs, 1);
      for (const op of BINARY_OPS) {
        const y = binary(rt, op, A, B, { alpha: 0.7, beta: -1.3 });
        expect(y.shape).toEqual(broadcastShape(as, bs));
        expectClose(await rt.read(y), binaryRef(op, a.subarray(2), as, b.subarray(1), bs, 0.7, -1.3).data, { label: op, atol: 1e-5, rtol: 1e-5 });
      }
    });
  }

  it('runs in place when out is a (b broadcast), leaving the rest of the buffer alone', async () => {
    const a = rng.uniformArray(2 + 3 * 4 * 5), b = rng.uniformArray(3 * 5);
    const buf = rt.fromArray(a, [a.length]);
    const A = rt.view(buf, [3, 4, 5], 2), B = rt.fromArray(b, [3, 1, 5]);
    binary(rt, 'sub', A, B, { beta: 0.5, out: A });
    const got = await rt.read(buf);
    expect([...got.subarray(0, 2)]).toEqual([...a.subarray(0, 2)]);
    expectClose(got.subarray(2), binaryRef('sub', a.subarray(2), [3, 4, 5], b, [3, 1, 5], 1, 0.5).data);
  });

  it('refuses an out that aliases an input other than in place', () => {
    const A = rt.zeros([4]), B = rt.zeros([4]);
    expect(() => binary(rt, 'add', A, B, { out: B })).toThrow(/shares a buffer/);
    expect(() => binary(rt, 'add', A, A, { out: A })).toThrow(/shares a buffer/);
    expect(() => binary(rt, 'add', rt.zeros([2, 3]), rt.zeros([3, 2]))).toThrow(/do not broadcast/);
  });

  for (const n of [1, 255, 1000]) {
    it(`unary ops match the reference at n=${n}, in place too`, async () => {
      const x = rng.uniformArray(n, 0.01, 30);
      x[0] = -x[0]; // ge / clamp_min see both sides (sqrt of it is NaN in both: skip index 0 there)
      const X = rt.fromArray(x, [n]);
      for (const op of UNARY_OPS) {
        const o = { alpha: 1.02, beta: 1e-3, c: 0.5 };
        const got = await rt.read(unary(rt, op, X, o));
        const want = unaryRef(op, x, o);
        const from = op === 'sqrt' || op === 'rsqrt' ? 1 : 0;
        expectClose(got.subarray(from), want.subarray(from), { label: op, atol: 1e-5, rtol: 1e-5 });
      }
      const Y = rt.fromArray(x, [n]);
      unary(rt, 'square', Y, { alpha: 2, out: Y });
      expectClose(await rt.read(Y), unaryRef('square', x, { alpha: 2 }));
    });
  }

  it('tanh saturates instead of overflowing', async () => {
    const got = await rt.read(unary(rt, 'tanh', rt.fromArray([-1e4, -50, 0, 50, 1e4], [5])));
    expect([...got]).toEqual([-1, -1, 0, 1, 1]);
  });

  const REDUCTIONS: [number[], number | [number, number]][] = [
    [[3, 5, 7], -1], [[3, 5, 7], -2], [[3, 5, 7], 0], [[3, 5, 7], [-2, -1]], [[2, 300, 3], 1], [[1000], 0], [[4, 70, 1], [1, 2]],
  ];
  for (const [shape, axis] of REDUCTIONS) {
    it(`sumAxis over ${JSON.stringify(axis)} of [${shape}] matches the reference (sums and sums of squares)`, async () => {
      const x = rng.uniformArray(numel(shape) + 3);
      const X = rt.view(rt.fromArray(x, [x.length]), shape, 3);
      for (const squared of [false, true]) {
        const y = sumAxis(rt, X, axis, { squared, alpha: 0.5 });
        const want = sumAxisRef(x.subarray(3), shape, axis, { squared, alpha: 0.5 });
        expect(y.shape).toEqual(want.shape);
        expectClose(await rt.read(y), want.data, { atol: 1e-4, rtol: 1e-5 });
      }
    });
  }
});
