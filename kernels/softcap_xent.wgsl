// softcap_xent: fused logit softcap + cross-entropy over rows of V logits, optionally writing the
// gradient of the mean loss in place over the logits. Refs softcapXentRef / softcapRef in
// src/ops/softcap_xent.ts.
//   c = s·tanh(z/s) (s = 0: c = z); loss[row] = logsumexp(c) − c[target] (0 where target = −1);
//   with GRAD: z[row, j] ← (softmax(c)[j] − [j = target]) · (1 − tanh²(z/s)) · alpha · stats[1].
//
// softcap_xent_count (#if COUNT): one workgroup counts targets ≠ −1 (u32, exact) and writes
//   stats = [count, 1/max(count, 1)] (f32), so the mean's scale never leaves the GPU.
// softcap_xent_fwd (#if XENT, + #if GRAD): one workgroup per row (grid1d(rows)). Pass 1: WG threads
//   stride the row (coalesced), each keeping an online max m and Σ exp(c − m); a tree reduction in
//   workgroup memory merges the (m, Σ) pairs. The thread whose stride holds the target reads c[target]
//   in pass 1 and writes the loss (so no thread reads a logit another overwrites). Pass 2 (GRAD):
//   the same threads recompute c from z (the row stays hot in L2) and overwrite it with dz.
//   With SUBGROUPS (the device has 'subgroups') the merge is two subgroup reductions instead
//   (subgroup_reduce.wgsl: wg_max, then wg_sum of each thread's sum rescaled to the row max).
// softcap_fwd (#if SOFTCAP): c = s·tanh(z/s) in place, one thread per element (grid1d(ceil(n/WG))).
// Numerics: f32 throughout; tanh's argument is clamped to ±10 (tanh = ±1 in f32 there; guards
// backends whose tanh overflows to NaN for large inputs); the max starts at −FLT_MAX (not −inf, so
// merging two empty threads gives 0·exp(0) = 0, never inf − inf). Targets outside [−1, V) give a
// NaN loss, so the training loop's NaN check catches them (torch raises an error there).
#include "common.wgsl"

struct Params {
  rows: u32,
  cols: u32,
  logits_off: u32,
  targets_off: u32,
  loss_off: u32,
  stats_off: u32,
  softcap: f32,
  inv_softcap: f32,
  alpha: f32,
}

override WG: u32 = 256;

const FLT_MAX: f32 = 0x1.fffffep+127f; // largest finite f32

// tanh(z/s); s = 0 means no cap (the caller uses z itself)
fn cap_tanh(z: f32) -> f32 {
  return tanh(clamp(z * params.inv_softcap, -10.0, 10.0));
}

fn capped(z: f32) -> f32 {
  if (params.softcap == 0.0) { return z; }
  return params.softcap * cap_tanh(z);
}

#if COUNT
@group(0) @binding(0) var<storage, read> targets: array<i32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

var<workgroup> red_count: array<u32, WG>;

@compute @workgroup_size(WG)
fn softcap_xent_count(@builtin(local_invocation_index) lid: u32) {
  var n = 0u;
  for (var r = lid; r < params.rows; r += WG) {
    n += select(1u, 0u, targets[params.targets_off + r] == -1);
  }
  red_count[lid] = n;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red_count[lid] += red_count[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let count = f32(red_count[0]);
    stats[params.stats_off] = count;
    stats[params.stats_off + 1u] = 1.0 / max(count, 1.0);
  }
}
#endif

#if XENT
#if GRAD
@group(0) @binding(0) var<storage, read> targets: array<i32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> logits: array<T>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
#else
@group(0) @binding(0) var<storage, read> targets: array<i32>;
@group(0) @binding(1) var<storage, read> logits: array<T>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
#endif
@group(1) @binding(0) var<uniform> params: Params;

#if SUBGROUPS
#include "subgroup_reduce.wgsl"
#else
var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;
#endif

// A quiet NaN made at run time (a NaN constant is a WGSL compile error): the loss of a bad target.
fn runtime_nan(zero: u32) -> f32 {
  return bitcast<f32>(0x7fc00000u | zero);
}

@compute @workgroup_size(WG)
fn softcap_xent_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = flat_workgroup(wg, nwg);
  if (row >= params.rows) { return; } // uniform per workgroup: barriers below stay uniform
  let V = params.cols;
  let base = params.logits_off + row * V;
  let tgt = targets[params.targets_off + row]; // (`target` is a WGSL reserved word)
  let ignored = tgt == -1;
  let valid = tgt >= 0 && u32(tgt) < V;
  // the thread that meets the target in its stride owns the loss; thread 0 for ignored/bad rows
  let owner = select(0u, u32(tgt) % WG, valid);

  var m = -FLT_MAX;
  var s = 0.0;
  var c_target = 0.0;
  for (var j = lid; j < V; j += WG) {
    let c = capped(f32(logits[base + j]));
    if (c > m) {
      s = s * exp(m - c) + 1.0;
      m = c;
    } else {
      s += exp(c - m);
    }
    if (valid && j == u32(tgt)) { c_target = c; }
  }
#if SUBGROUPS
  // subgroup reductions: the row max, then every thread's sum rescaled to it
  let row_max = wg_max(m, lid);
  let row_sum = wg_sum(s * exp(m - row_max), lid);
#else
  red_max[lid] = m;
  red_sum[lid] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      let ma = red_max[lid];
      let mb = red_max[lid + stride];
      let mm = max(ma, mb);
      red_sum[lid] = red_sum[lid] * exp(ma - mm) + red_sum[lid + stride] * exp(mb - mm);
      red_max[lid] = mm;
    }
    workgroupBarrier();
  }
  let row_max = red_max[0];
  let row_sum = red_sum[0];
#endif
  if (lid == owner) {
    var l = 0.0;
    if (valid) {
      l = (row_max - c_target) + log(row_sum); // this order is exact for large equal logits
    } else if (!ignored) {
      l = runtime_nan(lid & 0u);
    }
    loss[params.loss_off + row] = l;
  }

#if GRAD
  // dz = (softmax(c) − onehot) · dc/dz · alpha / count; ignored (and bad) rows get zeros
  let scale = select(params.alpha * stats[params.stats_off + 1u], 0.0, !valid);
  let inv_sum = 1.0 / row_sum;
  for (var j = lid; j < V; j += WG) {
    let z = f32(logits[base + j]);
    var c = z;
    var dc_dz = 1.0;
    if (params.softcap != 0.0) {
      let t = cap_tanh(z);
      c = params.softcap * t;
      dc_dz = 1.0 - t * t;
    }
    let p = exp(c - row_max) * inv_sum;
    let g = p - select(0.0, 1.0, valid && j == u32(tgt));
    logits[base + j] = T(g * dc_dz * scale);
  }
#endif
}
#endif

#if SOFTCAP
@group(0) @binding(0) var<storage, read_write> logits: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn softcap_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wg, nwg) * WG + lid;
  if (i >= params.rows * params.cols) { return; }
  let j = params.logits_off + i;
  logits[j] = T(capped(f32(logits[j])));
}
#endif
