/**
 * @file The research loop behind `npm run research`. On branch `autoresearch/<tag>` it runs the
 * unmodified baseline (twice, to measure the noise floor), then repeats: ask Claude for one
 * experiment (agent.ts), apply and guard it (edits.ts, guard.ts), commit train.ts, run training
 * (runner.ts) and read val_bpb from the harness, keep the commit only on a strict improvement
 * (a win smaller than the noise floor is re-run and must still win on average), otherwise reset
 * to where the experiment started. Crashes go back to the model for repairs. Every experiment's
 * commit stays under refs/autoresearch/<tag>/NNNN; results.tsv and research.jsonl record it all;
 * the chart is refreshed after each. It stops on a stop request (Ctrl-C), --max-experiments,
 * --hours or --max-usd; `resume` continues after any interruption, kill -9 included.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ApiAbortedError, FatalApiError, ResearchAgent, type Conversation } from './agent.ts';
import { apiReference } from './api_reference.ts';
import { applyEdits, type Proposal } from './edits.ts';
import { ResearchGit } from './git.ts';
import { compareHashes, hashProtected, TrainGuard } from './guard.ts';
import { checkApiKey, checkPreparedData, readTimeBudget } from './preflight.ts';
import { addUsage, priceFor, type Price, type TokenUsage } from './pricing.ts';
import {
  appendRecord, appendResult, initResults, readRecords, readResults, resumeState, rowFromRecord,
  type ExperimentRecord, type ResultRow, type RunRecord, type SessionRecord, type Status,
} from './results.ts';
import { runExperiment } from './experiment.ts';
import { crashSummary, killOrphan, latestProgress, logTail, type RunResult } from './runner.ts';
import { RECORDS_FILE, refreshCharts, RESULTS_FILE } from './summary.ts';

export const TRAIN_FILE = 'train.ts';
export const LOG_FILE = 'run.log';
/** Per-tag logs and archives; ignores itself in git. */
export const STATE_DIR = '.autoresearch';

export interface ResearchOptions {
  /** Repo root (train.ts, prepare.ts, program.md). */
  repoDir: string;
  tag: string;
  resume: boolean;
  model: string;
  apiKey?: string;
  baseURL?: string;
  /** Stop after this many experiments in total on this tag (baseline not counted). */
  maxExperiments: number | null;
  /** Start no new experiment after this many hours of this invocation. */
  hours: number | null;
  /** Stop once the API cost of this tag reaches this many USD. */
  maxUsd: number | null;
  /** [input, output] USD per MTok for models the price table lacks. */
  usdPerMtok: [number, number] | null;
  /** Repairs offered after a crash. */
  fixAttempts: number;
  /** Rejected proposals answered per experiment before it is given up as invalid. */
  proposalRetries: number;
  /** Consecutive invalid experiments before the run stops. */
  maxConsecutiveInvalid: number;
  trainCommand: string;
  /** TIME_BUDGET in seconds; null = read from prepare.ts. */
  timeBudgetS: number | null;
  /** Added to 2 × TIME_BUDGET for the hard kill (compilation, data loading, evaluation). */
  startupAllowanceS: number;
  /** Use this noise floor instead of measuring it with a second baseline run. */
  noiseFloor: number | null;
  maxTokens: number;
  effort: 'low' | 'medium' | 'high' | 'xhigh' | 'max' | null;
  /** Diffs of this many recent experiments go into the context. */
  recentDiffs: number;
  /** Where prepare.ts keeps data/ and tokenizer/; null skips the check. */
  cacheDir: string | null;
  apiMaxRetries: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** Write progress.svg/png after each experiment. */
  charts: boolean;
}

export const DEFAULTS = {
  fixAttempts: 1,
  proposalRetries: 3,
  maxConsecutiveInvalid: 5,
  // one node process: wrappers (npx, the tsx CLI) do not hand descriptor 3 down to train.ts
  trainCommand: 'node --import tsx train.ts',
  startupAllowanceS: 120,
  maxTokens: 16_000,
  recentDiffs: 6,
  apiMaxRetries: 4,
  backoffInitialMs: 15_000,
  backoffMaxMs: 600_000,
} as const;

/** Where output goes: permanent lines, and a status line redrawn in place. */
export interface DriverOutput {
  line(text: string): void;
  status(text: string): void;
}

export function consoleOutput(): DriverOutput {
  const tty = Boolean(process.stderr.isTTY);
  let shown = false;
  return {
    line(text) {
      if (tty && shown) process.stderr.write('\r\x1b[2K');
      shown = false;
      process.stdout.write(`${text}\n`);
    },
    status(text) {
      if (!tty) return;
      const width = process.stderr.columns ? process.stderr.columns - 1 : 160;
      process.stderr.write(`\r\x1b[2K${text.length > width ? `${text.slice(0, width - 1)}…` : text}`);
      shown = true;
    },
  };
}

export interface ResearchResult {
  stopReason: string;
  /** Experiments with an outcome in this invocation. */
  experimentsRun: number;
  bestValBpb: number | null;
  bestCommit: string | null;
  noiseFloor: number | null;
  usd: number | null;
}

/** An error a person can fix (bad arguments, missing data, git state); printed without a stack. */
export class ResearchError extends Error {
  override name = 'ResearchError';
}

function fmtDuration(s: number): string {
  const m = Math.floor(s / 60), sec = Math.floor(s % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m` : `${m}:${String(sec).padStart(2, '0')}`;
}

const pad4 = (n: number) => String(n).padStart(4, '0');
const now = () => new Date().toISOString();
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

interface Outcome {
  record: ExperimentRecord | null;
  abandoned: boolean;
}

export class ResearchDriver {
  readonly opts: ResearchOptions;
  readonly repoDir: string;
  readonly out: DriverOutput;
  readonly git: ResearchGit;
  #guard: TrainGuard;
  #agent: ResearchAgent | null = null;
  #price: Price | null = null;
  #stopRequested = false;
  #abort = new AbortController();
  #protected: Record<string, string> = {};
  #bestCommit = '';
  #bestValBpb = Infinity;
  #bestExperiment = 0;
  #noiseFloor = 0;
  #nextExperiment = 1;
  #completed = 0;
  #usd = 0;
  #usdKnown = true;
  #tokens: TokenUsage = { input: 0, output: 0, cacheCreation: 0, cacheRead: 0 };
  #startedAt = Date.now();
  #timeBudgetS = 300;
  #consecutiveInvalid = 0;

  constructor(opts: ResearchOptions, out: DriverOutput = consoleOutput()) {
    this.opts = opts;
    this.repoDir = resolve(opts.repoDir);
    this.out = out;
    this.git = new ResearchGit(this.repoDir, opts.tag);
    this.#guard = new TrainGuard({ repoDir: this.repoDir, file: TRAIN_FILE });
  }

  /** First Ctrl-C: finish the current experiment, then stop. */
  requestStop(): void {
    this.#stopRequested = true;
  }

  /** Second Ctrl-C: kill the current run, reset to where it started, stop. */
  abandon(): void {
    this.#stopRequested = true;
    this.#abort.abort();
  }

  get stopRequested(): boolean {
    return this.#stopRequested;
  }

  #path(name: string): string {
    return join(this.repoDir, name);
  }

  #tagDir(...parts: string[]): string {
    const dir = join(this.repoDir, STATE_DIR, this.opts.tag, ...parts);
    mkdirSync(dir, { recursive: true });
    const ignore = join(this.repoDir, STATE_DIR, '.gitignore');
    if (!existsSync(ignore)) writeFileSync(ignore, '*\n');
    return dir;
  }

  #costText(): string {
    return this.#usdKnown ? `$${this.#usd.toFixed(2)}` : 'cost unknown';
  }

  #bestText(): string {
    return Number.isFinite(this.#bestValBpb) ? `best ${this.#bestValBpb.toFixed(6)} (#${this.#bestExperiment})` : 'no baseline yet';
  }

  // -------------------------------------------------------------------------
  // Set-up
  // -------------------------------------------------------------------------

  async #preflight(): Promise<void> {
    const o = this.opts;
    await this.git.assertRepoRoot();
    await this.git.assertIdentity();
    if (!existsSync(this.#path(TRAIN_FILE))) throw new ResearchError(`${TRAIN_FILE} not found in ${this.repoDir}`);
    if (!(await this.git.isTracked(TRAIN_FILE))) throw new ResearchError(`${TRAIN_FILE} is not committed; commit it before starting research`);
    if (o.cacheDir) {
      const problem = checkPreparedData(o.cacheDir);
      if (problem) throw new ResearchError(problem);
    }
    const keyProblem = checkApiKey(o.apiKey);
    if (keyProblem) throw new ResearchError(keyProblem);
    this.#price = priceFor(o.model, o.usdPerMtok);
    if (!this.#price) {
      if (o.maxUsd !== null) throw new ResearchError(`--max-usd needs a price for '${o.model}', which the price table lacks: pass --usd-per-mtok input,output (USD per million tokens)`);
      this.out.line(`note: no price known for '${o.model}'; cost will be reported as unknown (pass --usd-per-mtok in,out to price it)`);
    }
    this.#timeBudgetS = o.timeBudgetS ?? readTimeBudget(this.repoDir);
  }

  #archiveOldResults(): void {
    const files = [RESULTS_FILE, RECORDS_FILE].filter((f) => existsSync(this.#path(f)) && statSync(this.#path(f)).size > 0);
    const rows = readResults(this.#path(RESULTS_FILE));
    const records = readRecords(this.#path(RECORDS_FILE));
    if (!files.length || (rows.length === 0 && records.length === 0)) return;
    const oldTag = resumeState(records).session?.tag ?? 'untagged';
    const dir = join(this.repoDir, STATE_DIR, 'archive', `${oldTag}-${now().replace(/[:.]/g, '-')}`);
    mkdirSync(dir, { recursive: true });
    const ignore = join(this.repoDir, STATE_DIR, '.gitignore');
    if (!existsSync(ignore)) writeFileSync(ignore, '*\n');
    for (const f of files) renameSync(this.#path(f), join(dir, f));
    this.out.line(`moved the previous run's ${files.join(' and ')} to ${dir}`);
  }

  async #startFresh(): Promise<SessionRecord> {
    if (await this.git.branchExists()) {
      throw new ResearchError(`branch ${this.git.branch} already exists: pass --resume to continue it, or choose another --tag`);
    }
    const dirty = await this.git.dirtyTrackedFiles();
    if (dirty.length) throw new ResearchError(`uncommitted changes in ${dirty.join(', ')}: commit or stash them first (the research commits and resets train.ts)`);
    this.#archiveOldResults();
    await this.git.createBranch();
    const base = await this.git.head();
    initResults(this.#path(RESULTS_FILE));
    this.#protected = hashProtected(this.repoDir);
    const session: SessionRecord = {
      type: 'session', tag: this.opts.tag, branch: this.git.branch, started_at: now(), resumed: false, base_commit: base,
      model: this.opts.model, train_command: this.opts.trainCommand, time_budget_s: this.#timeBudgetS, protected_hashes: this.#protected,
    };
    appendRecord(this.#path(RECORDS_FILE), session);
    this.#bestCommit = base;
    this.out.line(`created branch ${this.git.branch} at ${base.slice(0, 7)}`);
    return session;
  }

  async #resume(): Promise<void> {
    if (!(await this.git.branchExists())) throw new ResearchError(`nothing to resume: branch ${this.git.branch} does not exist (start it without --resume)`);
    const records = readRecords(this.#path(RECORDS_FILE));
    const state = resumeState(records);
    if (!state.session) throw new ResearchError(`nothing to resume: ${RECORDS_FILE} has no session record for tag '${this.opts.tag}'`);
    if (state.session.tag !== this.opts.tag) throw new ResearchError(`${RECORDS_FILE} belongs to tag '${state.session.tag}', not '${this.opts.tag}'`);

    // A driver killed mid-run leaves its training job running in its own process group.
    if (state.unfinished?.pid && killOrphan(state.unfinished.pid, this.repoDir)) {
      this.out.line(`stopped the training job left running by the interrupted driver (process group ${state.unfinished.pid})`);
    }

    const branch = await this.git.currentBranch();
    if (branch !== this.git.branch) {
      const dirty = await this.git.dirtyTrackedFiles();
      if (dirty.length) throw new ResearchError(`uncommitted changes in ${dirty.join(', ')} on ${branch ?? 'a detached HEAD'}: commit or stash them before resuming`);
      await this.git.checkoutBranch();
    }

    this.#protected = state.session.protected_hashes;
    const changed = compareHashes(this.#protected, hashProtected(this.repoDir));
    if (changed.length) throw new ResearchError(`protected files differ from when ${this.git.branch} started (${changed.join(', ')}): results would not be comparable; restore them or start a new tag`);

    const target = state.bestCommit ?? state.session.base_commit;
    const head = await this.git.head();
    const refs = await this.git.refs();
    if (state.unfinished) {
      const n = state.unfinished.experiment;
      let ref: string | null = null;
      if (head !== target && ![...refs.values()].includes(head)) ref = await this.git.updateRef(`${pad4(n)}-unevaluated`, head);
      appendRecord(this.#path(RECORDS_FILE), {
        type: 'abandoned', experiment: n, commit: head !== target ? head : state.unfinished.commit, reason: 'interrupted before it was evaluated; reverted on resume',
        tokens: state.unfinished.tokens ?? null, usd: state.unfinished.usd ?? null, ref, at: now(),
      });
      this.out.line(`experiment #${n} was interrupted before its result: reverted${ref ? ` (its commit is kept as ${ref})` : ''}`);
    } else if (head !== target && ![...refs.values()].includes(head)) {
      const ref = await this.git.updateRef(`${pad4(state.nextExperiment)}-unevaluated`, head);
      this.out.line(`HEAD was at an unevaluated commit: kept as ${ref} and reverted`);
    }
    await this.git.resetHard(target);

    // A kill between the jsonl record and the results.tsv row loses the row: put it back.
    const rows = readResults(this.#path(RESULTS_FILE));
    if (!existsSync(this.#path(RESULTS_FILE))) initResults(this.#path(RESULTS_FILE));
    const have = new Set(rows.map((r) => `${r.commit}\t${r.status}`));
    const short = new Map<string, string>();
    for (const r of [state.baseline, ...state.completed]) {
      if (!r) continue;
      const full = r.commit;
      if (!full) continue;
      short.set(full, await this.git.short(full));
      const row = rowFromRecord(r, (c) => short.get(c) ?? c.slice(0, 7));
      if (row && !have.has(`${row.commit}\t${row.status}`)) {
        appendResult(this.#path(RESULTS_FILE), row);
        this.out.line(`restored the results.tsv row of ${row.commit} (${row.status})`);
      }
    }

    this.#bestCommit = target;
    if (state.bestValBpb !== null) {
      this.#bestValBpb = state.bestValBpb;
      this.#bestExperiment = state.bestExperiment;
    }
    this.#noiseFloor = state.noiseFloor ?? 0;
    this.#nextExperiment = state.nextExperiment;
    this.#completed = state.completed.length;
    const totals = resumeState(readRecords(this.#path(RECORDS_FILE))); // with the abandoned record just added
    this.#usd = totals.usd;
    this.#usdKnown = totals.usdKnown;
    this.#tokens = totals.tokens;
    appendRecord(this.#path(RECORDS_FILE), {
      ...state.session, started_at: now(), resumed: true, model: this.opts.model, train_command: this.opts.trainCommand, time_budget_s: this.#timeBudgetS,
    });
    this.out.line(`resuming ${this.git.branch} at ${target.slice(0, 7)}: ${this.#completed} experiments so far, ${this.#bestText()}, ${this.#costText()}`);
  }

  // -------------------------------------------------------------------------
  // Running
  // -------------------------------------------------------------------------

  #checkProtected(): void {
    const changed = compareHashes(this.#protected, hashProtected(this.repoDir));
    if (changed.length) throw new ResearchError(`protected files changed (${changed.join(', ')}): only ${TRAIN_FILE} may change during research; stopping`);
  }

  #childEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ANTHROPIC_')) env[k] = v; // the job needs no API credentials
    return env;
  }

  /** One training run of the checked-out commit, with a live status line. */
  async #train(label: string, logName: string, onStart?: (pgid: number) => void): Promise<RunResult> {
    this.#checkProtected();
    const logPath = this.#path(LOG_FILE);
    const t0 = Date.now();
    const tick = () => {
      const progress = latestProgress(logPath);
      this.out.status(`${label} · training ${fmtDuration((Date.now() - t0) / 1000)}${progress ? ` · ${progress}` : ''} · ${this.#bestText()} · ${this.#costText()}`);
    };
    tick();
    const timer = setInterval(tick, 1000);
    try {
      // one code path with `npm run experiment`: guard, sandbox, the harness's signed metric
      // (a --train-command other than the default is a stand-in trainer, run as given)
      const result = await runExperiment({
        repoDir: this.repoDir, trainSource: readFileSync(join(this.repoDir, TRAIN_FILE), 'utf8'), logPath, guard: this.#guard,
        trainCommand: this.opts.trainCommand === DEFAULTS.trainCommand ? undefined : this.opts.trainCommand,
        timeBudgetS: this.#timeBudgetS, startupAllowanceS: this.opts.startupAllowanceS,
        env: this.#childEnv(), signal: this.#abort.signal, onStart,
      });
      try {
        copyFileSync(logPath, join(this.#tagDir('logs'), `${logName}.log`));
      } catch {
        // a missing log copy loses nothing the records don't have
      }
      this.#checkProtected();
      return result;
    } finally {
      clearInterval(timer);
    }
  }

  #runRecord(r: RunResult): RunRecord {
    return { val_bpb: r.valBpb, peak_vram_mb: r.peakVramMb, duration_s: Number(r.durationS.toFixed(1)), error: r.error };
  }

  async #baseline(): Promise<void> {
    const commit = await this.git.head();
    const runsWanted = this.opts.noiseFloor === null ? 2 : 1;
    const runs: RunResult[] = [];
    for (let i = 0; i < runsWanted; i++) {
      const label = `baseline${runsWanted > 1 ? ` run ${i + 1}/${runsWanted}` : ''}`;
      this.out.line(`${label}: ${this.opts.trainCommand} (hard limit ${2 * this.#timeBudgetS + this.opts.startupAllowanceS} s)`);
      const r = await this.#train(label, `0000-baseline-${i + 1}`);
      runs.push(r);
      if (!r.ok) {
        const tail = logTail(this.#path(LOG_FILE), 30);
        appendRecord(this.#path(RECORDS_FILE), {
          type: 'baseline', experiment: 0, commit, runs: runs.map((x) => this.#runRecord(x)), val_bpb: null, peak_vram_mb: null, noise_floor: 0, status: 'crash', at: now(),
        });
        if (r.aborted) throw new ResearchError('interrupted during the baseline');
        // the usual set-up mistake: a wrapper between the driver and train.ts that keeps descriptor 3
        const fdHint = /no result on the result channel|RESULT_FD|EBADF|EINVAL/.test(`${r.error}\n${tail}`)
          ? `\n(The result reaches the driver on descriptor 3: the train command must hand it down to the process that runs prepare.ts. Wrappers such as npx or the tsx CLI don't; use --train-command "node --import tsx train.ts".)`
          : '';
        throw new ResearchError(`the unmodified baseline failed (${r.error}); fix that before research. Last lines of run.log:\n${tail}${fdHint}`);
      }
      this.out.line(`${label}: val_bpb ${r.valBpb!.toFixed(6)} (${r.durationS.toFixed(0)} s)`);
    }
    const vals = runs.map((r) => r.valBpb as number);
    const noise = this.opts.noiseFloor ?? Math.abs(vals[0] - vals[1]);
    const valBpb = mean(vals);
    const peak = Math.max(...runs.map((r) => r.peakVramMb as number));
    appendRecord(this.#path(RECORDS_FILE), {
      type: 'baseline', experiment: 0, commit, runs: runs.map((x) => this.#runRecord(x)), val_bpb: valBpb, peak_vram_mb: peak, noise_floor: noise, status: 'keep', at: now(),
    });
    appendResult(this.#path(RESULTS_FILE), { commit: await this.git.short(commit), valBpb, memoryGb: peak / 1024, status: 'keep', description: 'baseline' });
    this.#bestCommit = commit;
    this.#bestValBpb = valBpb;
    this.#bestExperiment = 0;
    this.#noiseFloor = noise;
    this.out.line(`baseline val_bpb ${valBpb.toFixed(6)}${runsWanted > 1 ? ` (runs ${vals.map((v) => v.toFixed(6)).join(', ')})` : ''}`);
    this.out.line(`noise floor: ${noise.toFixed(6)}${this.opts.noiseFloor === null ? ' (|run 1 − run 2| of the baseline)' : ' (given)'}; wins smaller than this are re-run and must still win on average`);
  }

  /** The "state" part of the context: best, counts, results.tsv, recent diffs. */
  async #stateText(n: number): Promise<string> {
    const rows = readResults(this.#path(RESULTS_FILE));
    const counts = { keep: 0, discard: 0, crash: 0 };
    for (const r of rows) counts[r.status]++;
    const baseline = rows[0]?.valBpb;
    const parts: string[] = [];
    parts.push(`# State of the research (tag ${this.opts.tag}, experiment #${n})`);
    parts.push([
      `- best val_bpb so far: ${this.#bestValBpb.toFixed(6)} (experiment #${this.#bestExperiment}, commit ${this.#bestCommit.slice(0, 7)}); baseline ${baseline?.toFixed(6) ?? '?'}`,
      `- noise floor: ${this.#noiseFloor.toFixed(6)} (a win smaller than this is re-run and kept only if it still wins on average)`,
      `- experiments so far: ${Math.max(0, rows.length - 1)} (keep ${counts.keep - (rows.length ? 1 : 0)}, discard ${counts.discard}, crash ${counts.crash})`,
      `- each run trains for TIME_BUDGET = ${this.#timeBudgetS} s; runs over ${2 * this.#timeBudgetS + this.opts.startupAllowanceS} s are killed`,
    ].join('\n'));

    const MAX_ROWS = 150;
    const lines = readFileSync(this.#path(RESULTS_FILE), 'utf8').trimEnd().split('\n');
    const shown = lines.length - 1 > MAX_ROWS ? [lines[0], `(… ${lines.length - 1 - MAX_ROWS} earlier rows omitted)`, ...lines.slice(-MAX_ROWS)] : lines;
    parts.push(`# results.tsv\n\n\`\`\`\n${shown.join('\n')}\n\`\`\``);

    const records = readRecords(this.#path(RECORDS_FILE)).filter((r): r is ExperimentRecord => r.type === 'experiment' && r.status !== 'invalid' && r.commit !== null);
    const recent = records.slice(-this.opts.recentDiffs);
    if (recent.length) {
      const diffs: string[] = ['# Recent experiments, oldest first: each as a diff of train.ts against the commit it started from'];
      for (const r of recent) {
        let diff = '';
        try {
          diff = await this.git.diff(r.parent, r.commit as string, TRAIN_FILE);
        } catch {
          diff = '(diff unavailable)';
        }
        if (diff.length > 5000) diff = `${diff.slice(0, 5000)}\n… (diff truncated)`;
        const val = r.status === 'crash' ? 'crash' : `val_bpb ${r.val_bpb?.toFixed(6)}`;
        const err = r.status === 'crash' && r.error_excerpt ? `\nerror: ${r.error_excerpt.split('\n').slice(-6).join('\n')}` : '';
        diffs.push(`## #${r.experiment} ${r.status}: ${r.description}\n${val} (best before: ${r.best_before.toFixed(6)})${err}\n\`\`\`diff\n${diff.trim()}\n\`\`\``);
      }
      parts.push(diffs.join('\n\n'));
    }
    return parts.join('\n\n');
  }

  #budgetReached(): boolean {
    return this.opts.maxUsd !== null && this.#usdKnown && this.#usd >= this.opts.maxUsd;
  }

  /** Ask until a proposal applies to `base` and passes the guard; null when retries run out. */
  async #validProposal(conv: Conversation, base: string, label: string, rejected: ExperimentRecord['rejected']): Promise<{ proposal: Proposal; text: string } | null> {
    let rejections = 0;
    for (;;) {
      if (this.#budgetReached()) throw new ApiAbortedError(`the --max-usd budget ($${this.opts.maxUsd}) is spent`);
      this.out.status(`${label} · asking ${this.opts.model} · ${this.#bestText()} · ${this.#costText()}`);
      const usdBefore = conv.usd ?? 0;
      const turn = await conv.next(this.#abort.signal, () => this.#stopRequested);
      this.#usd += (conv.usd ?? 0) - usdBefore;
      if (conv.usd === null) this.#usdKnown = false;
      let reason: string | null = null;
      let description: string | null = null;
      let text = '';
      if (turn.kind === 'invalid') {
        reason = turn.reason;
        description = turn.description;
      } else {
        description = turn.proposal.description;
        const applied = applyEdits(base, turn.proposal.edits, TRAIN_FILE);
        if (!applied.ok) reason = applied.reason;
        else {
          this.out.status(`${label} · checking "${description}"`);
          const report = this.#guard.check(applied.text);
          if (!report.ok) reason = `the guard rejected train.ts:\n${report.problems.join('\n')}`;
          else text = applied.text;
        }
        if (reason) conv.reject(reason);
      }
      if (!reason && turn.kind === 'proposal') return { proposal: turn.proposal, text };
      rejected.push({ reason: reason ?? 'invalid', description });
      this.out.line(`${label} · proposal rejected: ${(reason ?? '').split('\n').slice(0, 3).join(' | ').slice(0, 240)}`);
      rejections++;
      if (rejections > this.opts.proposalRetries) return null;
    }
  }

  async #experiment(n: number): Promise<Outcome> {
    const t0 = Date.now();
    const parent = this.#bestCommit;
    const bestBefore = this.#bestValBpb;
    const label = `#${n}`;
    const base = readFileSync(this.#path(TRAIN_FILE), 'utf8');
    const agent = this.#agent!;
    const conv = agent.startConversation({
      programMd: this.#readOr('program.md', '(program.md is missing)'),
      readme: this.#readOr('README.md', '(no README.md)'),
      apiReference: apiReference(this.repoDir),
      baselineLog: this.#baselineLog(),
      trainTs: base,
      state: await this.#stateText(n),
    });
    const rejected: ExperimentRecord['rejected'] = [];
    const repairs: string[] = [];
    const attempts: string[] = [];
    const runs: RunResult[] = [];
    let description = '';
    let commit: string | null = null;
    const record = (status: ExperimentRecord['status'], extra: Partial<ExperimentRecord>): ExperimentRecord => ({
      type: 'experiment', experiment: n, status, parent, commit, attempts, description, val_bpb: null, peak_vram_mb: null,
      runs: runs.map((r) => this.#runRecord(r)), best_before: bestBefore, duration_s: Number(((Date.now() - t0) / 1000).toFixed(1)),
      error_excerpt: null, crash_reason: null, rejected, repairs: repairs.length, tokens: conv.usage, usd: conv.usd, ref: null, at: now(), ...extra,
    });
    const abandonedRecord = async (reason: string) => {
      let ref: string | null = null;
      if (commit) ref = await this.git.updateRef(`${pad4(n)}-abandoned`, commit);
      appendRecord(this.#path(RECORDS_FILE), { type: 'abandoned', experiment: n, commit, reason, tokens: conv.usage, usd: conv.usd, ref, at: now() });
      await this.git.resetHard(parent);
      this.#tokens = addUsage(this.#tokens, conv.usage);
      this.out.line(`${label} abandoned: ${reason}${ref ? ` (commit kept as ${ref})` : ''}`);
      return { record: null, abandoned: true };
    };

    try {
      const first = await this.#validProposal(conv, base, label, rejected);
      if (!first) {
        const rec = record('invalid', {});
        appendRecord(this.#path(RECORDS_FILE), rec);
        this.#tokens = addUsage(this.#tokens, conv.usage);
        this.out.line(`${label} gave up: ${rejected.length} proposals rejected (see ${RECORDS_FILE})`);
        return { record: rec, abandoned: false };
      }
      description = first.proposal.description;
      let text = first.text;
      let result: RunResult | null = null;
      let repairsLeft = this.opts.fixAttempts;
      for (;;) {
        writeFileSync(this.#path(TRAIN_FILE), text);
        commit = await this.git.commitFile(TRAIN_FILE, description);
        attempts.push(commit);
        const changed = await this.git.changedFiles(parent, commit);
        if (changed.length !== 1 || changed[0] !== TRAIN_FILE) throw new ResearchError(`commit ${commit.slice(0, 7)} changes ${changed.join(', ')}; only ${TRAIN_FILE} may change`);
        const start = { type: 'start' as const, experiment: n, parent, commit, description, tokens: conv.usage, usd: conv.usd, at: now() };
        appendRecord(this.#path(RECORDS_FILE), { ...start, pid: null });
        this.out.line(`${label} ${commit.slice(0, 7)} "${description}"${attempts.length > 1 ? ` (repair ${attempts.length - 1})` : ''}`);
        const runLabel = `${label} "${description}"`;
        result = await this.#train(runLabel, `${pad4(n)}${attempts.length > 1 ? `-repair${attempts.length - 1}` : ''}`, (pgid) => appendRecord(this.#path(RECORDS_FILE), { ...start, pid: pgid }));
        runs.push(result);
        if (result.aborted) return abandonedRecord('interrupted (Ctrl-C) during training');
        if (result.ok || repairsLeft <= 0) break;
        // Crash: offer the model a repair of the crashed file.
        const tail = logTail(this.#path(LOG_FILE), 50);
        this.out.line(`${label} crashed: ${result.error}; asking for a repair (${repairsLeft} left)`);
        conv.crashed(result.error ?? 'crash', tail, repairsLeft);
        repairsLeft--;
        const repair = await this.#validProposal(conv, text, `${label} repair`, rejected);
        if (!repair) break;
        repairs.push(repair.proposal.description);
        await this.git.updateRef(`${pad4(n)}-attempt${attempts.length}`, commit);
        await this.git.resetHard(parent);
        text = repair.text;
      }

      let status: Status = 'crash';
      let valBpb: number | null = null;
      let peak: number | null = null;
      let errorExcerpt: string | null = null;
      let crashWhy = '';
      if (!result.ok) {
        const tail = logTail(this.#path(LOG_FILE), 20);
        errorExcerpt = `${result.error}\n${tail}`.slice(-2000);
        crashWhy = crashSummary(result, tail);
      } else {
        const vals = [result.valBpb as number];
        if (vals[0] < this.#bestValBpb && this.#bestValBpb - vals[0] < this.#noiseFloor) {
          this.out.line(`${label} val_bpb ${vals[0].toFixed(6)} beats ${this.#bestValBpb.toFixed(6)} by ${(this.#bestValBpb - vals[0]).toFixed(6)} < noise floor ${this.#noiseFloor.toFixed(6)}: re-running`);
          const again = await this.#train(`${label} "${description}" (re-run)`, `${pad4(n)}-rerun`);
          runs.push(again);
          if (again.aborted) return abandonedRecord('interrupted (Ctrl-C) during the re-run');
          if (again.ok) vals.push(again.valBpb as number);
          else {
            const tail = logTail(this.#path(LOG_FILE), 20);
            errorExcerpt = `re-run: ${again.error}\n${tail}`.slice(-2000);
            crashWhy = `re-run: ${crashSummary(again, tail)}`;
          }
        }
        if (!errorExcerpt) {
          valBpb = mean(vals);
          peak = Math.max(...runs.filter((r) => r.ok).map((r) => r.peakVramMb as number));
          status = valBpb < this.#bestValBpb ? 'keep' : 'discard';
        }
      }
      const finalCommit = commit as string;

      const ref = await this.git.updateRef(pad4(n), finalCommit);
      const finalShort = await this.git.short(finalCommit);
      const rec = record(status, { val_bpb: valBpb, peak_vram_mb: peak, error_excerpt: errorExcerpt, crash_reason: crashWhy || null, ref });
      // Record first, then move git: a kill in between is repaired by --resume.
      appendRecord(this.#path(RECORDS_FILE), rec);
      appendResult(this.#path(RESULTS_FILE), rowFromRecord(rec, () => finalShort) as ResultRow);
      this.#tokens = addUsage(this.#tokens, conv.usage);
      if (status === 'keep') {
        this.#bestCommit = finalCommit;
        this.#bestValBpb = valBpb as number;
        this.#bestExperiment = n;
      } else {
        await this.git.resetHard(parent);
      }
      const took = fmtDuration((Date.now() - t0) / 1000);
      const what = status === 'crash' ? `crash (${crashWhy}: ${(errorExcerpt ?? '').split('\n')[0]})` : `${status} ${(valBpb as number).toFixed(6)}${runs.filter((r) => r.ok).length > 1 ? ' (mean of 2 runs)' : ''}`;
      this.out.line(`${label} ${what} "${description}" · ${took} · ${this.#bestText()} · ${this.#costText()}`);
      return { record: rec, abandoned: false };
    } catch (e) {
      if (e instanceof ApiAbortedError) return abandonedRecord(e.message);
      if (e instanceof FatalApiError) {
        await abandonedRecord(`API error: ${e.message}`);
        throw e;
      }
      // Anything else: keep the commit reachable, leave git where the experiment started, report.
      try {
        if (commit) await this.git.updateRef(`${pad4(n)}-error`, commit);
        await this.git.resetHard(parent);
      } catch {
        // --resume will sort it out
      }
      throw e;
    }
  }

  /** The first baseline run's log, \r-progress collapsed, capped (it goes into every prompt). */
  #baselineLog(): string {
    const path = join(this.repoDir, STATE_DIR, this.opts.tag, 'logs', '0000-baseline-1.log');
    if (!existsSync(path)) return '';
    const text = logTail(path, 80);
    return text.length > 8000 ? text.slice(-8000) : text;
  }

  #readOr(name: string, fallback: string): string {
    const p = this.#path(name);
    return existsSync(p) ? readFileSync(p, 'utf8') : fallback;
  }

  #stopReason(): string | null {
    if (this.#stopRequested) return 'stop requested';
    if (this.opts.maxExperiments !== null && this.#completed >= this.opts.maxExperiments) return `--max-experiments ${this.opts.maxExperiments} reached`;
    if (this.opts.hours !== null && Date.now() - this.#startedAt >= this.opts.hours * 3600_000) return `--hours ${this.opts.hours} reached`;
    if (this.#budgetReached()) return `--max-usd ${this.opts.maxUsd} reached ($${this.#usd.toFixed(2)})`;
    if (this.#consecutiveInvalid >= this.opts.maxConsecutiveInvalid) return `${this.#consecutiveInvalid} experiments in a row without a usable proposal`;
    return null;
  }

  async #charts(): Promise<void> {
    if (!this.opts.charts) return;
    try {
      const r = await refreshCharts(this.repoDir);
      if (r?.warning) this.out.line(`note: ${r.warning}`);
    } catch (e) {
      this.out.line(`note: could not write the chart: ${(e as Error).message}`);
    }
  }

  // One driver per checkout: two would commit and reset the same train.ts.
  #lock(): () => void {
    const dir = join(this.repoDir, STATE_DIR);
    mkdirSync(dir, { recursive: true });
    if (!existsSync(join(dir, '.gitignore'))) writeFileSync(join(dir, '.gitignore'), '*\n');
    const path = join(dir, 'driver.lock');
    if (existsSync(path)) {
      let held: { pid?: number; tag?: string } = {};
      try {
        held = JSON.parse(readFileSync(path, 'utf8'));
      } catch {
        // unreadable: treat as stale
      }
      if (held.pid && held.pid !== process.pid && processAlive(held.pid)) {
        throw new ResearchError(`another research driver (pid ${held.pid}, tag ${held.tag}) is running in this repository; stop it first (or delete ${path} if it is stale)`);
      }
    }
    writeFileSync(path, JSON.stringify({ pid: process.pid, tag: this.opts.tag, started_at: now() }));
    return () => rmSync(path, { force: true });
  }

  /** Run research until a stop condition; returns why it stopped. */
  async run(): Promise<ResearchResult> {
    this.#startedAt = Date.now();
    await this.#preflight();
    const unlock = this.#lock();
    try {
      return await this.#run();
    } finally {
      unlock();
    }
  }

  async #run(): Promise<ResearchResult> {
    const o = this.opts;
    this.#agent = new ResearchAgent({
      model: o.model, apiKey: o.apiKey, baseURL: o.baseURL, maxTokens: o.maxTokens, effort: o.effort, price: this.#price,
      maxRetries: o.apiMaxRetries, backoffInitialMs: o.backoffInitialMs, backoffMaxMs: o.backoffMaxMs, log: (l) => this.out.line(l),
    });
    await this.#agent.checkModel();
    if (o.resume) await this.#resume();
    else await this.#startFresh();

    let stopReason: string | null = null;
    let experimentsRun = 0;
    try {
      if (!Number.isFinite(this.#bestValBpb)) {
        await this.#baseline();
        await this.#charts();
      } else {
        this.out.line(`noise floor: ${this.#noiseFloor.toFixed(6)} (from the baseline)`);
      }
      while (!(stopReason = this.#stopReason())) {
        const n = this.#nextExperiment++;
        const outcome = await this.#experiment(n);
        if (outcome.abandoned) {
          stopReason = this.#stopRequested ? 'stop requested' : this.#budgetReached() ? `--max-usd ${o.maxUsd} reached` : 'abandoned';
          break;
        }
        if (outcome.record?.status === 'invalid') this.#consecutiveInvalid++;
        else {
          this.#consecutiveInvalid = 0;
          this.#completed++;
          experimentsRun++;
        }
        await this.#charts();
      }
    } catch (e) {
      appendRecord(this.#path(RECORDS_FILE), { type: 'stop', reason: `error: ${(e as Error).message.split('\n')[0]}`, at: now() });
      throw e;
    }
    appendRecord(this.#path(RECORDS_FILE), { type: 'stop', reason: stopReason, at: now() });
    this.out.line(`stopped: ${stopReason}. ${this.#completed} experiments, ${this.#bestText()}, ${this.#costText()}. Resume with --resume --tag ${o.tag}.`);
    return {
      stopReason, experimentsRun, bestValBpb: Number.isFinite(this.#bestValBpb) ? this.#bestValBpb : null, bestCommit: this.#bestCommit || null,
      noiseFloor: this.#noiseFloor, usd: this.#usdKnown ? this.#usd : null,
    };
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
