/**
 * @file The research log, in two untracked files at the repo root. `results.tsv` is exactly the
 * reference's: a header and one row per experiment, `commit val_bpb memory_gb status
 * description` (keep / discard / crash; 0.000000 and 0.0 for crashes). `research.jsonl` holds
 * everything else, one JSON record per line: the session, the baseline and its noise floor,
 * each experiment's start (so a killed driver can tell an unevaluated commit) and its outcome
 * (parent, runs, duration, error excerpt, tokens, USD). Appends only; a half-written last line
 * (a kill mid-write) is skipped when read. `resumeState` rebuilds where a run stands from it.
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { TokenUsage } from './pricing.ts';

export type Status = 'keep' | 'discard' | 'crash';

export const RESULTS_HEADER = 'commit\tval_bpb\tmemory_gb\tstatus\tdescription';

export interface ResultRow {
  /** Short (7-character) commit hash. */
  commit: string;
  /** 0 for crashes. */
  valBpb: number;
  /** peak_vram_mb / 1024; 0 for crashes. */
  memoryGb: number;
  status: Status;
  description: string;
}

/** One results.tsv line (no newline), formatted as the reference: %.6f and %.1f. */
export function formatResultRow(r: ResultRow): string {
  const crashed = r.status === 'crash';
  const desc = r.description.replace(/[\t\r\n]+/g, ' ').trim();
  return [r.commit, (crashed ? 0 : r.valBpb).toFixed(6), (crashed ? 0 : r.memoryGb).toFixed(1), r.status, desc].join('\t');
}

/** Append a row, writing the header first if the file is new or empty. */
export function appendResult(path: string, row: ResultRow): void {
  const fresh = !existsSync(path) || readFileSync(path, 'utf8').trim() === '';
  if (fresh) writeFileSync(path, `${RESULTS_HEADER}\n`);
  appendFileSync(path, `${formatResultRow(row)}\n`);
}

/** Create results.tsv with just the header (a fresh run). */
export function initResults(path: string): void {
  writeFileSync(path, `${RESULTS_HEADER}\n`);
}

/** Rows of results.tsv (header skipped; malformed lines skipped). */
export function readResults(path: string): ResultRow[] {
  if (!existsSync(path)) return [];
  const rows: ResultRow[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.trim() === '' || line.startsWith('commit\t')) continue;
    const [commit, val, mem, status, ...rest] = line.split('\t');
    if (status !== 'keep' && status !== 'discard' && status !== 'crash') continue;
    rows.push({ commit, valBpb: Number(val), memoryGb: Number(mem), status, description: rest.join(' ') });
  }
  return rows;
}

// ---------------------------------------------------------------------------
// research.jsonl
// ---------------------------------------------------------------------------

/** One training run of a commit, as the result channel reported it. */
export interface RunRecord {
  val_bpb: number | null;
  peak_vram_mb: number | null;
  duration_s: number;
  /** null when it reported a result; otherwise why not (exit code, timeout, no result line). */
  error: string | null;
}

export interface SessionRecord {
  type: 'session';
  tag: string;
  branch: string;
  started_at: string;
  resumed: boolean;
  /** The commit the branch started from (the baseline). */
  base_commit: string;
  model: string;
  train_command: string;
  time_budget_s: number;
  /** sha256 of every protected file (path → hash) when the run was first started. */
  protected_hashes: Record<string, string>;
}

export interface BaselineRecord {
  type: 'baseline';
  experiment: 0;
  commit: string;
  runs: RunRecord[];
  /** Mean of the runs (null if the baseline crashed). */
  val_bpb: number | null;
  peak_vram_mb: number | null;
  /** |run1 − run2|, or the value given by --noise-floor. */
  noise_floor: number;
  status: 'keep' | 'crash';
  at: string;
}

export interface StartRecord {
  type: 'start';
  experiment: number;
  parent: string;
  commit: string;
  description: string;
  /** Process group of the training run (to stop an orphan after kill -9 of the driver). */
  pid: number | null;
  /** API usage of the experiment so far (counted on resume if the driver dies before the outcome). */
  tokens: TokenUsage | null;
  usd: number | null;
  at: string;
}

export interface ExperimentRecord {
  type: 'experiment';
  experiment: number;
  /** `invalid`: no usable proposal within the retry limit (not a results.tsv row). */
  status: Status | 'invalid';
  parent: string;
  commit: string | null;
  /** Every commit this experiment made (a repaired crash makes several), each kept under a ref. */
  attempts: string[];
  description: string;
  val_bpb: number | null;
  peak_vram_mb: number | null;
  runs: RunRecord[];
  best_before: number;
  duration_s: number;
  error_excerpt: string | null;
  /** A few words on why it crashed (appended to the results.tsv description). */
  crash_reason: string | null;
  rejected: { reason: string; description: string | null }[];
  repairs: number;
  tokens: TokenUsage;
  usd: number | null;
  ref: string | null;
  at: string;
}

export interface AbandonedRecord {
  type: 'abandoned';
  experiment: number;
  commit: string | null;
  reason: string;
  tokens: TokenUsage | null;
  usd: number | null;
  ref: string | null;
  at: string;
}

export interface StopRecord {
  type: 'stop';
  reason: string;
  at: string;
}

export type ResearchRecord = SessionRecord | BaselineRecord | StartRecord | ExperimentRecord | AbandonedRecord | StopRecord;

export function appendRecord(path: string, record: ResearchRecord): void {
  appendFileSync(path, `${JSON.stringify(record)}\n`);
}

/** Records of research.jsonl; lines that do not parse (a kill mid-write) are skipped. */
export function readRecords(path: string): ResearchRecord[] {
  if (!existsSync(path)) return [];
  const out: ResearchRecord[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    try {
      const r = JSON.parse(line) as ResearchRecord;
      if (r && typeof r === 'object' && typeof r.type === 'string') out.push(r);
    } catch {
      // a torn last line
    }
  }
  return out;
}

/** Where a research run stands, rebuilt from its records. */
export interface ResumeState {
  session: SessionRecord | null;
  baseline: BaselineRecord | null;
  /** Full hash of the commit to continue from (the last kept one). */
  bestCommit: string | null;
  bestValBpb: number | null;
  bestExperiment: number;
  noiseFloor: number | null;
  /** Experiment numbers finish or are abandoned; the next one is one past the largest seen. */
  nextExperiment: number;
  /** Experiments with an outcome row (keep/discard/crash). */
  completed: ExperimentRecord[];
  /** A start record without an outcome: the driver died while that commit was unevaluated. */
  unfinished: StartRecord | null;
  usd: number;
  usdKnown: boolean;
  tokens: TokenUsage;
}

export function resumeState(records: readonly ResearchRecord[]): ResumeState {
  const state: ResumeState = {
    session: null, baseline: null, bestCommit: null, bestValBpb: null, bestExperiment: 0, noiseFloor: null,
    nextExperiment: 1, completed: [], unfinished: null, usd: 0, usdKnown: true,
    tokens: { input: 0, output: 0, cacheCreation: 0, cacheRead: 0 },
  };
  const finished = new Set<number>();
  let lastStart: StartRecord | null = null;
  const addCost = (usd: number | null, tokens: TokenUsage | null) => {
    if (!tokens) return;
    if (usd === null) state.usdKnown = state.usdKnown && tokens.input + tokens.output === 0;
    else state.usd += usd;
    state.tokens = {
      input: state.tokens.input + tokens.input, output: state.tokens.output + tokens.output,
      cacheCreation: state.tokens.cacheCreation + tokens.cacheCreation, cacheRead: state.tokens.cacheRead + tokens.cacheRead,
    };
  };
  for (const r of records) {
    switch (r.type) {
      case 'session':
        state.session ??= r; // the first session holds the base commit and the protected hashes
        if (!state.bestCommit) state.bestCommit = r.base_commit;
        break;
      case 'baseline':
        if (r.status === 'keep' && r.val_bpb !== null) {
          state.baseline = r;
          state.bestCommit = r.commit;
          state.bestValBpb = r.val_bpb;
          state.bestExperiment = 0;
          state.noiseFloor = r.noise_floor;
        }
        break;
      case 'start':
        lastStart = r;
        state.nextExperiment = Math.max(state.nextExperiment, r.experiment + 1);
        break;
      case 'experiment':
        finished.add(r.experiment);
        state.nextExperiment = Math.max(state.nextExperiment, r.experiment + 1);
        addCost(r.usd, r.tokens);
        if (r.status !== 'invalid') state.completed.push(r);
        if (r.status === 'keep' && r.commit && r.val_bpb !== null) {
          state.bestCommit = r.commit;
          state.bestValBpb = r.val_bpb;
          state.bestExperiment = r.experiment;
        }
        break;
      case 'abandoned':
        finished.add(r.experiment);
        state.nextExperiment = Math.max(state.nextExperiment, r.experiment + 1);
        addCost(r.usd, r.tokens);
        break;
      case 'stop':
        break;
    }
  }
  if (lastStart && !finished.has(lastStart.experiment)) state.unfinished = lastStart;
  return state;
}

/** The results.tsv row an experiment record stands for (used to repair a row lost to a kill). */
export function rowFromRecord(r: ExperimentRecord | BaselineRecord, shortHash: (full: string) => string): ResultRow | null {
  if (r.type === 'baseline') {
    if (r.val_bpb === null) return null;
    return { commit: shortHash(r.commit), valBpb: r.val_bpb, memoryGb: (r.peak_vram_mb ?? 0) / 1024, status: 'keep', description: 'baseline' };
  }
  if (r.status === 'invalid' || !r.commit) return null;
  const description = r.status === 'crash' && r.crash_reason ? `${r.description} (${r.crash_reason})` : r.description;
  return { commit: shortHash(r.commit), valBpb: r.val_bpb ?? 0, memoryGb: (r.peak_vram_mb ?? 0) / 1024, status: r.status, description };
}
