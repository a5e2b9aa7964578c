/**
 * The command line: argument parsing, and Ctrl-C on the real CLI process (once: the current
 * experiment finishes and the process exits 0; twice: it is abandoned and reset).
 */
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseResearchArgs } from '../../src/research/cli.ts';
import { DEFAULTS } from '../../src/research/driver.ts';
import { readRecords, readResults } from '../../src/research/results.ts';
import { alive, FakeMessagesApi, git, makeProject, proposal, read, removeProject, REPO_ROOT, startCli, waitFor } from './helpers.ts';

describe('parseResearchArgs', () => {
  it('fills in defaults', () => {
    const o = parseResearchArgs(['--tag', 'nov22'], { AUTORESEARCH_CACHE: '/data/cache' })!;
    expect(o).toMatchObject({
      tag: 'nov22', resume: false, model: 'claude-sonnet-5-5', maxExperiments: null, hours: null, maxUsd: null, usdPerMtok: null,
      fixAttempts: 1, proposalRetries: 3, trainCommand: 'node --import tsx train.ts', timeBudgetS: null, startupAllowanceS: DEFAULTS.startupAllowanceS,
      noiseFloor: null, effort: null, cacheDir: '/data/cache', charts: true, repoDir: process.cwd(),
    });
  });

  it('reads every option', () => {
    const o = parseResearchArgs([
      '--tag', 't1', '--resume', '--model', 'claude-opus-5-5', '--max-experiments', '50', '--hours', '7.5', '--max-usd', '20',
      '--usd-per-mtok', '3,15', '--fix-attempts', '2', '--proposal-retries', '5', '--train-command', 'node train.mjs',
      '--time-budget', '60', '--startup-allowance', '30', '--noise-floor', '0.0007', '--max-tokens', '8000', '--effort', 'high',
      '--recent-diffs', '3', '--repo', '/tmp/x', '--no-data-check', '--no-charts',
    ])!;
    expect(o).toMatchObject({
      tag: 't1', resume: true, model: 'claude-opus-5-5', maxExperiments: 50, hours: 7.5, maxUsd: 20, usdPerMtok: [3, 15], fixAttempts: 2,
      proposalRetries: 5, trainCommand: 'node train.mjs', timeBudgetS: 60, startupAllowanceS: 30, noiseFloor: 0.0007, maxTokens: 8000,
      effort: 'high', recentDiffs: 3, repoDir: '/tmp/x', cacheDir: null, charts: false,
    });
    expect(parseResearchArgs(['--help'])).toBeNull();
    expect(parseResearchArgs(['--tag', 't', '--queue', 'redis://10.0.0.5:6379', '--workers', '4', '--parallel', '6', '--dashboard', '8787', '--baseline-runs', '5',
      '--noise-widths', '2', '--max-runs', '4', '--queue-name', 'q'])).toMatchObject({
      queue: 'redis://10.0.0.5:6379', workers: 4, parallel: 6, dashboardPort: 8787, baselineRuns: 5, noiseWidths: 2, maxRuns: 4, queueName: 'q',
    });
    // a given noise floor needs no measurement: the baseline runs once unless asked otherwise
    expect(parseResearchArgs(['--tag', 't', '--noise-floor', '0.001'])!.baselineRuns).toBe(1);
    expect(parseResearchArgs(['--tag', 't'])!.baselineRuns).toBe(3);
  });

  it.each([
    [[], /--tag is required/],
    [['--tag', 'x', '--queue', 'http://example'], /--queue expects redis:\/\/HOST:PORT/],
    [['--tag', 'x', '--workers', '0'], /--workers expects an integer ≥ 1/],
    [['--tag', 'x', '--dashboard', 'web'], /--dashboard expects an integer/],
    [['--tag', 'x', '--max-experiments', 'many'], /--max-experiments expects an integer/],
    [['--tag', 'x', '--hours=-1'], /--hours expects a number ≥ 0/],
    [['--tag', 'x', '--effort', 'huge'], /--effort must be one of low, medium, high, xhigh, max/],
    [['--tag', 'x', '--usd-per-mtok', 'cheap'], /--usd-per-mtok expects "input,output"/],
    [['--tag', 'x', '--frobnicate'], /unknown option '--frobnicate'/],
  ])('rejects %j', (argv, why) => {
    expect(() => parseResearchArgs(argv as string[])).toThrow(why);
  });
});

describe('Ctrl-C on the CLI', () => {
  let api: FakeMessagesApi;
  const dirs: string[] = [];
  beforeAll(async () => {
    api = await FakeMessagesApi.start();
  });
  afterAll(async () => {
    await api.close();
    for (const d of dirs) removeProject(d);
  });

  async function startAndWaitForTraining(sleepS: number, hold = false) {
    const dir = makeProject();
    dirs.push(dir);
    if (hold) writeFileSync(join(dir, '.fake-train-hold'), '');
    api.script(proposal('slow experiment', [['const SLEEP_S = 0;', `const SLEEP_S = ${sleepS};`], ['const MATRIX_LR = 0.04;', 'const MATRIX_LR = 0.05;']]));
    const cli = startCli(dir, api, []);
    const exited = new Promise<number | null>((r) => cli.on('exit', (code) => r(code)));
    await waitFor('experiment 1 to start training', () => {
      try {
        return readRecords(join(dir, 'research.jsonl')).some((r) => r.type === 'dispatch' && r.experiment === 1) && read(dir, '.fake-runs') === '2';
      } catch {
        return null;
      }
    });
    return { dir, cli, exited };
  }

  it('once: finishes the experiment, records it, exits 0', async () => {
    const { dir, cli, exited } = await startAndWaitForTraining(2, true); // training holds until released
    cli.kill('SIGINT');
    await waitFor('the CLI to take the Ctrl-C', () => cli.output().includes('Ctrl-C: finishing'));
    rmSync(join(dir, '.fake-train-hold'));
    const code = await exited;
    expect(code, cli.output()).toBe(0);
    expect(cli.output()).toContain('Ctrl-C: finishing the current experiment, then stopping');
    expect(cli.output()).toMatch(/stopped: stop requested\. 1 experiments/);
    expect(readResults(join(dir, 'results.tsv')).map((r) => [r.status, r.description])).toEqual([['keep', 'baseline'], ['keep', 'slow experiment']]);
  });

  it('twice: abandons the experiment and resets', async () => {
    const { dir, cli, exited } = await startAndWaitForTraining(60);
    const trainPid = Number(read(dir, '.fake-train-started'));
    cli.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 200));
    cli.kill('SIGINT');
    const code = await exited;
    expect(code, cli.output()).toBe(0);
    expect(cli.output()).toContain('Ctrl-C: abandoning the current experiment');
    expect(readResults(join(dir, 'results.tsv'))).toHaveLength(1);
    expect(git(dir, 'rev-parse', 'HEAD')).toBe(git(dir, 'rev-parse', 'main'));
    expect(git(dir, 'rev-parse', '--verify', 'refs/autoresearch/test/0001-abandoned')).toMatch(/^[0-9a-f]{40}$/);
    await waitFor('the training job to stop', () => !alive(trainPid));
  });
});

describe('the worker and dashboard commands answer --help and refuse bad arguments in one line', () => {
  const run = (script: string, args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/research', script), ...args], { encoding: 'utf8', timeout: 60_000 });

  it.each([
    ['worker.ts', ['--help'], 0, /^Usage: npm run worker -- --queue redis:\/\/HOST:PORT/],
    ['dashboard.ts', ['--help'], 0, /^Usage: npm run dashboard/],
    ['worker.ts', [], 2, /^worker: --queue is required \(e\.g\. --queue redis:\/\/10\.0\.0\.5:6379\) \(see --help\)$/],
    ['worker.ts', ['--queue', 'http://host'], 2, /^worker: --queue expects redis:\/\/HOST:PORT/],
    ['worker.ts', ['--queue', 'redis://127.0.0.1:6379', '--gpu', 'one'], 2, /^worker: --gpu expects an integer ≥ 0, got 'one' \(see --help\)$/],
    ['worker.ts', ['--queue', 'redis://127.0.0.1:1'], 1, /^worker: cannot reach Redis at redis:\/\/127\.0\.0\.1:1 \(.*\): start it \(Debian\/Ubuntu: apt-get install redis-server\) or check --queue$/],
    ['dashboard.ts', ['--port', 'web'], 2, /^dashboard: --port expects a port number, got 'web'$/],
    ['dashboard.ts', ['--repo', '/nonexistent'], 1, /^dashboard: no research\.jsonl in \/nonexistent: run npm run research first \(or pass --repo\)$/],
    ['cli.ts', ['--tag', 'x', '--workers', '0'], 2, /^research: --workers expects an integer ≥ 1, got '0'; see `npm run research -- --help`$/],
  ])('%s %j', (script, args, code, want) => {
    const r = run(script, args);
    const text = `${r.stdout}${r.stderr}`.trim();
    expect(r.status, text).toBe(code);
    if (code !== 0) {
      expect(text.split('\n'), text).toHaveLength(1);
      expect(text).not.toMatch(/\n\s+at /);
    }
    expect(text).toMatch(want);
  }, 60_000);
});
