/**
 * @file Wrappers for kernels/attention_fwd.wgsl and kernels/attention_bwd.wgsl (flash-style causal
 * sliding-window attention with grouped-query heads) and their plain-TS references.
 *
 * Shapes: q [B, T, H, D]; k, v [B, T, Hkv, D] (a linear layer's [B·T, heads·D] output, reshaped);
 * H % Hkv == 0 and query head h uses kv head h / (H / Hkv). Query i attends keys j with
 * i − window ≤ j ≤ i (window ≥ T is plain causal); softmax scale 1/sqrt(D). y has q's shape, so
 * [B·T, H·D] feeds c_proj directly; lse [B, H, T] (f32, natural log) is saved for the backward.
 * The kernels read the head dim as vec4 chunks: D % 4 == 0 and D ≤ 128 (asserted).
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

/** Tile sizes of one kernel (all WGSL `override` constants): see the kernels' headers. */
export interface AttentionTile {
  /** Query rows per tile. */
  BR: number;
  /** Key rows per tile. */
  BC: number;
  /** Threads per resident row (any positive integer; capped at the largest power of two ≤ D/4 for small heads). */
  TPR: number;
}

export interface AttentionTiles {
  fwd: AttentionTile;
  dq: AttentionTile;
  dkv: AttentionTile;
}

/**
 * Defaults, sized for D = 128 within 16 KiB of workgroup memory and 128 threads per workgroup:
 * forward keeps 32 query rows resident (4 threads each), dq 16 query rows (8 each), dkv 16 key
 * rows (8 each); the streamed tile is what fits beside them.
 */
export const ATTENTION_TILES: Readonly<AttentionTiles> = Object.freeze({
  fwd: { BR: 32, BC: 16, TPR: 4 },
  dq: { BR: 16, BC: 8, TPR: 8 },
  dkv: { BR: 8, BC: 16, TPR: 8 },
});

/** Largest head dim the kernels take (registers per thread: MAX_CPT vec4 chunks per operand). */
export const ATTENTION_MAX_HEAD_DIM = 128;
const MAX_CPT = 8; // kernels' register arrays
const MAX_BC_FWD = 32; // attention_fwd's per-thread probability array
const DELTA_WG = 256;
/** The subgroup variant's workgroup: one row of D ≤ 128 per 64 threads (AMD's widest subgroup). */
const DELTA_SG_WG = 64;
const LOG2E = Math.LOG2E;

export interface AttentionDims {
  B: number;
  T: number;
  H: number;
  Hkv: number;
  D: number;
}

export interface AttentionOptions {
  /** Tile sizes per kernel (tuning and tests); unspecified ones use ATTENTION_TILES. */
  tiles?: { fwd?: Partial<AttentionTile>; dq?: Partial<AttentionTile>; dkv?: Partial<AttentionTile> };
}

function shapeStr(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/** Validates shapes, dtypes and the window; returns the dims. */
export function attentionDims(op: string, q: Tensor, k: Tensor, v: Tensor, window: number): AttentionDims {
  const shapes = `q ${shapeStr(q)}, k ${shapeStr(k)}, v ${shapeStr(v)}`;
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) throw new Error(`${op}: q, k, v must be 4-D [B, T, heads, D]; got ${shapes}`);
  const [B, T, H, D] = q.shape;
  const Hkv = k.dim(2);
  if (k.dim(0) !== B || k.dim(1) !== T || k.dim(3) !== D) throw new Error(`${op}: k must be [${B}, ${T}, Hkv, ${D}]; got ${shapes}`);
  if (v.shape.some((d, i) => d !== k.shape[i])) throw new Error(`${op}: v must match k; got ${shapes}`);
  if (Hkv === 0 || H % Hkv !== 0) throw new Error(`${op}: query heads ${H} must be a multiple of kv heads ${Hkv}; got ${shapes}`);
  if (D % 4 !== 0 || D === 0 || D > ATTENTION_MAX_HEAD_DIM) {
    throw new Error(`${op}: head dim ${D} must be a positive multiple of 4, at most ${ATTENTION_MAX_HEAD_DIM}; got ${shapes}`);
  }
  if (q.dtype !== k.dtype || q.dtype !== v.dtype || (q.dtype !== 'f32' && q.dtype !== 'f16')) {
    throw new Error(`${op}: q, k, v must share a float dtype; got ${q.dtype}, ${k.dtype}, ${v.dtype}`);
  }
  if (!(window >= 0) || (!Number.isInteger(window) && window !== Infinity)) {
    throw new Error(`${op}: window must be a non-negative integer (or Infinity); got ${window} with ${shapes}`);
  }
  return { B, T, H, Hkv, D };
}

function pow2Floor(n: number): number {
  return 2 ** Math.floor(Math.log2(n));
}

type KernelKind = keyof AttentionTiles;

/** Workgroup memory (bytes) and threads of one kernel's workgroup: see the kernels' headers. */
function footprint(kind: KernelKind, BR: number, BC: number, TPR: number, DC: number): { bytes: number; threads: number } {
  const partials = BR * BC * TPR * 4;
  if (kind === 'fwd') return { bytes: BC * DC * 16 + partials, threads: BR * TPR };
  if (kind === 'dq') return { bytes: 2 * BC * DC * 16 + 2 * partials, threads: BR * TPR };
  return { bytes: 2 * BR * DC * 16 + 2 * partials + 2 * BR * 4, threads: BC * TPR };
}

/** Tile overrides for one kernel: TPR lowered to fit small heads; checks registers and limits. */
function tileOverrides(rt: Runtime, op: string, kind: KernelKind, D: number, over: Partial<AttentionTile> | undefined): Record<string, number> {
  const t = { ...ATTENTION_TILES[kind], ...over };
  for (const [name, val] of Object.entries(t)) {
    if (!Number.isInteger(val) || val < 1) throw new Error(`${op}: ${kind} tile ${name} must be a positive integer; got ${val}`);
  }
  const DC = D / 4;
  const TPR = Math.min(t.TPR, pow2Floor(DC));
  if (Math.ceil(DC / TPR) > MAX_CPT) throw new Error(`${op}: head dim ${D} needs ${kind} TPR ≥ ${Math.ceil(DC / MAX_CPT)}; got ${TPR}`);
  if (kind === 'fwd' && t.BC > MAX_BC_FWD) throw new Error(`${op}: fwd tile BC ${t.BC} exceeds ${MAX_BC_FWD}`);
  const { bytes, threads } = footprint(kind, t.BR, t.BC, TPR, DC);
  if (bytes > rt.limits.maxComputeWorkgroupStorageSize || threads > rt.limits.maxComputeInvocationsPerWorkgroup) {
    throw new Error(`${op}: ${kind} tiles ${JSON.stringify(t)} need ${bytes} B of workgroup memory and ${threads} threads at D = ${D}; ` +
      `this adapter allows ${rt.limits.maxComputeWorkgroupStorageSize} B and ${rt.limits.maxComputeInvocationsPerWorkgroup}`);
  }
  return { BR: t.BR, BC: t.BC, TPR, DC };
}

function dtypeOf(t: Tensor): 'f32' | 'f16' {
  return t.dtype === 'f16' ? 'f16' : 'f32';
}

/** Flash attention forward: y [B, T, H, D] and lse [B, H, T] (f32). */
export function attentionFwd(rt: Runtime, q: Tensor, k: Tensor, v: Tensor, window: number, opts: AttentionOptions = {}): { y: Tensor; lse: Tensor } {
  const { B, T, H, Hkv, D } = attentionDims('attentionFwd', q, k, v, window);
  const ov = tileOverrides(rt, 'attentionFwd', 'fwd', D, opts.tiles?.fwd);
  const y = rt.empty(q.shape, q.dtype);
  const lse = rt.empty([B, H, T], 'f32');
  const kern = rt.kernel({ source: 'attention_fwd.wgsl', entry: 'attention_fwd', overrides: ov, dtype: dtypeOf(q) });
  rt.dispatch(
    kern,
    [q, k, v, y, lse],
    {
      seq: T, n_head: H, n_kv_head: Hkv, window: Math.min(window, T), scale_log2: LOG2E / Math.sqrt(D),
      q_off: q.offset, k_off: k.offset, v_off: v.offset, y_off: y.offset, lse_off: lse.offset,
    },
    Math.ceil(T / ov.BR),
    H,
    B,
  );
  return { y, lse };
}

/**
 * Flash attention backward from the forward's y and lse: dq, dk, dv (shapes of q, k, v).
 * Three kernels: delta = rowsum(dy ⊙ y), then dq per query block, then dk, dv per key block.
 */
export function attentionBwd(
  rt: Runtime, q: Tensor, k: Tensor, v: Tensor, y: Tensor, lse: Tensor, dy: Tensor, window: number, opts: AttentionOptions = {},
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const { B, T, H, Hkv, D } = attentionDims('attentionBwd', q, k, v, window);
  for (const [name, t] of [['y', y], ['dy', dy]] as const) {
    if (t.shape.length !== 4 || t.shape.some((d, i) => d !== q.shape[i]) || t.dtype !== q.dtype) {
      throw new Error(`attentionBwd: ${name} ${t.describe()} must match q ${q.describe()}`);
    }
  }
  if (lse.dtype !== 'f32' || lse.shape.length !== 3 || lse.dim(0) !== B || lse.dim(1) !== H || lse.dim(2) !== T) {
    throw new Error(`attentionBwd: lse ${lse.describe()} must be f32 [${B}, ${H}, ${T}]`);
  }
  const dtype = dtypeOf(q);
  const dqOv = tileOverrides(rt, 'attentionBwd', 'dq', D, opts.tiles?.dq);
  const dkvOv = tileOverrides(rt, 'attentionBwd', 'dkv', D, opts.tiles?.dkv);
  const delta = rt.empty([B, H, T], 'f32');
  const dq = rt.empty(q.shape, q.dtype);
  const dk = rt.empty(k.shape, k.dtype);
  const dv = rt.empty(v.shape, v.dtype);
  const params = {
    seq: T, n_head: H, n_kv_head: Hkv, window: Math.min(window, T), scale_log2: LOG2E / Math.sqrt(D), scale: 1 / Math.sqrt(D),
    rows: B * T * H, q_off: q.offset, k_off: k.offset, v_off: v.offset, y_off: y.offset, dy_off: dy.offset,
    lse_off: lse.offset, delta_off: delta.offset, dq_off: dq.offset, dk_off: dk.offset, dv_off: dv.offset,
  };
  const src = 'attention_bwd.wgsl';
  // delta = rowsum(dy·y): one row per thread, or with subgroups one row per workgroup reduced on them
  const sg = rt.subgroups;
  const deltaK = rt.kernel({ source: src, entry: 'attention_bwd_delta', defines: { DELTA: true, SUBGROUPS: sg }, overrides: { WG: sg ? DELTA_SG_WG : DELTA_WG, DC: D / 4 }, dtype });
  rt.dispatch1d(deltaK, [dy, y, delta], params, sg ? B * T * H : Math.ceil((B * T * H) / DELTA_WG));
  const dqK = rt.kernel({ source: src, entry: 'attention_bwd_dq', defines: { DQ: true }, overrides: dqOv, dtype });
  rt.dispatch(dqK, [q, k, v, dy, lse, delta, dq], params, Math.ceil(T / dqOv.BR), H, B);
  const dkvK = rt.kernel({ source: src, entry: 'attention_bwd_dkv', defines: { DKV: true }, overrides: dkvOv, dtype });
  rt.dispatch(dkvK, [q, k, v, dy, lse, delta, dk, dv], params, Math.ceil(T / dkvOv.BC), Hkv, B);
  rt.release(delta);
  return { dq, dk, dv };
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, float64 accumulation, the full T×T score matrix per (batch, head).

function visible(i: number, j: number, window: number): boolean {
  return j <= i && i - j <= window;
}

/** Scores S (scaled, -Infinity where masked) and probabilities P for one (b, h), each T×T. */
function scoresRef(q: Float32Array, k: Float32Array, d: AttentionDims, b: number, h: number, window: number): { P: Float64Array; lse: Float64Array } {
  const { T, H, Hkv, D } = d;
  const g = Math.floor(h / (H / Hkv));
  const scale = 1 / Math.sqrt(D);
  const S = new Float64Array(T * T).fill(-Infinity);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < T; j++) {
      if (!visible(i, j, window)) continue;
      let s = 0;
      for (let e = 0; e < D; e++) s += q[((b * T + i) * H + h) * D + e] * k[((b * T + j) * Hkv + g) * D + e];
      S[i * T + j] = s * scale;
    }
  }
  const P = new Float64Array(T * T);
  const lse = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    let m = -Infinity;
    for (let j = 0; j < T; j++) m = Math.max(m, S[i * T + j]);
    let sum = 0;
    for (let j = 0; j < T; j++) sum += Math.exp(S[i * T + j] - m); // exp(-Infinity) = 0
    lse[i] = m + Math.log(sum);
    for (let j = 0; j < T; j++) P[i * T + j] = Math.exp(S[i * T + j] - lse[i]);
  }
  return { P, lse };
}

/** Reference forward: y [B, T, H, D] and lse [B, H, T]. */
export function attentionRef(q: Float32Array, k: Float32Array, v: Float32Array, d: AttentionDims, window: number): { y: Float32Array; lse: Float32Array } {
  const { B, T, H, Hkv, D } = d;
  const y = new Float32Array(B * T * H * D);
  const lseOut = new Float32Array(B * H * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / Hkv));
      const { P, lse } = scoresRef(q, k, d, b, h, window);
      for (let i = 0; i < T; i++) {
        lseOut[(b * H + h) * T + i] = lse[i];
        for (let e = 0; e < D; e++) {
          let acc = 0;
          for (let j = 0; j < T; j++) acc += P[i * T + j] * v[((b * T + j) * Hkv + g) * D + e];
          y[((b * T + i) * H + h) * D + e] = acc;
        }
      }
    }
  }
  return { y, lse: lseOut };
}

/** Reference backward: dq, dk, dv for upstream gradient dy (recomputes P; dk, dv summed over each kv head's query heads). */
export function attentionBwdRef(
  q: Float32Array, k: Float32Array, v: Float32Array, dy: Float32Array, d: AttentionDims, window: number,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const { B, T, H, Hkv, D } = d;
  const scale = 1 / Math.sqrt(D);
  const dq = new Float64Array(B * T * H * D);
  const dk = new Float64Array(B * T * Hkv * D);
  const dv = new Float64Array(B * T * Hkv * D);
  const qi = (b: number, i: number, h: number) => ((b * T + i) * H + h) * D;
  const ki = (b: number, j: number, g: number) => ((b * T + j) * Hkv + g) * D;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / Hkv));
      const { P } = scoresRef(q, k, d, b, h, window);
      // dP = dY·Vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP))
      const dS = new Float64Array(T * T);
      for (let i = 0; i < T; i++) {
        const dP = new Float64Array(T);
        let rowDot = 0;
        for (let j = 0; j < T; j++) {
          let s = 0;
          for (let e = 0; e < D; e++) s += dy[qi(b, i, h) + e] * v[ki(b, j, g) + e];
          dP[j] = s;
          rowDot += P[i * T + j] * s;
        }
        for (let j = 0; j < T; j++) dS[i * T + j] = P[i * T + j] * (dP[j] - rowDot);
      }
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          const p = P[i * T + j], ds = dS[i * T + j];
          if (p === 0 && ds === 0) continue;
          for (let e = 0; e < D; e++) {
            dq[qi(b, i, h) + e] += scale * ds * k[ki(b, j, g) + e];
            dk[ki(b, j, g) + e] += scale * ds * q[qi(b, i, h) + e];
            dv[ki(b, j, g) + e] += p * dy[qi(b, i, h) + e];
          }
        }
      }
    }
  }
  return { dq: Float32Array.from(dq), dk: Float32Array.from(dk), dv: Float32Array.from(dv) };
}
