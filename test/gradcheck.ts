/**
 * @file Finite-difference gradient checks through the tape (llama.cpp's grad mode, in small).
 * loss = Σ R ⊙ f(inputs) with fixed random R; the analytic gradient comes from
 * tape.backward(out, R), the numeric one from central differences in float64 on the CPU side.
 * Keep inputs tiny: each element costs two forward passes.
 */
import { Rng } from '../src/util/rng.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { ctx, requiresGrad } from '../src/autograd/tape.ts';
import { expectClose } from './setup.ts';

export interface GradInput {
  data: Float32Array;
  shape: number[];
  /** Checked unless false (e.g. integer indices, constants). */
  differentiable?: boolean;
  dtype?: 'f32' | 'i32';
}

export interface GradCheckOptions {
  eps?: number;
  atol?: number;
  rtol?: number;
  seed?: number;
  label?: string;
}

export async function gradCheck(rt: Runtime, fn: (inputs: Tensor[]) => Tensor, inputs: GradInput[], opts: GradCheckOptions = {}): Promise<void> {
  const { eps = 1e-3, atol = 2e-3, rtol = 2e-2, seed = 7, label = 'grad' } = opts;
  const tape = ctx();
  const upload = () =>
    inputs.map((inp) => {
      const t = rt.fromArray(inp.data, inp.shape, inp.dtype ?? 'f32');
      if (inp.differentiable !== false) requiresGrad(t);
      return t;
    });

  // analytic
  const analytic = await rt.scopeAsync(async () => {
    const ts = upload();
    const out = fn(ts);
    const r = new Rng(seed).uniformArray(out.size, -1, 1);
    const rTensor = rt.fromArray(r, out.shape);
    tape.backward(out, rTensor);
    const grads: (Float32Array | null)[] = [];
    for (const t of ts) {
      grads.push(t.grad ? await rt.read(t.grad) : null);
      if (t.grad) {
        t.grad.kept = false;
        rt.release(t.grad);
        t.grad = null;
      }
    }
    return { grads, r };
  });

  // numeric
  const lossAt = async (): Promise<number> =>
    rt.scopeAsync(async () => {
      const out = tape.noGrad(() => fn(inputs.map((inp) => rt.fromArray(inp.data, inp.shape, inp.dtype ?? 'f32'))));
      const o = await rt.read(out);
      let s = 0;
      for (let i = 0; i < o.length; i++) s += analytic.r[i] * o[i];
      return s;
    });
  for (let i = 0; i < inputs.length; i++) {
    const inp = inputs[i];
    if (inp.differentiable === false) continue;
    const numeric = new Float32Array(inp.data.length);
    for (let j = 0; j < inp.data.length; j++) {
      const orig = inp.data[j];
      inp.data[j] = orig + eps;
      const plus = await lossAt();
      inp.data[j] = orig - eps;
      const minus = await lossAt();
      inp.data[j] = orig;
      numeric[j] = (plus - minus) / (2 * eps);
    }
    const got = analytic.grads[i];
    if (!got) throw new Error(`${label}: input ${i} got no gradient`);
    expectClose(got, numeric, { atol, rtol, label: `${label} d/dinput${i}` });
  }
}
