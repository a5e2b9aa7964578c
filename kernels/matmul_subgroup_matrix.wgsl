// matmul_subgroup_matrix: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] on subgroup matrices (tensor
// cores): f16 A and B, f32 accumulation, f32 or f16 C. Ref gemmRef (src/ops/matmul.ts). Host:
// src/ops/matmul_subgroup_matrix.ts, which prepends the generated prelude (src/gpu/subgroup_matrix.ts
// fragmentPrelude + the tile consts and fragment load/store functions named below). Tile sizes are
// generated consts rather than `override`s: the fragment functions are generated per shape anyway,
// and override-sized workgroup arrays are reported to trouble subgroup-matrix loads in Dawn.
//
// Work split: a BM x BN block of C per workgroup; grid (ceil(N/BN), ceil(M/BM), batch * splits).
// WG = SG_COUNT * FRAG_SUBGROUP threads; subgroup s < SG_COUNT owns a (TM * FRAG_M) x (TN * FRAG_N)
// sub-block (rows (s / WN) * TM * FRAG_M, columns (s % WN) * TN * FRAG_N) and keeps its TM x TN
// accumulator fragments in registers for the whole K loop (register blocking: TM + TN fragment loads
// per TM * TN multiplies). Subgroups beyond SG_COUNT (an adapter running narrower subgroups than its
// max) only help with the copies.
//
// K loop: BK-deep slabs of A and B go through workgroup memory in the layout they have in global
// memory (A [m][k] or, with A_T, [k][m]; B [k][n] or, with B_T, [n][k]), so the copy is a straight
// coalesced read along the stride-1 index (vec4<f16> under VEC4) and the transposes are done by the
// fragment loads (col_major). Rows are padded (A_LD, B_LD: multiples of 8 halves plus 8) for 16-byte
// aligned fragment rows and fewer bank conflicts. The next slab's global loads are issued into
// registers before the current slab's multiplies. STAGES = 2 keeps two slabs in workgroup memory
// (the next one is stored while others still multiply the current one: one barrier per slab);
// STAGES = 1 halves the memory and needs a second barrier before overwriting.
//
// Epilogue: a workgroup block fully inside C with f32 output, alpha = 1, beta = 0 and aligned ldc
// (params.direct) stores fragments straight to global memory; otherwise each fragment goes through a
// per-subgroup f32 scratch tile and the subgroup's lanes apply alpha, beta, the bounds and the f16
// conversion. SPLIT_K writes raw f32 partials (slab `split` at c_ss) for matmul.wgsl's
// matmul_split_reduce.
// Edges: copies outside M, N or the split's K range write zeros; stores outside M, N are skipped.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  a_off: u32,
  lda: u32,
  a_sb: u32,
  b_off: u32,
  ldb: u32,
  b_sb: u32,
  c_off: u32,
  ldc: u32,
  c_sb: u32,
  c_ss: u32,     // SPLIT_K: elements between partial slabs
  k_chunk: u32,  // K per split (a multiple of BK)
  splits: u32,
  direct: u32,   // 1: interior blocks may store fragments straight to C (host checked alpha, beta, alignment)
  alpha: f32,
  beta: f32,
}

#if VEC4
alias AV = vec4<f16>;
const VW = 4u;
#else
alias AV = f16;
const VW = 1u;
#endif

#if C_F16
alias CT = f16;
#else
alias CT = f32;
#endif

@group(0) @binding(0) var<storage, read> a: array<AV>;
@group(0) @binding(1) var<storage, read> b: array<AV>;
@group(0) @binding(2) var<storage, read_write> c: array<CT>;
@group(1) @binding(0) var<uniform> params: Params;

const SG_COUNT = WM * WN;
const WG = SG_COUNT * FRAG_SUBGROUP;
const BM = WM * TM * FRAG_M;
const BN = WN * TN * FRAG_N;

// Tiles as stored: rows x cols with cols along the operand's stride-1 index.
#if A_T
const A_ROWS = BK;
const A_COLS = BM;
#else
const A_ROWS = BM;
const A_COLS = BK;
#endif
#if B_T
const B_ROWS = BN;
const B_COLS = BK;
#else
const B_ROWS = BK;
const B_COLS = BN;
#endif
const A_LD = (A_COLS + 7u) / 8u * 8u + 8u;
const B_LD = (B_COLS + 7u) / 8u * 8u + 8u;
const A_LOADS = A_ROWS * A_COLS / (VW * WG); // vectors per thread per slab (host checks divisibility)
const B_LOADS = B_ROWS * B_COLS / (VW * WG);
const A_SLAB = A_ROWS * A_LD;
const B_SLAB = B_ROWS * B_LD;

var<workgroup> a_tile: array<f16, STAGES * A_SLAB>;
var<workgroup> b_tile: array<f16, STAGES * B_SLAB>;
var<workgroup> c_scratch: array<f32, SG_COUNT * FRAG_M * FRAG_N>;

// Loads vector e of a slab whose top-left is (row0, col0) in operand coordinates (rows along the
// stored outer index, cols along the stride-1 index), zero outside [0, row_end) x [0, col_end).
fn load_a(base: u32, row0: u32, col0: u32, row_end: u32, col_end: u32, e: u32) -> AV {
  let row = row0 + e / (A_COLS / VW);
  let col = col0 + (e % (A_COLS / VW)) * VW;
  if (row >= row_end || col >= col_end) { return AV(); }
  return a[(base + row * params.lda + col) / VW];
}

fn load_b(base: u32, row0: u32, col0: u32, row_end: u32, col_end: u32, e: u32) -> AV {
  let row = row0 + e / (B_COLS / VW);
  let col = col0 + (e % (B_COLS / VW)) * VW;
  if (row >= row_end || col >= col_end) { return AV(); }
  return b[(base + row * params.ldb + col) / VW];
}

fn put_a(slab: u32, e: u32, v: AV) {
  let at = slab + (e / (A_COLS / VW)) * A_LD + (e % (A_COLS / VW)) * VW;
#if VEC4
  a_tile[at] = v.x; a_tile[at + 1u] = v.y; a_tile[at + 2u] = v.z; a_tile[at + 3u] = v.w;
#else
  a_tile[at] = v;
#endif
}

fn put_b(slab: u32, e: u32, v: AV) {
  let at = slab + (e / (B_COLS / VW)) * B_LD + (e % (B_COLS / VW)) * VW;
#if VEC4
  b_tile[at] = v.x; b_tile[at + 1u] = v.y; b_tile[at + 2u] = v.z; b_tile[at + 3u] = v.w;
#else
  b_tile[at] = v;
#endif
}

@compute @workgroup_size(WG)
fn matmul_sgmat(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32,
                @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32,
                @builtin(subgroup_size) sg_size: u32) {
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let batch = wid.z / params.splits;
  let split = wid.z % params.splits;
  let k_begin = min(split * params.k_chunk, params.K);
  let k_end = min(k_begin + params.k_chunk, params.K);
  let slabs = (k_end - k_begin + BK - 1u) / BK;
  let a_base = params.a_off + batch * params.a_sb;
  let b_base = params.b_off + batch * params.b_sb;
  // the subgroup's sub-block inside the workgroup block
  let sm = (sg / WN) * (TM * FRAG_M);
  let sn = (sg % WN) * (TN * FRAG_N);

  var acc: array<frag_acc, TM * TN>;
  for (var f = 0u; f < TM * TN; f++) { acc[f] = frag_zero(); }

  // slab coordinates of each operand: (outer index, stride-1 index) and their ends
#if A_T
  let a_r0 = k_begin; let a_c0 = m0; let a_rend = k_end; let a_cend = params.M;
#else
  let a_r0 = m0; let a_c0 = k_begin; let a_rend = params.M; let a_cend = k_end;
#endif
#if B_T
  let b_r0 = n0; let b_c0 = k_begin; let b_rend = params.N; let b_cend = k_end;
#else
  let b_r0 = k_begin; let b_c0 = n0; let b_rend = k_end; let b_cend = params.N;
#endif

  var pa: array<AV, A_LOADS>;
  var pb: array<AV, B_LOADS>;
  for (var i = 0u; i < A_LOADS; i++) { pa[i] = load_a(a_base, a_r0, a_c0, a_rend, a_cend, lid + i * WG); }
  for (var i = 0u; i < B_LOADS; i++) { pb[i] = load_b(b_base, b_r0, b_c0, b_rend, b_cend, lid + i * WG); }

  for (var i = 0u; i < A_LOADS; i++) { put_a(0u, lid + i * WG, pa[i]); }
  for (var i = 0u; i < B_LOADS; i++) { put_b(0u, lid + i * WG, pb[i]); }
  for (var t = 0u; t < slabs; t++) {
    workgroupBarrier(); // slab t is in workgroup memory, buffer t % STAGES
    let sa = (t % STAGES) * A_SLAB;
    let sb = (t % STAGES) * B_SLAB;
    if (t + 1u < slabs) { // the next slab's global loads overlap this slab's multiplies
      let dk = (t + 1u) * BK;
#if A_T
      for (var i = 0u; i < A_LOADS; i++) { pa[i] = load_a(a_base, a_r0 + dk, a_c0, a_rend, a_cend, lid + i * WG); }
#else
      for (var i = 0u; i < A_LOADS; i++) { pa[i] = load_a(a_base, a_r0, a_c0 + dk, a_rend, a_cend, lid + i * WG); }
#endif
#if B_T
      for (var i = 0u; i < B_LOADS; i++) { pb[i] = load_b(b_base, b_r0, b_c0 + dk, b_rend, b_cend, lid + i * WG); }
#else
      for (var i = 0u; i < B_LOADS; i++) { pb[i] = load_b(b_base, b_r0 + dk, b_c0, b_rend, b_cend, lid + i * WG); }
#endif
    }
    if (sg < SG_COUNT) {
      for (var kk = 0u; kk < BK; kk += FRAG_K) {
        var lf: array<frag_left, TM>;
        var rf: array<frag_right, TN>;
        for (var i = 0u; i < TM; i++) {
#if A_T
          lf[i] = frag_load_a(sa + kk * A_LD + sm + i * FRAG_M, A_LD);
#else
          lf[i] = frag_load_a(sa + (sm + i * FRAG_M) * A_LD + kk, A_LD);
#endif
        }
        for (var j = 0u; j < TN; j++) {
#if B_T
          rf[j] = frag_load_b(sb + (sn + j * FRAG_N) * B_LD + kk, B_LD);
#else
          rf[j] = frag_load_b(sb + kk * B_LD + sn + j * FRAG_N, B_LD);
#endif
        }
        for (var i = 0u; i < TM; i++) {
          for (var j = 0u; j < TN; j++) { acc[i * TN + j] = frag_mma(lf[i], rf[j], acc[i * TN + j]); }
        }
      }
    }
    if (t + 1u < slabs) {
      if (STAGES == 1u) { workgroupBarrier(); } // one buffer: everyone is done reading slab t
      let next_a = ((t + 1u) % STAGES) * A_SLAB;
      let next_b = ((t + 1u) % STAGES) * B_SLAB;
      for (var i = 0u; i < A_LOADS; i++) { put_a(next_a, lid + i * WG, pa[i]); }
      for (var i = 0u; i < B_LOADS; i++) { put_b(next_b, lid + i * WG, pb[i]); }
    }
  }

  let c_base = params.c_off + split * params.c_ss + batch * params.c_sb;
#if C_F16
  // f16 C: every fragment goes through the scratch tile (the accumulators are f32)
#else
  if (params.direct == 1u && m0 + BM <= params.M && n0 + BN <= params.N) {
    if (sg < SG_COUNT) {
      for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
          frag_store_c(c_base + (m0 + sm + i * FRAG_M) * params.ldc + n0 + sn + j * FRAG_N, params.ldc, acc[i * TN + j]);
        }
      }
    }
    return;
  }
#endif
  let scratch = sg * FRAG_M * FRAG_N;
  for (var f = 0u; f < TM * TN; f++) {
    if (sg < SG_COUNT) { frag_store_scratch(scratch, FRAG_N, acc[f]); }
    workgroupBarrier();
    if (sg < SG_COUNT) {
      let fm = m0 + sm + (f / TN) * FRAG_M;
      let fn_ = n0 + sn + (f % TN) * FRAG_N;
      for (var e = lane; e < FRAG_M * FRAG_N; e += sg_size) {
        let m = fm + e / FRAG_N;
        let n = fn_ + e % FRAG_N;
        if (m < params.M && n < params.N) {
          let ci = c_base + m * params.ldc + n;
          var v = params.alpha * c_scratch[scratch + e];
          if (params.beta != 0.0) { v += params.beta * f32(c[ci]); }
          c[ci] = CT(v);
        }
      }
    }
    workgroupBarrier();
  }
}
