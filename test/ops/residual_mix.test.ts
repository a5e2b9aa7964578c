import { describe, expect, it } from 'vitest';
import { residualMixBwd, residualMixBwdRef, residualMixFwd, residualMixRef } from '../../src/ops/residual_mix.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(21);

describe.skipIf(!rt)('residual_mix', () => {
  // n: 1, odd, around the workgroup size, and past 256·4·1024 so the backward's fixed grid of
  // workgroups strides over the data more than once. (nLayer, layer): first, middle, last, single.
  const cases: [number, number, number][] = [
    [1, 1, 0],
    [7, 3, 2],
    [255, 4, 1],
    [257, 2, 0],
    [1000, 8, 7],
    [1_100_001, 3, 1],
  ];
  for (const [n, nLayer, layer] of cases) {
    it(`forward and backward match the references at n=${n}, layer ${layer} of ${nLayer} (views at offsets)`, async () => {
      const x = rng.uniformArray(n + 2), x0 = rng.uniformArray(n + 1), dy = rng.uniformArray(n + 3);
      const lam = rng.uniformArray(nLayer + 1, 0.5, 1.5), mu = rng.uniformArray(nLayer + 2, -0.5, 0.5);
      const X = rt.view(rt.fromArray(x, [n + 2]), [n], 2);
      const X0 = rt.view(rt.fromArray(x0, [n + 1]), [n], 1);
      const DY = rt.view(rt.fromArray(dy, [n + 3]), [n], 3);
      const L = rt.view(rt.fromArray(lam, [nLayer + 1]), [nLayer], 1);
      const M = rt.view(rt.fromArray(mu, [nLayer + 2]), [nLayer], 2);
      const xs = x.subarray(2), x0s = x0.subarray(1), dys = dy.subarray(3), ls = lam.subarray(1), ms = mu.subarray(2);

      const y = residualMixFwd(rt, X, X0, L, M, layer);
      expectClose(await rt.read(y), residualMixRef(xs, x0s, ls, ms, layer), { label: 'y' });

      const g = residualMixBwd(rt, DY, X, X0, L, M, layer);
      const ref = residualMixBwdRef(dys, xs, x0s, ls, ms, layer);
      expectClose(await rt.read(g.dx), ref.dx, { label: 'dx' });
      expectClose(await rt.read(g.dx0), ref.dx0, { label: 'dx0' });
      // sums over n products of uniforms: f32 accumulation error grows like sqrt(n)
      const atol = 1e-5 * Math.sqrt(n) + 1e-6;
      const dL = await rt.read(g.dLambdas), dM = await rt.read(g.dMus);
      expectClose(dL, ref.dLambdas, { atol, label: 'dLambdas' });
      expectClose(dM, ref.dMus, { atol, label: 'dMus' });
      // zero except at the layer index, exactly
      for (let l = 0; l < nLayer; l++) {
        if (l !== layer) expect([dL[l], dM[l]]).toEqual([0, 0]);
      }
      expect(g.dLambdas.shape).toEqual([nLayer]);
    });
  }

  it('rejects bad shapes and layer indices, naming the op', () => {
    const x = rt.zeros([2, 3]), l = rt.zeros([4]);
    expect(() => residualMixFwd(rt, x, rt.zeros([5]), l, l, 0)).toThrow(/residualMixFwd.*differ in size/);
    expect(() => residualMixFwd(rt, x, x, l, l, 4)).toThrow(/residualMixFwd: layer 4/);
    expect(() => residualMixFwd(rt, x, x, l, rt.zeros([3]), 0)).toThrow(/residualMixFwd: lambdas/);
    expect(() => residualMixBwd(rt, rt.zeros([7]), x, x, l, l, 0)).toThrow(/residualMixBwd: dy/);
  });
});
