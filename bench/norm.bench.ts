/**
 * @file The memory-bound per-token kernels of a block at the default model's shapes (B·T = 32768
 * tokens, C = 512, 4 heads of 128): RMS norm of the residual stream and QK-norm per head, rotary,
 * relu² on the MLP's 4C activations, the residual mix and the value-embedding gate, forward and
 * backward each. Bytes are what each kernel must read and write at least (f32).
 */
import { relu2Bwd, relu2Fwd } from '../src/ops/relu2.ts';
import { residualMixBwd, residualMixFwd } from '../src/ops/residual_mix.ts';
import { rmsNormBwd, rmsNormFwd } from '../src/ops/rms_norm.ts';
import { rotaryBwd, rotaryFwd, rotaryTablesHost } from '../src/ops/rotary.ts';
import { valueEmbedBwd, valueEmbedFwd } from '../src/ops/value_embed.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import type { BenchCase, BenchSuite } from './harness.ts';

interface Shape {
  B: number;
  T: number;
  H: number;
  Hkv: number;
  D: number;
  layers: number;
}

// default model: depth 8 → C = 512 = 4 heads of 128; DEVICE_BATCH_SIZE 16 × MAX_SEQ_LEN 2048
const MODEL: Shape = { B: 16, T: 2048, H: 4, Hkv: 4, D: 128, layers: 8 };
// train.ts's software configuration: C = 64 = 2 heads of 32, 2 × 256 tokens
const SMALL: Shape = { B: 2, T: 256, H: 2, Hkv: 2, D: 32, layers: 2 };

const F32 = 4; // bytes per element

/**
 * Inputs made on first use (random uniform data, uploaded once) and shared by the cases until
 * `release`: setup stays off the timed path, and cases a filter leaves out upload nothing.
 */
function lazyTensors(rt: Runtime) {
  const made = new Map<string, Tensor>();
  const rng = new Rng(4);
  return {
    /** The tensor under `key`, made by `make` (default: uniform random of `shape`) the first time. */
    get(key: string, shape: number[], make?: () => Tensor): Tensor {
      let t = made.get(key);
      if (!t) {
        t = rt.keep(make ? make() : rt.fromArray(rng.uniformArray(shape.reduce((p, d) => p * d, 1)), shape, 'f32', key));
        made.set(key, t);
      }
      return t;
    },
    release(): void {
      for (const t of made.values()) rt.release(t);
      made.clear();
    },
  };
}

type Inputs = Record<string, Tensor>;

export const suite: BenchSuite = {
  family: 'norm',
  cases(rt, size) {
    const s = size === 'model' ? MODEL : SMALL;
    const { B, T, H, Hkv, D, layers } = s;
    const N = B * T; // tokens
    const C = H * D;
    const F = 4 * C; // MLP hidden width
    const lazy = lazyTensors(rt);
    const rand = (key: string, shape: number[]) => () => lazy.get(key, shape);
    const residual = [N, C], heads = [B, T, H, D], kvHeads = [B, T, Hkv, D], hidden = [N, F];
    const x = rand('x', residual), dy = rand('dy', residual), x0 = rand('x0', residual);
    const q = rand('q', heads), dq = rand('dq', heads);
    const lambdas = () => lazy.get('lambdas', [layers], () => rt.fromArray(new Float32Array(layers).fill(1), [layers]));
    const mus = () => lazy.get('mus', [layers], () => rt.fromArray(new Float32Array(layers).fill(0.1), [layers]));
    const cos = () => lazy.get('cos', [T, D / 2], () => rt.fromArray(rotaryTablesHost(T, D).cos, [T, D / 2]));
    const sin = () => lazy.get('sin', [T, D / 2], () => rt.fromArray(rotaryTablesHost(T, D).sin, [T, D / 2]));
    const rstd = (key: string, of: () => Tensor) => () => lazy.get(key, [], () => {
      const r = rmsNormFwd(rt, of());
      rt.release(r.y);
      return r.rstd;
    });
    const out = (key: string, shape: number[]) => () => lazy.get(key, shape, () => rt.empty(shape));
    const free = (...ts: Tensor[]) => ts.forEach((u) => rt.release(u));

    /** A case whose inputs are made in setup; every case frees what the suite made when it is done. */
    const bench = (name: string, bytes: number, inputs: Record<string, () => Tensor>, run: (i: Inputs) => void): BenchCase => {
      let i: Inputs | null = null;
      return {
        name,
        bytes,
        setup: () => void (i = Object.fromEntries(Object.entries(inputs).map(([k, make]) => [k, make()]))),
        run: () => run(i!),
        dispose: () => {
          i = null;
          lazy.release();
        },
      };
    };

    return [
      bench(`rms_norm fwd residual ${N}x${C}`, F32 * (2 * N * C + N), { x }, ({ x }) => {
        const r = rmsNormFwd(rt, x);
        free(r.y, r.rstd);
      }),
      bench(`rms_norm bwd residual ${N}x${C}`, F32 * (3 * N * C + N), { x, dy, r: rstd('rstd_x', x) }, ({ x, dy, r }) => free(rmsNormBwd(rt, dy, x, r))),
      bench(`rms_norm fwd qk-norm ${heads.join('x')}`, F32 * (2 * N * C + N * H), { q }, ({ q }) => {
        const r = rmsNormFwd(rt, q);
        free(r.y, r.rstd);
      }),
      bench(`rms_norm bwd qk-norm ${heads.join('x')}`, F32 * (3 * N * C + N * H), { q, dq, r: rstd('rstd_q', q) }, ({ q, dq, r }) => free(rmsNormBwd(rt, dq, q, r))),
      // x in, y out, cos and sin [T, D/2]
      bench(`rotary fwd ${heads.join('x')}`, F32 * (2 * N * C + T * D), { q, cos, sin, y: out('rot_y', heads) }, ({ q, cos, sin, y }) => void rotaryFwd(rt, q, cos, sin, y)),
      bench(`rotary bwd ${heads.join('x')}`, F32 * (2 * N * C + T * D), { dq, cos, sin, y: out('rot_y', heads) }, ({ dq, cos, sin, y }) => void rotaryBwd(rt, dq, cos, sin, y)),
      bench(`relu2 fwd ${N}x${F}`, F32 * 2 * N * F, { h: rand('h', hidden), y: out('h_y', hidden) }, ({ h, y }) => void relu2Fwd(rt, h, y)),
      bench(`relu2 bwd ${N}x${F}`, F32 * 3 * N * F, { h: rand('h', hidden), dh: rand('dh', hidden), y: out('h_y', hidden) }, ({ h, dh, y }) => void relu2Bwd(rt, dh, h, y)),
      bench(`residual_mix fwd ${N}x${C}`, F32 * 3 * N * C, { x, x0, lambdas, mus }, ({ x, x0, lambdas, mus }) => free(residualMixFwd(rt, x, x0, lambdas, mus, 1))),
      // dy, x, x0 in; dx, dx0 out (the λ and μ gradients are reductions over the same reads)
      bench(`residual_mix bwd ${N}x${C}`, F32 * 5 * N * C, { dy, x, x0, lambdas, mus }, ({ dy, x, x0, lambdas, mus }) => {
        const g = residualMixBwd(rt, dy, x, x0, lambdas, mus, 1);
        free(g.dx, g.dx0, g.dLambdas, g.dMus);
      }),
      // v, ve, z in; y out
      bench(`value_embed fwd ${kvHeads.join('x')}`, F32 * (3 * N * Hkv * D + N * Hkv), { v: rand('v', kvHeads), ve: rand('ve', kvHeads), z: rand('z', [B, T, Hkv]) },
        ({ v, ve, z }) => free(valueEmbedFwd(rt, v, ve, z))),
      // dy, ve, z in; dve, dz out
      bench(`value_embed bwd ${kvHeads.join('x')}`, F32 * (3 * N * Hkv * D + 2 * N * Hkv), { dv: rand('dv', kvHeads), ve: rand('ve', kvHeads), z: rand('z', [B, T, Hkv]) },
        ({ dv, ve, z }) => {
          const g = valueEmbedBwd(rt, dv, ve, z);
          free(g.dve, g.dz);
        }),
    ];
  },
};
