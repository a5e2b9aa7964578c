/**
 * Subgroup-matrix flash attention (kernels/attention_subgroup_matrix.wgsl) against the plain-TS
 * references in src/ops/attention.ts: forward output, lse and all three gradients, at awkward
 * shapes, natively at the adapter's shape and at NVIDIA's wide shapes built from native fragments.
 * Needs an adapter with f16 subgroup matrices (lavapipe 26.2: `eval "$(../shared/adapters/lavapipe-26/setup.sh)"`,
 * AUTORESEARCH_GPU=vulkan). Elsewhere the suite is skipped, unless
 * AUTORESEARCH_REQUIRE_FEATURES=chromium-experimental-subgroup-matrix (CI's lavapipe run), where a missing feature fails.
 *
 * Tolerances: the kernels see q, k, v, dy rounded to f16 (the references get the same rounded
 * values, so input rounding is not an error), and round P, dS to f16 before the second product
 * (relative 2^-11 ≈ 4.9e-4 per element), accumulating in f32. Outputs are stored as f16 (another
 * 2^-11 relative). With |inputs| ≤ 1 the outputs are O(1) and gradients O(1–10): atol 4e-3 + rtol 4e-3
 * for y and gradients is about 8 f16 ulps at 1, loose enough for f16 storage and tight enough to
 * catch a wrong mask, a dropped tile or a mis-scaled row (those give errors of order 0.1–1; the
 * "detects a broken mask" case checks that). lse is f32 from f32 statistics over f16-rounded P: 1e-3.
 */
import { describe, expect, it } from 'vitest';
import { attentionBwd, attentionBwdRef, attentionFwd, attentionRef, type AttentionDims } from '../../src/ops/attention.ts';
import {
  attentionBwdSubgroupMatrix, attentionFwdSubgroupMatrix, fragmentLayer, kernelSource, planTiles,
  subgroupMatrixAttentionUnsupported, type AttentionSmOptions, type SmPlan,
} from '../../src/ops/attention_subgroup_matrix.ts';
import { emulatedFragment, type FragmentConfig, fragmentLabel, nativeFragments, NVIDIA_SHAPES, SUBGROUP_MATRIX_FEATURE } from '../../src/gpu/subgroup_matrix.ts';
import { loadSource } from '../../src/gpu/wgsl.ts';
import { fromF16Bits, f16Bits, type Runtime } from '../../src/gpu/runtime.ts';
import type { Tensor } from '../../src/gpu/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime | null;
const info = rt?.subgroupMatrix && nativeFragments(rt.subgroupMatrix).length ? rt.subgroupMatrix : null;
if (!info && (process.env.AUTORESEARCH_REQUIRE_FEATURES ?? '').split(',').includes(SUBGROUP_MATRIX_FEATURE)) {
  throw new Error(`${SUBGROUP_MATRIX_FEATURE} is required (AUTORESEARCH_REQUIRE_FEATURES) but the adapter (${rt?.gpu.describe() ?? 'none'}) has no f16 subgroup matrices`);
}
const rng = new Rng(31);

const roundF16 = (a: Float32Array) => fromF16Bits(Uint16Array.from(a, f16Bits));

interface Case {
  name: string;
  dims: AttentionDims;
  window: number;
}
const c = (name: string, B: number, T: number, H: number, Hkv: number, D: number, window: number): Case => ({ name, dims: { B, T, H, Hkv, D }, window });

// Tiles at 8×8×8: 4 subgroups × 8 rows = 32 resident rows; at 16-row shapes 64. T = 37, 45, 70 leave
// partial tiles everywhere; windows shorter than T skip whole key tiles. Each (shape, head dim) pair
// compiles three pipelines, which takes lavapipe's LLVM tens of CPU seconds, so the wide shapes run
// the cases that cover most (partial tiles, GQA, B > 1, a short window) at D 32.
const CASES: Case[] = [
  c('T 1, D 32', 1, 1, 1, 1, 32, Infinity),
  c('T 37, w 5, GQA 2, B 2, D 32', 2, 37, 4, 2, 32, 5),
  c('T 70, w 40, GQA 1, D 32', 1, 70, 2, 2, 32, 40),
  c('T 19, w 0: each query sees itself, D 32', 1, 19, 2, 1, 32, 0),
  c('T 45, causal, GQA 4, D 64', 1, 45, 4, 1, 64, Infinity),
  c('T 33, w 17, D 128 (model head dim), GQA 2', 1, 33, 2, 1, 128, 17),
];
const WIDE_CASES = CASES.filter((x) => x.name.startsWith('T 37') || x.name.startsWith('T 70'));

const SHAPES: { label: string; opts: AttentionSmOptions; cases: Case[] }[] = [
  { label: 'native', opts: {}, cases: CASES },
  { label: 'emulated 16×8×16', opts: { shape: { M: 16, N: 8, K: 16 }, emulate: true }, cases: WIDE_CASES },
  { label: 'emulated 16×16×16', opts: { shape: { M: 16, N: 16, K: 16 }, emulate: true }, cases: WIDE_CASES.slice(0, 1) },
  { label: 'emulated 16×8×8', opts: { shape: { M: 16, N: 8, K: 8 }, emulate: true }, cases: WIDE_CASES.slice(0, 1) },
];
/** First use of a (shape, head dim) compiles its pipelines: minutes of CPU on a busy 2-core machine. */
const COMPILE_TIMEOUT = 900_000;

const TOL = { atol: 4e-3, rtol: 4e-3 };

/** An f16 tensor at an element offset inside a larger buffer (kernels take offsets; f16 writes need even ones). */
function upload(data: Float32Array, shape: number[], pad: number): Tensor {
  const buf = rt!.empty([data.length + pad + 3], 'f16');
  const view = rt!.view(buf, shape, pad);
  rt!.write(view, data);
  return view;
}

describe.skipIf(!info)('subgroup-matrix attention', () => {
  SHAPES.forEach(({ label, opts, cases }, si) => {
    cases.forEach(({ name, dims, window }, ci) => {
      // inputs at offsets that are multiples of 4 take the vec4 staging path, others the scalar one
      const aligned = (si + ci) % 2 === 0;
      const pads = aligned ? [4, 8, 12, 16] : [6, 2, 10, 14];
      it(`${label}, ${name}, ${aligned ? 'vec4' : 'scalar'} staging: forward, lse and gradients match the reference`, async () => {
        const { B, T, H, Hkv, D } = dims;
        const nq = B * T * H * D, nkv = B * T * Hkv * D;
        const q = roundF16(rng.uniformArray(nq)), k = roundF16(rng.uniformArray(nkv)), v = roundF16(rng.uniformArray(nkv));
        const dy = roundF16(rng.uniformArray(nq));
        const ref = attentionRef(q, k, v, dims, window);
        const refB = attentionBwdRef(q, k, v, dy, dims, window);
        await rt!.scopeAsync(async () => {
          const qt = upload(q, [B, T, H, D], pads[0]), kt = upload(k, [B, T, Hkv, D], pads[1]), vt = upload(v, [B, T, Hkv, D], pads[2]);
          const { y, lse } = attentionFwdSubgroupMatrix(rt!, qt, kt, vt, window, opts);
          expectClose(await rt!.read(y), ref.y, { ...TOL, label: 'y' });
          expectClose(await rt!.read(lse), ref.lse, { atol: 1e-3, rtol: 1e-4, label: 'lse' });
          // the backward starts from the reference's y (rounded to f16, as stored) so only it is tested
          const yRef = upload(roundF16(ref.y), [B, T, H, D], 2);
          const g = attentionBwdSubgroupMatrix(rt!, qt, kt, vt, yRef, lse, upload(dy, [B, T, H, D], pads[3]), window, opts);
          expectClose(await rt!.read(g.dq), refB.dq, { ...TOL, label: 'dq' });
          expectClose(await rt!.read(g.dk), refB.dk, { ...TOL, label: 'dk' });
          expectClose(await rt!.read(g.dv), refB.dv, { ...TOL, label: 'dv' });
        });
      }, COMPILE_TIMEOUT);
    });
  });
});

describe.skipIf(!info)('subgroup-matrix attention: dispatch and planning', () => {
  it('attentionFwd / attentionBwd send f16 here (same numbers as calling it directly), f32 and simt: true to SIMT', async () => {
    const dims = { B: 1, T: 21, H: 2, Hkv: 1, D: 32 }, window = 9;
    const q = roundF16(rng.uniformArray(21 * 2 * 32)), k = roundF16(rng.uniformArray(21 * 32)), v = roundF16(rng.uniformArray(21 * 32));
    await rt!.scopeAsync(async () => {
      const qt = rt!.fromArray(q, [1, 21, 2, 32], 'f16'), kt = rt!.fromArray(k, [1, 21, 1, 32], 'f16'), vt = rt!.fromArray(v, [1, 21, 1, 32], 'f16');
      expect(subgroupMatrixAttentionUnsupported(rt!, qt, kt, vt)).toBeNull();
      const viaOp = attentionFwd(rt!, qt, kt, vt, window);
      const direct = attentionFwdSubgroupMatrix(rt!, qt, kt, vt, window);
      expect(await rt!.read(viaOp.y)).toEqual(await rt!.read(direct.y));
      const simt = attentionFwd(rt!, qt, kt, vt, window, { simt: true });
      const ref = attentionRef(q, k, v, dims, window);
      expectClose(await rt!.read(simt.y), ref.y, { ...TOL, label: 'SIMT f16 y' });
      const gOp = attentionBwd(rt!, qt, kt, vt, viaOp.y, viaOp.lse, qt, window);
      const gDirect = attentionBwdSubgroupMatrix(rt!, qt, kt, vt, viaOp.y, viaOp.lse, qt, window);
      for (const key of ['dq', 'dk', 'dv'] as const) expect(await rt!.read(gOp[key])).toEqual(await rt!.read(gDirect[key]));
      const f32 = rt!.fromArray(q, [1, 21, 2, 32]);
      expect(subgroupMatrixAttentionUnsupported(rt!, f32, f32, f32)).toMatch(/not all f16/);
      const odd = rt!.empty([1, 4, 1, 12], 'f16');
      expect(subgroupMatrixAttentionUnsupported(rt!, odd, odd, odd)).toMatch(/head dim 12/);
    });
  }, COMPILE_TIMEOUT);

  it('the tolerance catches a wrong mask: window 4 vs 5 differs by far more than it', async () => {
    const dims = { B: 1, T: 24, H: 1, Hkv: 1, D: 32 };
    const q = roundF16(rng.uniformArray(24 * 32, -2, 2)), k = roundF16(rng.uniformArray(24 * 32, -2, 2)), v = roundF16(rng.uniformArray(24 * 32));
    await rt!.scopeAsync(async () => {
      const mk = (a: Float32Array) => rt!.fromArray(a, [1, 24, 1, 32], 'f16');
      const y = await rt!.read(attentionFwdSubgroupMatrix(rt!, mk(q), mk(k), mk(v), 5).y);
      expectClose(y, attentionRef(q, k, v, dims, 5).y, { ...TOL, label: 'w 5' });
      const wrong = attentionRef(q, k, v, dims, 4).y;
      const worst = Math.max(...y.map((x, i) => Math.abs(x - wrong[i]) - (TOL.atol + TOL.rtol * Math.abs(wrong[i]))));
      expect(worst).toBeGreaterThan(0.02);
    });
  }, COMPILE_TIMEOUT);

  it('large scores take the lazy-rescale path (max rising by more than TAU) and stay exact', async () => {
    // keys whose scores grow along the sequence: every new tile raises the row max by ≫ 8 (log2)
    const T = 40, D = 32, dims = { B: 1, T, H: 1, Hkv: 1, D };
    const q = new Float32Array(T * D).fill(1);
    const k = roundF16(Float32Array.from({ length: T * D }, (_, e) => 0.25 * Math.floor(e / D) + (e % 3) * 0.01)); // ≈ 2 (log2) per key
    const v = roundF16(rng.uniformArray(T * D));
    await rt!.scopeAsync(async () => {
      const mk = (a: Float32Array) => rt!.fromArray(a, [1, T, 1, D], 'f16');
      const out = attentionFwdSubgroupMatrix(rt!, mk(q), mk(k), mk(v), T, { tiles: { fwd: { BS: 8 } } });
      const ref = attentionRef(q, k, v, dims, T);
      expectClose(await rt!.read(out.y), ref.y, { ...TOL, label: 'y' });
      expectClose(await rt!.read(out.lse), ref.lse, { atol: 1e-3, rtol: 1e-4, label: 'lse' });
    });
  }, COMPILE_TIMEOUT);

  it('plans tiles within the adapter limits and rejects what cannot be built', () => {
    for (const kind of ['fwd', 'dq', 'dkv'] as const) {
      for (const D of [32, 64, 128]) {
        const plan = planTiles(rt!, kind, D);
        expect(plan.bytes).toBeLessThanOrEqual(rt!.limits.maxComputeWorkgroupStorageSize);
        expect(plan.BS % plan.fragment.N).toBe(0);
        expect(D % plan.OC).toBe(0);
      }
    }
    expect(() => planTiles(rt!, 'fwd', 32, { shape: { M: 16, N: 16, K: 16 } })).toThrow(/not one of this adapter's f16→f32 configs.*emulate: true/);
    expect(() => planTiles(rt!, 'fwd', 32, { shape: { M: 12, N: 8, K: 8 }, emulate: true })).toThrow(/no native f16 subgroup-matrix shape of this adapter divides 12x8x8/);
    expect(() => planTiles(rt!, 'fwd', 128, { tiles: { fwd: { NSG: 4, BS: 512 } } })).toThrow(/no fwd tiles fit D = 128/);
  });
});

describe.skipIf(!info)('subgroup-matrix attention: WGSL for every fragment', () => {
  it('the emulated accumulator load mirrors the store: pieces at the same offsets', () => {
    const layer = fragmentLayer(emulatedFragment(info!, { M: 16, N: 16, K: 16 }));
    expect(layer).toContain('x[3] = subgroupMatrixLoad<subgroup_matrix_result<f32, 8, 8>, row_major>(&smem_f, off + 8u * stride + 8u, stride);');
    expect(layer).toContain('fn sm_load_right_col(off: u32, stride: u32) -> frag_right');
  });

  it("type-checks all three kernels with NVIDIA's native fragments (the pipeline fails only for want of the shape)", async () => {
    for (const shape of NVIDIA_SHAPES) {
      const f: FragmentConfig = { ...shape, native: shape, input: 'f16', result: 'f32', subgroupSize: 32, emulated: false };
      for (const [kind, entry, define] of [['fwd', 'attention_sm_fwd', 'FWD'], ['dq', 'attention_sm_dq', 'DQ'], ['dkv', 'attention_sm_dkv', 'DKV']] as const) {
        for (const [D, vec4] of [[64, false], [128, true]] as const) {
          const plan: SmPlan = { kind, fragment: f, NSG: kind === 'fwd' ? 4 : 2, BS: 32, OC: 32, bytes: 0 };
          const { code } = loadSource({ code: kernelSource(plan, D) }, { [define]: true, VEC4: vec4 }, 'f16');
          const module = rt!.device.createShaderModule({ code });
          const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}: ${m.message}`);
          expect(errors, `${fragmentLabel(f)} ${kind} D ${D}`).toEqual([]);
          rt!.device.pushErrorScope('validation');
          rt!.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: entry } });
          const err = await rt!.device.popErrorScope();
          if (err) expect(err.message).toMatch(/Subgroup matrix usage found which is not supported by the device/);
        }
      }
    }
  });
});
