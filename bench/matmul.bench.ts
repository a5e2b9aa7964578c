/**
 * @file Matmul at the default model's shapes: the linear layers forward (NT: activations × Wᵀ),
 * their input gradient (NN: dY × W) and weight gradient (TN: dYᵀ × X), and a Muon Polar Express
 * product (batched X·Xᵀ); in f32, and in f16 on subgroup matrices (tensor cores) where the adapter has
 * them, else the SIMT kernel. Small shapes on software adapters (their speed says nothing about GPUs).
 */
import { matmul, type MatmulOptions } from '../src/ops/matmul.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import type { BenchCase, BenchSuite, SizeSet } from './harness.ts';
import { fragmentLabel } from '../src/gpu/subgroup_matrix.ts';
import { matmulPrecision, sgmatFragment } from '../src/ops/matmul_subgroup_matrix.ts';
import type { GemmProblem } from '../src/ops/matmul_tune.ts';

// default model: depth 8 → C = 512, MLP 4C = 2048, B·T = 16 × 2048 tokens per micro-batch
const MODEL = { tokens: 16 * 2048, C: 512, hidden: 2048, muonGroup: 8 };
const SMALL = { tokens: 256, C: 64, hidden: 256, muonGroup: 2 };

function mm(rt: Runtime, name: string, aShape: number[], bShape: number[], o: MatmulOptions, flops: number, dtype: 'f32' | 'f16' = 'f32'): BenchCase {
  // f16 operands run on subgroup matrices where the adapter has them (matmul.ts's dispatch), unless a SIMT kernel is forced
  const matrix = dtype === 'f16' && !o.impl ? sgmatFragment(rt) : null;
  const label = `${name}${dtype === 'f16' ? (matrix ? ` f16 subgroup-matrix ${fragmentLabel(matrix)}` : ` f16 SIMT${o.impl ? ' ' + o.impl : ''}`) : ''}`;
  if (dtype === 'f16' && !rt.f16) return { name: label, skip: 'this adapter has no shader-f16', run: () => {} };
  const rng = new Rng(2);
  const size = (s: number[]) => s.reduce((p, d) => p * d, 1);
  let a: Tensor, b: Tensor, out: Tensor;
  return {
    name: label,
    flops,
    precision: dtype === 'f16' && o.impl ? 'f16' : matmulPrecision(rt, dtype),
    matrixConfig: matrix ? fragmentLabel(matrix) : null,
    setup: () => {
      a = rt.keep(rt.fromArray(rng.uniformArray(size(aShape)), aShape, dtype));
      b = rt.keep(rt.fromArray(rng.uniformArray(size(bShape)), bShape, dtype));
      out = rt.keep(matmul(rt, a, b, o));
    },
    run: () => void matmul(rt, a, b, { ...o, out }),
    dispose: () => [a, b, out].forEach((t) => rt.release(t)),
  };
}

/** The model's matmul products (shapes as in `cases`), for `npm run bench -- --tune`. */
export function tuneProblems(size: SizeSet): GemmProblem[] {
  const { tokens: N, C, hidden: F, muonGroup: G } = size === 'model' ? MODEL : SMALL;
  const p = (M: number, n: number, K: number, t: { transA?: boolean; transB?: boolean }, extra: Partial<GemmProblem> = {}): GemmProblem =>
    ({ M, N: n, K, batch: 1, transA: !!t.transA, transB: !!t.transB, cDtype: 'f16', accumulate: false, ...extra });
  return [
    p(N, F, C, { transB: true }), // c_fc forward: x·Wᵀ
    p(N, C, F, {}), // c_fc input gradient
    p(F, C, N, { transA: true }, { cDtype: 'f32' }), // c_fc weight gradient into f32 master gradients
    p(N, C, C, { transB: true }), // attention projections
    p(C, C, N, { transA: true }, { cDtype: 'f32' }),
    p(C, C, F, { transB: true }, { batch: G }), // Muon X·Xᵀ
  ];
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
      // f16 storage, f32 accumulation: subgroup matrices (tensor cores) where the adapter has them ...
      mm(rt, `NT fwd c_fc ${N}x${C} @ (${F}x${C})ᵀ`, [N, C], [F, C], { transB: true }, 2 * N * C * F, 'f16'),
      mm(rt, `NN dX c_fc ${N}x${F} @ ${F}x${C}`, [N, F], [F, C], {}, 2 * N * F * C, 'f16'),
      mm(rt, `TN dW c_fc (${N}x${F})ᵀ @ ${N}x${C}`, [N, F], [N, C], { transA: true }, 2 * N * F * C, 'f16'),
      mm(rt, `batched NT Muon X·Xᵀ ${G}x${C}x${F}`, [G, C, F], [G, C, F], { transB: true }, 2 * G * C * C * F, 'f16'),
      // ... and the SIMT kernel on the same f16 data, for comparison
      mm(rt, `NT fwd c_fc ${N}x${C} @ (${F}x${C})ᵀ`, [N, C], [F, C], { transB: true, impl: size === 'model' ? 'tiled128' : 'tiled64' }, 2 * N * C * F, 'f16'),
    ];
  },
};
