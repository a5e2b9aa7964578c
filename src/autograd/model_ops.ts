/**
 * @file Differentiable pieces of the reference GPT that are not plain algebra: the per-layer
 * residual mix, the value-embedding gate, and the chunked LM head + softcap + cross-entropy loss.
 * Each runs kernels from src/ops and records its backward on the ambient tape (see tape.ts).
 *
 * lmHeadLoss never materialises the [N, V] logits: per chunk of rows it computes the logits,
 * the fused softcap-xent kernel writes per-token losses and overwrites the chunk with d(mean)/dz,
 * and dx, dW are accumulated from that chunk at once. The recorded backward only scales the saved
 * dx, dW by the incoming scalar gradient. train.ts writes the same loss out of primitive ops (its
 * softcapCrossEntropy); lmHeadLoss is the fused alternative (three elementwise passes fewer per chunk).
 */
import { scaleByScalar, scaleByScalarInPlace } from '../ops/elementwise.ts';
import { matmul } from '../ops/matmul.ts';
import { sumAll } from '../ops/reduce.ts';
import { residualMixBwd, residualMixFwd } from '../ops/residual_mix.ts';
import { softcapFwd, softcapXentCount, softcapXentFwd } from '../ops/softcap_xent.ts';
import { valueEmbedBwd, valueEmbedFwd } from '../ops/value_embed.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { cast } from './basic.ts';
import { ctx } from './tape.ts';

/** Logits per chunk (elements): 64 MiB of f32, 2048 rows at V = 8192; well under the 128 MiB binding limit. */
const LOGIT_CHUNK_ELEMS = 1 << 24;

/**
 * x = lambdas[i]·x + mus[i]·x0 (the reference's resid_lambdas / x0_lambdas before layer i).
 * The gradients of the [n_layer] vectors are full-size, zero except at i; the tape sums the layers.
 */
export function residualMix(x: Tensor, x0: Tensor, lambdas: Tensor, mus: Tensor, i: number): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const y = residualMixFwd(rt, x, x0, lambdas, mus, i);
  tape.record('residualMix', [x, x0, lambdas, mus], [y], ([dy]) => {
    const g = residualMixBwd(rt, dy!, x, x0, lambdas, mus, i);
    return [g.dx, g.dx0, g.dLambdas, g.dMus];
  });
  return y;
}

/** y = v + 2·sigmoid(z)·ve; v, ve [B, T, Hkv, D], gate logits z [B, T, Hkv] (value embeddings). */
export function valueEmbedGate(v: Tensor, ve: Tensor, z: Tensor): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const y = valueEmbedFwd(rt, v, ve, z);
  tape.record('valueEmbedGate', [v, ve, z], [y], ([dy]) => {
    if (!ve.requiresGrad && !z.requiresGrad) return [dy, null, null];
    const { dve, dz } = valueEmbedBwd(rt, dy!, ve, z);
    return [dy, dve, dz]; // dv = dy, passed through
  });
  return y;
}

export interface LmHeadLossOptions {
  /** s in s·tanh(z/s) (the reference uses 15); 0 = no cap. */
  softcap: number;
  /** Rows of logits held at once (default: 2^24 / V). */
  chunkRows?: number;
}

/**
 * Mean cross-entropy of softcapped logits x·wᵀ against targets (−1 = ignore), as torch's
 * F.cross_entropy(softcap(x @ w.T), targets, ignore_index=-1); x [..., C] (N rows), w [V, C],
 * targets i32 [N]. Returns the scalar loss [1] (0 when every target is ignored) and the per-token
 * losses [N] (f32, not differentiable; for evaluation). Holds one chunk of logits at a time; when
 * gradients are wanted they are computed here, during the forward, and saved.
 */
export function lmHeadLoss(x: Tensor, wStored: Tensor, targets: Tensor, opts: LmHeadLossOptions): { loss: Tensor; perToken: Tensor } {
  const tape = ctx();
  const rt = tape.rt;
  const w = autocastWeight(x, wStored);
  if (w.ndim !== 2 || x.ndim < 1 || x.dim(-1) !== w.dim(1)) {
    throw new Error(`lmHeadLoss: expected x [..., C] and w [V, C]; got x ${x.describe()}, w ${w.describe()}`);
  }
  if (x.dtype !== w.dtype) throw new Error(`lmHeadLoss: x ${x.describe()} and w ${w.describe()} differ in dtype`);
  // f16 logits: d(mean)/dz = (p − onehot)/count is ~1e-9 at V = 8192 and 32K tokens, below f16's
  // smallest subnormal (6e-8). So in f16 the chunk holds the per-token gradient (p − onehot, |·| ≤ 1),
  // dx is summed in those units, and the backward applies dLoss/count once (a caller that scales the
  // loss by its token count, as train.ts does in f16, keeps the gradients per-token sized throughout).
  const perTokenUnits = x.dtype === 'f16';
  const C = x.dim(-1);
  const V = w.dim(0);
  const N = C === 0 ? 0 : x.size / C;
  if (targets.dtype !== 'i32' || targets.size !== N) {
    throw new Error(`lmHeadLoss: targets ${targets.describe()} should be i32 with ${N} elements (x ${x.describe()})`);
  }
  const chunkRows = opts.chunkRows ?? Math.max(1, Math.floor(LOGIT_CHUNK_ELEMS / Math.max(V, 1)));
  if (!Number.isInteger(chunkRows) || chunkRows < 1) throw new Error(`lmHeadLoss: chunkRows must be a positive integer, got ${chunkRows}`);
  const chunk = Math.min(chunkRows, Math.max(N, 1));
  const wantDx = tape.enabled && x.requiresGrad;
  const wantDw = tape.enabled && w.requiresGrad;

  const stats = softcapXentCount(rt, targets); // [count, 1/count] for the mean, over all rows
  const perToken = rt.empty([N], 'f32');
  const logits = rt.empty([chunk, V], x.dtype);
  const dx = wantDx ? rt.empty(x.shape, x.dtype) : null;
  const dw = wantDw ? rt.empty(w.shape, wStored.dtype === 'f32' ? 'f32' : w.dtype) : null; // f32 master: f32 gradient
  const gradStats = perTokenUnits && (wantDx || wantDw) ? rt.empty([2], 'f32') : null;
  if (gradStats) rt.fill(gradStats, 1); // the kernel scales by gradStats[1] = 1: per-token units
  for (let r0 = 0; r0 < N; r0 += chunk) {
    const rows = Math.min(chunk, N - r0);
    const xc = rt.view(x, [rows, C], r0 * C);
    const z = rt.view(logits, [rows, V]);
    const tc = rt.view(targets, [rows], r0);
    const lc = rt.view(perToken, [rows], r0);
    matmul(rt, xc, w, { transB: true, out: z });
    // z becomes d(mean loss)/dz in place when gradients are wanted
    softcapXentFwd(rt, z, tc, { softcap: opts.softcap, out: lc, grad: wantDx || wantDw ? { stats: gradStats ?? stats } : undefined });
    if (dx) {
      const dxc = rt.view(dx, [rows, C], r0 * C);
      matmul(rt, z, w, { out: dxc });
      rt.release(dxc);
    }
    if (dw) matmul(rt, z, xc, { transA: true, beta: r0 === 0 ? 0 : 1, out: dw });
    for (const t of [xc, z, tc, lc]) rt.release(t);
  }
  rt.release(logits);
  const total = sumAll(rt, perToken);
  const invCount = rt.view(stats, [1], 1);
  const loss = scaleByScalar(rt, total, invCount);
  rt.release(total);
  if (gradStats) rt.release(gradStats);
  if (!perTokenUnits || !(wantDx || wantDw)) for (const t of [invCount, stats]) rt.release(t);

  tape.record('lmHeadLoss', [x, w], [loss], ([dLoss]) => {
    // the saved gradients become the returned ones, scaled in place (no [N, C] copy)
    let s = dLoss!;
    if (perTokenUnits) {
      s = scaleByScalar(rt, dLoss!, invCount); // dLoss/count, f32
      for (const t of [invCount, stats]) rt.release(t);
    }
    const grads = [dx ? scaleByScalarInPlace(rt, dx, s) : null, dw ? scaleByScalarInPlace(rt, dw, s) : null];
    if (s !== dLoss) rt.release(s);
    return grads;
  });
  return { loss, perToken };
}

/**
 * Softcapped logits s·tanh(x·wᵀ/s), [..., V], forward only (evaluation and verification): not
 * recorded on the tape. Materialises all N·V logits, so callers chunk large N themselves.
 */
export function lmHeadLogits(x: Tensor, wStored: Tensor, softcap: number): Tensor {
  const rt = ctx().rt;
  const w = ctx().noGrad(() => autocastWeight(x, wStored));
  if (w.ndim !== 2 || x.ndim < 1 || x.dim(-1) !== w.dim(1)) {
    throw new Error(`lmHeadLogits: expected x [..., C] and w [V, C]; got x ${x.describe()}, w ${w.describe()}`);
  }
  const logits = softcapFwd(rt, matmul(rt, x, w, { transB: true }), softcap);
  if (w !== wStored) rt.release(w);
  return logits;
}

/** An f32 weight meeting f16 activations is cast to f16 on the tape (torch.autocast), else returned as is. */
function autocastWeight(x: Tensor, w: Tensor): Tensor {
  return x.dtype === 'f16' && w.dtype === 'f32' ? cast(w, 'f16') : w;
}
