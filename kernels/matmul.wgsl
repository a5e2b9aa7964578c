// matmul: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b], f32 accumulation. Ref gemmRef / matmulRef.
// Operands are addressed by strides (in elements), so transposes, batch broadcast (stride 0) and
// row-strided slices (lda, ldb, ldc) need no copies: op(A)[m, k] = A[a_off + b*a_sb + m*a_sm + k*a_sk],
// op(B)[k, n] = B[b_off + b*b_sb + k*b_sk + n*b_sn], C[m, n] = C[c_off + b*c_sb + m*c_sm + n].
// beta = 0 never reads C (garbage in a fresh buffer stays out of the result).
// Bindings: a, b (read), c (read_write; f32 partial slabs under SPLIT_K); SPLIT_REDUCE: partial, c.
//
// matmul_naive: one thread per element of C; grid (ceil(N/16), ceil(M/16), batch). Small or skinny sizes.
//
// matmul_tiled: a TILE_M x TILE_N block of C per workgroup; grid (ceil(N/TILE_N), ceil(M/TILE_M),
//   batch * splits). The K loop walks TILE_K-deep slabs of A and B through workgroup memory, stored
//   k-major ([k][m], [k][n], rows padded by one vec4 so transposed stores spread over the banks), and
//   prefetches the next slab into registers while computing the current one. Each thread owns
//   GROUPS_M x GROUPS_N blocks of 4x4 outputs, a tile/GROUPS apart (thread (tx, ty) owns rows
//   g*THREADS_M*4 + ty*4 + [0,4) and columns h*THREADS_N*4 + tx*4 + [0,4)), so the inner loop reads
//   GROUPS_M + GROUPS_N vec4s from workgroup memory per 16*GROUPS_M*GROUPS_N FMAs, conflict-free
//   (a warp's 16 tx read 16 consecutive vec4s; its two ty broadcast).
//   Global loads are coalesced along whichever index of the operand has stride 1 (the defines below).
//   Variants (host: src/ops/matmul.ts TILED_CONFIGS):
//     tiled128 (BLOCK_8X8): 128x128x8 tile, 256 threads, 8x8 outputs each, 4+4 loads per slab, 8.25 KiB.
//     tiled64:              64x64x16 tile,  256 threads, 4x4 outputs each, 4+4 loads per slab, 8.5 KiB.
//   Defines: A_T: A stored [K, M] (m has stride 1; else k does). B_T: B stored [N, K] (k has stride 1;
//   else n does). So NN = {}, NT = {B_T} (activations x weight^T), TN = {A_T} (weight gradients).
//   SPLIT_K: workgroup z = batch * splits + split sums K in [split*k_chunk, +k_chunk) and writes raw f32
//   partials to slab `split` of c (stride c_ss); matmul_split_reduce then applies alpha and beta.
//   Edges: loads outside M, N or the split's K range read as 0; stores outside M, N are skipped.
//
// matmul_split_reduce (SPLIT_REDUCE): C = alpha * sum over splits of the partials + beta * C; one
//   thread per element of C, grid1d(ceil(batch*M*N / WG)), coalesced along n.
// dtypes: A and B are T; C is T, or f32 with C_F32 (f16 operands, f32 result: weight gradients
// straight into f32 master gradients, with no f16 rounding or range limit on the sum over B·T rows).
#include "common.wgsl"

#if SPLIT_REDUCE
struct Params {
  total: u32,   // batch * M * N: elements per partial slab
  M: u32,
  N: u32,
  splits: u32,
  c_off: u32,
  c_sm: u32,
  c_sb: u32,
  alpha: f32,
  beta: f32,
}

#if C_F32
alias CT = f32;
#else
alias CT = T;
#endif
@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> c: array<CT>;
@group(1) @binding(0) var<uniform> params: Params;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn matmul_split_reduce(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wid, nwg) * WG + lid;
  if (i >= params.total) { return; }
  var s = 0.0;
  for (var split = 0u; split < params.splits; split++) {
    s += partial[split * params.total + i];
  }
  let n = i % params.N;
  let m = (i / params.N) % params.M;
  let batch = i / (params.N * params.M);
  let ci = params.c_off + batch * params.c_sb + m * params.c_sm + n;
  var v = params.alpha * s;
  if (params.beta != 0.0) { v += params.beta * f32(c[ci]); }
  c[ci] = CT(v);
}

#else
struct Params {
  M: u32,
  N: u32,
  K: u32,
  a_off: u32,
  a_sm: u32,
  a_sk: u32,
  a_sb: u32,
  b_off: u32,
  b_sk: u32,
  b_sn: u32,
  b_sb: u32,
  c_off: u32,
  c_sm: u32,    // ldc
  c_sb: u32,
  c_ss: u32,    // SPLIT_K: elements between partial slabs
  k_chunk: u32, // SPLIT_K: K per split (a multiple of TILE_K)
  splits: u32,  // 1 unless SPLIT_K
  alpha: f32,
  beta: f32,
}

#if SPLIT_K
alias CT = f32; // partial sums stay f32 whatever T is
#else
#if C_F32
alias CT = f32;
#else
alias CT = T;
#endif
#endif

@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<CT>;
@group(1) @binding(0) var<uniform> params: Params;

fn store_c(ci: u32, acc: f32) {
  var v = params.alpha * acc;
  if (params.beta != 0.0) { v += params.beta * f32(c[ci]); }
  c[ci] = CT(v);
}

@compute @workgroup_size(16, 16)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  let m = gid.y;
  let batch = gid.z;
  if (m >= params.M || n >= params.N) { return; }
  var a_i = params.a_off + batch * params.a_sb + m * params.a_sm;
  var b_i = params.b_off + batch * params.b_sb + n * params.b_sn;
  var acc = 0.0;
  for (var k = 0u; k < params.K; k++) {
    acc += f32(a[a_i]) * f32(b[b_i]);
    a_i += params.a_sk;
    b_i += params.b_sk;
  }
  store_c(params.c_off + batch * params.c_sb + m * params.c_sm + n, acc);
}

#if BLOCK_8X8
const GROUPS_M = 2u; // 4-row groups per thread
const GROUPS_N = 2u; // 4-column groups per thread
#else
const GROUPS_M = 1u;
const GROUPS_N = 1u;
#endif
const MAX_LOADS = 8u; // register prefetch slots per operand (host checks TILE*TILE_K/WG fits)

override TILE_M: u32 = 64u;
override TILE_N: u32 = 64u;
override TILE_K: u32 = 16u;
override THREADS_M: u32 = TILE_M / (4u * GROUPS_M);
override THREADS_N: u32 = TILE_N / (4u * GROUPS_N);
override WG: u32 = THREADS_M * THREADS_N;
override A_ROW: u32 = TILE_M / 4u + 1u; // vec4s per k-row of a_tile, +1 pad against bank conflicts
override B_ROW: u32 = TILE_N / 4u + 1u;
override LOADS_A: u32 = TILE_M * TILE_K / WG;
override LOADS_B: u32 = TILE_N * TILE_K / WG;

var<workgroup> a_tile: array<vec4<f32>, TILE_K * A_ROW>; // [k][m]
var<workgroup> b_tile: array<vec4<f32>, TILE_K * B_ROW>; // [k][n]

// Tile coordinates (k, m) of the e-th element a thread group loads: consecutive e run along the
// operand's stride-1 index, so neighbouring threads read neighbouring addresses.
fn a_coord(e: u32) -> vec2u {
#if A_T
  return vec2u(e / TILE_M, e % TILE_M);
#else
  return vec2u(e % TILE_K, e / TILE_K);
#endif
}

fn b_coord(e: u32) -> vec2u {
#if B_T
  return vec2u(e % TILE_K, e / TILE_K);
#else
  return vec2u(e / TILE_N, e % TILE_N);
#endif
}

fn load_a(base: u32, m0: u32, k0: u32, k_end: u32, e: u32) -> f32 {
  let t = a_coord(e);
  let k = k0 + t.x;
  let m = m0 + t.y;
  if (k >= k_end || m >= params.M) { return 0.0; }
#if A_T
  return f32(a[base + k * params.a_sk + m]);
#else
  return f32(a[base + m * params.a_sm + k]);
#endif
}

fn load_b(base: u32, n0: u32, k0: u32, k_end: u32, e: u32) -> f32 {
  let t = b_coord(e);
  let k = k0 + t.x;
  let n = n0 + t.y;
  if (k >= k_end || n >= params.N) { return 0.0; }
#if B_T
  return f32(b[base + n * params.b_sn + k]);
#else
  return f32(b[base + k * params.b_sk + n]);
#endif
}

@compute @workgroup_size(WG)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % THREADS_N;
  let ty = lid / THREADS_N;
  let m0 = wid.y * TILE_M;
  let n0 = wid.x * TILE_N;
  let batch = wid.z / params.splits;
  let split = wid.z % params.splits;
  let k_begin = min(split * params.k_chunk, params.K);
  let k_end = min(k_begin + params.k_chunk, params.K);
  let tiles = (k_end - k_begin + TILE_K - 1u) / TILE_K;
  let a_base = params.a_off + batch * params.a_sb;
  let b_base = params.b_off + batch * params.b_sb;

  var acc: array<vec4<f32>, 4u * GROUPS_M * GROUPS_N>; // row r, column group h at [r * GROUPS_N + h]
  var pa: array<f32, MAX_LOADS>;
  var pb: array<f32, MAX_LOADS>;
  for (var i = 0u; i < LOADS_A; i++) { pa[i] = load_a(a_base, m0, k_begin, k_end, lid + i * WG); }
  for (var i = 0u; i < LOADS_B; i++) { pb[i] = load_b(b_base, n0, k_begin, k_end, lid + i * WG); }

  for (var t = 0u; t < tiles; t++) {
    workgroupBarrier(); // everyone is done reading the previous slab
    for (var i = 0u; i < LOADS_A; i++) {
      let at = a_coord(lid + i * WG);
      a_tile[at.x * A_ROW + at.y / 4u][at.y % 4u] = pa[i];
    }
    for (var i = 0u; i < LOADS_B; i++) {
      let bt = b_coord(lid + i * WG);
      b_tile[bt.x * B_ROW + bt.y / 4u][bt.y % 4u] = pb[i];
    }
    workgroupBarrier();
    if (t + 1u < tiles) { // next slab's global loads overlap this slab's FMAs
      let k_next = k_begin + (t + 1u) * TILE_K;
      for (var i = 0u; i < LOADS_A; i++) { pa[i] = load_a(a_base, m0, k_next, k_end, lid + i * WG); }
      for (var i = 0u; i < LOADS_B; i++) { pb[i] = load_b(b_base, n0, k_next, k_end, lid + i * WG); }
    }
    for (var kk = 0u; kk < TILE_K; kk++) {
      var av: array<vec4<f32>, GROUPS_M>;
      var bv: array<vec4<f32>, GROUPS_N>;
      for (var g = 0u; g < GROUPS_M; g++) { av[g] = a_tile[kk * A_ROW + g * THREADS_M + ty]; }
      for (var h = 0u; h < GROUPS_N; h++) { bv[h] = b_tile[kk * B_ROW + h * THREADS_N + tx]; }
      for (var g = 0u; g < GROUPS_M; g++) {
        for (var i = 0u; i < 4u; i++) {
          for (var h = 0u; h < GROUPS_N; h++) {
            let r = (g * 4u + i) * GROUPS_N + h;
            acc[r] += av[g][i] * bv[h];
          }
        }
      }
    }
  }

  let c_base = params.c_off + split * params.c_ss + batch * params.c_sb;
  for (var g = 0u; g < GROUPS_M; g++) {
    for (var i = 0u; i < 4u; i++) {
      let m = m0 + (g * THREADS_M + ty) * 4u + i;
      if (m >= params.M) { continue; }
      for (var h = 0u; h < GROUPS_N; h++) {
        let v = acc[(g * 4u + i) * GROUPS_N + h];
        for (var j = 0u; j < 4u; j++) {
          let n = n0 + (h * THREADS_N + tx) * 4u + j;
          if (n < params.N) { store_c(c_base + m * params.c_sm + n, v[j]); }
        }
      }
    }
  }
}
#endif
