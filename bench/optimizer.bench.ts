/**
 * @file The optimizer at the default model's shapes: fused AdamW (kernels/adamw.wgsl) over every
 * tensor train.ts gives AdamW (wte, lm_head, the value embeddings, the two scalar vectors), and one
 * Muon step (kernels/muon.wgsl + batched matmuls) for each group of same-shape matrices that
 * setupOptimizer makes (at depth 8: 32 × 512×512, 8 × 2048×512 c_fc, 8 × 512×2048 c_proj, 4 × 4×32
 * ve_gate). AdamW is memory-bound: 7 f32 accesses per element. Muon's FLOPs are those of Polar
 * Express (5 iterations of XᵀX, A·A and X·P per matrix); its elementwise passes are not counted.
 * Each has a twin case `(train.ts)` that steps the same tensors with train.ts's own MuonAdamW,
 * composed from matmuls and broadcasting ops: the price of composition against the fused kernels.
 */
import { adamwStep } from '../src/ops/adamw.ts';
import { createMuonState, muonStep, POLAR_EXPRESS_COEFFS, releaseMuonState, type MuonState } from '../src/ops/muon.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { MuonAdamW, type ParamGroup } from '../train.ts';
import type { BenchCase, BenchSuite } from './harness.ts';

interface ModelShape {
  layers: number;
  H: number;
  Hkv: number;
  D: number;
  V: number;
}

// default model: depth 8 → C = 512 = 4 heads of 128, vocab 8192
const MODEL: ModelShape = { layers: 8, H: 4, Hkv: 4, D: 128, V: 8192 };
// train.ts's software configuration (depth 2, C = 64 = 2 heads of 32), with a smaller vocabulary
const SMALL: ModelShape = { layers: 2, H: 2, Hkv: 2, D: 32, V: 2048 };

const VE_GATE_CHANNELS = 32; // train.ts: the value-embedding gate reads x[..., :32]
/** The reference's value-embedding layers: alternating, the last one always included. */
const hasValueEmbed = (layer: number, nLayer: number) => layer % 2 === (nLayer - 1) % 2;
const NS_STEPS = POLAR_EXPRESS_COEFFS.length; // train.ts: nsSteps 5
const F32 = 4;

/** Shapes of the tensors train.ts steps with AdamW. */
export function adamwShapes(m: ModelShape): { name: string; shape: number[] }[] {
  const C = m.H * m.D;
  const veLayers = Array.from({ length: m.layers }, (_, i) => i).filter((i) => hasValueEmbed(i, m.layers));
  return [
    { name: 'wte', shape: [m.V, C] },
    { name: 'lm_head', shape: [m.V, C] },
    ...veLayers.map((i) => ({ name: `value_embeds.${i}`, shape: [m.V, m.Hkv * m.D] })),
    { name: 'resid_lambdas', shape: [m.layers] },
    { name: 'x0_lambdas', shape: [m.layers] },
  ];
}

/** Muon groups as setupOptimizer forms them: every block matrix, grouped by shape [R, C]. */
export function muonGroups(m: ModelShape): { G: number; R: number; C: number }[] {
  const C = m.H * m.D;
  const shapes: [number, number][] = [];
  for (let i = 0; i < m.layers; i++) {
    shapes.push([m.H * m.D, C], [m.Hkv * m.D, C], [m.Hkv * m.D, C], [C, C]);
    if (hasValueEmbed(i, m.layers)) shapes.push([m.Hkv, VE_GATE_CHANNELS]);
    shapes.push([4 * C, C], [C, 4 * C]);
  }
  const groups = new Map<string, { G: number; R: number; C: number }>();
  for (const [R, Cols] of shapes) {
    const g = groups.get(`${R}x${Cols}`);
    if (g) g.G++;
    else groups.set(`${R}x${Cols}`, { G: 1, R, C: Cols });
  }
  return [...groups.values()];
}

/** Polar Express FLOPs for G matrices R×C: per iteration 2·S·S·L (Gram) + 2·S³ (A·A) + 2·L·S·S (X·P). */
export function polarExpressFlops(G: number, R: number, C: number, steps = NS_STEPS): number {
  const S = Math.min(R, C), L = Math.max(R, C);
  return G * steps * (4 * S * S * L + 2 * S * S * S);
}

function adamwCase(rt: Runtime, name: string, shapes: number[][]): BenchCase {
  const elements = shapes.reduce((n, s) => n + s.reduce((p, d) => p * d, 1), 0);
  let tensors: { p: Tensor; g: Tensor; m: Tensor; v: Tensor }[] = [];
  let step = 0;
  return {
    name: `adamw ${name} (${shapes.length} tensor${shapes.length === 1 ? "" : "s"}, ${(elements / 1e6).toFixed(2)}M elements)`,
    bytes: F32 * 7 * elements, // p, g, m, v in; p, m, v out
    setup: () => {
      const rng = new Rng(6);
      tensors = shapes.map((shape) => {
        const n = shape.reduce((p, d) => p * d, 1);
        return {
          p: rt.keep(rt.fromArray(rng.normalArray(n, 0.02), shape)),
          g: rt.keep(rt.fromArray(rng.normalArray(n, 1e-3), shape)),
          m: rt.keep(rt.zeros(shape)),
          v: rt.keep(rt.zeros(shape)),
        };
      });
    },
    run: () => {
      step++;
      for (const t of tensors) adamwStep(rt, t.p, t.g, t.m, t.v, { lr: 0.004, beta1: 0.8, beta2: 0.95, eps: 1e-10, weightDecay: 0, step });
    },
    dispose: () => {
      for (const t of tensors) for (const u of Object.values(t)) rt.release(u);
      tensors = [];
    },
  };
}

function muonCase(rt: Runtime, G: number, R: number, C: number): BenchCase {
  let t: { params: Tensor; grads: Tensor; state: MuonState } | null = null;
  return {
    name: `muon group ${G} x ${R}x${C}`,
    flops: polarExpressFlops(G, R, C),
    precision: 'f32',
    setup: () => {
      const rng = new Rng(7);
      const bound = Math.sqrt(3 / C); // train.ts's uniform init
      t = {
        params: rt.keep(rt.fromArray(rng.uniformArray(G * R * C, -bound, bound), [G, R, C])),
        grads: rt.keep(rt.fromArray(rng.normalArray(G * R * C, 1e-3), [G, R, C])),
        state: createMuonState(rt, G, R, C),
      };
    },
    run: () => muonStep(rt, t!.params, t!.grads, t!.state, { lr: 0.04, momentum: 0.95, beta2: 0.95, weightDecay: 0.2, nsSteps: NS_STEPS }),
    dispose: () => {
      if (!t) return;
      rt.release(t.params);
      rt.release(t.grads);
      releaseMuonState(rt, t.state);
      t = null;
    },
  };
}

/** The same tensors stepped by train.ts's MuonAdamW (composed from primitive ops), in one group. */
function composedCase(rt: Runtime, name: string, kind: ParamGroup['kind'], shapes: number[][], measure: { flops?: number; bytes?: number }): BenchCase {
  let optimizer: MuonAdamW | null = null;
  return {
    name: `${name} (train.ts, composed)`,
    ...measure,
    precision: 'f32',
    setup: () => {
      const rng = new Rng(8);
      const params = shapes.map((shape) => {
        const n = shape.reduce((p, d) => p * d, 1);
        const p = rt.keep(rt.fromArray(rng.normalArray(n, 0.02), shape));
        p.grad = rt.keep(rt.fromArray(rng.normalArray(n, 1e-3), shape));
        return p;
      });
      const group: ParamGroup = kind === 'adamw'
        ? { kind, params, lr: 0.004, initialLr: 0.004, betas: [0.8, 0.95], eps: 1e-10, weightDecay: 0 }
        : { kind, params, lr: 0.04, initialLr: 0.04, momentum: 0.95, nsSteps: NS_STEPS, beta2: 0.95, weightDecay: 0.2 };
      optimizer = new MuonAdamW(rt, [group]);
    },
    run: () => optimizer!.step(),
    dispose: () => {
      for (const p of optimizer?.paramGroups[0].params ?? []) {
        rt.release(p.grad);
        rt.release(p);
      }
      optimizer = null; // its state is private to MuonAdamW: it lives until the process ends
    },
  };
}

export const suite: BenchSuite = {
  family: 'optimizer',
  cases(rt, size) {
    const m = size === 'model' ? MODEL : SMALL;
    const adam = adamwShapes(m);
    const adamShapes = adam.map((a) => a.shape);
    const adamElements = adamShapes.reduce((n, s) => n + s.reduce((p, d) => p * d, 1), 0);
    return [
      adamwCase(rt, 'all AdamW params', adamShapes),
      composedCase(rt, 'adamw all AdamW params', 'adamw', adamShapes, { bytes: F32 * 7 * adamElements }),
      adamwCase(rt, `wte ${adam[0].shape.join('x')}`, [adam[0].shape]),
      ...muonGroups(m).flatMap((g) => [
        muonCase(rt, g.G, g.R, g.C),
        composedCase(rt, `muon group ${g.G} x ${g.R}x${g.C}`, 'muon', Array.from({ length: g.G }, () => [g.R, g.C]), { flops: polarExpressFlops(g.G, g.R, g.C) }),
      ]),
    ];
  },
};
