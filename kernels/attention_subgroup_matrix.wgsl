// attention_subgroup_matrix: flash attention forward and backward with every matrix product on
// subgroup matrices (tensor cores: f16 inputs, f32 accumulation) and the softmax in f32.
// Same maths, layouts, mask and outputs as attention_fwd.wgsl / attention_bwd.wgsl (refs
// attentionRef, attentionBwdRef in src/ops/attention.ts): q, y, dy [B, T, H, D] f16; k, v
// [B, T, HKV, D] f16; lse, delta [B, H, T] f32; query i sees key j iff i − window ≤ j ≤ i.
//
// The host (src/ops/attention_subgroup_matrix.ts) prepends the fragment layer of
// src/gpu/subgroup_matrix.ts: FRAG_M, FRAG_N, FRAG_K (the logical shape: 16×16×16 or 16×8×16 on
// NVIDIA, 8×8×8 on Apple and lavapipe), FRAG_SUBGROUP (workgroup x sizes are multiples of it),
// frag_left (M×K f16), frag_right (K×N f16), frag_acc (M×N f32), frag_zero, frag_mma, and the loads
// sm_load_left (row-major), sm_load_right_row, sm_load_right_col (a transposed operand) from `smem_h`,
// sm_store_acc / sm_load_acc (row-major) on `smem_f`. Its test mode builds NVIDIA's shapes out of
// native 8×8×8 pieces in 32-lane workgroups, so this file runs at those shapes on lavapipe. The
// host also sets NSG (subgroups doing matrix work), D, the streamed tile (BC or BQ) and OC (output
// columns staged at a time).
//
// What Dawn's subgroup matrices do not allow, and the workaround: a fragment's elements cannot be
// read or written, and fragment operations must sit in subgroup-uniform control flow with uniform
// offsets. So the score fragment goes to workgroup memory (f32), lanes of the owning subgroup do
// the softmax there and write P (or dS) back as f16, which is reloaded as a left operand. Per-row
// rescaling of the output fragments is done lazily: a row's reference max only moves when the new
// max exceeds it by more than TAU (log2 units, P ≤ 2^TAU stays exact in f32 and fine in f16), so
// the store → scale → reload round trip of the output through workgroup memory is rare; the
// decision is made workgroup-uniform (workgroupUniformLoad) because fragment code cannot branch on
// per-lane values. Outputs leave through workgroup memory too (normalise by l, convert to f16).
//
// Subgroups: the workgroup is NSG·FRAG_SUBGROUP invocations; subgroup `sg` < NSG owns FRAG_M rows
// (query rows in FWD/DQ, key rows in DKV). Where the adapter runs smaller subgroups than
// FRAG_SUBGROUP (AMD's wave32 under a max of 64; the emulation on lavapipe), the extra subgroups
// only help stage tiles. Within a subgroup, sgs / min(sgs, FRAG_M) lanes share a row (reductions by
// subgroupShuffleXor); with fewer lanes than rows a lane takes several rows.
//
// Entry points (one per define):
//   FWD attention_sm_fwd: grid (ceil(T / BR), H, B), BR = NSG·FRAG_M query rows; Q fragments and the
//       output accumulators stay in registers; K and V tiles of BC keys stream through smem_h.
//   DQ  attention_sm_dq: grid (ceil(T / BR), H, B); per key tile S = Q·Kᵀ and dP = dO·Vᵀ, then
//       dS = P ⊙ (dP − delta) in f32 → f16, dQ += dS·K.
//   DKV attention_sm_dkv: grid (ceil(T / BR), HKV, B), BR key rows per workgroup; per query head of
//       the group and per tile of BQ queries: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ and dSᵀ (f16), then
//       dV += Pᵀ·dO and dK += dSᵀ·Q. Computing the transposed scores avoids a transpose.
//   (delta = rowsum(dO ⊙ O) comes from attention_bwd.wgsl's DELTA kernel.)
enable subgroups;
enable chromium_experimental_subgroup_matrix;

struct Params {
  seq: u32,        // T
  n_head: u32,     // H
  n_kv_head: u32,  // HKV
  window: u32,     // left window, clamped to T by the host
  scale_log2: f32, // log2(e) / sqrt(D)
  scale: f32,      // 1 / sqrt(D)
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

const WG: u32 = NSG * FRAG_SUBGROUP;
const BR: u32 = NSG * FRAG_M;     // resident rows per workgroup
const NEG_BIG: f32 = -3.0e38;   // "no visible score yet"; never fed to exp2
const TAU: f32 = 8.0;           // lazy-rescale threshold (log2 units)
const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;
// Padded row strides, so that fragment loads and stores of consecutive rows start in different
// banks (and rows stay 16-byte aligned, as cooperative-matrix loads need): f16 rows +8, f32 rows +4.
const DP: u32 = D + 8u;   // staged q, k, v, dy rows
const OCP: u32 = OC + 4u; // output chunks (f32)

#if VEC4
alias TV = vec4<T>; // inputs staged 8 bytes per load (host: element offsets multiples of 4)
#else
alias TV = T;
#endif
@group(0) @binding(0) var<storage, read> q: array<TV>;
@group(0) @binding(1) var<storage, read> k: array<TV>;
@group(0) @binding(2) var<storage, read> v: array<TV>;
#if FWD
@group(0) @binding(3) var<storage, read_write> y: array<T>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
#else
@group(0) @binding(3) var<storage, read> dy: array<TV>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
#endif
#if DQ
@group(0) @binding(6) var<storage, read_write> dq: array<T>;
#endif
#if DKV
@group(0) @binding(6) var<storage, read_write> dk: array<T>;
@group(0) @binding(7) var<storage, read_write> dv: array<T>;
#endif
@group(1) @binding(0) var<uniform> params: Params;

fn visible(i: u32, j: u32) -> bool {
  return j <= i && i <= j + params.window && i < params.seq;
}

// Copies `rows` rows of D elements, starting at row `r0` of a [.., T, heads, D] tensor, into
// smem_h[dst ..] (row stride DP); rows at or past T become zeros. `base` and `row_stride` count
// elements (multiples of 4: D is).
fn stage_rows(lid: u32, dst: u32, rows: u32, r0: u32, base: u32, row_stride: u32, which: u32) {
#if VEC4
  const D4 = D / 4u;
  for (var e = lid; e < rows * D4; e += WG) {
    let r = r0 + e / D4;
    var x = vec4<f16>(0.0h);
    if (r < params.seq) {
      let a = (base + r * row_stride) / 4u + e % D4;
      switch (which) {
        case 0u: { x = vec4<f16>(q[params.q_off / 4u + a]); }
        case 1u: { x = vec4<f16>(k[params.k_off / 4u + a]); }
        case 2u: { x = vec4<f16>(v[params.v_off / 4u + a]); }
#if FWD
        default: { }
#else
        default: { x = vec4<f16>(dy[params.dy_off / 4u + a]); }
#endif
      }
    }
    let o = dst + (e / D4) * DP + 4u * (e % D4);
    smem_h[o] = x.x;
    smem_h[o + 1u] = x.y;
    smem_h[o + 2u] = x.z;
    smem_h[o + 3u] = x.w;
  }
#else
  for (var e = lid; e < rows * D; e += WG) {
    let r = r0 + e / D;
    var x = 0.0h;
    if (r < params.seq) {
      let a = base + r * row_stride + e % D;
      switch (which) {
        case 0u: { x = f16(q[params.q_off + a]); }
        case 1u: { x = f16(k[params.k_off + a]); }
        case 2u: { x = f16(v[params.v_off + a]); }
#if FWD
        default: { }
#else
        default: { x = f16(dy[params.dy_off + a]); }
#endif
      }
    }
    smem_h[dst + (e / D) * DP + e % D] = x;
  }
#endif
}

#if FWD
// smem_h: K tile [BC×DP] | V tile [BC×DP] | P [BR×BP]; Q is staged once through the K|V region.
const BP: u32 = BC + 8u;
const SF: u32 = BC + 4u;
const H_K: u32 = 0u;
const H_V: u32 = BC * DP;
const H_P: u32 = 2u * BC * DP;
var<workgroup> smem_h: array<f16, 2u * BC * DP + BR * BP>;
// smem_f: S [BR×SF], reused for the output chunks [BR×OCP] (OC ≤ BC)
var<workgroup> smem_f: array<f32, BR * SF>;
var<workgroup> row_m: array<f32, BR>;     // reference max per row (base 2)
var<workgroup> row_l: array<f32, BR>;     // Σ P per row
var<workgroup> row_alpha: array<f32, BR>; // this tile's rescale factor per row
var<workgroup> rescale_any: atomic<u32>;
var<workgroup> rescale_now: u32;

@compute @workgroup_size(WG)
fn attention_sm_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32,
                    @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32) {
  let b = wg.z;
  let h = wg.y;
  let g = h / (params.n_head / params.n_kv_head);
  let i0 = (nwg.x - 1u - wg.x) * BR; // last blocks (most keys) first
  let works = sg < NSG;
  let r0 = min(sg, NSG - 1u) * FRAG_M; // this subgroup's first row in the block
  let row_span = min(sgs, FRAG_M);     // rows a lane pass covers
  let tpr = sgs / row_span;          // lanes per row
  let t = lane % tpr;

  stage_rows(lid, 0u, BR, i0, (b * params.seq * params.n_head + h) * D, params.n_head * D, 0u);
  for (var r = lid; r < BR; r += WG) { // BR may exceed the invocations (wide M, small subgroups)
    row_m[r] = NEG_BIG;
    row_l[r] = 0.0;
  }
  workgroupBarrier();
  var qf: array<frag_left, D / FRAG_K>;
  var o_acc: array<frag_acc, D / FRAG_N>;
  if (works) {
    for (var kk = 0u; kk < D / FRAG_K; kk++) { qf[kk] = sm_load_left(r0 * DP + kk * FRAG_K, DP); }
    for (var dn = 0u; dn < D / FRAG_N; dn++) { o_acc[dn] = frag_zero(); }
  }
  workgroupBarrier(); // Q's staging area becomes the K|V tiles

  let kv_base = (b * params.seq * params.n_kv_head + g) * D;
  let kv_stride = params.n_kv_head * D;
  let i_end = min(i0 + BR, params.seq);
  let j_begin = select(0u, i0 - params.window, i0 > params.window);
  for (var j0 = j_begin; j0 < i_end; j0 += BC) {
    stage_rows(lid, H_K, BC, j0, kv_base, kv_stride, 1u);
    stage_rows(lid, H_V, BC, j0, kv_base, kv_stride, 2u);
    workgroupBarrier();
    if (works) { // S = Q·Kᵀ for this subgroup's rows
      for (var nb = 0u; nb < BC / FRAG_N; nb++) {
        var s = frag_zero();
        for (var kk = 0u; kk < D / FRAG_K; kk++) {
          s = frag_mma(qf[kk], sm_load_right_col(H_K + nb * FRAG_N * DP + kk * FRAG_K, DP), s);
        }
        sm_store_acc(r0 * SF + nb * FRAG_N, SF, s);
      }
    }
    workgroupBarrier();
    if (works) { // online softmax on the staged scores, f32
      for (var rp = 0u; rp < FRAG_M / row_span; rp++) { // uniform trip count: shuffles inside
        let row = r0 + rp * row_span + lane / tpr;
        let i = i0 + row;
        var mx = NEG_BIG;
        for (var c = t; c < BC; c += tpr) {
          if (visible(i, j0 + c)) { mx = max(mx, smem_f[row * SF + c] * params.scale_log2); }
        }
        for (var o = 1u; o < tpr; o <<= 1u) { mx = max(mx, subgroupShuffleXor(mx, o)); }
        let m_old = row_m[row];
        var m_use = m_old;
        var alpha = 1.0;
        if (m_old == NEG_BIG) {
          m_use = mx; // nothing accumulated yet: no rescale needed
        } else if (mx > m_old + TAU) {
          m_use = mx;
          alpha = exp2(m_old - mx);
        }
        var l_tile = 0.0;
        for (var c = t; c < BC; c += tpr) {
          var p = 0.0h;
          if (visible(i, j0 + c)) { p = f16(exp2(smem_f[row * SF + c] * params.scale_log2 - m_use)); }
          smem_h[H_P + row * BP + c] = p;
          l_tile += f32(p); // the rounded weights PV uses: y stays an exact convex combination
        }
        for (var o = 1u; o < tpr; o <<= 1u) { l_tile += subgroupShuffleXor(l_tile, o); }
        if (t == 0u) {
          row_m[row] = m_use;
          row_l[row] = row_l[row] * alpha + l_tile;
          row_alpha[row] = alpha;
          if (alpha != 1.0) { atomicOr(&rescale_any, 1u); }
        }
      }
    }
    workgroupBarrier();
    if (lid == 0u) { rescale_now = atomicExchange(&rescale_any, 0u); }
    if (workgroupUniformLoad(&rescale_now) != 0u) { // rare: O ← diag(alpha)·O through smem_f
      for (var c0 = 0u; c0 < D; c0 += OC) {
        if (works) {
          for (var dn = c0 / FRAG_N; dn < (c0 + OC) / FRAG_N; dn++) { sm_store_acc(r0 * OCP + dn * FRAG_N - c0, OCP, o_acc[dn]); }
        }
        workgroupBarrier();
        for (var e = lid; e < BR * OC; e += WG) { smem_f[(e / OC) * OCP + e % OC] *= row_alpha[e / OC]; }
        workgroupBarrier();
        if (works) {
          for (var dn = c0 / FRAG_N; dn < (c0 + OC) / FRAG_N; dn++) { o_acc[dn] = sm_load_acc(r0 * OCP + dn * FRAG_N - c0, OCP); }
        }
        workgroupBarrier();
      }
    }
    if (works) { // O += P·V
      for (var kc = 0u; kc < BC / FRAG_K; kc++) {
        let pl = sm_load_left(H_P + r0 * BP + kc * FRAG_K, BP);
        for (var dn = 0u; dn < D / FRAG_N; dn++) {
          o_acc[dn] = frag_mma(pl, sm_load_right_row(H_V + kc * FRAG_K * DP + dn * FRAG_N, DP), o_acc[dn]);
        }
      }
    }
    workgroupBarrier(); // before the next tiles overwrite K, V and P
  }

  // y = O / l, OC columns at a time through smem_f; lse = (m + log2 l)·ln 2
  let y_base = params.y_off + (b * params.seq * params.n_head + h) * D;
  for (var c0 = 0u; c0 < D; c0 += OC) {
    if (works) {
      for (var dn = c0 / FRAG_N; dn < (c0 + OC) / FRAG_N; dn++) { sm_store_acc(r0 * OCP + dn * FRAG_N - c0, OCP, o_acc[dn]); }
    }
    workgroupBarrier();
    for (var e = lid; e < BR * OC; e += WG) {
      let row = e / OC;
      let i = i0 + row;
      if (i < params.seq) { y[y_base + i * params.n_head * D + c0 + e % OC] = T(smem_f[row * OCP + e % OC] / row_l[row]); }
    }
    workgroupBarrier();
  }
  for (var r = lid; r < BR; r += WG) {
    if (i0 + r < params.seq) { lse[params.lse_off + (b * params.n_head + h) * params.seq + i0 + r] = (row_m[r] + log2(row_l[r])) * LN2; }
  }
}
#endif

#if DQ
// smem_h: K tile [BC×DP] | V tile [BC×DP] | dS [BR×BP]; Q, then dO, are staged through K|V first.
const BP: u32 = BC + 8u;
const SF: u32 = BC + 4u;
const H_K: u32 = 0u;
const H_V: u32 = BC * DP;
const H_DS: u32 = 2u * BC * DP;
var<workgroup> smem_h: array<f16, 2u * BC * DP + BR * BP>;
// smem_f: S [BR×SF] | dP [BR×SF]; the dq output chunks reuse it
const F_DP: u32 = BR * SF;
var<workgroup> smem_f: array<f32, 2u * BR * SF>;
var<workgroup> row_lse2: array<f32, BR>;
var<workgroup> row_delta: array<f32, BR>;

@compute @workgroup_size(WG)
fn attention_sm_dq(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
  let b = wg.z;
  let h = wg.y;
  let g = h / (params.n_head / params.n_kv_head);
  let i0 = (nwg.x - 1u - wg.x) * BR;
  let works = sg < NSG;
  let r0 = min(sg, NSG - 1u) * FRAG_M;
  let q_base = (b * params.seq * params.n_head + h) * D;
  let q_stride = params.n_head * D;

  for (var row = lid; row < BR; row += WG) {
    let i = i0 + row;
    var l2 = 0.0;
    var dl = 0.0;
    if (i < params.seq) {
      let r = (b * params.n_head + h) * params.seq + i;
      l2 = lse[params.lse_off + r] * LOG2E;
      dl = delta[params.delta_off + r];
    }
    row_lse2[row] = l2;
    row_delta[row] = dl;
  }
  var qf: array<frag_left, D / FRAG_K>;
  var dof: array<frag_left, D / FRAG_K>;
  var dqf: array<frag_acc, D / FRAG_N>;
  stage_rows(lid, 0u, BR, i0, q_base, q_stride, 0u);
  stage_rows(lid, BR * DP, BR, i0, q_base, q_stride, 3u);
  workgroupBarrier();
  if (works) {
    for (var kk = 0u; kk < D / FRAG_K; kk++) {
      qf[kk] = sm_load_left(r0 * DP + kk * FRAG_K, DP);
      dof[kk] = sm_load_left(BR * DP + r0 * DP + kk * FRAG_K, DP);
    }
    for (var dn = 0u; dn < D / FRAG_N; dn++) { dqf[dn] = frag_zero(); }
  }
  workgroupBarrier();

  let kv_base = (b * params.seq * params.n_kv_head + g) * D;
  let kv_stride = params.n_kv_head * D;
  let i_end = min(i0 + BR, params.seq);
  let j_begin = select(0u, i0 - params.window, i0 > params.window);
  for (var j0 = j_begin; j0 < i_end; j0 += BC) {
    stage_rows(lid, H_K, BC, j0, kv_base, kv_stride, 1u);
    stage_rows(lid, H_V, BC, j0, kv_base, kv_stride, 2u);
    workgroupBarrier();
    if (works) { // S = Q·Kᵀ, dP = dO·Vᵀ
      for (var nb = 0u; nb < BC / FRAG_N; nb++) {
        var s = frag_zero();
        var dp = frag_zero();
        for (var kk = 0u; kk < D / FRAG_K; kk++) {
          s = frag_mma(qf[kk], sm_load_right_col(H_K + nb * FRAG_N * DP + kk * FRAG_K, DP), s);
          dp = frag_mma(dof[kk], sm_load_right_col(H_V + nb * FRAG_N * DP + kk * FRAG_K, DP), dp);
        }
        sm_store_acc(r0 * SF + nb * FRAG_N, SF, s);
        sm_store_acc(F_DP + r0 * SF + nb * FRAG_N, SF, dp);
      }
    }
    workgroupBarrier();
    for (var e = lid; e < BR * BC; e += WG) { // dS = P ⊙ (dP − delta), f32 → f16
      let row = e / BC;
      let c = e % BC;
      var ds = 0.0;
      if (visible(i0 + row, j0 + c)) {
        let p = exp2(smem_f[row * SF + c] * params.scale_log2 - row_lse2[row]);
        ds = p * (smem_f[F_DP + row * SF + c] - row_delta[row]);
      }
      smem_h[H_DS + row * BP + c] = f16(ds);
    }
    workgroupBarrier();
    if (works) { // dQ += dS·K
      for (var kc = 0u; kc < BC / FRAG_K; kc++) {
        let dsl = sm_load_left(H_DS + r0 * BP + kc * FRAG_K, BP);
        for (var dn = 0u; dn < D / FRAG_N; dn++) {
          dqf[dn] = frag_mma(dsl, sm_load_right_row(H_K + kc * FRAG_K * DP + dn * FRAG_N, DP), dqf[dn]);
        }
      }
    }
    workgroupBarrier();
  }

  for (var c0 = 0u; c0 < D; c0 += OC) {
    if (works) {
      for (var dn = c0 / FRAG_N; dn < (c0 + OC) / FRAG_N; dn++) { sm_store_acc(r0 * OCP + dn * FRAG_N - c0, OCP, dqf[dn]); }
    }
    workgroupBarrier();
    for (var e = lid; e < BR * OC; e += WG) {
      let i = i0 + e / OC;
      if (i < params.seq) { dq[params.dq_off + q_base + i * q_stride + c0 + e % OC] = T(smem_f[(e / OC) * OCP + e % OC] * params.scale); }
    }
    workgroupBarrier();
  }
}
#endif

#if DKV
// smem_h: Q tile [BQ×DP] | dO tile [BQ×DP] | Pᵀ [BR×BP] | dSᵀ [BR×BP]; K, V staged through Q|dO first.
const BP: u32 = BQ + 8u;
const SF: u32 = BQ + 4u;
const H_Q: u32 = 0u;
const H_DO: u32 = BQ * DP;
const H_PT: u32 = 2u * BQ * DP;
const H_DST: u32 = 2u * BQ * DP + BR * BP;
var<workgroup> smem_h: array<f16, 2u * BQ * DP + 2u * BR * BP>;
// smem_f: Sᵀ [BR×SF] | dPᵀ [BR×SF]; the dk, dv output chunks reuse it
const F_DPT: u32 = BR * SF;
var<workgroup> smem_f: array<f32, 2u * BR * SF>;
var<workgroup> col_lse2: array<f32, BQ>;
var<workgroup> col_delta: array<f32, BQ>;

@compute @workgroup_size(WG)
fn attention_sm_dkv(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
                    @builtin(subgroup_id) sg: u32) {
  let b = wg.z;
  let g = wg.y;
  let group = params.n_head / params.n_kv_head;
  let j0 = wg.x * BR;
  let works = sg < NSG;
  let r0 = min(sg, NSG - 1u) * FRAG_M;
  let kv_base = (b * params.seq * params.n_kv_head + g) * D;
  let kv_stride = params.n_kv_head * D;

  var kf: array<frag_left, D / FRAG_K>;
  var vf: array<frag_left, D / FRAG_K>;
  var dkf: array<frag_acc, D / FRAG_N>;
  var dvf: array<frag_acc, D / FRAG_N>;
  stage_rows(lid, 0u, BR, j0, kv_base, kv_stride, 1u);
  stage_rows(lid, BR * DP, BR, j0, kv_base, kv_stride, 2u);
  workgroupBarrier();
  if (works) {
    for (var kk = 0u; kk < D / FRAG_K; kk++) {
      kf[kk] = sm_load_left(r0 * DP + kk * FRAG_K, DP);
      vf[kk] = sm_load_left(BR * DP + r0 * DP + kk * FRAG_K, DP);
    }
    for (var dn = 0u; dn < D / FRAG_N; dn++) {
      dkf[dn] = frag_zero();
      dvf[dn] = frag_zero();
    }
  }
  workgroupBarrier();

  let j_last = min(j0 + BR, params.seq) - 1u;
  let i_end = min(params.seq, j_last + params.window + 1u);
  for (var hh = 0u; hh < group; hh++) {
    let h = g * group + hh;
    let q_base = (b * params.seq * params.n_head + h) * D;
    let q_stride = params.n_head * D;
    let lrow = (b * params.n_head + h) * params.seq;
    for (var i0 = j0; i0 < i_end; i0 += BQ) {
      stage_rows(lid, H_Q, BQ, i0, q_base, q_stride, 0u);
      stage_rows(lid, H_DO, BQ, i0, q_base, q_stride, 3u);
      for (var c = lid; c < BQ; c += WG) {
        let i = i0 + c;
        var l2 = 0.0;
        var dl = 0.0;
        if (i < params.seq) {
          l2 = lse[params.lse_off + lrow + i] * LOG2E;
          dl = delta[params.delta_off + lrow + i];
        }
        col_lse2[c] = l2;
        col_delta[c] = dl;
      }
      workgroupBarrier();
      if (works) { // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ
        for (var nb = 0u; nb < BQ / FRAG_N; nb++) {
          var st = frag_zero();
          var dpt = frag_zero();
          for (var kk = 0u; kk < D / FRAG_K; kk++) {
            st = frag_mma(kf[kk], sm_load_right_col(H_Q + nb * FRAG_N * DP + kk * FRAG_K, DP), st);
            dpt = frag_mma(vf[kk], sm_load_right_col(H_DO + nb * FRAG_N * DP + kk * FRAG_K, DP), dpt);
          }
          sm_store_acc(r0 * SF + nb * FRAG_N, SF, st);
          sm_store_acc(F_DPT + r0 * SF + nb * FRAG_N, SF, dpt);
        }
      }
      workgroupBarrier();
      for (var e = lid; e < BR * BQ; e += WG) { // Pᵀ and dSᵀ, f32 → f16
        let r = e / BQ;
        let c = e % BQ;
        var p = 0.0;
        var ds = 0.0;
        if (visible(i0 + c, j0 + r)) {
          p = exp2(smem_f[r * SF + c] * params.scale_log2 - col_lse2[c]);
          ds = p * (smem_f[F_DPT + r * SF + c] - col_delta[c]);
        }
        smem_h[H_PT + r * BP + c] = f16(p);
        smem_h[H_DST + r * BP + c] = f16(ds);
      }
      workgroupBarrier();
      if (works) { // dV += Pᵀ·dO, dK += dSᵀ·Q
        for (var kc = 0u; kc < BQ / FRAG_K; kc++) {
          let pl = sm_load_left(H_PT + r0 * BP + kc * FRAG_K, BP);
          let dsl = sm_load_left(H_DST + r0 * BP + kc * FRAG_K, BP);
          for (var dn = 0u; dn < D / FRAG_N; dn++) {
            dvf[dn] = frag_mma(pl, sm_load_right_row(H_DO + kc * FRAG_K * DP + dn * FRAG_N, DP), dvf[dn]);
            dkf[dn] = frag_mma(dsl, sm_load_right_row(H_Q + kc * FRAG_K * DP + dn * FRAG_N, DP), dkf[dn]);
          }
        }
      }
      workgroupBarrier();
    }
  }

  for (var c0 = 0u; c0 < D; c0 += OC) {
    if (works) {
      for (var dn = c0 / FRAG_N; dn < (c0 + OC) / FRAG_N; dn++) {
        sm_store_acc(r0 * OCP + dn * FRAG_N - c0, OCP, dkf[dn]);
        sm_store_acc(BR * OCP + r0 * OCP + dn * FRAG_N - c0, OCP, dvf[dn]);
      }
    }
    workgroupBarrier();
    for (var e = lid; e < BR * OC; e += WG) {
      let j = j0 + e / OC;
      if (j < params.seq) {
        let a = kv_base + j * kv_stride + c0 + e % OC;
        let sa = (e / OC) * OCP + e % OC;
        dk[params.dk_off + a] = T(smem_f[sa] * params.scale);
        dv[params.dv_off + a] = T(smem_f[BR * OCP + sa]);
      }
    }
    workgroupBarrier();
  }
}
#endif
