/**
 * --resume after any interruption. The driver runs as its own process (the real CLI), is killed
 * with SIGKILL while training, and `--resume` must stop the orphaned training job, run the
 * interrupted experiment again under the same run id, record it once, and keep every results
 * row. Then the narrower windows: a kill between the jsonl record and the results.tsv row, or
 * before a reset. (Resuming with runs still on a BullMQ queue: swarm.test.ts.)
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResearchDriver } from '../../src/research/driver.ts';
import { readRecords, readResults, type ExperimentRecord, type StartRecord } from '../../src/research/results.ts';
import { alive, FakeMessagesApi, git, makeProject, memoryOutput, options, proposal, read, removeProject, startCli, waitFor } from './helpers.ts';

const LR = 'const MATRIX_LR = 0.04;';
const SLEEP = 'const SLEEP_S = 0;';

let api: FakeMessagesApi;
const dirs: string[] = [];
beforeAll(async () => {
  api = await FakeMessagesApi.start();
});
afterAll(async () => {
  await api.close();
  for (const d of dirs) removeProject(d);
});

describe('kill -9 of the driver mid-run, then --resume', () => {
  let dir: string;
  let orphan: number;
  let commit: string;
  const out = memoryOutput();

  beforeAll(async () => {
    dir = makeProject();
    dirs.push(dir);
    api.script(proposal('sleep for a while', [[SLEEP, 'const SLEEP_S = 6;']]));
    const cli = startCli(dir, api, []);
    const records = join(dir, 'research.jsonl');
    const start = await waitFor('experiment 1 to start training', () =>
      existsSync(records) ? readRecords(records).find((r): r is StartRecord => r.type === 'start' && r.experiment === 1) : null);
    await waitFor('the fake training to start', () => existsSync(join(dir, '.fake-train-started')) && read(dir, '.fake-train-started').trim() !== '' && readFileSync(join(dir, '.fake-runs'), 'utf8') === '2');
    cli.kill('SIGKILL');
    await new Promise((r) => cli.on('exit', r));
    orphan = Number(read(dir, '.fake-train-started'));
    commit = start.commit;
    expect(alive(orphan), `the training job outlives the driver\n${cli.output()}`).toBe(true);
    expect(git(dir, 'rev-parse', 'HEAD')).toBe(git(dir, 'rev-parse', 'main')); // experiments never move the checkout

    await new ResearchDriver(options(dir, api, { resume: true, noiseFloor: 0, maxExperiments: 1 }), out).run();
  });

  it('stops the orphaned training job', () => {
    expect(alive(orphan)).toBe(false);
    expect(out.lines).toContain('stopped the training job left running by the interrupted driver');
  });

  it('runs the interrupted experiment again and records it once: nothing lost, nothing twice', () => {
    const records = readRecords(join(dir, 'research.jsonl'));
    expect(records.some((r) => r.type === 'abandoned')).toBe(false);
    const exps = records.filter((r): r is ExperimentRecord => r.type === 'experiment');
    expect(exps.map((e) => [e.experiment, e.status, e.commit])).toEqual([[1, 'discard', commit]]);
    expect(exps[0].runs).toHaveLength(1);
    const runs = records.filter((r) => r.type === 'run' && r.experiment === 1);
    expect(runs).toHaveLength(1);
    expect(records.filter((r) => r.type === 'dispatch' && r.experiment === 1)).toHaveLength(1); // the same run id, asked for again
    expect(out.lines.some((l) => l.startsWith('#1 resumed: "sleep for a while" (1 run to collect)'))).toBe(true);
    expect(exps[0].usd).toBeGreaterThan(0); // the proposal's cost is still counted
  });

  it('keeps the results rows complete and the session history', () => {
    expect(readResults(join(dir, 'results.tsv')).map((r) => [r.status, r.description])).toEqual([['keep', 'baseline'], ['discard', 'sleep for a while']]);
    expect(git(dir, 'rev-parse', 'refs/autoresearch/test/0001')).toBe(commit);
    const sessions = readRecords(join(dir, 'research.jsonl')).filter((r) => r.type === 'session');
    expect(sessions.map((s) => (s as { resumed: boolean }).resumed)).toEqual([false, true]);
    // training ran three times: the baseline (once: the noise floor was given), the killed #1, and #1 again
    expect(read(dir, '.fake-runs')).toBe('3');
  });
});

describe('--resume repairs the narrow windows', () => {
  it('restores a results row lost between the jsonl record and results.tsv, and undoes a missed reset', async () => {
    const dir = makeProject();
    dirs.push(dir);
    api.script(
      proposal('MATRIX_LR 0.05', [[LR, 'const MATRIX_LR = 0.05;']]),
      proposal('halve the depth', [['const DEPTH = 8;', 'const DEPTH = 4;']]),
    );
    await new ResearchDriver(options(dir, api, { noiseFloor: 0, maxExperiments: 2 }), memoryOutput()).run();
    const best = git(dir, 'rev-parse', 'HEAD');
    const rowsBefore = read(dir, 'results.tsv');
    // as if killed after recording #2 (a discard) but before its results row and its reset
    writeFileSync(join(dir, 'results.tsv'), `${rowsBefore.trimEnd().split('\n').slice(0, -1).join('\n')}\n`);
    git(dir, 'reset', '-q', '--hard', 'refs/autoresearch/test/0002');
    writeFileSync(join(dir, 'train.ts'), `${read(dir, 'train.ts')}// half-written\n`);

    const out = memoryOutput();
    const r = await new ResearchDriver(options(dir, api, { resume: true, noiseFloor: 0, maxExperiments: 2 }), out).run();
    expect(r.stopReason).toBe('--max-experiments 2 reached');
    expect(read(dir, 'results.tsv')).toBe(rowsBefore);
    expect(git(dir, 'rev-parse', 'HEAD')).toBe(best);
    expect(git(dir, 'status', '--porcelain', '--untracked-files=no')).toBe('');
    expect(out.lines.some((l) => /^restored the results\.tsv row of [0-9a-f]{7} \(discard\)$/.test(l))).toBe(true);
    // nothing was unevaluated: no abandoned record
    expect(readRecords(join(dir, 'research.jsonl')).some((x) => x.type === 'abandoned')).toBe(false);
  });

  it('refuses to resume when a protected file changed since the start', async () => {
    const dir = makeProject();
    dirs.push(dir);
    await new ResearchDriver(options(dir, api, { noiseFloor: 0, maxExperiments: 0 }), memoryOutput()).run();
    writeFileSync(join(dir, 'program.md'), 'different instructions\n');
    git(dir, 'commit', '-q', '-am', 'edit program.md');
    const p = new ResearchDriver(options(dir, api, { resume: true, noiseFloor: 0 }), memoryOutput()).run();
    await expect(p).rejects.toThrow(/protected files differ from when autoresearch\/test started \(changed: program\.md\)/);
  });
});
