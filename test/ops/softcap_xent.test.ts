import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { softcapFwd, softcapRef, softcapXentCount, softcapXentFwd, softcapXentRef } from '../../src/ops/softcap_xent.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, relError, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(17);

/** Random targets in [0, V), with about `ignoreFrac` of them −1; the first is V−1 and the second 0. */
function makeTargets(n: number, V: number, ignoreFrac = 0.25): Int32Array {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = rng.next() < ignoreFrac ? -1 : rng.int(V);
  if (n > 0) t[0] = V - 1;
  if (n > 1) t[1] = 0;
  return t;
}

/** Mean over counted targets computed from per-token losses, the way torch divides. */
function meanOf(perToken: Float32Array, targets: Int32Array): number {
  let s = 0, c = 0;
  targets.forEach((t, i) => {
    if (t !== -1) (s += perToken[i]), c++;
  });
  return c ? s / c : 0;
}

describe.skipIf(!rt)('softcap_xent', () => {
  it('counts non-ignored targets on the GPU (N above the workgroup, at an offset)', async () => {
    for (const n of [1, 7, 1000]) {
      const t = makeTargets(n + 2, 50);
      const T = rt.view(rt.fromArray(t, [n + 2], 'i32'), [n], 2);
      const count = [...t.subarray(2)].filter((v) => v !== -1).length;
      expectClose(await rt.read(softcapXentCount(rt, T)), [count, 1 / Math.max(count, 1)], { label: `stats n=${n}` });
    }
    expectClose(await rt.read(softcapXentCount(rt, rt.fromArray([-1, -1, -1], [3], 'i32'))), [0, 1], { label: 'all ignored' });
  });

  // [N, V, softcap, logit range]: N = 1, V = 1, V around/below the workgroup size, V = 8200
  const cases: [number, number, number, number][] = [
    [1, 1, 15, 5],
    [1, 7, 0, 5],
    [3, 255, 15, 30],
    [4, 257, 0, 8],
    [2, 1000, 15, 40],
    [3, 8200, 15, 30],
    [2, 8200, 0, 10],
  ];
  for (const [N, V, s, range] of cases) {
    it(`loss and in-place gradient match the reference: N=${N}, V=${V}, softcap ${s}`, async () => {
      const z = rng.uniformArray(N * V, -range, range);
      const t = makeTargets(N, V);
      const ref = softcapXentRef(z, t, V, s);
      const T = rt.fromArray(t, [N], 'i32');

      // forward only: logits untouched
      const Z1 = rt.fromArray(z, [N, V]);
      const loss1 = await rt.read(softcapXentFwd(rt, Z1, T, { softcap: s }));
      expectClose(loss1, ref.perToken, { atol: 1e-5, rtol: 1e-5, label: 'per-token loss' });
      expect(relError(await rt.read(Z1), z)).toBe(0);
      expect(Math.abs(meanOf(loss1, t) - ref.loss)).toBeLessThan(1e-5 * Math.max(1, ref.loss));

      // with the gradient, written over a view of the logits, per-token loss into a view
      const Z2 = rt.fromArray(new Float32Array([7, ...z]), [N * V + 1]);
      const Zv = rt.view(Z2, [N, V], 1);
      const L = rt.zeros([N + 2]);
      const stats = softcapXentCount(rt, T);
      softcapXentFwd(rt, Zv, T, { softcap: s, out: rt.view(L, [N], 2), grad: { stats, alpha: 0.5 } });
      const Lh = await rt.read(L);
      expectClose(Lh.subarray(2), ref.perToken, { atol: 1e-5, rtol: 1e-5, label: 'per-token loss (grad pass)' });
      expect([Lh[0], Lh[1]]).toEqual([0, 0]);
      const dz = await rt.read(Z2);
      expect(dz[0]).toBe(7); // outside the view
      expectClose(dz.subarray(1), ref.dlogits.map((v) => 0.5 * v), { atol: 1e-7, rtol: 1e-4, label: 'dz' });
    });
  }

  it('all targets ignored: loss 0, gradient 0, no NaN', async () => {
    const N = 3, V = 300;
    const Z = rt.fromArray(rng.uniformArray(N * V, -20, 20), [N, V]);
    const T = rt.fromArray(new Int32Array(N).fill(-1), [N], 'i32');
    const loss = softcapXentFwd(rt, Z, T, { softcap: 15, grad: { stats: softcapXentCount(rt, T) } });
    expect([...(await rt.read(loss))]).toEqual([0, 0, 0]);
    const dz = await rt.read(Z);
    expect(dz.every((v) => v === 0)).toBe(true);
  });

  for (const s of [15, 0]) {
    it(`huge logits (±1e4) stay finite and match the reference, softcap ${s}`, async () => {
      const N = 4, V = 600;
      const z = rng.uniformArray(N * V, -1e4, 1e4);
      z[5] = 1e4; z[V + 7] = -1e4; z[2 * V] = 1e4; z[2 * V + 1] = 1e4; // ties at the maximum
      const t = new Int32Array([5, 7, 1, 11]);
      const ref = softcapXentRef(z, t, V, s);
      const Z = rt.fromArray(z, [N, V]);
      const T = rt.fromArray(t, [N], 'i32');
      const loss = await rt.read(softcapXentFwd(rt, Z, T, { softcap: s, grad: { stats: softcapXentCount(rt, T) } }));
      const dz = await rt.read(Z);
      expect(loss.every(Number.isFinite) && dz.every(Number.isFinite)).toBe(true);
      expectClose(loss, ref.perToken, { atol: 1e-4, rtol: 1e-5, label: 'per-token loss' });
      expectClose(dz, ref.dlogits, { atol: 1e-6, rtol: 1e-4, label: 'dz' });
    });
  }

  it('gives a NaN loss for a target outside [−1, V) (torch raises there)', async () => {
    const V = 5;
    const Z = rt.fromArray(rng.uniformArray(3 * V), [3, V]);
    const loss = await rt.read(softcapXentFwd(rt, Z, rt.fromArray([V, -2, 2], [3], 'i32'), { softcap: 15 }));
    expect(Number.isNaN(loss[0]) && Number.isNaN(loss[1])).toBe(true);
    expect(Number.isFinite(loss[2])).toBe(true);
  });

  it("reproduces the reference model's per-token losses from its (already capped) logits", async () => {
    const fx = JSON.parse(readFileSync(new URL('../../fixtures/gpt-tiny.json', import.meta.url), 'utf8'));
    const f32 = (b64: string) => new Float32Array(new Uint8Array(Buffer.from(b64, 'base64')).buffer);
    const logits = f32(fx.expected.logits.f32);
    const V = fx.config.vocab_size;
    const t = Int32Array.from(fx.targets as number[]);
    const loss = await rt.read(softcapXentFwd(rt, rt.fromArray(logits, [t.length, V]), rt.fromArray(t, [t.length], 'i32'), { softcap: 0 }));
    expect(relError(loss, f32(fx.expected.per_token_loss.f32))).toBeLessThan(1e-5);
    expect(Math.abs(meanOf(loss, t) - fx.expected.loss) / fx.expected.loss).toBeLessThan(1e-5);
  });

  it('softcapFwd caps in place and matches the reference (s = 0 leaves z alone)', async () => {
    for (const n of [1, 257, 1000]) {
      const z = rng.uniformArray(n, -100, 100);
      z[0] = n === 1 ? 1e4 : z[0];
      const Z = rt.fromArray(z, [n]);
      expectClose(await rt.read(softcapFwd(rt, Z, 15)), softcapRef(z, 15), { label: `softcap n=${n}` });
      const Z0 = rt.fromArray(z, [n]);
      expect(relError(await rt.read(softcapFwd(rt, Z0, 0)), z)).toBe(0);
    }
  });

  it('rejects bad targets, outputs and softcaps, naming the op', () => {
    const Z = rt.zeros([2, 5]);
    expect(() => softcapXentFwd(rt, Z, rt.zeros([2]), { softcap: 15 })).toThrow(/softcapXentFwd: targets .* must be i32/);
    expect(() => softcapXentFwd(rt, Z, rt.zeros([3], 'i32'), { softcap: 15 })).toThrow(/softcapXentFwd: targets .* 2 elements/);
    expect(() => softcapXentFwd(rt, Z, rt.zeros([2], 'i32'), { softcap: -1 })).toThrow(/softcapXentFwd: softcap/);
    expect(() => softcapXentFwd(rt, Z, rt.zeros([2], 'i32'), { softcap: 15, out: rt.zeros([3]) })).toThrow(/softcapXentFwd: out/);
    expect(() => softcapXentFwd(rt, Z, rt.zeros([2], 'i32'), { softcap: 15, grad: { stats: rt.zeros([1]) } })).toThrow(/grad.stats/);
  });
});
