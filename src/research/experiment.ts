/**
 * @file One experiment run, the same way for the driver, workers and `npm run experiment`:
 * guard the train.ts text, check the protected files against the hashes the run must match,
 * write train.ts into the checkout, run the train command there (its own process group; the
 * result arrives on descriptor 3) and check the protected files again afterwards.
 *
 * This is the minimal version extracted from the driver (guard + hash check + runTraining);
 * the sandboxed one replaces it with the same signature.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { compareHashes, hashProtected } from './guard.ts';
import { guardFor } from './guard_cache.ts';
import { runTraining, type RunResult } from './runner.ts';

export interface ExperimentSpec {
  /** Project checkout whose fixed files are used (train.ts there is overwritten with trainSource). */
  repoDir: string;
  /** The train.ts text to run (guarded before running). */
  trainSource: string;
  /** run.log for this experiment. */
  logPath: string;
  /** Override the trainer (tests use a stand-in). */
  trainCommand?: string;
  /** Default: TIME_BUDGET read from the caller (300 s). */
  timeBudgetS?: number;
  startupAllowanceS?: number;
  /** Quick checks and tests. */
  maxSteps?: number;
  /** Protected-file hashes (hashProtected) the run must match. */
  expectedHashes?: Record<string, string>;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  onStart?: (pgid: number) => void;
}

export interface ExperimentResult extends RunResult {
  /** Guard or hash-check refusal (nothing was run), else null. */
  rejected: string | null;
  /** Measured by the harness (the summary block's training_seconds), when it printed one. */
  trainingSeconds: number | null;
  numSteps: number | null;
}

export const DEFAULT_TRAIN_COMMAND = 'node --import tsx train.ts';
const TRAIN_FILE = 'train.ts';

function refused(reason: string): ExperimentResult {
  return {
    ok: false, valBpb: null, peakVramMb: null, error: reason, exitCode: null, signal: null, timedOut: false, aborted: false, durationS: 0,
    rejected: reason, trainingSeconds: null, numSteps: null,
  };
}

function summaryNumber(log: string, key: string): number | null {
  const m = new RegExp(`^${key}:\\s+([\\d.]+)`, 'm').exec(log);
  return m ? Number(m[1]) : null;
}

export async function runExperiment(spec: ExperimentSpec): Promise<ExperimentResult> {
  const repoDir = resolve(spec.repoDir);
  const report = guardFor(repoDir, TRAIN_FILE).check(spec.trainSource);
  if (!report.ok) return refused(`the guard rejected train.ts:\n${report.problems.join('\n')}`);
  if (spec.expectedHashes) {
    const changed = compareHashes(spec.expectedHashes, hashProtected(repoDir));
    if (changed.length) return refused(`protected files differ from the ones the experiment expects (${changed.join(', ')}): this checkout's prepare.ts, src/ or kernels/ are not the driver's`);
  }
  writeFileSync(join(repoDir, TRAIN_FILE), spec.trainSource);
  const timeBudgetS = spec.timeBudgetS ?? 300;
  const env = { ...(spec.env ?? process.env) };
  if (spec.maxSteps !== undefined) env.AUTORESEARCH_MAX_STEPS = String(spec.maxSteps);
  const before = spec.expectedHashes ?? hashProtected(repoDir);
  const result = await runTraining({
    command: spec.trainCommand ?? DEFAULT_TRAIN_COMMAND, repoDir, logPath: spec.logPath,
    timeoutS: 2 * timeBudgetS + (spec.startupAllowanceS ?? 120), env, signal: spec.signal, onStart: spec.onStart,
  });
  let log = '';
  try {
    log = readFileSync(spec.logPath, 'utf8').slice(-16_384);
  } catch {
    // no log: the numbers stay null
  }
  const out: ExperimentResult = { ...result, rejected: null, trainingSeconds: summaryNumber(log, 'training_seconds'), numSteps: summaryNumber(log, 'num_steps') };
  // A run that changed what it must not (prepare.ts, src/, …) gets no result.
  const changed = compareHashes(before, hashProtected(repoDir));
  if (changed.length) return { ...out, ok: false, valBpb: null, peakVramMb: null, error: `the run changed protected files (${changed.join(', ')}); its result is not trusted` };
  return out;
}
