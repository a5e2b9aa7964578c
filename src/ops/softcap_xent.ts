/**
 * @file Wrappers for kernels/softcap_xent.wgsl and their plain-TS references: the reference GPT's
 * loss head, logits c = s·tanh(z/s) (s = 15; 0 = no cap) and cross-entropy against targets with
 * −1 = ignore (torch's F.cross_entropy(c, targets, ignore_index=-1), a mean over counted targets).
 *
 * The fused kernel can overwrite the logits it reads with the gradient of the mean loss, so a
 * chunk of logits never needs a second V-wide buffer; the 1/count it scales by comes from
 * `softcapXentCount`, computed on the GPU. src/autograd/model_ops.ts builds the chunked LM head on these.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;

type Variant = 'COUNT' | 'XENT' | 'XENT_GRAD' | 'SOFTCAP';

function kernel(rt: Runtime, entry: string, variant: Variant, dtype: 'f32' | 'f16') {
  // the row reductions (max, sum of exponentials) run on subgroups where the device has them
  const subgroups = rt.subgroups && variant.startsWith('XENT');
  const defines = variant === 'XENT_GRAD' ? { XENT: true, GRAD: true, SUBGROUPS: subgroups } : { [variant]: true, SUBGROUPS: subgroups };
  return rt.kernel({ source: 'softcap_xent.wgsl', entry, defines, overrides: { WG }, dtype });
}

function params(o: Partial<Record<'rows' | 'cols' | 'logits_off' | 'targets_off' | 'loss_off' | 'stats_off' | 'alpha', number>>, softcap = 0) {
  return {
    rows: 0, cols: 0, logits_off: 0, targets_off: 0, loss_off: 0, stats_off: 0, alpha: 1,
    ...o,
    softcap,
    inv_softcap: softcap === 0 ? 0 : 1 / softcap,
  };
}

function checkSoftcap(op: string, softcap: number): void {
  if (!Number.isFinite(softcap) || softcap < 0) throw new Error(`${op}: softcap must be ≥ 0 (0 = no cap), got ${softcap}`);
}

function checkTargets(op: string, targets: Tensor, rows: number): void {
  if (targets.dtype !== 'i32') throw new Error(`${op}: targets ${targets.describe()} must be i32`);
  if (targets.size !== rows) throw new Error(`${op}: targets ${targets.describe()} should have ${rows} elements`);
}

/** stats f32 [2] = [count of targets ≠ −1, 1/max(count, 1)]: the scale of a mean over counted tokens. */
export function softcapXentCount(rt: Runtime, targets: Tensor): Tensor {
  checkTargets('softcapXentCount', targets, targets.size);
  const stats = rt.empty([2], 'f32');
  const p = params({ rows: targets.size, targets_off: targets.offset, stats_off: stats.offset });
  rt.dispatch(kernel(rt, 'softcap_xent_count', 'COUNT', 'f32'), [targets, stats], p, 1);
  return stats;
}

export interface SoftcapXentOptions {
  /** s in c = s·tanh(z/s); 0 = no cap. */
  softcap: number;
  /** Per-token losses go here (f32 [rows], e.g. a view into a longer buffer) instead of a new tensor. */
  out?: Tensor;
  /**
   * Overwrite the logits with d(alpha · mean loss)/dz, where the mean divides by stats[1] of a
   * `softcapXentCount` result (a one-call count over all rows, not just this chunk).
   */
  grad?: { stats: Tensor; alpha?: number };
}

/**
 * Per-token loss logsumexp(c) − c[target] (0 for target −1; NaN for a target outside [−1, V)),
 * c = softcap(z), for logits z [..., V] and i32 targets [rows]; f32 [rows]. With `grad`, z is
 * overwritten in place by the gradient (see SoftcapXentOptions).
 */
export function softcapXentFwd(rt: Runtime, logits: Tensor, targets: Tensor, o: SoftcapXentOptions): Tensor {
  checkSoftcap('softcapXentFwd', o.softcap);
  if (logits.dtype !== 'f32' && logits.dtype !== 'f16') throw new Error(`softcapXentFwd: logits ${logits.describe()} are not float`);
  if (logits.ndim < 1) throw new Error(`softcapXentFwd: logits ${logits.describe()} need a vocabulary dimension`);
  const V = logits.dim(-1);
  const rows = V === 0 ? 0 : logits.size / V;
  checkTargets('softcapXentFwd', targets, rows);
  const loss = o.out ?? rt.empty([rows], 'f32');
  if (loss.dtype !== 'f32' || loss.size !== rows) throw new Error(`softcapXentFwd: out ${loss.describe()} should be f32[${rows}]`);
  if (V === 0) throw new Error(`softcapXentFwd: logits ${logits.describe()} have an empty vocabulary`);
  const p = params(
    { rows, cols: V, logits_off: logits.offset, targets_off: targets.offset, loss_off: loss.offset, stats_off: o.grad?.stats.offset ?? 0, alpha: o.grad?.alpha ?? 1 },
    o.softcap,
  );
  if (o.grad) {
    const stats = o.grad.stats;
    if (stats.dtype !== 'f32' || stats.size < 2) throw new Error(`softcapXentFwd: grad.stats ${stats.describe()} should be softcapXentCount's f32[2]`);
    rt.dispatch1d(kernel(rt, 'softcap_xent_fwd', 'XENT_GRAD', logits.dtype), [targets, stats, logits, loss], p, rows);
  } else {
    rt.dispatch1d(kernel(rt, 'softcap_xent_fwd', 'XENT', logits.dtype), [targets, logits, loss], p, rows);
  }
  return loss;
}

/**
 * Cross-entropy without a cap (F.cross_entropy(logits, targets, ignore_index=-1, reduction='none')):
 * per-token losses f32 [rows]; with `grad`, the logits are overwritten in place by d(mean loss)/dlogits.
 */
export function crossEntropy(rt: Runtime, logits: Tensor, targets: Tensor, o: Omit<SoftcapXentOptions, 'softcap'> = {}): Tensor {
  return softcapXentFwd(rt, logits, targets, { ...o, softcap: 0 });
}

/** z ← s·tanh(z/s) in place (s = 0: unchanged); returns z. */
export function softcapFwd(rt: Runtime, z: Tensor, softcap: number): Tensor {
  checkSoftcap('softcapFwd', softcap);
  if (z.dtype !== 'f32' && z.dtype !== 'f16') throw new Error(`softcapFwd: ${z.describe()} is not float`);
  if (softcap === 0) return z;
  const p = params({ rows: z.size, cols: 1, logits_off: z.offset }, softcap);
  rt.dispatch1d(kernel(rt, 'softcap_fwd', 'SOFTCAP', z.dtype), [z], p, Math.ceil(z.size / WG));
  return z;
}

// ---------------------------------------------------------------------------------------------
// References: plain loops in float64, written to be read.

export function softcapRef(z: Float32Array, softcap: number): Float32Array {
  return z.map((v) => (softcap === 0 ? v : softcap * Math.tanh(v / softcap)));
}

export interface SoftcapXentRefResult {
  /** [rows] logsumexp(c) − c[target], 0 where target = −1. */
  perToken: Float32Array;
  /** Mean over targets ≠ −1 (0 when there are none). */
  loss: number;
  count: number;
  /** [rows, V] d loss / d z. */
  dlogits: Float32Array;
}

export function softcapXentRef(logits: Float32Array, targets: Int32Array, V: number, softcap: number): SoftcapXentRefResult {
  const rows = targets.length;
  const perToken = new Float32Array(rows);
  const dlogits = new Float32Array(rows * V);
  let count = 0;
  for (const t of targets) if (t !== -1) count++;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const target = targets[r];
    if (target === -1) continue;
    const c: number[] = [];
    for (let j = 0; j < V; j++) {
      const z = logits[r * V + j];
      c.push(softcap === 0 ? z : softcap * Math.tanh(z / softcap));
    }
    const max = Math.max(...c);
    let sum = 0;
    for (const v of c) sum += Math.exp(v - max);
    const lse = max + Math.log(sum);
    perToken[r] = lse - c[target];
    total += lse - c[target];
    for (let j = 0; j < V; j++) {
      const t = softcap === 0 ? 0 : Math.tanh(logits[r * V + j] / softcap);
      const dcdz = softcap === 0 ? 1 : 1 - t * t;
      const p = Math.exp(c[j] - lse);
      dlogits[r * V + j] = ((p - (j === target ? 1 : 0)) * dcdz) / count;
    }
  }
  return { perToken, loss: count === 0 ? 0 : total / count, count, dlogits };
}
