import { describe, expect, it } from 'vitest';
import { relu2Bwd, relu2BwdRef, relu2Fwd, relu2Ref } from '../../src/ops/relu2.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(17);

describe('relu2 references', () => {
  it('compute relu(x)² and 2·relu(x)·dy', () => {
    const x = new Float32Array([-2, -0, 0, 0.5, 3]);
    expect([...relu2Ref(x)]).toEqual([0, 0, 0, 0.25, 9]);
    expect([...relu2BwdRef(new Float32Array([1, 1, 1, 2, -1]), x)]).toEqual([0, 0, 0, 2, -6]);
  });
});

describe.skipIf(!rt)('relu2', () => {
  for (const n of [1, 7, 255, 257, 1000]) {
    it(`forward and backward match the references at n=${n}, at offsets`, async () => {
      const x = rng.uniformArray(n + 3);
      x[3] = 0; // the kink itself
      const dy = rng.uniformArray(n + 1);
      const X = rt.view(rt.fromArray(x, [n + 3]), [n], 3);
      const DY = rt.view(rt.fromArray(dy, [n + 1]), [n], 1);
      expectClose(await rt.read(relu2Fwd(rt, X)), relu2Ref(x.subarray(3)), { atol: 1e-7, rtol: 1e-6 });
      expectClose(await rt.read(relu2Bwd(rt, DY, X)), relu2BwdRef(dy.subarray(1), x.subarray(3)), { atol: 1e-7, rtol: 1e-6 });
    });
  }

  it('covers more than 65535 workgroups (a two-dimensional grid)', async () => {
    const n = 65_535 * 256 + 300;
    const x = new Float32Array(n).map((_, i) => ((i * 7919) % 2001) / 1000 - 1);
    const y = await rt.read(relu2Fwd(rt, rt.fromArray(x, [n])));
    expectClose(y, relu2Ref(x), { atol: 1e-7, rtol: 1e-6 });
  });

  it('writes into out and rejects mismatched sizes', async () => {
    const out = rt.zeros([2, 2]);
    relu2Fwd(rt, rt.fromArray([-1, 2, 0.5, -3], [2, 2]), out);
    expect([...(await rt.read(out))]).toEqual([0, 4, 0.25, 0]);
    expect(() => relu2Bwd(rt, rt.zeros([3]), rt.zeros([4]))).toThrow(/relu2Bwd: dy .* does not match x/);
    expect(() => relu2Fwd(rt, rt.zeros([3]), rt.zeros([4]))).toThrow(/relu2: out/);
  });
});
