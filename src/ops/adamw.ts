/**
 * @file Fused AdamW step (kernels/adamw.wgsl) and its plain-TS reference. train.ts composes its
 * own AdamW from primitive ops; this one-dispatch version stays for speed (bench suite optimizer).
 *
 * One dispatch updates a parameter and its two moment buffers in place, exactly as the reference's
 * `adamw_step_fused`: decoupled weight decay first, then the moment lerps, then the bias-corrected
 * step. The hyperparameters (which the schedules change every step) travel in the kernel's Params,
 * so a changing lr or step count never recompiles anything.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;

export interface AdamwOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count of this parameter (bias correction). */
  step: number;
}

/** The per-step scalars the kernel takes, derived once on the host (f64, then stored as f32). */
function adamwScalars(o: AdamwOptions): { decay: number; w1: number; w2: number; stepSize: number; bias2: number } {
  if (!(o.step >= 1) || !Number.isInteger(o.step)) throw new Error(`adamwStep: step must be an integer ≥ 1, got ${o.step}`);
  const bias1 = 1 - o.beta1 ** o.step;
  const bias2 = 1 - o.beta2 ** o.step;
  return { decay: 1 - o.lr * o.weightDecay, w1: 1 - o.beta1, w2: 1 - o.beta2, stepSize: o.lr / bias1, bias2 };
}

/**
 * One AdamW step, in place on p (parameters), m (first moment) and v (second moment), given the
 * gradient g. All four must have the same number of elements and the same float dtype.
 */
export function adamwStep(rt: Runtime, p: Tensor, g: Tensor, m: Tensor, v: Tensor, o: AdamwOptions): void {
  for (const t of [g, m, v]) {
    if (t.size !== p.size || t.dtype !== p.dtype) {
      throw new Error(`adamwStep: p ${p.describe()}, g ${g.describe()}, m ${m.describe()}, v ${v.describe()} must match in size and dtype`);
    }
  }
  if (p.dtype !== 'f32' && p.dtype !== 'f16') throw new Error(`adamwStep: ${p.describe()} is not a float tensor`);
  const s = adamwScalars(o);
  const k = rt.kernel({ source: 'adamw.wgsl', entry: 'adamw_step', overrides: { WG }, dtype: p.dtype });
  rt.dispatch1d(
    k,
    [g, p, m, v],
    {
      n: p.size, p_off: p.offset, g_off: g.offset, m_off: m.offset, v_off: v.offset,
      decay: s.decay, w1: s.w1, w2: s.w2, step_size: s.stepSize, bias2: s.bias2, eps: o.eps,
    },
    Math.ceil(p.size / WG),
  );
}

// ---------------------------------------------------------------------------------------------
// Reference: plain loops, written to be read.

/** torch.lerp's formula (two-sided, for accuracy near w = 1). */
export function lerpTorch(start: number, end: number, w: number): number {
  return w < 0.5 ? start + w * (end - start) : end - (end - start) * (1 - w);
}

/** One AdamW step on copies of p, m, v (float64 arithmetic); returns the new values. */
export function adamwStepRef(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  o: AdamwOptions,
): { p: Float32Array; m: Float32Array; v: Float32Array } {
  const bias1 = 1 - o.beta1 ** o.step;
  const bias2 = 1 - o.beta2 ** o.step;
  const pOut = new Float32Array(p.length), mOut = new Float32Array(p.length), vOut = new Float32Array(p.length);
  for (let i = 0; i < p.length; i++) {
    const mi = lerpTorch(m[i], g[i], 1 - o.beta1);
    const vi = lerpTorch(v[i], g[i] * g[i], 1 - o.beta2);
    const denom = Math.sqrt(vi / bias2) + o.eps;
    pOut[i] = p[i] * (1 - o.lr * o.weightDecay) - (o.lr / bias1) * (mi / denom);
    mOut[i] = mi;
    vOut[i] = vi;
  }
  return { p: pOut, m: mOut, v: vOut };
}
