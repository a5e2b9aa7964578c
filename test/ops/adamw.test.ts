import { describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { adamwStep, adamwStepRef, type AdamwOptions } from '../../src/ops/adamw.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(5);
// awkward sizes: 1, odd, around the workgroup size (256), several workgroups
const SIZES = [1, 7, 255, 256, 257, 1000];

describe.skipIf(!rt)('adamwStep', () => {
  for (const n of SIZES) {
    it(`matches adamwStepRef over 3 steps with a changing schedule, n=${n}, on views`, async () => {
      // tensors are views at different offsets of larger buffers: offsets must be honoured
      const P0 = rng.uniformArray(n + 2);
      const P = rt.fromArray(P0, [n + 2]);
      const G = rt.fromArray(rng.uniformArray(n + 3), [n + 3]);
      const M = rt.zeros([n + 1]), V = rt.zeros([n + 4]);
      const p = rt.view(P, [n], 2), m = rt.view(M, [n], 1), v = rt.view(V, [n], 4);
      let ref: ReturnType<typeof adamwStepRef> = { p: (await rt.read(p)).slice(), m: new Float32Array(n), v: new Float32Array(n) };
      for (let step = 1; step <= 3; step++) {
        const g = rt.view(G, [n], 3);
        const gHost = (await rt.read(g)).slice();
        const o: AdamwOptions = { lr: 0.05 / step, beta1: 0.8, beta2: 0.95, eps: 1e-10, weightDecay: 0.1 * step, step };
        adamwStep(rt, p, g, m, v, o);
        ref = adamwStepRef(ref.p, gHost, ref.m, ref.v, o);
        expectClose(await rt.read(p), ref.p, { atol: 1e-6, rtol: 1e-5, label: `p step ${step}` });
        expectClose(await rt.read(m), ref.m, { atol: 1e-7, rtol: 1e-5, label: `m step ${step}` });
        expectClose(await rt.read(v), ref.v, { atol: 1e-8, rtol: 1e-5, label: `v step ${step}` });
        rt.write(g, rng.uniformArray(n)); // next step's gradient
      }
      // the elements around the views are untouched
      expect([...(await rt.read(P)).subarray(0, 2)]).toEqual([...P0.subarray(0, 2)]);
      expect([...(await rt.read(M)).subarray(0, 1)]).toEqual([0]);
      expect([...(await rt.read(V)).subarray(0, 4)]).toEqual([0, 0, 0, 0]);
    });
  }

  it('takes a first step of lr·sign(g) (bias correction), independently of the reference', async () => {
    // at t = 1: m = (1−β1)g, v = (1−β2)g², so m/bias1 / sqrt(v/bias2) = sign(g) (eps negligible)
    const n = 300;
    const p0 = rng.uniformArray(n), g0 = rng.uniformArray(n, -2, 2);
    const p = rt.fromArray(p0, [n]);
    const lr = 0.5;
    adamwStep(rt, p, rt.fromArray(g0, [n]), rt.zeros([n]), rt.zeros([n]), { lr, beta1: 0.96, beta2: 0.95, eps: 1e-10, weightDecay: 0, step: 1 });
    expectClose(await rt.read(p), p0.map((v, i) => v - lr * Math.sign(g0[i])), { atol: 1e-6, rtol: 1e-6 });
  });

  it('applies decoupled weight decay p·(1 − lr·wd) when the gradient is zero', async () => {
    const p0 = rng.uniformArray(9);
    const p = rt.fromArray(p0, [3, 3]);
    adamwStep(rt, p, rt.zeros([3, 3]), rt.zeros([3, 3]), rt.zeros([3, 3]), { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.5, step: 4 });
    expectClose(await rt.read(p), p0.map((v) => v * (1 - 0.1 * 0.5)), { atol: 1e-7, rtol: 1e-6 });
  });

  it('rejects mismatched tensors and a bad step', () => {
    const o = { lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, step: 1 };
    expect(() => adamwStep(rt, rt.zeros([4]), rt.zeros([5]), rt.zeros([4]), rt.zeros([4]), o)).toThrow(/adamwStep: .*\[4\].*\[5\]/);
    expect(() => adamwStep(rt, rt.zeros([4]), rt.zeros([4]), rt.zeros([4]), rt.zeros([4]), { ...o, step: 0 })).toThrow(/step/);
  });
});
