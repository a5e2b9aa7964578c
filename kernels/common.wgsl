// common.wgsl: helpers shared by kernels; pulled in with `#include "common.wgsl"`.

// Linear workgroup index for grids laid out by the host's grid1d() (x up to 65535, then y).
fn flat_workgroup(wg: vec3u, nwg: vec3u) -> u32 {
  return wg.x + wg.y * nwg.x + wg.z * nwg.x * nwg.y;
}

// Float32 machine epsilon: the RMS norm eps of the reference (torch.finfo(float32).eps).
const F32_EPS: f32 = 1.1920928955078125e-7;

// Largest finite value of the storage type T (the loader defines F16 for f16 kernels).
#if F16
const T_MAX: f32 = 65504.0;
#else
const T_MAX: f32 = 0x1.fffffep+127f;
#endif
