import { describe, expect, it } from 'vitest';
import { valueEmbedBwd, valueEmbedBwdRef, valueEmbedFwd, valueEmbedRef } from '../../src/ops/value_embed.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { numel } from '../../src/gpu/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(5);

/** A tensor of `shape` that is a view `off` elements into a larger buffer (offsets are exercised). */
function upload(data: Float32Array, shape: number[], off: number) {
  const padded = new Float32Array(data.length + off);
  padded.set(data, off);
  return rt.view(rt.fromArray(padded, [padded.length]), shape, off);
}

describe.skipIf(!rt)('value_embed', () => {
  // [B, T, Hkv, D]: all ones; odd; D above 32 and not a power of two; the model's D = 128;
  // D above the 256-thread workgroup (threads loop)
  const shapes = [
    [1, 1, 1, 1],
    [2, 3, 2, 5],
    [1, 3, 1, 40],
    [2, 2, 2, 128],
    [1, 2, 1, 300],
  ];
  for (const shape of shapes) {
    it(`forward and backward match the references for [${shape}]`, async () => {
      const n = numel(shape), rows = n / shape[3], D = shape[3];
      const v = rng.uniformArray(n), ve = rng.uniformArray(n), dy = rng.uniformArray(n);
      const z = rng.uniformArray(rows, -4, 4);
      const V = upload(v, shape, 3), VE = upload(ve, shape, 1), DY = upload(dy, shape, 2), Z = upload(z, shape.slice(0, 3), 5);
      expectClose(await rt.read(valueEmbedFwd(rt, V, VE, Z)), valueEmbedRef(v, ve, z, D), { label: 'y' });
      const { dve, dz } = valueEmbedBwd(rt, DY, VE, Z);
      const ref = valueEmbedBwdRef(dy, ve, z, D);
      expectClose(await rt.read(dve), ref.dve, { label: 'dve' });
      expectClose(await rt.read(dz), ref.dz, { atol: 1e-5 * Math.sqrt(D), label: 'dz' });
      expect(dz.shape).toEqual(shape.slice(0, 3));
    });
  }

  it('saturates without NaN for huge gate logits', async () => {
    const shape = [1, 1, 4, 3], D = 3;
    const v = rng.uniformArray(12), ve = rng.uniformArray(12), dy = rng.uniformArray(12);
    const z = new Float32Array([1e4, -1e4, 100, -100]);
    const V = rt.fromArray(v, shape), VE = rt.fromArray(ve, shape), Z = rt.fromArray(z, [1, 1, 4]);
    const y = await rt.read(valueEmbedFwd(rt, V, VE, Z));
    expectClose(y, valueEmbedRef(v, ve, z, D), { label: 'y' });
    const { dve, dz } = valueEmbedBwd(rt, rt.fromArray(dy, shape), VE, Z);
    const ref = valueEmbedBwdRef(dy, ve, z, D);
    expectClose(await rt.read(dve), ref.dve, { label: 'dve' });
    expectClose(await rt.read(dz), ref.dz, { label: 'dz' });
    expect([...(await rt.read(dz))].every(Number.isFinite)).toBe(true);
  });

  it('rejects mismatched shapes, naming the op', () => {
    const v = rt.zeros([1, 2, 2, 4]);
    expect(() => valueEmbedFwd(rt, v, rt.zeros([1, 2, 2, 3]), rt.zeros([1, 2, 2]))).toThrow(/valueEmbedFwd: expected v, ve/);
    expect(() => valueEmbedFwd(rt, v, v, rt.zeros([1, 2, 4]))).toThrow(/valueEmbedFwd: expected v, ve/);
    expect(() => valueEmbedBwd(rt, rt.zeros([1, 2, 2, 5]), v, rt.zeros([1, 2, 2]))).toThrow(/valueEmbedBwd/);
  });
});
