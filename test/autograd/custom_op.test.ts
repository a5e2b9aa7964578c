/**
 * What the agent can do in train.ts: write a new op as inline WGSL (no file in kernels/), give it a
 * backward, record it on the tape — and have it train like the built-in ones. Here SiLU,
 * y = x·sigmoid(x), checked against finite differences and composed with a built-in op.
 */
import { describe, it } from 'vitest';
import { linear } from '../../src/autograd/linear.ts';
import { ctx, useRuntime } from '../../src/autograd/tape.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import type { Tensor } from '../../src/gpu/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { gradCheck } from '../gradcheck.ts';
import { expectClose, testRuntime } from '../setup.ts';

const SILU_WGSL = /* wgsl */ `
struct Params { n: u32, x_off: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;   // unused by the forward
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

fn sigmoid(v: f32) -> f32 { return 1.0 / (1.0 + exp(-v)); }

@compute @workgroup_size(64)
fn silu_fwd(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= params.n) { return; }
  let v = x[params.x_off + g.x];
  out[g.x] = v * sigmoid(v);
}

@compute @workgroup_size(64)
fn silu_bwd(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= params.n) { return; }
  let v = x[params.x_off + g.x];
  let s = sigmoid(v);
  out[g.x] = dy[g.x] * s * (1.0 + v * (1.0 - s));
}`;

/** SiLU as train.ts would write it: forward kernel, backward kernel, one tape record. */
function silu(x: Tensor): Tensor {
  const tape = ctx();
  const rt = tape.rt;
  const run = (entry: string, dy: Tensor) => {
    const out = rt.empty(x.shape);
    rt.dispatch(rt.kernel({ source: { code: SILU_WGSL }, entry }), [x, dy, out], { n: x.size, x_off: x.offset }, Math.ceil(x.size / 64));
    return out;
  };
  const y = run('silu_fwd', x); // dy is not read by the forward: any tensor of the right kind will do
  tape.record('silu', [x], [y], ([dy]) => [run('silu_bwd', dy!)]);
  return y;
}

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(5);

describe.skipIf(!rt)('an op defined inline, as train.ts may', () => {
  useRuntime(rt);

  it('computes SiLU', async () => {
    const x = rng.uniformArray(100, -4, 4);
    const y = await rt.read(silu(rt.fromArray(x, [100])));
    expectClose(y, x.map((v) => v / (1 + Math.exp(-v))), { atol: 1e-6 });
  });

  it('its backward matches finite differences, alone and after a built-in linear layer', async () => {
    await gradCheck(rt, ([x]) => silu(x), [{ data: rng.uniformArray(7, -3, 3), shape: [7] }]);
    await gradCheck(rt, ([x, w]) => silu(linear(x, w)), [
      { data: rng.uniformArray(3 * 4), shape: [3, 4] },
      { data: rng.uniformArray(5 * 4), shape: [5, 4] },
    ]);
  });
});
