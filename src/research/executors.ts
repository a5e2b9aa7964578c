/**
 * @file How the driver gets runs done. `InlineExecutor`: one run at a time in a workspace of the
 * driver's own checkout (no Redis; the single-GPU default). `QueueExecutor`: runs are BullMQ jobs
 * on Redis, taken by `npm run worker` processes on any machine; the job id is the run id, so a
 * request made twice (a resumed driver) finds the job it already queued, and a result is read
 * back from the queue however often it was delivered. The driver waits by polling the jobs it
 * needs (a resumed driver, or a lost event, changes nothing), re-queues a job the queue has lost
 * (a Redis restarted without persistence), and reads each active job's progress (which worker,
 * how far) for the status line and the dashboard.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Queue, type ConnectionOptions } from 'bullmq';
import { killSlotOrphan, runInWorkspace, type RunOutcome, type RunRequest } from './workspace.ts';

export const DEFAULT_QUEUE_NAME = 'autoresearch';

/** What a worker is doing, for the status line and the dashboard. */
export interface Activity {
  worker: string;
  runId: string;
  experiment: number;
  kind: string;
  progress: string;
  since: number;
}

export interface Executor {
  /** Experiments the driver may have in flight now. */
  capacity(): number;
  /** Run a request (idempotent by runId): resolves with its outcome. */
  submit(req: RunRequest): Promise<RunOutcome>;
  /** Runs in progress. */
  activity(): Activity[];
  /** Names of the workers serving (for the dashboard). */
  workers(): string[];
  /** Abandon every run (Ctrl-C twice): pending submits resolve as aborted. */
  abandon(): void;
  close(): Promise<void>;
}

function abortedOutcome(req: RunRequest, worker: string, why: string): RunOutcome {
  return {
    runId: req.runId, worker, ok: false, valBpb: null, peakVramMb: null, error: why, rejected: null, timedOut: false, aborted: true,
    durationS: 0, trainingSeconds: null, seed: req.seed, log: '',
  };
}

// ---------------------------------------------------------------------------
// Inline: the driver's own slot
// ---------------------------------------------------------------------------

export class InlineExecutor implements Executor {
  #abort = new AbortController();
  #current: Activity | null = null;
  #chain: Promise<unknown> = Promise.resolve();
  readonly workDir: string;

  constructor(readonly repoDir: string, workDir: string, readonly trainCommand: string, readonly log: (line: string) => void) {
    this.workDir = workDir;
    if (killSlotOrphan(workDir)) log('stopped the training job left running by the interrupted driver');
  }

  capacity(): number {
    return 1;
  }

  submit(req: RunRequest): Promise<RunOutcome> {
    const run = async () => {
      if (this.#abort.signal.aborted) return abortedOutcome(req, 'local', 'abandoned (interrupted)');
      this.#current = { worker: 'local', runId: req.runId, experiment: req.experiment, kind: req.kind, progress: '', since: Date.now() };
      try {
        return await runInWorkspace(req, { sourceDir: this.repoDir, workDir: this.workDir, worker: 'local', trainCommand: this.trainCommand }, this.#abort.signal, (p) => {
          if (this.#current) this.#current.progress = p;
        });
      } finally {
        this.#current = null;
      }
    };
    const p = this.#chain.then(run, run);
    this.#chain = p;
    return p;
  }

  activity(): Activity[] {
    return this.#current ? [{ ...this.#current }] : [];
  }

  workers(): string[] {
    return ['local'];
  }

  abandon(): void {
    this.#abort.abort();
  }

  async close(): Promise<void> {}
}

// ---------------------------------------------------------------------------
// Queue: BullMQ on Redis
// ---------------------------------------------------------------------------

/** `redis://[user:pass@]host:port[/db]`, `rediss://…` or `unix:///path/to/redis.sock` → BullMQ connection options. */
export function parseQueueUrl(url: string): ConnectionOptions {
  if (url.startsWith('unix://') || url.startsWith('unix:')) {
    const path = url.replace(/^unix:(\/\/)?/, '');
    if (!path.startsWith('/')) throw new Error(`--queue ${url}: a unix socket URL needs an absolute path (unix:///run/redis.sock)`);
    return { path, maxRetriesPerRequest: null };
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`--queue expects redis://HOST:PORT (or unix:///path/redis.sock), got '${url}'`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error(`--queue expects redis://HOST:PORT (or unix:///path/redis.sock), got '${url}'`);
  const db = u.pathname.replace(/^\//, '');
  if (db && !/^\d+$/.test(db)) throw new Error(`--queue ${url}: the path must be a database number (redis://host:port/0)`);
  return {
    host: u.hostname || '127.0.0.1', port: u.port ? Number(u.port) : 6379, ...(db ? { db: Number(db) } : {}),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}), ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}), maxRetriesPerRequest: null,
  };
}

/** Fail fast with a clear message when nothing answers at the queue's address. */
export async function checkRedis(url: string, timeoutMs = 5000): Promise<void> {
  const { Redis } = await import('ioredis');
  const client = new Redis({ ...(parseQueueUrl(url) as object), lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null, connectTimeout: timeoutMs });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.ping();
  } catch (e) {
    throw new Error(`cannot reach Redis at ${url} (${(e as Error).message}): start it (Debian/Ubuntu: apt-get install redis-server) or check --queue`);
  } finally {
    client.disconnect();
  }
}

interface Waiter {
  req: RunRequest;
  resolve: (o: RunOutcome) => void;
  addedAt: number;
}

export interface QueueExecutorOptions {
  url: string;
  queueName?: string;
  /** Fixed number of experiments in flight; default: as many as there are workers (at least 1). */
  parallel?: number | null;
  pollMs?: number;
  log: (line: string) => void;
}

export class QueueExecutor implements Executor {
  readonly queue: Queue;
  readonly #opts: QueueExecutorOptions;
  #waiters = new Map<string, Waiter>();
  #activity = new Map<string, Activity>();
  #workers: string[] = [];
  #timer: NodeJS.Timeout | null = null;
  #polling = false;
  #closed = false;
  #warnedNoWorkers = false;

  private constructor(opts: QueueExecutorOptions) {
    this.#opts = opts;
    this.queue = new Queue(opts.queueName ?? DEFAULT_QUEUE_NAME, { connection: parseQueueUrl(opts.url) });
    this.queue.on('error', () => {}); // connection errors: ioredis reconnects; polling reports lasting trouble
  }

  static async open(opts: QueueExecutorOptions): Promise<QueueExecutor> {
    await checkRedis(opts.url);
    const ex = new QueueExecutor(opts);
    await ex.#refreshWorkers();
    ex.#timer = setInterval(() => void ex.#poll(), opts.pollMs ?? 300);
    return ex;
  }

  capacity(): number {
    return this.#opts.parallel ?? Math.max(1, this.#workers.length);
  }

  activity(): Activity[] {
    return [...this.#activity.values()];
  }

  workers(): string[] {
    return [...this.#workers];
  }

  async #refreshWorkers(): Promise<void> {
    // each worker's connection is named <prefix>:<queue in base64>:w:<worker name>
    const clients = (await this.queue.getWorkers()) as { rawname?: string }[];
    this.#workers = [...new Set(clients.map((c) => String(c.rawname ?? '').split(':w:')[1] ?? '').filter((n) => n !== ''))].sort();
  }

  submit(req: RunRequest): Promise<RunOutcome> {
    return new Promise((resolve) => {
      const existing = this.#waiters.get(req.runId);
      if (existing) {
        const prev = existing.resolve;
        existing.resolve = (o) => {
          prev(o);
          resolve(o);
        };
        return;
      }
      this.#waiters.set(req.runId, { req, resolve, addedAt: Date.now() });
      void this.#add(req);
    });
  }

  async #add(req: RunRequest): Promise<void> {
    // the same job id twice is a no-op in BullMQ: a resumed driver finds its job
    await this.queue.add(`${req.tag} #${req.experiment} ${req.kind}`, req, {
      jobId: req.runId, attempts: 1, removeOnComplete: { age: 7 * 86400 }, removeOnFail: { age: 7 * 86400 },
    });
  }

  async #poll(): Promise<void> {
    if (this.#polling || this.#closed) return;
    this.#polling = true;
    try {
      await this.#refreshWorkers();
      if (this.#waiters.size && this.#workers.length === 0 && !this.#warnedNoWorkers) {
        this.#warnedNoWorkers = true;
        this.#opts.log(`waiting for workers: none is serving queue '${this.queue.name}' (start one: npm run worker -- --queue ${this.#opts.url})`);
      }
      if (this.#workers.length) this.#warnedNoWorkers = false;
      for (const [runId, w] of [...this.#waiters]) {
        const job = await this.queue.getJob(runId);
        if (!job) {
          await this.#add(w.req); // lost (e.g. Redis restarted without its data): queue it again
          continue;
        }
        const state = await job.getState();
        if (state === 'completed' && job.returnvalue) {
          this.#finish(runId, job.returnvalue as RunOutcome);
        } else if (state === 'failed') {
          this.#finish(runId, {
            ...abortedOutcome(w.req, job.processedBy ?? 'unknown', `the worker failed the job: ${job.failedReason ?? 'no reason given'}`), aborted: false,
          });
        } else if (state === 'active') {
          const p = (job.progress ?? {}) as { worker?: string; text?: string; since?: number };
          this.#activity.set(runId, {
            worker: p.worker ?? job.processedBy ?? '?', runId, experiment: w.req.experiment, kind: w.req.kind, progress: p.text ?? '', since: p.since ?? job.processedOn ?? Date.now(),
          });
        } else {
          this.#activity.delete(runId);
        }
      }
    } catch (e) {
      this.#opts.log(`queue: ${(e as Error).message}`);
    } finally {
      this.#polling = false;
    }
  }

  #finish(runId: string, outcome: RunOutcome): void {
    const w = this.#waiters.get(runId);
    this.#waiters.delete(runId);
    this.#activity.delete(runId);
    w?.resolve(outcome);
  }

  abandon(): void {
    for (const [runId, w] of [...this.#waiters]) {
      this.#finish(runId, abortedOutcome(w.req, 'queue', 'abandoned (interrupted)'));
      void this.queue.getJob(runId).then((j) => j?.remove()).catch(() => {}); // an active job is locked: it runs out unrecorded
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.queue.close();
  }
}

// ---------------------------------------------------------------------------
// Local workers and a private Redis for `--workers N`
// ---------------------------------------------------------------------------

/** Is Redis's server installed? */
export function redisServerPath(): string | null {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/usr/sbin', '/usr/local/bin'])) {
    const p = join(dir, 'redis-server');
    if (dir && existsSync(p)) return p;
  }
  return null;
}

export const NO_REDIS = 'redis-server is not installed: it carries the experiment queue (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)';

/**
 * A Redis only this driver uses, on a unix socket in `dir`, without persistence, that exits
 * when the driver does (a shell watches the driver's pid): a resumed driver re-queues its runs.
 */
export async function startPrivateRedis(dir: string): Promise<{ url: string; stop: () => void }> {
  const bin = redisServerPath();
  if (!bin) throw new Error(NO_REDIS);
  mkdirSync(dir, { recursive: true });
  const sock = join(dir, 'redis.sock');
  rmSync(sock, { force: true });
  const script = `"${bin}" --port 0 --unixsocket "${sock}" --unixsocketperm 700 --save '' --appendonly no --dir "${dir}" --loglevel warning & R=$!; ` +
    `trap 'kill $R 2>/dev/null; exit 0' TERM INT; while kill -0 ${process.pid} 2>/dev/null && kill -0 $R 2>/dev/null; do sleep 1; done; kill $R 2>/dev/null`;
  const child = spawn('sh', ['-c', script], { stdio: 'ignore', detached: true });
  child.unref();
  const url = `unix://${sock}`;
  const t0 = Date.now();
  for (;;) {
    try {
      await checkRedis(url, 1000);
      break;
    } catch (e) {
      if (Date.now() - t0 > 10_000) throw new Error(`the private Redis did not start: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url,
    stop: () => {
      try {
        process.kill(-(child.pid as number), 'SIGTERM');
      } catch {
        // gone already
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Spawn `n` worker processes serving `url` that exit when this process does. */
export function spawnLocalWorkers(n: number, opts: { url: string; queueName: string; repoDir: string; trainCommand: string; tag: string; lockDurationS?: number }): ChildProcess[] {
  const workerTs = join(import.meta.dirname, 'worker.ts');
  const children: ChildProcess[] = [];
  for (let i = 0; i < n; i++) {
    const args = ['--import', 'tsx', workerTs, '--queue', opts.url, '--queue-name', opts.queueName, '--repo', opts.repoDir, '--name', `${opts.tag}-local${i + 1}`,
      '--train-command', opts.trainCommand, '--parent-pid', String(process.pid), '--quiet'];
    if (opts.lockDurationS) args.push('--lock-duration', String(opts.lockDurationS));
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'], env: process.env });
    children.push(child);
  }
  return children;
}
