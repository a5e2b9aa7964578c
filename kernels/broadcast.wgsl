// broadcast: torch-like tensor math that train.ts composes its optimizer and loss from.
// Refs in src/ops/broadcast.ts.
//   binary (#if BINARY)           y = op(alpha·a, beta·b), a and b broadcast to y's shape (≤ 4 dims)
//   binary_inplace (#if INPLACE)  a ← op(alpha·a, beta·b) (a bound once, read_write)
//   unary (#if UNARY)             y = alpha·f(x) + beta;  unary_inplace (#if UNARY_INPLACE): x ← …
//   reduce_axis (#if REDUCE)      y[o, i] = alpha·Σ_k x[o, k, i] (or x²), x viewed as [outer, n, inner]
// Defines: STRIDED with BINARY / INPLACE, MAP with UNARY / UNARY_INPLACE, and REDUCE.
// OP (an override) picks the operation: binary 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min;
// unary 0 sqrt, 1 rsqrt, 2 square, 3 tanh, 4 clamp_min(c), 5 ge(c) (1.0 where x ≥ c, else 0.0),
// 6 affine (f(x) = x: y = alpha·x + beta).
// Elementwise grids: one thread per element, grid1d(ceil(n / WG)). Broadcasting: y's shape is
// [d0, d1, d2, d3] (right-aligned, padded with 1); a and b take per-dimension strides in elements,
// 0 where they broadcast. reduce_axis: one workgroup per output (grid1d(outer·inner)), WG threads
// stride the reduced axis, then a tree in workgroup memory; results are f32.
// Numerics: f32 arithmetic on T storage; tanh's argument is clamped to ±10 (tanh = ±1 in f32 there;
// some backends overflow to NaN beyond).
#include "common.wgsl"

override WG: u32 = 256;
override OP: u32 = 0;

fn index(wg: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return flat_workgroup(wg, nwg) * WG + lid;
}

fn binary_op(a: f32, b: f32) -> f32 {
  switch OP {
    case 0u: { return a + b; }
    case 1u: { return a - b; }
    case 2u: { return a * b; }
    case 3u: { return a / b; }
    case 4u: { return max(a, b); }
    default: { return min(a, b); }
  }
}

fn unary_op(x: f32, c: f32) -> f32 {
  switch OP {
    case 0u: { return sqrt(x); }
    case 1u: { return inverseSqrt(x); }
    case 2u: { return x * x; }
    case 3u: { return tanh(clamp(x, -10.0, 10.0)); }
    case 4u: { return max(x, c); }
    case 5u: { return select(0.0, 1.0, x >= c); }
    default: { return x; }
  }
}

#if STRIDED
struct Params {
  n: u32, d1: u32, d2: u32, d3: u32,
  sa0: u32, sa1: u32, sa2: u32, sa3: u32,
  sb0: u32, sb1: u32, sb2: u32, sb3: u32,
  a_off: u32, b_off: u32, y_off: u32,
  alpha: f32, beta: f32,
}

// element offsets of output element i in a and b (row-major over [d0, d1, d2, d3])
fn a_index(i: u32) -> u32 {
  let i3 = i % params.d3;
  let i2 = (i / params.d3) % params.d2;
  let i1 = (i / (params.d3 * params.d2)) % params.d1;
  let i0 = i / (params.d3 * params.d2 * params.d1);
  return params.a_off + i0 * params.sa0 + i1 * params.sa1 + i2 * params.sa2 + i3 * params.sa3;
}

fn b_index(i: u32) -> u32 {
  let i3 = i % params.d3;
  let i2 = (i / params.d3) % params.d2;
  let i1 = (i / (params.d3 * params.d2)) % params.d1;
  let i0 = i / (params.d3 * params.d2 * params.d1);
  return params.b_off + i0 * params.sb0 + i1 * params.sb1 + i2 * params.sb2 + i3 * params.sb3;
}
#endif

#if BINARY
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  y[params.y_off + i] = T(binary_op(params.alpha * f32(a[a_index(i)]), params.beta * f32(b[b_index(i)])));
}
#endif

#if INPLACE
// a is the output: same shape as y (its strides are y's), b broadcasts
@group(0) @binding(0) var<storage, read> b: array<T>;
@group(0) @binding(1) var<storage, read_write> a: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn binary_inplace(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  let j = params.a_off + i;
  a[j] = T(binary_op(params.alpha * f32(a[j]), params.beta * f32(b[b_index(i)])));
}
#endif

#if MAP
struct Params { n: u32, x_off: u32, y_off: u32, alpha: f32, beta: f32, c: f32 }
#endif

#if UNARY
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  y[params.y_off + i] = T(params.alpha * unary_op(f32(x[params.x_off + i]), params.c) + params.beta);
}
#endif

#if UNARY_INPLACE
@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn unary_inplace(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  let j = params.x_off + i;
  x[j] = T(params.alpha * unary_op(f32(x[j]), params.c) + params.beta);
}
#endif

#if REDUCE
struct Params { outer: u32, n: u32, inner: u32, x_off: u32, y_off: u32, alpha: f32, squared: u32 }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn reduce_axis(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let o = flat_workgroup(wg, nwg);
  if (o >= params.outer * params.inner) { return; } // uniform per workgroup
  let base = params.x_off + (o / params.inner) * params.n * params.inner + o % params.inner;
  var s = 0.0;
  for (var k = lid; k < params.n; k += WG) {
    let v = f32(x[base + k * params.inner]);
    s += select(v, v * v, params.squared != 0u);
  }
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { y[params.y_off + o] = params.alpha * partial[0]; }
}
#endif
