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
}

export interface TimingOptions {
  warmup?: number;
  repeats?: number;
  /** Force wall-clock timing even where timestamps exist. */
  wallclock?: boolean;
}

function median(xs: number[]): number {
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

/** Times one case and derives rates and the fraction of peak. */
export async function benchCase(rt: Runtime, family: string, c: BenchCase, o: TimingOptions = {}): Promise<BenchResult> {
  const t = await timeRun(rt, c.run, o);
  const r: BenchResult = { family, name: c.name, ...t };
  const seconds = t.ms / 1000;
  if (c.flops) {
    r.gflops = c.flops / seconds / 1e9;
    const peak = peakFlops(rt.gpu.info, c.precision ?? 'f32');
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
