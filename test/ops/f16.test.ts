/**
 * f16 storage through every SIMT kernel family the model uses (PRECISION = 'f16' in train.ts):
 * inputs are rounded to f16 and uploaded as f16 views at odd offsets, the plain-TS reference runs
 * on the same rounded values, and results must agree within f16's output rounding (2^-11 relative)
 * plus the f32-accumulation differences. Shapes are awkward (odd, past a workgroup, partial tiles).
 * The mixed-dtype bindings get their own checks: f16 operands with an f32 matmul result (weight
 * gradients), f32 per-layer scalars beside f16 activations, f32 statistics (rstd, lse, losses),
 * f32 scalar factors, and the f32 ↔ f16 casts.
 *
 * Needs shader-f16 (lavapipe 26.2: `eval "$(../shared/adapters/lavapipe-26/setup.sh)"`,
 * AUTORESEARCH_GPU=vulkan). Skipped where the adapter lacks it, except under
 * AUTORESEARCH_REQUIRE_FEATURES=shader-f16 (CI's lavapipe run), where that fails.
 */
import { describe, expect, it } from 'vitest';
import { lmHeadLoss } from '../../src/autograd/model_ops.ts';
import { ctx, requiresGrad, useRuntime } from '../../src/autograd/tape.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import type { Tensor } from '../../src/gpu/tensor.ts';
import { attentionBwd, attentionBwdRef, attentionFwd, attentionRef } from '../../src/ops/attention.ts';
import { addScaled, addScaledRef, axpyInPlace, axpyRef, cast, castRef, roundF16, scaleByScalar, scaleByScalarInPlace, scaleRef } from '../../src/ops/elementwise.ts';
import { buildEmbeddingIndex, EMBEDDING_CHUNK, embeddingBwd, embeddingBwdRef, embeddingFwd, embeddingRef } from '../../src/ops/embedding.ts';
import { gemm, gemmRef, matmul, matmulRef } from '../../src/ops/matmul.ts';
import { sumAll, sumRows, sumRowsRef } from '../../src/ops/reduce.ts';
import { relu2Bwd, relu2BwdRef, relu2Fwd, relu2Ref } from '../../src/ops/relu2.ts';
import { residualMixBwd, residualMixBwdRef, residualMixFwd, residualMixRef } from '../../src/ops/residual_mix.ts';
import { rmsNormBwd, rmsNormBwdRef, rmsNormFwd, rmsNormRef } from '../../src/ops/rms_norm.ts';
import { rotaryBwd, rotaryBwdRef, rotaryFwd, rotaryRef, rotaryTables, rotaryTablesHost } from '../../src/ops/rotary.ts';
import { softcapXentCount, softcapXentFwd, softcapXentRef } from '../../src/ops/softcap_xent.ts';
import { valueEmbedBwd, valueEmbedBwdRef, valueEmbedFwd, valueEmbedRef } from '../../src/ops/value_embed.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, requireFeature, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const hasF16 = requireFeature(rt, 'shader-f16');
const rng = new Rng(16);

/** f16 output rounding (half an ulp is 2^-11 relative) with room for a different f32 summation order. */
const F16 = { rtol: 2e-3, atol: 1e-3 };

/** Values rounded to f16, and the same values uploaded as an f16 (or f32) view `pad` elements into a buffer. */
function upload(values: Float32Array, shape: number[], pad: number, dtype: 'f16' | 'f32' = 'f16'): { host: Float32Array; t: Tensor } {
  const host = dtype === 'f16' ? roundF16(values) : values;
  const whole = new Float32Array(values.length + pad + 1).fill(7); // the padding must not leak into results
  whole.set(host, pad);
  const buf = rt.fromArray(whole, [whole.length], dtype); // (writes need 4-byte offsets: upload the whole buffer)
  return { host, t: rt.view(buf, shape, pad) };
}

describe.skipIf(!hasF16)('f16 storage through the SIMT kernels', () => {
  it('casts f32 ↔ f16 (round to nearest even, scaled) and keeps dtypes', async () => {
    const a = Float32Array.from([...rng.uniformArray(1001, -3, 3), 65504, 1e-7, 2 ** -24, -0.1]);
    const a32 = upload(a, [a.length], 3, 'f32');
    const h = cast(rt, a32.t, 'f16');
    expect(h.dtype).toBe('f16');
    expectClose(await rt.read(h), castRef(a, 'f16'), { atol: 0, rtol: 0, label: 'f32 → f16' });
    const back = cast(rt, h, 'f32', 0.5);
    expect(back.dtype).toBe('f32');
    expectClose(await rt.read(back), scaleRef(castRef(a, 'f16'), 0.5), { atol: 0, rtol: 0, label: 'f16 → f32 · 0.5' });
  });

  it('elementwise ops, with f32 scalar factors on f16 tensors', async () => {
    const n = 777;
    const a = upload(rng.uniformArray(n), [n], 1), b = upload(rng.uniformArray(n), [n], 2);
    expectClose(await rt.read(addScaled(rt, a.t, b.t, 0.5, -2)), addScaledRef(a.host, b.host, 0.5, -2), F16);
    const s = rt.fromArray([1e-3], [1]); // an f32 factor that f16 would round
    expectClose(await rt.read(scaleByScalar(rt, a.t, s, 3)), scaleRef(a.host, 3e-3), { ...F16, atol: 1e-6 });
    const y = upload(rng.uniformArray(n), [n], 4);
    axpyInPlace(rt, y.t, a.t, 0.25);
    expectClose(await rt.read(y.t), axpyRef(y.host, a.host, 0.25), F16);
    const z = upload(a.host, [n], 5);
    scaleByScalarInPlace(rt, z.t, s, 1000);
    expectClose(await rt.read(z.t), a.host, F16);
  });

  it('row sums of f16 into f32 (sum of squares too), at 3 × 1031', async () => {
    const rows = 3, cols = 1031;
    const x = upload(rng.uniformArray(rows * cols), [rows, cols], 3);
    const s = sumRows(rt, x.t);
    expect(s.dtype).toBe('f32');
    expectClose(await rt.read(s), sumRowsRef(x.host, rows, cols), { atol: 1e-4, rtol: 1e-5 });
    expectClose(await rt.read(sumAll(rt, x.t)), [x.host.reduce((p, v) => p + v, 0)], { atol: 1e-3, rtol: 1e-5 });
  });

  // NN, NT, TN at sizes that leave partial tiles; the last one takes the split-K path (K large, M·N small)
  const gemmCases: [string, number, number, number, boolean, boolean][] = [
    ['naive 5×7×3 NN', 5, 7, 3, false, false],
    ['tiled 70×129×41 NT', 70, 129, 41, false, true],
    ['tiled 131×67×33 TN', 131, 67, 33, true, false],
    ['split-K 64×64×4100 TN', 64, 64, 4100, true, false],
  ];
  for (const [name, M, N, K, transA, transB] of gemmCases) {
    it(`matmul ${name}: f16 result, and an f32 result from f16 operands`, async () => {
      const lda = transA ? M : K, ldb = transB ? K : N;
      const a = upload(rng.uniformArray(M * K), [M * K], 3), b = upload(rng.uniformArray(K * N), [K * N], 1);
      const args = { M, N, K, transA, transB, lda, ldb, ldc: N };
      const want = gemmRef(a.host, b.host, new Float32Array(M * N), args);
      const scale = Math.sqrt(K); // sums of K products of uniforms
      const c16 = rt.empty([M * N], 'f16');
      gemm(rt, a.t, b.t, c16, args);
      expectClose(await rt.read(c16), want, { rtol: 2e-3, atol: 2e-3 * scale, label: 'C f16' });
      const c32 = rt.empty([M * N], 'f32');
      gemm(rt, a.t, b.t, c32, args);
      expectClose(await rt.read(c32), want, { rtol: 1e-5, atol: 1e-5 * scale, label: 'C f32' });
      // accumulate into an f32 C (beta = 1): gradient accumulation across chunks
      gemm(rt, a.t, b.t, c32, { ...args, alpha: 0.5, beta: 1 });
      expectClose(await rt.read(c32), want.map((v) => 1.5 * v), { rtol: 1e-5, atol: 2e-5 * scale, label: 'C f32 beta' });
    });
  }

  it('matmul rejects an f16 C under f32 operands', () => {
    const a = rt.zeros([4, 4]), c = rt.empty([4, 4], 'f16');
    expect(() => matmul(rt, a, a, { out: c })).toThrow(/dtypes f32, f32, f16 differ/);
    const want = matmulRef(new Float32Array(16), [4, 4], new Float32Array(16), [4, 4]);
    expect(want.length).toBe(16);
  });

  it('rms norm forward and backward, f32 rstd, rows of 1, 7 and 300', async () => {
    for (const cols of [1, 7, 300]) {
      const rows = 5;
      const x = upload(rng.uniformArray(rows * cols, -4, 4), [rows, cols], 3);
      const dy = upload(rng.uniformArray(rows * cols), [rows, cols], 2);
      const { y, rstd } = rmsNormFwd(rt, x.t);
      expect([y.dtype, rstd.dtype]).toEqual(['f16', 'f32']);
      const ref = rmsNormRef(x.host, rows, cols);
      expectClose(await rt.read(y), ref.y, { ...F16, label: `y (cols ${cols})` });
      expectClose(await rt.read(rstd), ref.rstd, { atol: 1e-6, rtol: 1e-5, label: 'rstd' });
      expectClose(await rt.read(rmsNormBwd(rt, dy.t, x.t, rstd)), rmsNormBwdRef(dy.host, x.host, rows, cols), { ...F16, label: 'dx' });
    }
  });

  it('rotary forward and backward (f32 tables), B 2, T 5, H 3, D 12', async () => {
    const shape = [2, 5, 3, 12];
    const n = shape.reduce((p, d) => p * d, 1);
    const x = upload(rng.uniformArray(n), shape, 1), dy = upload(rng.uniformArray(n), shape, 3);
    const { cos, sin } = rotaryTables(rt, 7, 12);
    const host = rotaryTablesHost(7, 12);
    expectClose(await rt.read(rotaryFwd(rt, x.t, cos, sin)), rotaryRef(x.host, shape, host.cos, host.sin), F16);
    expectClose(await rt.read(rotaryBwd(rt, dy.t, cos, sin)), rotaryBwdRef(dy.host, shape, host.cos, host.sin), F16);
  });

  it('relu² forward and backward, including squares past f16\'s range (saturated)', async () => {
    const n = 1000;
    const x = upload(rng.uniformArray(n, -200, 200), [n], 2), dy = upload(rng.uniformArray(n), [n], 1);
    expectClose(await rt.read(relu2Fwd(rt, x.t)), relu2Ref(x.host), F16);
    // past 255.9 the square saturates at f16's largest finite value instead of overflowing to inf
    const big = upload(Float32Array.from([255, 256, 300, 1e4, -1e4]), [5], 1);
    expect([...(await rt.read(relu2Fwd(rt, big.t)))]).toEqual([65024, 65504, 65504, 65504, 0]);
    expectClose(await rt.read(relu2Bwd(rt, dy.t, x.t)), relu2BwdRef(dy.host, x.host), F16);
  });

  it('residual mix: f16 activations with f32 per-layer scalars and f32 scalar gradients', async () => {
    const n = 70_001;
    const x = upload(rng.uniformArray(n), [n], 1), x0 = upload(rng.uniformArray(n), [n], 2), dy = upload(rng.uniformArray(n), [n], 3);
    const lam = rng.uniformArray(3, 0.5, 1.5), mu = rng.uniformArray(3, -0.5, 0.5);
    const L = rt.fromArray(lam, [3]), M = rt.fromArray(mu, [3]);
    expectClose(await rt.read(residualMixFwd(rt, x.t, x0.t, L, M, 1)), residualMixRef(x.host, x0.host, lam, mu, 1), F16);
    const g = residualMixBwd(rt, dy.t, x.t, x0.t, L, M, 1);
    const ref = residualMixBwdRef(dy.host, x.host, x0.host, lam, mu, 1);
    expect([g.dx.dtype, g.dLambdas.dtype, g.dMus.dtype]).toEqual(['f16', 'f32', 'f32']);
    expectClose(await rt.read(g.dx), ref.dx, F16);
    expectClose(await rt.read(g.dx0), ref.dx0, F16);
    expectClose(await rt.read(g.dLambdas), ref.dLambdas, { atol: 1e-5 * Math.sqrt(n), rtol: 1e-5 });
    expectClose(await rt.read(g.dMus), ref.dMus, { atol: 1e-5 * Math.sqrt(n), rtol: 1e-5 });
    expect(() => residualMixFwd(rt, x.t, x0.t, cast(rt, L, 'f16'), M, 0)).toThrow(/must be f32/);
  });

  it('value-embedding gate forward and backward, B·T 13, Hkv 3, D 20', async () => {
    const BT = 13, Hkv = 3, D = 20;
    const v = upload(rng.uniformArray(BT * Hkv * D), [BT, Hkv, D], 1), ve = upload(rng.uniformArray(BT * Hkv * D), [BT, Hkv, D], 2);
    const z = upload(rng.uniformArray(BT * Hkv, -3, 3), [BT, Hkv], 3), dy = upload(rng.uniformArray(BT * Hkv * D), [BT, Hkv, D], 4);
    expectClose(await rt.read(valueEmbedFwd(rt, v.t, ve.t, z.t)), valueEmbedRef(v.host, ve.host, z.host, D), F16);
    const g = valueEmbedBwd(rt, dy.t, ve.t, z.t);
    const ref = valueEmbedBwdRef(dy.host, ve.host, z.host, D);
    expectClose(await rt.read(g.dve), ref.dve, F16);
    expectClose(await rt.read(g.dz), ref.dz, { ...F16, atol: 5e-3 });
  });

  it('embedding gather and deterministic scatter-add (a heavy id past one chunk), V 11, C 300', async () => {
    const V = 11, C = 300, N = EMBEDDING_CHUNK * 2 + 5;
    const ids = rng.intArray(N, V);
    for (let i = 0; i < EMBEDDING_CHUNK + 3; i++) ids[(i * 7) % N] = 4;
    const table = upload(rng.uniformArray(V * C), [V, C], 3);
    const idsT = rt.fromArray(ids, [N], 'i32');
    expectClose(await rt.read(embeddingFwd(rt, table.t, idsT)), embeddingRef(table.host, C, ids), { atol: 0, rtol: 0 });
    const dOut = upload(rng.uniformArray(N * C), [N, C], 1);
    const index = buildEmbeddingIndex(rt, ids, V);
    expectClose(await rt.read(embeddingBwd(rt, dOut.t, index, V)), embeddingBwdRef(dOut.host, ids, V, C), { ...F16, atol: 5e-3 });
  });

  const attnCases: [string, number, number, number, number, number, number][] = [
    ['T 37, GQA 2, w 2, D 16, B 2', 2, 37, 4, 2, 16, 2],
    ['T 70, causal, D 128', 1, 70, 1, 1, 128, 70],
    ['T 23, D 12, w 11', 2, 23, 4, 4, 12, 11],
  ];
  for (const [name, B, T, H, Hkv, D, window] of attnCases) {
    it(`attention forward and backward (f32 lse and statistics): ${name}`, async () => {
      const dims = { B, T, H, Hkv, D };
      const q = upload(rng.uniformArray(B * T * H * D), [B, T, H, D], 5), k = upload(rng.uniformArray(B * T * Hkv * D), [B, T, Hkv, D], 1);
      const v = upload(rng.uniformArray(B * T * Hkv * D), [B, T, Hkv, D], 3), dy = upload(rng.uniformArray(B * T * H * D), [B, T, H, D], 7);
      const ref = attentionRef(q.host, k.host, v.host, dims, window);
      const { y, lse } = attentionFwd(rt, q.t, k.t, v.t, window);
      expect([y.dtype, lse.dtype]).toEqual(['f16', 'f32']);
      expectClose(await rt.read(y), ref.y, { ...F16, label: 'y' });
      expectClose(await rt.read(lse), ref.lse, { atol: 1e-4, rtol: 1e-5, label: 'lse' });
      // the backward reference sees the f16-rounded y the kernels saved
      const refB = attentionBwdRef(q.host, k.host, v.host, dy.host, dims, window);
      const g = attentionBwd(rt, q.t, k.t, v.t, y, lse, dy.t, window);
      const tol = { rtol: 5e-3, atol: 5e-3 };
      expectClose(await rt.read(g.dq), refB.dq, { ...tol, label: 'dq' });
      expectClose(await rt.read(g.dk), refB.dk, { ...tol, label: 'dk' });
      expectClose(await rt.read(g.dv), refB.dv, { ...tol, label: 'dv' });
    });
  }

  it('softcap cross-entropy over f16 logits: f32 losses, f16 gradient in place (V 1000, 5 rows, one ignored)', async () => {
    const rows = 5, V = 1000;
    const z = upload(rng.uniformArray(rows * V, -20, 20), [rows, V], 3);
    const targets = Int32Array.from([3, -1, 999, 0, 500]);
    const tT = rt.fromArray(targets, [rows], 'i32');
    const ref = softcapXentRef(z.host, targets, V, 15);
    const stats = softcapXentCount(rt, tT);
    const loss = softcapXentFwd(rt, z.t, tT, { softcap: 15, grad: { stats } });
    expectClose(await rt.read(loss), ref.perToken, { atol: 1e-4, rtol: 1e-5, label: 'loss' });
    expectClose(await rt.read(z.t), ref.dlogits, { rtol: 2e-3, atol: 1e-6, label: 'dz' });
  });

  it('lmHeadLoss in f16 (f32 weight cast on the tape, per-token gradient units) matches f32', async () => {
    useRuntime(rt);
    const tape = ctx();
    const N = 37, C = 24, V = 300;
    const xHost = roundF16(rng.uniformArray(N * C)), wHost = rng.uniformArray(V * C, -0.2, 0.2);
    const targets = rt.fromArray(Int32Array.from({ length: N }, (_, i) => (i === 5 ? -1 : (i * 13) % V)), [N], 'i32');
    const run = async (dtype: 'f16' | 'f32') => {
      const w = requiresGrad(rt.fromArray(wHost, [V, C]));
      const x = requiresGrad(rt.fromArray(xHost, [N, C], dtype));
      const { loss } = lmHeadLoss(x, w, targets, { softcap: 15, chunkRows: 8 });
      // train.ts's loss scale (tokens per step): per-token gradient units in f16
      tape.backward(loss, rt.fromArray([N], [1]));
      return { loss: await rt.item(loss), dx: await rt.read(x.grad!), dw: await rt.read(w.grad!), dwDtype: w.grad!.dtype };
    };
    const r16 = await run('f16'), r32 = await run('f32');
    expect(r16.dwDtype).toBe('f32');
    expect(Math.abs(r16.loss - r32.loss) / r32.loss).toBeLessThan(1e-3);
    expectClose(r16.dx, r32.dx, { rtol: 1e-2, atol: 1e-2 * Math.max(...r32.dx.map(Math.abs)), label: 'dx' });
    expectClose(r16.dw, r32.dw, { rtol: 1e-2, atol: 1e-2 * Math.max(...r32.dw.map(Math.abs)), label: 'dw' });
  });
});
