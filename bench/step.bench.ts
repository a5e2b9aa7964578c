/**
 * @file One whole training step of train.ts, run by train.ts's own `trainStep` (for each
 * micro-batch: rebuild the embedding index on the CPU, forward, backward of loss/accum, next batch;
 * then the schedules, the MuonAdamW step and zeroGrad), plus the loop's one readback of the loss.
 * Synthetic tokens (Zipf ids, next-token targets) from a stand-in dataloader, so no dataset is needed.
 *
 * Reports wall-clock ms per step and tokens/s, MFU (model FLOPs per token × tokens/s ÷ the
 * adapter's peak at the step's precision, when known) and, with timestamp queries, one profiled step: GPU time per
 * kernel family (the pipeline label's file stem) and host time = wall − GPU busy, as shares of the
 * unprofiled step. Sizes: the default model (depth 8, 16 × 2048 tokens per micro-batch, 2^19 per
 * step); `--size small` is the harness's software configuration (SOFTWARE_SIZES in src/harness.ts).
 * The step runs in train.ts's precision (PRECISION: f16 where the adapter has shader-f16).
 *
 * `step memory` is the pool's peak over one training step (parameters, gradients, optimizer state,
 * saved activations, transients) in f32 and in f16, taken from a dry allocation pass (Runtime's
 * dryRun: every allocation and release of the real step, no GPU work), so the reference
 * configuration's figure comes out even on a software adapter that could never run it.
 */
import { type Batch, VOCAB_SIZE } from '../prepare.ts';
import { type Tape, useRuntime } from '../src/autograd/tape.ts';
import { peakFlops } from '../src/gpu/peaks.ts';
import { Runtime, type TimedDispatch } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { computeDtype, type RunSizes, SOFTWARE_SIZES } from '../src/harness.ts';
import { buildEmbeddingIndex, releaseEmbeddingIndex } from '../src/ops/embedding.ts';
import { Rng } from '../src/util/rng.ts';
import { buildModelConfig, GPT, OPTIMIZER_SETTINGS, PRECISION, RUN_SIZES, type TrainState, trainStep } from '../train.ts';
import { zipfIds } from './embedding.bench.ts';
import { type BenchCase, type BenchSuite, type BreakdownRow, type Measured, median, type TimingOptions } from './harness.ts';

/** train.ts's run sizes (src/harness.ts's RunSizes), a vocabulary and how many steps to time. */
export interface StepConfig extends RunSizes {
  vocab: number;
  /** Untimed steps first (pipelines compile, the pool fills) and timed steps, unless --warmup/--repeats say otherwise. */
  warmup: number;
  steps: number;
}

// the sizes train.ts itself runs at (its hyperparameters, or the harness's software sizes), so edits to it are measured
export const MODEL_STEP: StepConfig = { ...RUN_SIZES, vocab: VOCAB_SIZE, warmup: 2, steps: 5 };
export const SMALL_STEP: StepConfig = { ...SOFTWARE_SIZES, vocab: VOCAB_SIZE, warmup: 1, steps: 1 };

/** Distinct synthetic micro-batches, cycled (enough that the index and uploads really change). */
const HOST_BATCHES = 2;

/** The kernel family of a pipeline label `stem.entry/...`: the WGSL file's stem. */
export function kernelFamily(label: string): string {
  const dot = label.indexOf('.');
  return dot < 0 ? label : label.slice(0, dot);
}

/**
 * GPU time per kernel family from one profiled step, as shares of `wallMs` (an unprofiled step),
 * sorted by time, plus a last row for the rest of the wall time: host work (JS, recording,
 * dispatch, uploads) and idle gaps, i.e. wall − GPU busy (never below 0).
 */
export function stepBreakdown(timed: readonly TimedDispatch[], wallMs: number): { rows: BreakdownRow[]; gpuBusyMs: number; hostMs: number } {
  const families = new Map<string, { ms: number; dispatches: number }>();
  let gpuBusyMs = 0;
  for (const t of timed) {
    const f = families.get(kernelFamily(t.label)) ?? { ms: 0, dispatches: 0 };
    f.ms += t.ms;
    f.dispatches++;
    families.set(kernelFamily(t.label), f);
    gpuBusyMs += t.ms;
  }
  const share = (ms: number) => (wallMs > 0 ? (100 * ms) / wallMs : 0);
  const rows: BreakdownRow[] = [...families.entries()]
    .sort((a, b) => b[1].ms - a[1].ms)
    .map(([part, f]) => ({ part, ms: f.ms, percent: share(f.ms), dispatches: f.dispatches }));
  const hostMs = Math.max(0, wallMs - gpuBusyMs);
  rows.push({ part: 'host + idle (wall − GPU busy)', ms: hostMs, percent: share(hostMs) });
  return { rows, gpuBusyMs, hostMs };
}

/** Host token batches: each row T + 1 Zipf ids; inputs are the first T, targets the last T. */
function syntheticBatches(count: number, B: number, T: number, V: number): { inputs: Int32Array; targets: Int32Array }[] {
  const rng = new Rng(10);
  return Array.from({ length: count }, () => {
    const inputs = new Int32Array(B * T), targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const row = zipfIds(T + 1, V, rng);
      inputs.set(row.subarray(0, T), b * T);
      targets.set(row.subarray(1), b * T);
    }
    return { inputs, targets };
  });
}

interface StepState {
  train: TrainState;
  tape: Tape;
  ids: Tensor;
  targets: Tensor;
  step: number;
}

/** The step benchmark as a case; `cfg` picks the sizes. */
export function stepCase(rt: Runtime, cfg: StepConfig): BenchCase {
  const { depth, seqLen: T, deviceBatchSize: B, totalBatchSize, vocab: V } = cfg;
  const tokensPerMicro = B * T;
  if (totalBatchSize % tokensPerMicro !== 0) throw new Error(`step bench: ${totalBatchSize} tokens per step is not a multiple of ${B}×${T}`);
  const accum = totalBatchSize / tokensPerMicro;
  const config = buildModelConfig(depth, V, { aspectRatio: cfg.aspectRatio, headDim: cfg.headDim, seqLen: T });
  let s: StepState | null = null;
  let flopsPerToken = 0;

  /** Records one optimizer step (no sync): train.ts's trainStep at progress 0. */
  const step = () => trainStep(s!.train, s!.step++, 0);
  /** One step with its loss readback (the loop's one sync); wall and recording ms. */
  const timedStep = async (): Promise<{ wall: number; record: number; loss: number }> => {
    const t0 = performance.now();
    await step();
    const t1 = performance.now();
    const loss = await rt.item(s!.train.lastLoss);
    return { wall: performance.now() - t0, record: t1 - t0, loss };
  };

  return {
    name: `train step depth ${depth} (C ${config.n_embd}): ${B}x${T} tokens x ${accum} micro-steps, V ${V}`,
    get flops() {
      return flopsPerToken * totalBatchSize;
    },
    precision: computeDtype(rt, PRECISION),
    setup: async () => {
      if (s) return;
      rt.pool.resetPeak(); // peak_vram_mb: this model's step, not earlier suites
      s = await buildStepState(rt, cfg, computeDtype(rt, PRECISION));
      flopsPerToken = s.train.model.estimateFlops();
    },
    run: () => void step(), // measure (below) times whole steps; this is for completeness
    async measure(o: TimingOptions): Promise<Measured> {
      const warmup = o.warmup ?? cfg.warmup;
      const steps = o.repeats ?? cfg.steps;
      const warm: number[] = [];
      for (let i = 0; i < warmup; i++) warm.push((await timedStep()).wall);
      const walls: number[] = [], records: number[] = [];
      let loss = NaN;
      const dispatches0 = rt.dispatches;
      for (let i = 0; i < steps; i++) {
        const t = await timedStep();
        walls.push(t.wall);
        records.push(t.record);
        loss = t.loss;
      }
      const dispatchesPerStep = (rt.dispatches - dispatches0) / steps;
      const ms = median(walls);
      const tokensPerS = totalBatchSize / (ms / 1000);
      const dtype = s!.train.model.dtype;
      const peak = peakFlops(rt.gpu.info, dtype); // the peak of the precision the step computes in
      const counts = s!.train.model.numScalingParams();
      const extra: Record<string, number | string> = {
        precision: dtype,
        tokens_per_s: tokensPerS,
        ...(peak ? { mfu_percent: (100 * flopsPerToken * tokensPerS) / peak } : {}),
        flops_per_token: flopsPerToken,
        tokens_per_step: totalBatchSize,
        grad_accum: accum,
        micro_batch: `${B}x${T}`,
        n_embd: config.n_embd,
        n_head: config.n_head,
        params_M: counts.total / 1e6,
        dispatches_per_step: dispatchesPerStep,
        host_record_ms: median(records),
        first_step_ms: warm[0] ?? NaN,
        loss,
      };
      let breakdown: BreakdownRow[] | undefined;
      let note: string | undefined;
      if (rt.canProfile && !o.wallclock) {
        rt.startProfile();
        await step();
        const timed = await rt.endProfile();
        await rt.item(s!.train.lastLoss);
        const b = stepBreakdown(timed, ms);
        breakdown = b.rows;
        extra.gpu_busy_ms = b.gpuBusyMs;
        extra.host_ms = b.hostMs;
        extra.host_percent = ms > 0 ? (100 * b.hostMs) / ms : 0;
      } else {
        note = 'no timestamp-query on this adapter (or --wallclock): no per-family breakdown; host_record_ms is the time to record a step (the dataloader’s uploads submit earlier work, which some adapters run before returning)';
      }
      extra.peak_vram_mb = rt.pool.peakBytesInUse / 2 ** 20;
      if (!peak) note = [note, 'peak FLOP/s of this adapter unknown: no MFU (AUTORESEARCH_PEAK_TFLOPS sets one)'].filter(Boolean).join('; ');
      return { ms, minMs: Math.min(...walls), method: 'wallclock', repeats: steps, extra, breakdown, note };
    },
    dispose: () => {
      if (!s) return;
      const model = s.train.model;
      for (const p of model.parameters()) {
        rt.release(p.grad); // left only if a step failed before zeroGrad
        rt.release(p);
      }
      for (const t of [model.cos, model.sin, s.ids, s.targets, s.train.lastLoss]) rt.release(t);
      releaseEmbeddingIndex(rt, s.train.embeddingIndex);
      s.tape.clear();
      s = null; // the optimizer's state is private to MuonAdamW: it lives until the process ends
    },
  };
}

/** train.ts's model, optimizer and state for a step at `cfg`'s sizes in `dtype`, on a stand-in dataloader. */
async function buildStepState(rt: Runtime, cfg: StepConfig, dtype: 'f32' | 'f16', gradAccumSteps?: number): Promise<StepState> {
  const { depth, seqLen: T, deviceBatchSize: B, totalBatchSize, vocab: V } = cfg;
  const config = buildModelConfig(depth, V, { aspectRatio: cfg.aspectRatio, headDim: cfg.headDim, seqLen: T });
  const tape = useRuntime(rt);
  const model = new GPT(rt, config, dtype);
  model.initWeights();
  const optimizer = model.setupOptimizer(OPTIMIZER_SETTINGS);
  const batches = syntheticBatches(HOST_BATCHES, B, T, V);
  const ids = rt.keep(rt.empty([B, T], 'i32', 'inputs'));
  const targets = rt.keep(rt.empty([B, T], 'i32', 'targets'));
  let next = 0;
  // as the dataloader does: the same two tensors, rewritten each micro-step
  const loader = {
    async next(): Promise<Batch> {
      const b = batches[next++ % batches.length];
      rt.write(ids, b.inputs);
      rt.write(targets, b.targets);
      return { inputs: ids, targets, inputsHost: b.inputs, targetsHost: b.targets, epoch: 1 };
    },
  };
  const batch = await loader.next();
  const train: TrainState = {
    model, optimizer, loader, batch, embeddingIndex: buildEmbeddingIndex(rt, batch.inputsHost, V),
    gradAccumSteps: gradAccumSteps ?? totalBatchSize / (B * T), lastLoss: rt.keep(rt.zeros([1])),
  };
  return { train, tape, ids, targets, step: 0 };
}

/**
 * Peak pool bytes of one training step in `dtype` at `cfg`'s sizes (rows per micro-batch
 * `deviceBatchSize`), on a fresh runtime over rt's device: by default a dry allocation pass (dryRun:
 * no GPU work, no buffers); `dryRun: false` runs the same steps for real (the test that the two
 * agree). Two steps of two micro-steps each are recorded: the first step creates the optimizer state,
 * and a second micro-step shows gradient accumulation; more micro-steps allocate nothing new.
 */
export async function stepPeakBytes(rt: Runtime, cfg: StepConfig, dtype: 'f32' | 'f16', deviceBatchSize = cfg.deviceBatchSize, dryRun = true): Promise<number> {
  const run = Runtime.fromGpu(rt.gpu, { dryRun });
  const sized = { ...cfg, deviceBatchSize, totalBatchSize: Math.max(cfg.totalBatchSize, deviceBatchSize * cfg.seqLen) };
  const st = await buildStepState(run, sized, dtype, Math.min(2, sized.totalBatchSize / (deviceBatchSize * cfg.seqLen)));
  for (let i = 0; i < 2; i++) await trainStep(st.train, i, 0);
  const peak = run.pool.peakBytesInUse;
  if (!dryRun) await run.sync();
  for (const p of st.train.model.parameters()) run.release(p);
  run.pool.trim();
  useRuntime(rt); // the ambient tape back on the caller's runtime
  return peak;
}

/** The step memory figure: f32 vs f16 peak pool bytes of one step (dry allocation pass). */
export function stepMemoryCase(rt: Runtime, cfg: StepConfig): BenchCase {
  const { depth, seqLen: T, deviceBatchSize: B } = cfg;
  return {
    name: `step memory depth ${depth}: ${B}x${T} tokens per micro-batch, f32 vs f16 (dry allocation pass)`,
    run: () => {},
    async measure(): Promise<Measured> {
      const t0 = performance.now();
      const f32 = await stepPeakBytes(rt, cfg, 'f32');
      const f16 = await stepPeakBytes(rt, cfg, 'f16');
      const f16Double = await stepPeakBytes(rt, cfg, 'f16', 2 * B);
      const ms = performance.now() - t0;
      const mb = (b: number) => b / 2 ** 20;
      return {
        ms,
        minMs: ms,
        method: 'wallclock',
        repeats: 1,
        extra: {
          peak_pool_mb_f32: mb(f32),
          peak_pool_mb_f16: mb(f16),
          f16_over_f32: f16 / f32,
          [`peak_pool_mb_f16_batch_${2 * B}`]: mb(f16Double),
        },
        note: 'pool peak of one training step from a dry allocation pass (every allocation of the real step, no GPU work); ms is host time of the pass',
      };
    },
  };
}

export const suite: BenchSuite = {
  family: 'step',
  cases(rt, size) {
    const cfg = size === 'model' ? MODEL_STEP : SMALL_STEP;
    return [stepCase(rt, cfg), stepMemoryCase(rt, cfg)];
  },
};
