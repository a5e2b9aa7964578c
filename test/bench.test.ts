/**
 * The benchmark instrument (bench/): the arithmetic of benchCase (rates, fraction of peak), timeRun
 * on fake runtimes (timestamp and wall-clock paths), the tables, the step breakdown and the suites'
 * FLOP and shape bookkeeping; then `bench/run.ts` once as a subprocess on this machine's adapter,
 * with one small kernel case and one small training step, checking the JSON it prints and saves.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { visiblePairs } from '../bench/attention.bench.ts';
import { zipfIds } from '../bench/embedding.bench.ts';
import {
  type BenchCase, benchCase, type BenchResult, formatBreakdown, formatExtra, formatTable, median, timeRun,
} from '../bench/harness.ts';
import { adamwShapes, muonGroups, polarExpressFlops } from '../bench/optimizer.bench.ts';
import { kernelFamily, type StepConfig, stepBreakdown, stepPeakBytes } from '../bench/step.bench.ts';
import type { Runtime, TimedDispatch } from '../src/gpu/runtime.ts';
import { matmulPrecision } from '../src/ops/matmul_subgroup_matrix.ts';
import { Rng } from '../src/util/rng.ts';
import { testRuntime } from './setup.ts';

const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
const H100 = { name: 'NVIDIA H100 80GB HBM3', software: false };
const LLVMPIPE = { name: 'llvmpipe (LLVM 15.0.6, 256 bits)', software: true };

/** The parts of a Runtime that the harness touches, faked: no GPU, scripted timestamps. */
function fakeRuntime(info: { name: string; software: boolean }, profiles: TimedDispatch[][] = []) {
  let syncs = 0;
  const fake = {
    gpu: { info },
    canProfile: profiles.length > 0,
    sync: async () => void syncs++,
    startProfile: () => {},
    endProfile: async () => profiles.shift() ?? [],
    get syncs() {
      return syncs;
    },
  };
  return fake as unknown as Runtime & { syncs: number };
}

/** A case whose timing is given, so that the derived numbers are exact. */
function fixedCase(ms: number, c: Partial<BenchCase>): BenchCase {
  return { name: 'fake', run: () => {}, measure: async () => ({ ms, minMs: ms / 2, method: 'timestamp', repeats: 3 }), ...c };
}

describe('benchCase', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('derives GFLOP/s and the % of the f32 or f16-matrix peak from flops and ms', async () => {
    vi.stubEnv('AUTORESEARCH_PEAK_TFLOPS', '');
    const r = await benchCase(fakeRuntime(H100), 'matmul', fixedCase(100, { flops: 1e12, precision: 'f32' }));
    expect(r).toMatchObject({ family: 'matmul', name: 'fake', ms: 100, minMs: 50, method: 'timestamp', repeats: 3 });
    expect(r.gflops).toBeCloseTo(10_000, 6); // 1e12 FLOP in 0.1 s
    expect(r.peakPercent).toBeCloseTo((100 * 1e13) / 66.9e12, 9); // H100 SXM f32 datasheet
    expect(r.gbps).toBeUndefined();
    expect(r).toMatchObject({ precision: 'f32', matrixConfig: null, tensorCores: false });
    const m = await benchCase(fakeRuntime(H100), 'matmul', fixedCase(1, { flops: 1e10, precision: 'f16-matrix', matrixConfig: '16x16x16/sg32' }));
    expect(m.peakPercent).toBeCloseTo((100 * 1e13) / 989.5e12, 9);
    expect(m).toMatchObject({ precision: 'f16-matrix', matrixConfig: '16x16x16/sg32', tensorCores: true }); // recorded in the JSON
  });

  it('derives GB/s and the % of peak bandwidth from bytes, and omits % peak when the peak is unknown', async () => {
    vi.stubEnv('AUTORESEARCH_PEAK_TBPS', '');
    const r = await benchCase(fakeRuntime(H100), 'norm', fixedCase(2, { bytes: 4e9 }));
    expect(r.gbps).toBeCloseTo(2000, 9); // 4 GB in 2 ms
    expect(r.peakPercent).toBeCloseTo((100 * 2e12) / 3.35e12, 9);
    expect(r.gflops).toBeUndefined();
    const soft = await benchCase(fakeRuntime(LLVMPIPE), 'norm', fixedCase(2, { bytes: 4e9 }));
    expect(soft.gbps).toBeCloseTo(2000, 9);
    expect(soft.peakPercent).toBeUndefined();
  });

  it('takes the peak from AUTORESEARCH_PEAK_TFLOPS for an unlisted GPU', async () => {
    vi.stubEnv('AUTORESEARCH_PEAK_TFLOPS', '20');
    const r = await benchCase(fakeRuntime({ name: 'Some New GPU', software: false }), 'step', fixedCase(1000, { flops: 5e12 }));
    expect(r.peakPercent).toBeCloseTo(25, 9); // 5 TFLOP/s of 20
  });

  it('runs setup before measuring, passes extras through, and refuses a skipped case', async () => {
    const order: string[] = [];
    const c: BenchCase = {
      name: 'with setup',
      run: () => {},
      setup: () => void order.push('setup'),
      measure: async () => {
        order.push('measure');
        return { ms: 4, minMs: 4, method: 'wallclock', repeats: 1, extra: { tokens_per_s: 7 }, note: 'n' };
      },
    };
    const r = await benchCase(fakeRuntime(LLVMPIPE), 'step', c);
    expect(order).toEqual(['setup', 'measure']);
    expect(r.extra).toEqual({ tokens_per_s: 7 });
    expect(r.note).toBe('n');
    await expect(benchCase(fakeRuntime(LLVMPIPE), 'x', { name: 'f16', run: () => {}, skip: 'no shader-f16' })).rejects.toThrow(/skipped \(no shader-f16\)/);
  });
});

describe('timeRun', () => {
  it('with timestamps: warms up, then reports the median and min of each run’s summed dispatch times', async () => {
    const run = (...ms: number[]) => ms.map((x, i) => ({ label: `k.k${i}`, ms: x }));
    const rt = fakeRuntime(H100, [run(1, 2), run(5, 5), run(0.5, 1), run(2, 2), run(9, 1)]);
    let calls = 0;
    const t = await timeRun(rt, () => void calls++, { warmup: 3, repeats: 5 });
    expect(t).toEqual({ ms: 4, minMs: 1.5, method: 'timestamp', repeats: 5 }); // sums 3, 10, 1.5, 4, 10
    expect(calls).toBe(8);
  });

  it('without timestamps: wall clock per run, never less than the run really takes', async () => {
    const rt = fakeRuntime(LLVMPIPE);
    const busy = () => {
      const end = performance.now() + 1;
      while (performance.now() < end);
    };
    const t = await timeRun(rt, busy, { warmup: 1, repeats: 3 });
    expect(t.method).toBe('wallclock');
    expect(t.repeats).toBe(3);
    expect(t.minMs).toBeGreaterThanOrEqual(1);
    expect(t.ms).toBeGreaterThanOrEqual(t.minMs);
    expect(t.ms).toBeLessThan(1000);
    expect(rt.syncs).toBeGreaterThanOrEqual(5); // after warm-up, the batch probe, and each sample
  });

  it('median takes the middle value, or the mean of the middle two', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });
});

describe('tables', () => {
  const results: BenchResult[] = [
    { family: 'matmul', name: 'NT 8x8', ms: 1.23456, minMs: 1, repeats: 7, method: 'timestamp', gflops: 1234.56, peakPercent: 12.345, precision: 'f16-matrix' },
    { family: 'norm', name: 'rms_norm fwd residual 32768x512', ms: 0.5, minMs: 0.25, repeats: 7, method: 'wallclock', gbps: 99.94 },
  ];

  it('formatTable prints one aligned row per result, blank where a rate does not apply', () => {
    const lines = formatTable(results).split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^case\s+ms \(median\)\s+ms \(min\)\s+GFLOP\/s\s+GB\/s\s+% peak\s+peak of\s+timing$/);
    expect(lines[1]).toMatch(/^-+( +-+){7}$/);
    expect(lines[2]).toMatch(/^NT 8x8\s+1\.235\s+1\.000\s+1234\.6\s+12\.3\s+f16-matrix\s+timestamp$/);
    expect(lines[3]).toMatch(/^rms_norm fwd residual 32768x512\s+0\.500\s+0\.250\s+99\.9\s+bandwidth\s+wallclock$/);
    expect(new Set(lines.map((l) => l.length)).size).toBe(1); // every line padded to the same width
    // the GB/s value sits in the GB/s column
    expect(lines[3].indexOf('99.9')).toBe(lines[0].indexOf('GB/s'));
  });

  it('formatExtra and formatBreakdown print the step’s numbers and its parts', () => {
    const r: BenchResult = {
      ...results[0], name: 'step', extra: { tokens_per_s: 123456.789, grad_accum: 16, micro_batch: '16x2048' }, note: 'no MFU',
      breakdown: [{ part: 'matmul', ms: 30, percent: 60, dispatches: 400 }, { part: 'host + idle', ms: 20, percent: 40 }],
    };
    expect(formatExtra(r).split('\n')).toEqual(['step:', '  tokens_per_s: 123457', '  grad_accum:   16', '  micro_batch:  16x2048', '  note: no MFU']);
    const b = formatBreakdown(r).split('\n');
    expect(b[0]).toBe('step: time by part');
    expect(b[3]).toMatch(/^matmul\s+30\.000\s+60\.0\s+400$/);
    expect(b[4]).toMatch(/^host \+ idle\s+20\.000\s+40\.0\s*$/);
  });
});

describe('step breakdown', () => {
  it('kernelFamily is the pipeline label’s file stem', () => {
    expect(kernelFamily('matmul.matmul_tiled/TM=8,BM=128')).toBe('matmul');
    expect(kernelFamily('attention_bwd.attention_bwd_dq:f16/DQ,BR=16')).toBe('attention_bwd');
    expect(kernelFamily('inline.my_op')).toBe('inline');
  });

  it('sums GPU time per family, sorts by time, and puts the rest of the wall time under host', () => {
    const timed: TimedDispatch[] = [
      { label: 'matmul.matmul_tiled/A', ms: 4 },
      { label: 'rms_norm.rms_norm_fwd/FWD', ms: 1 },
      { label: 'matmul.matmul_naive', ms: 2 },
      { label: 'adamw.adamw_step/WG=256', ms: 0.5 },
    ];
    const b = stepBreakdown(timed, 10);
    expect(b.gpuBusyMs).toBe(7.5);
    expect(b.hostMs).toBe(2.5);
    expect(b.rows).toEqual([
      { part: 'matmul', ms: 6, percent: 60, dispatches: 2 },
      { part: 'rms_norm', ms: 1, percent: 10, dispatches: 1 },
      { part: 'adamw', ms: 0.5, percent: 5, dispatches: 1 },
      { part: 'host + idle (wall − GPU busy)', ms: 2.5, percent: 25 },
    ]);
    expect(stepBreakdown(timed, 5).hostMs).toBe(0); // profiling overhead can exceed the unprofiled wall time
  });
});

describe('suite bookkeeping', () => {
  it('visiblePairs counts the (query, key) pairs a causal sliding window lets through', () => {
    for (const [T, w] of [[1, 0], [1, 5], [7, 0], [7, 3], [7, 6], [7, 7], [16, 8], [16, 100]]) {
      let n = 0;
      for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) if (j <= i && i - j <= w) n++;
      expect(visiblePairs(T, w), `T=${T} window=${w}`).toBe(n);
    }
  });

  it('muonGroups and adamwShapes match train.ts’s parameter groups for the default model', () => {
    const model = { layers: 8, H: 4, Hkv: 4, D: 128, V: 8192 };
    const groups = muonGroups(model).map((g) => `${g.G}x${g.R}x${g.C}`).sort();
    expect(groups).toEqual(['32x512x512', '4x4x32', '8x2048x512', '8x512x2048']);
    const shapes = adamwShapes(model);
    expect(shapes.map((s) => s.name)).toEqual(['wte', 'lm_head', 'value_embeds.1', 'value_embeds.3', 'value_embeds.5', 'value_embeds.7', 'resid_lambdas', 'x0_lambdas']);
    expect(shapes.reduce((n, s) => n + s.shape.reduce((p, d) => p * d, 1), 0)).toBe(6 * 8192 * 512 + 2 * 8);
  });

  it('polarExpressFlops counts XᵀX, A·A and X·P for tall and wide matrices alike', () => {
    // 2048×512: S = 512, L = 2048 → per iteration 2·S·S·L + 2·S³ + 2·L·S·S
    expect(polarExpressFlops(8, 2048, 512)).toBe(8 * 5 * (2 * 512 * 512 * 2048 + 2 * 512 ** 3 + 2 * 2048 * 512 * 512));
    expect(polarExpressFlops(8, 512, 2048)).toBe(polarExpressFlops(8, 2048, 512));
    expect(polarExpressFlops(1, 3, 3, 1)).toBe(6 * 27);
  });

  it('zipfIds are in range, reproducible and skewed like text', () => {
    const V = 8192, n = 20_000;
    const ids = zipfIds(n, V, new Rng(1));
    expect(ids).toEqual(zipfIds(n, V, new Rng(1)));
    expect(Math.min(...ids)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...ids)).toBeLessThan(V);
    const counts = new Map<number, number>();
    for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
    const top = Math.max(...counts.values()) / n;
    // rank 1 has probability 1/H(8192) ≈ 0.105; uniform ids would give ≈ 0.0001
    expect(top).toBeGreaterThan(0.08);
    expect(top).toBeLessThan(0.13);
    expect(counts.size).toBeLessThan(0.6 * V); // the long tail is mostly unseen in 20k draws
  });
});

const rt = await testRuntime();

describe.skipIf(!rt)('npm run bench (subprocess)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const bench = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { cwd: REPO_ROOT, encoding: 'utf8' });

  it('prints and saves JSON with the adapter, date, commit and positive timings, a kernel case and a training step', () => {
    const out = join(dir, 'out.json');
    const started = Date.now();
    const p = bench('--suite', 'norm,step', '--filter', 'rms_norm fwd residual|train step', '--json', '--size', 'small', '--repeats', '1', '--out', out);
    expect(p.status, p.stderr).toBe(0);
    const record = JSON.parse(p.stdout);
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual(record);
    expect(record.adapter.name).toBe(rt!.gpu.info.name);
    expect(typeof record.adapter.software).toBe('boolean');
    expect(Date.parse(record.date)).toBeGreaterThanOrEqual(started - 1000); // dated during this run
    expect(Date.parse(record.date)).toBeLessThanOrEqual(Date.now());
    expect(record.commit).toMatch(/^([0-9a-f]{4,40}(\+dirty)?|unknown)$/);
    expect(record.size).toBe('small');
    expect(record.failed).toEqual([]);
    const [norm, step] = record.results;
    expect(record.results).toHaveLength(2);

    expect(norm).toMatchObject({ family: 'norm', name: 'rms_norm fwd residual 512x64', repeats: 1 });
    expect(norm.ms).toBeGreaterThan(0);
    expect(norm.gbps).toBeCloseTo((4 * (2 * 512 * 64 + 512)) / (norm.ms / 1000) / 1e9, 6);

    expect(step.family).toBe('step');
    expect(step.ms).toBeGreaterThan(0);
    // train.ts's PRECISION 'auto': f16 where the adapter has shader-f16; the JSON says which
    expect(step.extra.precision).toBe(rt!.f16 ? 'f16' : 'f32');
    // the peak it is measured against: the matrix units' where the f16 matmuls run on subgroup matrices
    expect(step.precision).toBe(matmulPrecision(rt!, step.extra.precision));
    expect(step.extra.tokens_per_step).toBe(512);
    expect(step.extra.tokens_per_s).toBeCloseTo(512 / (step.ms / 1000), 6);
    expect(step.extra.dispatches_per_step).toBeGreaterThan(50);
    expect(step.extra.host_record_ms).toBeGreaterThan(0);
    expect(step.extra.host_record_ms).toBeLessThanOrEqual(step.ms);
    // an untrained model on random tokens: the loss is about ln(vocab)
    expect(Math.abs(step.extra.loss - Math.log(8192))).toBeLessThan(0.05);
    expect(step.gflops).toBeCloseTo((step.extra.flops_per_token * 512) / (step.ms / 1000) / 1e9, 6);
    if (rt!.canProfile) {
      const parts: { part: string; percent: number }[] = step.breakdown;
      expect(parts.map((b) => b.part)).toContain('matmul');
      expect(parts.reduce((s, b) => s + b.percent, 0)).toBeGreaterThan(99);
    } else {
      expect(step.breakdown).toBeUndefined();
      expect(step.note).toMatch(/no timestamp-query/);
    }
  });

  it('reports the pool peak of one step in f32 and f16 from a dry allocation pass', () => {
    const p = bench('--suite', 'step', '--filter', 'step memory', '--json', '--size', 'small', '--out', join(dir, 'mem.json'));
    expect(p.status, p.stderr).toBe(0);
    const [mem] = JSON.parse(p.stdout).results;
    expect(mem.name).toMatch(/^step memory depth 2: 2x256 tokens per micro-batch, f32 vs f16 \(dry allocation pass\)$/);
    expect(mem.extra.peak_pool_mb_f16).toBeLessThan(mem.extra.peak_pool_mb_f32);
    expect(mem.extra.f16_over_f32).toBeCloseTo(mem.extra.peak_pool_mb_f16 / mem.extra.peak_pool_mb_f32, 9);
    expect(mem.extra.peak_pool_mb_f16_batch_4).toBeGreaterThan(mem.extra.peak_pool_mb_f16);
  });

  it('refuses an unknown suite, naming the ones there are', () => {
    const p = bench('--suite', 'nosuch', '--json');
    expect(p.status).not.toBe(0);
    const named = p.stderr.match(/--suite: unknown nosuch; the suites are (.*?); see `npm run bench -- --help`$/m)?.[1].split(', ');
    expect(named).toEqual(expect.arrayContaining(['elementwise', 'matmul', 'attention', 'norm', 'loss', 'optimizer', 'embedding', 'step']));
  });
});

describe.skipIf(!rt)('step memory (dry allocation pass)', () => {
  // depth 1, 2 rows of 32 tokens, 2 micro-steps per step, V 8192 (the bench's vocabulary)
  const TINY: StepConfig = { depth: 1, aspectRatio: 32, headDim: 16, seqLen: 32, deviceBatchSize: 2, totalBatchSize: 128, vocab: 8192, warmup: 1, steps: 1 };

  it('the dry pass accounts exactly the pool peak of really running the step, in f32 and in f16', async () => {
    for (const dtype of rt!.f16 ? (['f32', 'f16'] as const) : (['f32'] as const)) {
      const dry = await stepPeakBytes(rt!, TINY, dtype);
      const real = await stepPeakBytes(rt!, TINY, dtype, TINY.deviceBatchSize, false);
      expect(dry, dtype).toBe(real);
      expect(dry).toBeGreaterThan(0);
    }
  });
});
