// subgroup_reduce.wgsl: workgroup-wide sum and max on subgroups (`#include` under #if SUBGROUPS; the
// loader adds `enable subgroups;`). Every invocation of the workgroup must call these in uniform
// control flow and gets the result. Nothing is assumed about the subgroup size (8 on lavapipe, 32 on
// NVIDIA and Apple, 32 or 64 on AMD) nor about which invocations share a subgroup: each subgroup
// reduces with one subgroup operation and parks its result in the slot of its lowest invocation
// index (subgroupMin(lid)); then every subgroup sums the WG slots, its active lanes striding by
// their count, and reduces once more. One barrier pair instead of log2(WG) tree steps. The order of
// the final sums depends only on the hardware's subgroup layout: deterministic run to run.
// Needs `override WG` (the workgroup's invocation count) declared before the include.

var<workgroup> sg_slots: array<f32, WG>;

fn wg_reduce(s: f32, lid: u32, identity: f32, is_max: bool) -> f32 {
  let leader = subgroupMin(lid);
  sg_slots[lid] = select(identity, s, lid == leader);
  workgroupBarrier();
  let rank = subgroupExclusiveAdd(1u);
  let lanes = subgroupAdd(1u);
  var t = identity;
  for (var i = rank; i < WG; i += lanes) {
    if (is_max) { t = max(t, sg_slots[i]); } else { t += sg_slots[i]; }
  }
  var total: f32;
  if (is_max) { total = subgroupMax(t); } else { total = subgroupAdd(t); }
  workgroupBarrier(); // the slots are free for the next call
  return total;
}

fn wg_sum(v: f32, lid: u32) -> f32 {
  return wg_reduce(subgroupAdd(v), lid, 0.0, false);
}

fn wg_max(v: f32, lid: u32) -> f32 {
  return wg_reduce(subgroupMax(v), lid, -0x1.fffffep+127f, true);
}
