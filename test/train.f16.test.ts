/**
 * Mixed precision end to end: train.ts's smoke configuration trained for 40 steps in f32 and in f16
 * (PRECISION) from the same initialisation and data; the f16 loss curve must stay within 1% of the
 * f32 one at every step. Needs shader-f16 (lavapipe 26.2); where the adapter lacks it the test is
 * skipped, except under AUTORESEARCH_REQUIRE_FEATURES=shader-f16 (CI's lavapipe run), where that is a failure.
 */
import { writeFileSync } from 'node:fs';
import { describe, expect, it, vi } from 'vitest';

// steps bound the runs, not TIME_BUDGET (as in the smoke test): a busy machine trains the same 40
// steps, and the schedules (which read elapsed time / TIME_BUDGET) are the same for both precisions
vi.mock('../prepare.ts', async (importOriginal) => ({ ...(await importOriginal<typeof import('../prepare.ts')>()), TIME_BUDGET: 1e9 }));
import { prepareData, trainTokenizer, type Tokenizer } from '../prepare.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { startRun } from '../src/harness.ts';
import { train } from '../train.ts';
import { TINY_SIZES, requireFeature, testRuntime, useTemporaryCache } from './setup.ts';

const rt = (await testRuntime()) as Runtime;
const hasF16 = requireFeature(rt, 'shader-f16');
useTemporaryCache('autoresearch-f16-');

const quiet = { log: () => {} };

/** Trains 40 steps and returns the loss printed at each step (the debiased EMA train.ts shows). */
async function lossCurve(tokenizer: Tokenizer, precision: 'f16' | 'f32'): Promise<{ losses: number[]; valBpb: number }> {
  const losses: number[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation(() => {});
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: unknown) => {
    const m = /step (\d+) .*?\| loss: ([\d.]+)/.exec(String(chunk));
    if (m) losses[Number(m[1])] = Number(m[2]);
    return true;
  });
  try {
    const summary = await train(await startRun({ runtime: rt, tokenizer, maxSteps: 40, sizes: TINY_SIZES, precision }));
    return { losses, valBpb: summary.val_bpb };
  } finally {
    log.mockRestore();
    write.mockRestore();
  }
}

describe.skipIf(!hasF16)('train.ts in f16 (PRECISION) against f32', () => {
  it('keeps the loss curve of 40 smoke-configuration steps within 1% of f32', { timeout: 0 }, async () => {
    await prepareData('embedded', quiet);
    const tokenizer = await trainTokenizer('embedded', { vocabSize: 512, ...quiet });
    const f32 = await lossCurve(tokenizer, 'f32');
    const f16 = await lossCurve(tokenizer, 'f16');
    expect(f32.losses.length).toBe(40);
    expect(f16.losses.length).toBe(40);
    const rel = f16.losses.map((l, i) => Math.abs(l - f32.losses[i]) / f32.losses[i]);
    const worst = Math.max(...rel);
    if (process.env.F16_CURVES) writeFileSync(process.env.F16_CURVES, JSON.stringify({ f32: f32.losses, f16: f16.losses }));
    console.log(`f16 vs f32 over 40 steps: worst relative loss difference ${(100 * worst).toFixed(3)}% (step ${rel.indexOf(worst)}); loss ${f32.losses[39]} vs ${f16.losses[39]}; val_bpb ${f32.valBpb.toFixed(4)} vs ${f16.valBpb.toFixed(4)}`);
    expect(worst).toBeLessThan(0.01);
    expect(f16.losses[39]).toBeLessThan(0.8 * f16.losses[0]); // it learns
    expect(Math.abs(f16.valBpb - f32.valBpb) / f32.valBpb).toBeLessThan(0.01);
  });
});
