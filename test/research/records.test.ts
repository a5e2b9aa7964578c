import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkApiKey, checkPreparedData, readTimeBudget } from '../../src/research/preflight.ts';
import { parseUsdPerMtok, priceFor, requestCostUsd } from '../../src/research/pricing.ts';
import {
  appendRecord, appendResult, formatResultRow, readRecords, readResults, resultRows, resumeState, RESULTS_HEADER, writeResults, type ExperimentRecord,
} from '../../src/research/results.ts';

const dir = mkdtempSync(join(tmpdir(), 'autoresearch-records-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const usage = { input: 100, output: 10, cacheCreation: 0, cacheRead: 0 };
function exp(n: number, status: ExperimentRecord['status'], commit: string, val: number | null, usd: number | null = 0.01): ExperimentRecord {
  return {
    type: 'experiment', experiment: n, status, parent: 'p', commit, attempts: [commit], description: `exp ${n}`, val_bpb: val, peak_vram_mb: val ? 2048 : null,
    runs: [], best_before: 1, duration_s: 1, error_excerpt: null, crash_reason: null, rejected: [], repairs: 0, tokens: usage, usd, ref: null, at: '',
  };
}

describe('results.tsv', () => {
  it('formats rows exactly as the reference (crashes as 0.000000 and 0.0)', () => {
    expect(formatResultRow({ commit: 'a1b2c3d', valBpb: 0.99789, memoryGb: 44.0039, status: 'keep', description: 'baseline' }))
      .toBe('a1b2c3d\t0.997890\t44.0\tkeep\tbaseline');
    expect(formatResultRow({ commit: 'c3d4e5f', valBpb: 1.5, memoryGb: 3, status: 'crash', description: 'double the width\t(OOM)\n' }))
      .toBe('c3d4e5f\t0.000000\t0.0\tcrash\tdouble the width (OOM)');
  });

  it('writes the header once and reads rows back', () => {
    const path = join(dir, 'results.tsv');
    appendResult(path, { commit: 'aaaaaaa', valBpb: 1.01, memoryGb: 1.5, status: 'keep', description: 'baseline' });
    appendResult(path, { commit: 'bbbbbbb', valBpb: 1.02, memoryGb: 1.5, status: 'discard', description: 'worse' });
    const text = readFileSync(path, 'utf8');
    expect(text.split('\n')[0]).toBe(RESULTS_HEADER);
    expect(text.split('\n').filter((l) => l.startsWith('commit\t'))).toHaveLength(1);
    expect(readResults(path)).toEqual([
      { commit: 'aaaaaaa', valBpb: 1.01, memoryGb: 1.5, status: 'keep', description: 'baseline' },
      { commit: 'bbbbbbb', valBpb: 1.02, memoryGb: 1.5, status: 'discard', description: 'worse' },
    ]);
  });
});

describe('research.jsonl', () => {
  it('skips a torn last line and rebuilds the state to resume from', () => {
    const path = join(dir, 'research.jsonl');
    appendRecord(path, { type: 'session', tag: 't', branch: 'autoresearch/t', started_at: '', resumed: false, base_commit: 'base', model: 'm', train_command: 'c', time_budget_s: 1, protected_hashes: {} });
    appendRecord(path, { type: 'baseline', experiment: 0, commit: 'base', runs: [], val_bpb: 1.01, peak_vram_mb: 1000, noise_floor: 0.002, status: 'keep', at: '' });
    appendRecord(path, exp(1, 'keep', 'c1', 1.0));
    appendRecord(path, exp(2, 'discard', 'c2', 1.1));
    appendRecord(path, exp(3, 'invalid', 'c3', null));
    appendRecord(path, { type: 'start', experiment: 4, parent: 'c1', commit: 'c4', description: 'd', pid: 4242, tokens: usage, usd: 0.5, at: '' });
    appendFileSync(path, '{"type":"experiment","experi'); // killed mid-write
    const records = readRecords(path);
    expect(records.map((r) => r.type)).toEqual(['session', 'baseline', 'experiment', 'experiment', 'experiment', 'start']);
    const s = resumeState(records);
    expect(s.bestCommit).toBe('c1');
    expect(s.bestValBpb).toBe(1.0);
    expect(s.bestExperiment).toBe(1);
    expect(s.noiseFloor).toBe(0.002);
    expect(s.completed.map((r) => r.experiment)).toEqual([1, 2]);
    expect(s.unfinished?.experiment).toBe(4);
    expect(s.unfinished?.pid).toBe(4242);
    expect(s.nextExperiment).toBe(5);
    expect(s.usd).toBeCloseTo(0.03, 10);
    expect(s.usdKnown).toBe(true);
  });

  it('starts from the base commit with no baseline, and marks unknown cost', () => {
    const s = resumeState([
      { type: 'session', tag: 't', branch: 'b', started_at: '', resumed: false, base_commit: 'base', model: 'm', train_command: 'c', time_budget_s: 1, protected_hashes: {} },
      exp(1, 'discard', 'c1', 1.2, null),
    ]);
    expect(s.bestCommit).toBe('base');
    expect(s.bestValBpb).toBeNull();
    expect(s.usdKnown).toBe(false);
    expect(s.unfinished).toBeNull();
  });
});

describe('pricing', () => {
  it('matches model families by prefix, longest first', () => {
    expect(priceFor('claude-sonnet-5-5')?.input).toBe(2);
    expect(priceFor('claude-opus-4-5-20251101')?.input).toBe(5);
    expect(priceFor('claude-opus-4-20250514')?.input).toBe(15);
    expect(priceFor('claude-haiku-4-5-20251001')?.output).toBe(5);
    expect(priceFor('claude-sonnet-5-5[1m]')?.output).toBe(10);
    expect(priceFor('claude-sonnet-55')).toBeNull();
    expect(priceFor('some-proxy-model')).toBeNull();
  });

  it('prices input, output and cache tokens, and honours an override', () => {
    const p = priceFor('claude-sonnet-4-5')!;
    expect(requestCostUsd({ input: 1e6, output: 1e6, cacheCreation: 1e6, cacheRead: 1e6 }, p)).toBeCloseTo(3 + 15 + 3.75 + 0.3, 10);
    const o = priceFor('some-proxy-model', parseUsdPerMtok('1,2'))!;
    expect(requestCostUsd({ input: 1e6, output: 1e6, cacheCreation: 1e6, cacheRead: 1e6 }, o)).toBeCloseTo(1 + 2 + 1.25 + 0.1, 10);
    expect(() => parseUsdPerMtok('3')).toThrow(/input,output/);
  });

  it('applies a long-prompt tier per request', () => {
    const p = priceFor('claude-haiku-5-5')!;
    expect(requestCostUsd({ input: 50_000, output: 0, cacheCreation: 0, cacheRead: 0 }, p)).toBeCloseTo(0.005, 10);
    expect(requestCostUsd({ input: 200_000, output: 0, cacheCreation: 0, cacheRead: 0 }, p)).toBeCloseTo(0.1, 10);
  });
});

describe('preflight', () => {
  it('asks for npm run prepare when data or tokenizer is missing', () => {
    const cache = join(dir, 'cache');
    expect(checkPreparedData(cache)).toMatch(/data or tokenizer.*npm run prepare/);
    mkdirSync(join(cache, 'data'), { recursive: true });
    writeFileSync(join(cache, 'data', 'shard_00000.parquet'), 'x');
    expect(checkPreparedData(cache)).toMatch(/no prepared tokenizer/);
    mkdirSync(join(cache, 'tokenizer'));
    writeFileSync(join(cache, 'tokenizer', 'tokenizer.json'), '{}');
    expect(checkPreparedData(cache)).toBeNull();
  });

  it('explains a missing API key', () => {
    expect(checkApiKey(undefined, {})).toMatch(/ANTHROPIC_API_KEY is not set/);
    expect(checkApiKey(undefined, { ANTHROPIC_API_KEY: 'k' })).toBeNull();
    expect(checkApiKey('k', {})).toBeNull();
  });

  it('reads TIME_BUDGET from prepare.ts', () => {
    writeFileSync(join(dir, 'prepare.ts'), 'export const TIME_BUDGET = 300; // seconds\n');
    expect(readTimeBudget(dir)).toBe(300);
    writeFileSync(join(dir, 'prepare.ts'), 'export const TIME_BUDGET: number = 1_200;\n');
    expect(readTimeBudget(dir)).toBe(1200);
    expect(readTimeBudget(join(dir, 'nowhere'), 42)).toBe(42);
  });
});

describe('driver state from events (applyRecord)', () => {
  const session = { type: 'session' as const, tag: 't', branch: 'b', started_at: '', resumed: false, base_commit: 'base', model: 'm', train_command: 'c', time_budget_s: 1, protected_hashes: {}, run_id: 'r' };
  const baseline = { type: 'baseline' as const, experiment: 0 as const, commit: 'base', runs: [], val_bpb: 1.01, peak_vram_mb: 1000, noise_floor: 0.001, status: 'keep' as const, at: '' };
  const start = (n: number, commit: string) => ({ type: 'start' as const, experiment: n, parent: 'base', commit, description: `exp ${n}`, pid: null, tokens: usage, usd: 0.01, at: '' });
  const dispatch = (n: number, id: string, commit: string) => ({ type: 'dispatch' as const, run_id: id, experiment: n, kind: 'first', commit, seed: 42, at: '' });
  const run = (n: number, id: string, commit: string, val: number) => ({ type: 'run' as const, run_id: id, experiment: n, kind: 'first', commit, worker: 'w1', seed: 42, val_bpb: val, peak_vram_mb: 1, duration_s: 1, error: null, at: '' });

  it('records a run delivered twice once, and an outcome once', () => {
    const s = resumeState([session, baseline, start(1, 'c1'), dispatch(1, 'r-0001', 'c1'), run(1, 'r-0001', 'c1', 1.0), run(1, 'r-0001', 'c1', 0.5)]);
    expect(s.inFlight.get(1)!.runs.map((r) => r.val_bpb)).toEqual([1.0]);
    expect(s.inFlight.get(1)!.pending).toEqual([]);
    const done = resumeState([session, baseline, start(1, 'c1'), exp(1, 'keep', 'c1', 1.0), exp(1, 'discard', 'c1', 1.2)]);
    expect(done.completed.map((e) => e.status)).toEqual(['keep']);
    expect(done.usd).toBeCloseTo(0.01, 10);
  });

  it('knows the runs still in flight (what --resume asks the queue for)', () => {
    const s = resumeState([session, baseline, start(1, 'c1'), dispatch(1, 'r-0001', 'c1'), start(2, 'c2'), dispatch(2, 'r-0002', 'c2'), run(2, 'r-0002', 'c2', 1.1),
      { type: 'propose', experiment: 3, parent: 'base', at: '' }]);
    expect([...s.inFlight.keys()]).toEqual([1, 2, 3]);
    expect(s.inFlight.get(1)!.pending.map((d) => d.run_id)).toEqual(['r-0001']);
    expect(s.inFlight.get(3)!.commit).toBe(''); // still proposing: nothing ran
    expect(s.nextExperiment).toBe(4);
  });

  it('renders results.tsv in experiment order, up to the first experiment still in flight', () => {
    const records = [session, baseline, start(1, 'c1111111'), start(2, 'c2222222'), start(3, 'c3333333'), exp(3, 'discard', 'c3333333', 1.2), exp(2, 'keep', 'c2222222', 1.0)];
    expect(resultRows(resumeState(records)).map((r) => r.description)).toEqual(['baseline']); // #1 still runs
    const all = [...records, { type: 'abandoned' as const, experiment: 1, commit: 'c1111111', reason: 'x', tokens: null, usd: null, ref: null, at: '' }];
    expect(resultRows(resumeState(all)).map((r) => [r.commit, r.description])).toEqual([['base', 'baseline'], ['c222222', 'exp 2'], ['c333333', 'exp 3']]);
    const path = join(dir, 'ordered.tsv');
    writeResults(path, resumeState(all));
    expect(readResults(path).map((r) => r.status)).toEqual(['keep', 'keep', 'discard']);
  });

  it('moves the best on a keep and takes a replay as the experiment\'s commit', () => {
    const s = resumeState([session, baseline, start(1, 'c1'), start(2, 'c2'), exp(1, 'keep', 'c1', 1.0),
      { type: 'replay', experiment: 2, from_commit: 'c2', from_parent: 'base', parent: 'c1', commit: 'c2r', at: '' }]);
    expect(s.bestCommit).toBe('c1');
    expect(s.bestValBpb).toBe(1.0);
    expect(s.inFlight.get(2)).toMatchObject({ commit: 'c2r', parent: 'c1', firstParent: 'base' });
  });
});
