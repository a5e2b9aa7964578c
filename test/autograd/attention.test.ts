import { describe, expect, it } from 'vitest';
import { attention } from '../../src/autograd/attention.ts';
import { requiresGrad, useRuntime, zeroGrad } from '../../src/autograd/tape.ts';
import { attentionBwdRef, attentionRef } from '../../src/ops/attention.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { gradCheck } from '../gradcheck.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(41);

describe.skipIf(!rt)('autograd attention', () => {
  const tape = rt && useRuntime(rt);

  it('matches finite differences (T 4, GQA 2, window 2, D 4)', async () => {
    // scaled-up inputs so the softmax is far from uniform and every gradient term matters
    await gradCheck(rt, ([q, k, v]) => attention(q, k, v, 2), [
      { data: rng.uniformArray(1 * 4 * 2 * 4, -2, 2), shape: [1, 4, 2, 4] },
      { data: rng.uniformArray(1 * 4 * 1 * 4, -2, 2), shape: [1, 4, 1, 4] },
      { data: rng.uniformArray(1 * 4 * 1 * 4, -2, 2), shape: [1, 4, 1, 4] },
    ], { label: 'attention', eps: 1e-2, atol: 1e-3, rtol: 5e-3 });
  });

  it('matches finite differences with B 2, plain causal (window ≥ T)', async () => {
    await gradCheck(rt, ([q, k, v]) => attention(q, k, v, 1000), [
      { data: rng.uniformArray(2 * 3 * 1 * 4, -2, 2), shape: [2, 3, 1, 4] },
      { data: rng.uniformArray(2 * 3 * 1 * 4, -2, 2), shape: [2, 3, 1, 4] },
      { data: rng.uniformArray(2 * 3 * 1 * 4, -2, 2), shape: [2, 3, 1, 4] },
    ], { label: 'attention causal', eps: 1e-2, atol: 1e-3, rtol: 5e-3 });
  });

  it('accumulates dk, dv from a kv tensor used as both k and v, against the reference', async () => {
    const dims = { B: 1, T: 7, H: 4, Hkv: 2, D: 8 };
    const qd = rng.uniformArray(7 * 4 * 8), kvd = rng.uniformArray(7 * 2 * 8), dyd = rng.uniformArray(7 * 4 * 8);
    const q = requiresGrad(rt.keep(rt.fromArray(qd, [1, 7, 4, 8])));
    const kv = requiresGrad(rt.keep(rt.fromArray(kvd, [1, 7, 2, 8])));
    await rt.scopeAsync(async () => {
      const y = attention(q, kv, kv, 3);
      expectClose(await rt.read(y), attentionRef(qd, kvd, kvd, dims, 3).y, { label: 'y' });
      tape.backward(y, rt.fromArray(dyd, [1, 7, 4, 8]));
    });
    const ref = attentionBwdRef(qd, kvd, kvd, dyd, dims, 3);
    expectClose(await rt.read(q.grad!), ref.dq, { atol: 5e-5, rtol: 2e-4, label: 'dq' });
    expectClose(await rt.read(kv.grad!), ref.dk.map((x, i) => x + ref.dv[i]), { atol: 5e-5, rtol: 2e-4, label: 'dk + dv' });
    zeroGrad(rt, [q, kv]);
    rt.release(q);
    rt.release(kv);
  });

  it('records nothing and keeps no logsumexp without grad; frees everything with it', async () => {
    const mk = (n: number, shape: number[]) => rt.keep(rt.fromArray(rng.uniformArray(n), shape));
    const q = mk(2 * 5 * 2 * 4, [2, 5, 2, 4]), k = mk(2 * 5 * 2 * 4, [2, 5, 2, 4]), v = mk(2 * 5 * 2 * 4, [2, 5, 2, 4]);
    await rt.sync();
    const before = rt.pool.bytesInUse;
    const y = tape.noGrad(() => attention(requiresGrad(q), k, v, 2));
    expect(tape.nodes.length).toBe(0);
    expect(rt.pool.bytesInUse - before).toBe(y.storage.bytes); // y only: lse went back to the pool
    rt.release(y);
    const seed = rng.uniformArray(2 * 5 * 2 * 4);
    const step = () => rt.scope(() => tape.backward(attention(q, k, v, 2), rt.fromArray(seed, [2, 5, 2, 4])));
    step();
    zeroGrad(rt, [q]);
    await rt.sync();
    const inUse = rt.pool.bytesInUse, created = rt.pool.created;
    for (let i = 0; i < 2; i++) {
      step();
      zeroGrad(rt, [q]);
    }
    await rt.sync();
    expect(rt.pool.bytesInUse).toBe(inUse);
    expect(rt.pool.created).toBe(created);
    for (const t of [q, k, v]) rt.release(t);
  });
});
