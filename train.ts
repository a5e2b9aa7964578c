/**
 * Autoresearch pretraining script, on WebGPU. Single GPU, single file: the TypeScript twin of the
 * reference train.py (GPT + MuonAdamW + a 5-minute training loop), composed from the kernels and
 * ops under src/ (matmul, elementwise and broadcasting math, reductions, attention, norms).
 * Usage: npx tsx train.ts > run.log 2>&1      (or: npm run train)
 * This is the only file the research agent edits. prepare.ts (data, tokenizer, evaluation) is fixed.
 */

import { MAX_SEQ_LEN, TIME_BUDGET, type Batch, evaluateBpb, makeDataloader } from './prepare.ts';
import { add, cast, reshape, scale } from './src/autograd/basic.ts';
import { attention } from './src/autograd/attention.ts';
import { linear } from './src/autograd/linear.ts';
import { residualMix, valueEmbedGate } from './src/autograd/model_ops.ts';
import { embedding, relu2, rmsNorm, rotary } from './src/autograd/nn.ts';
import { ctx, requiresGrad, useRuntime, zeroGrad } from './src/autograd/tape.ts';
import { peakFlops } from './src/gpu/peaks.ts';
import type { Runtime } from './src/gpu/runtime.ts';
import type { Tensor } from './src/gpu/tensor.ts';
import { type RunSizes, runMain, startRun, type TrainRun } from './src/harness.ts';
import { binary, sumAxis, unary } from './src/ops/broadcast.ts';
import { addScaled, copy, lerpInPlace, scaleByScalarInPlace } from './src/ops/elementwise.ts';
import { buildEmbeddingIndex, type EmbeddingIndex } from './src/ops/embedding.ts';
import { matmul } from './src/ops/matmul.ts';
import { matmulPrecision } from './src/ops/matmul_subgroup_matrix.ts';
import { sumAll } from './src/ops/reduce.ts';
import { rotaryTables } from './src/ops/rotary.ts';
import { crossEntropy, softcapXentCount } from './src/ops/softcap_xent.ts';
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
const LOGIT_CHUNK = 1 << 24; // logits held at once by the loss (64 MiB of f32)

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

/**
 * What a parameter is, for the optimizer (its group in setupOptimizer) and the parameter counts
 * (numScalingParams): block matrices go to Muon, everything else to AdamW.
 */
export type ParamKind = 'wte' | 'value_embeds' | 'lm_head' | 'matrix' | 'resid_lambdas' | 'x0_lambdas';

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
  /** Every parameter, declared once by param(): names, counts, FLOPs and optimizer groups derive from it. */
  readonly params: { name: string; tensor: Tensor; kind: ParamKind }[] = [];
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

  /** dtype: the compute precision (f16: activations and matmul operands; parameters stay f32). */
  constructor(readonly rt: Runtime, readonly config: GPTConfig, readonly dtype: 'f32' | 'f16' = 'f32') {
    const { n_embd: C, n_head: H, n_kv_head: Hkv, vocab_size: V, n_layer: L } = config;
    if (C % H !== 0) throw new Error(`n_embd ${C} is not a multiple of n_head ${H}`);
    if (H % Hkv !== 0 || Hkv > H) throw new Error(`n_kv_head ${Hkv} must divide n_head ${H}`);
    this.headDim = C / H;
    const D = this.headDim;
    this.windowSizes = windowSizes(config);
    this.wte = this.param('transformer.wte.weight', [V, C], 'wte');
    this.lmHead = this.param('lm_head.weight', [V, C], 'lm_head');
    this.residLambdas = this.param('resid_lambdas', [L], 'resid_lambdas');
    this.x0Lambdas = this.param('x0_lambdas', [L], 'x0_lambdas');
    for (let i = 0; i < L; i++) {
      const h = `transformer.h.${i}`;
      const ve = hasValueEmbed(i, L);
      this.blocks.push({
        cQ: this.param(`${h}.attn.c_q.weight`, [H * D, C], 'matrix'),
        cK: this.param(`${h}.attn.c_k.weight`, [Hkv * D, C], 'matrix'),
        cV: this.param(`${h}.attn.c_v.weight`, [Hkv * D, C], 'matrix'),
        attnProj: this.param(`${h}.attn.c_proj.weight`, [C, C], 'matrix'),
        veGate: ve ? this.param(`${h}.attn.ve_gate.weight`, [Hkv, VE_GATE_CHANNELS], 'matrix') : null,
        cFc: this.param(`${h}.mlp.c_fc.weight`, [4 * C, C], 'matrix'),
        mlpProj: this.param(`${h}.mlp.c_proj.weight`, [C, 4 * C], 'matrix'),
      });
      if (ve) this.valueEmbeds.set(i, this.param(`value_embeds.${i}.weight`, [V, Hkv * D], 'value_embeds'));
    }
    const rotarySeqLen = Math.max(config.sequence_len * 10, MAX_SEQ_LEN); // room to evaluate at MAX_SEQ_LEN
    const { cos, sin } = rotaryTables(rt, rotarySeqLen, D);
    this.cos = cos;
    this.sin = sin;
  }

  /** Creates a parameter (zeros until initWeights) under the reference's name and records its kind. */
  private param(name: string, shape: number[], kind: ParamKind): Tensor {
    const tensor = requiresGrad(this.rt.keep(this.rt.zeros(shape, 'f32', name)));
    this.params.push({ name, tensor, kind });
    return tensor;
  }

  namedParameters(): [string, Tensor][] {
    return this.params.map((p) => [p.name, p.tensor]);
  }

  parameters(): Tensor[] {
    return this.params.map((p) => p.tensor);
  }

  paramsOfKind(kind: ParamKind): Tensor[] {
    return this.params.filter((p) => p.kind === kind).map((p) => p.tensor);
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
    let x = rmsNorm(embedding(cast(this.wte, this.dtype), tokens.ids, tokens.index)); // (B, T, C)
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
        const ve = reshape(embedding(cast(veTable, this.dtype), tokens.ids, tokens.index), [B, T, Hkv, D]);
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
    // logits, softmax and loss in f32 (the reference's logits.float()); measured on the smoke config:
    // f16 logits put the 40-step loss curve 1.1% off f32, f32 logits 0.3% (lavapipe, 2026-12-01)
    const { loss, perToken } = softcapCrossEntropy(cast(this.hidden(tokens), 'f32'), this.lmHead, flatTargets);
    return reduction === 'mean' ? loss : perToken;
  }

  /** Softcapped logits (B, T, V) for evaluation: inputs only, no gradient. */
  logits(ids: Tensor): Tensor {
    const [B, T] = ids.shape;
    return ctx().noGrad(() => {
      const x = cast(this.hidden({ ids, index: null }), 'f32'); // f32 logits, as in forward
      const logits = matmul(this.rt, x, this.lmHead, { transB: true, alpha: 1 / SOFTCAP }); // lm_head(x) / softcap
      unary(this.rt, 'tanh', logits, { alpha: SOFTCAP, out: logits }); // softcap · tanh(logits / softcap)
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
    const count = (...kinds: ParamKind[]) => this.params.filter((p) => kinds.includes(p.kind)).reduce((s, p) => s + p.tensor.size, 0);
    const wte = count('wte'), value_embeds = count('value_embeds'), lm_head = count('lm_head');
    const transformer_matrices = count('matrix'), scalars = count('resid_lambdas', 'x0_lambdas');
    return { wte, value_embeds, lm_head, transformer_matrices, scalars, total: wte + value_embeds + lm_head + transformer_matrices + scalars };
  }

  /** The reference's parameter groups: AdamW for embeddings, head and scalars; Muon per matrix shape. */
  setupOptimizer(o: { unembeddingLr: number; embeddingLr: number; matrixLr: number; weightDecay: number; adamBetas: [number, number]; scalarLr: number }): MuonAdamW {
    const dmodelLrScale = (this.config.n_embd / 768) ** -0.5; // LR ∝ 1/√dmodel (tuned at 768)
    console.log(`Scaling AdamW LRs by 1/sqrt(${this.config.n_embd}/768) = ${dmodelLrScale.toFixed(6)}`);
    const adamw = (params: Tensor[], lr: number, betas = o.adamBetas): ParamGroup => ({ kind: 'adamw', params, lr, initialLr: lr, betas, eps: 1e-10, weightDecay: 0 });
    const groups: ParamGroup[] = [
      adamw(this.paramsOfKind('lm_head'), o.unembeddingLr * dmodelLrScale),
      adamw(this.paramsOfKind('wte'), o.embeddingLr * dmodelLrScale),
      adamw(this.paramsOfKind('value_embeds'), o.embeddingLr * dmodelLrScale),
      adamw(this.paramsOfKind('resid_lambdas'), o.scalarLr * 0.01),
      adamw(this.paramsOfKind('x0_lambdas'), o.scalarLr, [0.96, 0.95]),
    ];
    const matrices = this.paramsOfKind('matrix');
    const shapes = [...new Set(matrices.map((p) => p.shape.join('x')))].sort(compareShapes);
    for (const shape of shapes) {
      const params = matrices.filter((p) => p.shape.join('x') === shape);
      groups.push({ kind: 'muon', params, lr: o.matrixLr, initialLr: o.matrixLr, momentum: 0.95, nsSteps: 5, beta2: 0.95, weightDecay: o.weightDecay });
    }
    if (groups.reduce((n, g) => n + g.params.length, 0) !== this.params.length) throw new Error('setupOptimizer: a parameter is in no group, or in two');
    return new MuonAdamW(this.rt, groups);
  }
}

/** Python's sorted() order for shape tuples. */
function compareShapes(a: string, b: string): number {
  const x = a.split('x').map(Number), y = b.split('x').map(Number);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/**
 * Mean cross-entropy of softcap·tanh(x·Wᵀ / softcap) against targets (−1 = ignore), and the
 * per-token losses: the reference's head and loss, x (N, C), W (V, C). The logits are made a chunk
 * of rows at a time, so (N, V) never exists at once; the gradients are worked out here, chunk by
 * chunk, and the recorded backward only scales them by the incoming gradient.
 */
function softcapCrossEntropy(x: Tensor, w: Tensor, targets: Tensor): { loss: Tensor; perToken: Tensor } {
  const tape = ctx();
  const rt = tape.rt;
  const [N, C] = x.shape;
  const chunk = Math.max(1, Math.min(N, Math.floor(LOGIT_CHUNK / w.dim(0))));
  const counts = softcapXentCount(rt, targets); // [targets ≠ −1, 1 / that]: the mean's scale, on the GPU
  const perToken = rt.empty([N]);
  const dx = tape.needsGrad([x]) ? rt.empty(x.shape) : null;
  const dw = tape.needsGrad([w]) ? rt.empty(w.shape) : null;
  const wantGrad = dx !== null || dw !== null;
  for (let r0 = 0; r0 < N; r0 += chunk) {
    rt.scope(() => {
      const rows = Math.min(chunk, N - r0);
      const xc = rt.view(x, [rows, C], r0 * C);
      const z = matmul(rt, xc, w, { transB: true, alpha: 1 / SOFTCAP }); // lm_head(x) / softcap
      const logits = unary(rt, 'tanh', z, { alpha: SOFTCAP }); // softcap · tanh(logits / softcap)
      if (wantGrad) unary(rt, 'square', logits, { alpha: -1 / SOFTCAP ** 2, beta: 1, out: z }); // tanh' = 1 − tanh²
      // per-token loss; with gradients, logits become d(mean loss)/d(logits) in place
      crossEntropy(rt, logits, rt.view(targets, [rows], r0), { out: rt.view(perToken, [rows], r0), grad: wantGrad ? { stats: counts } : undefined });
      if (!wantGrad) return;
      const dz = binary(rt, 'mul', logits, z, { out: logits }); // chain rule through the softcap
      if (dx) matmul(rt, dz, w, { out: rt.view(dx, [rows, C], r0 * C) });
      if (dw) matmul(rt, dz, xc, { transA: true, beta: r0 === 0 ? 0 : 1, out: dw });
    });
  }
  const loss = sumAll(rt, perToken); // Σ per-token losses …
  binary(rt, 'mul', loss, rt.view(counts, [1], 1), { out: loss }); // … / count
  rt.release(counts);
  tape.record('softcapCrossEntropy', [x, w], [loss], ([dLoss]) => [
    dx ? scaleByScalarInPlace(rt, dx, dLoss!) : null,
    dw ? scaleByScalarInPlace(rt, dw, dLoss!) : null,
  ]);
  return { loss, perToken };
}

// ---------------------------------------------------------------------------
// Optimizer (MuonAdamW): Muon for the blocks' matrices, AdamW for everything else
// ---------------------------------------------------------------------------

const POLAR_EXPRESS_COEFFS: [number, number, number][] = [
  [8.156554524902461, -22.48329292557795, 15.878769915207462],
  [4.042929935166739, -2.808917465908714, 0.5000178451051316],
  [3.8916678022926607, -2.772484153217685, 0.5060648178503393],
  [3.285753657755655, -2.3681294933425376, 0.46449024233003106],
  [2.3465413258596377, -1.7097828382687081, 0.42323551169305323],
];

export type ParamGroup =
  | { kind: 'adamw'; params: Tensor[]; lr: number; initialLr: number; betas: [number, number]; eps: number; weightDecay: number }
  | { kind: 'muon'; params: Tensor[]; lr: number; initialLr: number; momentum: number; nsSteps: number; beta2: number; weightDecay: number };

type AdamwGroup = Extract<ParamGroup, { kind: 'adamw' }>;
type MuonGroup = Extract<ParamGroup, { kind: 'muon' }>;

/** One AdamW step, in place on p and its moments (the reference's adamw_step_fused). */
function adamwStep(rt: Runtime, p: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, step: number, g: AdamwGroup): void {
  const [beta1, beta2] = g.betas;
  if (g.weightDecay !== 0) unary(rt, 'affine', p, { alpha: 1 - g.lr * g.weightDecay, out: p }); // p.mul_(1 − lr·wd)
  lerpInPlace(rt, expAvg, grad, 1 - beta1); // exp_avg.lerp_(grad, 1 − β1)
  lerpInPlace(rt, expAvgSq, unary(rt, 'square', grad), 1 - beta2); // exp_avg_sq.lerp_(grad², 1 − β2)
  const bias1 = 1 - beta1 ** step;
  const bias2 = 1 - beta2 ** step;
  const denom = unary(rt, 'sqrt', expAvgSq, { alpha: 1 / Math.sqrt(bias2), beta: g.eps }); // sqrt(exp_avg_sq / bias2) + eps
  const stepSize = g.lr / bias1;
  binary(rt, 'sub', p, binary(rt, 'div', expAvg, denom), { beta: stepSize, out: p }); // p −= step_size · exp_avg / denom
}

/**
 * One Muon step on a group of same-shape matrices stacked as (G, R, C), in place on the stacked
 * params and the two buffers (the reference's muon_step_fused); the stacked grads are overwritten.
 */
function muonStep(rt: Runtime, grads: Tensor, params: Tensor, momentumBuffer: Tensor, secondMomentumBuffer: Tensor, g: MuonGroup): void {
  const [, R, C] = params.shape;
  // Nesterov momentum
  lerpInPlace(rt, momentumBuffer, grads, 1 - g.momentum); // buf.lerp_(g, 1 − μ)
  lerpInPlace(rt, grads, momentumBuffer, g.momentum); // g.lerp_(buf, μ)
  // Polar express orthogonalization
  const norm = unary(rt, 'sqrt', sumAxis(rt, grads, [-2, -1], { squared: true }), { alpha: 1.02, beta: 1e-6 }); // ‖g‖·1.02 + 1e-6
  let X = binary(rt, 'div', grads, norm);
  for (const [a, b, c] of POLAR_EXPRESS_COEFFS.slice(0, g.nsSteps)) {
    const x = X;
    X = rt.scope(() => { // A and B go back to the pool after each iteration
      if (R > C) {
        const A = matmul(rt, x, x, { transA: true }); // A = Xᵀ X
        const B = addScaled(rt, A, matmul(rt, A, A), b, c); // B = b·A + c·A·A
        return addScaled(rt, x, matmul(rt, x, B), a, 1); // X = a·X + X·B
      }
      const A = matmul(rt, x, x, { transB: true }); // A = X Xᵀ
      const B = addScaled(rt, A, matmul(rt, A, A), b, c);
      return addScaled(rt, x, matmul(rt, B, x), a, 1); // X = a·X + B·X
    });
  }
  // NorMuon variance reduction: one statistic per row if R ≥ C (mean over columns), else per column
  const redDim = R >= C ? -1 : -2;
  const redDimSize = R >= C ? C : R;
  const vMean = sumAxis(rt, X, redDim, { squared: true, alpha: 1 / redDimSize }); // mean(X², red_dim)
  const vNorm = unary(rt, 'sqrt', sumAxis(rt, vMean, [-2, -1], { alpha: redDimSize })); // sqrt(Σ v_mean · red_dim_size)
  lerpInPlace(rt, secondMomentumBuffer, vMean, 1 - g.beta2);
  const stepSize = unary(rt, 'rsqrt', unary(rt, 'clamp_min', secondMomentumBuffer, { c: 1e-10 }));
  const scaledSqSum = binary(rt, 'mul', vMean, unary(rt, 'square', stepSize), { alpha: redDimSize }); // (v_mean · red_dim_size) · step²
  const vNormNew = unary(rt, 'sqrt', sumAxis(rt, scaledSqSum, [-2, -1]));
  const finalScale = binary(rt, 'mul', stepSize, binary(rt, 'div', vNorm, unary(rt, 'clamp_min', vNormNew, { c: 1e-10 })));
  binary(rt, 'mul', X, finalScale, { out: X });
  // Cautious weight decay + parameter update, with the learning rate scaled by sqrt(max(1, R/C))
  const lr = g.lr * Math.sqrt(Math.max(1, R / C));
  const mask = unary(rt, 'ge', binary(rt, 'mul', X, params), { c: 0 }); // (g · p) ≥ 0
  const decayed = binary(rt, 'mul', params, mask, { alpha: g.weightDecay }); // wd · p · mask
  binary(rt, 'sub', params, binary(rt, 'add', X, decayed), { beta: lr, out: params }); // p −= lr·g + lr·wd·p·mask
}

export class MuonAdamW {
  readonly #adam = new Map<Tensor, { step: number; expAvg: Tensor; expAvgSq: Tensor }>();
  readonly #muon = new Map<ParamGroup, { stackedGrads: Tensor; stackedParams: Tensor; momentumBuffer: Tensor; secondMomentumBuffer: Tensor }>();

  constructor(readonly rt: Runtime, readonly paramGroups: ParamGroup[]) {}

  #stepAdamw(group: AdamwGroup): void {
    const rt = this.rt;
    for (const p of group.params) {
      if (!p.grad) continue;
      const state = this.#adam.get(p) ?? { step: 0, expAvg: rt.keep(rt.zeros(p.shape)), expAvgSq: rt.keep(rt.zeros(p.shape)) };
      this.#adam.set(p, state);
      state.step += 1;
      rt.scope(() => adamwStep(rt, p, p.grad!, state.expAvg, state.expAvgSq, state.step, group)); // temporaries back to the pool per tensor
    }
  }

  #stepMuon(group: MuonGroup): void {
    const rt = this.rt;
    const params = group.params;
    if (!params.length || params.some((p) => !p.grad)) return;
    const [R, C] = params[0].shape;
    let state = this.#muon.get(group);
    if (!state) {
      const G = params.length;
      state = {
        stackedGrads: rt.keep(rt.empty([G, R, C])),
        stackedParams: rt.keep(rt.empty([G, R, C])),
        momentumBuffer: rt.keep(rt.zeros([G, R, C])),
        secondMomentumBuffer: rt.keep(rt.zeros(R >= C ? [G, R, 1] : [G, 1, C])),
      };
      this.#muon.set(group, state);
    }
    // torch.stack, the step, then _foreach_copy_ back
    const slot = (t: Tensor, i: number) => rt.view(t, [R, C], i * R * C);
    params.forEach((p, i) => {
      copy(rt, p.grad!, slot(state.stackedGrads, i));
      copy(rt, p, slot(state.stackedParams, i));
    });
    muonStep(rt, state.stackedGrads, state.stackedParams, state.momentumBuffer, state.secondMomentumBuffer, group);
    params.forEach((p, i) => copy(rt, slot(state.stackedParams, i), p));
  }

  step(): void {
    for (const group of this.paramGroups) {
      if (group.kind === 'adamw') this.#stepAdamw(group);
      else this.rt.scope(() => this.#stepMuon(group)); // temporaries back to the pool per group
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

// Precision (the reference's autocast): 'f16' computes in f16 (matmul operands and stored activations;
// f32 accumulation, master weights, optimizer state, norm/softmax statistics and the loss);
// 'auto' = f16 where the adapter has shader-f16, else 'f32'.
export const PRECISION: 'auto' | 'f16' | 'f32' = 'auto';

// Model size
const DEPTH = 8; // number of transformer layers
const DEVICE_BATCH_SIZE = 32; // rows per forward/backward (reference: 128 in bf16). One step's pool peak at depth 8 (npm run bench -- --suite step): f16 14.2 GB at 32 rows (7.6 at 16); f32 14.0 GB at 16, 27.1 GB at 32

// ---------------------------------------------------------------------------
// Setup: tokenizer, model, optimizer, dataloader
// ---------------------------------------------------------------------------

/** The sizes above (the harness may shrink them: a software adapter, a test). */
export const RUN_SIZES: RunSizes = {
  depth: DEPTH, aspectRatio: ASPECT_RATIO, headDim: HEAD_DIM, seqLen: MAX_SEQ_LEN, deviceBatchSize: DEVICE_BATCH_SIZE, totalBatchSize: TOTAL_BATCH_SIZE,
};

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

// ---------------------------------------------------------------------------
// Training loop
// ---------------------------------------------------------------------------

/** What the loop carries from step to step (the step bench and the steady-state test build one too). */
export interface TrainState {
  model: GPT;
  optimizer: MuonAdamW;
  loader: { next(): Promise<Batch> };
  batch: Batch; // the next micro-batch, already on the GPU
  embeddingIndex: EmbeddingIndex; // kept, rewritten each micro-step
  gradAccumSteps: number;
  lastLoss: Tensor; // the last micro-step's loss, on the GPU until the one read per step
}

/** One optimizer step: the micro-steps' forward and backward, the schedules, the update. No readback; returns the LR multiplier. */
export async function trainStep(s: TrainState, step: number, progress: number): Promise<number> {
  const rt = s.model.rt;
  // Loss scaling for f16 gradients: backward runs on loss × tokens per step, so activation gradients
  // are per-token sized (|dlogits| ≤ 1) instead of ~1e-9 (below f16's smallest subnormal, 6e-8);
  // weight gradients accumulate in f32 and are unscaled before the optimizer step. Measured on the
  // smoke config (256 tokens per micro-step, so milder than here): 40-step f16 loss curve 1.1% off
  // f32 without the scale, 0.3% with it.
  const lossScale = s.model.dtype === 'f16' ? s.gradAccumSteps * s.batch.inputs.size : 1;
  for (let microStep = 0; microStep < s.gradAccumSteps; microStep++) {
    buildEmbeddingIndex(rt, s.batch.inputsHost, s.model.config.vocab_size, s.embeddingIndex);
    rt.scope(() => {
      const loss = s.model.forward({ ids: s.batch.inputs, index: s.embeddingIndex }, s.batch.targets);
      copy(rt, loss, s.lastLoss);
      ctx().backward(scale(loss, lossScale / s.gradAccumSteps));
    });
    s.batch = await s.loader.next();
  }
  if (lossScale !== 1) for (const p of s.model.params) if (p.tensor.grad) unary(rt, 'affine', p.tensor.grad, { alpha: 1 / lossScale, out: p.tensor.grad });

  // Progress and schedules
  const lrm = getLrMultiplier(progress);
  const muonMomentum = getMuonMomentum(step);
  const muonWeightDecay = getWeightDecay(progress);
  for (const group of s.optimizer.paramGroups) {
    group.lr = group.initialLr * lrm;
    if (group.kind === 'muon') {
      group.momentum = muonMomentum;
      group.weightDecay = muonWeightDecay;
    }
  }
  s.optimizer.step();
  s.optimizer.zeroGrad();
  return lrm;
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

export async function train(run?: TrainRun): Promise<TrainSummary> {
  const tStart = performance.now();
  run ??= await startRun();
  const { rt, tokenizer } = run;
  useRuntime(rt);
  const sizes = run.sizes(RUN_SIZES);
  const vocabSize = tokenizer.vocabSize;
  console.log(`Vocab size: ${vocabSize.toLocaleString('en-US')}`);

  const config = buildModelConfig(sizes.depth, vocabSize, sizes);
  console.log(`Model config: ${JSON.stringify(config)}`);
  const dtype = run.precision(PRECISION);
  console.log(`Precision: ${dtype === 'f16' ? 'f16 compute, f32 master weights' : 'f32'}`);
  const model = new GPT(rt, config, dtype);
  model.initWeights(run.seed);

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
  const batch = await trainLoader.next(); // prefetch first batch
  const embeddingIndex = buildEmbeddingIndex(rt, batch.inputsHost, vocabSize);
  const state: TrainState = { model, optimizer, loader: trainLoader, batch, embeddingIndex, gradAccumSteps, lastLoss: rt.keep(rt.zeros([1])) };

  console.log(`Time budget: ${TIME_BUDGET}s`);
  console.log(`Gradient accumulation steps: ${gradAccumSteps}`);
  const peak = peakFlops(rt.gpu.info, matmulPrecision(rt, dtype)); // MFU against the peak of the units the matmuls run on
  if (!peak) console.log('MFU: peak FLOP/s of this adapter unknown (set AUTORESEARCH_PEAK_TFLOPS); reporting 0');

  let smoothTrainLoss = 0;
  let totalTrainingTime = 0;
  let step = 0;

  while (step < run.maxSteps) {
    const t0 = performance.now();
    const progress = Math.min(totalTrainingTime / TIME_BUDGET, 1);
    const lrm = await trainStep(state, step, progress);
    const epoch = state.batch.epoch;

    const trainLoss = await rt.item(state.lastLoss); // the one sync per step, as in the reference

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

if (isMain(import.meta.url)) await runMain(() => train());
