/**
 * @file The research loop behind `npm run research`. On branch `autoresearch/<tag>` it measures
 * the unmodified baseline (at least 3 runs, on different workers when there are several: the
 * bar is their mean, the noise floor their spread, never below MIN_NOISE_FLOOR), then keeps up to
 * N experiments in flight, one per free worker: each asks Claude for one change to the current
 * best train.ts (agent.ts; the model sees what is running and what finished), guards it
 * (edits.ts, guard.ts), commits it without touching the checkout (git.ts) and runs it through an
 * executor (executors.ts: inline, or BullMQ workers on Redis). A result is kept only if its mean
 * beats the bar: a win smaller than a few noise widths is re-run (up to --max-runs runs) and must
 * still win on average; a win whose base was superseded meanwhile is replayed onto the new best
 * and confirmed there. Crashes go back to the model for repairs.
 *
 * Every change is one record appended to research.jsonl, and the driver's state is those records
 * folded by results.ts's `applyRecord`, live and on `--resume` alike: a resumed driver re-queues
 * (or finds in the queue) the runs still in flight, and results.tsv is rendered from the state,
 * ordered and complete. Every experiment's commit stays under refs/autoresearch/<tag>/NNNN.
 * It stops on a stop request (Ctrl-C), --max-experiments, --hours or --max-usd.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ApiAbortedError, FatalApiError, ResearchAgent, type Conversation } from './agent.ts';
import { startDashboard, type Dashboard, type LiveView } from './dashboard.ts';
import { applyEdits, type Proposal } from './edits.ts';
import { InlineExecutor, QueueExecutor, spawnLocalWorkers, startPrivateRedis, type Executor } from './executors.ts';
import { dataHashes } from './experiment.ts';
import { ResearchGit } from './git.ts';
import { compareHashes, hashProtected, type TrainGuard } from './guard.ts';
import { guardFor } from './guard_cache.ts';
import { checkApiKey, checkPreparedData, readTimeBudget } from './preflight.ts';
import { priceFor, type Price, type TokenUsage } from './pricing.ts';
import {
  appendRecord, applyRecord, emptyState, readRecords, readResults, resultRows, resumeState, writeResults,
  type DispatchRecord, type ExperimentRecord, type ResearchRecord, type ResumeState, type RunRecord, type Status,
} from './results.ts';
import { crashSummary } from './runner.ts';
import { RECORDS_FILE, refreshCharts, RESULTS_FILE } from './summary.ts';
import type { RunKind, RunOutcome, RunRequest } from './workspace.ts';

/** The metric's data as this session found it; every run (local or on a worker) must see the same. */
function pinnedDataHashes(): Record<string, string> | undefined {
  try {
    return dataHashes();
  } catch {
    return undefined; // no tokenizer yet: a sandboxed run fails on its own with what to do
  }
}

export const TRAIN_FILE = 'train.ts';
export const LOG_FILE = 'run.log';
/** Per-tag logs and archives; ignores itself in git. */
export const STATE_DIR = '.autoresearch';
/**
 * The smallest noise floor used, whatever the baseline's spread: reruns of the same code move
 * val_bpb by a few 1e-4 even on an H100, so a spread measured from 3 runs below this is luck.
 */
export const MIN_NOISE_FLOOR = 2e-4;
/** The seed of a commit's first run; its re-runs use the next ones. */
export const FIRST_SEED = 42;
/** A win superseded this many times is given up (discarded) rather than replayed again. */
const MAX_REPLAYS = 3;

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
  /** Use this noise floor (still at least MIN_NOISE_FLOOR) instead of measuring it. */
  noiseFloor: number | null;
  /** Baseline runs (at least 3 when the noise floor is measured). */
  baselineRuns: number;
  /** A win smaller than this many noise floors is re-run. */
  noiseWidths: number;
  /** Most runs of one commit (the first plus re-runs). */
  maxRuns: number;
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
  /** redis://HOST:PORT of a BullMQ queue served by `npm run worker`; null = no queue. */
  queue: string | null;
  queueName: string;
  /** Local worker processes to start (on `queue`, or on a private Redis when there is none). */
  workers: number | null;
  /** Experiments in flight; null = one per worker. */
  parallel: number | null;
  /** Serve the live dashboard on this port (127.0.0.1); null = none. */
  dashboardPort: number | null;
  /** Lock duration (s) of the local workers this driver starts (a dead worker's run is retried after it). */
  workerLockS: number;
}

export const DEFAULTS = {
  fixAttempts: 1,
  proposalRetries: 3,
  maxConsecutiveInvalid: 5,
  // one node process: wrappers (npx, the tsx CLI) do not hand descriptor 3 down to train.ts
  trainCommand: 'node --import tsx train.ts',
  startupAllowanceS: 120,
  baselineRuns: 3,
  noiseWidths: 3,
  maxRuns: 3,
  maxTokens: 16_000,
  recentDiffs: 6,
  apiMaxRetries: 4,
  backoffInitialMs: 15_000,
  backoffMaxMs: 600_000,
  workerLockS: 30,
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

const std = (xs: number[]) => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** What an experiment carries from its proposal to its outcome (rebuilt from records on resume). */
interface ExperimentContext {
  n: number;
  t0: number;
  /** The bar when it was proposed (the mean of its parent). */
  bestBefore: number;
  description: string;
  attempts: string[];
  rejected: ExperimentRecord['rejected'];
  repairs: number;
  /** Times it was replayed onto a newer best. */
  replays: number;
  tokens: () => TokenUsage | null;
  usd: () => number | null;
}

export class ResearchDriver {
  readonly opts: ResearchOptions;
  readonly repoDir: string;
  readonly out: DriverOutput;
  readonly git: ResearchGit;
  /** The state: research.jsonl folded by applyRecord (only #emit changes it). */
  state: ResumeState = emptyState();
  #guard: TrainGuard;
  #agent: ResearchAgent | null = null;
  #executor: Executor | null = null;
  #price: Price | null = null;
  #stopRequested = false;
  #abandoning = false;
  #abort = new AbortController();
  #protected: Record<string, string> = {};
  /** Tokenizer and validation-data hashes pinned at session start (undefined before data exists). */
  #data: Record<string, string> | undefined;
  #startedAt = Date.now();
  #timeBudgetS = 300;
  #consecutiveInvalid = 0;
  #completedHere = 0;
  #invalid = new Set<number>();
  #tasks = new Set<Promise<void>>();
  #fatal: Error | null = null;
  #gitChain: Promise<unknown> = Promise.resolve();
  #dashboard: Dashboard | null = null;
  #cleanups: (() => void | Promise<void>)[] = [];

  constructor(opts: ResearchOptions, out: DriverOutput = consoleOutput()) {
    this.opts = opts;
    this.repoDir = resolve(opts.repoDir);
    this.out = out;
    this.git = new ResearchGit(this.repoDir, opts.tag);
    this.#guard = guardFor(this.repoDir, TRAIN_FILE);
  }

  /** First Ctrl-C: finish the experiments in flight, then stop. */
  requestStop(): void {
    this.#stopRequested = true;
  }

  /** Second Ctrl-C: kill the runs in flight, record them as abandoned, stop. */
  abandon(): void {
    this.#stopRequested = true;
    this.#abandoning = true;
    this.#abort.abort();
    this.#executor?.abandon();
  }

  get stopRequested(): boolean {
    return this.#stopRequested;
  }

  /** The dashboard's address while one is served. */
  get dashboardUrl(): string | null {
    return this.#dashboard?.url ?? null;
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

  /** Append one record and apply it: the only way the state changes. */
  #emit(record: ResearchRecord): void {
    appendRecord(this.#path(RECORDS_FILE), record);
    applyRecord(this.state, record);
  }

  #writeResults(): void {
    writeResults(this.#path(RESULTS_FILE), this.state);
  }

  // Commits never change: their train.ts and diffs are read from git once (each read is a process).
  #texts = new Map<string, Promise<string>>();
  #show(commit: string, path: string): Promise<string> {
    const key = `${commit}:${path}`;
    let p = this.#texts.get(key);
    if (!p) {
      p = this.git.show(commit, path);
      p.catch(() => this.#texts.delete(key));
      this.#texts.set(key, p);
    }
    return p;
  }

  #diffs = new Map<string, Promise<string>>();
  #diff(from: string, to: string): Promise<string> {
    const key = `${from}..${to}`;
    let p = this.#diffs.get(key);
    if (!p) {
      p = this.git.diff(from, to, TRAIN_FILE);
      p.catch(() => this.#diffs.delete(key));
      this.#diffs.set(key, p);
    }
    return p;
  }

  /** Serialise what moves the checkout (resets), so concurrent experiments don't interleave. */
  #withGit<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#gitChain.then(fn, fn);
    this.#gitChain = p.catch(() => {});
    return p;
  }

  get #best(): number {
    return this.state.bestValBpb ?? Infinity;
  }

  get #noiseFloor(): number {
    return this.state.noiseFloor ?? MIN_NOISE_FLOOR;
  }

  #costText(): string {
    return this.state.usdKnown ? `$${this.#liveUsd().toFixed(2)}` : 'cost unknown';
  }

  #bestText(): string {
    return Number.isFinite(this.#best) ? `best ${this.#best.toFixed(6)} (#${this.state.bestExperiment})` : 'no baseline yet';
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


  #executorName(): string {
    if (this.opts.queue) return this.opts.queue;
    return this.opts.workers ? `${this.opts.workers} local workers` : 'inline';
  }

  async #startFresh(): Promise<void> {
    if (await this.git.branchExists()) {
      throw new ResearchError(`branch ${this.git.branch} already exists: pass --resume to continue it, or choose another --tag`);
    }
    const dirty = await this.git.dirtyTrackedFiles();
    if (dirty.length) throw new ResearchError(`uncommitted changes in ${dirty.join(', ')}: commit or stash them first (the research commits and resets train.ts)`);
    this.#archiveOldResults();
    await this.git.createBranch();
    const base = await this.git.head();
    this.#protected = hashProtected(this.repoDir);
    this.#data = pinnedDataHashes();
    this.state = emptyState();
    rmSync(this.#path(RECORDS_FILE), { force: true });
    this.#emit({
      type: 'session', tag: this.opts.tag, branch: this.git.branch, started_at: now(), resumed: false, base_commit: base,
      model: this.opts.model, train_command: this.opts.trainCommand, time_budget_s: this.#timeBudgetS, protected_hashes: this.#protected,
      ...(this.#data ? { data_hashes: this.#data } : {}), run_id: `${this.opts.tag}-${Date.now().toString(36)}`, executor: this.#executorName(),
    });
    this.#writeResults();
    this.out.line(`created branch ${this.git.branch} at ${base.slice(0, 7)}`);
  }

  async #resume(): Promise<void> {
    if (!(await this.git.branchExists())) throw new ResearchError(`nothing to resume: branch ${this.git.branch} does not exist (start it without --resume)`);
    const records = readRecords(this.#path(RECORDS_FILE));
    this.state = resumeState(records);
    const session = this.state.session;
    if (!session) throw new ResearchError(`nothing to resume: ${RECORDS_FILE} has no session record for tag '${this.opts.tag}'`);
    if (session.tag !== this.opts.tag) throw new ResearchError(`${RECORDS_FILE} belongs to tag '${session.tag}', not '${this.opts.tag}'`);

    const branch = await this.git.currentBranch();
    if (branch !== this.git.branch) {
      const dirty = await this.git.dirtyTrackedFiles();
      if (dirty.length) throw new ResearchError(`uncommitted changes in ${dirty.join(', ')} on ${branch ?? 'a detached HEAD'}: commit or stash them before resuming`);
      await this.git.checkoutBranch();
    }
    this.#protected = session.protected_hashes;
    this.#data = session.data_hashes ?? pinnedDataHashes();
    const changed = compareHashes(this.#protected, hashProtected(this.repoDir));
    if (changed.length) throw new ResearchError(`protected files differ from when ${this.git.branch} started (${changed.join(', ')}): results would not be comparable; restore them or start a new tag`);

    // The checkout follows the best commit; anything else at HEAD is kept under a ref.
    const target = this.state.bestCommit ?? session.base_commit;
    const head = await this.git.head();
    if (head !== target && ![...(await this.git.refs()).values()].includes(head)) {
      const ref = await this.git.updateRef(`${pad4(this.state.nextExperiment)}-unevaluated`, head);
      this.out.line(`HEAD was at an unevaluated commit: kept as ${ref} and reverted`);
    }
    await this.git.resetHard(target);

    // Experiments the model was still proposing: nothing ran, nothing to continue.
    for (const f of [...this.state.inFlight.values()]) {
      if (f.commit) continue;
      this.#emit({ type: 'abandoned', experiment: f.experiment, commit: null, reason: 'interrupted while the model was proposing; nothing ran', tokens: null, usd: null, ref: null, at: now() });
    }
    // results.tsv is rendered from the records: a row lost to a kill comes back.
    const before = new Set(readResults(this.#path(RESULTS_FILE)).map((r) => `${r.commit}\t${r.status}`));
    for (const row of resultRows(this.state)) {
      if (!before.has(`${row.commit}\t${row.status}`)) this.out.line(`restored the results.tsv row of ${row.commit} (${row.status})`);
    }
    this.#writeResults();
    this.#emit({ ...session, started_at: now(), resumed: true, model: this.opts.model, train_command: this.opts.trainCommand, time_budget_s: this.#timeBudgetS, executor: this.#executorName() });
    const inFlight = [...this.state.inFlight.keys()];
    this.out.line(`resuming ${this.git.branch} at ${target.slice(0, 7)}: ${this.state.completed.length} experiments so far${inFlight.length ? `, ${inFlight.length} still in flight (#${inFlight.join(', #')})` : ''}, ${this.#bestText()}, ${this.#costText()}`);
  }

  async #openExecutor(): Promise<Executor> {
    const o = this.opts;
    const log = (l: string) => this.out.line(l);
    if (!o.queue && !o.workers) return new InlineExecutor(this.repoDir, this.#tagDir('work', 'inline'), o.trainCommand, log);
    let url = o.queue;
    if (!url) {
      const redis = await startPrivateRedis(mkdtempSync(join(tmpdir(), 'autoresearch-redis-'))).catch((e: Error) => {
        throw new ResearchError(`--workers needs Redis for its queue: ${e.message}`);
      });
      this.#cleanups.push(redis.stop);
      url = redis.url;
    }
    const executor = await QueueExecutor.open({ url, queueName: o.queueName, parallel: o.parallel ?? o.workers, log }).catch((e: Error) => {
      throw new ResearchError(e.message);
    });
    this.#cleanups.unshift(() => executor.close());
    if (o.workers) {
      const children: ChildProcess[] = spawnLocalWorkers(o.workers, { url, queueName: o.queueName, repoDir: this.repoDir, trainCommand: o.trainCommand, tag: o.tag, lockDurationS: o.workerLockS });
      this.#cleanups.push(() => {
        for (const c of children) c.kill('SIGTERM');
      });
      this.out.line(`starting ${o.workers} local worker${o.workers > 1 ? 's' : ''} on ${url}`);
      // the baseline goes to different workers only if they are there: wait for them (a while)
      const t0 = Date.now();
      while (executor.workers().length < o.workers && Date.now() - t0 < 180_000) {
        if (children.every((c) => c.exitCode !== null)) throw new ResearchError('the local workers exited at start (see the lines above)');
        await sleep(200);
      }
      this.out.line(`${executor.workers().length} worker${executor.workers().length === 1 ? '' : 's'} serving: ${executor.workers().join(', ')}`);
    } else {
      this.out.line(`dispatching to the workers serving ${url} (queue '${o.queueName}')`);
    }
    return executor;
  }

  // -------------------------------------------------------------------------
  // Runs
  // -------------------------------------------------------------------------

  #checkProtected(): void {
    const changed = compareHashes(this.#protected, hashProtected(this.repoDir));
    if (changed.length) throw new ResearchError(`protected files changed (${changed.join(', ')}): only ${TRAIN_FILE} may change during research; stopping`);
  }

  #runId(logName: string): string {
    return `${this.state.session?.run_id ?? this.opts.tag}-${logName}`;
  }

  /** Hand one run to the executor (recorded first) and wait for its result. */
  async #dispatch(n: number, kind: RunKind, commit: string, text: string, logName: string, seed: number): Promise<RunOutcome> {
    this.#checkProtected();
    const d: DispatchRecord = { type: 'dispatch', run_id: this.#runId(logName), experiment: n, kind, commit, seed, at: now() };
    this.#emit(d);
    setTimeout(() => this.#status(), 100).unref(); // once the executor has taken it
    return this.#await(d, text);
  }

  /** Wait for a dispatched run (a resumed driver asks again: the executor finds or re-queues it). */
  async #await(d: DispatchRecord, text?: string): Promise<RunOutcome> {
    const trainSource = text ?? (await this.#show(d.commit, TRAIN_FILE));
    const req: RunRequest = {
      runId: d.run_id, experiment: d.experiment, kind: d.kind as RunKind, tag: this.opts.tag, commit: d.commit,
      parent: this.state.inFlight.get(d.experiment)?.parent ?? this.state.session?.base_commit ?? '', trainSource,
      expectedHashes: this.#protected, expectedDataHashes: this.#data, seed: d.seed, timeBudgetS: this.#timeBudgetS, startupAllowanceS: this.opts.startupAllowanceS,
    };
    const o = await this.#executor!.submit(req);
    if (o.aborted) return o;
    const logName = d.run_id.slice(this.#runId('').length);
    try {
      writeFileSync(join(this.#tagDir('logs'), `${logName}.log`), o.log);
      if (d.experiment === 0 || d.kind === 'first') writeFileSync(this.#path(LOG_FILE), o.log);
    } catch {
      // a missing log copy loses nothing the records don't have
    }
    if (!this.state.runIds.has(d.run_id)) {
      this.#emit({ type: 'run', run_id: d.run_id, experiment: d.experiment, kind: d.kind, commit: d.commit, worker: o.worker, seed: o.seed, ...runFields(o), at: now() });
    }
    return o;
  }

  // -------------------------------------------------------------------------
  // Baseline
  // -------------------------------------------------------------------------

  async #baseline(): Promise<void> {
    const o = this.opts;
    const commit = this.state.session!.base_commit;
    const text = await this.#show(commit, TRAIN_FILE);
    const wanted = o.baselineRuns;
    const have = this.state.baselineRuns.length + this.state.baselinePending.length;
    this.out.line(`baseline: ${wanted} run${wanted > 1 ? 's' : ''} of ${commit.slice(0, 7)} (${o.queue || o.workers ? 'on the workers' : o.trainCommand}; hard limit ${2 * this.#timeBudgetS + o.startupAllowanceS} s)`);
    const waits = [
      ...this.state.baselinePending.map((d) => this.#await(d, text)),
      ...Array.from({ length: Math.max(0, wanted - have) }, (_, i) => this.#dispatch(0, 'baseline', commit, text, `0000-baseline-${have + i + 1}`, FIRST_SEED + have + i)),
    ];
    const outcomes = await Promise.all(waits);
    if (outcomes.some((x) => x.aborted)) throw new ResearchError('interrupted during the baseline');
    const runs = this.state.baselineRuns;
    for (const r of runs) this.out.line(`baseline ${r.run_id.slice(this.#runId('').length)} on ${r.worker}: ${r.error ? `failed (${r.error.split('\n')[0]})` : `val_bpb ${r.val_bpb!.toFixed(6)}`}`);
    const failed = runs.find((r) => r.val_bpb === null);
    if (failed) {
      this.#emit({ type: 'baseline', experiment: 0, commit, runs: runs.map(stripRun), val_bpb: null, peak_vram_mb: null, noise_floor: 0, status: 'crash', at: now() });
      const tail = outcomes.find((x) => !x.ok)?.log.split('\n').slice(-30).join('\n') ?? '';
      // the usual set-up mistake: a wrapper between the driver and train.ts that keeps descriptor 3
      const fdHint = /no result on the result channel|RESULT_FD|EBADF|EINVAL/.test(`${failed.error}\n${tail}`)
        ? `\n(The result reaches the driver on descriptor 3: the train command must hand it down to the process that runs prepare.ts. Wrappers such as npx or the tsx CLI don't; use --train-command "node --import tsx train.ts".)`
        : '';
      throw new ResearchError(`the unmodified baseline failed (${failed.error}); fix that before research. Last lines of run.log:\n${tail}${fdHint}`);
    }
    const vals = runs.map((r) => r.val_bpb as number);
    const spread = vals.length > 1 ? std(vals) : null;
    const floor = Math.max(MIN_NOISE_FLOOR, o.noiseFloor ?? spread ?? 0);
    const valBpb = mean(vals);
    const workers = new Set(runs.map((r) => r.worker)).size;
    this.#emit({
      type: 'baseline', experiment: 0, commit, runs: runs.map(stripRun), val_bpb: valBpb, peak_vram_mb: Math.max(...runs.map((r) => r.peak_vram_mb as number)),
      noise_floor: floor, noise_std: spread, status: 'keep', at: now(),
    });
    this.#writeResults();
    this.out.line(`baseline val_bpb ${valBpb.toFixed(6)} (mean of ${vals.length} run${vals.length > 1 ? 's' : ''}${vals.length > 1 ? ` on ${workers} worker${workers > 1 ? 's' : ''}: ${vals.map((v) => v.toFixed(6)).join(', ')}` : ''})`);
    const why = o.noiseFloor !== null ? 'given' : `standard deviation of the ${vals.length} baseline runs${spread !== null && spread < MIN_NOISE_FLOOR ? `, ${spread.toFixed(6)}, raised to the minimum` : ''}`;
    this.out.line(`noise floor: ${floor.toFixed(6)} (${why}); wins smaller than ${o.noiseWidths} × this are re-run (up to ${o.maxRuns} runs) and must still win on average`);
  }

  // -------------------------------------------------------------------------
  // Experiments
  // -------------------------------------------------------------------------

  /** The "state" part of the context: best, counts, what runs now, results, recent diffs. */
  async #stateText(n: number): Promise<string> {
    const st = this.state;
    const done = [...st.completed].sort((a, b) => a.experiment - b.experiment);
    const counts = { keep: 0, discard: 0, crash: 0 };
    for (const r of done) counts[r.status as Status]++;
    const parts: string[] = [];
    parts.push(`# State of the research (tag ${this.opts.tag}, experiment #${n})`);
    parts.push([
      `- best val_bpb so far: ${this.#best.toFixed(6)} (experiment #${st.bestExperiment}, commit ${(st.bestCommit ?? '').slice(0, 7)}); baseline ${st.baseline?.val_bpb?.toFixed(6) ?? '?'}`,
      `- noise floor: ${this.#noiseFloor.toFixed(6)} (a win smaller than ${this.opts.noiseWidths} × this is re-run and kept only if it still wins on average)`,
      `- experiments so far: ${done.length} (keep ${counts.keep}, discard ${counts.discard}, crash ${counts.crash})`,
      `- each run trains for TIME_BUDGET = ${this.#timeBudgetS} s; runs over ${2 * this.#timeBudgetS + this.opts.startupAllowanceS} s are killed`,
    ].join('\n'));

    const running = [...st.inFlight.values()].filter((f) => f.experiment !== n && f.commit);
    if (running.length) {
      const activity = this.#executor?.activity() ?? [];
      const lines = ['# Running now (other experiments in flight; propose something different)'];
      for (const f of running) {
        const a = activity.find((x) => x.experiment === f.experiment);
        lines.push(`- #${f.experiment} "${f.description}" (from ${f.parent.slice(0, 7)}${a ? `, on ${a.worker}${a.progress ? `: ${a.progress}` : ''}` : ''})`);
        let diff = '';
        try {
          diff = await this.#diff(f.parent, f.commit);
        } catch {
          diff = '';
        }
        if (diff) lines.push(`\`\`\`diff\n${diff.trim().slice(0, 3000)}\n\`\`\``);
      }
      parts.push(lines.join('\n'));
    }

    const MAX_ROWS = 150;
    const rows = [`commit\tval_bpb\tmemory_gb\tstatus\tdescription`];
    if (st.baseline) rows.push(`${st.baseline.commit.slice(0, 7)}\t${st.baseline.val_bpb?.toFixed(6)}\t${((st.baseline.peak_vram_mb ?? 0) / 1024).toFixed(1)}\tkeep\tbaseline`);
    for (const r of done) {
      rows.push(`${(r.commit ?? '').slice(0, 7)}\t${(r.val_bpb ?? 0).toFixed(6)}\t${((r.peak_vram_mb ?? 0) / 1024).toFixed(1)}\t${r.status}\t#${r.experiment} ${r.description}`);
    }
    const shown = rows.length - 1 > MAX_ROWS ? [rows[0], `(… ${rows.length - 1 - MAX_ROWS} earlier rows omitted)`, ...rows.slice(-MAX_ROWS)] : rows;
    parts.push(`# Finished experiments (results.tsv)\n\n\`\`\`\n${shown.join('\n')}\n\`\`\``);

    const recent = done.filter((r) => r.commit !== null).sort((a, b) => a.at.localeCompare(b.at)).slice(-this.opts.recentDiffs);
    if (recent.length) {
      const diffs: string[] = ['# Recent experiments, oldest first: each as a diff of train.ts against the commit it started from'];
      for (const r of recent) {
        let diff = '';
        try {
          diff = await this.#diff(r.parent, r.commit as string);
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
    return this.opts.maxUsd !== null && this.state.usdKnown && this.#liveUsd() >= this.opts.maxUsd;
  }

  // Spent so far: recorded outcomes plus the conversations still open.
  #openUsd = new Map<number, () => number | null>();
  #liveUsd(): number {
    let usd = this.state.usd;
    for (const [n, f] of this.#openUsd) if (!this.state.finished.has(n)) usd += f() ?? 0;
    return usd;
  }

  /** Ask until a proposal applies to `base` and passes the guard; null when retries run out. */
  async #validProposal(conv: Conversation, base: string, label: string, rejected: ExperimentRecord['rejected']): Promise<{ proposal: Proposal; text: string } | null> {
    let rejections = 0;
    for (;;) {
      if (this.#budgetReached()) throw new ApiAbortedError(`the --max-usd budget ($${this.opts.maxUsd}) is spent`);
      this.out.status(`${label} · asking ${this.opts.model} · ${this.#bestText()} · ${this.#costText()}`);
      const turn = await conv.next(this.#abort.signal, () => this.#stopRequested);
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

  async #experiment(n: number): Promise<void> {
    const t0 = Date.now();
    const parent = this.state.bestCommit as string;
    const bestBefore = this.#best;
    this.#emit({ type: 'propose', experiment: n, parent, at: now() });
    const label = `#${n}`;
    const agent = this.#agent!;
    const base = await this.#show(parent, TRAIN_FILE);
    const conv = agent.startConversation({
      programMd: this.#readOr('program.md', '(program.md is missing)'),
      readme: this.#readOr('README.md', '(no README.md)'),
      prepareTs: this.#readOr('prepare.ts', '(prepare.ts is missing)'),
      baselineLog: this.#baselineLog(),
      trainTs: base,
      state: await this.#stateText(n),
    });
    this.#openUsd.set(n, () => conv.usd);
    const ctx: ExperimentContext = { n, t0, bestBefore, description: '', attempts: [], rejected: [], repairs: 0, replays: 0, tokens: () => conv.usage, usd: () => conv.usd };
    try {
      const first = await this.#validProposal(conv, base, label, ctx.rejected);
      if (!first) {
        this.#invalid.add(n);
        this.#emit(this.#outcome(ctx, 'invalid', { parent, commit: null, runs: [] }));
        this.out.line(`${label} gave up: ${ctx.rejected.length} proposals rejected (see ${RECORDS_FILE})`);
        return;
      }
      ctx.description = first.proposal.description;
      let text = first.text;
      let repairsLeft = this.opts.fixAttempts;
      for (;;) {
        const commit = await this.git.commitOnto(parent, TRAIN_FILE, text, ctx.description);
        ctx.attempts.push(commit);
        this.#emit({ type: 'start', experiment: n, parent, commit, description: ctx.description, pid: null, tokens: conv.usage, usd: conv.usd, at: now() });
        this.out.line(`${label} ${commit.slice(0, 7)} "${ctx.description}"${ctx.attempts.length > 1 ? ` (repair ${ctx.attempts.length - 1})` : ''}`);
        const logName = `${pad4(n)}${ctx.attempts.length > 1 ? `-repair${ctx.attempts.length - 1}` : ''}`;
        const result = await this.#dispatch(n, ctx.attempts.length > 1 ? 'repair' : 'first', commit, text, logName, FIRST_SEED);
        if (result.aborted) return this.#abandonExperiment(ctx, 'interrupted (Ctrl-C) during training');
        if (result.ok || repairsLeft <= 0) break;
        // Crash: offer the model a repair of the crashed file.
        this.out.line(`${label} crashed: ${result.error}; asking for a repair (${repairsLeft} left)`);
        conv.crashed(result.error ?? 'crash', result.log.split('\n').slice(-50).join('\n'), repairsLeft);
        repairsLeft--;
        const repair = await this.#validProposal(conv, text, `${label} repair`, ctx.rejected);
        if (!repair) break;
        ctx.repairs++;
        await this.git.updateRef(`${pad4(n)}-attempt${ctx.attempts.length}`, commit);
        text = repair.text;
      }
      await this.#conclude(ctx);
    } catch (e) {
      if (e instanceof ApiAbortedError) return this.#abandonExperiment(ctx, e.message);
      if (e instanceof FatalApiError) {
        await this.#abandonExperiment(ctx, `API error: ${e.message}`);
        throw e;
      }
      try {
        const commit = ctx.attempts.at(-1);
        if (commit) await this.git.updateRef(`${pad4(n)}-error`, commit);
      } catch {
        // --resume will sort it out
      }
      throw e;
    } finally {
      this.#openUsd.delete(n);
    }
  }

  /** Continue an experiment a killed driver left in flight: its runs are found or re-queued. */
  async #resumeExperiment(n: number): Promise<void> {
    const f = this.state.inFlight.get(n)!;
    const ctx: ExperimentContext = {
      n, t0: Date.parse(f.startedAt) || Date.now(), bestBefore: this.#barOf(f.firstParent), description: f.description, attempts: [...f.attempts],
      rejected: [], repairs: Math.max(0, f.attempts.length - 1), replays: f.replay ? 1 : 0, tokens: () => f.tokens, usd: () => f.usd,
    };
    this.out.line(`#${n} resumed: "${f.description}" (${f.pending.length} run${f.pending.length === 1 ? '' : 's'} to collect)`);
    for (const d of [...f.pending]) {
      const o = await this.#await(d);
      if (o.aborted) return this.#abandonExperiment(ctx, 'interrupted (Ctrl-C) during training');
    }
    const current = this.state.inFlight.get(n)!;
    if (!current.runs.some((r) => r.commit === current.commit)) {
      const o = await this.#dispatch(n, current.replay ? 'confirm' : 'first', current.commit, await this.#show(current.commit, TRAIN_FILE), `${pad4(n)}-resumed${Date.now().toString(36)}`, FIRST_SEED);
      if (o.aborted) return this.#abandonExperiment(ctx, 'interrupted (Ctrl-C) during training');
    }
    await this.#conclude(ctx);
  }

  /** The bar a commit set: the mean of the experiment (or baseline) that kept it. */
  #barOf(commit: string): number {
    if (this.state.baseline?.commit === commit && this.state.baseline.val_bpb !== null) return this.state.baseline.val_bpb;
    const kept = this.state.completed.find((r) => r.status === 'keep' && r.commit === commit);
    return kept?.val_bpb ?? this.#best;
  }

  /**
   * Decide an experiment from its recorded runs: crash; discard (its mean does not beat the bar
   * of its base); replay onto the new best if its base was superseded; re-run a win smaller than
   * a few noise widths; keep.
   */
  async #conclude(ctx: ExperimentContext): Promise<void> {
    const { n } = ctx;
    const label = `#${n}`;
    const o = this.opts;
    for (;;) {
      const f = this.state.inFlight.get(n);
      if (!f) return;
      const runs = f.runs.filter((r) => r.commit === f.commit);
      const failed = runs.find((r) => r.val_bpb === null);
      if (failed || runs.length === 0) {
        const log = this.#readLog(failed?.run_id);
        const timedOut = /^killed after the/.test(failed?.error ?? '');
        const summary = crashSummary({ ok: false, valBpb: null, peakVramMb: null, error: failed?.error ?? null, exitCode: null, signal: null, timedOut, aborted: false, durationS: 0 }, log);
        const crashWhy = `${f.replay ? 'replay: ' : runs.length > 1 ? 're-run: ' : ''}${summary}`;
        const excerpt = `${failed?.error ?? 'no run'}\n${log.split('\n').slice(-20).join('\n')}`.slice(-2000);
        return this.#record(ctx, 'crash', { error_excerpt: excerpt, crash_reason: crashWhy, decision: `crashed: ${failed?.error ?? 'no run'}` });
      }
      const vals = runs.map((r) => r.val_bpb as number);
      const m = mean(vals);
      const superseded = f.parent !== this.state.bestCommit;
      const bar = superseded ? this.#barOf(f.parent) : this.#best;
      if (!(m < bar)) {
        return this.#record(ctx, 'discard', { val_bpb: m, bar, decision: `mean ${m.toFixed(6)} of ${vals.length} run${vals.length > 1 ? 's' : ''} does not beat ${bar.toFixed(6)}` });
      }
      if (superseded) {
        if (ctx.replays >= MAX_REPLAYS) {
          return this.#record(ctx, 'discard', { val_bpb: m, bar, decision: 'superseded too often while it ran' });
        }
        const best = this.state.bestCommit as string;
        const [ours, baseText, theirs] = await Promise.all([this.#show(best, TRAIN_FILE), this.#show(f.parent, TRAIN_FILE), this.#show(f.commit, TRAIN_FILE)]);
        const merged = await this.git.merge3(ours, baseText, theirs);
        const report = merged === null ? null : this.#guard.check(merged);
        if (merged === null || !report?.ok) {
          return this.#record(ctx, 'discard', { val_bpb: m, bar, decision: `won on its base by ${(bar - m).toFixed(6)}, but ${merged === null ? 'does not apply' : 'fails the guard'} on the new best #${this.state.bestExperiment}` });
        }
        const commit = await this.git.commitOnto(best, TRAIN_FILE, merged, ctx.description);
        const replays = ++ctx.replays;
        const original = f.commit; // (the record below moves f to the replayed commit)
        this.#emit({ type: 'replay', experiment: n, from_commit: original, from_parent: f.parent, parent: best, commit, at: now() });
        await this.git.updateRef(`${pad4(n)}-before-replay${replays}`, original);
        this.out.line(`${label} beats its base by ${(bar - m).toFixed(6)}, but #${this.state.bestExperiment} was kept meanwhile: replaying it on ${best.slice(0, 7)} to confirm`);
        const r = await this.#dispatch(n, 'confirm', commit, merged, `${pad4(n)}-replay${replays}`, FIRST_SEED);
        if (r.aborted) return this.#abandonExperiment(ctx, 'interrupted (Ctrl-C) during the replay');
        continue;
      }
      const win = bar - m;
      if (win < o.noiseWidths * this.#noiseFloor && vals.length < o.maxRuns) {
        this.out.line(`${label} val_bpb ${m.toFixed(6)} beats ${bar.toFixed(6)} by ${win.toFixed(6)} < ${o.noiseWidths} × noise floor ${this.#noiseFloor.toFixed(6)}: re-running (run ${vals.length + 1} of at most ${o.maxRuns})`);
        const text = await this.#show(f.commit, TRAIN_FILE);
        const r = await this.#dispatch(n, 'rerun', f.commit, text, `${pad4(n)}${f.replay ? '-replay' : ''}-rerun${vals.length}`, FIRST_SEED + vals.length);
        if (r.aborted) return this.#abandonExperiment(ctx, 'interrupted (Ctrl-C) during the re-run');
        continue;
      }
      return this.#record(ctx, 'keep', { val_bpb: m, bar, decision: `mean ${m.toFixed(6)} of ${vals.length} run${vals.length > 1 ? 's' : ''} beats ${bar.toFixed(6)} by ${win.toFixed(6)} (noise floor ${this.#noiseFloor.toFixed(6)})` });
    }
  }

  #readLog(runId: string | undefined): string {
    if (!runId) return '';
    const path = join(this.repoDir, STATE_DIR, this.opts.tag, 'logs', `${runId.slice(this.#runId('').length)}.log`);
    return existsSync(path) ? readFileSync(path, 'utf8') : '';
  }

  #outcome(ctx: ExperimentContext, status: ExperimentRecord['status'], extra: Partial<ExperimentRecord>): ExperimentRecord {
    const f = this.state.inFlight.get(ctx.n);
    return {
      type: 'experiment', experiment: ctx.n, status, parent: f?.parent ?? '', commit: f?.commit || null, attempts: ctx.attempts, description: ctx.description,
      val_bpb: null, peak_vram_mb: null, runs: (f?.runs ?? []).map(stripRun), best_before: ctx.bestBefore, duration_s: Number(((Date.now() - ctx.t0) / 1000).toFixed(1)),
      error_excerpt: null, crash_reason: null, rejected: ctx.rejected, repairs: ctx.repairs, tokens: ctx.tokens() ?? { input: 0, output: 0, cacheCreation: 0, cacheRead: 0 },
      usd: ctx.usd(), ref: null, at: now(), replayed_from: f?.replay ? f.replay.from_commit : null, ...extra,
    };
  }

  /** Record an experiment's outcome; a keep moves the branch (and the checkout) to its commit. */
  async #record(ctx: ExperimentContext, status: Status, extra: Partial<ExperimentRecord>): Promise<void> {
    const f = this.state.inFlight.get(ctx.n)!;
    const commit = f.commit;
    const ok = f.runs.filter((r) => r.commit === commit && r.peak_vram_mb !== null);
    const ref = await this.git.updateRef(pad4(ctx.n), commit);
    const rec = this.#outcome(ctx, status, { peak_vram_mb: ok.length ? Math.max(...ok.map((r) => r.peak_vram_mb as number)) : null, ref, ...extra });
    if (status === 'keep' && (f.parent !== this.state.bestCommit)) {
      // a keep made while another was kept: judge it again (replay) instead
      return this.#conclude(ctx);
    }
    this.#emit(rec);
    this.#writeResults();
    this.#completedHere++;
    if (status === 'keep') await this.#withGit(() => this.git.resetHard(commit));
    const took = fmtDuration((Date.now() - ctx.t0) / 1000);
    const nOk = ok.length;
    const what = status === 'crash' ? `crash (${rec.crash_reason}: ${(rec.error_excerpt ?? '').split('\n')[0]})` : `${status} ${(rec.val_bpb as number).toFixed(6)}${nOk > 1 ? ` (mean of ${nOk} runs)` : ''}`;
    this.out.line(`#${ctx.n} ${what} "${ctx.description}" · ${took} · ${this.#bestText()} · ${this.#costText()}`);
    await this.#charts();
  }

  async #abandonExperiment(ctx: ExperimentContext, reason: string): Promise<void> {
    const commit = ctx.attempts.at(-1) ?? null;
    let ref: string | null = null;
    if (commit) ref = await this.git.updateRef(`${pad4(ctx.n)}-abandoned`, commit);
    this.#emit({ type: 'abandoned', experiment: ctx.n, commit, reason, tokens: ctx.tokens(), usd: ctx.usd(), ref, at: now() });
    this.#writeResults();
    this.out.line(`#${ctx.n} abandoned: ${reason}${ref ? ` (commit kept as ${ref})` : ''}`);
  }

  /** The first baseline run's log, capped (it goes into every prompt). */
  #baselineLog(): string {
    const path = join(this.repoDir, STATE_DIR, this.opts.tag, 'logs', '0000-baseline-1.log');
    if (!existsSync(path)) return '';
    const text = readFileSync(path, 'utf8');
    return text.length > 8000 ? text.slice(-8000) : text;
  }

  #readOr(name: string, fallback: string): string {
    const p = this.#path(name);
    return existsSync(p) ? readFileSync(p, 'utf8') : fallback;
  }

  #stopReason(): string | null {
    const o = this.opts;
    if (this.#stopRequested) return 'stop requested';
    if (o.maxExperiments !== null && this.state.completed.length >= o.maxExperiments) return `--max-experiments ${o.maxExperiments} reached`;
    if (o.hours !== null && Date.now() - this.#startedAt >= o.hours * 3600_000) return `--hours ${o.hours} reached`;
    if (this.#budgetReached()) return `--max-usd ${o.maxUsd} reached ($${this.#liveUsd().toFixed(2)})`;
    if (this.#consecutiveInvalid >= o.maxConsecutiveInvalid) return `${this.#consecutiveInvalid} experiments in a row without a usable proposal`;
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
      for (const c of this.#cleanups.splice(0)) await c();
      unlock();
    }
  }

  /** What the dashboard shows that the records don't: who runs what now. */
  #liveView(): LiveView {
    return { activity: this.#executor?.activity() ?? [], workers: this.#executor?.workers() ?? [], usd: this.#liveUsd(), running: true };
  }

  #launch(task: Promise<void>, n: number): void {
    const t = task.then(() => {
      if (this.#invalid.has(n)) this.#consecutiveInvalid++;
      else if (this.state.completed.some((r) => r.experiment === n)) this.#consecutiveInvalid = 0;
    }, (e: Error) => {
      this.#fatal ??= e;
      this.abandon();
    }).finally(() => this.#tasks.delete(t));
    this.#tasks.add(t);
  }

  async #run(): Promise<ResearchResult> {
    const o = this.opts;
    if (o.noiseFloor === null && o.baselineRuns < 3) throw new ResearchError(`--baseline-runs must be at least 3 to measure the noise floor (or give --noise-floor)`);
    this.#agent = new ResearchAgent({
      model: o.model, apiKey: o.apiKey, baseURL: o.baseURL, maxTokens: o.maxTokens, effort: o.effort, price: this.#price,
      maxRetries: o.apiMaxRetries, backoffInitialMs: o.backoffInitialMs, backoffMaxMs: o.backoffMaxMs, log: (l) => this.out.line(l),
    });
    await this.#agent.checkModel();
    if (o.resume) await this.#resume();
    else await this.#startFresh();
    this.#executor = await this.#openExecutor();
    if (o.dashboardPort !== null) {
      this.#dashboard = await startDashboard({ repoDir: this.repoDir, port: o.dashboardPort, live: () => this.#liveView() });
      this.#cleanups.unshift(() => this.#dashboard?.close());
      this.out.line(`dashboard: ${this.#dashboard.url}`);
    }
    const ticker = setInterval(() => this.#status(), 1000);
    ticker.unref();
    let stopReason: string | null = null;
    try {
      if (!this.state.baseline) {
        await this.#baseline();
        await this.#charts();
      } else {
        this.out.line(`noise floor: ${this.#noiseFloor.toFixed(6)} (from the baseline)`);
      }
      for (const n of [...this.state.inFlight.keys()]) this.#launch(this.#resumeExperiment(n), n);
      for (;;) {
        stopReason = this.#fatal ? 'error' : this.#stopReason();
        if (!stopReason) {
          while (this.#tasks.size < this.#executor.capacity() && (o.maxExperiments === null || this.state.completed.length + this.#tasks.size < o.maxExperiments)) {
            const n = this.state.nextExperiment;
            this.#launch(this.#experiment(n), n);
            if (this.#stopReason()) break;
          }
        }
        if (this.#tasks.size === 0) break;
        await Promise.race([...this.#tasks, sleep(500)]);
      }
      if (this.#fatal) throw this.#fatal;
      stopReason ??= 'stopped';
    } catch (e) {
      await Promise.allSettled([...this.#tasks]);
      this.#emit({ type: 'stop', reason: `error: ${(e as Error).message.split('\n')[0]}`, at: now() });
      throw e;
    } finally {
      clearInterval(ticker);
    }
    if (this.#abandoning && stopReason !== 'stop requested') stopReason = 'stop requested';
    this.#emit({ type: 'stop', reason: stopReason, at: now() });
    this.#writeResults();
    await this.#charts();
    this.out.line(`stopped: ${stopReason}. ${this.state.completed.length} experiments, ${this.#bestText()}, ${this.#costText()}. Resume with --resume --tag ${o.tag}.`);
    return {
      stopReason, experimentsRun: this.#completedHere, bestValBpb: Number.isFinite(this.#best) ? this.#best : null, bestCommit: this.state.bestCommit,
      noiseFloor: this.state.noiseFloor, usd: this.state.usdKnown ? this.state.usd : null,
    };
  }

  #status(): void {
    const act = this.#executor?.activity() ?? [];
    const running = [...this.state.inFlight.values()].map((f) => {
      const a = act.find((x) => x.experiment === f.experiment);
      if (!f.commit) return `#${f.experiment} asking ${this.opts.model}`;
      return `#${f.experiment}${a ? ` ${a.worker} ${fmtDuration((Date.now() - a.since) / 1000)}${a.progress ? ` ${a.progress}` : ''}` : ' queued'}`;
    });
    this.out.status(`${running.join(' | ') || 'idle'} · ${this.#bestText()} · ${this.#costText()}`);
  }
}

function runFields(o: RunOutcome): Pick<RunRecord, 'val_bpb' | 'peak_vram_mb' | 'duration_s' | 'error'> {
  return { val_bpb: o.valBpb, peak_vram_mb: o.peakVramMb, duration_s: Number(o.durationS.toFixed(1)), error: o.error };
}

function stripRun(r: RunRecord & { type?: string; at?: string; experiment?: number }): RunRecord {
  return {
    val_bpb: r.val_bpb, peak_vram_mb: r.peak_vram_mb, duration_s: r.duration_s, error: r.error, run_id: r.run_id, worker: r.worker, seed: r.seed, kind: r.kind, commit: r.commit,
  };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
