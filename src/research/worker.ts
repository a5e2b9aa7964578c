/**
 * @file `npm run worker -- --queue redis://HOST:PORT [--gpu N]`: a long-lived worker for one GPU.
 * It takes one run at a time from the BullMQ queue, trains it in its own workspace (a copy of
 * this checkout's fixed files, `.autoresearch/workers/<name>/`) through runExperiment — train.ts
 * runs in a child process group, never in the worker — and returns the harness's result as the
 * job's return value. A worker that dies mid-run (kill -9, a lost machine) stops renewing its
 * job's lock: the queue hands the job to another worker after --lock-duration, and the driver
 * records each run once, by its id, however many times it was delivered.
 */
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Worker, type Job } from 'bullmq';
import { isMain } from '../util/main.ts';
import { checkRedis, DEFAULT_QUEUE_NAME, parseQueueUrl } from './executors.ts';
import { guardFor } from './guard_cache.ts';
import { DEFAULT_TRAIN_COMMAND, killSlotOrphan, runInWorkspace, syncWorkspace, type RunOutcome, type RunRequest } from './workspace.ts';

export const WORKER_USAGE = `Usage: npm run worker -- --queue redis://HOST:PORT [options]

Serves research runs from the queue that \`npm run research -- --queue …\` fills: one run at a
time, trained in .autoresearch/workers/<name>/ with this checkout's prepare.ts, src/ and kernels/
(they must match the driver's; the hashes travel with each run), result returned to the queue.

  --queue <url>            redis://HOST:PORT[/db] or unix:///path/redis.sock (required)
  --gpu <n>                adapter index for this worker's runs (AUTORESEARCH_GPU_INDEX=n)
  --name <name>            worker name shown by the driver (default <host>-gpu<n> or <host>-<pid>)
  --train-command <cmd>    training command (default "${DEFAULT_TRAIN_COMMAND}")
  --repo <dir>             this project's checkout (default: the current directory)
  --queue-name <name>      BullMQ queue name (default ${DEFAULT_QUEUE_NAME})
  --lock-duration <s>      a run whose worker stops answering is retried after this long (default 30;
                           keep it well above the guard's type check, which holds the worker for seconds)
  -h, --help               this text

Stop with Ctrl-C: the run in progress is stopped and goes back to the queue for another worker.`;

export interface WorkerOptions {
  url: string;
  queueName: string;
  repoDir: string;
  name: string;
  gpu: number | null;
  trainCommand: string;
  lockDurationS: number;
  parentPid: number | null;
  quiet: boolean;
}

export class WorkerArgError extends Error {}

export function parseWorkerArgs(argv: string[]): WorkerOptions | null {
  let v;
  try {
    ({ values: v } = parseArgs({
      args: argv, strict: true, options: {
        queue: { type: 'string' }, gpu: { type: 'string' }, name: { type: 'string' }, 'train-command': { type: 'string' }, repo: { type: 'string' },
        'queue-name': { type: 'string' }, 'lock-duration': { type: 'string' }, 'parent-pid': { type: 'string' }, quiet: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new WorkerArgError((e as Error).message);
  }
  if (v.help) return null;
  if (!v.queue) throw new WorkerArgError('--queue is required (e.g. --queue redis://10.0.0.5:6379)');
  parseQueueUrl(v.queue); // throws a one-line message on a bad URL
  const int = (name: string, s: string | undefined, min: number): number | null => {
    if (s === undefined) return null;
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) throw new WorkerArgError(`--${name} expects an integer ≥ ${min}, got '${s}'`);
    return n;
  };
  const gpu = int('gpu', v.gpu, 0);
  const lock = v['lock-duration'] === undefined ? 30 : Number(v['lock-duration']);
  if (!(lock >= 1)) throw new WorkerArgError(`--lock-duration expects seconds ≥ 1, got '${v['lock-duration']}'`);
  return {
    url: v.queue, queueName: v['queue-name'] ?? DEFAULT_QUEUE_NAME, repoDir: resolve(v.repo ?? process.cwd()),
    name: v.name ?? `${hostname()}-${gpu !== null ? `gpu${gpu}` : process.pid}`, gpu, trainCommand: v['train-command'] ?? DEFAULT_TRAIN_COMMAND,
    lockDurationS: lock, parentPid: int('parent-pid', v['parent-pid'], 1), quiet: Boolean(v.quiet),
  };
}

/** Start serving the queue; `stop` ends the process (the run in progress goes back to the queue). */
export async function serve(o: WorkerOptions): Promise<{ stop: () => never; worker: Worker<RunRequest, RunOutcome> }> {
  if (!/^[A-Za-z0-9._-]+$/.test(o.name)) throw new WorkerArgError(`--name '${o.name}' must be letters, digits, '.', '_' or '-'`);
  await checkRedis(o.url);
  const workDir = join(o.repoDir, '.autoresearch', 'workers', o.name);
  if (killSlotOrphan(workDir)) console.error(`worker ${o.name}: stopped a training job its previous process left running`);
  const say = (line: string) => {
    if (!o.quiet) console.log(`${new Date().toISOString().slice(11, 19)} ${o.name}: ${line}`);
  };
  // Build the workspace and the guard's type checker before taking work (seconds, once).
  syncWorkspace(o.repoDir, workDir);
  const own = join(o.repoDir, 'train.ts');
  if (existsSync(own)) {
    const report = guardFor(workDir).check(readFileSync(own, 'utf8'));
    if (!report.ok) console.error(`worker ${o.name}: note: this checkout's train.ts does not pass the guard (${report.problems[0]})`);
  }
  const worker = new Worker<RunRequest, RunOutcome>(o.queueName, async (job: Job<RunRequest, RunOutcome>) => {
    const req = job.data;
    const since = Date.now();
    say(`#${req.experiment} ${req.kind} (${req.runId}) ${req.commit.slice(0, 7)}`);
    await job.updateProgress({ worker: o.name, text: 'starting', since });
    const outcome = await runInWorkspace(req, { sourceDir: o.repoDir, workDir, worker: o.name, trainCommand: o.trainCommand, gpu: o.gpu }, undefined, (text) => {
      void job.updateProgress({ worker: o.name, text, since }).catch(() => {});
    });
    say(`#${req.experiment} ${req.kind}: ${outcome.ok ? `val_bpb ${outcome.valBpb?.toFixed(6)}` : outcome.error?.split('\n')[0]} (${outcome.durationS.toFixed(1)} s)`);
    return outcome;
  }, {
    connection: parseQueueUrl(o.url), name: o.name, concurrency: 1, autorun: true,
    lockDuration: o.lockDurationS * 1000, stalledInterval: o.lockDurationS * 1000, maxStalledCount: 5,
  });
  worker.on('error', (e) => console.error(`worker ${o.name}: ${e.message}`));
  // Stopping never completes the run in progress (the process exits before its result could be
  // sent): its lock lapses and another worker takes the job.
  const stop = (): never => {
    killSlotOrphan(workDir);
    process.exit(0);
  };
  if (o.parentPid) {
    const parent = o.parentPid;
    const watch = setInterval(() => {
      try {
        process.kill(parent, 0);
      } catch {
        clearInterval(watch);
        stop();
      }
    }, 500);
    watch.unref();
  }
  say(`serving queue '${o.queueName}' at ${o.url}${o.gpu !== null ? ` on adapter ${o.gpu}` : ''} (workspace ${workDir})`);
  return { stop, worker };
}

export async function main(argv: string[]): Promise<number> {
  let o: WorkerOptions | null;
  try {
    o = parseWorkerArgs(argv);
  } catch (e) {
    console.error(`worker: ${(e as Error).message} (see --help)`);
    return 2;
  }
  if (!o) {
    console.log(WORKER_USAGE);
    return 0;
  }
  let w;
  try {
    w = await serve(o);
  } catch (e) {
    console.error(`worker: ${(e as Error).message}`);
    return 1;
  }
  process.on('SIGINT', () => w.stop());
  process.on('SIGTERM', () => w.stop());
  await new Promise(() => {}); // serve until stopped
  return 0;
}

if (isMain(import.meta.url)) {
  process.exit(await main(process.argv.slice(2)));
}
