/**
 * @file One whole training step of train.ts's model, as its loop runs it: for each micro-batch,
 * upload ids and targets, rebuild the embedding index on the CPU, forward, backward of loss/accum;
 * then the MuonAdamW step, zeroGrad, and the one readback of the loss. Synthetic tokens (Zipf
 * ids, next-token targets), so no dataset is needed.
 *
 * Reports wall-clock ms per step and tokens/s, MFU (model FLOPs per token × tokens/s ÷ the
 * adapter's f32 peak, when known) and, with timestamp queries, one profiled step: GPU time per
 * kernel family (the pipeline label's file stem) and host time = wall − GPU busy, as shares of the
 * unprofiled step. Sizes: the default model (depth 8, 16 × 2048 tokens per micro-batch, 2^19 per
 * step); `--size small` is train.ts's software configuration.
 */
import { VOCAB_SIZE } from '../prepare.ts';
import { scale } from '../src/autograd/basic.ts';
import { type Tape, useRuntime } from '../src/autograd/tape.ts';
import { peakFlops } from '../src/gpu/peaks.ts';
import { matmulPrecision } from '../src/ops/matmul_subgroup_matrix.ts';
import type { Runtime, TimedDispatch } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { copy } from '../src/ops/elementwise.ts';
import { buildEmbeddingIndex, type EmbeddingIndex, releaseEmbeddingIndex } from '../src/ops/embedding.ts';
import { Rng } from '../src/util/rng.ts';
import { buildModelConfig, GPT, type MuonAdamW, OPTIMIZER_SETTINGS, runSizes } from '../train.ts';
import { zipfIds } from './embedding.bench.ts';
import { type BenchCase, type BenchSuite, type BreakdownRow, type Measured, median, type TimingOptions } from './harness.ts';

export interface StepConfig {
  depth: number;
  aspectRatio: number;
  headDim: number;
  seqLen: number;
  /** Rows per micro-batch (DEVICE_BATCH_SIZE). */
  deviceBatchSize: number;
  /** Tokens per optimizer step (TOTAL_BATCH_SIZE); a multiple of deviceBatchSize · seqLen. */
  totalBatchSize: number;
  vocab: number;
  /** Untimed steps first (pipelines compile, the pool fills) and timed steps, unless --warmup/--repeats say otherwise. */
  warmup: number;
  steps: number;
}

// the sizes train.ts itself runs at (its hyperparameters, or its SOFTWARE block), so edits to it are measured
export const MODEL_STEP: StepConfig = { ...runSizes(false), vocab: VOCAB_SIZE, warmup: 2, steps: 5 };
export const SMALL_STEP: StepConfig = { ...runSizes(true), vocab: VOCAB_SIZE, warmup: 1, steps: 1 };

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
  model: GPT;
  optimizer: MuonAdamW;
  tape: Tape;
  ids: Tensor;
  targets: Tensor;
  index: EmbeddingIndex;
  lossHost: Tensor;
  batches: { inputs: Int32Array; targets: Int32Array }[];
  next: number;
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

  const microStep = (st: StepState) => {
    const batch = st.batches[st.next++ % st.batches.length];
    rt.write(st.ids, batch.inputs); // as the dataloader does: the same two tensors, rewritten
    rt.write(st.targets, batch.targets);
    buildEmbeddingIndex(rt, batch.inputs, V, st.index);
    rt.scope(() => {
      const loss = st.model.forward({ ids: st.ids, index: st.index }, st.targets);
      copy(rt, loss, st.lossHost);
      st.tape.backward(scale(loss, 1 / accum));
    });
  };
  /** Records one optimizer step (no sync). */
  const step = () => {
    const st = s!;
    for (let m = 0; m < accum; m++) microStep(st);
    st.optimizer.step();
    st.optimizer.zeroGrad();
  };
  /** One step with its loss readback (the loop's one sync); wall and recording ms. */
  const timedStep = async (): Promise<{ wall: number; record: number; loss: number }> => {
    const t0 = performance.now();
    step();
    const t1 = performance.now();
    const loss = await rt.item(s!.lossHost);
    return { wall: performance.now() - t0, record: t1 - t0, loss };
  };

  return {
    name: `train step depth ${depth} (C ${config.n_embd}): ${B}x${T} tokens x ${accum} micro-steps, V ${V}`,
    get flops() {
      return flopsPerToken * totalBatchSize;
    },
    precision: matmulPrecision(rt, 'f32'),
    setup: () => {
      if (s) return;
      rt.pool.resetPeak(); // peak_vram_mb: this model's step, not earlier suites
      const tape = useRuntime(rt);
      const model = new GPT(rt, config);
      model.initWeights();
      flopsPerToken = model.estimateFlops();
      const optimizer = model.setupOptimizer(OPTIMIZER_SETTINGS);
      const batches = syntheticBatches(HOST_BATCHES, B, T, V);
      s = {
        model,
        optimizer,
        tape,
        ids: rt.keep(rt.empty([B, T], 'i32', 'inputs')),
        targets: rt.keep(rt.empty([B, T], 'i32', 'targets')),
        index: buildEmbeddingIndex(rt, batches[0].inputs, V),
        lossHost: rt.keep(rt.zeros([1])),
        batches,
        next: 0,
      };
    },
    run: step,
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
      const peak = peakFlops(rt.gpu.info, matmulPrecision(rt, 'f32')); // the units the step's matmuls run on
      const counts = s!.model.numScalingParams();
      const extra: Record<string, number | string> = {
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
        step();
        const timed = await rt.endProfile();
        await rt.item(s!.lossHost);
        const b = stepBreakdown(timed, ms);
        breakdown = b.rows;
        extra.gpu_busy_ms = b.gpuBusyMs;
        extra.host_ms = b.hostMs;
        extra.host_percent = ms > 0 ? (100 * b.hostMs) / ms : 0;
      } else {
        note = 'no timestamp-query on this adapter (or --wallclock): no per-family breakdown; host_record_ms is the JS time to record a step';
      }
      extra.peak_vram_mb = rt.pool.peakBytesInUse / 2 ** 20;
      if (!peak) note = [note, 'peak FLOP/s of this adapter unknown: no MFU (AUTORESEARCH_PEAK_TFLOPS sets one)'].filter(Boolean).join('; ');
      return { ms, minMs: Math.min(...walls), method: 'wallclock', repeats: steps, extra, breakdown, note };
    },
    dispose: () => {
      if (!s) return;
      for (const p of s.model.parameters()) {
        rt.release(p.grad); // left only if a step failed before zeroGrad
        rt.release(p);
      }
      for (const t of [s.model.cos, s.model.sin, s.ids, s.targets, s.lossHost]) rt.release(t);
      releaseEmbeddingIndex(rt, s.index);
      s.tape.clear();
      s = null; // the optimizer's state is private to MuonAdamW: it lives until the process ends
    },
  };
}

export const suite: BenchSuite = {
  family: 'step',
  cases(rt, size) {
    return [stepCase(rt, size === 'model' ? MODEL_STEP : SMALL_STEP)];
  },
};
