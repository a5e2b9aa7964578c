/**
 * @file The research log, in two untracked files at the repo root. `results.tsv` is exactly the
 * reference's: a header and one row per experiment, `commit val_bpb memory_gb status
 * description` (keep / discard / crash; 0.000000 and 0.0 for crashes). `research.jsonl` holds
 * everything else, one JSON record per line: the session, the baseline and its noise floor,
 * each experiment's start (so a killed driver can tell an unevaluated commit) and its outcome
 * (parent, runs, duration, error excerpt, tokens, USD). Appends only; a half-written last line
 * (a kill mid-write) is skipped when read.
 *
 * The driver's state is these records: each change appends one record, and `applyRecord` is the
 * one function that turns records into state, live (the driver applies each record it appends)
 * and on --resume (`resumeState` folds the file), so the two cannot disagree. Run results are
 * keyed by run id and outcomes by experiment number: a result delivered twice (the queue is
 * at-least-once) changes nothing the second time. results.tsv is rendered from the state:
 * rows in experiment order, up to the first experiment still in flight.
 */
import { appendFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
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
  /** Which run (the queue's job id), who ran it, with which seed, of which commit. */
  run_id?: string;
  worker?: string;
  seed?: number;
  kind?: string;
  commit?: string;
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
  /** Tokenizer and validation-data hashes at the start (absent in records of older sessions). */
  data_hashes?: Record<string, string>;
  /** Prefix of this research session's run ids (job ids on the queue). */
  run_id?: string;
  /** Where runs go: 'inline', or the queue's address. */
  executor?: string;
}

export interface BaselineRecord {
  type: 'baseline';
  experiment: 0;
  commit: string;
  runs: RunRecord[];
  /** Mean of the runs (null if the baseline crashed). */
  val_bpb: number | null;
  peak_vram_mb: number | null;
  /** max(standard deviation of the runs, the minimum floor), or the value given by --noise-floor. */
  noise_floor: number;
  /** Standard deviation of the baseline runs (null with fewer than 2). */
  noise_std?: number | null;
  status: 'keep' | 'crash';
  at: string;
}

export interface StartRecord {
  type: 'start';
  experiment: number;
  parent: string;
  commit: string;
  description: string;
  /** Process group of the training run (inline runs before the executors; kept for old logs). */
  pid: number | null;
  /** API usage of the experiment so far (counted on resume if the driver dies before the outcome). */
  tokens: TokenUsage | null;
  usd: number | null;
  at: string;
}

/** An experiment number was taken: the model is being asked for a proposal from `parent`. */
export interface ProposeRecord {
  type: 'propose';
  experiment: number;
  parent: string;
  at: string;
}

/** A run was handed to the executor (queued); its result comes as a `run` record. */
export interface DispatchRecord {
  type: 'dispatch';
  run_id: string;
  experiment: number;
  kind: string;
  commit: string;
  seed: number;
  at: string;
}

/** A run's result, recorded once per run id. */
export interface RunResultRecord extends RunRecord {
  type: 'run';
  run_id: string;
  experiment: number;
  at: string;
}

/** A win whose base was superseded, re-applied onto the new best to be confirmed there. */
export interface ReplayRecord {
  type: 'replay';
  experiment: number;
  /** The experiment's commit and the parent it started from. */
  from_commit: string;
  from_parent: string;
  /** The new best it was re-applied onto, and the resulting commit. */
  parent: string;
  commit: string;
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
  /** The bar (mean val_bpb of the best) it was judged against, and why it was kept or not. */
  bar?: number;
  decision?: string;
  /** Set when the experiment was replayed onto a newer best: its original commit. */
  replayed_from?: string | null;
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

export type ResearchRecord = SessionRecord | BaselineRecord | ProposeRecord | StartRecord | DispatchRecord | RunResultRecord | ReplayRecord | ExperimentRecord | AbandonedRecord | StopRecord;

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

/** An experiment that has started (a commit exists) and has no outcome yet. */
export interface InFlight {
  experiment: number;
  /** The commit its runs are of now (a repair or a replay replaces the first); '' while proposing. */
  commit: string;
  parent: string;
  description: string;
  /** The first attempt's parent (the best when it was proposed). */
  firstParent: string;
  attempts: string[];
  /** Results recorded so far, in order, of every commit of this experiment. */
  runs: RunResultRecord[];
  /** Runs handed out with no result yet. */
  pending: DispatchRecord[];
  replay: ReplayRecord | null;
  tokens: TokenUsage | null;
  usd: number | null;
  startedAt: string;
}

/** Where a research run stands, computed from its records by `applyRecord`. */
export interface ResumeState {
  session: SessionRecord | null;
  baseline: BaselineRecord | null;
  /** Baseline runs recorded before the baseline's outcome (a resumed baseline keeps them). */
  baselineRuns: RunResultRecord[];
  baselinePending: DispatchRecord[];
  /** Full hash of the commit to continue from (the last kept one). */
  bestCommit: string | null;
  /** The bar: mean val_bpb of the best commit's runs. */
  bestValBpb: number | null;
  bestExperiment: number;
  noiseFloor: number | null;
  /** Experiment numbers finish or are abandoned; the next one is one past the largest seen. */
  nextExperiment: number;
  /** Experiments with an outcome row (keep/discard/crash), in the order they finished. */
  completed: ExperimentRecord[];
  /** Experiment numbers with any outcome (keep/discard/crash/invalid/abandoned). */
  finished: Set<number>;
  inFlight: Map<number, InFlight>;
  /** The last start record without an outcome (old single-run logs). */
  unfinished: StartRecord | null;
  /** Run ids with a recorded result. */
  runIds: Set<string>;
  usd: number;
  usdKnown: boolean;
  tokens: TokenUsage;
}

export function emptyState(): ResumeState {
  return {
    session: null, baseline: null, baselineRuns: [], baselinePending: [], bestCommit: null, bestValBpb: null, bestExperiment: 0, noiseFloor: null,
    nextExperiment: 1, completed: [], finished: new Set(), inFlight: new Map(), unfinished: null, runIds: new Set(), usd: 0, usdKnown: true,
    tokens: { input: 0, output: 0, cacheCreation: 0, cacheRead: 0 },
  };
}

function addCost(state: ResumeState, usd: number | null, tokens: TokenUsage | null): void {
  if (!tokens) return;
  if (usd === null) state.usdKnown = state.usdKnown && tokens.input + tokens.output === 0;
  else state.usd += usd;
  state.tokens = {
    input: state.tokens.input + tokens.input, output: state.tokens.output + tokens.output,
    cacheCreation: state.tokens.cacheCreation + tokens.cacheCreation, cacheRead: state.tokens.cacheRead + tokens.cacheRead,
  };
}

/** The one state transition: apply a record to the state (mutates and returns it). */
export function applyRecord(state: ResumeState, r: ResearchRecord): ResumeState {
  const seen = (n: number) => {
    state.nextExperiment = Math.max(state.nextExperiment, n + 1);
  };
  switch (r.type) {
    case 'session':
      state.session ??= r; // the first session holds the base commit and the protected hashes
      if (!state.bestCommit) state.bestCommit = r.base_commit;
      break;
    case 'baseline':
      state.baselinePending = [];
      if (r.status === 'keep' && r.val_bpb !== null) {
        state.baseline = r;
        state.bestCommit = r.commit;
        state.bestValBpb = r.val_bpb;
        state.bestExperiment = 0;
        state.noiseFloor = r.noise_floor;
      }
      break;
    case 'propose':
      seen(r.experiment);
      if (state.finished.has(r.experiment) || state.inFlight.has(r.experiment)) break;
      state.inFlight.set(r.experiment, {
        experiment: r.experiment, commit: '', parent: r.parent, firstParent: r.parent, description: '', attempts: [],
        runs: [], pending: [], replay: null, tokens: null, usd: null, startedAt: r.at,
      });
      break;
    case 'start': {
      seen(r.experiment);
      if (state.finished.has(r.experiment)) break;
      state.unfinished = r;
      const f = state.inFlight.get(r.experiment);
      if (f) {
        f.description = r.description;
        f.commit = r.commit;
        f.parent = r.parent;
        f.attempts.push(r.commit);
        f.tokens = r.tokens;
        f.usd = r.usd;
      } else {
        state.inFlight.set(r.experiment, {
          experiment: r.experiment, commit: r.commit, parent: r.parent, firstParent: r.parent, description: r.description, attempts: [r.commit],
          runs: [], pending: [], replay: null, tokens: r.tokens, usd: r.usd, startedAt: r.at,
        });
      }
      break;
    }
    case 'dispatch': {
      if (state.runIds.has(r.run_id)) break;
      if (r.experiment === 0) {
        if (!state.baselinePending.some((d) => d.run_id === r.run_id)) state.baselinePending.push(r);
        break;
      }
      const f = state.inFlight.get(r.experiment);
      if (f && !f.pending.some((d) => d.run_id === r.run_id)) f.pending.push(r);
      break;
    }
    case 'run': {
      if (state.runIds.has(r.run_id)) break; // delivered twice: recorded once
      state.runIds.add(r.run_id);
      if (r.experiment === 0) {
        state.baselineRuns.push(r);
        state.baselinePending = state.baselinePending.filter((d) => d.run_id !== r.run_id);
        break;
      }
      const f = state.inFlight.get(r.experiment);
      if (f) {
        f.runs.push(r);
        f.pending = f.pending.filter((d) => d.run_id !== r.run_id);
      }
      break;
    }
    case 'replay': {
      const f = state.inFlight.get(r.experiment);
      if (f) {
        f.replay = r;
        f.commit = r.commit;
        f.parent = r.parent;
      }
      break;
    }
    case 'experiment':
      seen(r.experiment);
      if (state.finished.has(r.experiment)) break; // an outcome is recorded once
      state.finished.add(r.experiment);
      state.inFlight.delete(r.experiment);
      if (state.unfinished?.experiment === r.experiment) state.unfinished = null;
      addCost(state, r.usd, r.tokens);
      if (r.status !== 'invalid') state.completed.push(r);
      if (r.status === 'keep' && r.commit && r.val_bpb !== null) {
        state.bestCommit = r.commit;
        state.bestValBpb = r.val_bpb;
        state.bestExperiment = r.experiment;
      }
      break;
    case 'abandoned':
      seen(r.experiment);
      if (state.finished.has(r.experiment)) break;
      state.finished.add(r.experiment);
      state.inFlight.delete(r.experiment);
      if (state.unfinished?.experiment === r.experiment) state.unfinished = null;
      addCost(state, r.usd, r.tokens);
      break;
    case 'stop':
      break;
  }
  return state;
}

/** The state a list of records stands for (what --resume continues from). */
export function resumeState(records: readonly ResearchRecord[]): ResumeState {
  return records.reduce(applyRecord, emptyState());
}

/** The results.tsv row an experiment record stands for (used to repair a row lost to a kill). */
export function rowFromRecord(r: ExperimentRecord | BaselineRecord, shortHash: (full: string) => string = (c) => c.slice(0, 7)): ResultRow | null {
  if (r.type === 'baseline') {
    if (r.val_bpb === null) return null;
    return { commit: shortHash(r.commit), valBpb: r.val_bpb, memoryGb: (r.peak_vram_mb ?? 0) / 1024, status: 'keep', description: 'baseline' };
  }
  if (r.status === 'invalid' || !r.commit) return null;
  const description = r.status === 'crash' && r.crash_reason ? `${r.description} (${r.crash_reason})` : r.description;
  return { commit: shortHash(r.commit), valBpb: r.val_bpb ?? 0, memoryGb: (r.peak_vram_mb ?? 0) / 1024, status: r.status, description };
}

/**
 * results.tsv's rows for a state: the baseline, then experiments in number order up to the first
 * one still in flight (so the file only ever grows at its end, and is complete once none is).
 */
export function resultRows(state: ResumeState): ResultRow[] {
  const rows: ResultRow[] = [];
  const base = state.baseline ? rowFromRecord(state.baseline) : null;
  if (!base) return rows;
  rows.push(base);
  const byNumber = new Map(state.completed.map((r) => [r.experiment, r]));
  const blocked = state.inFlight.size ? Math.min(...state.inFlight.keys()) : Infinity;
  const last = Math.max(0, ...state.finished);
  for (let n = 1; n <= last && n < blocked; n++) {
    const r = byNumber.get(n);
    const row = r ? rowFromRecord(r) : null;
    if (row) rows.push(row);
  }
  return rows;
}

/** Write results.tsv (atomically) for a state. */
export function writeResults(path: string, state: ResumeState): void {
  const text = `${RESULTS_HEADER}\n${resultRows(state).map((r) => `${formatResultRow(r)}\n`).join('')}`;
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}
