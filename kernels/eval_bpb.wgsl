// eval_bpb: the harness's own per-token cross-entropy for evaluateBpb (prepare.ts), independent of
// the model's loss kernels. Refs tokenNatsRef / sumChunkRef / causalDiffRef in src/ops/eval_bpb.ts.
//
// eval_token_nats (#if NATS): rows of V logits (one per token) and their targets:
//   nats[r] = logsumexp(logits[r, :]) − logits[r, target[r]] if token_bytes[target[r]] > 0, else 0;
//   bytes[r] = token_bytes[target[r]]  (special tokens have 0 bytes: out of both sums).
//   One workgroup per row (grid1d(rows)); WG threads stride the row (coalesced reads), each keeping
//   an online max m and Σ exp(x − m); a tree reduction in workgroup memory merges the (m, Σ) pairs.
//   Thread 0 reads the target's logit. The max starts at −FLT_MAX, not −inf (no inf − inf).
// eval_sum_chunk (#if SUM): one workgroup adds nats[0..n) (f32) and bytes[0..n) (u32, exact) and
//   writes them to slot `slot` of chunk_nats / chunk_bytes; the host adds the slots in f64.
// eval_causal_diff (#if DIFF): for row r of a chunk and position t < bound[r]:
//   diff[r·T + t] = max_v |a[r, t, v] − b[r, t, v]|, else 0. One workgroup per (r, t), grid1d(rows·T).
// Numerics: f32 accumulation throughout; logits may be stored as T (f32 or f16).
#include "common.wgsl"

struct Params {
  rows: u32,
  cols: u32,
  a_off: u32,
  b_off: u32,
  seq: u32,
  slot: u32,
}

override WG: u32 = 256;

const FLT_MAX: f32 = 0x1.fffffep+127f; // largest finite f32

#if NATS
@group(0) @binding(0) var<storage, read> logits: array<T>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> token_bytes: array<i32>;
@group(0) @binding(3) var<storage, read_write> nats: array<f32>;
@group(0) @binding(4) var<storage, read_write> bytes: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;

// params: rows, cols = V, a_off = logits offset, b_off = targets offset
@compute @workgroup_size(WG)
fn eval_token_nats(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = flat_workgroup(wg, nwg);
  if (row >= params.rows) { return; } // uniform per workgroup
  let base = params.a_off + row * params.cols;
  var m = -FLT_MAX;
  var s = 0.0;
  for (var j = lid; j < params.cols; j += WG) {
    let x = f32(logits[base + j]);
    if (x > m) {
      s = s * exp(m - x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
  }
  red_max[lid] = m;
  red_sum[lid] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      let m1 = red_max[lid];
      let m2 = red_max[lid + stride];
      let mm = max(m1, m2);
      red_sum[lid] = red_sum[lid] * exp(m1 - mm) + red_sum[lid + stride] * exp(m2 - mm);
      red_max[lid] = mm;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let tgt = targets[params.b_off + row];
    let nb = token_bytes[tgt];
    let lse = red_max[0] + log(red_sum[0]);
    let loss = lse - f32(logits[base + u32(tgt)]);
    nats[row] = select(0.0, loss, nb > 0);
    bytes[row] = u32(max(nb, 0));
  }
}
#endif

#if SUM
@group(0) @binding(0) var<storage, read> nats: array<f32>;
@group(0) @binding(1) var<storage, read> bytes: array<u32>;
@group(0) @binding(2) var<storage, read_write> chunk_nats: array<f32>;
@group(0) @binding(3) var<storage, read_write> chunk_bytes: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> red_nats: array<f32, WG>;
var<workgroup> red_bytes: array<u32, WG>;

// params: rows = n, slot
@compute @workgroup_size(WG)
fn eval_sum_chunk(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  var b = 0u;
  for (var i = lid; i < params.rows; i += WG) {
    s += nats[i];
    b += bytes[i];
  }
  red_nats[lid] = s;
  red_bytes[lid] = b;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red_nats[lid] += red_nats[lid + stride];
      red_bytes[lid] += red_bytes[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    chunk_nats[params.slot] = red_nats[0];
    chunk_bytes[params.slot] = red_bytes[0];
  }
}
#endif

#if DIFF
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read> bound: array<i32>;
@group(0) @binding(3) var<storage, read_write> diff: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> red_diff: array<f32, WG>;

// params: rows = chunk rows · seq, cols = V, seq = T, a_off, b_off
@compute @workgroup_size(WG)
fn eval_causal_diff(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = flat_workgroup(wg, nwg);
  if (idx >= params.rows) { return; }
  let r = idx / params.seq;
  let t = idx % params.seq;
  let n = select(0u, params.cols, i32(t) < bound[r]); // positions at or after the bound compare nothing
  var d = 0.0;
  for (var j = lid; j < n; j += WG) {
    let k = idx * params.cols + j;
    d = max(d, abs(f32(a[params.a_off + k]) - f32(b[params.b_off + k])));
  }
  red_diff[lid] = d;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red_diff[lid] = max(red_diff[lid], red_diff[lid + stride]);
    }
    workgroupBarrier();
  }
  if (lid == 0u) { diff[idx] = red_diff[0]; }
}
#endif
