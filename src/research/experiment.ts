/**
 * @file One code path for every experiment (the driver, `npm run experiment`, workers):
 * guard → protected-file hash check → data hash check → build → sandboxed run → the harness's
 * signed val_bpb. See sandbox.ts for what the sandbox allows and harness.ts for the metric.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { cacheDir, EVAL_TOKENS, MAX_SEQ_LEN, readManifest, splitParts, TIME_BUDGET, Tokenizer, tokenizerDir, dataDir, SOFTWARE_EVAL_TOKENS } from '../../prepare.ts';
import { BatchStream } from '../data/loader.ts';
import { SWIFTSHADER_ICD_PATHS } from '../gpu/device.ts';
import { compareHashes, hashProtected, TrainGuard } from './guard.ts';
import { runTraining, type RunResult } from './runner.ts';
import { buildProject, makeSandboxDirs, removeSandbox, sandboxArgv, sandboxEnv, sandboxPaths } from './sandbox.ts';

export interface ExperimentSpec {
  repoDir: string; // project checkout whose fixed files are used
  trainSource: string; // the train.ts text to run (guarded before running)
  logPath: string; // run.log for this experiment
  trainCommand?: string; // override the trainer (tests use a stand-in): runs unsandboxed, unsigned
  timeBudgetS?: number; // default TIME_BUDGET
  startupAllowanceS?: number;
  maxSteps?: number; // quick checks and tests
  expectedHashes?: Record<string, string>; // protected-file hashes (hashProtected) the run must match
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  onStart?: (pgid: number) => void;
  /** Hashes of the tokenizer and validation files (dataHashes) the run must match. */
  expectedDataHashes?: Record<string, string>;
  /** Seconds beyond the budget the harness tolerates, counted from its start (default 120: start-up, compilation, the uncounted first steps, the last step). */
  trainingAllowanceS?: number;
  /** Evaluation size overrides, from the trusted side only (tests): rows scored and their length. */
  evalRows?: number;
  evalSeqLen?: number;
  /** A guard shared across experiments (its parsed project is reused). */
  guard?: Pick<TrainGuard, 'check'>;
  /** Keep the build and scratch folders (debugging). */
  keepSandbox?: boolean;
}

export interface ExperimentResult extends RunResult {
  rejected: string | null; // guard or hash-check refusal (nothing was run), else null
  trainingSeconds: number | null; // measured by the harness
  numSteps: number | null;
  /** The sandbox's warning (no network namespace on this machine), else null. */
  warning?: string | null;
}

const DEFAULT_TRAINING_ALLOWANCE_S = 120;
const DEFAULT_STARTUP_ALLOWANCE_S = 120;

function rejected(why: string): ExperimentResult {
  return { ok: false, valBpb: null, peakVramMb: null, error: why, exitCode: null, signal: null, timedOut: false, aborted: false, durationS: 0, rejected: why, trainingSeconds: null, numSteps: null };
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** sha256 of the tokenizer files and the validation split the metric uses. */
export function dataHashes(dataset?: string): Record<string, string> {
  const out: Record<string, string> = {};
  const tok = tokenizerDir();
  for (const f of ['tokenizer.json', 'token_bytes.json']) if (existsSync(join(tok, f))) out[`tokenizer/${f}`] = sha256File(join(tok, f));
  const ds = dataset ?? Tokenizer.load().dataset ?? 'embedded';
  for (const part of splitParts(dataDir(ds), 'val')) out[`val/${part.file}:${part.rowStart ?? 0}-${part.rowEnd ?? ''}`] = sha256File(part.file);
  return out;
}

interface EvalData {
  key: string;
  rows: Int32Array; // rowCount × (T + 1)
  rowCount: number;
  tokenBytes: number[];
  vocabSize: number;
}
let evalCache: EvalData | null = null;

/** The validation rows, tokenized and packed as evaluation packs them (cached per data and size). */
async function evalData(tokenizer: Tokenizer, T: number, maxRows: number, hashes: Record<string, string>): Promise<EvalData> {
  const key = `${JSON.stringify(hashes)}|${T}|${maxRows}`;
  if (evalCache?.key === key) return evalCache;
  const parts = splitParts(dataDir(tokenizer.dataset || 'embedded'), 'val');
  const chunk = 64;
  const stream = new BatchStream({ parts, merges: tokenizer.merges as [number, number][], pattern: tokenizer.pattern, bosTokenId: tokenizer.bosTokenId, B: chunk, T, loop: false, maxRows });
  const W = T + 1;
  const out: Int32Array[] = [];
  let count = 0;
  try {
    for (;;) {
      const b = await stream.next();
      if (!b) break;
      const rows = new Int32Array(b.rows * W);
      for (let r = 0; r < b.rows; r++) {
        rows.set(b.data.subarray(r * T, (r + 1) * T), r * W);
        rows[r * W + T] = b.data[(b.rows + r) * T + T - 1];
      }
      out.push(rows);
      count += b.rows;
    }
  } finally {
    await stream.close();
  }
  if (count === 0) throw new Error('the validation split is too small to fill a single evaluation row');
  const rows = new Int32Array(count * W);
  let at = 0;
  for (const r of out) {
    rows.set(r, at);
    at += r.length;
  }
  evalCache = { key, rows, rowCount: count, tokenBytes: Array.from(tokenizer.tokenBytes), vocabSize: tokenizer.vocabSize };
  return evalCache;
}

/** The last `num_steps:` train.ts printed (its own figure, for the record). */
function stepsFromLog(logPath: string): number | null {
  if (!existsSync(logPath)) return null;
  const m = /^num_steps:\s+(\d+)/m.exec(readFileSync(logPath, 'utf8').slice(-8192));
  return m ? Number(m[1]) : null;
}

/** Run one experiment the way the driver does. Never throws for a bad train.ts: that is a result. */
export async function runExperiment(spec: ExperimentSpec): Promise<ExperimentResult> {
  const repoDir = resolve(spec.repoDir);
  const guard = spec.guard ?? new TrainGuard({ repoDir });
  const tg = performance.now();
  const report = guard.check(spec.trainSource);
  if (process.env.AUTORESEARCH_TIMING) console.error(`guard: ${((performance.now() - tg) / 1000).toFixed(1)} s`);
  if (!report.ok) return rejected(`the guard rejected train.ts:\n${report.problems.join('\n')}`);
  if (spec.expectedHashes) {
    const diffs = compareHashes(spec.expectedHashes, hashProtected(repoDir));
    if (diffs.length) return rejected(`protected files changed: ${diffs.join(', ')}`);
  }
  const timeBudgetS = spec.timeBudgetS ?? TIME_BUDGET;
  const startupAllowanceS = spec.startupAllowanceS ?? DEFAULT_STARTUP_ALLOWANCE_S;
  const timeoutS = 2 * timeBudgetS + startupAllowanceS;

  if (spec.trainCommand) {
    // a stand-in trainer (tests of the driver): no sandbox, the old unsigned channel
    const r = await runTraining({ command: spec.trainCommand, repoDir, logPath: spec.logPath, timeoutS, env: spec.env, signal: spec.signal, onStart: spec.onStart });
    return { ...r, rejected: null, trainingSeconds: null, numSteps: stepsFromLog(spec.logPath) };
  }

  const envCacheDir = spec.env?.AUTORESEARCH_CACHE;
  const savedCache = process.env.AUTORESEARCH_CACHE;
  if (envCacheDir !== undefined) process.env.AUTORESEARCH_CACHE = envCacheDir;
  let tokenizer: Tokenizer;
  let hashes: Record<string, string>;
  let data: EvalData;
  const T = spec.evalSeqLen ?? MAX_SEQ_LEN;
  const gpuRows = spec.evalRows ?? Math.floor(EVAL_TOKENS / T);
  const softwareRows = spec.evalRows ?? Math.floor(SOFTWARE_EVAL_TOKENS / T);
  let readPaths: string[];
  try {
    tokenizer = Tokenizer.load();
    hashes = dataHashes(tokenizer.dataset || 'embedded');
    if (spec.expectedDataHashes) {
      const diffs = compareHashes(spec.expectedDataHashes, hashes);
      if (diffs.length) return rejected(`the tokenizer or validation data changed: ${diffs.join(', ')}`);
    }
    data = await evalData(tokenizer, T, gpuRows, hashes);
    const ds = dataDir(tokenizer.dataset || 'embedded');
    const manifest = readManifest(ds) ? [join(ds, 'manifest.json')] : [];
    // the runtime looks for Chromium's SwiftShader ICD; the Vulkan loader reads its own files natively
    readPaths = [tokenizerDir(), ...manifest, ...splitParts(ds, 'train').map((p) => p.file), ...SWIFTSHADER_ICD_PATHS];
  } catch (e) {
    return rejected(`the data is not ready (${(e as Error).message}); run: npm run prepare`);
  } finally {
    if (envCacheDir !== undefined) {
      if (savedCache === undefined) delete process.env.AUTORESEARCH_CACHE;
      else process.env.AUTORESEARCH_CACHE = savedCache;
    }
  }

  const paths = sandboxPaths(mkdtempSync(join(tmpdir(), 'autoresearch-run-')));
  try {
    buildProject({ repoDir, trainSource: spec.trainSource, outDir: paths.build });
    makeSandboxDirs(paths);
    const { argv, warning } = sandboxArgv({ paths, repoDir, readPaths, entry: 'train.js' });
    if (warning) console.error(warning);
    const key = randomBytes(32).toString('hex');
    const header = Buffer.from(JSON.stringify({
      key, resultFd: 3, seqLen: T, rowCount: data.rowCount, softwareRows, vocabSize: data.vocabSize, tokenBytes: data.tokenBytes,
      timeBudgetS, allowanceS: spec.trainingAllowanceS ?? DEFAULT_TRAINING_ALLOWANCE_S,
      seed: randomBytes(16).toString('hex'),
    }));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(header.length);
    const body = Buffer.from(data.rows.buffer, data.rows.byteOffset, data.rows.byteLength);
    const env = sandboxEnv(spec.env ?? process.env, paths.scratch);
    const cache = (spec.env ?? process.env).AUTORESEARCH_CACHE;
    if (cache) env.AUTORESEARCH_CACHE = cache;
    else env.AUTORESEARCH_CACHE = cacheDir(); // HOME moves to the scratch folder: keep the real cache
    // the step cap of a quick check (src/harness.ts's startRun reads it); never inherited from the parent
    if (spec.maxSteps !== undefined) env.AUTORESEARCH_MAX_STEPS = String(spec.maxSteps);
    const r = await runTraining({
      command: argv.join(' '), argv, repoDir: paths.build, logPath: spec.logPath, timeoutS, env,
      signal: spec.signal, onStart: spec.onStart, setupData: Buffer.concat([len, header, body]), resultKey: key,
    });
    return { ...r, rejected: null, trainingSeconds: r.harnessTrainingS ?? null, numSteps: stepsFromLog(spec.logPath), warning };
  } finally {
    if (!spec.keepSandbox) removeSandbox(paths);
  }
}
