/**
 * Subgroup reductions (kernels/subgroup_reduce.wgsl): the rms-norm rows, the softcap cross-entropy
 * rows and the attention backward's row statistic (delta) reduce on subgroups where the device has 'subgroups', with workgroup memory as the fallback.
 * Both paths run here on the same adapter (rt.subgroups toggled) against the plain-TS references at
 * awkward shapes, in f32 and (with shader-f16) f16. The reduction assumes no subgroup size and no
 * layout: lavapipe 26.2 runs it at size 8, SwiftShader at its own; llvmpipe (no subgroups) runs the
 * fallback only. Skipped where 'subgroups' is missing, except under
 * AUTORESEARCH_REQUIRE_FEATURES=subgroups (CI's lavapipe run), where that fails.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { attentionBwd, attentionBwdRef, attentionFwd } from '../../src/ops/attention.ts';
import { roundF16 } from '../../src/ops/elementwise.ts';
import { rmsNormBwd, rmsNormBwdRef, rmsNormFwd, rmsNormRef } from '../../src/ops/rms_norm.ts';
import { softcapXentCount, softcapXentFwd, softcapXentRef } from '../../src/ops/softcap_xent.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, requireFeature, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const hasSubgroups = requireFeature(rt, 'subgroups');
const rng = new Rng(8);
const saved = rt?.subgroups;
afterEach(() => {
  if (rt) rt.subgroups = saved!;
});

const dtypes = (): ('f32' | 'f16')[] => (rt.f16 ? ['f32', 'f16'] : ['f32']);

describe.skipIf(!hasSubgroups)('subgroup reductions', () => {
  for (const subgroups of [true, false]) {
    const path = subgroups ? 'subgroups' : 'workgroup memory';
    // 1, 7 and 37 columns (rows narrower than a subgroup), a head (128), model widths (1000, 2048)
    for (const [rows, cols] of [[3, 1], [5, 7], [130, 37], [9, 128], [4, 1000], [3, 2048]]) {
      it(`rms norm ${rows}×${cols} on ${path}, f32 and f16`, async () => {
        rt.subgroups = subgroups;
        for (const dtype of dtypes()) {
          const round = (a: Float32Array) => (dtype === 'f16' ? roundF16(a) : a);
          const x = round(rng.uniformArray(rows * cols, -3, 3)), dy = round(rng.uniformArray(rows * cols));
          const X = rt.fromArray(x, [rows, cols], dtype), DY = rt.fromArray(dy, [rows, cols], dtype);
          const { y, rstd } = rmsNormFwd(rt, X);
          const ref = rmsNormRef(x, rows, cols);
          const tol = dtype === 'f16' ? { atol: 1e-3, rtol: 2e-3 } : { atol: 1e-5, rtol: 1e-5 };
          expectClose(await rt.read(y), ref.y, { ...tol, label: `y ${dtype}` });
          expectClose(await rt.read(rstd), ref.rstd, { atol: 1e-6, rtol: 1e-5, label: `rstd ${dtype}` });
          expectClose(await rt.read(rmsNormBwd(rt, DY, X, rstd)), rmsNormBwdRef(dy, x, rows, cols), { ...tol, rtol: dtype === 'f16' ? 2e-3 : 1e-4, label: `dx ${dtype}` });
        }
      });
    }

    // V below, at and far above the workgroup (256), with an ignored row and a row of equal logits
    for (const V of [3, 256, 1001, 8192]) {
      it(`softcap cross-entropy rows of ${V} on ${path}: losses and in-place gradient, f32 and f16`, async () => {
        rt.subgroups = subgroups;
        for (const dtype of dtypes()) {
          const rows = 4;
          const z = rng.uniformArray(rows * V, -30, 30);
          z.fill(2.5, 3 * V, 4 * V); // equal logits: loss ln V
          const logits = dtype === 'f16' ? roundF16(z) : z;
          const targets = Int32Array.from([V - 1, -1, 0, V >> 1]);
          const ref = softcapXentRef(logits, targets, V, 15);
          const Z = rt.fromArray(logits, [rows, V], dtype), tT = rt.fromArray(targets, [rows], 'i32');
          const loss = softcapXentFwd(rt, Z, tT, { softcap: 15, grad: { stats: softcapXentCount(rt, tT) } });
          expectClose(await rt.read(loss), ref.perToken, { atol: 2e-5, rtol: 1e-5, label: `loss ${dtype}` });
          expect((await rt.read(loss))[3]).toBeCloseTo(Math.log(V), 4);
          expectClose(await rt.read(Z), ref.dlogits, dtype === 'f16' ? { atol: 1e-6, rtol: 2e-3, label: 'dz f16' } : { atol: 1e-7, rtol: 1e-4, label: 'dz' });
        }
      });
    }
  }

  for (const subgroups of [true, false]) {
    it(`attention backward's row statistic (delta = rowsum(dy·y)) on ${subgroups ? 'subgroups' : 'workgroup memory'}: T 37, GQA 2, D 20 and 128`, async () => {
      rt.subgroups = subgroups;
      for (const D of [20, 128]) {
        const dims = { B: 2, T: 37, H: 4, Hkv: 2, D };
        const n = dims.B * dims.T * dims.H * D, nkv = dims.B * dims.T * dims.Hkv * D;
        const q = rng.uniformArray(n), k = rng.uniformArray(nkv), v = rng.uniformArray(nkv), dy = rng.uniformArray(n);
        const shape = [dims.B, dims.T, dims.H, D], kvShape = [dims.B, dims.T, dims.Hkv, D];
        const Q = rt.fromArray(q, shape), K = rt.fromArray(k, kvShape), Vt = rt.fromArray(v, kvShape);
        const { y, lse } = attentionFwd(rt, Q, K, Vt, 11);
        const g = attentionBwd(rt, Q, K, Vt, y, lse, rt.fromArray(dy, shape), 11);
        const ref = attentionBwdRef(q, k, v, dy, dims, 11);
        expectClose(await rt.read(g.dq), ref.dq, { atol: 5e-5, rtol: 2e-4, label: `dq D ${D}` });
        expectClose(await rt.read(g.dk), ref.dk, { atol: 5e-5, rtol: 2e-4, label: `dk D ${D}` });
      }
    });
  }

  it('the two paths really ask for different kernels', () => {
    const spy = vi.spyOn(rt, 'kernel');
    try {
      for (const subgroups of [true, false]) {
        rt.subgroups = subgroups;
        rmsNormFwd(rt, rt.zeros([2, 5]));
        const targets = rt.fromArray(Int32Array.from([1]), [1], 'i32');
        softcapXentFwd(rt, rt.zeros([1, 9]), targets, { softcap: 0 });
      }
      const asked = spy.mock.calls.map(([spec]) => `${spec.entry}:${!!spec.defines?.SUBGROUPS}`).filter((k) => !k.startsWith('fill'));
      expect(asked).toEqual(['rms_norm_fwd:true', 'softcap_xent_fwd:true', 'rms_norm_fwd:false', 'softcap_xent_fwd:false']);
    } finally {
      spy.mockRestore();
    }
  });
});
