// rms_norm: y = x · rsqrt(mean(x²) + eps) over the last dimension, no weight, eps = F32_EPS; and
// its backward dx = rstd·(dy − y·mean(dy·y)) = rstd·dy − rstd³·x·mean(dy·x).
// Refs rmsNormRef / rmsNormBwdRef in src/ops/rms_norm.ts.
//
// Thread → data: ROW_THREADS threads (a power of two) share one row, striding over its columns
// (consecutive threads, consecutive columns: coalesced); a workgroup of WG threads holds
// WG / ROW_THREADS rows, so short rows (attention heads, D = 128 or less) still fill a workgroup
// and wide rows (C up to 2048) get up to WG threads each. Each row group reduces its partial sums
// with a tree in its own slice of workgroup memory. Grid: grid1d(ceil(rows / (WG / ROW_THREADS))).
// rms_norm_fwd writes y and rstd[row] (f32, saved for the backward); rms_norm_bwd reads x, dy, rstd.
// Bindings per entry are chosen with #if FWD / BWD. Offsets are in elements.
// Numerics: f32 accumulation; the tree reduction has a fixed order (deterministic).
#include "common.wgsl"

struct Params {
  rows: u32,
  cols: u32,
  x_off: u32,
  dy_off: u32,
  y_off: u32,    // fwd: y; bwd: dx
  rstd_off: u32,
}

override WG: u32 = 256;
override ROW_THREADS: u32 = 32; // power of two, <= WG

#if SUBGROUPS
// One row per workgroup (the wrapper sets ROW_THREADS = WG): the row's sum is a workgroup sum on
// subgroups (subgroup_reduce.wgsl), whatever the subgroup size and layout.
#include "subgroup_reduce.wgsl"
fn row_sum(lid: u32, s: f32) -> f32 {
  return wg_sum(s, lid);
}
#else
var<workgroup> partial: array<f32, WG>;

// Sums `s` over the ROW_THREADS threads of each row group; every thread gets its group's total.
// Called by all threads of the workgroup (uniform control flow: the loop bound is an override).
fn row_sum(lid: u32, s: f32) -> f32 {
  let lane = lid % ROW_THREADS;
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = ROW_THREADS / 2u; stride > 0u; stride /= 2u) {
    if (lane < stride) {
      partial[lid] += partial[lid + stride];
    }
    workgroupBarrier();
  }
  return partial[lid - lane];
}
#endif

#if FWD
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn rms_norm_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % ROW_THREADS;
  let row = flat_workgroup(wg, nwg) * (WG / ROW_THREADS) + lid / ROW_THREADS;
  let in_range = row < params.rows; // not a return: every thread must reach the barriers
  let base = row * params.cols;
  var s = 0.0;
  if (in_range) {
    for (var j = lane; j < params.cols; j += ROW_THREADS) {
      let v = f32(x[params.x_off + base + j]);
      s += v * v;
    }
  }
  let r = inverseSqrt(row_sum(lid, s) / f32(params.cols) + F32_EPS);
  if (in_range) {
    for (var j = lane; j < params.cols; j += ROW_THREADS) {
      y[params.y_off + base + j] = T(f32(x[params.x_off + base + j]) * r);
    }
    if (lane == 0u) {
      rstd[params.rstd_off + row] = r;
    }
  }
}
#endif

#if BWD
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn rms_norm_bwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % ROW_THREADS;
  let row = flat_workgroup(wg, nwg) * (WG / ROW_THREADS) + lid / ROW_THREADS;
  let in_range = row < params.rows;
  let base = row * params.cols;
  var s = 0.0;
  var r = 0.0;
  if (in_range) {
    r = rstd[params.rstd_off + row];
    for (var j = lane; j < params.cols; j += ROW_THREADS) {
      s += f32(dy[params.dy_off + base + j]) * f32(x[params.x_off + base + j]);
    }
  }
  // dx = r·dy − r³·x·mean(dy·x)
  let k = r * r * r * row_sum(lid, s) / f32(params.cols);
  if (in_range) {
    for (var j = lane; j < params.cols; j += ROW_THREADS) {
      dx[params.y_off + base + j] = T(r * f32(dy[params.dy_off + base + j]) - k * f32(x[params.x_off + base + j]));
    }
  }
}
#endif
