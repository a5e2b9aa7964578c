// residual_mix: y = lambdas[i]·x + mus[i]·x0 (per-layer scalars read from GPU vectors, no
// readback) and its backward. Refs residualMixRef / residualMixBwdRef in src/ops/residual_mix.ts.
//
// residual_mix_fwd: one thread per element; grid grid1d(ceil(n / WG)).
// residual_mix_bwd: dx = λ·dy, dx0 = μ·dy elementwise, plus per-workgroup partial sums of dy⊙x and
//   dy⊙x0. A fixed grid of `parts` workgroups (grid1d(parts)) strides over the n elements (coalesced:
//   consecutive threads, consecutive elements), reduces in workgroup memory and writes
//   partials[2·wg] = Σ dy⊙x, partials[2·wg + 1] = Σ dy⊙x0. The fixed partition keeps it deterministic.
// residual_mix_bwd_reduce: one workgroup sums the partials and writes full [n_layer] gradients,
//   zero except at the layer index (the tape adds them up across layers).
// Bindings per entry are chosen with #if FWD / BWD / BWD_REDUCE. Offsets and n are in elements.
// Numerics: f32 accumulation; partial sums are a two-level tree (deterministic order).
// dtypes: x, x0, y, dy, dx, dx0 are T (f16 activations in mixed precision); the per-layer scalars
// lambdas, mus and their gradients are always f32 (f32 master parameters; a sum over every element
// of an f16 activation would also overflow f16).
#include "common.wgsl"

struct Params {
  n: u32,
  x_off: u32,
  x0_off: u32,
  dy_off: u32,
  y_off: u32,
  lam_off: u32,
  mu_off: u32,
  layer: u32,
  n_layer: u32,
  parts: u32,
}

override WG: u32 = 256;

#if FWD
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> x0: array<T>;
@group(0) @binding(2) var<storage, read> lambdas: array<f32>;
@group(0) @binding(3) var<storage, read> mus: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn residual_mix_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wg, nwg) * WG + lid;
  if (i >= params.n) { return; }
  let lam = f32(lambdas[params.lam_off + params.layer]);
  let mu = f32(mus[params.mu_off + params.layer]);
  y[params.y_off + i] = T(lam * f32(x[params.x_off + i]) + mu * f32(x0[params.x0_off + i]));
}
#endif

#if BWD
@group(0) @binding(0) var<storage, read> dy: array<T>;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> x0: array<T>;
@group(0) @binding(3) var<storage, read> lambdas: array<f32>;
@group(0) @binding(4) var<storage, read> mus: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<T>;
@group(0) @binding(6) var<storage, read_write> dx0: array<T>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> red_x: array<f32, WG>;
var<workgroup> red_x0: array<f32, WG>;

@compute @workgroup_size(WG)
fn residual_mix_bwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let part = flat_workgroup(wg, nwg);
  if (part >= params.parts) { return; } // uniform per workgroup: barriers below stay uniform
  let lam = f32(lambdas[params.lam_off + params.layer]);
  let mu = f32(mus[params.mu_off + params.layer]);
  var sx = 0.0;
  var sx0 = 0.0;
  for (var i = part * WG + lid; i < params.n; i += params.parts * WG) {
    let g = f32(dy[params.dy_off + i]);
    sx += g * f32(x[params.x_off + i]);
    sx0 += g * f32(x0[params.x0_off + i]);
    dx[i] = T(lam * g); // dx, dx0 are fresh tensors: offset 0
    dx0[i] = T(mu * g);
  }
  red_x[lid] = sx;
  red_x0[lid] = sx0;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red_x[lid] += red_x[lid + stride];
      red_x0[lid] += red_x0[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    partials[2u * part] = red_x[0];
    partials[2u * part + 1u] = red_x0[0];
  }
}
#endif

#if BWD_REDUCE
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> dlambdas: array<f32>;
@group(0) @binding(2) var<storage, read_write> dmus: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> red_x: array<f32, WG>;
var<workgroup> red_x0: array<f32, WG>;

@compute @workgroup_size(WG)
fn residual_mix_bwd_reduce(@builtin(local_invocation_index) lid: u32) {
  var sx = 0.0;
  var sx0 = 0.0;
  for (var p = lid; p < params.parts; p += WG) {
    sx += partials[2u * p];
    sx0 += partials[2u * p + 1u];
  }
  red_x[lid] = sx;
  red_x0[lid] = sx0;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red_x[lid] += red_x[lid + stride];
      red_x0[lid] += red_x0[lid + stride];
    }
    workgroupBarrier();
  }
  // full-size gradients: zero everywhere but the layer index
  for (var l = lid; l < params.n_layer; l += WG) {
    dlambdas[l] = select(0.0, red_x[0], l == params.layer);
    dmus[l] = select(0.0, red_x0[0], l == params.layer);
  }
}
#endif
