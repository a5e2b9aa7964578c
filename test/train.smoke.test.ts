/**
 * End to end on the software adapter: prepare the embedded corpus into a temporary cache, train a
 * small tokenizer, then train train.ts's tiny configuration for a fixed number of steps and check
 * that validation bpb falls clearly below the initialised model's, and that the summary block
 * parses the way program.md greps it. The run is bounded by its step count alone: TIME_BUDGET is
 * made unreachable here, so a slow or busy machine trains the same 40 steps (it would otherwise stop
 * after step 10 once 300 s had passed), and the bounded work has no test timeout.
 */
import { describe, expect, it, vi } from 'vitest';

// the training loop reads TIME_BUDGET from prepare.ts: make it unreachable (steps bound the run)
vi.mock('../prepare.ts', async (importOriginal) => ({ ...(await importOriginal<typeof import('../prepare.ts')>()), TIME_BUDGET: 1e9 }));
import { prepareData, trainTokenizer, type Tokenizer } from '../prepare.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { startRun } from '../src/harness.ts';
import { train } from '../train.ts';
import { TINY_SIZES, testRuntime, useTemporaryCache } from './setup.ts';

const rt = (await testRuntime()) as Runtime;
useTemporaryCache('autoresearch-smoke-');

const quiet = { log: () => {} };

describe.skipIf(!rt)('train.ts end to end (tiny config, embedded corpus)', () => {
  let tokenizer: Tokenizer;

  it('prepares the embedded corpus and a small tokenizer in a fresh cache', { timeout: 0 }, async () => {
    await prepareData('embedded', quiet);
    tokenizer = await trainTokenizer('embedded', { vocabSize: 512, ...quiet });
    expect(tokenizer.vocabSize).toBe(512);
  });

  it('lowers validation bpb clearly below its value at initialisation, and prints a parseable summary', { timeout: 0 }, async () => {
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void lines.push(args.join(' ')));
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      const initial = await train(await startRun({ runtime: rt, tokenizer, maxSteps: 0, sizes: TINY_SIZES }));
      lines.length = 0;
      const trained = await train(await startRun({ runtime: rt, tokenizer, maxSteps: 40, sizes: TINY_SIZES }));
      expect(initial.val_bpb).toBeGreaterThan(0);
      expect(trained.val_bpb).toBeLessThan(0.85 * initial.val_bpb);
      expect(trained.num_steps).toBe(40);
      // program.md's parser: grep "^val_bpb:" and "^peak_vram_mb:"
      const valLine = lines.find((l) => /^val_bpb:/.test(l));
      const memLine = lines.find((l) => /^peak_vram_mb:/.test(l));
      expect(Number(valLine?.split(/\s+/)[1])).toBeCloseTo(trained.val_bpb, 5);
      expect(Number(memLine?.split(/\s+/)[1])).toBeGreaterThan(0);
      expect(lines).toContain('---');
      for (const key of ['training_seconds', 'total_seconds', 'mfu_percent', 'total_tokens_M', 'num_steps', 'num_params_M', 'depth']) {
        expect(lines.some((l) => l.startsWith(`${key}:`)), key).toBe(true);
      }
    } finally {
      spy.mockRestore();
      write.mockRestore();
    }
  });
});
