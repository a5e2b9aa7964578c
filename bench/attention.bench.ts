/**
 * @file Flash attention forward and backward (kernels/attention_fwd.wgsl, attention_bwd.wgsl) at the
 * default model's shapes: B = 16 rows of T = 2048, 4 heads of 128, for both window sizes the SSSL
 * pattern uses (L: full causal, S: half context). f16 variants where the adapter has shader-f16: the
 * SIMT kernels with f16 storage, and the subgroup-matrix (tensor-core) kernels where the adapter has
 * f16 subgroup matrices (kernels/attention_subgroup_matrix.wgsl, its largest config; label says which).
 * FLOPs are model FLOPs per visible (query, key) pair: forward 4·D (QKᵀ and PV), backward 8·D
 * (twice the forward; the kernels' recomputation of P is not counted), as in the MFU estimate.
 */
import { attentionBwd, attentionFwd, type AttentionOptions } from '../src/ops/attention.ts';
import { fragmentLabel } from '../src/gpu/subgroup_matrix.ts';
import { attentionBwdSubgroupMatrix, attentionFwdSubgroupMatrix, chooseFragment } from '../src/ops/attention_subgroup_matrix.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import type { BenchCase, BenchSuite } from './harness.ts';

interface AttentionShape {
  B: number;
  T: number;
  H: number;
  Hkv: number;
  D: number;
}

// default model: depth 8 → 4 heads of 128, DEVICE_BATCH_SIZE 16 × MAX_SEQ_LEN 2048
const MODEL: AttentionShape = { B: 16, T: 2048, H: 4, Hkv: 4, D: 128 };
// train.ts's software configuration: 2 heads of 32, 2 × 256 tokens
const SMALL: AttentionShape = { B: 2, T: 256, H: 2, Hkv: 2, D: 32 };

/** Visible (query, key) pairs of one head: query i sees keys max(0, i − window) … i. */
export function visiblePairs(T: number, window: number): number {
  const w = Math.min(window, T);
  // queries 0 … w−1 see i + 1 keys; the rest see w + 1
  return (w * (w + 1)) / 2 + (T - w) * (w + 1);
}

type Kernels = 'simt' | 'subgroup-matrix';

function attentionCases(rt: Runtime, s: AttentionShape, window: number, dtype: 'f32' | 'f16', kernels: Kernels = 'simt'): BenchCase[] {
  const { B, T, H, Hkv, D } = s;
  const matrix = kernels === 'subgroup-matrix';
  const config = matrix && rt.subgroupMatrix?.configs.length ? chooseFragment(rt) : undefined;
  const variant = matrix ? ` f16 subgroup-matrix${config ? ` ${fragmentLabel(config)}` : ''}` : dtype === 'f16' ? ' f16' : '';
  const label = `${window >= T ? 'causal' : `window ${window}`} ${B}x${T}x${H}x${D}${variant}`;
  const fwdFlops = 4 * D * B * H * visiblePairs(T, window);
  const precision = matrix ? 'f16-matrix' : dtype === 'f16' ? 'f16' : 'f32';
  const simt: AttentionOptions = { simt: true };
  const fwd = (q: Tensor, k: Tensor, v: Tensor) => (matrix ? attentionFwdSubgroupMatrix(rt, q, k, v, window) : attentionFwd(rt, q, k, v, window, simt));
  if ((dtype === 'f16' && !rt.f16) || (matrix && !config)) {
    const skip = matrix ? 'this adapter has no f16 subgroup matrices' : 'this adapter has no shader-f16';
    return [{ name: `attention fwd ${label}`, skip, run: () => {} }, { name: `attention bwd ${label}`, skip, run: () => {} }];
  }
  let t: { q: Tensor; k: Tensor; v: Tensor; y: Tensor; lse: Tensor; dy: Tensor } | null = null;
  const setup = () => {
    if (t) return;
    const rng = new Rng(3);
    const qShape = [B, T, H, D], kvShape = [B, T, Hkv, D];
    const upload = (shape: number[]) => rt.keep(rt.fromArray(rng.uniformArray(shape.reduce((p, d) => p * d, 1)), shape, dtype));
    const q = upload(qShape), k = upload(kvShape), v = upload(kvShape), dy = upload(qShape);
    const { y, lse } = fwd(q, k, v);
    t = { q, k, v, dy, y: rt.keep(y), lse: rt.keep(lse) };
  };
  const dispose = () => {
    if (t) for (const x of Object.values(t)) rt.release(x);
    t = null;
  };
  return [
    {
      name: `attention fwd ${label}`,
      flops: fwdFlops,
      precision,
      matrixConfig: config ? fragmentLabel(config) : null,
      setup,
      run: () => {
        const { y, lse } = fwd(t!.q, t!.k, t!.v);
        rt.release(y);
        rt.release(lse);
      },
    },
    {
      name: `attention bwd ${label}`,
      flops: 2 * fwdFlops,
      precision,
      matrixConfig: config ? fragmentLabel(config) : null,
      setup,
      run: () => {
        const { dq, dk, dv } = matrix
          ? attentionBwdSubgroupMatrix(rt, t!.q, t!.k, t!.v, t!.y, t!.lse, t!.dy, window)
          : attentionBwd(rt, t!.q, t!.k, t!.v, t!.y, t!.lse, t!.dy, window, simt);
        rt.release(dq);
        rt.release(dk);
        rt.release(dv);
      },
      dispose, // the last case of the pair frees the shared inputs
    },
  ];
}

export const suite: BenchSuite = {
  family: 'attention',
  cases(rt, size) {
    const s = size === 'model' ? MODEL : SMALL;
    const long = s.T; // window pattern SSSL: L = full context, S = half (train.ts windowSizes)
    const short = Math.floor(s.T / 2);
    return [
      ...attentionCases(rt, s, long, 'f32'),
      ...attentionCases(rt, s, short, 'f32'),
      ...attentionCases(rt, s, long, 'f16'),
      ...attentionCases(rt, s, long, 'f16', 'subgroup-matrix'),
      ...attentionCases(rt, s, short, 'f16', 'subgroup-matrix'),
    ];
  },
};
