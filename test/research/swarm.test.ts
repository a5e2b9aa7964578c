/**
 * Research at scale on a real Redis (see redis.ts) with real worker processes and the stand-in
 * trainer (fixtures/fake_train.mjs, sleeping a few seconds per run): the speed-up of 4 workers
 * over 1, a worker killed with SIGKILL mid-run, the driver killed with SIGKILL and resumed, and
 * a win whose base was superseded replayed onto the new best.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResearchDriver } from '../../src/research/driver.ts';
import {
  readRecords, readResults, type BaselineRecord, type ExperimentRecord, type ReplayRecord, type ResearchRecord, type RunResultRecord,
} from '../../src/research/results.ts';
import { alive, fakeTrainCommand, FakeMessagesApi, git, makeProject, memoryOutput, options, proposal, REPO_ROOT, removeProject, startCli, waitFor, type FakeRequest } from './helpers.ts';
import { startTestRedis, type TestRedis } from './redis.ts';

let redis: TestRedis;
let api: FakeMessagesApi;
const dirs: string[] = [];
const children: ChildProcess[] = [];
const tmp = mkdtempSync(join(tmpdir(), 'autoresearch-swarm-'));

beforeAll(async () => {
  redis = await startTestRedis();
  api = await FakeMessagesApi.start();
}, 60_000);
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await api?.close();
  await redis?.stop();
  for (const d of dirs) removeProject(d);
  rmSync(tmp, { recursive: true, force: true });
});

function project(): string {
  const d = makeProject();
  dirs.push(d);
  return d;
}

/** The experiment number a request is for (the state text names it). */
function experimentOf(req: FakeRequest): number {
  const text = req.body.messages[0].content[1].text as string;
  return Number(/experiment #(\d+)\)/.exec(text)![1]);
}

/** Proposals that each apply to the baseline train.ts and lose (WARMDOWN_RATIO moves away from 0.4; the shell trainer: ties). */
const losing = (req: FakeRequest) => {
  const n = experimentOf(req);
  return proposal(`WARMDOWN_RATIO ${0.5 + n / 100}`, [['const WARMDOWN_RATIO = 0.5;', `const WARMDOWN_RATIO = ${0.5 + n / 100};`]]);
};

const records = (dir: string) => readRecords(join(dir, 'research.jsonl'));
const outcomes = (rs: ResearchRecord[]) => rs.filter((r): r is ExperimentRecord => r.type === 'experiment');
const runRecords = (rs: ResearchRecord[]) => rs.filter((r): r is RunResultRecord => r.type === 'run');

/** Nothing lost, nothing twice: one outcome per experiment, one record per run id, rows in order. */
function expectComplete(dir: string, experiments: number): void {
  const rs = records(dir);
  const exps = outcomes(rs);
  expect(exps.map((e) => e.experiment).sort((a, b) => a - b)).toEqual(Array.from({ length: experiments }, (_, i) => i + 1));
  const ids = runRecords(rs).map((r) => r.run_id);
  expect(new Set(ids).size).toBe(ids.length);
  for (const e of exps) expect(e.runs.map((r) => r.run_id)).toEqual(runRecords(rs).filter((r) => r.experiment === e.experiment).map((r) => r.run_id));
  const rows = readResults(join(dir, 'results.tsv'));
  expect(rows.map((r) => r.description)).toEqual(['baseline', ...[...exps].sort((a, b) => a.experiment - b.experiment).map((e) => e.description)]);
  expect(rs.filter((r) => r.type === 'abandoned' && r.commit !== null)).toEqual([]);
}

describe('speed-up: 4 workers against 1', () => {
  const SLEEP_S = 10;
  const measured: Record<number, { seconds: number; runs: number }> = {};

  async function research(workers: number): Promise<void> {
    const dir = project();
    api.clear();
    api.script(...Array.from({ length: 12 }, () => losing));
    const out = memoryOutput();
    await new ResearchDriver(options(dir, api, {
      queue: redis.url, workers, noiseFloor: 0, baselineRuns: 3, maxExperiments: 12, charts: false,
      // the stand-in trainer at its smallest: a shell that sleeps and reports on descriptor 3
      trainCommand: `sleep ${SLEEP_S} && printf '{"val_bpb": 1.0, "peak_vram_mb": 100}\\n' >&3`,
    }), out).run();
    const rs = records(dir);
    expectComplete(dir, 12);
    // measured from the records: from the baseline's outcome to the last experiment's
    const baseline = rs.find((r): r is BaselineRecord => r.type === 'baseline')!;
    const last = outcomes(rs).map((e) => Date.parse(e.at)).sort((a, b) => b - a)[0];
    measured[workers] = { seconds: (last - Date.parse(baseline.at)) / 1000, runs: runRecords(rs).filter((r) => r.experiment > 0).length };
    if (workers > 1) expect(new Set(baseline.runs.map((r) => r.worker)).size).toBe(3); // the baseline's 3 runs on 3 workers
    expect(new Set(runRecords(rs).map((r) => r.worker)).size).toBe(workers);
  }

  it('finishes 12 experiments with 4 workers in at most 0.4× the time of 1', async () => {
    await research(1);
    await research(4);
    const ratio = measured[4].seconds / measured[1].seconds;
    console.log(`speed-up: 1 worker ${measured[1].seconds.toFixed(1)} s, 4 workers ${measured[4].seconds.toFixed(1)} s for 12 experiments (${measured[1].runs} and ${measured[4].runs} runs of ${SLEEP_S} s): ratio ${ratio.toFixed(2)}`);
    expect(measured[1].runs).toBe(12);
    expect(measured[4].runs).toBe(12);
    expect(ratio).toBeLessThanOrEqual(0.4);
    // the model saw what was running when it proposed (with 4 in flight, always something); which
    // worker holds a run shows only once a worker has taken it, and the 4 runs of a round end
    // within one poll of each other, so the worker's name is not asserted here
    const prompts = api.messageBodies.map((b) => b.messages[0].content[1].text as string);
    expect(prompts.some((t) => /# Running now[^]*- #\d+ "WARMDOWN_RATIO [\d.]+" \(from [0-9a-f]{7}/.test(t))).toBe(true);
  }, 400_000);
});

function startWorker(dir: string, name: string, queueName: string, trainArgs: string): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/research/worker.ts'), '--queue', redis.url, '--queue-name', queueName,
    '--repo', dir, '--name', name, '--lock-duration', '5', '--train-command', fakeTrainCommand(dir, trainArgs)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout!.on('data', (d) => (text += d));
  child.stderr!.on('data', (d) => (text += d));
  children.push(child);
  return Object.assign(child, { output: () => text });
}

describe('a worker killed with SIGKILL mid-experiment', () => {
  it('has its run retried by another worker; nothing is lost or recorded twice', async () => {
    const dir = project();
    const queueName = `kill-worker-${process.pid}`;
    const trainLog = join(tmp, 'kill-worker.log');
    const trainArgs = `--sleep 3 --log "${trainLog}"`;
    const w1 = startWorker(dir, 'w1', queueName, trainArgs);
    const w2 = startWorker(dir, 'w2', queueName, trainArgs);
    api.clear();
    api.script(...Array.from({ length: 4 }, () => losing));
    const driver = new ResearchDriver(options(dir, api, { queue: redis.url, queueName, parallel: 2, noiseFloor: 0, maxExperiments: 4, charts: false }), memoryOutput());
    const done = driver.run();
    // w1 busy with an experiment (not the baseline): its training job has a process group on file
    const pgidFile = join(dir, '.autoresearch', 'workers', 'w1', 'training.pgid');
    await waitFor('w1 to train an experiment', () => existsSync(pgidFile) && records(dir).some((r) => r.type === 'dispatch' && r.experiment > 0), 120_000);
    await new Promise((r) => setTimeout(r, 500));
    w1.kill('SIGKILL');
    await done;
    expectComplete(dir, 4);
    const rs = records(dir);
    const runs = runRecords(rs).filter((r) => r.experiment > 0);
    expect(runs.length).toBe(4);
    expect(runs.some((r) => r.worker === 'w2')).toBe(true);
    // the killed run was trained twice (once by w1, once again by w2) but recorded once
    const trained = readFileSync(trainLog, 'utf8').trim().split('\n').length;
    expect(trained).toBeGreaterThanOrEqual(1 + 4 + 1);
    expect(alive(w2.pid!)).toBe(true);
    w2.kill('SIGTERM');
  }, 300_000);
});

describe('the driver killed with SIGKILL, then --resume', () => {
  it('finds its runs on the queue (or queues them again) and loses nothing', async () => {
    const dir = project();
    const queueName = `kill-driver-${process.pid}`;
    api.clear();
    api.script(...Array.from({ length: 6 }, () => losing));
    const cli = startCli(dir, api, ['--queue', redis.url, '--queue-name', queueName, '--workers', '2', '--worker-lock', '5', '--max-experiments', '4', '--no-charts',
      '--train-command', fakeTrainCommand(dir, '--sleep 3')]);
    await waitFor('two experiments in flight', () => {
      const rs = existsSync(join(dir, 'research.jsonl')) ? records(dir) : [];
      return rs.filter((r) => r.type === 'dispatch' && r.experiment > 0).length >= 2 && !outcomes(rs).length;
    }, 120_000);
    await new Promise((r) => setTimeout(r, 1000));
    cli.kill('SIGKILL');
    await new Promise((r) => cli.on('exit', r));
    const before = records(dir);
    const inFlight = [...new Set(before.filter((r) => r.type === 'dispatch' && r.experiment > 0).map((r) => (r as { experiment: number }).experiment))];

    const out = memoryOutput();
    await new ResearchDriver(options(dir, api, {
      resume: true, queue: redis.url, queueName, workers: 2, noiseFloor: 0, maxExperiments: 4, charts: false, trainCommand: fakeTrainCommand(dir, '--sleep 3'),
    }), out).run();
    expectComplete(dir, 4);
    for (const n of inFlight) expect(out.lines.some((l) => l.startsWith(`#${n} resumed:`)), out.lines.join('\n')).toBe(true);
    // the runs in flight at the kill kept their ids: dispatched once, recorded once
    const rs = records(dir);
    for (const n of inFlight) expect(rs.filter((r) => r.type === 'dispatch' && r.experiment === n)).toHaveLength(1);
    expect(git(dir, 'status', '--porcelain', '--untracked-files=no')).toBe('');
  }, 300_000);
});

describe('a win whose base was superseded', () => {
  it('is replayed onto the new best and kept only once confirmed there', async () => {
    const dir = project();
    api.clear();
    api.script((req) => (experimentOf(req) === 1
      ? proposal('MATRIX_LR 0.05', [['const MATRIX_LR = 0.04;', 'const MATRIX_LR = 0.05;']])
      : proposal('DEPTH 10, slowly', [['const DEPTH = 8;', 'const DEPTH = 10;'], ['const SLEEP_S = 0;', 'const SLEEP_S = 4;']])));
    api.script((req) => (experimentOf(req) === 1
      ? proposal('MATRIX_LR 0.05', [['const MATRIX_LR = 0.04;', 'const MATRIX_LR = 0.05;']])
      : proposal('DEPTH 10, slowly', [['const DEPTH = 8;', 'const DEPTH = 10;'], ['const SLEEP_S = 0;', 'const SLEEP_S = 4;']])));
    const out = memoryOutput();
    await new ResearchDriver(options(dir, api, { queue: redis.url, workers: 2, noiseFloor: 0, baselineRuns: 2, maxExperiments: 2, charts: false }), out).run();
    const rs = records(dir);
    const [e1, e2] = outcomes(rs).sort((a, b) => a.experiment - b.experiment);
    expect(e1).toMatchObject({ status: 'keep', description: 'MATRIX_LR 0.05' });
    const replay = rs.find((r): r is ReplayRecord => r.type === 'replay')!;
    expect(replay).toMatchObject({ experiment: 2, parent: e1.commit });
    expect(e2).toMatchObject({ status: 'keep', commit: replay.commit, replayed_from: replay.from_commit, parent: e1.commit });
    expect(e2.val_bpb).toBeCloseTo(1.003, 9); // both changes together
    expect(e2.runs.map((r) => [r.kind, r.commit])).toEqual([['first', replay.from_commit], ['confirm', replay.commit]]);
    expect(e2.runs[0].val_bpb).toBeCloseTo(1.009, 9); // on its own base
    expect(git(dir, 'log', '--format=%s', 'autoresearch/test').split('\n')).toEqual(['DEPTH 10, slowly', 'MATRIX_LR 0.05', 'initial']);
    expect(git(dir, 'show', 'refs/autoresearch/test/0002-before-replay1:train.ts')).toContain('const MATRIX_LR = 0.04;');
    expect(out.lines.some((l) => /^#2 beats its base by 0\.004000, but #1 was kept meanwhile: replaying it on [0-9a-f]{7} to confirm$/.test(l))).toBe(true);
    expectComplete(dir, 2);
  }, 300_000);
});
