/**
 * The training hot path in steady state: once settled, a step of train.ts's GPT and
 * MuonAdamW (two micro-batches, backward, optimizer, zero_grad) compiles no pipeline, creates no
 * bind group and no buffer, and leaves pool usage where it was. Synthetic tokens, tiny config.
 */
import { describe, expect, it } from 'vitest';
import { scale } from '../src/autograd/basic.ts';
import { ctx, useRuntime } from '../src/autograd/tape.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { copy } from '../src/ops/elementwise.ts';
import { buildEmbeddingIndex } from '../src/ops/embedding.ts';
import { Rng } from '../src/util/rng.ts';
import { buildModelConfig, GPT, OPTIMIZER_SETTINGS } from '../train.ts';
import { testRuntime } from './setup.ts';

const rt = (await testRuntime()) as Runtime;

describe.skipIf(!rt)('a training step in steady state', () => {
  it('creates nothing once settled', async () => {
    useRuntime(rt);
    const tape = ctx();
    const [B, T, V, ACCUM] = [2, 32, 96, 2];
    const model = new GPT(rt, buildModelConfig(2, V, { aspectRatio: 32, headDim: 32, seqLen: T }));
    model.initWeights();
    const optimizer = model.setupOptimizer(OPTIMIZER_SETTINGS);
    const rng = new Rng(3);
    const ids = rt.keep(rt.empty([B, T], 'i32'));
    const targets = rt.keep(rt.empty([B, T], 'i32'));
    const lastLoss = rt.keep(rt.zeros([1]));
    const hostIds = rng.intArray(B * T, V);
    const index = buildEmbeddingIndex(rt, hostIds, V);
    const losses: number[] = [];
    const step = async () => {
      for (let micro = 0; micro < ACCUM; micro++) {
        const x = rng.intArray(B * T, V);
        rt.write(ids, x);
        rt.write(targets, rng.intArray(B * T, V));
        buildEmbeddingIndex(rt, x, V, index);
        rt.scope(() => {
          const loss = model.forward({ ids, index }, targets);
          rt.scope(() => void ctx().backward(scale(loss, 1 / ACCUM)));
          copy(rt, loss, lastLoss); // as train.ts: the last micro-step's loss is read once per step
        });
      }
      optimizer.step();
      optimizer.zeroGrad();
      losses.push(await rt.item(lastLoss));
    };
    // the first step also creates the optimizer state, so the pool's free set settles after it:
    // from the second step on, identical steps get identical buffers
    await step();
    await step();
    await rt.sync();
    const settled = rt.stats();
    for (let i = 0; i < 3; i++) await step();
    await rt.sync();
    const later = rt.stats();
    expect(later.pipelines).toBe(settled.pipelines);
    expect(later.bindGroups).toBe(settled.bindGroups);
    expect(later.buffersCreated).toBe(settled.buffersCreated);
    expect(later.bytesInUse).toBe(settled.bytesInUse);
    expect(later.dispatches).toBeGreaterThan(settled.dispatches); // it did run
    expect(tape.nodes.length).toBe(0);
    expect(losses.every(Number.isFinite)).toBe(true);
  });
});
