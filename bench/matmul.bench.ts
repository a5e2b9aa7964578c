/**
 * @file Matmul at the default model's shapes: the linear layers forward (NT: activations × Wᵀ),
 * their input gradient (NN: dY × W) and weight gradient (TN: dYᵀ × X), and a Muon Polar Express
 * product (batched X·Xᵀ). Small shapes on software adapters.
 */
import { matmul, type MatmulOptions } from '../src/ops/matmul.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import type { BenchCase, BenchSuite } from './harness.ts';

// default model: depth 8 → C = 512, MLP 4C = 2048, B·T = 16 × 2048 tokens per micro-batch
const MODEL = { tokens: 16 * 2048, C: 512, hidden: 2048, muonGroup: 8 };
const SMALL = { tokens: 256, C: 64, hidden: 256, muonGroup: 2 };

function mm(rt: Runtime, name: string, aShape: number[], bShape: number[], o: MatmulOptions, flops: number, dtype: 'f32' | 'f16' = 'f32'): BenchCase {
  const label = `${name}${dtype === 'f16' ? ' f16' : ''}`;
  if (dtype === 'f16' && !rt.f16) return { name: label, skip: 'this adapter has no shader-f16', run: () => {} };
  const rng = new Rng(2);
  const size = (s: number[]) => s.reduce((p, d) => p * d, 1);
  let a: Tensor, b: Tensor, out: Tensor;
  return {
    name: label,
    flops,
    precision: dtype,
    setup: () => {
      a = rt.keep(rt.fromArray(rng.uniformArray(size(aShape)), aShape, dtype));
      b = rt.keep(rt.fromArray(rng.uniformArray(size(bShape)), bShape, dtype));
      out = rt.keep(matmul(rt, a, b, o));
    },
    run: () => void matmul(rt, a, b, { ...o, out }),
    dispose: () => [a, b, out].forEach((t) => rt.release(t)),
  };
}

export const suite: BenchSuite = {
  family: 'matmul',
  cases(rt, size) {
    const s = size === 'model' ? MODEL : SMALL;
    const { tokens: N, C, hidden: F, muonGroup: G } = s;
    return [
      mm(rt, `NT fwd c_fc ${N}x${C} @ (${F}x${C})ᵀ`, [N, C], [F, C], { transB: true }, 2 * N * C * F),
      mm(rt, `NN dX c_fc ${N}x${F} @ ${F}x${C}`, [N, F], [F, C], {}, 2 * N * F * C),
      mm(rt, `TN dW c_fc (${N}x${F})ᵀ @ ${N}x${C}`, [N, F], [N, C], { transA: true }, 2 * N * F * C),
      mm(rt, `NT fwd c_q ${N}x${C} @ (${C}x${C})ᵀ`, [N, C], [C, C], { transB: true }, 2 * N * C * C),
      mm(rt, `batched NT Muon X·Xᵀ ${G}x${C}x${F}`, [G, C, F], [G, C, F], { transB: true }, 2 * G * C * C * F),
      // f16 storage, f32 accumulation (where the adapter has shader-f16)
      mm(rt, `NT fwd c_fc ${N}x${C} @ (${F}x${C})ᵀ`, [N, C], [F, C], { transB: true }, 2 * N * C * F, 'f16'),
      mm(rt, `TN dW c_fc (${N}x${F})ᵀ @ ${N}x${C}`, [N, F], [N, C], { transA: true }, 2 * N * F * C, 'f16'),
    ];
  },
};
