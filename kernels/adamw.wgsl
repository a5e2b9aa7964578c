// adamw_step: one fused AdamW step in place on p, m, v; ref adamwStepRef (src/ops/adamw.ts).
//   p ← p·(1 − lr·wd);  m ← lerp(m, g, 1 − β1);  v ← lerp(v, g², 1 − β2)
//   p ← p − (lr / (1 − β1^t)) · m / (sqrt(v / (1 − β2^t)) + eps)
// Same order of operations as the reference's adamw_step_fused. The host folds the schedule into
// Params each step (decay = 1 − lr·wd, step_size = lr / bias1, bias2), so nothing recompiles.
// One thread per element; grid from grid1d(ceil(n / WG)). Offsets and n are in elements.
// Numerics: f32 arithmetic on T storage; lerp uses torch's two-sided formula.
#include "common.wgsl"

struct Params {
  n: u32,
  p_off: u32,
  g_off: u32,
  m_off: u32,
  v_off: u32,
  decay: f32,     // 1 − lr·wd
  w1: f32,        // 1 − β1 (lerp weight of m toward g)
  w2: f32,        // 1 − β2 (lerp weight of v toward g²)
  step_size: f32, // lr / (1 − β1^t)
  bias2: f32,     // 1 − β2^t
  eps: f32,
}

@group(0) @binding(0) var<storage, read> g: array<T>;
@group(0) @binding(1) var<storage, read_write> p: array<T>;
@group(0) @binding(2) var<storage, read_write> m: array<T>;
@group(0) @binding(3) var<storage, read_write> v: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

override WG: u32 = 256;

// torch.lerp: start + w·(end − start) for w < 0.5, else end − (end − start)·(1 − w)
fn lerp_torch(start: f32, end: f32, w: f32) -> f32 {
  if (w < 0.5) {
    return start + w * (end - start);
  }
  return end - (end - start) * (1.0 - w);
}

@compute @workgroup_size(WG)
fn adamw_step(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wg, nwg) * WG + lid;
  if (i >= params.n) { return; }
  let gi = f32(g[params.g_off + i]);
  let m_new = lerp_torch(f32(m[params.m_off + i]), gi, params.w1);
  let v_new = lerp_torch(f32(v[params.v_off + i]), gi * gi, params.w2);
  m[params.m_off + i] = T(m_new);
  v[params.v_off + i] = T(v_new);
  let denom = sqrt(v_new / params.bias2) + params.eps;
  let p_decayed = f32(p[params.p_off + i]) * params.decay;
  p[params.p_off + i] = T(p_decayed - params.step_size * (m_new / denom));
}
