// muon: the element passes of one Muon step on a group of G same-shape matrices stacked as
// [G, R, C]; refs in src/ops/muon.ts. Polar Express's products are batched matmuls (matmul.wgsl).
//   muon_nesterov      NESTEROV  buf ← lerp(buf, g, 1−μ); x ← lerp(g, buf, μ); per-chunk Σx²
//   frob_partials      FROB      per-chunk Σx² (Polar Express on a bare input)
//   frob_normalize     FROB      x ← x / (‖x‖_F·1.02 + 1e-6) per matrix, in place
//   polar_affine       AFFINE    bm ← b·A + a·I (a matmul then adds c·A·A: bm = aI + bA + cA²,
//                                so X ← a·X + X·B is the single product X·bm)
//   normuon_row_stats  STATS     v_mean[g, r] = mean_c x²   (R ≥ C)
//   normuon_col_stats  STATS     v_mean[g, c] = mean_r x²   (R < C)
//   normuon_scale      SCALE     m2 ← lerp(m2, v_mean, 1−β2); stat ← step·v_norm / max(v_norm_new, 1e-10)
//   muon_update        UPDATE    u = x·stat; p ← p − (lr·u + lr·wd·p·[u·p ≥ 0])   (cautious decay)
// Thread → data and grids (WG threads per workgroup, a power of two):
//   chunked passes (nesterov, frob_*): workgroup (j, g) of grid (nc, G) covers elements
//     [j·CHUNK, (j+1)·CHUNK) of matrix g, CHUNK = WG·ITEMS, strided by WG (coalesced); one partial
//     Σx² per workgroup → partials[g·nc + j]; frob_normalize re-reduces its matrix's nc partials
//     (nc is small: CHUNK elements per partial), which saves a separate finalize dispatch.
//   polar_affine, muon_update: one thread per element, grid1d(ceil(n / WG)).
//   normuon_row_stats: one workgroup per row, grid1d(G·R). normuon_col_stats: TX columns × WG/TX
//     row slices per workgroup, grid (ceil(C / TX), G). normuon_scale: one workgroup per matrix.
// Numerics: f32 arithmetic and f32 partials/statistics on T storage; lerp is torch's formula.
#include "common.wgsl"

override WG: u32 = 256;
override ITEMS: u32 = 16;
override TX: u32 = 32;

var<workgroup> red: array<f32, WG>;
var<workgroup> red2: array<vec2f, WG>;

// Σ of v over the workgroup (tree in workgroup memory); call from uniform control flow, at most
// once per kernel (a second call would overwrite red while slower invocations still read red[0]).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { red[lid] += red[lid + stride]; }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&red[0]);
}

// Two sums at once (same rules).
fn workgroup_sum2(lid: u32, v: vec2f) -> vec2f {
  red2[lid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { red2[lid] += red2[lid + stride]; }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&red2[0]);
}

// torch.lerp: start + w·(end − start) for w < 0.5, else end − (end − start)·(1 − w)
fn lerp_torch(start: f32, end: f32, w: f32) -> f32 {
  if (w < 0.5) { return start + w * (end - start); }
  return end - (end - start) * (1.0 - w);
}

#if NESTEROV
struct Params { n: u32, nc: u32, g_off: u32, buf_off: u32, x_off: u32, momentum: f32 }
@group(0) @binding(0) var<storage, read> g: array<T>;
@group(0) @binding(1) var<storage, read_write> buf: array<T>;
@group(0) @binding(2) var<storage, read_write> x: array<T>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn muon_nesterov(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let base = wg.y * params.n;
  var s = 0.0;
  for (var k = 0u; k < ITEMS; k++) {
    let e = wg.x * WG * ITEMS + k * WG + lid;
    if (e < params.n) {
      let gi = f32(g[params.g_off + base + e]);
      let b = lerp_torch(f32(buf[params.buf_off + base + e]), gi, 1.0 - params.momentum);
      buf[params.buf_off + base + e] = T(b);
      let xi = f32(T(lerp_torch(gi, b, params.momentum)));
      x[params.x_off + base + e] = T(xi);
      s += xi * xi;
    }
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) { partials[wg.y * params.nc + wg.x] = total; }
}
#endif

#if FROB
struct Params { n: u32, nc: u32, x_off: u32 }
@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn frob_partials(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let base = params.x_off + wg.y * params.n;
  var s = 0.0;
  for (var k = 0u; k < ITEMS; k++) {
    let e = wg.x * WG * ITEMS + k * WG + lid;
    if (e < params.n) {
      let v = f32(x[base + e]);
      s += v * v;
    }
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) { partials[wg.y * params.nc + wg.x] = total; }
}

@compute @workgroup_size(WG)
fn frob_normalize(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var j = lid; j < params.nc; j += WG) { s += partials[wg.y * params.nc + j]; }
  let scale = 1.0 / (sqrt(workgroup_sum(lid, s)) * 1.02 + 1e-6);
  let base = params.x_off + wg.y * params.n;
  for (var k = 0u; k < ITEMS; k++) {
    let e = wg.x * WG * ITEMS + k * WG + lid;
    if (e < params.n) { x[base + e] = T(f32(x[base + e]) * scale); }
  }
}
#endif

#if AFFINE
struct Params { n: u32, s: u32, ca: f32, cb: f32 }
@group(0) @binding(0) var<storage, read> gram: array<T>;
@group(0) @binding(1) var<storage, read_write> poly: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn polar_affine(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wg, nwg) * WG + lid;
  if (i >= params.n) { return; }
  let j = i % (params.s * params.s);
  let diag = select(0.0, params.ca, j / params.s == j % params.s);
  poly[i] = T(params.cb * f32(gram[i]) + diag);
}
#endif

#if STATS
struct Params { groups: u32, rows: u32, cols: u32, x_off: u32 }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> stat: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn normuon_row_stats(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = flat_workgroup(wg, nwg); // over all G·R rows
  if (row >= params.groups * params.rows) { return; } // uniform per workgroup
  let base = params.x_off + row * params.cols;
  var s = 0.0;
  for (var c = lid; c < params.cols; c += WG) {
    let v = f32(x[base + c]);
    s += v * v;
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) { stat[row] = total / f32(params.cols); }
}

@compute @workgroup_size(WG)
fn normuon_col_stats(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % TX;
  let ty = lid / TX;
  let col = wg.x * TX + tx;
  var s = 0.0;
  if (col < params.cols) {
    let base = params.x_off + wg.y * params.rows * params.cols + col;
    for (var r = ty; r < params.rows; r += WG / TX) {
      let v = f32(x[base + r * params.cols]);
      s += v * v;
    }
  }
  red[lid] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride >= TX; stride /= 2u) {
    if (lid < stride) { red[lid] += red[lid + stride]; }
    workgroupBarrier();
  }
  if (ty == 0u && col < params.cols) { stat[wg.y * params.cols + col] = red[tx] / f32(params.rows); }
}
#endif

#if SCALE
struct Params { len: u32, red_size: f32, w2: f32, m2_off: u32 }
@group(0) @binding(0) var<storage, read_write> stat: array<f32>;
@group(0) @binding(1) var<storage, read_write> m2: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn normuon_scale(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let base = wg.x * params.len;
  var sum_mean = 0.0;
  var sum_scaled = 0.0;
  for (var i = lid; i < params.len; i += WG) {
    let v_mean = stat[base + i];
    let m = T(lerp_torch(f32(m2[params.m2_off + base + i]), v_mean, params.w2));
    m2[params.m2_off + base + i] = m;
    let step = inverseSqrt(max(f32(m), 1e-10));
    sum_mean += v_mean;
    sum_scaled += (v_mean * params.red_size) * (step * step);
  }
  let sums = workgroup_sum2(lid, vec2f(sum_mean, sum_scaled));
  let v_norm = sqrt(sums.x * params.red_size);
  let v_norm_new = sqrt(sums.y);
  let ratio = v_norm / max(v_norm_new, 1e-10);
  for (var i = lid; i < params.len; i += WG) {
    stat[base + i] = inverseSqrt(max(f32(m2[params.m2_off + base + i]), 1e-10)) * ratio;
  }
}
#endif

#if UPDATE
struct Params { n: u32, rows: u32, cols: u32, per_row: u32, x_off: u32, p_off: u32, lr: f32, wd: f32 }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> stat: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn muon_update(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wg, nwg) * WG + lid;
  if (i >= params.n) { return; }
  let per_matrix = params.rows * params.cols;
  let g = i / per_matrix;
  let e = i % per_matrix;
  var s: f32;
  if (params.per_row != 0u) {
    s = stat[g * params.rows + e / params.cols];
  } else {
    s = stat[g * params.cols + e % params.cols];
  }
  let u = f32(T(f32(x[params.x_off + i]) * s));
  let pv = f32(p[params.p_off + i]);
  let mask = select(0.0, 1.0, u * pv >= 0.0);
  p[params.p_off + i] = T(pv - (params.lr * u + params.lr * params.wd * pv * mask));
}
#endif
