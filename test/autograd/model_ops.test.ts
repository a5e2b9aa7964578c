import { describe, expect, it } from 'vitest';
import { lmHeadLogits, lmHeadLoss, residualMix, valueEmbedGate } from '../../src/autograd/model_ops.ts';
import { requiresGrad, useRuntime, zeroGrad } from '../../src/autograd/tape.ts';
import { matmulRef } from '../../src/ops/matmul.ts';
import { softcapRef, softcapXentRef } from '../../src/ops/softcap_xent.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import type { Tensor } from '../../src/gpu/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { gradCheck } from '../gradcheck.ts';
import { expectClose, relError, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(9);

/** Targets in [0, V) with some −1. */
function targetsFor(n: number, V: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => (i % 3 === 1 ? -1 : rng.int(V)));
}

/** Loss, per-token losses, dx and dW of the chunked LM head, computed on the CPU. */
function lmHeadRef(x: Float32Array, w: Float32Array, t: Int32Array, N: number, C: number, V: number, s: number) {
  const logits = matmulRef(x, [N, C], w, [V, C], { transB: true });
  const r = softcapXentRef(logits, t, V, s);
  return {
    ...r,
    dx: matmulRef(r.dlogits, [N, V], w, [V, C]),
    dw: matmulRef(r.dlogits, [N, V], x, [N, C], { transA: true }),
  };
}

describe.skipIf(!rt)('model ops', () => {
  const tape = rt && useRuntime(rt);

  it('residualMix matches finite differences in x, x0, lambdas and mus', async () => {
    await gradCheck(
      rt,
      ([x, x0, lam, mu]) => residualMix(x, x0, lam, mu, 1),
      [
        { data: rng.uniformArray(6), shape: [2, 3] },
        { data: rng.uniformArray(6), shape: [2, 3] },
        { data: rng.uniformArray(3, 0.5, 1.5), shape: [3] },
        { data: rng.uniformArray(3, -0.5, 0.5), shape: [3] },
      ],
      { label: 'residualMix' },
    );
  });

  it('residualMix accumulates the lambdas gradient over layers through the tape', async () => {
    // two layers reusing the vectors and x0, as the model does
    await gradCheck(
      rt,
      ([x, x0, lam, mu]) => residualMix(residualMix(x, x0, lam, mu, 0), x0, lam, mu, 2),
      [
        { data: rng.uniformArray(5), shape: [5] },
        { data: rng.uniformArray(5), shape: [5] },
        { data: rng.uniformArray(3, 0.5, 1.5), shape: [3] },
        { data: rng.uniformArray(3, -0.5, 0.5), shape: [3] },
      ],
      { label: 'residualMix x2' },
    );
  });

  it('valueEmbedGate matches finite differences in v, ve and z', async () => {
    await gradCheck(
      rt,
      ([v, ve, z]) => valueEmbedGate(v, ve, z),
      [
        { data: rng.uniformArray(12), shape: [1, 2, 2, 3] },
        { data: rng.uniformArray(12), shape: [1, 2, 2, 3] },
        { data: rng.uniformArray(4, -2, 2), shape: [1, 2, 2] },
      ],
      { label: 'valueEmbedGate' },
    );
  });

  for (const softcap of [15, 0]) {
    it(`lmHeadLoss matches finite differences in x and w (softcap ${softcap}, chunks of 2 over 5 rows)`, async () => {
      const N = 5, C = 3, V = 7;
      await gradCheck(
        rt,
        ([x, w, t]) => lmHeadLoss(x, w, t, { softcap, chunkRows: 2 }).loss,
        [
          { data: rng.uniformArray(N * C, -3, 3), shape: [N, C] },
          { data: rng.uniformArray(V * C, -3, 3), shape: [V, C] },
          { data: targetsFor(N, V), shape: [N], dtype: 'i32', differentiable: false },
        ],
        { label: `lmHeadLoss s=${softcap}` },
      );
    });
  }

  // chunkRows: not dividing N, 1, equal to N, above N, default
  for (const chunkRows of [3, 1, 7, 50, undefined]) {
    it(`lmHeadLoss matches the reference (loss, per-token, dx, dW scaled by the incoming gradient), chunkRows ${chunkRows}`, async () => {
      const N = 7, C = 5, V = 300, s = 15;
      const x = rng.uniformArray(N * C, -4, 4), w = rng.uniformArray(V * C, -4, 4);
      const t = Int32Array.from(targetsFor(N, V));
      const ref = lmHeadRef(x, w, t, N, C, V, s);
      const X = requiresGrad(rt.keep(rt.fromArray(x, [1, N, C]))); // leading dims fold into N
      const W = requiresGrad(rt.keep(rt.fromArray(w, [V, C])));
      const T = rt.keep(rt.fromArray(t, [N], 'i32'));
      const { loss, perToken } = await rt.scopeAsync(async () => {
        const out = lmHeadLoss(X, W, T, { softcap: s, chunkRows });
        tape.backward(out.loss, rt.fromArray([2.5], [1]));
        return { loss: await rt.read(out.loss), perToken: await rt.read(out.perToken) };
      });
      expect(Math.abs(loss[0] - ref.loss)).toBeLessThan(1e-5 * Math.max(1, ref.loss));
      expectClose(perToken, ref.perToken, { atol: 1e-5, label: 'perToken' });
      expect(relError(await rt.read(X.grad!), ref.dx.map((v) => 2.5 * v))).toBeLessThan(1e-5);
      expect(relError(await rt.read(W.grad!), ref.dw.map((v) => 2.5 * v))).toBeLessThan(1e-5);
      zeroGrad(rt, [X, W]);
      for (const u of [X, W, T]) (u.kept = false), rt.release(u);
    });
  }

  it('lmHeadLoss: all targets ignored gives loss 0 and zero (finite) gradients', async () => {
    const N = 4, C = 3, V = 9;
    const X = requiresGrad(rt.keep(rt.fromArray(rng.uniformArray(N * C), [N, C])));
    const W = requiresGrad(rt.keep(rt.fromArray(rng.uniformArray(V * C), [V, C])));
    const loss = await rt.scopeAsync(async () => {
      const out = lmHeadLoss(X, W, rt.fromArray(new Int32Array(N).fill(-1), [N], 'i32'), { softcap: 15, chunkRows: 3 });
      tape.backward(out.loss);
      return rt.read(out.loss);
    });
    expect([...loss]).toEqual([0]);
    expect((await rt.read(X.grad!)).every((v) => v === 0)).toBe(true);
    expect((await rt.read(W.grad!)).every((v) => v === 0)).toBe(true);
    zeroGrad(rt, [X, W]);
  });

  it('lmHeadLoss under noGrad records nothing and gives the same loss', async () => {
    const N = 6, C = 4, V = 11;
    const x = rng.uniformArray(N * C, -3, 3), w = rng.uniformArray(V * C, -3, 3);
    const t = Int32Array.from(targetsFor(N, V));
    const X = requiresGrad(rt.fromArray(x, [N, C])), W = requiresGrad(rt.fromArray(w, [V, C]));
    const out = tape.noGrad(() => lmHeadLoss(X, W, rt.fromArray(t, [N], 'i32'), { softcap: 15, chunkRows: 4 }));
    expect(out.loss.requiresGrad).toBe(false);
    expect(tape.nodes.length).toBe(0);
    expect(Math.abs((await rt.item(out.loss)) - lmHeadRef(x, w, t, N, C, V, 15).loss)).toBeLessThan(1e-5);
  });

  it('lmHeadLoss frees everything it does not return: pool usage is flat across steps', async () => {
    const N = 9, C = 4, V = 20;
    const X = requiresGrad(rt.keep(rt.fromArray(rng.uniformArray(N * C), [N, C])));
    const W = requiresGrad(rt.keep(rt.fromArray(rng.uniformArray(V * C), [V, C])));
    const T = rt.keep(rt.fromArray(targetsFor(N, V), [N], 'i32'));
    const step = () => rt.scope(() => tape.backward(lmHeadLoss(X, W, T, { softcap: 15, chunkRows: 4 }).loss));
    step();
    zeroGrad(rt, [X, W]);
    await rt.sync();
    const inUse = rt.pool.bytesInUse, created = rt.pool.created;
    for (let i = 0; i < 3; i++) {
      step();
      zeroGrad(rt, [X, W]);
    }
    expect(rt.pool.bytesInUse).toBe(inUse);
    expect(rt.pool.created).toBe(created);
    for (const u of [X, W, T]) (u.kept = false), rt.release(u);
  });

  it('lmHeadLoss rejects mismatched shapes, naming the op', () => {
    const x = rt.zeros([4, 3]), w = rt.zeros([5, 3]);
    expect(() => lmHeadLoss(x, rt.zeros([5, 2]), rt.zeros([4], 'i32'), { softcap: 15 })).toThrow(/lmHeadLoss: expected x/);
    expect(() => lmHeadLoss(x, w, rt.zeros([3], 'i32'), { softcap: 15 })).toThrow(/lmHeadLoss: targets/);
    expect(() => lmHeadLoss(x, w, rt.zeros([4]), { softcap: 15 })).toThrow(/lmHeadLoss: targets/);
    expect(() => lmHeadLoss(x, w, rt.zeros([4], 'i32'), { softcap: 15, chunkRows: 0 })).toThrow(/lmHeadLoss: chunkRows/);
  });

  it('lmHeadLogits matches matmul + softcap and records nothing', async () => {
    const B = 2, T = 3, C = 5, V = 37;
    const x = rng.uniformArray(B * T * C, -4, 4), w = rng.uniformArray(V * C, -4, 4);
    const X: Tensor = requiresGrad(rt.fromArray(x, [B, T, C]));
    const logits = lmHeadLogits(X, rt.fromArray(w, [V, C]), 15);
    expect(logits.shape).toEqual([B, T, V]);
    expect(tape.nodes.length).toBe(0);
    expectClose(await rt.read(logits), softcapRef(matmulRef(x, [B * T, C], w, [V, C], { transB: true }), 15), { atol: 1e-5, label: 'logits' });
  });
});
