// common.wgsl: helpers shared by kernels; pulled in with `#include "common.wgsl"`.

// Linear workgroup index for grids laid out by the host's grid1d() (x up to 65535, then y).
fn flat_workgroup(wg: vec3u, nwg: vec3u) -> u32 {
  return wg.x + wg.y * nwg.x + wg.z * nwg.x * nwg.y;
}

// Float32 machine epsilon: the RMS norm eps of the reference (torch.finfo(float32).eps).
const F32_EPS: f32 = 1.1920928955078125e-7;
