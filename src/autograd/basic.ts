/**
 * @file Differentiable basics: add, scale, mul, sum/mean, reshape, cast. Each runs the op from
 * src/ops and records its backward on the ambient tape.
 */
import { addScaled, cast as castOp, mul as mulOp, scale as scaleOp, scaleByScalar } from '../ops/elementwise.ts';
import { sumAll } from '../ops/reduce.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { ctx } from './tape.ts';

/** a + b (same shape). */
export function add(a: Tensor, b: Tensor): Tensor {
  const tape = ctx();
  const y = addScaled(tape.rt, a, b, 1, 1);
  tape.record('add', [a, b], [y], ([dy]) => [dy, dy]);
  return y;
}

/** alpha · a */
export function scale(a: Tensor, alpha: number): Tensor {
  const tape = ctx();
  const y = scaleOp(tape.rt, a, alpha);
  tape.record('scale', [a], [y], ([dy]) => [scaleOp(tape.rt, dy!, alpha)]);
  return y;
}

/** a · b elementwise. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const y = mulOp(rt, a, b);
  tape.record('mul', [a, b], [y], ([dy]) => [
    a.requiresGrad ? mulOp(rt, dy!, b) : null,
    b.requiresGrad ? mulOp(rt, dy!, a) : null,
  ]);
  return y;
}

/** Σ of all elements, times alpha (alpha = 1/n gives the mean), as a one-element tensor. */
export function sum(a: Tensor, alpha = 1): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const y = sumAll(rt, a, { alpha });
  tape.record('sum', [a], [y], ([dy]) => {
    // d(alpha Σ a)/da = alpha, times the incoming scalar gradient
    const ones = rt.empty(a.shape, a.dtype);
    rt.fill(ones, 1);
    const da = scaleByScalar(rt, ones, dy!, alpha);
    rt.release(ones);
    return [da];
  });
  return y;
}

/** Mean of all elements. */
export function mean(a: Tensor): Tensor {
  return sum(a, 1 / a.size);
}

/** The same data with a new shape (a view). */
export function reshape(a: Tensor, shape: readonly number[]): Tensor {
  const tape = ctx();
  const y = tape.rt.reshape(a, shape);
  tape.record('reshape', [a], [y], ([dy]) => [tape.rt.reshape(dy!, a.shape)]);
  return y;
}

/**
 * a converted to `dtype` (f32 ↔ f16), like torch.autocast's casts: the gradient comes back in a's
 * own dtype, so f32 master weights get f32 gradients from f16 compute. Returns a itself when the
 * dtype already matches.
 */
export function cast(a: Tensor, dtype: 'f32' | 'f16'): Tensor {
  if (a.dtype === dtype) return a;
  const tape = ctx();
  const y = castOp(tape.rt, a, dtype);
  // an f32 gradient (linear writes weight gradients in f32 from f16 operands) passes through
  tape.record('cast', [a], [y], ([dy]) => [dy!.dtype === a.dtype ? dy : castOp(tape.rt, dy!, a.dtype as 'f32' | 'f16')]);
  return y;
}
