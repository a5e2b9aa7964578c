/**
 * How a research run stops and refuses: Ctrl-C (finish, or abandon and reset), --max-usd,
 * --hours, the hard kill of a run that overstays, an outage waited out, a run that changes a
 * protected file, and the set-up errors (no key, unknown model, no data, existing branch).
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ResearchDriver } from '../../src/research/driver.ts';
import { readRecords, readResults, type AbandonedRecord, type ExperimentRecord } from '../../src/research/results.ts';
import { alive, apiError, FakeMessagesApi, git, makeProject, memoryOutput, options, proposal, read, removeProject, waitFor, write } from './helpers.ts';

const LR = 'const MATRIX_LR = 0.04;';
const SLEEP = 'const SLEEP_S = 0;';

let api: FakeMessagesApi;
const dirs: string[] = [];
function project(): string {
  const d = makeProject();
  dirs.push(d);
  return d;
}

beforeAll(async () => {
  api = await FakeMessagesApi.start();
});
afterEach(() => api.clear());
afterAll(async () => {
  await api.close();
  for (const d of dirs) removeProject(d);
});

const experiments = (dir: string) => readRecords(join(dir, 'research.jsonl')).filter((r): r is ExperimentRecord => r.type === 'experiment');
const startedPid = (dir: string) => Number(readFileSync(join(dir, '.fake-train-started'), 'utf8'));
describe('Ctrl-C', () => {
  it('first press: finishes the current experiment, then stops', async () => {
    const dir = project();
    let driver!: ResearchDriver;
    api.script(() => {
      driver.requestStop(); // "Ctrl-C" while the model is thinking
      return proposal('MATRIX_LR 0.05, slowly', [[LR, 'const MATRIX_LR = 0.05;'], [SLEEP, 'const SLEEP_S = 0.5;']]);
    });
    driver = new ResearchDriver(options(dir, api, { noiseFloor: 0 }), memoryOutput());
    const r = await driver.run();
    expect(r.stopReason).toBe('stop requested');
    expect(r.experimentsRun).toBe(1);
    expect(experiments(dir).map((e) => e.status)).toEqual(['keep']);
    expect(read(dir, 'train.ts')).toContain('const MATRIX_LR = 0.05;');
  });

  it('second press: kills the run, resets to where it started, keeps the commit under a ref', async () => {
    const dir = project();
    let driver!: ResearchDriver;
    write(dir, '.fake-train-hold', ''); // the experiment's training lasts until abandoned
    api.script(() => {
      // Ctrl-C twice once experiment 1 is training (the baseline's marker goes first)
      rmSync(join(dir, '.fake-train-started'));
      void waitFor('experiment 1 to start training', () => existsSync(join(dir, '.fake-train-started'))).then(() => driver.abandon());
      return proposal('sleep on it', [[SLEEP, 'const SLEEP_S = 30;']]);
    });
    const out = memoryOutput();
    driver = new ResearchDriver(options(dir, api, { noiseFloor: 0 }), out);
    const r = await driver.run();
    expect(r.stopReason).toBe('stop requested');
    const abandoned = readRecords(join(dir, 'research.jsonl')).filter((x): x is AbandonedRecord => x.type === 'abandoned');
    expect(abandoned).toHaveLength(1);
    expect(abandoned[0]).toMatchObject({ experiment: 1, reason: 'interrupted (Ctrl-C) during training', ref: 'refs/autoresearch/test/0001-abandoned' });
    expect(abandoned[0].usd).toBeGreaterThan(0);
    expect(git(dir, 'show', 'refs/autoresearch/test/0001-abandoned:train.ts')).toContain('const SLEEP_S = 30;');
    expect(git(dir, 'rev-parse', 'HEAD')).toBe(git(dir, 'rev-parse', 'main'));
    expect(read(dir, 'train.ts')).toContain(SLEEP);
    expect(readResults(join(dir, 'results.tsv')).map((x) => x.description)).toEqual(['baseline']);
    expect(alive(startedPid(dir))).toBe(false);
    expect(out.lines.some((l) => l.startsWith('#1 abandoned: interrupted (Ctrl-C) during training'))).toBe(true);
  });
});

describe('limits', () => {
  it('--max-usd stops once the cost reaches the budget', async () => {
    const dir = project();
    api.script(
      proposal('MATRIX_LR 0.05', [[LR, 'const MATRIX_LR = 0.05;']]), // $0.0083 each
      proposal('MATRIX_LR 0.06', [['const MATRIX_LR = 0.05;', 'const MATRIX_LR = 0.06;']]),
      proposal('never asked for', [['x', 'y']]),
    );
    const r = await new ResearchDriver(options(dir, api, { noiseFloor: 0, maxUsd: 0.01 }), memoryOutput()).run();
    expect(r.stopReason).toMatch(/^--max-usd 0\.01 reached \(\$0\.02\)$/);
    expect(r.experimentsRun).toBe(2);
    expect(api.pending).toBe(1);
  });

  it('--max-usd needs a price', async () => {
    const dir = project();
    const p = new ResearchDriver(options(dir, api, { model: 'custom-model', maxUsd: 5 }), memoryOutput()).run();
    await expect(p).rejects.toThrow(/--max-usd needs a price for 'custom-model'.*--usd-per-mtok/);
  });

  it('--hours 0 stops after the baseline', async () => {
    const dir = project();
    const r = await new ResearchDriver(options(dir, api, { hours: 0 }), memoryOutput()).run();
    expect(r.stopReason).toBe('--hours 0 reached');
    expect(readResults(join(dir, 'results.tsv'))).toHaveLength(1);
    expect(existsSync(join(dir, 'progress.svg'))).toBe(true);
  });

  it('hard-kills a run at 2 × TIME_BUDGET + the startup allowance, as a crash', async () => {
    const dir = project();
    // the experiment never ends on its own (held); the baseline gets 12 s, room enough on a busy machine
    write(dir, '.fake-train-hold', '');
    api.script(proposal('train much longer', [[SLEEP, 'const SLEEP_S = 30;']]));
    await new ResearchDriver(options(dir, api, { noiseFloor: 0, maxExperiments: 1, startupAllowanceS: 10, fixAttempts: 0 }), memoryOutput()).run();
    const [e] = experiments(dir);
    expect(e.status).toBe('crash');
    expect(e.runs[0].error).toBe('killed after the 12 s limit (2 × TIME_BUDGET + startup allowance)');
    expect(readResults(join(dir, 'results.tsv'))[1].description).toBe('train much longer (timeout)');
    expect(alive(startedPid(dir))).toBe(false);
  });

  it('stops after too many experiments without a usable proposal', async () => {
    const dir = project();
    api.script(...Array.from({ length: 4 }, () => proposal('bad', [['not in train.ts', 'x']])));
    const r = await new ResearchDriver(options(dir, api, { noiseFloor: 0, proposalRetries: 1, maxConsecutiveInvalid: 2 }), memoryOutput()).run();
    expect(r.stopReason).toBe('2 experiments in a row without a usable proposal');
    expect(experiments(dir).map((e) => [e.status, e.rejected.length, e.commit])).toEqual([['invalid', 2, null], ['invalid', 2, null]]);
    expect(readResults(join(dir, 'results.tsv'))).toHaveLength(1); // invalid proposals are not experiments
  });
});

describe('failures during research', () => {
  it('waits out an API outage mid-run and continues', async () => {
    const dir = project();
    api.script(
      apiError(429, 'rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit'),
      apiError(529, 'overloaded_error', 'Overloaded'),
      { hangUp: true },
      proposal('MATRIX_LR 0.05', [[LR, 'const MATRIX_LR = 0.05;']]),
    );
    const out = memoryOutput();
    const r = await new ResearchDriver(options(dir, api, { noiseFloor: 0, maxExperiments: 1 }), out).run();
    expect(r.experimentsRun).toBe(1);
    expect(out.lines.filter((l) => l.startsWith('API unavailable'))).toHaveLength(3);
    expect(experiments(dir)[0].status).toBe('keep');
  });

  it('gives a run that changes a protected file no result (a crash), in its workspace, not the checkout', async () => {
    const dir = project();
    api.script(proposal('touch prepare', [[SLEEP, `${SLEEP}\nconst TOUCH_PREPARE = 1;`]]));
    const r = await new ResearchDriver(options(dir, api, { noiseFloor: 0, maxExperiments: 1, fixAttempts: 0 }), memoryOutput()).run();
    expect(r.stopReason).toBe('--max-experiments 1 reached');
    const [e] = experiments(dir);
    expect(e.status).toBe('crash');
    expect(e.runs[0].error).toMatch(/^the run changed protected files \(changed: prepare\.ts\); its result is not trusted$/);
    expect(git(dir, 'rev-parse', 'HEAD')).toBe(git(dir, 'rev-parse', 'main'));
    expect(git(dir, 'status', '--porcelain', '--untracked-files=no')).toBe(''); // the checkout's prepare.ts was never touched
    expect(git(dir, 'show', 'refs/autoresearch/test/0001:train.ts')).toContain('const TOUCH_PREPARE = 1;');
  });

  it('stops when a protected file of the checkout changes during research', async () => {
    const dir = project();
    api.script(() => {
      write(dir, 'prepare.ts', `${read(dir, 'prepare.ts')}// edited by hand mid-run\n`);
      return proposal('MATRIX_LR 0.05', [[LR, 'const MATRIX_LR = 0.05;']]);
    });
    const p = new ResearchDriver(options(dir, api, { noiseFloor: 0 }), memoryOutput()).run();
    await expect(p).rejects.toThrow(/protected files changed \(changed: prepare\.ts\): only train\.ts may change during research; stopping/);
    expect(readRecords(join(dir, 'research.jsonl')).at(-1)).toMatchObject({ type: 'stop', reason: expect.stringMatching(/^error: protected files changed/) });
  });

  it('stops on an API error that no retry fixes', async () => {
    const dir = project();
    api.script(apiError(400, 'invalid_request_error', 'prompt is too long: 1200000 tokens > 1000000 maximum'));
    const p = new ResearchDriver(options(dir, api, { noiseFloor: 0 }), memoryOutput()).run();
    await expect(p).rejects.toThrow(/rejected the request \(400 invalid_request_error: prompt is too long/);
    expect(readRecords(join(dir, 'research.jsonl')).some((r) => r.type === 'abandoned')).toBe(true);
  });
});

describe('set-up errors', () => {
  it('refuses to start without an API key', async () => {
    const dir = project();
    const saved = { ...process.env };
    for (const k of ['ANTHROPIC_API_KEY', 'ANTHROPIC_AUTH_TOKEN', 'ANTHROPIC_PROFILE']) delete process.env[k];
    try {
      const p = new ResearchDriver(options(dir, api, { apiKey: undefined }), memoryOutput()).run();
      await expect(p).rejects.toThrow(/ANTHROPIC_API_KEY is not set/);
    } finally {
      Object.assign(process.env, saved);
    }
    expect(git(dir, 'branch', '--list', 'autoresearch/*')).toBe('');
  });

  it('refuses an unknown model before touching git', async () => {
    const dir = project();
    const p = new ResearchDriver(options(dir, api, { model: 'claude-sonnet-9-9' }), memoryOutput()).run();
    await expect(p).rejects.toThrow(/Unknown model 'claude-sonnet-9-9'/);
    expect(git(dir, 'branch', '--list', 'autoresearch/*')).toBe('');
  });

  it('asks for npm run prepare when the data is missing', async () => {
    const dir = project();
    const cache = join(dir, 'no-cache');
    mkdirSync(join(cache, 'data'), { recursive: true });
    const p = new ResearchDriver(options(dir, api, { cacheDir: cache }), memoryOutput()).run();
    await expect(p).rejects.toThrow(/no prepared data or tokenizer in .*no-cache: run `npm run prepare` first/);
  });

  it('stops when the baseline fails, with a hint when no result arrived on descriptor 3', async () => {
    const dir = project();
    const p = new ResearchDriver(options(dir, api, { trainArgs: '--no-fd3' }), memoryOutput()).run();
    await expect(p).rejects.toThrow(/the unmodified baseline failed \(no result on the result channel[^]*val_bpb: {10}1\.013000[^]*use --train-command "node --import tsx train\.ts"/);
    const baseline = readRecords(join(dir, 'research.jsonl')).find((r) => r.type === 'baseline');
    expect(baseline).toMatchObject({ status: 'crash', val_bpb: null });
  });

  it('refuses an existing branch without --resume, and --resume without a branch', async () => {
    const dir = project();
    git(dir, 'branch', 'autoresearch/test');
    await expect(new ResearchDriver(options(dir, api), memoryOutput()).run()).rejects.toThrow(/branch autoresearch\/test already exists: pass --resume/);
    await expect(new ResearchDriver(options(dir, api, { tag: 'other', resume: true }), memoryOutput()).run()).rejects.toThrow(/nothing to resume: branch autoresearch\/other does not exist/);
  });

  it('refuses to run beside another driver in the same checkout', async () => {
    const dir = project();
    mkdirSync(join(dir, '.autoresearch'), { recursive: true });
    write(dir, '.autoresearch/driver.lock', JSON.stringify({ pid: process.ppid, tag: 'other' })); // a live process
    await expect(new ResearchDriver(options(dir, api), memoryOutput()).run()).rejects.toThrow(/another research driver \(pid \d+, tag other\) is running/);
    write(dir, '.autoresearch/driver.lock', JSON.stringify({ pid: 2 ** 22 + 12345, tag: 'other' })); // stale: no such process
    const r = await new ResearchDriver(options(dir, api, { hours: 0, noiseFloor: 0 }), memoryOutput()).run();
    expect(r.stopReason).toBe('--hours 0 reached');
    expect(existsSync(join(dir, '.autoresearch/driver.lock'))).toBe(false); // released
    expect(git(dir, 'status', '--porcelain')).toBe(''); // .autoresearch/ ignores itself
  });

  it("moves a previous run's results aside when a new tag starts", async () => {
    const dir = project();
    await new ResearchDriver(options(dir, api, { tag: 'first', hours: 0, noiseFloor: 0 }), memoryOutput()).run();
    git(dir, 'checkout', '-q', 'main');
    const out = memoryOutput();
    await new ResearchDriver(options(dir, api, { tag: 'second', hours: 0, noiseFloor: 0 }), out).run();
    const moved = out.lines.find((l) => l.startsWith("moved the previous run's results.tsv and research.jsonl to "))!;
    const archive = moved.slice(moved.lastIndexOf(' to ') + 4);
    expect(archive).toMatch(/\.autoresearch\/archive\/first-/);
    expect(readRecords(join(archive, 'research.jsonl'))[0]).toMatchObject({ type: 'session', tag: 'first' });
    expect(readRecords(join(dir, 'research.jsonl'))[0]).toMatchObject({ type: 'session', tag: 'second' });
    expect(readResults(join(dir, 'results.tsv'))).toHaveLength(1);
  });

  it('refuses uncommitted changes and bad tags', async () => {
    const dir = project();
    write(dir, 'prepare.ts', `${read(dir, 'prepare.ts')}// local edit\n`);
    write(dir, 'train.ts', `${read(dir, 'train.ts')}// local edit\n`);
    await expect(new ResearchDriver(options(dir, api), memoryOutput()).run()).rejects.toThrow(/uncommitted changes in prepare\.ts, train\.ts: commit or stash them first/);
    expect(() => new ResearchDriver(options(dir, api, { tag: 'bad tag' }), memoryOutput())).toThrow(/--tag 'bad tag' must be/);
  });
});
