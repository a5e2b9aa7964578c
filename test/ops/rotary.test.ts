import { describe, expect, it } from 'vitest';
import { rotaryBwd, rotaryBwdRef, rotaryFwd, rotaryRef, rotaryTables, rotaryTablesHost } from '../../src/ops/rotary.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(13);

describe('rotary tables', () => {
  it('hold cos/sin of t · base^(−2j/D)', () => {
    const { cos, sin } = rotaryTablesHost(3, 4); // D/2 = 2: frequencies 1 and 10000^(−1/2) = 0.01
    expectClose(cos, [1, 1, Math.cos(1), Math.cos(0.01), Math.cos(2), Math.cos(0.02)], { atol: 0, rtol: 1e-7 });
    expectClose(sin, [0, 0, Math.sin(1), Math.sin(0.01), Math.sin(2), Math.sin(0.02)], { atol: 0, rtol: 1e-7 });
    const b = rotaryTablesHost(2, 2, 500); // D = 2: the one frequency is 1 whatever the base
    expectClose(b.sin, [0, Math.sin(1)], { atol: 0, rtol: 1e-7 });
  });

  it('reject an odd head dim', () => {
    expect(() => rotaryTablesHost(4, 3)).toThrow(/head dim 3 must be even/);
  });
});

describe.skipIf(!rt)('rotary', () => {
  it('follows the reference sign convention: y1 = x1·cos + x2·sin, y2 = −x1·sin + x2·cos', async () => {
    // B = 1, T = 2, H = 1, D = 2; position 1 rotates by angle 1
    const { cos, sin } = rotaryTables(rt, 2, 2);
    const y = await rt.read(rotaryFwd(rt, rt.fromArray([0.5, 0.25, 1, 0], [1, 2, 1, 2]), cos, sin));
    expectClose(y, [0.5, 0.25, Math.cos(1), -Math.sin(1)], { atol: 1e-6 });
    const x2 = await rt.read(rotaryFwd(rt, rt.fromArray([0, 0, 0, 1], [1, 2, 1, 2]), cos, sin));
    expectClose(x2, [0, 0, Math.sin(1), Math.cos(1)], { atol: 1e-6 });
  });

  // [B, T, H, D]: all ones with D = 2, T = 1, odd B·T·H, a pair count that is not a multiple of the
  // workgroup size, a real head dim
  const shapes: number[][] = [[1, 1, 1, 2], [1, 3, 1, 2], [2, 3, 5, 6], [3, 7, 3, 4], [1, 5, 2, 128]];
  for (const shape of shapes) {
    it(`forward and backward match the references for [${shape}], tables longer than T, at offsets`, async () => {
      const [, T, , D] = shape;
      const n = shape.reduce((p, d) => p * d, 1);
      const tables = rotaryTablesHost(T + 3, D);
      const cos = rt.fromArray(tables.cos, [T + 3, D / 2]);
      const sin = rt.fromArray(tables.sin, [T + 3, D / 2]);
      const x = rng.uniformArray(n + 2);
      const X = rt.view(rt.fromArray(x, [n + 2]), shape, 2);
      const y = rotaryFwd(rt, X, cos, sin);
      expect(y.shape).toEqual(shape);
      expectClose(await rt.read(y), rotaryRef(x.subarray(2), shape, tables.cos, tables.sin), { atol: 1e-6, label: 'y' });
      const dx = rotaryBwd(rt, X, cos, sin);
      expectClose(await rt.read(dx), rotaryBwdRef(x.subarray(2), shape, tables.cos, tables.sin), { atol: 1e-6, label: 'dx' });
      // the backward is the inverse rotation: it undoes the forward
      expectClose(await rt.read(rotaryBwd(rt, y, cos, sin)), x.subarray(2), { atol: 1e-5, label: 'inverse' });
    });
  }

  it('rejects bad shapes', () => {
    const { cos, sin } = rotaryTables(rt, 4, 8);
    expect(() => rotaryFwd(rt, rt.zeros([1, 4, 2, 6]), cos, sin)).toThrow(/rotary: table .* must be f32\[>=4, 3\]/);
    expect(() => rotaryFwd(rt, rt.zeros([1, 5, 2, 8]), cos, sin)).toThrow(/must be f32\[>=5, 4\]/);
    expect(() => rotaryFwd(rt, rt.zeros([4, 8]), cos, sin)).toThrow(/rotary: x .* must be \[B, T, H, D\]/);
    expect(() => rotaryBwd(rt, rt.zeros([1, 4, 2, 7]), cos, sin)).toThrow(/rotaryBwd: head dim .* must be even/);
  });
});
