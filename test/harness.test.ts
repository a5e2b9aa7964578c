/**
 * The harness around train.ts: a software adapter trains SOFTWARE_SIZES whatever train.ts asks
 * for, a test's sizes win over both, and the step limit comes from the options or
 * AUTORESEARCH_MAX_STEPS, the seed from the options or AUTORESEARCH_SEED (a bad value is an error that says so).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Tokenizer } from '../prepare.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { SOFTWARE_SIZES, startRun } from '../src/harness.ts';
import { RUN_SIZES } from '../train.ts';
import { testRuntime } from './setup.ts';

const rt = (await testRuntime()) as Runtime;
const tokenizer = { vocabSize: 512 } as Tokenizer; // startRun only hands it on
const quiet = { log: () => {} };
const saved = { steps: process.env.AUTORESEARCH_MAX_STEPS, seed: process.env.AUTORESEARCH_SEED };
afterEach(() => {
  if (saved.steps === undefined) delete process.env.AUTORESEARCH_MAX_STEPS;
  else process.env.AUTORESEARCH_MAX_STEPS = saved.steps;
  if (saved.seed === undefined) delete process.env.AUTORESEARCH_SEED;
  else process.env.AUTORESEARCH_SEED = saved.seed;
});

describe.skipIf(!rt)('startRun', () => {
  it("sizes a software adapter with SOFTWARE_SIZES (a GPU with train.ts's), and a test with its own", async () => {
    const expected = rt.gpu.info.software ? SOFTWARE_SIZES : RUN_SIZES;
    const run = await startRun({ runtime: rt, tokenizer, ...quiet });
    expect(run.sizes(RUN_SIZES)).toEqual(expected);
    const test = await startRun({ runtime: rt, tokenizer, sizes: { depth: 1, seqLen: 64 }, ...quiet });
    expect(test.sizes(RUN_SIZES)).toEqual({ ...expected, depth: 1, seqLen: 64 });
  });

  it('takes the step limit from the options, else AUTORESEARCH_MAX_STEPS, else none', async () => {
    delete process.env.AUTORESEARCH_MAX_STEPS;
    expect((await startRun({ runtime: rt, tokenizer, ...quiet })).maxSteps).toBe(Infinity);
    process.env.AUTORESEARCH_MAX_STEPS = '3';
    expect((await startRun({ runtime: rt, tokenizer, ...quiet })).maxSteps).toBe(3);
    expect((await startRun({ runtime: rt, tokenizer, maxSteps: 0, ...quiet })).maxSteps).toBe(0);
    process.env.AUTORESEARCH_MAX_STEPS = 'lots';
    await expect(startRun({ runtime: rt, tokenizer, ...quiet })).rejects.toThrow(/AUTORESEARCH_MAX_STEPS must be a whole number of steps, got 'lots'/);
  });

  it("takes the seed from the options, else AUTORESEARCH_SEED (the driver's per-run seed), else the reference's 42", async () => {
    delete process.env.AUTORESEARCH_SEED;
    expect((await startRun({ runtime: rt, tokenizer, ...quiet })).seed).toBe(42);
    process.env.AUTORESEARCH_SEED = '43';
    expect((await startRun({ runtime: rt, tokenizer, ...quiet })).seed).toBe(43);
    expect((await startRun({ runtime: rt, tokenizer, seed: 7, ...quiet })).seed).toBe(7);
    process.env.AUTORESEARCH_SEED = '-1';
    await expect(startRun({ runtime: rt, tokenizer, ...quiet })).rejects.toThrow(/AUTORESEARCH_SEED must be a whole number, got '-1'/);
  });
});
