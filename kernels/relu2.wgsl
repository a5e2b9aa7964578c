// relu2: y = relu(x)² (the reference MLP's activation) and its backward dx = 2·relu(x)·dy.
// Refs relu2Ref / relu2BwdRef in src/ops/relu2.ts.
// One thread per element (coalesced); grid grid1d(ceil(n / WG)). Offsets and n are in elements.
// Bindings per entry are chosen with #if FWD / BWD. Numerics: f32 arithmetic, storage T (the forward
// saturates at T's largest finite value).
#include "common.wgsl"

struct Params {
  n: u32,
  x_off: u32,
  dy_off: u32,
  y_off: u32, // fwd: y; bwd: dx
}

override WG: u32 = 256;

fn index(wg: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return flat_workgroup(wg, nwg) * WG + lid;
}

#if FWD
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn relu2_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  let r = max(f32(x[params.x_off + i]), 0.0);
  // in f16, relu(x)² leaves the finite range for x > 255.9: saturate at T_MAX rather than store an
  // out-of-range value (indeterminate in WGSL, inf in practice, a NaN loss two ops later)
  y[params.y_off + i] = T(min(r * r, T_MAX));
}
#endif

#if BWD
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read_write> dx: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn relu2_bwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= params.n) { return; }
  let r = max(f32(x[params.x_off + i]), 0.0);
  dx[params.y_off + i] = T(2.0 * r * f32(dy[params.dy_off + i]));
}
#endif
