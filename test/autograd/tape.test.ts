import { describe, expect, it } from 'vitest';
import { add, mean, mul, reshape, scale, sum } from '../../src/autograd/basic.ts';
import { requiresGrad, useRuntime, zeroGrad } from '../../src/autograd/tape.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { gradCheck } from '../gradcheck.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(3);

describe.skipIf(!rt)('tape', () => {
  const tape = rt && useRuntime(rt);

  it('matches finite differences through a composite (x·y + 2x, reused input, reshape)', async () => {
    await gradCheck(
      rt,
      ([x, y]) => {
        const xy = mul(x, y);
        const r = reshape(add(xy, scale(x, 2)), [3, 2]);
        return add(r, reshape(mul(x, x), [3, 2]));
      },
      [
        { data: rng.uniformArray(6), shape: [6] },
        { data: rng.uniformArray(6), shape: [6] },
      ],
    );
  });

  it('matches finite differences for sum and mean', async () => {
    await gradCheck(rt, ([x]) => add(sum(mul(x, x)), mean(x)), [{ data: rng.uniformArray(5), shape: [5] }]);
  });

  it('accumulates leaf gradients across backward calls until zeroGrad', async () => {
    const x = requiresGrad(rt.keep(rt.fromArray([1, 2, 3], [3])));
    for (let i = 0; i < 2; i++) rt.scope(() => tape.backward(sum(scale(x, 2))));
    expectClose(await rt.read(x.grad!), [4, 4, 4]);
    zeroGrad(rt, [x]);
    expect(x.grad).toBeNull();
    rt.scope(() => tape.backward(sum(mul(x, x))));
    expectClose(await rt.read(x.grad!), [2, 4, 6]);
    zeroGrad(rt, [x]);
    rt.release(x);
  });

  it('frees every intermediate: pool usage returns to where it was', async () => {
    const x = requiresGrad(rt.keep(rt.fromArray(rng.uniformArray(64), [64])));
    const step = () => rt.scope(() => tape.backward(sum(add(mul(x, x), scale(x, 3)))));
    step();
    zeroGrad(rt, [x]);
    await rt.sync();
    const inUse = rt.pool.bytesInUse;
    const created = rt.pool.created;
    for (let i = 0; i < 3; i++) {
      step();
      zeroGrad(rt, [x]);
    }
    expect(rt.pool.bytesInUse).toBe(inUse);
    expect(rt.pool.created).toBe(created);
    rt.release(x);
  });

  it('records nothing under noGrad', () => {
    const x = requiresGrad(rt.fromArray([1], [1]));
    const y = tape.noGrad(() => scale(x, 2));
    expect(y.requiresGrad).toBe(false);
    expect(tape.nodes.length).toBe(0);
  });
});
