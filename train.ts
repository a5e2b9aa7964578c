/**
 * Autoresearch pretraining script, on WebGPU. Single GPU, single file: the TypeScript twin of the
 * reference train.py (GPT + MuonAdamW + a 5-minute training loop).
 * Usage: npx tsx train.ts > run.log 2>&1      (or: npm run train)
 * This is the only file the research agent edits. prepare.ts (data, tokenizer, evaluation) is fixed.
 */

import { MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluateBpb, makeDataloader } from './prepare.ts';
import { add, reshape, scale } from './src/autograd/basic.ts';
import { attention } from './src/autograd/attention.ts';
import { linear } from './src/autograd/linear.ts';
import { lmHeadLogits, lmHeadLoss, residualMix, valueEmbedGate } from './src/autograd/model_ops.ts';
import { embedding, relu2, rmsNorm, rotary } from './src/autograd/nn.ts';
import { ctx, requiresGrad, useRuntime, zeroGrad } from './src/autograd/tape.ts';
import { peakFlops } from './src/gpu/peaks.ts';
import { GpuOutOfMemoryError, Runtime } from './src/gpu/runtime.ts';
import type { Tensor } from './src/gpu/tensor.ts';
import { adamwStep } from './src/ops/adamw.ts';
import { copy } from './src/ops/elementwise.ts';
import { buildEmbeddingIndex, type EmbeddingIndex } from './src/ops/embedding.ts';
import { createMuonState, muonStep, type MuonState } from './src/ops/muon.ts';
import { rotaryTables } from './src/ops/rotary.ts';
import { trainCommandLine } from './src/util/cli.ts';
import { isMain } from './src/util/main.ts';
import { Rng } from './src/util/rng.ts';

// ---------------------------------------------------------------------------
// GPT Model
// Shapes: B batch, T time, C n_embd, H query heads, Hkv kv heads, D head_dim, V vocab.
// ---------------------------------------------------------------------------

export interface GPTConfig {
  sequence_len: number;
  vocab_size: number;
  n_layer: number;
  n_head: number;
  n_kv_head: number;
  n_embd: number;
  window_pattern: string;
}

const VE_GATE_CHANNELS = 32; // the value-embedding gate reads x[..., :32]
const SOFTCAP = 15; // logits = 15·tanh(logits / 15)

/** Value embeddings on alternating layers, the last one always included. */
export function hasValueEmbed(layer: number, nLayer: number): boolean {
  return layer % 2 === (nLayer - 1) % 2;
}

/** Left attention window per layer: S = half context, L = full; the last layer is always L. */
export function windowSizes(config: GPTConfig): number[] {
  const pattern = config.window_pattern.toUpperCase();
  if (!/^[SL]+$/.test(pattern)) throw new Error(`window_pattern '${config.window_pattern}' must use only S and L`);
  const long = config.sequence_len;
  const sizes = Array.from({ length: config.n_layer }, (_, i) => (pattern[i % pattern.length] === 'L' ? long : Math.floor(long / 2)));
  sizes[sizes.length - 1] = long;
  return sizes;
}

interface Block {
  cQ: Tensor; // (H·D, C)
  cK: Tensor; // (Hkv·D, C)
  cV: Tensor; // (Hkv·D, C)
  attnProj: Tensor; // (C, C)
  veGate: Tensor | null; // (Hkv, 32), only with a value embedding
  cFc: Tensor; // (4C, C)
  mlpProj: Tensor; // (C, 4C)
}

/** One batch of token ids, on the GPU, plus the inverse index the embedding backward needs. */
export interface TokenBatch {
  ids: Tensor; // (B, T) i32
  index: EmbeddingIndex | null; // null when no gradient is needed
}

export class GPT {
  readonly headDim: number;
  readonly windowSizes: number[];
  readonly wte: Tensor; // (V, C)
  readonly lmHead: Tensor; // (V, C)
  readonly residLambdas: Tensor; // (n_layer)
  readonly x0Lambdas: Tensor; // (n_layer)
  readonly valueEmbeds = new Map<number, Tensor>(); // layer -> (V, Hkv·D)
  readonly blocks: Block[] = [];
  readonly cos: Tensor; // (10·T, D/2) rotary tables
  readonly sin: Tensor;

  constructor(readonly rt: Runtime, readonly config: GPTConfig) {
    const { n_embd: C, n_head: H, n_kv_head: Hkv, vocab_size: V, n_layer: L } = config;
    if (C % H !== 0) throw new Error(`n_embd ${C} is not a multiple of n_head ${H}`);
    if (H % Hkv !== 0 || Hkv > H) throw new Error(`n_kv_head ${Hkv} must divide n_head ${H}`);
    this.headDim = C / H;
    const D = this.headDim;
    this.windowSizes = windowSizes(config);
    const param = (shape: number[], name: string) => requiresGrad(rt.keep(rt.zeros(shape, 'f32', name)));
    this.wte = param([V, C], 'transformer.wte.weight');
    this.lmHead = param([V, C], 'lm_head.weight');
    this.residLambdas = param([L], 'resid_lambdas');
    this.x0Lambdas = param([L], 'x0_lambdas');
    for (let i = 0; i < L; i++) {
      const h = `transformer.h.${i}`;
      const ve = hasValueEmbed(i, L);
      this.blocks.push({
        cQ: param([H * D, C], `${h}.attn.c_q.weight`),
        cK: param([Hkv * D, C], `${h}.attn.c_k.weight`),
        cV: param([Hkv * D, C], `${h}.attn.c_v.weight`),
        attnProj: param([C, C], `${h}.attn.c_proj.weight`),
        veGate: ve ? param([Hkv, VE_GATE_CHANNELS], `${h}.attn.ve_gate.weight`) : null,
        cFc: param([4 * C, C], `${h}.mlp.c_fc.weight`),
        mlpProj: param([C, 4 * C], `${h}.mlp.c_proj.weight`),
      });
      if (ve) this.valueEmbeds.set(i, param([V, Hkv * D], `value_embeds.${i}.weight`));
    }
    const rotarySeqLen = Math.max(config.sequence_len * 10, MAX_SEQ_LEN); // room to evaluate at MAX_SEQ_LEN
    const { cos, sin } = rotaryTables(rt, rotarySeqLen, D);
    this.cos = cos;
    this.sin = sin;
  }

  /** Every parameter under the reference's name. */
  namedParameters(): [string, Tensor][] {
    const all: Tensor[] = [this.wte, ...this.blocks.flatMap((b) => [b.cQ, b.cK, b.cV, b.attnProj, ...(b.veGate ? [b.veGate] : []), b.cFc, b.mlpProj]), this.lmHead, this.residLambdas, this.x0Lambdas, ...this.valueEmbeds.values()];
    return all.map((t) => [t.name!, t]);
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** The reference's init, from a seeded generator (uploaded once). */
  initWeights(seed = 42): void {
    const rng = new Rng(seed);
    const C = this.config.n_embd;
    const s = Math.sqrt(3) / Math.sqrt(C);
    const set = (t: Tensor, values: Float32Array) => this.rt.write(t, values);
    set(this.wte, rng.normalArray(this.wte.size, 1));
    set(this.lmHead, rng.normalArray(this.lmHead.size, 0.001));
    for (const b of this.blocks) {
      for (const w of [b.cQ, b.cK, b.cV, b.cFc]) set(w, rng.uniformArray(w.size, -s, s));
      this.rt.fill(b.attnProj, 0);
      this.rt.fill(b.mlpProj, 0);
      if (b.veGate) this.rt.fill(b.veGate, 0); // sigmoid(0)·2 = 1: a neutral gate
    }
    this.rt.fill(this.residLambdas, 1);
    this.rt.fill(this.x0Lambdas, 0.1);
    for (const ve of this.valueEmbeds.values()) set(ve, rng.uniformArray(ve.size, -s, s));
  }

  /** Final hidden states (B·T, C) after the last norm. */
  hidden(tokens: TokenBatch): Tensor {
    const [B, T] = tokens.ids.shape;
    const { n_embd: C, n_head: H, n_kv_head: Hkv } = this.config;
    const D = this.headDim;
    if (T > this.cos.dim(0)) throw new Error(`sequence of ${T} tokens exceeds the rotary table (${this.cos.dim(0)})`);
    const cos = this.rt.view(this.cos, [T, D / 2]);
    const sin = this.rt.view(this.sin, [T, D / 2]);
    let x = rmsNorm(embedding(this.wte, tokens.ids, tokens.index)); // (B, T, C)
    const x0 = x;
    for (let i = 0; i < this.blocks.length; i++) {
      const blk = this.blocks[i];
      x = residualMix(x, x0, this.residLambdas, this.x0Lambdas, i);
      // attention
      const xn = rmsNorm(x);
      let q = reshape(linear(xn, blk.cQ), [B, T, H, D]);
      let k = reshape(linear(xn, blk.cK), [B, T, Hkv, D]);
      let v = reshape(linear(xn, blk.cV), [B, T, Hkv, D]);
      const veTable = this.valueEmbeds.get(i);
      if (veTable && blk.veGate) {
        // value residual (ResFormer): v += 2·sigmoid(gate(x[..., :32]))·ve
        const ve = reshape(embedding(veTable, tokens.ids, tokens.index), [B, T, Hkv, D]);
        const gate = linear(xn, blk.veGate, { inFeatures: VE_GATE_CHANNELS }); // (B, T, Hkv)
        v = valueEmbedGate(v, ve, gate);
      }
      q = rmsNorm(rotary(q, cos, sin)); // QK-norm after rotary
      k = rmsNorm(rotary(k, cos, sin));
      const y = attention(q, k, v, this.windowSizes[i]); // (B, T, H, D)
      x = add(x, linear(reshape(y, [B, T, C]), blk.attnProj));
      // MLP: relu(x)²
      x = add(x, linear(relu2(linear(rmsNorm(x), blk.cFc)), blk.mlpProj));
    }
    return reshape(rmsNorm(x), [B * T, C]);
  }

  /** Cross-entropy of the softcapped logits against targets (B, T), −1 = ignore: the mean, or per token. */
  forward(tokens: TokenBatch, targets: Tensor, reduction: 'mean' | 'none' = 'mean'): Tensor {
    const flatTargets = this.rt.reshape(targets, [targets.size]);
    const { loss, perToken } = lmHeadLoss(this.hidden(tokens), this.lmHead, flatTargets, { softcap: SOFTCAP });
    return reduction === 'mean' ? loss : perToken;
  }

  /** Softcapped logits (B, T, V) for evaluation: inputs only, no gradient. */
  logits(ids: Tensor): Tensor {
    const [B, T] = ids.shape;
    return ctx().noGrad(() => {
      const logits = lmHeadLogits(this.hidden({ ids, index: null }), this.lmHead, SOFTCAP);
      return this.rt.reshape(logits, [B, T, this.config.vocab_size]);
    });
  }

  /** FLOPs per token (forward + backward), as the reference estimates them. */
  estimateFlops(): number {
    const counts = this.numScalingParams();
    const excluded = counts.wte + counts.value_embeds + counts.scalars;
    const h = this.config.n_head, q = this.headDim, t = this.config.sequence_len;
    const attn = this.windowSizes.reduce((s, w) => s + 12 * h * q * Math.min(w, t), 0);
    return 6 * (counts.total - excluded) + attn;
  }

  numScalingParams(): Record<'wte' | 'value_embeds' | 'lm_head' | 'transformer_matrices' | 'scalars' | 'total', number> {
    const size = (ts: Tensor[]) => ts.reduce((s, t) => s + t.size, 0);
    const wte = this.wte.size;
    const value_embeds = size([...this.valueEmbeds.values()]);
    const lm_head = this.lmHead.size;
    const transformer_matrices = size(this.blocks.flatMap((b) => [b.cQ, b.cK, b.cV, b.attnProj, ...(b.veGate ? [b.veGate] : []), b.cFc, b.mlpProj]));
    const scalars = this.residLambdas.size + this.x0Lambdas.size;
    return { wte, value_embeds, lm_head, transformer_matrices, scalars, total: wte + value_embeds + lm_head + transformer_matrices + scalars };
  }

  /** The reference's parameter groups: AdamW for embeddings, head and scalars; Muon per matrix shape. */
  setupOptimizer(o: { unembeddingLr: number; embeddingLr: number; matrixLr: number; weightDecay: number; adamBetas: [number, number]; scalarLr: number }): MuonAdamW {
    const dmodelLrScale = (this.config.n_embd / 768) ** -0.5; // LR ∝ 1/√dmodel (tuned at 768)
    console.log(`Scaling AdamW LRs by 1/sqrt(${this.config.n_embd}/768) = ${dmodelLrScale.toFixed(6)}`);
    const adamw = (params: Tensor[], lr: number, betas = o.adamBetas): ParamGroup => ({ kind: 'adamw', params, lr, initialLr: lr, betas, eps: 1e-10, weightDecay: 0 });
    const groups: ParamGroup[] = [
      adamw([this.lmHead], o.unembeddingLr * dmodelLrScale),
      adamw([this.wte], o.embeddingLr * dmodelLrScale),
      adamw([...this.valueEmbeds.values()], o.embeddingLr * dmodelLrScale),
      adamw([this.residLambdas], o.scalarLr * 0.01),
      adamw([this.x0Lambdas], o.scalarLr, [0.96, 0.95]),
    ];
    const matrices = this.blocks.flatMap((b) => [b.cQ, b.cK, b.cV, b.attnProj, ...(b.veGate ? [b.veGate] : []), b.cFc, b.mlpProj]);
    const shapes = [...new Set(matrices.map((p) => p.shape.join('x')))].sort(compareShapes);
    for (const shape of shapes) {
      const params = matrices.filter((p) => p.shape.join('x') === shape);
      groups.push({ kind: 'muon', params, lr: o.matrixLr, initialLr: o.matrixLr, momentum: 0.95, nsSteps: 5, beta2: 0.95, weightDecay: o.weightDecay });
    }
    return new MuonAdamW(this.rt, groups);
  }
}

/** Python's sorted() order for shape tuples. */
function compareShapes(a: string, b: string): number {
  const x = a.split('x').map(Number), y = b.split('x').map(Number);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

// ---------------------------------------------------------------------------
// Optimizer (MuonAdamW): Muon for the blocks' matrices, AdamW for everything else
// ---------------------------------------------------------------------------

export type ParamGroup =
  | { kind: 'adamw'; params: Tensor[]; lr: number; initialLr: number; betas: [number, number]; eps: number; weightDecay: number }
  | { kind: 'muon'; params: Tensor[]; lr: number; initialLr: number; momentum: number; nsSteps: number; beta2: number; weightDecay: number };

interface AdamState {
  step: number;
  expAvg: Tensor;
  expAvgSq: Tensor;
}

interface MuonGroupState {
  stackedParams: Tensor; // (G, R, C)
  stackedGrads: Tensor; // (G, R, C)
  muon: MuonState; // momentum, second moment, Polar Express work buffers
}

export class MuonAdamW {
  readonly #adam = new Map<Tensor, AdamState>();
  readonly #muon = new Map<ParamGroup, MuonGroupState>();

  constructor(readonly rt: Runtime, readonly paramGroups: ParamGroup[]) {}

  #stepAdamw(group: Extract<ParamGroup, { kind: 'adamw' }>): void {
    for (const p of group.params) {
      if (!p.grad) continue;
      let state = this.#adam.get(p);
      if (!state) {
        state = { step: 0, expAvg: this.rt.keep(this.rt.zeros(p.shape)), expAvgSq: this.rt.keep(this.rt.zeros(p.shape)) };
        this.#adam.set(p, state);
      }
      state.step += 1;
      adamwStep(this.rt, p, p.grad, state.expAvg, state.expAvgSq, {
        lr: group.lr, beta1: group.betas[0], beta2: group.betas[1], eps: group.eps, weightDecay: group.weightDecay, step: state.step,
      });
    }
  }

  #stepMuon(group: Extract<ParamGroup, { kind: 'muon' }>): void {
    const params = group.params;
    if (!params.length || params.some((p) => !p.grad)) return;
    const [R, C] = params[0].shape;
    let state = this.#muon.get(group);
    if (!state) {
      const G = params.length;
      state = {
        stackedParams: this.rt.keep(this.rt.empty([G, R, C])),
        stackedGrads: this.rt.keep(this.rt.empty([G, R, C])),
        muon: createMuonState(this.rt, G, R, C),
      };
      this.#muon.set(group, state);
    }
    // stack, step, unstack (torch.stack / _foreach_copy_ in the reference)
    const slot = (t: Tensor, i: number) => this.rt.view(t, [R, C], i * R * C);
    this.rt.scope(() => {
      params.forEach((p, i) => {
        copy(this.rt, p.grad!, slot(state.stackedGrads, i));
        copy(this.rt, p, slot(state.stackedParams, i));
      });
      muonStep(this.rt, state.stackedParams, state.stackedGrads, state.muon, {
        lr: group.lr, momentum: group.momentum, beta2: group.beta2, weightDecay: group.weightDecay, nsSteps: group.nsSteps,
      });
      params.forEach((p, i) => copy(this.rt, slot(state.stackedParams, i), p));
    });
  }

  step(): void {
    for (const group of this.paramGroups) {
      if (group.kind === 'adamw') this.#stepAdamw(group);
      else this.#stepMuon(group);
    }
  }

  zeroGrad(): void {
    for (const group of this.paramGroups) zeroGrad(this.rt, group.params);
  }
}

// ---------------------------------------------------------------------------
// Hyperparameters (edit these directly, no CLI flags needed)
// ---------------------------------------------------------------------------

// Model architecture
const ASPECT_RATIO = 64; // model_dim = depth * ASPECT_RATIO
const HEAD_DIM = 128; // target head dimension for attention
const WINDOW_PATTERN = 'SSSL'; // sliding window pattern: L=full, S=half context

// Optimization
const TOTAL_BATCH_SIZE = 2 ** 19; // ~524K tokens per optimizer step
const EMBEDDING_LR = 0.6; // learning rate for token embeddings (Adam)
const UNEMBEDDING_LR = 0.004; // learning rate for lm_head (Adam)
const MATRIX_LR = 0.04; // learning rate for matrix parameters (Muon)
const SCALAR_LR = 0.5; // learning rate for per-layer scalars (Adam)
const WEIGHT_DECAY = 0.2; // cautious weight decay for Muon
const ADAM_BETAS: [number, number] = [0.8, 0.95]; // Adam beta1, beta2
const WARMUP_RATIO = 0.0; // fraction of time budget for LR warmup
const WARMDOWN_RATIO = 0.5; // fraction of time budget for LR warmdown
const FINAL_LR_FRAC = 0.0; // final LR as fraction of initial

// Model size
const DEPTH = 8; // number of transformer layers
const DEVICE_BATCH_SIZE = 16; // rows per forward/backward (reference: 128 in bf16; f32 activations are twice the size, and 16 is a cautious start)

// Software adapters (llvmpipe, SwiftShader) run near 1 GFLOP/s: a tiny model so a run ends in minutes
const SOFTWARE = { DEPTH: 2, ASPECT_RATIO: 32, HEAD_DIM: 32, SEQ_LEN: 256, DEVICE_BATCH_SIZE: 2, TOTAL_BATCH_SIZE: 2 * 256 };

// ---------------------------------------------------------------------------
// Setup: tokenizer, model, optimizer, dataloader
// ---------------------------------------------------------------------------

/** The sizes a run uses: the hyperparameters above on a GPU, SOFTWARE on a software adapter. */
export function runSizes(software: boolean) {
  return {
    depth: software ? SOFTWARE.DEPTH : DEPTH,
    aspectRatio: software ? SOFTWARE.ASPECT_RATIO : ASPECT_RATIO,
    headDim: software ? SOFTWARE.HEAD_DIM : HEAD_DIM,
    seqLen: software ? SOFTWARE.SEQ_LEN : MAX_SEQ_LEN,
    deviceBatchSize: software ? SOFTWARE.DEVICE_BATCH_SIZE : DEVICE_BATCH_SIZE,
    totalBatchSize: software ? SOFTWARE.TOTAL_BATCH_SIZE : TOTAL_BATCH_SIZE,
  };
}

/** setupOptimizer's arguments from the hyperparameters. */
export const OPTIMIZER_SETTINGS = {
  unembeddingLr: UNEMBEDDING_LR, embeddingLr: EMBEDDING_LR, scalarLr: SCALAR_LR,
  adamBetas: ADAM_BETAS, matrixLr: MATRIX_LR, weightDecay: WEIGHT_DECAY,
};

export function buildModelConfig(depth: number, vocabSize: number, o = { aspectRatio: ASPECT_RATIO, headDim: HEAD_DIM, seqLen: MAX_SEQ_LEN }): GPTConfig {
  const baseDim = depth * o.aspectRatio;
  const modelDim = Math.ceil(baseDim / o.headDim) * o.headDim;
  const numHeads = modelDim / o.headDim;
  return { sequence_len: o.seqLen, vocab_size: vocabSize, n_layer: depth, n_head: numHeads, n_kv_head: numHeads, n_embd: modelDim, window_pattern: WINDOW_PATTERN };
}

// Schedules (all based on progress = training_time / TIME_BUDGET)

function getLrMultiplier(progress: number): number {
  if (progress < WARMUP_RATIO) return WARMUP_RATIO > 0 ? progress / WARMUP_RATIO : 1;
  if (progress < 1 - WARMDOWN_RATIO) return 1;
  const cooldown = (1 - progress) / WARMDOWN_RATIO;
  return cooldown * 1 + (1 - cooldown) * FINAL_LR_FRAC;
}

function getMuonMomentum(step: number): number {
  const frac = Math.min(step / 300, 1);
  return (1 - frac) * 0.85 + frac * 0.95;
}

function getWeightDecay(progress: number): number {
  return WEIGHT_DECAY * (1 - progress);
}

/** Options for tests; a normal run uses none of them. */
export interface TrainOptions {
  runtime?: Runtime;
  tokenizer?: Tokenizer;
  /** Stop after this many optimizer steps (tests; 0 evaluates the initialised model), besides the time budget. */
  maxSteps?: number;
  /** Overrides of the model/batch sizes (tests). */
  config?: Partial<{ depth: number; aspectRatio: number; headDim: number; seqLen: number; deviceBatchSize: number; totalBatchSize: number }>;
}

export interface TrainSummary {
  val_bpb: number;
  training_seconds: number;
  total_seconds: number;
  peak_vram_mb: number;
  mfu_percent: number;
  total_tokens_M: number;
  num_steps: number;
  num_params_M: number;
  depth: number;
}

export async function train(opts: TrainOptions = {}): Promise<TrainSummary> {
  const tStart = performance.now();
  const rt = opts.runtime ?? (await Runtime.create());
  console.log(rt.gpu.describe());
  useRuntime(rt);
  const software = rt.gpu.info.software;
  const sizes = { ...runSizes(software), ...opts.config };
  if (software) console.log('Software adapter: training the small configuration (see SOFTWARE in train.ts)');

  const tokenizer = opts.tokenizer ?? Tokenizer.load();
  const vocabSize = tokenizer.vocabSize;
  console.log(`Vocab size: ${vocabSize.toLocaleString('en-US')}`);

  const config = buildModelConfig(sizes.depth, vocabSize, sizes);
  console.log(`Model config: ${JSON.stringify(config)}`);
  const model = new GPT(rt, config);
  model.initWeights();

  const paramCounts = model.numScalingParams();
  console.log('Parameter counts:');
  for (const [key, value] of Object.entries(paramCounts)) console.log(`  ${key.padEnd(24)}: ${value.toLocaleString('en-US')}`);
  const numParams = paramCounts.total;
  const numFlopsPerToken = model.estimateFlops();
  console.log(`Estimated FLOPs per token: ${numFlopsPerToken.toExponential(6)}`);

  const tokensPerFwdBwd = sizes.deviceBatchSize * sizes.seqLen;
  if (sizes.totalBatchSize % tokensPerFwdBwd !== 0) throw new Error(`TOTAL_BATCH_SIZE ${sizes.totalBatchSize} is not a multiple of ${tokensPerFwdBwd} tokens per micro-batch`);
  const gradAccumSteps = sizes.totalBatchSize / tokensPerFwdBwd;

  const optimizer = model.setupOptimizer(OPTIMIZER_SETTINGS);

  const trainLoader = makeDataloader(rt, tokenizer, sizes.deviceBatchSize, sizes.seqLen, 'train');
  let batch = await trainLoader.next(); // prefetch first batch
  const embeddingIndex = buildEmbeddingIndex(rt, batch.inputsHost, vocabSize); // kept, rewritten each micro-step

  console.log(`Time budget: ${TIME_BUDGET}s`);
  console.log(`Gradient accumulation steps: ${gradAccumSteps}`);
  const peak = peakFlops(rt.gpu.info, 'f32');
  if (!peak) console.log('MFU: peak FLOP/s of this adapter unknown (set AUTORESEARCH_PEAK_TFLOPS); reporting 0');

  // ---------------------------------------------------------------------------
  // Training loop
  // ---------------------------------------------------------------------------

  const tape = ctx();
  let smoothTrainLoss = 0;
  let totalTrainingTime = 0;
  let step = 0;
  let epoch = batch.epoch;
  const lastLoss = rt.keep(rt.zeros([1])); // on the GPU until the one read per step

  while (opts.maxSteps === undefined || step < opts.maxSteps) {
    const t0 = performance.now();
    for (let microStep = 0; microStep < gradAccumSteps; microStep++) {
      buildEmbeddingIndex(rt, batch.inputsHost, vocabSize, embeddingIndex);
      rt.scope(() => {
        const loss = model.forward({ ids: batch.inputs, index: embeddingIndex }, batch.targets);
        copy(rt, loss, lastLoss); // the last micro-step's loss is the one reported
        tape.backward(scale(loss, 1 / gradAccumSteps));
      });
      batch = await trainLoader.next();
      epoch = batch.epoch;
    }

    // Progress and schedules
    const progress = Math.min(totalTrainingTime / TIME_BUDGET, 1);
    const lrm = getLrMultiplier(progress);
    const muonMomentum = getMuonMomentum(step);
    const muonWeightDecay = getWeightDecay(progress);
    for (const group of optimizer.paramGroups) {
      group.lr = group.initialLr * lrm;
      if (group.kind === 'muon') {
        group.momentum = muonMomentum;
        group.weightDecay = muonWeightDecay;
      }
    }
    optimizer.step();
    optimizer.zeroGrad();

    const trainLoss = await rt.item(lastLoss); // the one sync per step, as in the reference

    // Fast fail: abort if loss is exploding or NaN
    if (Number.isNaN(trainLoss) || trainLoss > 100) {
      console.log('FAIL');
      process.exit(1);
    }

    const dt = (performance.now() - t0) / 1000;
    if (step > 10) totalTrainingTime += dt;

    // Logging
    const emaBeta = 0.9;
    smoothTrainLoss = emaBeta * smoothTrainLoss + (1 - emaBeta) * trainLoss;
    const debiasedSmoothLoss = smoothTrainLoss / (1 - emaBeta ** (step + 1));
    const pctDone = 100 * progress;
    const tokPerSec = Math.round(sizes.totalBatchSize / dt);
    const mfu = peak ? (100 * numFlopsPerToken * sizes.totalBatchSize) / dt / peak : 0;
    const remaining = Math.max(0, TIME_BUDGET - totalTrainingTime);
    process.stdout.write(
      `\rstep ${String(step).padStart(5, '0')} (${pctDone.toFixed(1)}%) | loss: ${debiasedSmoothLoss.toFixed(6)} | lrm: ${lrm.toFixed(2)} | dt: ${(dt * 1000).toFixed(0)}ms | tok/sec: ${tokPerSec.toLocaleString('en-US')} | mfu: ${mfu.toFixed(1)}% | epoch: ${epoch} | remaining: ${remaining.toFixed(0)}s    `,
    );

    step += 1;

    // Time's up — but only stop after warmup steps so we don't count compilation
    if (step > 10 && totalTrainingTime >= TIME_BUDGET) break;
  }

  process.stdout.write('\n'); // newline after \r training log
  await trainLoader.close();
  const totalTokens = step * sizes.totalBatchSize;

  // Final eval
  const valBpb = await evaluateBpb(rt, (ids) => model.logits(ids), tokenizer, sizes.deviceBatchSize);

  // Final summary
  const tEnd = performance.now();
  const steadyStateMfu = peak && totalTrainingTime > 0 ? (100 * numFlopsPerToken * sizes.totalBatchSize * (step - 10)) / totalTrainingTime / peak : 0;
  const summary: TrainSummary = {
    val_bpb: valBpb,
    training_seconds: totalTrainingTime,
    total_seconds: (tEnd - tStart) / 1000,
    peak_vram_mb: rt.pool.peakBytesInUse / 1024 / 1024,
    mfu_percent: steadyStateMfu,
    total_tokens_M: totalTokens / 1e6,
    num_steps: step,
    num_params_M: numParams / 1e6,
    depth: sizes.depth,
  };
  console.log('---');
  console.log(`val_bpb:          ${summary.val_bpb.toFixed(6)}`);
  console.log(`training_seconds: ${summary.training_seconds.toFixed(1)}`);
  console.log(`total_seconds:    ${summary.total_seconds.toFixed(1)}`);
  console.log(`peak_vram_mb:     ${summary.peak_vram_mb.toFixed(1)}`);
  console.log(`mfu_percent:      ${summary.mfu_percent.toFixed(2)}`);
  console.log(`total_tokens_M:   ${summary.total_tokens_M.toFixed(1)}`);
  console.log(`num_steps:        ${summary.num_steps}`);
  console.log(`num_params_M:     ${summary.num_params_M.toFixed(1)}`);
  console.log(`depth:            ${summary.depth}`);
  return summary;
}

if (isMain(import.meta.url)) {
  trainCommandLine(process.argv.slice(2)); // --help; any argument is a mistake (one line, exit 2)
  try {
    await train();
    process.exit(0);
  } catch (e) {
    // our errors say what to do; a stack trace only helps with programming errors (TypeError, …)
    const plain = e instanceof GpuOutOfMemoryError || (e instanceof Error && e.constructor === Error);
    console.error(`\n${plain ? (e as Error).message : ((e as Error).stack ?? e)}`);
    process.exit(1);
  }
}
