/**
 * The real thing, small: a copy of this project's train.ts and prepare.ts, trained on the
 * software adapter through the research driver (fake Messages API, real guard, real type check,
 * real descriptor-3 result from prepare.ts's evaluateBpb). Each run is a few optimizer steps
 * (fixtures/train_steps.mts) plus the software-adapter evaluation, about 30 s on an idle llvmpipe.
 * The work is bounded by step counts, not seconds, so nothing here times out on a slow machine: the
 * set-up has no hook timeout and the driver's hard kill is set far beyond any bounded run.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResearchDriver } from '../../src/research/driver.ts';
import { readRecords, readResults, type BaselineRecord, type ExperimentRecord } from '../../src/research/results.ts';
import { FakeMessagesApi, FIXTURES, git, makeRealProject, memoryOutput, options, proposal, read, removeProject, REPO_ROOT } from './helpers.ts';

describe.skipIf(!existsSync(join(REPO_ROOT, 'prepare.ts')))('the real train.ts through the driver (software adapter)', () => {
  let api: FakeMessagesApi;
  let dir: string;
  let cache: string;
  const saved = process.env.AUTORESEARCH_CACHE;
  const out = memoryOutput();

  beforeAll(async () => {
    api = await FakeMessagesApi.start();
    dir = makeRealProject();
    cache = mkdtempSync(join(tmpdir(), 'autoresearch-cache-'));
    process.env.AUTORESEARCH_CACHE = cache; // the training runs inherit it
    execFileSync(process.execPath, ['--import', 'tsx', 'prepare.ts'], { cwd: dir, stdio: 'ignore' }); // embedded corpus + tokenizer
    const line = /^const MATRIX_LR = [\d.]+;.*$/m.exec(read(dir, 'train.ts'))![0];
    api.script(proposal('raise MATRIX_LR by a quarter', [[line, line.replace(/= ([\d.]+);/, (_, v) => `= ${(Number(v) * 1.25).toPrecision(3)};`)]]));
    await new ResearchDriver(options(dir, api, {
      noiseFloor: 0, maxExperiments: 1, cacheDir: cache, startupAllowanceS: 24 * 3600,
      trainCommand: `"${process.execPath}" --import tsx "${join(FIXTURES, 'train_steps.mts')}"`,
    }), out).run();
  }, 0);

  afterAll(async () => {
    if (saved === undefined) delete process.env.AUTORESEARCH_CACHE;
    else process.env.AUTORESEARCH_CACHE = saved;
    await api?.close();
    if (dir) removeProject(dir);
    if (cache) rmSync(cache, { recursive: true, force: true });
  });

  it('takes the baseline and the experiment from the harness, and matches the printed summary', () => {
    const records = readRecords(join(dir, 'research.jsonl'));
    const baseline = records.find((r): r is BaselineRecord => r.type === 'baseline')!;
    expect(baseline.status).toBe('keep');
    expect(baseline.val_bpb).toBeGreaterThan(0.5);
    expect(baseline.val_bpb).toBeLessThan(20);
    const [exp] = records.filter((r): r is ExperimentRecord => r.type === 'experiment');
    expect(exp.rejected).toEqual([]); // the real train.ts passed the guard and the type check
    expect(['keep', 'discard']).toContain(exp.status);
    const printed = Number(/^val_bpb:\s+([\d.]+)$/m.exec(read(dir, 'run.log'))![1]);
    expect(printed).toBeCloseTo(exp.val_bpb!, 6);
    expect(readResults(join(dir, 'results.tsv')).map((r) => r.description)).toEqual(['baseline', 'raise MATRIX_LR by a quarter']);
    expect(git(dir, 'diff', '--name-only', 'main', 'refs/autoresearch/test/0001')).toBe('train.ts');
    expect(out.lines.some((l) => /^#1 (keep|discard) \d\.\d{6} "raise MATRIX_LR by a quarter"/.test(l))).toBe(true);
  });
});
