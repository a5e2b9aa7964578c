// attention_fwd: y = softmax(q·kᵀ / sqrt(D) + causal window mask) · v per (batch, query head),
// flash-style (online softmax, no T×T buffer), plus lse = the row's logsumexp (natural log, f32)
// that the backward recomputes probabilities from. Ref attentionRef (src/ops/attention.ts).
//
// Layouts (row-major; element offsets in Params): q, y [B, T, H, D]; k, v [B, T, HKV, D];
// lse [B, H, T]. Query head h reads kv head h / (H / HKV); query i sees key j iff i − window ≤ j ≤ i.
// D = 4·DC (the wrapper asserts D % 4 == 0, D ≤ 128).
//
// Grid (ceil(T / BR), H, B). One workgroup = BR query rows of one (b, h), BR·TPR threads.
// Thread (row, t) keeps its row's q (pre-scaled by scale·log2 e) and output accumulator in
// registers, restricted to the vec4 chunks c ≡ t (mod TPR) of the head dim: interleaving makes the
// TPR threads of a row read adjacent workgroup-memory words while rows broadcast.
// Per tile of BC keys: K tile → workgroup memory; each thread's partial dot products → workgroup
// memory, summed per row over its TPR threads; online-softmax update in base 2; V tile (reusing the
// K buffer) → acc = acc·α + p·v. Key tiles run from max(0, i0 − window) to the block's last row, so
// tiles wholly outside the window are never visited. Blocks run last-first (most keys first).
// Numerics: f32 throughout; masked scores contribute exactly 0 (select, never exp of a sentinel).
// Workgroup memory: BC·D·4 + BC·BR·TPR·4 bytes (D = 128, BR 32, BC 16, TPR 4: 16 KiB).

struct Params {
  seq: u32,        // T
  n_head: u32,     // H
  n_kv_head: u32,  // HKV
  window: u32,     // left window, clamped to T by the host
  scale_log2: f32, // log2(e) / sqrt(D)
  q_off: u32,
  k_off: u32,
  v_off: u32,
  y_off: u32,
  lse_off: u32,
}

@group(0) @binding(0) var<storage, read> q: array<T>;
@group(0) @binding(1) var<storage, read> k: array<T>;
@group(0) @binding(2) var<storage, read> v: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

override BR: u32 = 32u;                      // query rows per workgroup
override BC: u32 = 16u;                      // keys per tile (≤ MAX_BC)
override TPR: u32 = 4u;                      // threads per query row
override DC: u32 = 32u;                      // vec4 chunks per head (D / 4)
override CPT: u32 = (DC + TPR - 1u) / TPR;   // chunks per thread (≤ MAX_CPT)

const MAX_CPT: u32 = 8u;
const MAX_BC: u32 = 32u;
const LN2: f32 = 0.6931471805599453;
const NEG_BIG: f32 = -1e30;

var<workgroup> kv_tile: array<vec4<f32>, BC * DC>;
var<workgroup> partial: array<f32, BC * BR * TPR>; // [key][row][t]: writes are lane-contiguous

fn load_q(a: u32) -> vec4<f32> {
  return vec4<f32>(f32(q[a]), f32(q[a + 1u]), f32(q[a + 2u]), f32(q[a + 3u]));
}
fn load_k(a: u32) -> vec4<f32> {
  return vec4<f32>(f32(k[a]), f32(k[a + 1u]), f32(k[a + 2u]), f32(k[a + 3u]));
}
fn load_v(a: u32) -> vec4<f32> {
  return vec4<f32>(f32(v[a]), f32(v[a + 1u]), f32(v[a + 2u]), f32(v[a + 3u]));
}

fn visible(i: u32, j: u32) -> bool {
  return j <= i && i <= j + params.window;
}

// Cooperative copy of keys/values j0 .. j0+BC-1 of one kv head into kv_tile (zeros past T).
fn load_tile(lid: u32, j0: u32, base: u32, use_v: bool) {
  let kv_row = params.n_kv_head * DC * 4u;
  for (var e = lid; e < BC * DC; e += BR * TPR) {
    let j = j0 + e / DC;
    var x = vec4<f32>(0.0);
    if (j < params.seq) {
      let a = base + j * kv_row + 4u * (e % DC);
      if (use_v) { x = load_v(params.v_off + a); } else { x = load_k(params.k_off + a); }
    }
    kv_tile[e] = x;
  }
}

@compute @workgroup_size(BR * TPR)
fn attention_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
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
  var acc: array<vec4<f32>, MAX_CPT>;
  let q_row = params.q_off + ((b * params.seq + i) * params.n_head + h) * D;
  for (var m = 0u; m < CPT; m++) {
    let c = t + m * TPR;
    var x = vec4<f32>(0.0);
    if (row_ok && c < DC) { x = load_q(q_row + 4u * c); }
    qr[m] = x * params.scale_log2;
    acc[m] = vec4<f32>(0.0);
  }
  var m_run = NEG_BIG; // running max of visible scores (base 2)
  var l_run = 0.0;     // running Σ exp2(s − m_run)

  let kv_base = (b * params.seq * params.n_kv_head + g) * D;
  let i_end = min(i0 + BR, params.seq);
  let j_begin = select(0u, i0 - params.window, i0 > params.window);
  for (var j0 = j_begin; j0 < i_end; j0 += BC) {
    load_tile(lid, j0, kv_base, false);
    workgroupBarrier();
    for (var jj = 0u; jj < BC; jj++) {
      var s = 0.0;
      for (var m = 0u; m < CPT; m++) {
        let c = t + m * TPR;
        if (c < DC) { s += dot(qr[m], kv_tile[jj * DC + c]); }
      }
      partial[(jj * BR + row) * TPR + t] = s;
    }
    workgroupBarrier();
    load_tile(lid, j0, kv_base, true); // K reads are done: V takes its place

    var p: array<f32, MAX_BC>;
    var m_new = m_run;
    for (var jj = 0u; jj < BC; jj++) {
      var s = 0.0;
      for (var u = 0u; u < TPR; u++) { s += partial[(jj * BR + row) * TPR + u]; }
      p[jj] = s;
      if (visible(i, j0 + jj)) { m_new = max(m_new, s); }
    }
    let alpha = exp2(m_run - m_new);
    var l_tile = 0.0;
    for (var jj = 0u; jj < BC; jj++) {
      let e = select(0.0, exp2(p[jj] - m_new), visible(i, j0 + jj));
      p[jj] = e;
      l_tile += e;
    }
    l_run = l_run * alpha + l_tile;
    m_run = m_new;
    workgroupBarrier();
    for (var m = 0u; m < CPT; m++) {
      let c = t + m * TPR;
      if (c < DC) {
        var a = acc[m] * alpha;
        for (var jj = 0u; jj < BC; jj++) { a += p[jj] * kv_tile[jj * DC + c]; }
        acc[m] = a;
      }
    }
    workgroupBarrier(); // before the next K tile overwrites V
  }

  if (row_ok) {
    let inv = 1.0 / l_run; // l_run ≥ 1: key i itself is always visible
    let y_row = params.y_off + ((b * params.seq + i) * params.n_head + h) * D;
    for (var m = 0u; m < CPT; m++) {
      let c = t + m * TPR;
      if (c < DC) {
        let o = acc[m] * inv;
        let a = y_row + 4u * c;
        y[a] = T(o.x);
        y[a + 1u] = T(o.y);
        y[a + 2u] = T(o.z);
        y[a + 3u] = T(o.w);
      }
    }
    if (t == 0u) {
      lse[params.lse_off + (b * params.n_head + h) * params.seq + i] = (m_run + log2(l_run)) * LN2;
    }
  }
}
