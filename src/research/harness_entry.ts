/**
 * @file Entry of a sandboxed run with a step cap (`npm run experiment -- --max-steps N`): train.ts
 * is imported rather than started, and its exported `train(run)` runs with a run from src/harness.ts
 * that carries the cap. Without a cap the sandbox starts train.ts itself, exactly as `npm run train` does.
 */
import { startRun, type TrainRun } from '../harness.ts';
import { harnessMaxSteps } from './harness.ts';

const maxSteps = harnessMaxSteps();
const mod = (await import('../../train.ts')) as { train?: (run?: TrainRun) => Promise<unknown> };
if (typeof mod.train !== 'function') {
  console.error('--max-steps needs train.ts to export train(run); it exports no train function');
  process.exit(1);
}
try {
  await mod.train(await startRun({ maxSteps: maxSteps ?? undefined }));
  process.exit(0);
} catch (e) {
  console.error(`\n${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exit(1);
}
