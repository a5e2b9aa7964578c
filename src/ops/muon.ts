/**
 * @file Fused Muon (kernels/muon.wgsl + batched matmuls) and its plain-TS references. train.ts
 * composes its own Muon from primitive ops (so the agent can change it); this fused version stays
 * for speed, and `npm run bench -- --suite optimizer` times the two side by side.
 *
 * Muon updates a group of G same-shape matrices at once, stacked as one tensor [G, R, C], exactly
 * as the reference's `muon_step_fused`:
 *   1. Nesterov momentum: buf ← lerp(buf, g, 1−μ); X ← lerp(g, buf, μ)           (muon_nesterov)
 *   2. Polar Express: X ← X / (‖X‖_F·1.02 + 1e-6) per matrix, then `nsSteps` iterations
 *      X ← a·X + X·(b·A + c·A²), A = XᵀX if R > C (else the mirror image with A = XXᵀ, B·X)
 *   3. NorMuon: per-row (R ≥ C) or per-column second moment m2 and a per-matrix rescale
 *   4. cautious weight decay and update with lr' = lr·sqrt(max(1, R/C)):
 *      p ← p − (lr'·X + lr'·wd·p·[X·p ≥ 0])
 * Each Polar Express iteration is three batched matmuls and one small pass: A = XᵀX;
 * P = a·I + b·A (polar_affine); P += c·A·A (matmul with beta = 1); X' = X·P (a·X is folded into
 * P as a·I, so no extra pass over X). X ping-pongs between two work buffers.
 *
 * The training step must not allocate: `createMuonState` makes every buffer a group needs once
 * (momentum, second moment, and the work buffers), and `muonStep` only records dispatches.
 */
import { MAX_GRID, type Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { lerpTorch } from './adamw.ts';
import { copy } from './elementwise.ts';
import { matmul } from './matmul.ts';

/** Polar Express coefficients (a, b, c), one triple per iteration (the reference's table). */
export const POLAR_EXPRESS_COEFFS: readonly (readonly [number, number, number])[] = [
  [8.156554524902461, -22.48329292557795, 15.878769915207462],
  [4.042929935166739, -2.808917465908714, 0.5000178451051316],
  [3.8916678022926607, -2.772484153217685, 0.5060648178503393],
  [3.285753657755655, -2.3681294933425376, 0.46449024233003106],
  [2.3465413258596377, -1.7097828382687081, 0.42323551169305323],
];

const WG = 256; // threads per workgroup in every muon.wgsl entry (a power of two)
const ITEMS = 16; // elements per thread in the chunked passes
const CHUNK = WG * ITEMS; // elements per Frobenius-norm partial sum
const TX = 32; // columns per workgroup in normuon_col_stats (WG / TX row slices)

type FloatDType = 'f32' | 'f16';

/** G matrices of R rows and C columns. */
export interface GroupShape {
  G: number;
  R: number;
  C: number;
}

/** Scale of the Muon learning rate for an R×C matrix: sqrt(max(1, R/C)). */
export function muonLrScale(R: number, C: number): number {
  return Math.sqrt(Math.max(1, R / C));
}

function spec(entry: string, variant: string, dtype: FloatDType) {
  return { source: 'muon.wgsl', entry, defines: { [variant]: true }, overrides: { WG, ITEMS, TX }, dtype } as const;
}

function floatDtype(t: Tensor, op: string): FloatDType {
  if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new Error(`${op}: ${t.describe()} is not a float tensor`);
  return t.dtype;
}

/** Validates a stacked group tensor [G, R, C] and returns its dimensions. */
function groupShape(t: Tensor, op: string): GroupShape {
  if (t.ndim !== 3 || t.size === 0) throw new Error(`${op}: ${t.describe()} must be a non-empty stack [G, R, C]`);
  const [G, R, C] = t.shape;
  if (G > MAX_GRID) throw new Error(`${op}: ${t.describe()} has more than ${MAX_GRID} matrices`);
  if (Math.ceil((R * C) / CHUNK) > MAX_GRID) throw new Error(`${op}: ${t.describe()}: matrices over ${MAX_GRID * CHUNK} elements`);
  return { G, R, C };
}

function sameShape(a: Tensor, b: Tensor, op: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i]) || a.dtype !== b.dtype) {
    throw new Error(`${op}: ${a.describe()} and ${b.describe()} must have the same shape and dtype`);
  }
}

/** Chunks (Frobenius partial sums) per matrix. */
function chunks(s: GroupShape): number {
  return Math.ceil((s.R * s.C) / CHUNK);
}

/** Length of the NorMuon statistic per matrix: one per row if R ≥ C, else one per column. */
function statLength(s: GroupShape): number {
  return s.R >= s.C ? s.R : s.C;
}

function checkSteps(steps: number, op: string): void {
  if (!Number.isInteger(steps) || steps < 0 || steps > POLAR_EXPRESS_COEFFS.length) {
    throw new Error(`${op}: steps must be an integer in 0..${POLAR_EXPRESS_COEFFS.length} (one per coefficient triple), got ${steps}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Work buffers

/** Reusable buffers for Polar Express on [G, R, C] stacks (see createPolarWork). */
export interface PolarWork {
  readonly shape: GroupShape;
  readonly dtype: FloatDType;
  /** The iterate, ping-ponged between x and y. [G, R, C] */
  readonly x: Tensor;
  readonly y: Tensor;
  /** Gram matrix A (XᵀX if R > C, else XXᵀ) and the polynomial aI + bA + cA². [G, S, S], S = min(R, C) */
  readonly gram: Tensor;
  readonly poly: Tensor;
  /** Σx² per chunk of CHUNK elements, for the Frobenius norms. f32 [G·nc] */
  readonly partials: Tensor;
}

/** Everything one Muon step needs besides the kept state: Polar Express work + NorMuon statistics. */
export interface MuonWork extends PolarWork {
  /** v_mean per row (R ≥ C) or column, then overwritten by the NorMuon scale. f32 [G, R or C] */
  readonly stats: Tensor;
}

function allocWork(rt: Runtime, G: number, R: number, C: number, dtype: FloatDType, keep: boolean): MuonWork {
  const shape = { G, R, C };
  for (const d of [G, R, C]) if (!Number.isInteger(d) || d < 1) throw new Error(`createPolarWork: bad group shape [${G}, ${R}, ${C}]`);
  const S = Math.min(R, C);
  const k = (t: Tensor) => (keep ? rt.keep(t) : t);
  return {
    shape,
    dtype,
    x: k(rt.empty([G, R, C], dtype, 'muon.x')),
    y: k(rt.empty([G, R, C], dtype, 'muon.y')),
    gram: k(rt.empty([G, S, S], dtype, 'muon.gram')),
    poly: k(rt.empty([G, S, S], dtype, 'muon.poly')),
    partials: k(rt.empty([G * chunks(shape)], 'f32', 'muon.partials')),
    stats: k(rt.empty([G, statLength(shape)], 'f32', 'muon.stats')),
  };
}

/**
 * Allocates (once per group) the work buffers of `polarExpress` for [G, R, C] stacks; the tensors
 * are kept (they survive scopes) until `releaseWork`.
 */
export function createPolarWork(rt: Runtime, G: number, R: number, C: number, dtype: FloatDType = 'f32'): MuonWork {
  return allocWork(rt, G, R, C, dtype, true);
}

/** Returns a work set's buffers to the pool. */
export function releaseWork(rt: Runtime, work: PolarWork | MuonWork): void {
  for (const t of [work.x, work.y, work.gram, work.poly, work.partials, 'stats' in work ? work.stats : null]) rt.release(t);
}

function checkWork(work: PolarWork, s: GroupShape, dtype: FloatDType, op: string): void {
  const w = work.shape;
  if (w.G !== s.G || w.R !== s.R || w.C !== s.C || work.dtype !== dtype) {
    throw new Error(`${op}: work buffers are for ${work.dtype}[${w.G}, ${w.R}, ${w.C}], input is ${dtype}[${s.G}, ${s.R}, ${s.C}]`);
  }
}

// ---------------------------------------------------------------------------------------------
// Pieces

function dispatchNesterov(rt: Runtime, grads: Tensor, buf: Tensor, x: Tensor, partials: Tensor, momentum: number, s: GroupShape): void {
  const nc = chunks(s);
  const k = rt.kernel(spec('muon_nesterov', 'NESTEROV', floatDtype(grads, 'nesterov')));
  rt.dispatch(k, [grads, buf, x, partials], { n: s.R * s.C, nc, g_off: grads.offset, buf_off: buf.offset, x_off: x.offset, momentum }, nc, s.G);
}

/**
 * Nesterov momentum on a stack [G, R, C]: buf ← lerp(buf, g, 1−μ) in place, and returns
 * X = lerp(g, buf, μ) (into `out` if given). The gradients are not modified.
 */
export function nesterov(rt: Runtime, grads: Tensor, momentumBuffer: Tensor, momentum: number, out?: Tensor): Tensor {
  const s = groupShape(grads, 'nesterov');
  sameShape(grads, momentumBuffer, 'nesterov');
  const x = out ?? rt.empty(grads.shape, grads.dtype);
  sameShape(grads, x, 'nesterov');
  const partials = rt.empty([s.G * chunks(s)], 'f32');
  dispatchNesterov(rt, grads, momentumBuffer, x, partials, momentum, s);
  rt.release(partials);
  return x;
}

function dispatchFrob(rt: Runtime, entry: 'frob_partials' | 'frob_normalize', w: PolarWork): void {
  const s = w.shape;
  const nc = chunks(s);
  const k = rt.kernel(spec(entry, 'FROB', w.dtype));
  rt.dispatch(k, [w.x, w.partials], { n: s.R * s.C, nc, x_off: w.x.offset }, nc, s.G);
}

/**
 * Normalizes w.x (whose chunk sums of squares are in w.partials) and runs `steps` Polar Express
 * iterations; returns the work tensor that holds the result (w.x or w.y).
 */
function polarIterate(rt: Runtime, w: PolarWork, steps: number): Tensor {
  const { G, R, C } = w.shape;
  const S = Math.min(R, C);
  const tall = R > C;
  dispatchFrob(rt, 'frob_normalize', w);
  const affine = rt.kernel(spec('polar_affine', 'AFFINE', w.dtype));
  let cur = w.x, next = w.y;
  for (const [a, b, c] of POLAR_EXPRESS_COEFFS.slice(0, steps)) {
    matmul(rt, cur, cur, tall ? { transA: true, out: w.gram } : { transB: true, out: w.gram }); // A = XᵀX or XXᵀ
    rt.dispatch1d(affine, [w.gram, w.poly], { n: G * S * S, s: S, ca: a, cb: b }, Math.ceil((G * S * S) / WG)); // P = aI + bA
    matmul(rt, w.gram, w.gram, { alpha: c, beta: 1, out: w.poly }); // P += c·A·A
    if (tall) matmul(rt, cur, w.poly, { out: next }); // X ← X·P = a·X + X·B
    else matmul(rt, w.poly, cur, { out: next }); // X ← P·X = a·X + B·X
    [cur, next] = [next, cur];
  }
  return cur;
}

/**
 * Polar Express orthogonalization of each matrix of g [G, R, C] (g is not modified).
 * With `work` (from createPolarWork, same shape and dtype) nothing is allocated and the result is
 * one of work's buffers (valid until work is used again); without it, temporaries are allocated
 * and released, and the result is a new tensor.
 */
export function polarExpress(rt: Runtime, g: Tensor, steps = 5, work?: PolarWork): Tensor {
  const s = groupShape(g, 'polarExpress');
  const dtype = floatDtype(g, 'polarExpress');
  checkSteps(steps, 'polarExpress');
  const w = work ?? allocWork(rt, s.G, s.R, s.C, dtype, false);
  checkWork(w, s, dtype, 'polarExpress');
  if (g.storage === w.y.storage || g.storage === w.gram.storage || g.storage === w.poly.storage) {
    throw new Error(`polarExpress: input ${g.describe()} is one of the work buffers it overwrites`);
  }
  if (!(g.storage === w.x.storage && g.offset === w.x.offset)) copy(rt, g, w.x);
  dispatchFrob(rt, 'frob_partials', w);
  const result = polarIterate(rt, w, steps);
  if (!work) {
    for (const t of [w.x, w.y, w.gram, w.poly, w.partials, (w as MuonWork).stats]) if (t !== result) rt.release(t);
  }
  return result;
}

/**
 * NorMuon: from X [G, R, C] computes v_mean (mean of X² per row if R ≥ C, else per column),
 * updates the second moment m2 ← lerp(m2, v_mean, 1−β2) in place (m2 [G, R, 1] or [G, 1, C]), and
 * returns the per-row/column scale rsqrt(max(m2, 1e-10))·v_norm/max(v_norm_new, 1e-10), f32 [G, R or C]
 * (into `out` if given). X itself is not modified: the update multiplies by the scale.
 */
export function normuonScale(rt: Runtime, x: Tensor, secondMoment: Tensor, beta2: number, out?: Tensor): Tensor {
  const s = groupShape(x, 'normuonScale');
  const dtype = floatDtype(x, 'normuonScale');
  const perRow = s.R >= s.C;
  const L = statLength(s);
  const m2Shape = perRow ? [s.G, s.R, 1] : [s.G, 1, s.C];
  if (secondMoment.size !== s.G * L || secondMoment.dtype !== dtype) {
    throw new Error(`normuonScale: second moment ${secondMoment.describe()} should be ${dtype}[${m2Shape}] for ${x.describe()}`);
  }
  const stat = out ?? rt.empty([s.G, L], 'f32');
  if (stat.size !== s.G * L || stat.dtype !== 'f32') throw new Error(`normuonScale: out ${stat.describe()} should be f32[${s.G}, ${L}]`);
  const p = { groups: s.G, rows: s.R, cols: s.C, x_off: x.offset };
  // the stats kernels write stat from index 0: a view with an offset would need one more Params field
  if (stat.offset !== 0) throw new Error(`normuonScale: out ${stat.describe()} must start its buffer`);
  if (perRow) rt.dispatch1d(rt.kernel(spec('normuon_row_stats', 'STATS', dtype)), [x, stat], p, s.G * s.R);
  else rt.dispatch(rt.kernel(spec('normuon_col_stats', 'STATS', dtype)), [x, stat], p, Math.ceil(s.C / TX), s.G);
  rt.dispatch(
    rt.kernel(spec('normuon_scale', 'SCALE', dtype)),
    [stat, secondMoment],
    { len: L, red_size: perRow ? s.C : s.R, w2: 1 - beta2, m2_off: secondMoment.offset },
    s.G,
  );
  return stat;
}

/**
 * Cautious weight decay and update, in place on p [G, R, C]: u = X·scale (scale per row if R ≥ C,
 * else per column, f32 [G, R or C] from normuonScale); p ← p − (lr·u + lr·wd·p·[u·p ≥ 0]).
 * `lr` is the effective rate (muonStep passes lr·muonLrScale(R, C)).
 */
export function cautiousUpdate(rt: Runtime, params: Tensor, x: Tensor, scale: Tensor, lr: number, weightDecay: number): void {
  const s = groupShape(params, 'cautiousUpdate');
  sameShape(params, x, 'cautiousUpdate');
  const L = statLength(s);
  if (scale.size !== s.G * L || scale.dtype !== 'f32' || scale.offset !== 0) {
    throw new Error(`cautiousUpdate: scale ${scale.describe()} should be a whole f32[${s.G}, ${L}] buffer for ${params.describe()}`);
  }
  const n = s.G * s.R * s.C;
  const k = rt.kernel(spec('muon_update', 'UPDATE', floatDtype(params, 'cautiousUpdate')));
  rt.dispatch1d(
    k,
    [x, scale, params],
    { n, rows: s.R, cols: s.C, per_row: s.R >= s.C ? 1 : 0, x_off: x.offset, p_off: params.offset, lr, wd: weightDecay },
    Math.ceil(n / WG),
  );
}

// ---------------------------------------------------------------------------------------------
// The whole step

/** What a Muon group keeps between steps, plus its preallocated work buffers. */
export interface MuonState {
  readonly shape: GroupShape;
  /** Nesterov momentum buffer. [G, R, C] */
  readonly momentumBuffer: Tensor;
  /** NorMuon second moment: [G, R, 1] if R ≥ C, else [G, 1, C]. */
  readonly secondMoment: Tensor;
  readonly work: MuonWork;
}

/** Allocates a group's state once (momentum and second moment zeroed; all tensors kept). */
export function createMuonState(rt: Runtime, G: number, R: number, C: number, dtype: FloatDType = 'f32'): MuonState {
  const work = createPolarWork(rt, G, R, C, dtype);
  return {
    shape: { G, R, C },
    momentumBuffer: rt.keep(rt.zeros([G, R, C], dtype, 'muon.momentum')),
    secondMoment: rt.keep(rt.zeros(R >= C ? [G, R, 1] : [G, 1, C], dtype, 'muon.second_moment')),
    work,
  };
}

/** Returns a group's state to the pool. */
export function releaseMuonState(rt: Runtime, state: MuonState): void {
  rt.release(state.momentumBuffer);
  rt.release(state.secondMoment);
  releaseWork(rt, state.work);
}

export interface MuonOptions {
  /** Base learning rate (scaled by sqrt(max(1, R/C)) inside). */
  lr: number;
  /** Nesterov momentum μ. */
  momentum: number;
  /** NorMuon second-moment decay. */
  beta2: number;
  /** Cautious weight decay. */
  weightDecay: number;
  /** Polar Express iterations (0..5). */
  nsSteps: number;
}

/**
 * One Muon step for a group, in place on params [G, R, C] and the state; grads [G, R, C] are read
 * only. Records 5 + 4·nsSteps dispatches (each matmul counted once) and allocates nothing.
 */
export function muonStep(rt: Runtime, params: Tensor, grads: Tensor, state: MuonState, o: MuonOptions): void {
  const s = groupShape(params, 'muonStep');
  sameShape(params, grads, 'muonStep');
  sameShape(params, state.momentumBuffer, 'muonStep');
  checkSteps(o.nsSteps, 'muonStep');
  const w = state.work;
  checkWork(w, s, floatDtype(params, 'muonStep'), 'muonStep');
  dispatchNesterov(rt, grads, state.momentumBuffer, w.x, w.partials, o.momentum, s);
  const x = polarIterate(rt, w, o.nsSteps);
  normuonScale(rt, x, state.secondMoment, o.beta2, w.stats);
  cautiousUpdate(rt, params, x, w.stats, o.lr * muonLrScale(s.R, s.C), o.weightDecay);
}

// ---------------------------------------------------------------------------------------------
// References: plain loops over the stacked row-major arrays, float64 arithmetic.

/** Nesterov: returns the new momentum buffer and X = lerp(g, buf_new, μ). */
export function nesterovRef(g: ArrayLike<number>, buf: ArrayLike<number>, momentum: number): { buf: Float64Array; x: Float64Array } {
  const bufOut = new Float64Array(g.length), x = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) {
    bufOut[i] = lerpTorch(buf[i], g[i], 1 - momentum);
    x[i] = lerpTorch(g[i], bufOut[i], momentum);
  }
  return { buf: bufOut, x };
}

/** C[m×n] = A[m×k] · B[k×n] for one matrix, with optional transposes of the stored operands. */
function matmulF64(a: Float64Array, b: Float64Array, m: number, k: number, n: number, transA = false, transB = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let l = 0; l < k; l++) acc += (transA ? a[l * m + i] : a[i * k + l]) * (transB ? b[j * k + l] : b[l * n + j]);
      c[i * n + j] = acc;
    }
  }
  return c;
}

/** Polar Express on each matrix of g [G, R, C], exactly the reference's loop, in float64. */
export function polarExpressRef(g: ArrayLike<number>, G: number, R: number, C: number, steps = 5): Float64Array {
  checkSteps(steps, 'polarExpressRef');
  const out = new Float64Array(G * R * C);
  for (let m = 0; m < G; m++) {
    let X = Float64Array.from({ length: R * C }, (_, i) => g[m * R * C + i]);
    let sumSq = 0;
    for (const v of X) sumSq += v * v;
    const norm = Math.sqrt(sumSq) * 1.02 + 1e-6;
    X = X.map((v) => v / norm);
    for (const [a, b, c] of POLAR_EXPRESS_COEFFS.slice(0, steps)) {
      if (R > C) {
        const A = matmulF64(X, X, C, R, C, true, false); // XᵀX [C, C]
        const AA = matmulF64(A, A, C, C, C);
        const B = A.map((v, i) => b * v + c * AA[i]);
        const XB = matmulF64(X, B, R, C, C);
        X = X.map((v, i) => a * v + XB[i]);
      } else {
        const A = matmulF64(X, X, R, C, R, false, true); // XXᵀ [R, R]
        const AA = matmulF64(A, A, R, R, R);
        const B = A.map((v, i) => b * v + c * AA[i]);
        const BX = matmulF64(B, X, R, R, C);
        X = X.map((v, i) => a * v + BX[i]);
      }
    }
    out.set(X, m * R * C);
  }
  return out;
}

/**
 * NorMuon on X [G, R, C] with second moment m2 (G·R values if R ≥ C, else G·C): returns the new
 * m2, the per-row/column scale, and the rescaled X.
 */
export function normuonRef(
  x: ArrayLike<number>,
  m2: ArrayLike<number>,
  G: number,
  R: number,
  C: number,
  beta2: number,
): { m2: Float64Array; scale: Float64Array; x: Float64Array } {
  const perRow = R >= C;
  const L = perRow ? R : C;
  const redSize = perRow ? C : R;
  const m2Out = new Float64Array(G * L), scale = new Float64Array(G * L), xOut = new Float64Array(G * R * C);
  for (let m = 0; m < G; m++) {
    const vMean = new Float64Array(L);
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        const v = x[(m * R + r) * C + c];
        vMean[perRow ? r : c] += (v * v) / redSize;
      }
    }
    let normSq = 0, normNewSq = 0;
    for (let i = 0; i < L; i++) {
      m2Out[m * L + i] = lerpTorch(m2[m * L + i], vMean[i], 1 - beta2);
      const step = 1 / Math.sqrt(Math.max(m2Out[m * L + i], 1e-10));
      normSq += vMean[i] * redSize;
      normNewSq += vMean[i] * redSize * step * step;
    }
    const ratio = Math.sqrt(normSq) / Math.max(Math.sqrt(normNewSq), 1e-10);
    for (let i = 0; i < L; i++) scale[m * L + i] = ratio / Math.sqrt(Math.max(m2Out[m * L + i], 1e-10));
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        const i = (m * R + r) * C + c;
        xOut[i] = x[i] * scale[m * L + (perRow ? r : c)];
      }
    }
  }
  return { m2: m2Out, scale, x: xOut };
}

/** Cautious update with an already-scaled update u: p − (lr·u + lr·wd·p·[u·p ≥ 0]). */
export function cautiousUpdateRef(p: ArrayLike<number>, u: ArrayLike<number>, lr: number, weightDecay: number): Float64Array {
  const out = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    const mask = u[i] * p[i] >= 0 ? 1 : 0;
    out[i] = p[i] - (lr * u[i] + lr * weightDecay * p[i] * mask);
  }
  return out;
}

/** The whole Muon group step in plain TS (float64): returns the new params and state. */
export function muonStepRef(
  params: ArrayLike<number>,
  grads: ArrayLike<number>,
  state: { momentumBuffer: ArrayLike<number>; secondMoment: ArrayLike<number> },
  shape: GroupShape,
  o: MuonOptions,
): { params: Float32Array; momentumBuffer: Float32Array; secondMoment: Float32Array } {
  const { G, R, C } = shape;
  const nes = nesterovRef(grads, state.momentumBuffer, o.momentum);
  const X = polarExpressRef(nes.x, G, R, C, o.nsSteps);
  const nor = normuonRef(X, state.secondMoment, G, R, C, o.beta2);
  const p = cautiousUpdateRef(params, nor.x, o.lr * muonLrScale(R, C), o.weightDecay);
  return { params: Float32Array.from(p), momentumBuffer: Float32Array.from(nes.buf), secondMoment: Float32Array.from(nor.m2) };
}
