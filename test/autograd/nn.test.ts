import { describe, expect, it } from 'vitest';
import { mul, sum } from '../../src/autograd/basic.ts';
import { embedding, relu2, rmsNorm, rotary } from '../../src/autograd/nn.ts';
import { requiresGrad, useRuntime, zeroGrad } from '../../src/autograd/tape.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { buildEmbeddingIndex, embeddingBwdRef, releaseEmbeddingIndex } from '../../src/ops/embedding.ts';
import { rotaryTables } from '../../src/ops/rotary.ts';
import { Rng } from '../../src/util/rng.ts';
import { gradCheck } from '../gradcheck.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(21);

/** Uniform values kept at least `gap` away from 0 (relu² has a kink there). */
function awayFromZero(n: number, gap = 0.05): Float32Array {
  return rng.uniformArray(n).map((v) => (Math.abs(v) < gap ? v + Math.sign(v || 1) * gap : v));
}

describe.skipIf(!rt)('nn autograd', () => {
  const tape = rt && useRuntime(rt);

  it('embedding: the table gradient matches finite differences (repeated and unused ids)', async () => {
    const V = 5, C = 3;
    const ids = new Int32Array([2, 0, 2, 4, 2, 0]); // id 2 three times; ids 1 and 3 unused
    const index = buildEmbeddingIndex(rt, ids, V);
    await gradCheck(rt, ([table, idsT]) => embedding(table, rt.reshape(idsT, [2, 3]), index), [
      { data: rng.uniformArray(V * C), shape: [V, C] },
      { data: Float32Array.from(ids), shape: [6], dtype: 'i32', differentiable: false },
    ]);
    releaseEmbeddingIndex(rt, index);
  });

  it('embedding: one index serves two tables; the gradient is the scatter-add of the seed', async () => {
    const V = 4, C = 2;
    const ids = new Int32Array([3, 3, 1]);
    const index = buildEmbeddingIndex(rt, ids, V);
    const idsT = rt.fromArray(ids, [3], 'i32');
    const a = requiresGrad(rt.fromArray(rng.uniformArray(V * C), [V, C]));
    const b = requiresGrad(rt.fromArray(rng.uniformArray(V * 3), [V, 3]));
    rt.scope(() => tape.backward(sum(mul(embedding(a, idsT, index), embedding(a, idsT, index)))));
    rt.scope(() => tape.backward(embedding(b, idsT, index), rt.fromArray(new Float32Array(9).fill(1), [3, 3])));
    expectClose(await rt.read(b.grad!), embeddingBwdRef(new Float32Array(9).fill(1), ids, V, 3), { atol: 0 });
    // d Σ a[ids]² / da = 2 · count(v) · a[v]
    const av = await rt.read(a);
    const want = av.map((v, i) => 2 * v * ids.filter((id) => id === Math.floor(i / C)).length);
    expectClose(await rt.read(a.grad!), want);
    zeroGrad(rt, [a, b]);
    releaseEmbeddingIndex(rt, index);
  });

  it('embedding: needs an index only when the table needs a gradient', async () => {
    const table = rt.fromArray([1, 2, 3, 4], [2, 2]);
    const ids = rt.fromArray([1, 0], [2], 'i32');
    expectClose(await rt.read(embedding(table, ids, null)), [3, 4, 1, 2]);
    requiresGrad(table);
    expect(() => embedding(table, ids, null)).toThrow(/embedding: .* needs a gradient but no EmbeddingIndex/);
    expectClose(await rt.read(tape.noGrad(() => embedding(table, ids, null))), [3, 4, 1, 2]);
    const index = buildEmbeddingIndex(rt, new Int32Array([1, 0, 1]), 2);
    expect(() => embedding(table, ids, index)).toThrow(/index for 3 tokens and V=2 does not fit ids/);
    releaseEmbeddingIndex(rt, index);
  });

  for (const shape of [[1, 1], [3, 5], [2, 2, 8]]) {
    it(`rmsNorm matches finite differences for [${shape}]`, async () => {
      const n = shape.reduce((p, d) => p * d, 1);
      await gradCheck(rt, ([x]) => rmsNorm(x), [{ data: rng.uniformArray(n, -2, 2), shape }]);
    });
  }

  it('rmsNorm without a gradient frees its saved rstd', async () => {
    const x = rt.keep(rt.fromArray(rng.uniformArray(12), [3, 4]));
    const step = () => rt.scope(() => void rmsNorm(x));
    step();
    await rt.sync();
    const inUse = rt.pool.bytesInUse;
    const y = rmsNorm(x); // outside any scope: a leaked rstd would stay allocated after y is released
    expect(rt.pool.bytesInUse).toBeGreaterThan(inUse);
    rt.release(y);
    expect(rt.pool.bytesInUse).toBe(inUse);
    rt.release(x);
  });

  for (const shape of [[1, 1, 1, 2], [2, 3, 2, 4]]) {
    it(`rotary matches finite differences for [${shape}]`, async () => {
      const [, T, , D] = shape;
      const { cos, sin } = rotaryTables(rt, T + 2, D);
      const n = shape.reduce((p, d) => p * d, 1);
      await gradCheck(rt, ([x]) => rotary(x, cos, sin), [{ data: rng.uniformArray(n), shape }]);
      rt.release(cos);
      rt.release(sin);
    });
  }

  it('relu2 matches finite differences (both signs, odd size)', async () => {
    await gradCheck(rt, ([x]) => relu2(x), [{ data: awayFromZero(7), shape: [7] }]);
  });

  it('a composite as in the model: rmsNorm(rotary(x)) and relu2(rmsNorm(embedding))', async () => {
    const { cos, sin } = rotaryTables(rt, 3, 4);
    await gradCheck(rt, ([x]) => rmsNorm(rotary(x, cos, sin)), [{ data: rng.uniformArray(2 * 3 * 2 * 4), shape: [2, 3, 2, 4] }]);
    const ids = new Int32Array([1, 1, 0, 2]);
    const index = buildEmbeddingIndex(rt, ids, 3);
    await gradCheck(rt, ([table, idsT]) => relu2(rmsNorm(embedding(table, idsT, index))), [
      { data: awayFromZero(3 * 5, 0.2), shape: [3, 5] },
      { data: Float32Array.from(ids), shape: [4], dtype: 'i32', differentiable: false },
    ]);
    releaseEmbeddingIndex(rt, index);
    rt.release(cos);
    rt.release(sin);
  });
});
