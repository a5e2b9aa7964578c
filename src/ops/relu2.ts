/**
 * @file Wrapper for kernels/relu2.wgsl (y = relu(x)², the reference MLP's activation, and its
 * backward dx = 2·relu(x)·dy) and the plain-TS references.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

const WG = 256;

function floatDtype(t: Tensor, op: string): 'f32' | 'f16' {
  if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new Error(`${op}: ${t.describe()} is not a float tensor`);
  return t.dtype;
}

/** y = relu(x)², elementwise (into `out` if given). */
export function relu2Fwd(rt: Runtime, x: Tensor, out?: Tensor): Tensor {
  const dtype = floatDtype(x, 'relu2');
  const y = out ?? rt.empty(x.shape, dtype);
  if (y.size !== x.size || y.dtype !== dtype) throw new Error(`relu2: out ${y.describe()} does not match x ${x.describe()}`);
  const k = rt.kernel({ source: 'relu2.wgsl', entry: 'relu2_fwd', defines: { FWD: true }, overrides: { WG }, dtype });
  rt.dispatch1d(k, [x, y], { n: x.size, x_off: x.offset, dy_off: 0, y_off: y.offset }, Math.ceil(x.size / WG));
  return y;
}

/** dx = 2·relu(x)·dy, elementwise (into `out` if given). */
export function relu2Bwd(rt: Runtime, dy: Tensor, x: Tensor, out?: Tensor): Tensor {
  const dtype = floatDtype(x, 'relu2Bwd');
  if (dy.size !== x.size || dy.dtype !== dtype) throw new Error(`relu2Bwd: dy ${dy.describe()} does not match x ${x.describe()}`);
  const dx = out ?? rt.empty(x.shape, dtype);
  if (dx.size !== x.size || dx.dtype !== dtype) throw new Error(`relu2Bwd: out ${dx.describe()} does not match x ${x.describe()}`);
  const k = rt.kernel({ source: 'relu2.wgsl', entry: 'relu2_bwd', defines: { BWD: true }, overrides: { WG }, dtype });
  rt.dispatch1d(k, [x, dy, dx], { n: x.size, x_off: x.offset, dy_off: dy.offset, y_off: dx.offset }, Math.ceil(x.size / WG));
  return dx;
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, written to be read.

export function relu2Ref(x: Float32Array): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const r = Math.max(x[i], 0);
    y[i] = r * r;
  }
  return y;
}

export function relu2BwdRef(dy: Float32Array, x: Float32Array): Float32Array {
  const dx = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) dx[i] = 2 * Math.max(x[i], 0) * dy[i];
  return dx;
}
