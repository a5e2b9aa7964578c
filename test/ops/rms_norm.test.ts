import { describe, expect, it } from 'vitest';
import { RMS_NORM_EPS, rmsNormBwd, rmsNormBwdRef, rmsNormFwd, rmsNormRef, rmsNormRowThreads } from '../../src/ops/rms_norm.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(9);

describe('rms norm row mapping', () => {
  it('gives short rows few threads and wide rows up to a workgroup', () => {
    expect([1, 2, 5, 128, 512, 2048, 5000].map(rmsNormRowThreads)).toEqual([1, 1, 2, 32, 128, 256, 256]);
  });
});

describe.skipIf(!rt)('rms norm', () => {
  // rows × cols: single element, D = 2 heads, odd widths, rows not a multiple of rows-per-workgroup,
  // a head-sized row (D = 128) and model-width rows (2048: 8 columns per thread)
  const shapes: number[][] = [[1, 1], [1, 2], [2, 3, 4, 2], [3, 7], [300, 5], [3, 37, 128], [2, 1000], [3, 2048]];
  for (const shape of shapes) {
    it(`forward and backward match the references for [${shape}], at offsets`, async () => {
      const cols = shape[shape.length - 1];
      const n = shape.reduce((p, d) => p * d, 1);
      const rows = n / cols;
      const x = rng.uniformArray(n + 3, -2, 2);
      const dy = rng.uniformArray(n + 1);
      const X = rt.view(rt.fromArray(x, [n + 3]), shape, 3);
      const DY = rt.view(rt.fromArray(dy, [n + 1]), shape, 1);
      const { y, rstd } = rmsNormFwd(rt, X);
      expect(y.shape).toEqual(shape);
      const ref = rmsNormRef(x.subarray(3), rows, cols);
      expectClose(await rt.read(y), ref.y, { atol: 1e-5, rtol: 1e-5, label: 'y' });
      expectClose(await rt.read(rstd), ref.rstd, { atol: 1e-6, rtol: 1e-5, label: 'rstd' });
      const dx = rmsNormBwd(rt, DY, X, rstd);
      expectClose(await rt.read(dx), rmsNormBwdRef(dy.subarray(1), x.subarray(3), rows, cols), { atol: 1e-5, rtol: 1e-4, label: 'dx' });
    });
  }

  it('normalizes to unit RMS, and maps a zero row to zero with rstd = 1/sqrt(eps)', async () => {
    const cols = 6;
    const x = new Float32Array([3, -1, 4, 1, -5, 9, 0, 0, 0, 0, 0, 0]);
    const { y, rstd } = rmsNormFwd(rt, rt.fromArray(x, [2, cols]));
    const yv = await rt.read(y);
    const ms = yv.subarray(0, cols).reduce((s, v) => s + v * v, 0) / cols;
    expect(ms).toBeCloseTo(1, 5);
    expect([...yv.subarray(cols)]).toEqual([0, 0, 0, 0, 0, 0]);
    expectClose((await rt.read(rstd)).subarray(1), [1 / Math.sqrt(RMS_NORM_EPS)], { rtol: 1e-5 });
  });

  it('rejects mismatched shapes', () => {
    const x = rt.zeros([4, 3]);
    const { rstd } = rmsNormFwd(rt, x);
    expect(() => rmsNormBwd(rt, rt.zeros([4, 2]), x, rstd)).toThrow(/rmsNormBwd: dy .* does not match x/);
    expect(() => rmsNormBwd(rt, rt.zeros([4, 3]), x, rt.zeros([3]))).toThrow(/rmsNormBwd: rstd .* must be f32\[4\]/);
    expect(() => rmsNormFwd(rt, rt.zeros([3], 'i32'))).toThrow(/rmsNorm: .* is not a float tensor/);
  });
});
