// reduce: per-row sums over the last dimension (sum_rows, sum_sq_rows) and per-column sums over
// the first (sum_cols), each scaled by alpha, accumulated in f32. Refs in src/ops/reduce.ts.
// sum_rows / sum_sq_rows: one workgroup per row (grid1d(rows)), WG threads stride the row, then a
//   tree reduction in workgroup memory. Full-tensor sums are rows = 1.
// sum_cols: one thread per column (grid1d(ceil(cols / WG))), looping over rows (coalesced reads).
// With accumulate = 1 the result is added to y instead of overwriting it.
#include "common.wgsl"

struct Params {
  rows: u32,
  cols: u32,
  x_off: u32,
  y_off: u32,
  alpha: f32,
  accumulate: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

override WG: u32 = 256;
var<workgroup> partial: array<f32, WG>;

fn store(i: u32, v: f32) {
  let j = params.y_off + i;
  if (params.accumulate != 0u) {
    y[j] = y[j] + params.alpha * v;
  } else {
    y[j] = params.alpha * v;
  }
}

fn reduce_row(lid: u32, row: u32, squared: bool) {
  let base = params.x_off + row * params.cols;
  var s = 0.0;
  for (var j = lid; j < params.cols; j += WG) {
    let v = f32(x[base + j]);
    s += select(v, v * v, squared);
  }
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      partial[lid] += partial[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    store(row, partial[0]);
  }
}

@compute @workgroup_size(WG)
fn sum_rows(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = flat_workgroup(wg, nwg);
  if (row >= params.rows) { return; } // uniform per workgroup, so barriers stay uniform
  reduce_row(lid, row, false);
}

@compute @workgroup_size(WG)
fn sum_sq_rows(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = flat_workgroup(wg, nwg);
  if (row >= params.rows) { return; }
  reduce_row(lid, row, true);
}

@compute @workgroup_size(WG)
fn sum_cols(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = flat_workgroup(wg, nwg) * WG + lid;
  if (c >= params.cols) { return; }
  var s = 0.0;
  for (var r = 0u; r < params.rows; r++) {
    s += f32(x[params.x_off + r * params.cols + c]);
  }
  store(c, s);
}
