/**
 * @file Differentiable model pieces: embedding lookup, RMS norm, rotary embedding and relu².
 * Each runs its forward kernel from src/ops and records the matching backward on the ambient tape.
 */
import { embeddingBwd, embeddingFwd, type EmbeddingIndex } from '../ops/embedding.ts';
import { relu2Bwd, relu2Fwd } from '../ops/relu2.ts';
import { rmsNormBwd, rmsNormFwd } from '../ops/rms_norm.ts';
import { rotaryBwd, rotaryFwd } from '../ops/rotary.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { ctx } from './tape.ts';

/**
 * table[ids]: table [V, C], ids i32 (any shape) → [...ids.shape, C]. The gradient flows to the
 * table only, through `index` (buildEmbeddingIndex of the same ids, left unchanged until the
 * backward has run); `index` may be null when no gradient is needed (evaluation).
 */
export function embedding(table: Tensor, ids: Tensor, index: EmbeddingIndex | null): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  if (tape.needsGrad([table])) {
    if (!index) throw new Error(`embedding: ${table.describe()} needs a gradient but no EmbeddingIndex was given (see buildEmbeddingIndex)`);
    if (index.tokens !== ids.size || index.vocabSize !== table.dim(0)) {
      throw new Error(`embedding: index for ${index.tokens} tokens and V=${index.vocabSize} does not fit ids ${ids.describe()} and table ${table.describe()}`);
    }
  }
  const y = embeddingFwd(rt, table, ids);
  tape.record('embedding', [table], [y], ([dy]) => [embeddingBwd(rt, dy!, index!, table.dim(0))]);
  return y;
}

/** RMS norm over the last dimension, no weight, eps = float32 machine epsilon (the reference's `norm`). */
export function rmsNorm(x: Tensor): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const { y, rstd } = rmsNormFwd(rt, x);
  if (!tape.needsGrad([x])) {
    rt.release(rstd); // only the backward reads it
    return y;
  }
  tape.record('rms_norm', [x], [y], ([dy]) => [rmsNormBwd(rt, dy!, x, rstd)]);
  return y;
}

/** Rotary embedding of x [B, T, H, D] with tables cos, sin [>=T, D/2] (constants: no gradient). */
export function rotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const y = rotaryFwd(rt, x, cos, sin);
  tape.record('rotary', [x], [y], ([dy]) => [rotaryBwd(rt, dy!, cos, sin)]);
  return y;
}

/** relu(x)², elementwise. */
export function relu2(x: Tensor): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const y = relu2Fwd(rt, x);
  tape.record('relu2', [x], [y], ([dy]) => [relu2Bwd(rt, dy!, x)]);
  return y;
}
