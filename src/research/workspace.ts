/**
 * @file Where a run happens, and what travels to and from it. A run request is data (the train.ts
 * text, its commit, the protected-file hashes it must match, a seed); a run outcome is data (the
 * harness's val_bpb or why there is none, the log's tail, who ran it). Each executor slot (the
 * driver's inline slot, each worker) trains in its own workspace: a copy of the checkout's fixed
 * files (prepare.ts, program.md, src/, kernels/, package and ts config) with node_modules linked,
 * refreshed whenever its fixed files no longer match the checkout's (a hostile run that edited
 * them is undone before the next one). `runInWorkspace` is the one place that calls runExperiment.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { compareHashes, hashProtected, PROTECTED_PATHS } from './guard.ts';
import { runExperiment } from './experiment.ts';
import { guardFor } from './guard_cache.ts';
import { killOrphan, latestProgress, logTail } from './runner.ts';

export type RunKind = 'baseline' | 'first' | 'repair' | 'rerun' | 'confirm';

/** One training run, as it travels to a worker. */
export interface RunRequest {
  /** Unique per run of a research session; the queue's job id and the records' key. */
  runId: string;
  experiment: number;
  kind: RunKind;
  tag: string;
  commit: string;
  /** The commit it was made from (the best when it was proposed, or the new best of a replay). */
  parent: string;
  trainSource: string;
  /** hashProtected() of the driver's checkout: the worker's fixed files must match. */
  expectedHashes: Record<string, string>;
  /** dataHashes() pinned by the driver: the worker's tokenizer and validation data must match. */
  expectedDataHashes?: Record<string, string>;
  seed: number;
  timeBudgetS: number;
  startupAllowanceS: number;
}

/** What comes back from a run. */
export interface RunOutcome {
  runId: string;
  worker: string;
  ok: boolean;
  valBpb: number | null;
  peakVramMb: number | null;
  error: string | null;
  /** The run was refused before it started (guard, hashes). */
  rejected: string | null;
  timedOut: boolean;
  aborted: boolean;
  durationS: number;
  trainingSeconds: number | null;
  seed: number;
  /** The end of run.log (progress lines collapsed). */
  log: string;
}

export interface SlotOptions {
  /** The checkout whose fixed files are copied. */
  sourceDir: string;
  /** This slot's workspace. */
  workDir: string;
  worker: string;
  trainCommand: string;
  /** Adapter index for the training job (AUTORESEARCH_GPU_INDEX). */
  gpu?: number | null;
}

const PGID_FILE = 'training.pgid';

/** The train command a run uses when none is given (runExperiment's own, sandboxed path). */
export const DEFAULT_TRAIN_COMMAND = 'node --import tsx train.ts';

/** Copy the checkout's fixed files into `workDir` if they differ; link node_modules. */
export function syncWorkspace(sourceDir: string, workDir: string): void {
  mkdirSync(workDir, { recursive: true });
  const want = hashProtected(sourceDir);
  if (compareHashes(want, hashProtected(workDir)).length) {
    for (const p of PROTECTED_PATHS) {
      rmSync(join(workDir, p), { recursive: true, force: true });
      if (existsSync(join(sourceDir, p))) cpSync(join(sourceDir, p), join(workDir, p), { recursive: true });
    }
  }
  const modules = join(workDir, 'node_modules');
  if (!existsSync(modules) && existsSync(join(sourceDir, 'node_modules'))) symlinkSync(resolve(sourceDir, 'node_modules'), modules, 'dir');
}

/** Stop a training job a killed predecessor of this slot left running (its group id is on file). */
export function killSlotOrphan(workDir: string): boolean {
  const file = join(workDir, PGID_FILE);
  if (!existsSync(file)) return false;
  const pgid = Number(readFileSync(file, 'utf8'));
  rmSync(file, { force: true });
  return Number.isInteger(pgid) && pgid > 0 && killOrphan(pgid, workDir);
}

/** The environment a training job gets: no API credentials; the seed and adapter index added. */
export function trainingEnv(req: Pick<RunRequest, 'seed'>, gpu?: number | null): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ANTHROPIC_') && !k.startsWith('AUTORESEARCH_REDIS')) env[k] = v;
  env.AUTORESEARCH_SEED = String(req.seed);
  if (gpu !== null && gpu !== undefined) env.AUTORESEARCH_GPU_INDEX = String(gpu);
  return env;
}

/** Run one request in a slot's workspace; `onProgress` gets the log's latest progress line. */
export async function runInWorkspace(req: RunRequest, slot: SlotOptions, signal?: AbortSignal, onProgress?: (text: string) => void): Promise<RunOutcome> {
  syncWorkspace(slot.sourceDir, slot.workDir);
  const logPath = join(slot.workDir, 'run.log');
  const timer = onProgress ? setInterval(() => onProgress(latestProgress(logPath)), 1000) : null;
  try {
    // the workspace's train.ts is the run's (a stand-in trainer reads it from its working directory)
    writeFileSync(join(slot.workDir, 'train.ts'), req.trainSource);
    const before = hashProtected(slot.workDir);
    const res = await runExperiment({
      repoDir: slot.workDir, trainSource: req.trainSource, logPath, guard: guardFor(slot.workDir),
      // a command other than the default is a stand-in trainer, run as given
      trainCommand: slot.trainCommand === DEFAULT_TRAIN_COMMAND ? undefined : slot.trainCommand,
      timeBudgetS: req.timeBudgetS, startupAllowanceS: req.startupAllowanceS, expectedHashes: req.expectedHashes, expectedDataHashes: req.expectedDataHashes,
      env: trainingEnv(req, slot.gpu), signal, onStart: (pgid) => writeFileSync(join(slot.workDir, PGID_FILE), String(pgid)),
    });
    rmSync(join(slot.workDir, PGID_FILE), { force: true });
    // a run that changed what it must not (prepare.ts, src/, …) in its workspace gets no result
    const changed = res.rejected ? [] : compareHashes(before, hashProtected(slot.workDir));
    const r = changed.length ? { ...res, ok: false, valBpb: null, peakVramMb: null, error: `the run changed protected files (${changed.join(', ')}); its result is not trusted` } : res;
    return {
      runId: req.runId, worker: slot.worker, ok: r.ok, valBpb: r.valBpb, peakVramMb: r.peakVramMb, error: r.error, rejected: r.rejected,
      timedOut: r.timedOut, aborted: r.aborted, durationS: Number(r.durationS.toFixed(2)), trainingSeconds: r.trainingSeconds, seed: req.seed,
      log: r.rejected ? '' : logTail(logPath, 80).slice(-12_000),
    };
  } finally {
    if (timer) clearInterval(timer);
  }
}
