// attention_bwd: gradients of attention_fwd (FlashAttention-2 style, deterministic, no atomics).
// Ref attentionBwdRef (src/ops/attention.ts). Same layouts and mask as attention_fwd.wgsl;
// lse, delta [B, H, T] f32. With P = exp(S − lse), S = scale·q·kᵀ:
//   delta = rowsum(dY ⊙ Y);  dS = P ⊙ (dY·Vᵀ − delta);
//   dQ = scale·dS·K;  dK = scale·dSᵀ·Q;  dV = Pᵀ·dY  (dK, dV summed over the H/HKV query heads).
// Three entry points, one per define (they bind different buffers):
//   DELTA attention_bwd_delta: one thread per (b, i, h) row; grid grid1d(ceil(B·T·H / WG)). With SUBGROUPS
//   (the device has them): one row per workgroup of WG threads, reduced on subgroups (subgroup_reduce.wgsl).
//   DQ    attention_bwd_dq: grid (ceil(T / BR), H, B); BR query rows stay in registers (q, dy, dq),
//         key tiles of BC rows (K and V) stream through workgroup memory, last blocks first.
//   DKV   attention_bwd_dkv: grid (ceil(T / BC), HKV, B); BC key rows stay in registers (k, v, dk, dv)
//         and loop over the query heads of their group and the query tiles (BR rows of q, dy, lse,
//         delta) that can see them: i from the block's first key to its last key + window.
// Thread → data as in attention_fwd: TPR threads per resident row, thread t owns the vec4 chunks
// c ≡ t (mod TPR); per tile, partial dot products (scores and dY·V) go through workgroup memory and
// are summed over the row's TPR threads. Scores in base 2 (resident q or k pre-scaled by scale·log2 e).
// Numerics: f32 throughout. Workgroup memory (D = 128, defaults BR/BC/TPR 16/8/8 for dq, 8/16/8 for
// dkv): 2·tile·D·4 + 2·BR·BC·TPR·4 bytes = 16 KiB (+ 2·BR·4 for dkv's lse/delta).
#include "common.wgsl"

struct Params {
  seq: u32,        // T
  n_head: u32,     // H
  n_kv_head: u32,  // HKV
  window: u32,     // left window, clamped to T by the host
  scale_log2: f32, // log2(e) / sqrt(D)
  scale: f32,      // 1 / sqrt(D)
  rows: u32,       // B·T·H (delta)
  q_off: u32,
  k_off: u32,
  v_off: u32,
  y_off: u32,
  dy_off: u32,
  lse_off: u32,
  delta_off: u32,
  dq_off: u32,
  dk_off: u32,
  dv_off: u32,
}

override BR: u32 = 16u;                      // query rows (resident in dq, streamed in dkv)
override BC: u32 = 8u;                       // key rows (streamed in dq, resident in dkv)
override TPR: u32 = 8u;                      // threads per resident row
override DC: u32 = 32u;                      // vec4 chunks per head (D / 4)
override CPT: u32 = (DC + TPR - 1u) / TPR;   // chunks per thread (≤ MAX_CPT)
override WG: u32 = 256u;                     // delta workgroup size

const MAX_CPT: u32 = 8u;
const LOG2E: f32 = 1.4426950408889634;

#if DELTA
@group(0) @binding(0) var<storage, read> dy: array<T>;
@group(0) @binding(1) var<storage, read> y: array<T>;
@group(0) @binding(2) var<storage, read_write> delta: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

fn store_delta(r: u32, s: f32) {
  let h = r % params.n_head;
  let bi = r / params.n_head;
  let b = bi / params.seq;
  delta[params.delta_off + (b * params.n_head + h) * params.seq + bi % params.seq] = s;
}

#if SUBGROUPS
// one row per workgroup: WG threads stride the row (coalesced) and reduce on subgroups
#include "subgroup_reduce.wgsl"

@compute @workgroup_size(WG)
fn attention_bwd_delta(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = flat_workgroup(wg, nwg); // (b·T + i)·H + h
  if (r >= params.rows) { return; } // uniform per workgroup
  let a = r * DC * 4u;
  var s = 0.0;
  for (var e = lid; e < DC * 4u; e += WG) { s += f32(dy[params.dy_off + a + e]) * f32(y[params.y_off + a + e]); }
  let total = wg_sum(s, lid);
  if (lid == 0u) { store_delta(r, total); }
}
#else
// one row per thread
@compute @workgroup_size(WG)
fn attention_bwd_delta(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = flat_workgroup(wg, nwg) * WG + lid; // (b·T + i)·H + h
  if (r >= params.rows) { return; }
  let a = r * DC * 4u;
  var s = 0.0;
  for (var e = 0u; e < DC * 4u; e++) { s += f32(dy[params.dy_off + a + e]) * f32(y[params.y_off + a + e]); }
  store_delta(r, s);
}
#endif
#else
@group(0) @binding(0) var<storage, read> q: array<T>;
@group(0) @binding(1) var<storage, read> k: array<T>;
@group(0) @binding(2) var<storage, read> v: array<T>;
@group(0) @binding(3) var<storage, read> dy: array<T>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
#if DQ
@group(0) @binding(6) var<storage, read_write> dq: array<T>;
#else
@group(0) @binding(6) var<storage, read_write> dk: array<T>;
@group(0) @binding(7) var<storage, read_write> dv: array<T>;
#endif
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> part_s: array<f32, BR * BC * TPR>;  // [streamed row][resident row][t]
var<workgroup> part_dp: array<f32, BR * BC * TPR>;

fn load_q(a: u32) -> vec4<f32> { return vec4<f32>(f32(q[a]), f32(q[a + 1u]), f32(q[a + 2u]), f32(q[a + 3u])); }
fn load_k(a: u32) -> vec4<f32> { return vec4<f32>(f32(k[a]), f32(k[a + 1u]), f32(k[a + 2u]), f32(k[a + 3u])); }
fn load_v(a: u32) -> vec4<f32> { return vec4<f32>(f32(v[a]), f32(v[a + 1u]), f32(v[a + 2u]), f32(v[a + 3u])); }
fn load_dy(a: u32) -> vec4<f32> { return vec4<f32>(f32(dy[a]), f32(dy[a + 1u]), f32(dy[a + 2u]), f32(dy[a + 3u])); }

fn visible(i: u32, j: u32) -> bool {
  return j <= i && i <= j + params.window;
}

// Sum of the TPR partials of (streamed row `s_row`, resident row `row`); `n_res` resident rows.
fn sum_partials(s_row: u32, row: u32, n_res: u32) -> vec2<f32> {
  var r = vec2<f32>(0.0);
  for (var u = 0u; u < TPR; u++) {
    let a = (s_row * n_res + row) * TPR + u;
    r += vec2<f32>(part_s[a], part_dp[a]);
  }
  return r;
}

fn store4(a: u32, x: vec4<f32>, which: u32) {
#if DQ
  dq[a] = T(x.x); dq[a + 1u] = T(x.y); dq[a + 2u] = T(x.z); dq[a + 3u] = T(x.w);
#else
  if (which == 0u) {
    dk[a] = T(x.x); dk[a + 1u] = T(x.y); dk[a + 2u] = T(x.z); dk[a + 3u] = T(x.w);
  } else {
    dv[a] = T(x.x); dv[a + 1u] = T(x.y); dv[a + 2u] = T(x.z); dv[a + 3u] = T(x.w);
  }
#endif
}
#endif

#if DQ
var<workgroup> k_tile: array<vec4<f32>, BC * DC>;
var<workgroup> v_tile: array<vec4<f32>, BC * DC>;

@compute @workgroup_size(BR * TPR)
fn attention_bwd_dq(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let D = DC * 4u;
  let b = wg.z;
  let h = wg.y;
  let g = h / (params.n_head / params.n_kv_head);
  let i0 = (nwg.x - 1u - wg.x) * BR;
  let row = lid / TPR;
  let t = lid % TPR;
  let i = i0 + row;
  let row_ok = i < params.seq;

  var qr: array<vec4<f32>, MAX_CPT>;
  var dyr: array<vec4<f32>, MAX_CPT>;
  var acc: array<vec4<f32>, MAX_CPT>;
  let q_row = ((b * params.seq + i) * params.n_head + h) * D;
  for (var m = 0u; m < CPT; m++) {
    let c = t + m * TPR;
    var x = vec4<f32>(0.0);
    var d = vec4<f32>(0.0);
    if (row_ok && c < DC) {
      x = load_q(params.q_off + q_row + 4u * c);
      d = load_dy(params.dy_off + q_row + 4u * c);
    }
    qr[m] = x * params.scale_log2;
    dyr[m] = d;
    acc[m] = vec4<f32>(0.0);
  }
  var lse2 = 0.0;
  var dlt = 0.0;
  if (row_ok) {
    let r = (b * params.n_head + h) * params.seq + i;
    lse2 = lse[params.lse_off + r] * LOG2E;
    dlt = delta[params.delta_off + r];
  }

  let kv_base = (b * params.seq * params.n_kv_head + g) * D;
  let kv_row = params.n_kv_head * D;
  let i_end = min(i0 + BR, params.seq);
  let j_begin = select(0u, i0 - params.window, i0 > params.window);
  for (var j0 = j_begin; j0 < i_end; j0 += BC) {
    for (var e = lid; e < BC * DC; e += BR * TPR) {
      let j = j0 + e / DC;
      var kx = vec4<f32>(0.0);
      var vx = vec4<f32>(0.0);
      if (j < params.seq) {
        let a = kv_base + j * kv_row + 4u * (e % DC);
        kx = load_k(params.k_off + a);
        vx = load_v(params.v_off + a);
      }
      k_tile[e] = kx;
      v_tile[e] = vx;
    }
    workgroupBarrier();
    for (var jj = 0u; jj < BC; jj++) {
      var s = 0.0;
      var dp = 0.0;
      for (var m = 0u; m < CPT; m++) {
        let c = t + m * TPR;
        if (c < DC) {
          s += dot(qr[m], k_tile[jj * DC + c]);
          dp += dot(dyr[m], v_tile[jj * DC + c]);
        }
      }
      let a = (jj * BR + row) * TPR + t;
      part_s[a] = s;
      part_dp[a] = dp;
    }
    workgroupBarrier();
    for (var jj = 0u; jj < BC; jj++) {
      let sd = sum_partials(jj, row, BR);
      let p = select(0.0, exp2(sd.x - lse2), visible(i, j0 + jj));
      let ds = p * (sd.y - dlt);
      for (var m = 0u; m < CPT; m++) {
        let c = t + m * TPR;
        if (c < DC) { acc[m] += ds * k_tile[jj * DC + c]; }
      }
    }
    workgroupBarrier(); // before the next tiles overwrite K, V and the partials
  }

  if (row_ok) {
    for (var m = 0u; m < CPT; m++) {
      let c = t + m * TPR;
      if (c < DC) { store4(params.dq_off + q_row + 4u * c, acc[m] * params.scale, 0u); }
    }
  }
}
#endif

#if DKV
var<workgroup> q_tile: array<vec4<f32>, BR * DC>;
var<workgroup> dy_tile: array<vec4<f32>, BR * DC>;
var<workgroup> lse_tile: array<f32, BR>;   // base 2
var<workgroup> delta_tile: array<f32, BR>;

@compute @workgroup_size(BC * TPR)
fn attention_bwd_dkv(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let D = DC * 4u;
  let b = wg.z;
  let g = wg.y;
  let group = params.n_head / params.n_kv_head;
  let j0 = wg.x * BC; // low key blocks see the most queries and come first anyway
  let row = lid / TPR;
  let t = lid % TPR;
  let j = j0 + row;
  let row_ok = j < params.seq;

  var kr: array<vec4<f32>, MAX_CPT>;
  var vr: array<vec4<f32>, MAX_CPT>;
  var dk_acc: array<vec4<f32>, MAX_CPT>;
  var dv_acc: array<vec4<f32>, MAX_CPT>;
  let kv_row = ((b * params.seq + j) * params.n_kv_head + g) * D;
  for (var m = 0u; m < CPT; m++) {
    let c = t + m * TPR;
    var kx = vec4<f32>(0.0);
    var vx = vec4<f32>(0.0);
    if (row_ok && c < DC) {
      kx = load_k(params.k_off + kv_row + 4u * c);
      vx = load_v(params.v_off + kv_row + 4u * c);
    }
    kr[m] = kx * params.scale_log2;
    vr[m] = vx;
    dk_acc[m] = vec4<f32>(0.0);
    dv_acc[m] = vec4<f32>(0.0);
  }

  let j_last = min(j0 + BC, params.seq) - 1u;
  let i_end = min(params.seq, j_last + params.window + 1u);
  for (var hh = 0u; hh < group; hh++) {
    let h = g * group + hh;
    let lrow = (b * params.n_head + h) * params.seq;
    for (var i0 = j0; i0 < i_end; i0 += BR) {
      for (var e = lid; e < BR * DC; e += BC * TPR) {
        let i = i0 + e / DC;
        var qx = vec4<f32>(0.0);
        var dx = vec4<f32>(0.0);
        if (i < params.seq) {
          let a = ((b * params.seq + i) * params.n_head + h) * D + 4u * (e % DC);
          qx = load_q(params.q_off + a);
          dx = load_dy(params.dy_off + a);
        }
        q_tile[e] = qx;
        dy_tile[e] = dx;
      }
      if (lid < BR) {
        let i = i0 + lid;
        var l2 = 0.0;
        var dl = 0.0;
        if (i < params.seq) {
          l2 = lse[params.lse_off + lrow + i] * LOG2E;
          dl = delta[params.delta_off + lrow + i];
        }
        lse_tile[lid] = l2;
        delta_tile[lid] = dl;
      }
      workgroupBarrier();
      for (var ii = 0u; ii < BR; ii++) {
        var s = 0.0;
        var dp = 0.0;
        for (var m = 0u; m < CPT; m++) {
          let c = t + m * TPR;
          if (c < DC) {
            s += dot(kr[m], q_tile[ii * DC + c]);
            dp += dot(vr[m], dy_tile[ii * DC + c]);
          }
        }
        let a = (ii * BC + row) * TPR + t;
        part_s[a] = s;
        part_dp[a] = dp;
      }
      workgroupBarrier();
      for (var ii = 0u; ii < BR; ii++) {
        let i = i0 + ii;
        let sd = sum_partials(ii, row, BC);
        let p = select(0.0, exp2(sd.x - lse_tile[ii]), i < params.seq && visible(i, j));
        let ds = p * (sd.y - delta_tile[ii]);
        for (var m = 0u; m < CPT; m++) {
          let c = t + m * TPR;
          if (c < DC) {
            dv_acc[m] += p * dy_tile[ii * DC + c];
            dk_acc[m] += ds * q_tile[ii * DC + c];
          }
        }
      }
      workgroupBarrier(); // before the next tiles overwrite q, dy and the partials
    }
  }

  if (row_ok) {
    for (var m = 0u; m < CPT; m++) {
      let c = t + m * TPR;
      if (c < DC) {
        store4(params.dk_off + kv_row + 4u * c, dk_acc[m] * params.scale, 0u);
        store4(params.dv_off + kv_row + 4u * c, dv_acc[m], 1u);
      }
    }
  }
}
#endif
