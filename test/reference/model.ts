/**
 * @file A CPU reference of the reference GPT and MuonAdamW (karpathy/autoresearch train.py), built
 * only from the plain-TS references in src/ops/*.ts: float32 arrays, plain loops, no GPU, nothing
 * from train.ts. It exists to produce fixtures (test/reference/fixture.ts) for configs beyond the
 * shipped gpt-tiny, so that `npm run verify` is tested on any config of the fixture format.
 *
 * Forward keeps every activation the backward needs (explicitly, per layer); the backward is
 * written by hand from the *BwdRef functions in the reverse order of the forward; the optimizer step
 * applies adamwStepRef / muonStepRef to the groups the reference's setup_optimizer builds.
 *
 * Layout: activations are row-major [N, features] with N = B·T rows (token n = b·T + t); heads are
 * contiguous inside a row, so [N, H·D] is [B, T, H, D]. A Linear weight is [out, in] (y = x·Wᵀ).
 */
import { adamwStepRef } from '../../src/ops/adamw.ts';
import { attentionBwdRef, attentionRef, type AttentionDims } from '../../src/ops/attention.ts';
import { embeddingBwdRef, embeddingRef } from '../../src/ops/embedding.ts';
import { matmulRef } from '../../src/ops/matmul.ts';
import { muonStepRef } from '../../src/ops/muon.ts';
import { relu2BwdRef, relu2Ref } from '../../src/ops/relu2.ts';
import { residualMixBwdRef, residualMixRef } from '../../src/ops/residual_mix.ts';
import { rmsNormBwdRef, rmsNormRef } from '../../src/ops/rms_norm.ts';
import { rotaryBwdRef, rotaryRef, rotaryTablesHost } from '../../src/ops/rotary.ts';
import { softcapRef, softcapXentRef } from '../../src/ops/softcap_xent.ts';
import { valueEmbedBwdRef, valueEmbedRef } from '../../src/ops/value_embed.ts';
import type { FixtureConfig } from '../../src/fixture.ts';

/** The reference's GPTConfig (the fixture's `config`). */
export type RefConfig = FixtureConfig;

/** The value-embedding gate reads x[..., :32]. */
export const VE_GATE_CHANNELS = 32;
/** logits = SOFTCAP·tanh(z / SOFTCAP). */
export const SOFTCAP = 15;

export type Params = Map<string, Float32Array>;

/** has_ve: alternating layers, the last one always included. */
export function refHasValueEmbed(layer: number, nLayer: number): boolean {
  return layer % 2 === (nLayer - 1) % 2;
}

/** _compute_window_sizes: left window per layer (S = T // 2, L = T, pattern repeated, last layer L). */
export function refWindowSizes(config: RefConfig): number[] {
  const pattern = config.window_pattern.toUpperCase();
  if (!/^[SL]+$/.test(pattern)) throw new Error(`refWindowSizes: window_pattern '${config.window_pattern}' must use only S and L`);
  const long = config.sequence_len;
  const short = Math.floor(long / 2);
  const sizes: number[] = [];
  for (let i = 0; i < config.n_layer; i++) sizes.push(pattern[i % pattern.length] === 'L' ? long : short);
  sizes[config.n_layer - 1] = long;
  return sizes;
}

/** head_dim, kv width and the checks the reference's constructors assert. */
export function refDims(config: RefConfig): { C: number; H: number; Hkv: number; D: number; V: number; L: number } {
  const { n_embd: C, n_head: H, n_kv_head: Hkv, vocab_size: V, n_layer: L } = config;
  if (C % H !== 0) throw new Error(`refDims: n_embd ${C} is not a multiple of n_head ${H}`);
  if (Hkv > H || H % Hkv !== 0) throw new Error(`refDims: n_kv_head ${Hkv} must divide n_head ${H}`);
  const D = C / H;
  if (D % 2 !== 0) throw new Error(`refDims: head_dim ${D} must be even (rotary pairs)`);
  if (C < VE_GATE_CHANNELS) throw new Error(`refDims: n_embd ${C} < ${VE_GATE_CHANNELS} (ve_gate reads x[..., :32])`);
  return { C, H, Hkv, D, V, L };
}

export interface ParamSpec {
  name: string;
  shape: number[];
}

/**
 * Every parameter, in the order of the reference's `named_parameters()`: the GPT's own
 * (resid_lambdas, x0_lambdas), then transformer.wte, transformer.h.{i} (attn.c_q, c_k, c_v, c_proj,
 * ve_gate; mlp.c_fc, c_proj), lm_head, value_embeds.{i}.
 */
export function refParamSpecs(config: RefConfig): ParamSpec[] {
  const { C, H, Hkv, D, V, L } = refDims(config);
  const specs: ParamSpec[] = [
    { name: 'resid_lambdas', shape: [L] },
    { name: 'x0_lambdas', shape: [L] },
    { name: 'transformer.wte.weight', shape: [V, C] },
  ];
  for (let i = 0; i < L; i++) {
    const h = `transformer.h.${i}`;
    specs.push(
      { name: `${h}.attn.c_q.weight`, shape: [H * D, C] },
      { name: `${h}.attn.c_k.weight`, shape: [Hkv * D, C] },
      { name: `${h}.attn.c_v.weight`, shape: [Hkv * D, C] },
      { name: `${h}.attn.c_proj.weight`, shape: [C, C] },
    );
    if (refHasValueEmbed(i, L)) specs.push({ name: `${h}.attn.ve_gate.weight`, shape: [Hkv, VE_GATE_CHANNELS] });
    specs.push({ name: `${h}.mlp.c_fc.weight`, shape: [4 * C, C] }, { name: `${h}.mlp.c_proj.weight`, shape: [C, 4 * C] });
  }
  specs.push({ name: 'lm_head.weight', shape: [V, C] });
  for (let i = 0; i < L; i++) if (refHasValueEmbed(i, L)) specs.push({ name: `value_embeds.${i}.weight`, shape: [V, Hkv * D] });
  return specs;
}

// ---------------------------------------------------------------------------------------------
// Small helpers over row-major float32 arrays

/** y [rows, out] = x [rows, in] · Wᵀ for W [out, in]. */
function linearRef(x: Float32Array, rows: number, inF: number, w: Float32Array, outF: number): Float32Array {
  return matmulRef(x, [rows, inF], w, [outF, inF], { transB: true });
}

/** Gradients of y = x·Wᵀ: dx = dy·W [rows, in], dW = dyᵀ·x [out, in]. */
function linearBwdRef(dy: Float32Array, x: Float32Array, rows: number, inF: number, w: Float32Array, outF: number): { dx: Float32Array; dw: Float32Array } {
  return {
    dx: matmulRef(dy, [rows, outF], w, [outF, inF]),
    dw: matmulRef(dy, [rows, outF], x, [rows, inF], { transA: true }),
  };
}

/** The first `width` columns of x [rows, cols] (x[..., :width]). */
function leadingColumns(x: Float32Array, rows: number, cols: number, width: number): Float32Array {
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * cols, r * cols + width), r * width);
  return out;
}

/** a += b, elementwise, in place (float32 like the reference's adds); returns a. */
function addInto(a: Float32Array, b: Float32Array): Float32Array {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
  return a;
}

/** a + b into a new array. */
function sum(a: Float32Array, b: Float32Array): Float32Array {
  return addInto(Float32Array.from(a), b);
}

function param(params: Params, name: string): Float32Array {
  const p = params.get(name);
  if (!p) throw new Error(`reference GPT: missing parameter ${name}`);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Forward, keeping what the backward needs

/** One block's saved activations (N = B·T rows). */
interface LayerCache {
  xIn: Float32Array; // [N, C] the block's input (the residual stream before the mix)
  xMix: Float32Array; // [N, C] resid_lambdas[i]·x + x0_lambdas[i]·x0
  xn: Float32Array; // [N, C] norm(xMix): the attention's input
  qRot: Float32Array; // [N, H·D] rotary(c_q(xn)), before the QK norm
  kRot: Float32Array; // [N, Hkv·D]
  qn: Float32Array; // [N, H·D] norm(qRot) per head
  kn: Float32Array; // [N, Hkv·D]
  v: Float32Array; // [N, Hkv·D] c_v(xn) plus the gated value embedding
  ve: Float32Array | null; // [N, Hkv·D] value_embeds[i][idx]
  gate: Float32Array | null; // [N, Hkv] ve_gate(xn[:, :32]) (the logit; the gate is 2·sigmoid of it)
  y: Float32Array; // [N, H·D] attention output
  xAttn: Float32Array; // [N, C] xMix + c_proj(y)
  xn2: Float32Array; // [N, C] norm(xAttn): the MLP's input
  h: Float32Array; // [N, 4C] c_fc(xn2)
  a: Float32Array; // [N, 4C] relu(h)²
}

export interface RefForward {
  config: RefConfig;
  B: number;
  T: number;
  idx: Int32Array;
  targets: Int32Array;
  softcap: number;
  /** [B·T, V] softcapped logits. */
  logits: Float32Array;
  /** [B·T] cross-entropy per token (0 where target = −1). */
  perTokenLoss: Float32Array;
  /** Mean over targets ≠ −1. */
  loss: number;
  /** [B·T, V] d loss / d (lm_head output before the softcap). */
  dz: Float32Array;
  /** Saved activations. */
  emb: Float32Array; // [N, C] wte[idx]
  x0: Float32Array; // [N, C] norm(emb)
  layers: LayerCache[];
  xFinal: Float32Array; // [N, C] the last block's output
  xf: Float32Array; // [N, C] norm(xFinal)
  cos: Float32Array; // [T, D/2]
  sin: Float32Array;
}

export interface RefForwardOptions {
  /** The logit softcap (the reference: 15). Only the negative tests change it. */
  softcap?: number;
}

/**
 * The reference GPT's forward on idx, targets [B, T] (row-major, B = idx.length / sequence_len):
 * x = norm(wte[idx]); x0 = x; per block: x = λr·x + λ0·x0, x += attn(norm(x)), x += mlp(norm(x));
 * logits = softcap·tanh(lm_head(norm(x)) / softcap); mean cross-entropy ignoring target −1.
 */
export function refForward(config: RefConfig, params: Params, idx: Int32Array, targets: Int32Array, o: RefForwardOptions = {}): RefForward {
  const { C, H, Hkv, D, V, L } = refDims(config);
  const T = config.sequence_len;
  if (idx.length % T !== 0 || idx.length === 0) throw new Error(`refForward: ${idx.length} token ids are not whole rows of sequence_len ${T}`);
  if (targets.length !== idx.length) throw new Error(`refForward: ${targets.length} targets for ${idx.length} ids`);
  const B = idx.length / T;
  const N = B * T;
  const softcap = o.softcap ?? SOFTCAP;
  const windows = refWindowSizes(config);
  const attnDims: AttentionDims = { B, T, H, Hkv, D };
  const { cos, sin } = rotaryTablesHost(T, D);
  const resid = param(params, 'resid_lambdas');
  const x0l = param(params, 'x0_lambdas');

  const emb = embeddingRef(param(params, 'transformer.wte.weight'), C, idx);
  const x0 = rmsNormRef(emb, N, C).y;
  let x = x0;
  const layers: LayerCache[] = [];
  for (let i = 0; i < L; i++) {
    const p = (s: string) => param(params, `transformer.h.${i}.${s}.weight`);
    const xIn = x;
    const xMix = residualMixRef(xIn, x0, resid, x0l, i);
    // attention
    const xn = rmsNormRef(xMix, N, C).y;
    const q = linearRef(xn, N, C, p('attn.c_q'), H * D);
    const k = linearRef(xn, N, C, p('attn.c_k'), Hkv * D);
    let v = linearRef(xn, N, C, p('attn.c_v'), Hkv * D);
    let ve: Float32Array | null = null;
    let gate: Float32Array | null = null;
    if (refHasValueEmbed(i, L)) {
      // value residual (ResFormer): v += 2·sigmoid(ve_gate(x[..., :32]))·ve, one gate per kv head
      ve = embeddingRef(param(params, `value_embeds.${i}.weight`), Hkv * D, idx);
      gate = linearRef(leadingColumns(xn, N, C, VE_GATE_CHANNELS), N, VE_GATE_CHANNELS, p('attn.ve_gate'), Hkv);
      v = valueEmbedRef(v, ve, gate, D);
    }
    const qRot = rotaryRef(q, [B, T, H, D], cos, sin);
    const kRot = rotaryRef(k, [B, T, Hkv, D], cos, sin);
    const qn = rmsNormRef(qRot, N * H, D).y; // QK norm after rotary
    const kn = rmsNormRef(kRot, N * Hkv, D).y;
    const y = attentionRef(qn, kn, v, attnDims, windows[i]).y;
    const xAttn = sum(xMix, linearRef(y, N, H * D, p('attn.c_proj'), C));
    // MLP
    const xn2 = rmsNormRef(xAttn, N, C).y;
    const h = linearRef(xn2, N, C, p('mlp.c_fc'), 4 * C);
    const a = relu2Ref(h);
    x = sum(xAttn, linearRef(a, N, 4 * C, p('mlp.c_proj'), C));
    layers.push({ xIn, xMix, xn, qRot, kRot, qn, kn, v, ve, gate, y, xAttn, xn2, h, a });
  }
  const xFinal = x;
  const xf = rmsNormRef(xFinal, N, C).y;
  const z = linearRef(xf, N, C, param(params, 'lm_head.weight'), V);
  const xent = softcapXentRef(z, targets, V, softcap);
  return {
    config, B, T, idx, targets, softcap,
    logits: softcapRef(z, softcap),
    perTokenLoss: xent.perToken,
    loss: xent.loss,
    dz: xent.dlogits,
    emb, x0, layers, xFinal, xf, cos, sin,
  };
}

// ---------------------------------------------------------------------------------------------
// Backward, by hand, in reverse order of the forward

/** d(mean loss)/d(param) for every parameter, from the activations refForward saved. */
export function refBackward(params: Params, f: RefForward): Params {
  const { config, B, T, idx, cos, sin } = f;
  const { C, H, Hkv, D, V, L } = refDims(config);
  const N = B * T;
  const windows = refWindowSizes(config);
  const attnDims: AttentionDims = { B, T, H, Hkv, D };
  const resid = param(params, 'resid_lambdas');
  const x0l = param(params, 'x0_lambdas');
  const grads: Params = new Map();

  // logits = softcap(xf·lm_headᵀ): dz already holds the softcap's and the mean's factors
  const head = linearBwdRef(f.dz, f.xf, N, C, param(params, 'lm_head.weight'), V);
  grads.set('lm_head.weight', head.dw);
  let dx = rmsNormBwdRef(head.dx, f.xFinal, N, C);

  const dResid = new Float32Array(L);
  const dX0l = new Float32Array(L);
  const dx0 = new Float32Array(N * C); // x0 feeds every layer's residual mix
  for (let i = L - 1; i >= 0; i--) {
    const s = f.layers[i];
    const name = (m: string) => `transformer.h.${i}.${m}.weight`;
    const p = (m: string) => param(params, name(m));
    // x = xAttn + c_proj(relu(c_fc(norm(xAttn)))²)
    const mlpProj = linearBwdRef(dx, s.a, N, 4 * C, p('mlp.c_proj'), C);
    const dh = relu2BwdRef(mlpProj.dx, s.h);
    const fc = linearBwdRef(dh, s.xn2, N, C, p('mlp.c_fc'), 4 * C);
    grads.set(name('mlp.c_proj'), mlpProj.dw);
    grads.set(name('mlp.c_fc'), fc.dw);
    const dxAttn = sum(dx, rmsNormBwdRef(fc.dx, s.xAttn, N, C));

    // xAttn = xMix + c_proj(attention(norm(rotary(q)), norm(rotary(k)), v))
    const attnProj = linearBwdRef(dxAttn, s.y, N, H * D, p('attn.c_proj'), C);
    grads.set(name('attn.c_proj'), attnProj.dw);
    const { dq: dqn, dk: dkn, dv: dvGated } = attentionBwdRef(s.qn, s.kn, s.v, attnProj.dx, attnDims, windows[i]);
    const dq = rotaryBwdRef(rmsNormBwdRef(dqn, s.qRot, N * H, D), [B, T, H, D], cos, sin);
    const dk = rotaryBwdRef(rmsNormBwdRef(dkn, s.kRot, N * Hkv, D), [B, T, Hkv, D], cos, sin);
    let dv = dvGated;
    const dxn = new Float32Array(N * C);
    if (s.ve && s.gate) {
      const g = valueEmbedBwdRef(dvGated, s.ve, s.gate, D);
      dv = g.dv;
      grads.set(`value_embeds.${i}.weight`, embeddingBwdRef(g.dve, idx, V, Hkv * D));
      const gateIn = leadingColumns(s.xn, N, C, VE_GATE_CHANNELS);
      const gate = linearBwdRef(g.dz, gateIn, N, VE_GATE_CHANNELS, p('attn.ve_gate'), Hkv);
      grads.set(name('attn.ve_gate'), gate.dw);
      for (let r = 0; r < N; r++) {
        for (let c = 0; c < VE_GATE_CHANNELS; c++) dxn[r * C + c] += gate.dx[r * VE_GATE_CHANNELS + c];
      }
    }
    const cq = linearBwdRef(dq, s.xn, N, C, p('attn.c_q'), H * D);
    const ck = linearBwdRef(dk, s.xn, N, C, p('attn.c_k'), Hkv * D);
    const cv = linearBwdRef(dv, s.xn, N, C, p('attn.c_v'), Hkv * D);
    grads.set(name('attn.c_q'), cq.dw);
    grads.set(name('attn.c_k'), ck.dw);
    grads.set(name('attn.c_v'), cv.dw);
    addInto(addInto(addInto(dxn, cq.dx), ck.dx), cv.dx);
    const dxMix = sum(dxAttn, rmsNormBwdRef(dxn, s.xMix, N, C));

    // xMix = resid_lambdas[i]·xIn + x0_lambdas[i]·x0
    const mix = residualMixBwdRef(dxMix, s.xIn, f.x0, resid, x0l, i);
    dResid[i] = mix.dLambdas[i];
    dX0l[i] = mix.dMus[i];
    addInto(dx0, mix.dx0);
    dx = mix.dx;
  }
  grads.set('resid_lambdas', dResid);
  grads.set('x0_lambdas', dX0l);

  // x0 = norm(wte[idx]) is both layer 0's input and every layer's x0
  const demb = rmsNormBwdRef(addInto(dx, dx0), f.emb, N, C);
  grads.set('transformer.wte.weight', embeddingBwdRef(demb, idx, V, C));

  // in the reference's order
  return new Map(
    refParamSpecs(config).map(({ name }) => {
      const g = grads.get(name);
      if (!g) throw new Error(`refBackward: no gradient for ${name}`);
      return [name, g];
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// MuonAdamW: the reference's parameter groups and one step from fresh state

/** setup_optimizer's arguments (the fixture's `optimizer.setup`). */
export interface OptimizerSetup {
  unembedding_lr: number;
  embedding_lr: number;
  matrix_lr: number;
  weight_decay: number;
  adam_betas: [number, number];
  scalar_lr: number;
}

/** The hyperparameters of train.py (its setup_optimizer call). */
export const REFERENCE_SETUP: Readonly<OptimizerSetup> = Object.freeze({
  unembedding_lr: 0.004,
  embedding_lr: 0.6,
  matrix_lr: 0.04,
  weight_decay: 0.2,
  adam_betas: [0.8, 0.95] as [number, number],
  scalar_lr: 0.5,
});

/** A parameter group as the fixture lists it (params by name; all lr multipliers 1). */
export type RefParamGroup =
  | { kind: 'adamw'; lr: number; betas: [number, number]; eps: number; weight_decay: number; initial_lr: number; params: string[] }
  | { kind: 'muon'; lr: number; momentum: number; ns_steps: number; beta2: number; weight_decay: number; initial_lr: number; params: string[] };

/** Python's sorted() order for shape tuples. */
function compareShapeTuples(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * setup_optimizer's groups: AdamW for lm_head, wte, value_embeds (lr ∝ 1/√(n_embd/768)),
 * resid_lambdas (scalar_lr·0.01) and x0_lambdas (betas 0.96, 0.95); then one Muon group per
 * distinct shape of transformer.h's parameters, shapes sorted, params in module order. Muon groups
 * carry the step's momentum (`muonMomentum`, get_muon_momentum) and the setup's weight decay.
 */
export function refParamGroups(config: RefConfig, setup: OptimizerSetup, muonMomentum: number): RefParamGroup[] {
  const specs = refParamSpecs(config);
  const scale = (config.n_embd / 768) ** -0.5;
  const adamw = (params: string[], lr: number, betas: [number, number] = setup.adam_betas): RefParamGroup => ({
    kind: 'adamw', lr, betas: [betas[0], betas[1]], eps: 1e-10, weight_decay: 0.0, initial_lr: lr, params,
  });
  const groups: RefParamGroup[] = [
    adamw(['lm_head.weight'], setup.unembedding_lr * scale),
    adamw(['transformer.wte.weight'], setup.embedding_lr * scale),
    adamw(specs.filter((s) => s.name.startsWith('value_embeds.')).map((s) => s.name), setup.embedding_lr * scale),
    adamw(['resid_lambdas'], setup.scalar_lr * 0.01),
    adamw(['x0_lambdas'], setup.scalar_lr, [0.96, 0.95]),
  ];
  const matrices = specs.filter((s) => s.name.startsWith('transformer.h.'));
  const shapes: number[][] = [];
  for (const m of matrices) if (!shapes.some((s) => s.join() === m.shape.join())) shapes.push(m.shape);
  shapes.sort(compareShapeTuples);
  for (const shape of shapes) {
    groups.push({
      kind: 'muon', lr: setup.matrix_lr, momentum: muonMomentum, ns_steps: 5, beta2: 0.95, weight_decay: setup.weight_decay,
      initial_lr: setup.matrix_lr, params: matrices.filter((m) => m.shape.join() === shape.join()).map((m) => m.name),
    });
  }
  return groups;
}

/**
 * One MuonAdamW.step() from fresh state (step 1) with the given groups; returns every parameter
 * after it. AdamW per parameter (adamwStepRef); Muon per group on the stacked [G, R, C] matrices
 * (muonStepRef: Nesterov, Polar Express, NorMuon, cautious update with lr·sqrt(max(1, R/C))).
 */
export function refOptimizerStep(config: RefConfig, params: Params, grads: Params, groups: readonly RefParamGroup[]): Params {
  const shapes = new Map(refParamSpecs(config).map((s) => [s.name, s.shape]));
  const after: Params = new Map([...params].map(([n, p]) => [n, Float32Array.from(p)]));
  for (const g of groups) {
    if (g.kind === 'adamw') {
      for (const name of g.params) {
        const p = param(params, name);
        const zeros = new Float32Array(p.length);
        const r = adamwStepRef(p, param(grads, name), zeros, zeros, {
          lr: g.lr, beta1: g.betas[0], beta2: g.betas[1], eps: g.eps, weightDecay: g.weight_decay, step: 1,
        });
        after.set(name, r.p);
      }
      continue;
    }
    if (!g.params.length) continue;
    const [R, C] = shapes.get(g.params[0]) ?? [];
    for (const name of g.params) {
      if (shapes.get(name)?.join() !== `${R},${C}`) throw new Error(`refOptimizerStep: Muon group [${g.params.join(', ')}] needs one 2-D shape`);
    }
    const G = g.params.length;
    const size = R * C;
    const stackedP = new Float32Array(G * size), stackedG = new Float32Array(G * size);
    g.params.forEach((name, m) => {
      stackedP.set(param(params, name), m * size);
      stackedG.set(param(grads, name), m * size);
    });
    const L = R >= C ? R : C; // NorMuon: one statistic per row (R ≥ C) or per column
    const r = muonStepRef(stackedP, stackedG, { momentumBuffer: new Float32Array(G * size), secondMoment: new Float32Array(G * L) }, { G, R, C }, {
      lr: g.lr, momentum: g.momentum, beta2: g.beta2, weightDecay: g.weight_decay, nsSteps: g.ns_steps,
    });
    g.params.forEach((name, m) => after.set(name, r.params.slice(m * size, (m + 1) * size)));
  }
  return after;
}
