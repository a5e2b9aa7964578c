// rotary: rotary position embedding on half-split pairs (x1, x2) = (x[..., j], x[..., j + D/2]):
//   rotary_fwd: y1 = x1·cos + x2·sin, y2 = −x1·sin + x2·cos (the reference's apply_rotary_emb)
//   rotary_bwd: the inverse (transposed) rotation, dx1 = dy1·cos − dy2·sin, dx2 = dy1·sin + dy2·cos
// with cos/sin [T, D/2] tables (row t = position t). Refs rotaryRef / rotaryBwdRef in src/ops/rotary.ts.
//
// x is [B, T, H, D], contiguous from x_off. One thread per pair (b, t, h, j), j fastest, so
// consecutive threads read consecutive elements of both halves and of the table row (coalesced).
// Grid: grid1d(ceil(B·T·H·D/2 / WG)). Offsets and sizes are in elements.
// Numerics: f32 arithmetic; storage T; tables f32.
#include "common.wgsl"

struct Params {
  pairs: u32, // B·T·H·D/2
  seq_len: u32,
  H: u32,
  half: u32,  // D/2
  x_off: u32,
  y_off: u32,
  cos_off: u32,
  sin_off: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

override WG: u32 = 256;

// Rotates pair i by the angle of its position; sign = +1 forward, −1 backward (inverse rotation).
fn rotate(i: u32, sign: f32) {
  if (i >= params.pairs) { return; }
  let j = i % params.half;
  let row = i / params.half;         // (b·T + t)·H + h
  let t = (row / params.H) % params.seq_len;
  let at = row * 2u * params.half + j;
  let c = cos_t[params.cos_off + t * params.half + j];
  let s = sign * sin_t[params.sin_off + t * params.half + j];
  let x1 = f32(x[params.x_off + at]);
  let x2 = f32(x[params.x_off + at + params.half]);
  y[params.y_off + at] = T(x1 * c + x2 * s);
  y[params.y_off + at + params.half] = T(x2 * c - x1 * s);
}

@compute @workgroup_size(WG)
fn rotary_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  rotate(flat_workgroup(wg, nwg) * WG + lid, 1.0);
}

@compute @workgroup_size(WG)
fn rotary_bwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  rotate(flat_workgroup(wg, nwg) * WG + lid, -1.0);
}
