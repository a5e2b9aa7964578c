// matmul: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b], f32 accumulation. Ref matmulRef.
// Operands are addressed by strides (in elements), so transposes, batch broadcast (stride 0) and
// row-strided slices need no copies: op(A)[m, k] = A[a_off + b*a_sb + m*a_sm + k*a_sk].
// matmul_naive: one thread per output element; grid (ceil(N/16), ceil(M/16), batch).
#include "common.wgsl"

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
  c_sm: u32,
  c_sb: u32,
  alpha: f32,
  beta: f32,
}

@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

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
  let c_i = params.c_off + batch * params.c_sb + m * params.c_sm + n;
  var v = params.alpha * acc;
  if (params.beta != 0.0) {
    v += params.beta * f32(c[c_i]);
  }
  c[c_i] = T(v);
}
