/**
 * @file Entry of a sandboxed run with a step cap (`npm run experiment -- --max-steps N`): train.ts
 * is imported rather than started, and its exported `train({ maxSteps })` runs. Without a cap the
 * sandbox starts train.ts itself, exactly as `npm run train` does.
 */
import { harnessMaxSteps } from './harness.ts';

const maxSteps = harnessMaxSteps();
const mod = (await import('../../train.ts')) as { train?: (o: { maxSteps?: number }) => Promise<unknown> };
if (typeof mod.train !== 'function') {
  console.error('--max-steps needs train.ts to export train({ maxSteps }); it exports no train function');
  process.exit(1);
}
try {
  await mod.train({ maxSteps: maxSteps ?? undefined });
  process.exit(0);
} catch (e) {
  console.error(`\n${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exit(1);
}
