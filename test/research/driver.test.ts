/**
 * Whole research runs in seconds: the real SDK against a fake Messages API on 127.0.0.1, the
 * fake training command reporting through descriptor 3, git in a throwaway repo. One run goes
 * through keep, discard, rejected proposals (an edit that does not apply, an old_string quoting
 * prepare.ts, a forbidden import, no tool call), a crash whose repair crashes too, and a crash
 * that a repair fixes; another exercises the noise rule.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIN_NOISE_FLOOR, ResearchDriver, type ResearchResult } from '../../src/research/driver.ts';
import { readRecords, readResults, type BaselineRecord, type ExperimentRecord } from '../../src/research/results.ts';
import { FakeMessagesApi, git, lastUserText, makeProject, memoryOutput, options, proposal, read, removeProject, textReply } from './helpers.ts';

const LR = 'const MATRIX_LR = 0.04; // learning rate for matrix parameters (Muon)';
const BATCH = 'const DEVICE_BATCH_SIZE = 16; // rows per forward/backward';

describe('research run: keep, discard, rejections, crashes, repairs', () => {
  let api: FakeMessagesApi;
  let dir: string;
  let result: ResearchResult;
  const out = memoryOutput();

  beforeAll(async () => {
    api = await FakeMessagesApi.start();
    dir = makeProject();
    api.script(
      // #1: an improvement
      proposal('raise MATRIX_LR to 0.05', [[LR, LR.replace('0.04', '0.05')]], { text: 'Trying a higher LR.' }),
      // #2: an edit that no longer applies (0.04 is gone), a forbidden import, then a worse change
      proposal('lower MATRIX_LR again', [[LR, LR.replace('0.04', '0.03')]], { thinking: 'maybe lower is better' }),
      proposal('read the data directly', [["import { TIME_BUDGET, evaluateBpb } from './prepare.ts';", "import { TIME_BUDGET, evaluateBpb } from './prepare.ts';\nimport { readFileSync } from 'node:fs';"]]),
      proposal('halve the depth', [['const DEPTH = 8;', 'const DEPTH = 4;']]),
      // #3: an "edit to prepare.ts", no tool call, then a change that crashes and a repair that crashes too
      proposal('shorten the time budget', [['export const TIME_BUDGET = 1;', 'export const TIME_BUDGET = 0.5;']]),
      textReply('I think we should try a bigger batch.'),
      proposal('quadruple the batch', [[BATCH, BATCH.replace('16', '128')]]),
      proposal('batch 96 instead', [['const DEVICE_BATCH_SIZE = 128;', 'const DEVICE_BATCH_SIZE = 96;']]),
      // #4: a crash that a repair fixes
      proposal('batch 128 and MATRIX_LR 0.06', [[BATCH, BATCH.replace('16', '128')], ['const MATRIX_LR = 0.05;', 'const MATRIX_LR = 0.06;']]),
      proposal('batch 32', [['const DEVICE_BATCH_SIZE = 128;', 'const DEVICE_BATCH_SIZE = 32;']]),
    );
    result = await new ResearchDriver(options(dir, api, { maxExperiments: 4, fixAttempts: 1 }), out).run();
    if (process.env.SHOW_DRIVER_OUTPUT) console.log(out.lines.join('\n'));
  });

  afterAll(async () => {
    await api.close();
    removeProject(dir);
  });

  it('stops after --max-experiments with the best result', () => {
    expect(result.stopReason).toBe('--max-experiments 4 reached');
    expect(result.experimentsRun).toBe(4);
    expect(result.bestValBpb).toBeCloseTo(1.005, 9);
    expect(result.noiseFloor).toBe(MIN_NOISE_FLOOR); // three identical baseline runs: the minimum floor
    expect(api.pending).toBe(0);
  });

  it('writes results.tsv exactly as the reference', () => {
    const text = read(dir, 'results.tsv');
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toBe('commit\tval_bpb\tmemory_gb\tstatus\tdescription');
    const rows = readResults(join(dir, 'results.tsv'));
    expect(rows.map((r) => [r.status, r.valBpb.toFixed(6), r.description])).toEqual([
      ['keep', '1.013000', 'baseline'],
      ['keep', '1.007000', 'raise MATRIX_LR to 0.05'],
      ['discard', '1.015000', 'halve the depth'],
      ['crash', '0.000000', 'quadruple the batch (GpuOutOfMemoryError)'],
      ['keep', '1.005000', 'batch 128 and MATRIX_LR 0.06'],
    ]);
    expect(lines[1]).toMatch(/^[0-9a-f]{7}\t1\.013000\t1\.8\tkeep\tbaseline$/); // (1000 + 100·8) MB
    expect(lines[4]).toMatch(/^[0-9a-f]{7}\t0\.000000\t0\.0\tcrash\tquadruple the batch \(GpuOutOfMemoryError\)$/);
  });

  it('keeps improvements on the branch and resets the rest', () => {
    expect(git(dir, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('autoresearch/test');
    expect(git(dir, 'log', '--format=%s', 'autoresearch/test').split('\n')).toEqual(['batch 128 and MATRIX_LR 0.06', 'raise MATRIX_LR to 0.05', 'initial']);
    expect(git(dir, 'log', '--format=%s', 'main').split('\n')).toEqual(['initial']);
    const train = read(dir, 'train.ts');
    expect(train).toContain('const MATRIX_LR = 0.06;');
    expect(train).toContain('const DEVICE_BATCH_SIZE = 32;');
    expect(git(dir, 'status', '--porcelain', '--untracked-files=no')).toBe('');
    // the kept commit of a repaired crash is the repaired file, squashed onto its parent
    expect(git(dir, 'diff', '--name-only', 'HEAD~1', 'HEAD')).toBe('train.ts');
  });

  it('keeps every experiment reachable under refs/autoresearch/<tag>/', () => {
    const refs = git(dir, 'for-each-ref', '--format=%(refname)', 'refs/autoresearch/test/').split('\n').map((r) => r.replace('refs/autoresearch/test/', ''));
    expect(refs.sort()).toEqual(['0001', '0002', '0003', '0003-attempt1', '0004', '0004-attempt1']);
    expect(git(dir, 'show', 'refs/autoresearch/test/0002:train.ts')).toContain('const DEPTH = 4;');
    expect(git(dir, 'show', 'refs/autoresearch/test/0003-attempt1:train.ts')).toContain('const DEVICE_BATCH_SIZE = 128;');
    expect(git(dir, 'show', 'refs/autoresearch/test/0003:train.ts')).toContain('const DEVICE_BATCH_SIZE = 96;');
    expect(git(dir, 'rev-parse', 'refs/autoresearch/test/0004')).toBe(git(dir, 'rev-parse', 'HEAD'));
  });

  it('records everything else in research.jsonl', () => {
    const records = readRecords(join(dir, 'research.jsonl'));
    expect(records[0].type).toBe('session');
    const baseline = records.find((r): r is BaselineRecord => r.type === 'baseline')!;
    expect(baseline.runs.map((r) => r.val_bpb)).toEqual([1.013, 1.013, 1.013].map((v) => expect.closeTo(v, 9)));
    expect(baseline.runs.map((r) => r.seed)).toEqual([42, 43, 44]);
    expect(baseline.noise_std).toBe(0);
    expect(baseline.noise_floor).toBe(MIN_NOISE_FLOOR);
    const exps = records.filter((r): r is ExperimentRecord => r.type === 'experiment');
    expect(exps.map((e) => [e.experiment, e.status])).toEqual([[1, 'keep'], [2, 'discard'], [3, 'crash'], [4, 'keep']]);
    const [e1, e2, e3, e4] = exps;
    expect(e1.parent).toBe(git(dir, 'rev-parse', 'main'));
    expect(e1.rejected).toEqual([]);
    expect(e2.parent).toBe(e1.commit);
    expect(e2.rejected.map((r) => r.reason)).toEqual([expect.stringMatching(/old_string was not found in train\.ts/), expect.stringMatching(/imports 'node:fs'/)]);
    expect(e3.rejected.map((r) => r.reason)).toEqual([expect.stringMatching(/not found/), expect.stringMatching(/no propose_experiment call/)]);
    expect(e3.repairs).toBe(1);
    expect(e3.attempts).toHaveLength(2);
    expect(e3.runs.map((r) => r.error)).toEqual(['the train command exited with code 1', 'the train command exited with code 1']);
    expect(e3.error_excerpt).toContain('GpuOutOfMemoryError');
    expect(e4.repairs).toBe(1);
    expect(e4.runs.map((r) => r.val_bpb === null)).toEqual([true, false]);
    for (const e of exps) {
      expect(e.duration_s).toBeGreaterThan(0);
      expect(e.tokens.input).toBeGreaterThan(0);
    }
    // 10 requests at 1200 in, 300 out, 800 cache write, 9000 cache read, Sonnet 5.5 prices
    const usd = exps.reduce((s, e) => s + (e.usd ?? 0), 0);
    expect(usd).toBeCloseTo(10 * (1200 * 2 + 300 * 10 + 800 * 2.5 + 9000 * 0.1) / 1e6, 9);
    expect(records[records.length - 1]).toMatchObject({ type: 'stop', reason: '--max-experiments 4 reached' });
  });

  it('sends cached instructions, one tool, and no forced tool choice or sampling parameters', () => {
    const bodies = api.messageBodies;
    expect(bodies).toHaveLength(10);
    const first = bodies[0];
    expect(first.model).toBe('claude-sonnet-5-5');
    expect(first.tools.map((t: { name: string }) => t.name)).toEqual(['propose_experiment']);
    expect(first.tool_choice).toBeUndefined();
    expect(first.temperature).toBeUndefined();
    expect(first.system[0].text).toContain('Lower val_bpb by editing train.ts only'); // program.md
    expect(first.system.at(-1).cache_control).toEqual({ type: 'ephemeral' });
    expect(first.system.at(-1).text).toContain('export const TIME_BUDGET = 1;'); // prepare.ts, read-only
    expect(first.system.at(-2).text).toMatch(/^# The baseline run: run\.log[^]*fake training: MATRIX_LR=0\.04[^]*val_bpb: {10}1\.013000/);
    expect(first.messages[0].content[0].text).toContain(LR); // train.ts in full
    expect(first.messages[0].content[1].text).toMatch(/best val_bpb so far: 1\.013000/);
    // the next experiment sees the results and the diff of the one before
    const second = bodies[1].messages[0].content[1].text;
    expect(second).toContain('raise MATRIX_LR to 0.05');
    expect(second).toContain('+const MATRIX_LR = 0.05;');
    // a rejection is answered in a tool_result, with the thinking block passed back unchanged
    const third = bodies[2];
    expect(third.messages[1].role).toBe('assistant');
    expect(lastUserText(third)).toMatch(/Rejected before running: edits\[0\]\.old_string was not found/);
    expect(third.messages[2].content[0]).toMatchObject({ type: 'tool_result', is_error: true });
    expect(third.messages[1].content[0]).toEqual({ type: 'thinking', thinking: 'maybe lower is better', signature: 'sig-abc' });
    expect(third.messages[2].cache_control ?? third.messages[2].content.at(-1).cache_control).toEqual({ type: 'ephemeral' });
    expect(bodies[0].messages).toHaveLength(1);
    // the crash goes back with the log tail
    const repair = bodies.find((b) => lastUserText(b).includes('The run crashed'))!;
    expect(lastUserText(repair)).toContain('GpuOutOfMemoryError');
    expect(lastUserText(repair)).toMatch(/1 repair attempt left/);
  });

  it('prints a line per experiment, a live status, and refreshes the chart', () => {
    expect(out.lines.some((l) => /^noise floor: 0\.000200 \(standard deviation of the 3 baseline runs, 0\.000000, raised to the minimum\)/.test(l))).toBe(true);
    expect(out.lines.some((l) => /^#1 keep 1\.007000 "raise MATRIX_LR to 0\.05"/.test(l))).toBe(true);
    expect(out.lines.some((l) => /^#3 crash \(GpuOutOfMemoryError: the train command exited with code 1\) "quadruple the batch"/.test(l))).toBe(true);
    expect(out.statuses.some((s) => /^#2 local \d+:\d\d.* · best 1\.007000 \(#1\) · \$0\.\d\d/.test(s))).toBe(true);
    const svg = readFileSync(join(dir, 'progress.svg'), 'utf8');
    expect(svg).toContain('4 experiments: 3 keep · 1 discard · 1 crash');
    expect(svg).toContain('raise MATRIX_LR to 0.05');
    expect(readFileSync(join(dir, 'progress.png')).subarray(1, 4).toString()).toBe('PNG');
    expect(existsSync(join(dir, '.autoresearch', 'test', 'logs', '0003-repair1.log'))).toBe(true);
  });
});

describe('noise rule', () => {
  let api: FakeMessagesApi;
  let dir: string;
  const out = memoryOutput();

  beforeAll(async () => {
    api = await FakeMessagesApi.start();
    dir = makeProject();
    api.script(
      proposal('MATRIX_LR 0.041', [[LR, LR.replace('0.04', '0.041')]]), // true win 0.00078 < 3 × floor 0.001: re-run to 3 runs, still wins
      proposal('WARMDOWN_RATIO 0.55', [['const WARMDOWN_RATIO = 0.5;', 'const WARMDOWN_RATIO = 0.55;']]), // wins by luck once, loses on average
      proposal('MATRIX_LR 0.06', [['const MATRIX_LR = 0.041;', 'const MATRIX_LR = 0.06;']]), // a clear win: one run
    );
    // runs: baseline +, −, 0 (std 0.001); #1 three times; #2 −, +; #3
    await new ResearchDriver(options(dir, api, { maxExperiments: 3, trainArgs: '--noise 0.001,-0.001,0,0,0,0,-0.001,0.001,0' }), out).run();
  });

  afterAll(async () => {
    await api.close();
    removeProject(dir);
  });

  it('measures the noise floor as the spread of three baseline runs; the bar is their mean', () => {
    expect(out.lines).toContain('noise floor: 0.001000 (standard deviation of the 3 baseline runs); wins smaller than 3 × this are re-run (up to 3 runs) and must still win on average');
    const baseline = readRecords(join(dir, 'research.jsonl')).find((r): r is BaselineRecord => r.type === 'baseline')!;
    expect(baseline.runs.map((r) => r.val_bpb)).toEqual([1.014, 1.012, 1.013].map((v) => expect.closeTo(v, 9)));
    expect(baseline.val_bpb).toBeCloseTo(1.013, 9);
    expect(baseline.noise_floor).toBeCloseTo(0.001, 9);
  });

  it('re-runs small wins and keeps them only if their mean still wins; records each run\'s seed', () => {
    const exps = readRecords(join(dir, 'research.jsonl')).filter((r): r is ExperimentRecord => r.type === 'experiment');
    expect(exps.map((e) => [e.status, e.runs.length])).toEqual([['keep', 3], ['discard', 2], ['keep', 1]]);
    expect(exps[0].val_bpb).toBeCloseTo(1.01222, 9);
    expect(exps[0].runs.map((r) => [r.kind, r.seed])).toEqual([['first', 42], ['rerun', 43], ['rerun', 44]]);
    expect(exps[1].runs.map((r) => r.val_bpb)).toEqual([expect.closeTo(1.01172, 9), expect.closeTo(1.01372, 9)]);
    expect(exps[1].val_bpb).toBeCloseTo(1.01272, 9);
    expect(exps[1].decision).toMatch(/^mean 1\.012720 of 2 runs does not beat 1\.012220/);
    expect(readResults(join(dir, 'results.tsv')).map((r) => [r.status, r.valBpb.toFixed(6)])).toEqual([
      ['keep', '1.013000'], ['keep', '1.012220'], ['discard', '1.012720'], ['keep', '1.005000'],
    ]);
    expect(out.lines.filter((l) => l.includes('re-running'))).toHaveLength(3);
  });
});
