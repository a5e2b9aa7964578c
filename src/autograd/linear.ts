/**
 * @file Differentiable matrix products: `linear` (torch.nn.Linear without bias, y = x·wᵀ, with an
 * optional input column slice) and `matmul` (2-D and batched 3-D, transposes as flags). Both run
 * src/ops/matmul.ts and record their backward on the ambient tape; every backward product is one
 * strided gemm straight from the saved tensors (no transposed or sliced copies).
 */
import { gemm, type GemmArgs, matmul as matmulOp, matmulShape } from '../ops/matmul.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { cast } from './basic.ts';
import { ctx } from './tape.ts';

export interface LinearOptions {
  /** Use only x[..., :inFeatures] (w is [out, inFeatures]); dx is zero in the other columns. */
  inFeatures?: number;
}

/**
 * y = x[..., :k]·wᵀ for x [..., in] and w [out, k] (k = inFeatures, default in) → y [..., out].
 * Mixed precision (torch.autocast): a weight whose dtype differs from x's (f32 master weights, f16
 * activations) is cast to x's dtype on the tape, so y is in x's dtype and w's gradient in w's.
 * Backward, with x's leading dims folded into R rows: dx = dy·w (NN, written with row stride in),
 * dw = dyᵀ·x[:, :k] (TN, K = R: the split-K path for large batches).
 */
export function linear(x: Tensor, wStored: Tensor, opts: LinearOptions = {}): Tensor {
  const tape = ctx();
  const w = x.dtype === 'f16' || x.dtype === 'f32' ? cast(wStored, x.dtype) : wStored;
  const rt = tape.rt;
  const inX = x.ndim >= 1 ? x.dim(-1) : 0;
  const k = opts.inFeatures ?? inX;
  if (w.ndim !== 2 || x.ndim < 1 || w.dim(1) !== k || !Number.isInteger(k) || k < 1 || k > inX) {
    throw new Error(`linear: expected x [..., in] and w [out, ${opts.inFeatures ?? 'in'}] with inFeatures ≤ in; got x ${x.describe()}, w ${w.describe()}`);
  }
  const out = w.dim(0);
  const rows = x.size / inX;
  const y = matmulOp(rt, x, w, { transB: true, lda: inX, k });
  tape.record('linear', [x, w], [y], ([dy]) => {
    let dx: Tensor | null = null;
    let dw: Tensor | null = null;
    if (x.requiresGrad) {
      // columns past k get no gradient: start from zeros and write the first k with row stride inX
      dx = k === inX ? rt.empty(x.shape, x.dtype) : rt.zeros(x.shape, x.dtype);
      gemm(rt, dy!, w, dx, { M: rows, N: k, K: out, lda: out, ldb: k, ldc: inX });
    }
    if (w.requiresGrad) {
      // an f16 copy of an f32 weight gets its gradient in f32 straight from the f16 operands
      dw = rt.empty(w.shape, wStored.dtype === 'f32' ? 'f32' : w.dtype);
      gemm(rt, dy!, x, dw, { transA: true, M: out, N: k, K: rows, lda: out, ldb: inX, ldc: k });
    }
    return [dx, dw];
  });
  return y;
}

export interface MatmulGradOptions {
  transA?: boolean;
  transB?: boolean;
}

/**
 * C = op(A)·op(B) with matmul's shape rules (src/ops/matmul.ts): A [..., M, K] with B [K, N], or
 * batched B [G, K, N] with A [G, M, K] or broadcast A [M, K]; transA / transB read the stored
 * operand transposed. A broadcast A gets the sum of its per-item gradients.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulGradOptions = {}): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const transA = !!opts.transA, transB = !!opts.transB;
  const s = matmulShape(a.shape, b.shape, { transA, transB });
  const { M, N, K, batch } = s;
  const c = matmulOp(rt, a, b, { transA, transB });
  // row strides of the stored operands, and batch strides of C (dense) and of each operand (0 = broadcast)
  const lda = transA ? s.a.sk : s.a.sm;
  const ldb = transB ? s.b.sn : s.b.sk;
  const sC = M * N;

  /** grad = op1·op2 per batch item, summed over items when the gradient's operand is broadcast. */
  const batched = (p: Tensor, q: Tensor, grad: Tensor, args: Omit<GemmArgs, 'batch' | 'strideA' | 'strideB' | 'strideC'>, sp: number, sq: number, sGrad: number) => {
    if (sGrad !== 0 || batch === 1) {
      gemm(rt, p, q, grad, { ...args, batch, strideA: sp, strideB: sq, strideC: sGrad });
      return;
    }
    for (let i = 0; i < batch; i++) {
      const pi = rt.view(p, [p.size - i * sp], i * sp);
      const qi = rt.view(q, [q.size - i * sq], i * sq);
      gemm(rt, pi, qi, grad, { ...args, beta: i === 0 ? 0 : 1 });
      rt.release(pi);
      rt.release(qi);
    }
  };

  tape.record('matmul', [a, b], [c], ([dc]) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (a.requiresGrad) {
      da = rt.empty(a.shape, a.dtype);
      if (!transA) {
        // dA [M, K] = dC·op(B)ᵀ
        batched(dc!, b, da, { M, N: K, K: N, lda: N, transB: !transB, ldb, ldc: K }, sC, s.b.sb, s.a.sb);
      } else {
        // dA [K, M] = op(B)·dCᵀ
        batched(b, dc!, da, { M: K, N: M, K: N, transA: transB, lda: ldb, transB: true, ldb: N, ldc: M }, s.b.sb, sC, s.a.sb);
      }
    }
    if (b.requiresGrad) {
      db = rt.empty(b.shape, b.dtype);
      if (!transB) {
        // dB [K, N] = op(A)ᵀ·dC
        batched(a, dc!, db, { M: K, N, K: M, transA: !transA, lda, ldb: N, ldc: N }, s.a.sb, sC, s.b.sb);
      } else {
        // dB [N, K] = dCᵀ·op(A)
        batched(dc!, a, db, { M: N, N: K, K: M, transA: true, lda: N, transB: transA, ldb: lda, ldc: K }, sC, s.a.sb, s.b.sb);
      }
    }
    return [da, db];
  });
  return c;
}
