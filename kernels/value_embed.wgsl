// value_embed: the value-embedding gate, y = v + 2·sigmoid(z[row])·ve, with v, ve [rows, D]
// (rows = B·T·Hkv) and one gate logit z[row] per kv head; and its backward.
// Refs valueEmbedRef / valueEmbedBwdRef in src/ops/value_embed.ts.
//
// value_embed_fwd: one thread per element; grid grid1d(ceil(n / WG)); z[row] is a broadcast read.
// value_embed_bwd: one workgroup per row (grid1d(rows)); WG threads stride the D elements, writing
//   dve = 2σ·dy and summing dy·ve, then a tree reduction gives dz = Σ dy·ve · 2σ(1−σ).
//   The wrapper picks WG = nextPow2(D) clamped to [32, 256], so a head of 128 is one element per thread.
//   dv = dy is the incoming gradient itself (no kernel).
// Offsets and sizes are in elements. Numerics: f32 math, sigmoid as 1/(1+exp(−z)) (saturates
// cleanly to 0 or 1 for large |z|, never NaN).
#include "common.wgsl"

struct Params {
  n: u32,
  D: u32,
  rows: u32,
  v_off: u32,
  ve_off: u32,
  z_off: u32,
  dy_off: u32,
}

override WG: u32 = 256;

fn sigmoid(z: f32) -> f32 {
  return 1.0 / (1.0 + exp(-z));
}

#if FWD
@group(0) @binding(0) var<storage, read> v: array<T>;
@group(0) @binding(1) var<storage, read> ve: array<T>;
@group(0) @binding(2) var<storage, read> z: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn value_embed_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wg, nwg) * WG + lid;
  if (i >= params.n) { return; }
  let gate = 2.0 * sigmoid(f32(z[params.z_off + i / params.D]));
  y[i] = T(f32(v[params.v_off + i]) + gate * f32(ve[params.ve_off + i])); // y is fresh: offset 0
}
#endif

#if BWD
@group(0) @binding(0) var<storage, read> dy: array<T>;
@group(0) @binding(1) var<storage, read> ve: array<T>;
@group(0) @binding(2) var<storage, read> z: array<T>;
@group(0) @binding(3) var<storage, read_write> dve: array<T>;
@group(0) @binding(4) var<storage, read_write> dz: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn value_embed_bwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = flat_workgroup(wg, nwg);
  if (row >= params.rows) { return; } // uniform per workgroup: barriers stay uniform
  let s = sigmoid(f32(z[params.z_off + row]));
  let gate = 2.0 * s;
  let base = row * params.D;
  var dot = 0.0;
  for (var d = lid; d < params.D; d += WG) {
    let g = f32(dy[params.dy_off + base + d]);
    dot += g * f32(ve[params.ve_off + base + d]);
    dve[base + d] = T(gate * g); // dve, dz are fresh: offset 0
  }
  partial[lid] = dot;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      partial[lid] += partial[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    dz[row] = T(partial[0] * gate * (1.0 - s));
  }
}
#endif
