import { describe, expect, it } from 'vitest';
import { attentionBwd, attentionBwdRef, attentionFwd, attentionRef, type AttentionDims, type AttentionOptions } from '../../src/ops/attention.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import type { Tensor } from '../../src/gpu/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(29);

interface Case {
  name: string;
  dims: AttentionDims;
  window: number;
  opts?: AttentionOptions;
}

const c = (name: string, B: number, T: number, H: number, Hkv: number, D: number, window: number, opts?: AttentionOptions): Case => ({
  name, dims: { B, T, H, Hkv, D }, window, opts,
});

// Default tiles: fwd 32×16, dq 16×8, dkv 8×16 (query rows × key rows). T = 37 and 70 leave partial
// tiles in every kernel; the last case shrinks the tiles so tiny T spans many of them.
const CASES: Case[] = [
  c('T = 1, D 4, window 0', 1, 1, 1, 1, 4, 0),
  c('T = 1, GQA 2, window ≥ T', 1, 1, 2, 1, 8, Infinity),
  c('T = 5, w = 2', 1, 5, 2, 2, 8, 2),
  c('T = 37, w = 2, GQA 2, B = 2, D 16', 2, 37, 4, 2, 16, 2),
  c('T = 37, w = T/2, GQA 4', 1, 37, 4, 1, 8, 18),
  c('T = 37, w ≥ T (plain causal), D 4', 1, 37, 2, 2, 4, 100),
  c('w = 0: each query sees itself only', 1, 9, 2, 1, 8, 0),
  c('D 12: chunks not a multiple of threads per row', 2, 23, 4, 4, 12, 11),
  c('D 20, GQA 3', 1, 13, 3, 1, 20, 4),
  c('D 128 (model head dim), GQA 2, w = 7', 1, 19, 2, 1, 128, 7),
  c('D 128, T 70, causal: several tiles in every kernel', 1, 70, 1, 1, 128, 70),
  c('odd tiles (BR 5, BC 3, TPR 3), B 2, GQA 2', 2, 29, 4, 2, 16, 6, {
    tiles: { fwd: { BR: 5, BC: 3, TPR: 3 }, dq: { BR: 5, BC: 3, TPR: 3 }, dkv: { BR: 3, BC: 5, TPR: 3 } },
  }),
];

const qSize = (d: AttentionDims) => d.B * d.T * d.H * d.D;
const kvSize = (d: AttentionDims) => d.B * d.T * d.Hkv * d.D;

/** Uploads data as a view at an odd element offset into a larger buffer (kernels take offsets). */
function upload(data: Float32Array, shape: number[], pad: number): Tensor {
  const buf = rt.empty([data.length + pad + 3]);
  const view = rt.view(buf, shape, pad);
  rt.write(view, data);
  return view;
}

describe.skipIf(!rt)('attention', () => {
  for (const { name, dims, window, opts } of CASES) {
    it(`${name}: forward and backward match the reference`, async () => {
      const { B, T, H, Hkv, D } = dims;
      const q = rng.uniformArray(qSize(dims)), k = rng.uniformArray(kvSize(dims)), v = rng.uniformArray(kvSize(dims));
      const dy = rng.uniformArray(qSize(dims));
      const ref = attentionRef(q, k, v, dims, window);
      const refB = attentionBwdRef(q, k, v, dy, dims, window);
      await rt.scopeAsync(async () => {
        const qt = upload(q, [B, T, H, D], 5), kt = upload(k, [B, T, Hkv, D], 1), vt = upload(v, [B, T, Hkv, D], 3);
        const { y, lse } = attentionFwd(rt, qt, kt, vt, window, opts);
        expectClose(await rt.read(y), ref.y, { atol: 2e-5, rtol: 1e-4, label: 'y' });
        expectClose(await rt.read(lse), ref.lse, { atol: 2e-5, rtol: 1e-5, label: 'lse' });
        const g = attentionBwd(rt, qt, kt, vt, y, lse, upload(dy, [B, T, H, D], 7), window, opts);
        expectClose(await rt.read(g.dq), refB.dq, { atol: 5e-5, rtol: 2e-4, label: 'dq' });
        expectClose(await rt.read(g.dk), refB.dk, { atol: 5e-5, rtol: 2e-4, label: 'dk' });
        expectClose(await rt.read(g.dv), refB.dv, { atol: 5e-5, rtol: 2e-4, label: 'dv' });
      });
    });
  }

  it('window really cuts: w = 1 differs from causal where rows see more than 2 keys', async () => {
    const dims = { B: 1, T: 6, H: 1, Hkv: 1, D: 4 };
    const q = rng.uniformArray(24), k = rng.uniformArray(24), v = rng.uniformArray(24);
    const qt = rt.fromArray(q, [1, 6, 1, 4]), kt = rt.fromArray(k, [1, 6, 1, 4]), vt = rt.fromArray(v, [1, 6, 1, 4]);
    const near = await rt.read(attentionFwd(rt, qt, kt, vt, 1).y);
    const full = await rt.read(attentionFwd(rt, qt, kt, vt, 6).y);
    expectClose(near.slice(0, 8), full.slice(0, 8), { label: 'rows 0-1 see the same keys' });
    expect(Math.max(...near.slice(8).map((x, i) => Math.abs(x - full[8 + i])))).toBeGreaterThan(1e-3);
    expectClose(near, attentionRef(q, k, v, dims, 1).y, { label: 'w = 1' });
  });

  it('backward is deterministic (no atomics): two runs give identical bits', async () => {
    const dims = { B: 1, T: 21, H: 4, Hkv: 2, D: 8 };
    await rt.scopeAsync(async () => {
      const mk = (n: number, shape: number[]) => rt.fromArray(rng.uniformArray(n), shape);
      const q = mk(qSize(dims), [1, 21, 4, 8]), k = mk(kvSize(dims), [1, 21, 2, 8]), v = mk(kvSize(dims), [1, 21, 2, 8]);
      const dy = mk(qSize(dims), [1, 21, 4, 8]);
      const { y, lse } = attentionFwd(rt, q, k, v, 9);
      const a = attentionBwd(rt, q, k, v, y, lse, dy, 9), b = attentionBwd(rt, q, k, v, y, lse, dy, 9);
      for (const key of ['dq', 'dk', 'dv'] as const) expect(await rt.read(a[key])).toEqual(await rt.read(b[key]));
    });
  });

  it('releases its temporaries: pool usage is flat across repeated fwd + bwd', async () => {
    const q = rt.keep(rt.fromArray(rng.uniformArray(2 * 11 * 2 * 8), [2, 11, 2, 8]));
    const kv = rt.keep(rt.fromArray(rng.uniformArray(2 * 11 * 1 * 8), [2, 11, 1, 8]));
    const step = () =>
      rt.scope(() => {
        const { y, lse } = attentionFwd(rt, q, kv, kv, 4);
        attentionBwd(rt, q, kv, kv, y, lse, y, 4);
      });
    step();
    await rt.sync();
    const inUse = rt.pool.bytesInUse, created = rt.pool.created;
    for (let i = 0; i < 3; i++) step();
    await rt.sync();
    expect(rt.pool.bytesInUse).toBe(inUse);
    expect(rt.pool.created).toBe(created);
    rt.release(q);
    rt.release(kv);
  });

  it('rejects bad shapes, head dims and windows with messages naming the op and shapes', () => {
    rt.scope(() => {
      const q = rt.empty([1, 4, 4, 8]), k = rt.empty([1, 4, 2, 8]);
      expect(() => attentionFwd(rt, q, rt.empty([1, 4, 3, 8]), rt.empty([1, 4, 3, 8]), 2)).toThrow(/attentionFwd: query heads 4 .*kv heads 3.*\[1, 4, 3, 8\]/);
      expect(() => attentionFwd(rt, q, k, rt.empty([1, 4, 2, 4]), 2)).toThrow(/attentionFwd: v must match k/);
      expect(() => attentionFwd(rt, q, rt.empty([1, 5, 2, 8]), rt.empty([1, 5, 2, 8]), 2)).toThrow(/attentionFwd: k must be \[1, 4, Hkv, 8\]/);
      expect(() => attentionFwd(rt, rt.empty([4, 4, 8]), k, k, 2)).toThrow(/attentionFwd: .*4-D/);
      const odd = rt.empty([1, 4, 1, 6]);
      expect(() => attentionFwd(rt, odd, odd, odd, 2)).toThrow(/head dim 6 must be a positive multiple of 4/);
      const big = rt.empty([1, 1, 1, 132]);
      expect(() => attentionFwd(rt, big, big, big, 2)).toThrow(/head dim 132/);
      expect(() => attentionFwd(rt, big, big, big, 2, { tiles: { fwd: { BR: 4 } } })).toThrow(/head dim 132/);
      const d128 = rt.empty([1, 3, 1, 128]);
      expect(() => attentionFwd(rt, d128, d128, d128, 2, { tiles: { fwd: { BR: 64, BC: 32 } } })).toThrow(/attentionFwd: fwd tiles .* B of workgroup memory/);
      expect(() => attentionFwd(rt, d128, d128, d128, 2, { tiles: { fwd: { TPR: 2 } } })).toThrow(/head dim 128 needs fwd TPR ≥ 4/);
      expect(() => attentionFwd(rt, q, k, k, -1)).toThrow(/window must be a non-negative integer/);
      expect(() => attentionFwd(rt, q, k, k, 1.5)).toThrow(/window/);
      const { y, lse } = attentionFwd(rt, q, k, k, 2);
      expect(() => attentionBwd(rt, q, k, k, y, rt.empty([1, 4, 5]), y, 2)).toThrow(/attentionBwd: lse .* must be f32 \[1, 4, 4\]/);
      expect(() => attentionBwd(rt, q, k, k, y, lse, rt.empty([1, 4, 4, 4]), 2)).toThrow(/attentionBwd: dy .* must match q/);
    });
  });
});
