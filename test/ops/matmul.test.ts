import { describe, it } from 'vitest';
import { matmul, matmulRef } from '../../src/ops/matmul.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(11);

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
    it(name, async () => {
      const a = rng.uniformArray(aShape.reduce((p, d) => p * d, 1));
      const b = rng.uniformArray(bShape.reduce((p, d) => p * d, 1));
      const c = matmul(rt, rt.fromArray(a, aShape), rt.fromArray(b, bShape), o);
      expectClose(await rt.read(c), matmulRef(a, aShape, b, bShape, o), { atol: 1e-5, rtol: 1e-4 });
    });
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
});
