// fill_u32: dst[offset + i] = bits for i < count, on 32-bit words (f32, i32, u32, or two f16).
// One thread per word; grid from grid1d(ceil(count / WG)). Used by Runtime.zeros()/fill().
#include "common.wgsl"

struct Params {
  offset: u32, // in words
  count: u32,  // in words
  bits: u32,   // the 32-bit pattern to store
}

@group(0) @binding(0) var<storage, read_write> dst: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn fill_u32(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wg, nwg) * WG + lid;
  if (i < params.count) {
    dst[params.offset + i] = params.bits;
  }
}
