/**
 * @file Differentiable causal sliding-window GQA attention: runs the flash forward from
 * src/ops/attention.ts and records a backward that reuses its output and logsumexp.
 */
import { attentionBwd, attentionFwd } from '../ops/attention.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { ctx } from './tape.ts';

/**
 * softmax(q·kᵀ/sqrt(D), causal, left window) · v. q [B, T, H, D], k and v [B, T, Hkv, D];
 * query i sees keys i − window … i (window ≥ T: plain causal). Returns y [B, T, H, D].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, window: number): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const { y, lse } = attentionFwd(rt, q, k, v, window);
  if (!tape.needsGrad([q, k, v])) {
    rt.release(lse); // only the backward needs it
    return y;
  }
  tape.record('attention', [q, k, v], [y], ([dy]) => {
    const { dq, dk, dv } = attentionBwd(rt, q, k, v, y, lse, dy!, window);
    rt.release(lse); // saved tensor no longer needed: free it before the rest of the backward
    return [dq, dk, dv];
  });
  return y;
}
