/**
 * @file Wrapper for kernels/attention_subgroup_matrix.wgsl: flash attention forward and backward
 * with QKᵀ, PV, dO·Vᵀ, dS·K, dSᵀ·Q and Pᵀ·dO on subgroup matrices (f16 inputs, f32 accumulation),
 * softmax in f32. Same interface and results as attentionFwd / attentionBwd in attention.ts (which
 * dispatch here for f16 q, k, v on adapters with `chromium-experimental-subgroup-matrix`); the
 * SIMT kernels stay the fallback and the plain-TS references there are the truth for both.
 *
 * The kernel file is written over a logical fragment shape (M, N, K). The host picks one of the
 * adapter's f16→f32 configs (NVIDIA: 16×16×16, 16×8×16, 16×8×8; Apple and lavapipe: 8×8×8) and
 * prepends the fragment layer; `emulate` builds a wider logical shape out of a smaller native one
 * (e.g. 16×8×16 from 8×8×8 on lavapipe), so NVIDIA's shapes run through this code before any NVIDIA
 * card sees it. Tile sizes are chosen to fit the adapter's workgroup memory (see `planTiles`).
 */
import type { Runtime, Kernel } from '../gpu/runtime.ts';
import {
  emulatedFragment, type FragmentConfig, fragmentLabel, fragmentLoad, fragmentPrelude, fragmentStore, nativeFragments,
  nativeTypes, pickF16Fragment, pieces, sameShape, type Shape3, shapeLabel,
} from '../gpu/subgroup_matrix.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { attentionDims } from './attention.ts';

export interface AttentionSmOptions {
  /** Logical fragment shape (default: pickF16Fragment's choice, the adapter's largest f16→f32 config). */
  shape?: Shape3;
  /** Allow `shape` to be built from smaller native fragments in 32-lane workgroups (test mode for NVIDIA's shapes on 8×8×8 adapters). */
  emulate?: boolean;
  /** Tile overrides: subgroups per workgroup and streamed rows per tile (fwd/dq: keys, dkv: queries). */
  tiles?: { fwd?: Partial<SmTile>; dq?: Partial<SmTile>; dkv?: Partial<SmTile> };
}

export interface SmTile {
  /** Subgroups doing matrix work; each owns M resident rows. */
  NSG: number;
  /** Streamed rows per tile (keys in fwd and dq, queries in dkv). */
  BS: number;
}

type Kind = 'fwd' | 'dq' | 'dkv';

const LOG2E = Math.LOG2E;
const DELTA_WG = 256; // attention.ts's delta workgroup sizes
const DELTA_SG_WG = 64;

/** The fragment for a request: the option's shape (native, or emulated when allowed), else the adapter's pick. */
export function chooseFragment(rt: Runtime, opts: AttentionSmOptions = {}): FragmentConfig {
  const support = rt.subgroupMatrix;
  const natives = support ? nativeFragments(support) : [];
  if (!support || !natives.length) throw new Error('subgroup-matrix attention: this adapter has no f16 subgroup matrices');
  if (!opts.shape) return pickF16Fragment(support)!;
  const exact = natives.find((f) => sameShape(f, opts.shape!));
  if (exact) return exact;
  if (!opts.emulate) {
    throw new Error(`subgroup-matrix attention: shape ${shapeLabel(opts.shape)} is not one of this adapter's f16→f32 configs (${natives.map(shapeLabel).join(', ')}); pass emulate: true to build it from smaller ones`);
  }
  return emulatedFragment(support, opts.shape);
}

/** `fn sm_load_acc(off, stride) -> frag_acc`: an f32 accumulator back from smem_f (row-major), for the rare O rescale. */
function accLoad(f: FragmentConfig): string {
  const acc = nativeTypes(f.native).acc;
  if (!f.emulated) return `fn sm_load_acc(off: u32, stride: u32) -> frag_acc { return subgroupMatrixLoad<${acc}, row_major>(&smem_f, off, stride); }\n`;
  const p = pieces(f);
  const lines = ['fn sm_load_acc(off: u32, stride: u32) -> frag_acc {', '  var x: frag_acc;'];
  for (let i = 0; i < p.M; i++) {
    for (let j = 0; j < p.N; j++) {
      lines.push(`  x[${i * p.N + j}] = subgroupMatrixLoad<${acc}, row_major>(&smem_f, off + ${i * f.native.M}u * stride + ${j * f.native.N}u, stride);`);
    }
  }
  return [...lines, '  return x;', '}', ''].join('\n');
}

/**
 * The fragment layer the kernel file expects (src/gpu/subgroup_matrix.ts's prelude plus loads and
 * stores on its two workgroup arrays): f16 operands from `smem_h`, f32 accumulators to and from `smem_f`.
 */
export function fragmentLayer(f: FragmentConfig): string {
  return [
    fragmentPrelude(f),
    fragmentLoad(f, 'left', { fn: 'sm_load_left', array: 'smem_h', layout: 'row_major' }),
    fragmentLoad(f, 'right', { fn: 'sm_load_right_row', array: 'smem_h', layout: 'row_major' }),
    fragmentLoad(f, 'right', { fn: 'sm_load_right_col', array: 'smem_h', layout: 'col_major' }),
    fragmentStore(f, { fn: 'sm_store_acc', array: 'smem_f', layout: 'row_major' }),
    accLoad(f),
  ].join('');
}

export interface SmPlan {
  kind: Kind;
  fragment: FragmentConfig;
  NSG: number;
  /** Streamed rows per tile. */
  BS: number;
  /** Output columns staged at a time. */
  OC: number;
  /** Workgroup memory, bytes. */
  bytes: number;
}

/**
 * Workgroup memory of one kernel (bytes): mirrors the smem declarations in the kernel file (f16 rows
 * padded by 8 elements, f32 rows by 4), and whether the resident rows fit the staging area.
 */
function footprint(kind: Kind, BR: number, BS: number, D: number): { bytes: number; stagingOk: boolean } {
  const DP = D + 8, BP = BS + 8, SF = BS + 4;
  if (kind === 'fwd') {
    const h = 2 * BS * DP + BR * BP;
    return { bytes: 2 * h + 4 * BR * SF + 3 * 4 * BR + 8, stagingOk: BR * DP <= h };
  }
  if (kind === 'dq') {
    const h = 2 * BS * DP + BR * BP;
    return { bytes: 2 * h + 8 * BR * SF + 8 * BR, stagingOk: 2 * BR * DP <= h };
  }
  const h = 2 * BS * DP + 2 * BR * BP;
  return { bytes: 2 * h + 8 * BR * SF + 8 * BS, stagingOk: 2 * BR * DP <= h };
}

const NSG_CHOICES = [4, 2, 1];
const BS_CHOICES = [64, 32, 16, 8];

/**
 * Tiles for one kernel: the most subgroups (resident rows) and then the longest streamed tile that
 * fit the adapter's workgroup memory and invocation limits, unless overridden. With 32 KiB at
 * D = 128 and NVIDIA's 16-row fragments that is fwd 4 subgroups (64 queries) × 32 keys (31.8 KiB),
 * dq 2 × 32 (28.8 KiB), dkv 2 (32 keys) × 32 queries (31.3 KiB); smaller heads fit larger tiles.
 */
export function planTiles(rt: Runtime, kind: Kind, D: number, opts: AttentionSmOptions = {}): SmPlan {
  const fragment = chooseFragment(rt, opts);
  const { M, N, K, subgroupSize } = fragment;
  if (D % N !== 0 || D % K !== 0) throw new Error(`subgroup-matrix attention: head dim ${D} is not a multiple of the fragment's N ${N} and K ${K}`);
  const tprMax = subgroupSize / Math.min(subgroupSize, M); // lanes per row at the largest subgroup
  const over = opts.tiles?.[kind] ?? {};
  const memLimit = rt.limits.maxComputeWorkgroupStorageSize;
  const threadLimit = rt.limits.maxComputeInvocationsPerWorkgroup;
  const tried: string[] = [];
  for (const NSG of over.NSG !== undefined ? [over.NSG] : NSG_CHOICES) {
    for (const BS of over.BS !== undefined ? [over.BS] : BS_CHOICES) {
      const BR = NSG * M;
      if (!Number.isInteger(NSG) || NSG < 1 || !Number.isInteger(BS) || BS < 1) throw new Error(`subgroup-matrix attention: ${kind} tiles must be positive integers; got NSG ${NSG}, BS ${BS}`);
      if (BS % N || BS % K || BS % tprMax) {
        tried.push(`BS ${BS} is not a multiple of N ${N}, K ${K} and ${tprMax} lanes per row`);
        continue;
      }
      const { bytes, stagingOk } = footprint(kind, BR, BS, D);
      if (bytes > memLimit || !stagingOk || NSG * subgroupSize > threadLimit) {
        tried.push(`NSG ${NSG}, BS ${BS}: ${bytes} B${stagingOk ? '' : ' (resident rows do not fit the staging area)'}`);
        continue;
      }
      const ocLimit = kind === 'dq' ? 2 * BS : BS;
      let OC = N;
      for (let c = N; c <= Math.min(D, ocLimit); c += N) if (D % c === 0) OC = c;
      return { kind, fragment, NSG, BS, OC, bytes };
    }
  }
  throw new Error(`subgroup-matrix attention: no ${kind} tiles fit D = ${D} in ${memLimit} B of workgroup memory and ${threadLimit} invocations (${tried.join('; ')})`);
}

/** The WGSL source of one kernel of a plan. */
export function kernelSource(plan: SmPlan, D: number): string {
  const consts = [
    `const NSG: u32 = ${plan.NSG}u;`,
    `const D: u32 = ${D}u;`,
    `const ${plan.kind === 'dkv' ? 'BQ' : 'BC'}: u32 = ${plan.BS}u;`,
    `const OC: u32 = ${plan.OC}u;`,
  ];
  return `${consts.join('\n')}\n${fragmentLayer(plan.fragment)}#include "attention_subgroup_matrix.wgsl"\n`;
}

const ENTRY: Record<Kind, string> = { fwd: 'attention_sm_fwd', dq: 'attention_sm_dq', dkv: 'attention_sm_dkv' };
const DEFINE: Record<Kind, string> = { fwd: 'FWD', dq: 'DQ', dkv: 'DKV' };

/** Plans and compiled kernels per runtime, keyed by kind, head dim and options: the hot path builds no strings twice. */
const cache = new WeakMap<Runtime, Map<string, { plan: SmPlan; kernel: Kernel }>>();

/** `vec4`: the inputs' element offsets are multiples of 4, so tiles are staged 4 elements per load. */
function smKernel(rt: Runtime, kind: Kind, D: number, opts: AttentionSmOptions, vec4: boolean): { plan: SmPlan; kernel: Kernel } {
  let perRt = cache.get(rt);
  if (!perRt) cache.set(rt, (perRt = new Map()));
  const key = `${kind}/${D}/${vec4 ? 4 : 1}/${opts.shape ? shapeLabel(opts.shape) : ''}/${opts.emulate ? 1 : 0}/${JSON.stringify(opts.tiles?.[kind] ?? {})}`;
  let hit = perRt.get(key);
  if (!hit) {
    const plan = planTiles(rt, kind, D, opts);
    const kernel = rt.kernel({ source: { code: kernelSource(plan, D) }, entry: ENTRY[kind], defines: { [DEFINE[kind]]: true, VEC4: vec4 }, dtype: 'f16' });
    hit = { plan, kernel };
    perRt.set(key, hit);
  }
  return hit;
}

/**
 * Why the subgroup-matrix path cannot run these tensors on this runtime, or null when it can:
 * f16 q, k, v, an adapter with f16→f32 subgroup matrices, and a head dim the fragments tile.
 */
export function subgroupMatrixAttentionUnsupported(rt: Runtime, q: Tensor, k: Tensor, v: Tensor): string | null {
  if (q.dtype !== 'f16' || k.dtype !== 'f16' || v.dtype !== 'f16') return 'q, k, v are not all f16';
  const support = rt.subgroupMatrix;
  const f = support && nativeFragments(support).length ? pickF16Fragment(support) : null;
  if (!f) return 'this adapter has no f16 subgroup matrices';
  const D = q.dim(3);
  if (D % f.N || D % f.K) return `head dim ${D} is not a multiple of the ${fragmentLabel(f)} fragment's N and K`;
  return null;
}

function params(q: Tensor, k: Tensor, v: Tensor, T: number, H: number, Hkv: number, D: number, window: number) {
  return {
    seq: T, n_head: H, n_kv_head: Hkv, window: Math.min(window, T), scale_log2: LOG2E / Math.sqrt(D), scale: 1 / Math.sqrt(D),
    q_off: q.offset, k_off: k.offset, v_off: v.offset, y_off: 0, dy_off: 0, lse_off: 0, delta_off: 0, dq_off: 0, dk_off: 0, dv_off: 0,
  };
}

/** Forward on subgroup matrices: y [B, T, H, D] (f16) and lse [B, H, T] (f32), as attentionFwd. */
export function attentionFwdSubgroupMatrix(rt: Runtime, q: Tensor, k: Tensor, v: Tensor, window: number, opts: AttentionSmOptions = {}): { y: Tensor; lse: Tensor } {
  const { B, T, H, Hkv, D } = attentionDims('attentionFwdSubgroupMatrix', q, k, v, window);
  if (q.dtype !== 'f16') throw new Error(`attentionFwdSubgroupMatrix: q, k, v must be f16; got ${q.dtype}`);
  const { plan, kernel } = smKernel(rt, 'fwd', D, opts, [q, k, v].every((t) => t.offset % 4 === 0));
  const y = rt.empty(q.shape, 'f16');
  const lse = rt.empty([B, H, T], 'f32');
  const p = params(q, k, v, T, H, Hkv, D, window);
  p.y_off = y.offset;
  p.lse_off = lse.offset;
  rt.dispatch(kernel, [q, k, v, y, lse], p, Math.ceil(T / (plan.NSG * plan.fragment.M)), H, B);
  return { y, lse };
}

/** Backward on subgroup matrices from the forward's y and lse: dq, dk, dv (f16), as attentionBwd. */
export function attentionBwdSubgroupMatrix(
  rt: Runtime, q: Tensor, k: Tensor, v: Tensor, y: Tensor, lse: Tensor, dy: Tensor, window: number, opts: AttentionSmOptions = {},
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const { B, T, H, Hkv, D } = attentionDims('attentionBwdSubgroupMatrix', q, k, v, window);
  for (const [name, t] of [['q', q], ['y', y], ['dy', dy]] as const) {
    if (t.dtype !== 'f16' || t.shape.length !== 4 || t.shape.some((d, i) => d !== q.shape[i])) {
      throw new Error(`attentionBwdSubgroupMatrix: ${name} ${t.describe()} must be f16 and match q ${q.describe()}`);
    }
  }
  if (lse.dtype !== 'f32' || lse.shape.length !== 3 || lse.dim(0) !== B || lse.dim(1) !== H || lse.dim(2) !== T) {
    throw new Error(`attentionBwdSubgroupMatrix: lse ${lse.describe()} must be f32 [${B}, ${H}, ${T}]`);
  }
  const vec4 = [q, k, v, dy].every((t) => t.offset % 4 === 0);
  const dqK = smKernel(rt, 'dq', D, opts, vec4);
  const dkvK = smKernel(rt, 'dkv', D, opts, vec4);
  const delta = rt.empty([B, H, T], 'f32');
  const dq = rt.empty(q.shape, 'f16');
  const dk = rt.empty(k.shape, 'f16');
  const dv = rt.empty(v.shape, 'f16');
  const p = {
    ...params(q, k, v, T, H, Hkv, D, window),
    rows: B * T * H, y_off: y.offset, dy_off: dy.offset, lse_off: lse.offset, delta_off: delta.offset,
    dq_off: dq.offset, dk_off: dk.offset, dv_off: dv.offset,
  };
  // delta = rowsum(dy ⊙ y): memory-bound, attention_bwd.wgsl's kernel as attentionBwd dispatches it
  const sg = rt.subgroups;
  const deltaK = rt.kernel({ source: 'attention_bwd.wgsl', entry: 'attention_bwd_delta', defines: { DELTA: true, SUBGROUPS: sg }, overrides: { WG: sg ? DELTA_SG_WG : DELTA_WG, DC: D / 4 }, dtype: 'f16' });
  rt.dispatch1d(deltaK, [dy, y, delta], p, sg ? B * T * H : Math.ceil((B * T * H) / DELTA_WG));
  rt.dispatch(dqK.kernel, [q, k, v, dy, lse, delta, dq], p, Math.ceil(T / (dqK.plan.NSG * dqK.plan.fragment.M)), H, B);
  rt.dispatch(dkvK.kernel, [q, k, v, dy, lse, delta, dk, dv], p, Math.ceil(T / (dkvK.plan.NSG * dkvK.plan.fragment.M)), Hkv, B);
  rt.release(delta);
  return { dq, dk, dv };
}
