/**
 * The training hot path in steady state: once settled, a step of train.ts's GPT and
 * MuonAdamW (two micro-batches, backward, optimizer, zero_grad) compiles no pipeline, creates no
 * bind group and no buffer, and leaves pool usage where it was. Synthetic tokens, tiny config.
 */
import { describe, expect, it } from 'vitest';
import type { Batch } from '../prepare.ts';
import { ctx, useRuntime } from '../src/autograd/tape.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { buildEmbeddingIndex } from '../src/ops/embedding.ts';
import { Rng } from '../src/util/rng.ts';
import { buildModelConfig, GPT, OPTIMIZER_SETTINGS, type TrainState, trainStep } from '../train.ts';
import { testRuntime } from './setup.ts';

const rt = (await testRuntime()) as Runtime;

describe.skipIf(!rt)('a training step in steady state', () => {
  it('creates nothing once settled', async () => {
    useRuntime(rt);
    const tape = ctx();
    const [B, T, V, ACCUM] = [2, 32, 96, 2];
    const model = new GPT(rt, buildModelConfig(2, V, { aspectRatio: 32, headDim: 32, seqLen: T }));
    model.initWeights();
    const rng = new Rng(3);
    const inputs = rt.keep(rt.empty([B, T], 'i32'));
    const targets = rt.keep(rt.empty([B, T], 'i32'));
    // a stand-in for the dataloader: the same two tensors, rewritten with random tokens
    const loader = {
      async next(): Promise<Batch> {
        const inputsHost = rng.intArray(B * T, V), targetsHost = rng.intArray(B * T, V);
        rt.write(inputs, inputsHost);
        rt.write(targets, targetsHost);
        return { inputs, targets, inputsHost, targetsHost, epoch: 1 };
      },
    };
    const batch = await loader.next();
    const state: TrainState = {
      model, optimizer: model.setupOptimizer(OPTIMIZER_SETTINGS), loader, batch,
      embeddingIndex: buildEmbeddingIndex(rt, batch.inputsHost, V), gradAccumSteps: ACCUM, lastLoss: rt.keep(rt.zeros([1])),
    };
    const losses: number[] = [];
    let n = 0;
    const step = async () => {
      await trainStep(state, n++, 0); // train.ts's own step: micro-steps, schedules, MuonAdamW
      losses.push(await rt.item(state.lastLoss)); // as train.ts: one read per step
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
