import { describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/gpu/runtime.ts';
import {
  cautiousUpdate,
  cautiousUpdateRef,
  createMuonState,
  createPolarWork,
  muonLrScale,
  muonStep,
  muonStepRef,
  nesterov,
  nesterovRef,
  normuonRef,
  normuonScale,
  POLAR_EXPRESS_COEFFS,
  polarExpress,
  polarExpressRef,
  releaseMuonState,
  releaseWork,
} from '../../src/ops/muon.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, relError, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(23);
const size = (s: number[]) => s.reduce((p, d) => p * d, 1);

// [G, R, C]: vectors both ways, R > C (tall), R < C (wide), R = C, G = 1 and 3, sizes that are not
// multiples of anything the kernels tile by
const SHAPES: [number, number, number][] = [
  [1, 1, 5],
  [1, 5, 1],
  [2, 1, 1],
  [1, 17, 33],
  [3, 33, 17],
  [3, 8, 8],
];
// shapes for the element passes only (too big for the naive matmul on a CPU adapter):
// several norm chunks (4096 elements each), rows and columns longer than a workgroup (256)
const BIG: [number, number, number][] = [
  [2, 70, 65],
  [1, 300, 270],
  [2, 40, 300],
];

/** max |x|: Polar Express errors are judged relative to the matrix's scale (like relError). */
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

describe.skipIf(!rt)('muon pieces', () => {
  for (const shape of [...SHAPES, ...BIG]) {
    it(`nesterov matches nesterovRef over 2 steps, [${shape}]`, async () => {
      const n = size(shape);
      const G = rt.fromArray(rng.uniformArray(n + 3), [n + 3]);
      const g = rt.view(G, shape, 3); // a view: g_off must be honoured
      const buf = rt.fromArray(rng.uniformArray(n, -0.5, 0.5), shape);
      let ref = { buf: await rt.read(buf) as ArrayLike<number>, x: new Float64Array(0) as ArrayLike<number> };
      for (const mu of [0.85, 0.3]) {
        const x = nesterov(rt, g, buf, mu);
        ref = nesterovRef(await rt.read(g), ref.buf, mu);
        expectClose(await rt.read(buf), ref.buf, { atol: 1e-7, rtol: 1e-6, label: 'momentum buffer' });
        expectClose(await rt.read(x), ref.x, { atol: 1e-7, rtol: 1e-6, label: 'x' });
      }
    });
  }

  for (const shape of [...SHAPES, ...BIG]) {
    it(`normalizes by ‖X‖_F·1.02 + 1e-6 per matrix (Polar Express, 0 steps), [${shape}]`, async () => {
      const [G, R, C] = shape;
      const g = rng.uniformArray(size(shape));
      g.fill(0, 0, R * C); // the first matrix is zero: 0 / (0 + 1e-6) stays 0
      const x = polarExpress(rt, rt.fromArray(g, shape), 0);
      expectClose(await rt.read(x), polarExpressRef(g, G, R, C, 0), { atol: 1e-7, rtol: 1e-5 });
    });
  }

  // f32 kernels vs the float64 reference. Each iteration is a degree-5 polynomial with slopes up to
  // ~20 (step 1, near σ = 1) and ~8 at small σ, so f32 rounding in X is amplified (fixtures/README:
  // ~1e-3 relative for ill-conditioned gradients). For these seeded inputs we measured ≤ 1e-5
  // (max |Δ| / max |X|; the largest for vectors, whose σ sits where the slopes are steepest), so
  // 5e-5 leaves 5× headroom while a wrong coefficient, a missing transpose or a dropped a·X term
  // gives errors above 1e-1.
  for (const shape of SHAPES) {
    it(`polarExpress matches polarExpressRef (5 steps), [${shape}]`, async () => {
      const [G, R, C] = shape;
      const g = rng.normalArray(size(shape), 0.02);
      const x = await rt.read(polarExpress(rt, rt.fromArray(g, shape)));
      const ref = polarExpressRef(g, G, R, C);
      const err = relError(x, ref);
      expect(err, `relative error ${err}`).toBeLessThan(5e-5);
      expect(maxAbs(ref)).toBeGreaterThan(0.3); // orthogonalized: entries of order 1/sqrt(min(R, C))
    });
  }

  it('polarExpress maps equal singular values by the scalar recursion σ ← aσ + bσ³ + cσ⁵', async () => {
    // X = k·Q with orthonormal columns (tall) or rows (wide): every singular value is k, so after
    // normalization σ = k/(‖X‖_F·1.02 + 1e-6) and the iterations act on σ alone (independent of
    // the matrix reference).
    for (const [R, C] of [[7, 3], [3, 7], [4, 4], [1, 5]]) {
      const S = Math.min(R, C), k = 0.37;
      // one k per column (tall) or row (wide), in distinct rows/columns (3 is coprime to R and C here)
      const q = new Float32Array(R * C);
      for (let i = 0; i < S; i++) {
        if (R >= C) q[((i * 3) % R) * C + i] = k;
        else q[i * C + ((i * 3) % C)] = k;
      }
      let sigma = k / (Math.sqrt(S) * k * 1.02 + 1e-6);
      for (const [a, b, c] of POLAR_EXPRESS_COEFFS) sigma = a * sigma + b * sigma ** 3 + c * sigma ** 5;
      const x = await rt.read(polarExpress(rt, rt.fromArray(q, [1, R, C])));
      // rtol 1e-4: the composite map's slope near σ ≈ 1 amplifies f32 rounding ~100× (measured 2e-5)
      expectClose(x, q.map((v) => (v / k) * sigma), { atol: 1e-6, rtol: 1e-4, label: `[${R}, ${C}]` });
    }
  });

  it('polarExpress with preallocated work allocates nothing and leaves its input alone', async () => {
    const shape: [number, number, number] = [3, 9, 5];
    const work = createPolarWork(rt, ...shape);
    const g0 = rng.normalArray(size(shape));
    const g = rt.fromArray(g0, shape);
    polarExpress(rt, g, 5, work); // warm: kernels compiled, bind groups cached
    const created = rt.pool.created, inUse = rt.pool.bytesInUse;
    const x = polarExpress(rt, g, 5, work);
    expect(rt.pool.created).toBe(created);
    expect(rt.pool.bytesInUse).toBe(inUse);
    expect(x === work.x || x === work.y).toBe(true);
    expect(relError(await rt.read(x), polarExpressRef(g0, ...shape))).toBeLessThan(5e-5);
    expect([...(await rt.read(g))]).toEqual([...g0]);
    // the input may be work.x itself (normalized in place)
    rt.write(work.x, g0);
    expect(relError(await rt.read(polarExpress(rt, work.x, 5, work)), polarExpressRef(g0, ...shape))).toBeLessThan(5e-5);
    expect(() => polarExpress(rt, work.y, 5, work)).toThrow(/work buffers/);
    releaseWork(rt, work);
  });

  for (const shape of [...SHAPES, ...BIG]) {
    it(`normuonScale matches normuonRef over 2 steps, [${shape}] (${shape[1] >= shape[2] ? 'per row' : 'per column'})`, async () => {
      const [G, R, C] = shape;
      const L = R >= C ? R : C;
      const m2 = rt.fromArray(rng.uniformArray(G * L, 0, 1e-3), R >= C ? [G, R, 1] : [G, 1, C]);
      let refM2: ArrayLike<number> = await rt.read(m2);
      for (const beta2 of [0.95, 0.5]) {
        const x0 = rng.normalArray(size(shape), 0.1);
        const scale = normuonScale(rt, rt.fromArray(x0, shape), m2, beta2);
        const ref = normuonRef(x0, refM2, G, R, C, beta2);
        refM2 = ref.m2;
        expectClose(await rt.read(m2), ref.m2, { atol: 1e-10, rtol: 1e-5, label: 'second moment' });
        expectClose(await rt.read(scale), ref.scale, { atol: 1e-6, rtol: 2e-5, label: 'scale' });
      }
    });
  }

  for (const shape of [...SHAPES, ...BIG]) {
    it(`cautiousUpdate matches cautiousUpdateRef, [${shape}]`, async () => {
      const [G, R, C] = shape;
      const n = size(shape), L = R >= C ? R : C;
      const x0 = rng.normalArray(n), p0 = rng.uniformArray(n), s0 = rng.uniformArray(G * L, 0.5, 2);
      x0[0] = 0; // u·p = 0 counts as "same sign": decayed
      if (n > 2) p0[1] = 0;
      const P = rt.fromArray(new Float32Array(n + 1).fill(7), [n + 1]);
      const p = rt.view(P, shape, 1);
      rt.write(p, p0);
      const lr = 0.04 * muonLrScale(R, C), wd = 0.2;
      cautiousUpdate(rt, p, rt.fromArray(x0, shape), rt.fromArray(s0, [G, L]), lr, wd);
      const u = x0.map((v, i) => v * s0[Math.floor(i / (R * C)) * L + (R >= C ? Math.floor(i / C) % R : i % C)]);
      expectClose(await rt.read(p), cautiousUpdateRef(p0, u, lr, wd), { atol: 1e-7, rtol: 1e-6 });
      expect((await rt.read(P))[0]).toBe(7); // before the view: untouched
    });
  }

  it('rejects mismatched shapes with the op and shapes in the message', () => {
    expect(() => nesterov(rt, rt.zeros([2, 3, 4]), rt.zeros([2, 4, 3]), 0.9)).toThrow(/nesterov: .*\[2,3,4\].*\[2,4,3\]/);
    expect(() => polarExpress(rt, rt.zeros([3, 4]))).toThrow(/polarExpress: .*\[3,4\].*\[G, R, C\]/);
    expect(() => polarExpress(rt, rt.zeros([1, 3, 4]), 6)).toThrow(/steps/);
    expect(() => normuonScale(rt, rt.zeros([2, 3, 4]), rt.zeros([2, 3, 1]), 0.95)).toThrow(/normuonScale: .*\[2,1,4\]/);
    const state = createMuonState(rt, 2, 3, 4);
    expect(() => muonStep(rt, rt.zeros([2, 4, 3]), rt.zeros([2, 4, 3]), state, { lr: 1, momentum: 0.9, beta2: 0.9, weightDecay: 0, nsSteps: 5 })).toThrow(
      /muonStep: .*\[2,4,3\].*\[2,3,4\]/,
    );
    releaseMuonState(rt, state);
  });
});

/**
 * Compares a Muon step against the float64 reference relative to the size of the update
 * (max |p_ref − p_before|), allowing cautious-weight-decay mask flips (fixtures/README): an element
 * off by lr'·wd·|p| is a flip where X·p is nearest zero, and is counted instead of failing.
 */
function compareStep(got: Float32Array, want: ArrayLike<number>, before: ArrayLike<number>, lrWd: number, rtol: number): { error: number; flips: number } {
  let update = 0;
  for (let i = 0; i < want.length; i++) update = Math.max(update, Math.abs(want[i] - before[i]));
  const tol = rtol * update;
  let worst = 0, flips = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (d > tol && lrWd > 0 && Math.abs(d - lrWd * Math.abs(before[i])) <= tol) flips++;
    else worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
  }
  return { error: worst / update, flips };
}

describe.skipIf(!rt)('muonStep', () => {
  for (const shape of SHAPES) {
    for (const weightDecay of [0, 0.2]) {
      it(`matches muonStepRef over 3 steps, [${shape}], wd=${weightDecay}`, async () => {
        const [G, R, C] = shape;
        const n = size(shape);
        const state = createMuonState(rt, G, R, C);
        const params = rt.fromArray(rng.uniformArray(n, -0.2, 0.2), shape);
        const grads = rt.empty(shape);
        let ref: ReturnType<typeof muonStepRef> = { params: await rt.read(params), momentumBuffer: new Float32Array(n), secondMoment: new Float32Array(G * (R >= C ? R : C)) };
        for (let step = 0; step < 3; step++) {
          const g0 = rng.normalArray(n, 0.01);
          rt.write(grads, g0);
          const o = { lr: 0.04 * (1 - step / 4), momentum: 0.85 + 0.05 * step, beta2: 0.95, weightDecay, nsSteps: 5 };
          const before = ref.params;
          muonStep(rt, params, grads, state, o);
          ref = muonStepRef(ref.params, g0, ref, { G, R, C }, o);
          const { error, flips } = compareStep(await rt.read(params), ref.params, before, o.lr * muonLrScale(R, C) * weightDecay, 1e-4);
          // Polar Express's amplified f32 rounding: measured ≤ 3e-5 of the update's size
          expect(error, `step ${step}: error ${error} of the update`).toBeLessThan(1e-4);
          expect(flips, `step ${step}: ${flips} mask flips of ${n}`).toBeLessThanOrEqual(Math.floor(0.02 * n));
          expectClose(await rt.read(state.momentumBuffer), ref.momentumBuffer, { atol: 1e-8, rtol: 1e-5, label: 'momentum' });
          expectClose(await rt.read(state.secondMoment), ref.secondMoment, { atol: 1e-9, rtol: 2e-3, label: 'second moment' });
          // take the GPU's parameters as the next step's start, so flips don't compound
          ref.params = await rt.read(params);
        }
        releaseMuonState(rt, state);
      });
    }
  }

  for (const shape of BIG) {
    it(`matches muonStepRef without Polar Express iterations (nsSteps 0: the element passes at scale), [${shape}]`, async () => {
      // several norm chunks per matrix, long rows/columns; no matmuls, so little rounding to amplify
      const [G, R, C] = shape;
      const n = size(shape);
      const state = createMuonState(rt, G, R, C);
      const p0 = rng.uniformArray(n, -0.2, 0.2), g0 = rng.normalArray(n, 0.01);
      const params = rt.fromArray(p0, shape);
      const o = { lr: 0.04, momentum: 0.9, beta2: 0.95, weightDecay: 0.2, nsSteps: 0 };
      muonStep(rt, params, rt.fromArray(g0, shape), state, o);
      const ref = muonStepRef(p0, g0, { momentumBuffer: new Float32Array(n), secondMoment: new Float32Array(G * (R >= C ? R : C)) }, { G, R, C }, o);
      const { error, flips } = compareStep(await rt.read(params), ref.params, p0, o.lr * muonLrScale(R, C) * o.weightDecay, 1e-5);
      expect(error, `error ${error} of the update`).toBeLessThan(1e-5);
      expect(flips).toBe(0);
      expectClose(await rt.read(state.secondMoment), ref.secondMoment, { atol: 1e-12, rtol: 1e-5, label: 'second moment' });
      releaseMuonState(rt, state);
    });
  }

  it('reads the gradients only, records 5 + 4·nsSteps dispatches and allocates nothing', async () => {
    const shape: [number, number, number] = [2, 6, 10];
    const state = createMuonState(rt, ...shape);
    const g0 = rng.normalArray(size(shape));
    const params = rt.fromArray(rng.uniformArray(size(shape)), shape), grads = rt.fromArray(g0, shape);
    const o = { lr: 0.02, momentum: 0.95, beta2: 0.95, weightDecay: 0.1, nsSteps: 5 };
    muonStep(rt, params, grads, state, o); // warm
    await rt.sync();
    const created = rt.pool.created, inUse = rt.pool.bytesInUse, dispatches = rt.dispatches;
    muonStep(rt, params, grads, state, o);
    expect(rt.dispatches - dispatches).toBe(5 + 4 * o.nsSteps);
    expect(rt.pool.created).toBe(created);
    expect(rt.pool.bytesInUse).toBe(inUse);
    expect([...(await rt.read(grads))]).toEqual([...g0]);
    releaseMuonState(rt, state);
  });
});
