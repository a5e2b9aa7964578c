// elementwise: y = alpha*a + beta*b, y = alpha*a*b, y = alpha*a, y += alpha*x, a = lerp(a, b, w),
// y = alpha*s[0]*a and y *= alpha*s[0] (a scalar read from a buffer: no readback), and the dtype casts
// y = alpha*a between f32 and T (CAST with TO_T: f32 -> T; CAST alone: T -> f32). Refs in src/ops/elementwise.ts.
// One thread per element; grid from grid1d(ceil(n / WG)). Offsets and n are in elements.
#include "common.wgsl"

struct Params {
  n: u32,
  a_off: u32,
  b_off: u32,
  y_off: u32,
  alpha: f32,
  beta: f32,
}

override WG: u32 = 256;

fn index(wg: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return flat_workgroup(wg, nwg) * WG + lid;
}

#if BINARY
// y = op(a, b): add_scaled (alpha*a + beta*b), mul (alpha*a*b)
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn add_scaled(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  y[params.y_off + i] = T(params.alpha * f32(a[params.a_off + i]) + params.beta * f32(b[params.b_off + i]));
}

@compute @workgroup_size(WG)
fn mul(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  y[params.y_off + i] = T(params.alpha * f32(a[params.a_off + i]) * f32(b[params.b_off + i]));
}

#endif

#if UNARY
// y = alpha * a (copy when alpha = 1)
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  y[params.y_off + i] = T(params.alpha * f32(a[params.a_off + i]));
}
#endif

#if INPLACE
// y += alpha * a (axpy); y = y + alpha * (a - y) (lerp toward a with weight alpha, torch's lerp_)
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn axpy(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  let j = params.y_off + i;
  y[j] = T(f32(y[j]) + params.alpha * f32(a[params.a_off + i]));
}


@compute @workgroup_size(WG)
fn lerp(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  let j = params.y_off + i;
  let v = f32(y[j]);
  y[j] = T(v + params.alpha * (f32(a[params.a_off + i]) - v));
}
#endif

#if CAST
// cast_dtype (`cast` is a WGSL reserved word): y = alpha * a between f32 and T (mixed precision: f32 master weights -> f16 operands, f16
// gradients -> f32 master gradients). TO_T reads f32 and writes T; otherwise T -> f32.
#if TO_T
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
#else
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
#endif
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn cast_dtype(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
#if TO_T
  y[params.y_off + i] = T(params.alpha * a[params.a_off + i]);
#else
  y[params.y_off + i] = params.alpha * f32(a[params.a_off + i]);
#endif
}
#endif

#if SCALAR
// The scalar factor s[s_off] is f32 whatever T is (a loss or a norm computed on the GPU; an f16
// activation gradient scaled by an f32 dLoss/count must not round the factor to f16).
// scale_by_scalar: y = alpha * s * a. Bindings: a (T), s (f32), y (T); s is read at b_off.
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn scale_by_scalar(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  y[params.y_off + i] = T(params.alpha * s[params.b_off] * f32(a[params.a_off + i]));
}
#endif

#if SCALAR_INPLACE
// scale_by_scalar_inplace: y = alpha * s[a_off] * y (a gradient scaled in place, no copy). Bindings: s (f32), y (T).
@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn scale_by_scalar_inplace(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  let j = params.y_off + i;
  y[j] = T(params.alpha * s[params.a_off] * f32(y[j]));
}
#endif
