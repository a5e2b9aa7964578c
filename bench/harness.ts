/**
 * @file The benchmark instrument: a case records its dispatches; the harness times them on the GPU.
 * Timing uses timestamp queries (one pass per dispatch, quantisation disabled by the device setup)
 * where the adapter has them, else wall clock around queue completion, amortised over a batch of
 * runs. Warm-up first (pipelines compile, the pool fills), then repeats; the median is reported,
 * with GFLOP/s or GB/s and the fraction of the adapter's datasheet peak when it is known.
 */
import { peakBandwidth, peakFlops, type Precision } from '../src/gpu/peaks.ts';
import type { Runtime } from '../src/gpu/runtime.ts';

export type SizeSet = 'small' | 'model';

export interface BenchCase {
  /** Unique, descriptive: family, variant and shape, e.g. `matmul NT 32768x512 @ 512x1536`. */
  name: string;
  /** FLOPs of one run (for GFLOP/s), if compute-bound. */
  flops?: number;
  /** Bytes that one run must move at least (for GB/s), if memory-bound. */
  bytes?: number;
  /** Precision that `flops` runs at (for the fraction of peak). */
  precision?: Precision;
  /** Records one run's dispatches (no readback); inputs are built beforehand and reused. */
  run: () => void;
  /** Frees what the case allocated. */
  dispose?: () => void;
  /** Allocates the case's inputs just before it is timed, so cases a filter leaves out cost nothing. */
  setup?: () => void | Promise<void>;
  /** Times the case itself instead of `timeRun` (whole training steps: wall clock, extras, breakdown). */
  measure?: (o: TimingOptions) => Promise<Measured>;
  /** Why this case cannot run on this adapter (e.g. no shader-f16): listed as skipped, never timed. */
  skip?: string;
}

/** One part of a case's time (a kernel family, or host time) and its share of the whole. */
export interface BreakdownRow {
  part: string;
  ms: number;
  percent: number;
  dispatches?: number;
}

/** What a custom `measure` returns: the timing plus anything the table cannot show. */
export interface Measured {
  ms: number;
  minMs: number;
  method: BenchResult['method'];
  repeats: number;
  /** Further named numbers (tokens/s, MFU, …), printed under the table and kept in the JSON. */
  extra?: Record<string, number | string>;
  breakdown?: BreakdownRow[];
  /** What the numbers do not cover, e.g. why there is no breakdown. */
  note?: string;
}

export interface BenchSuite {
  family: string;
  /** Builds the cases for a size set (allocating their inputs once). */
  cases(rt: Runtime, size: SizeSet): BenchCase[] | Promise<BenchCase[]>;
}

export interface BenchResult {
  family: string;
  name: string;
  ms: number;
  minMs: number;
  repeats: number;
  method: 'timestamp' | 'wallclock';
  gflops?: number;
  gbps?: number;
  /** Percent of the adapter's datasheet peak (FLOP/s or bandwidth), when known. */
  peakPercent?: number;
  /** The precision the FLOPs ran at, whose peak `peakPercent` is against (compute-bound cases). */
  precision?: Precision;
  extra?: Record<string, number | string>;
  breakdown?: BreakdownRow[];
  note?: string;
}

export interface TimingOptions {
  warmup?: number;
  repeats?: number;
  /** Force wall-clock timing even where timestamps exist. */
  wallclock?: boolean;
}

/** The median of samples (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** GPU milliseconds of one run of `run`, median over repeats. */
export async function timeRun(rt: Runtime, run: () => void, o: TimingOptions = {}): Promise<{ ms: number; minMs: number; method: BenchResult['method']; repeats: number }> {
  const warmup = o.warmup ?? 2;
  const repeats = o.repeats ?? 7;
  for (let i = 0; i < warmup; i++) run();
  await rt.sync();
  const samples: number[] = [];
  if (rt.canProfile && !o.wallclock) {
    for (let i = 0; i < repeats; i++) {
      rt.startProfile();
      run();
      const timed = await rt.endProfile();
      samples.push(timed.reduce((s, t) => s + t.ms, 0));
    }
    return { ms: median(samples), minMs: Math.min(...samples), method: 'timestamp', repeats };
  }
  // wall clock: amortise submission latency over a batch of runs per sample (≥ ~20 ms each)
  const t0 = performance.now();
  run();
  await rt.sync();
  const batch = Math.min(100, Math.max(1, Math.ceil(20 / Math.max(performance.now() - t0, 1e-3))));
  for (let i = 0; i < repeats; i++) {
    const t1 = performance.now();
    for (let j = 0; j < batch; j++) run();
    await rt.sync();
    samples.push((performance.now() - t1) / batch);
  }
  return { ms: median(samples), minMs: Math.min(...samples), method: 'wallclock', repeats };
}

/** Sets a case up, times it (its own `measure`, else `timeRun`) and derives rates and the fraction of peak. */
export async function benchCase(rt: Runtime, family: string, c: BenchCase, o: TimingOptions = {}): Promise<BenchResult> {
  if (c.skip) throw new Error(`${family} ${c.name}: skipped (${c.skip}); the runner lists skipped cases instead of timing them`);
  await c.setup?.();
  const t = c.measure ? await c.measure(o) : await timeRun(rt, c.run, o);
  const r: BenchResult = { family, name: c.name, ...t };
  const seconds = t.ms / 1000;
  if (c.flops) {
    r.gflops = c.flops / seconds / 1e9;
    r.precision = c.precision ?? 'f32';
    const peak = peakFlops(rt.gpu.info, r.precision);
    if (peak) r.peakPercent = (100 * c.flops) / seconds / peak;
  } else if (c.bytes) {
    r.gbps = c.bytes / seconds / 1e9;
    const peak = peakBandwidth(rt.gpu.info);
    if (peak) r.peakPercent = (100 * c.bytes) / seconds / peak;
  }
  return r;
}

/** A fixed-width table of results. */
export function formatTable(results: BenchResult[]): string {
  const header = ['case', 'ms (median)', 'ms (min)', 'GFLOP/s', 'GB/s', '% peak', 'timing'];
  const rows = results.map((r) => [
    r.name,
    r.ms.toFixed(3),
    r.minMs.toFixed(3),
    r.gflops !== undefined ? r.gflops.toFixed(1) : '',
    r.gbps !== undefined ? r.gbps.toFixed(1) : '',
    r.peakPercent !== undefined ? r.peakPercent.toFixed(1) : '',
    r.method,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** A case's breakdown as a fixed-width table (part, ms, share, dispatches). */
export function formatBreakdown(r: BenchResult): string {
  const rows = (r.breakdown ?? []).map((b) => [b.part, b.ms.toFixed(3), b.percent.toFixed(1), b.dispatches !== undefined ? String(b.dispatches) : '']);
  const header = ['part', 'ms', '% of case', 'dispatches'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [`${r.name}: time by part`, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** A case's extra numbers and note as `key: value` lines. */
export function formatExtra(r: BenchResult): string {
  const entries = Object.entries(r.extra ?? {});
  const width = Math.max(0, ...entries.map(([k]) => k.length));
  const value = (v: number | string) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(6)) : v);
  const lines = entries.map(([k, v]) => `  ${(k + ':').padEnd(width + 1)} ${value(v)}`);
  if (r.note) lines.push(`  note: ${r.note}`);
  return [`${r.name}:`, ...lines].join('\n');
}
