/**
 * One MuonAdamW step from fresh state on the reference fixture (fixtures/gpt-tiny.json):
 * every AdamW and Muon group of `optimizer.param_groups`, applied to `params` with `expected.grads`,
 * must reproduce `expected.params_after_step` within the fixture README's tolerances, including its
 * allowance for cautious-weight-decay mask flips on Muon parameters.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { adamwStep, adamwStepRef } from '../../src/ops/adamw.ts';
import { createMuonState, muonLrScale, muonStep, muonStepRef, releaseMuonState } from '../../src/ops/muon.ts';
import { testRuntime } from '../setup.ts';
import { compareAfterStep, decodeF32, FIXTURES_DIR, type FixtureParamGroup, type PackedF32, readFixture, type StepComparison, TOLERANCE } from '../../src/fixture.ts';

/** fixtures/README.md: max|a−b| / max|b| per tensor after the step; flips ≤ 2% of a Muon tensor. */
type Group = FixtureParamGroup;

function decode(p: PackedF32): Float32Array {
  const out = decodeF32(p);
  expect(out.length, 'decoded length').toBe(p.shape.reduce((a, d) => a * d, 1));
  return out;
}

function expectWithin(name: string, c: StepComparison): void {
  expect(c.error, `${name}: relative error ${c.error.toExponential(2)}`).toBeLessThan(TOLERANCE.step);
  expect(c.flips, `${name}: ${c.flips} mask flips of ${c.size}`).toBeLessThanOrEqual(TOLERANCE.maxFlipFraction * c.size);
}

const rt = (await testRuntime()) as Runtime;
const fx = readFixture(join(FIXTURES_DIR, 'gpt-tiny.json')); // shipped with the repository: never skipped

describe.skipIf(!rt)('one MuonAdamW step on the gpt-tiny fixture', () => {
  const f = fx;
  const before = (name: string) => decode(f.params[name]);
  const grad = (name: string) => decode(f.expected.grads[name]);
  const after = (name: string) => decode(f.expected.params_after_step[name]);
  const shapeOf = (name: string) => f.params[name].shape;
  const muonGroups = f.optimizer.param_groups.filter((g) => g.kind === 'muon');
  const adamwGroups = f.optimizer.param_groups.filter((g) => g.kind === 'adamw');
  const lrWdOf = (g: Group) => {
    const [R, C] = shapeOf(g.params[0]);
    return g.lr * muonLrScale(R, C) * g.weight_decay;
  };

  it('covers every parameter exactly once, at step 1', () => {
    const listed = f.optimizer.param_groups.flatMap((g) => g.params).sort();
    expect(listed).toEqual(Object.keys(f.params).sort());
    expect(f.optimizer.step).toBe(1);
  });

  it('AdamW groups match on the GPU (adamwStep)', async () => {
    for (const g of adamwGroups) {
      for (const name of g.params) {
        const shape = shapeOf(name);
        const p = rt.fromArray(before(name), shape);
        adamwStep(rt, p, rt.fromArray(grad(name), shape), rt.zeros(shape), rt.zeros(shape), {
          lr: g.lr, beta1: g.betas![0], beta2: g.betas![1], eps: g.eps!, weightDecay: g.weight_decay, step: 1,
        });
        const c = compareAfterStep(await rt.read(p), after(name), before(name));
        console.log(`adamw ${name} [${shape}]: relative error ${c.error.toExponential(2)}`);
        expectWithin(name, c);
      }
    }
  });

  it('Muon groups match on the GPU (muonStep on the stacked group), counting mask flips', async () => {
    for (const g of muonGroups) {
      const [R, C] = shapeOf(g.params[0]);
      const G = g.params.length;
      for (const name of g.params) expect(shapeOf(name), `${name} in a [${R}, ${C}] group`).toEqual([R, C]);
      // stack in the listed order, as the reference's torch.stack
      const stack = (get: (n: string) => Float32Array) => {
        const out = new Float32Array(G * R * C);
        g.params.forEach((n, i) => out.set(get(n), i * R * C));
        return out;
      };
      const params = rt.fromArray(stack(before), [G, R, C]);
      const state = createMuonState(rt, G, R, C);
      muonStep(rt, params, rt.fromArray(stack(grad), [G, R, C]), state, {
        lr: g.lr, momentum: g.momentum ?? f.optimizer.muon_momentum, beta2: g.beta2!, weightDecay: g.weight_decay, nsSteps: g.ns_steps!,
      });
      const got = await rt.read(params);
      releaseMuonState(rt, state);
      g.params.forEach((name, i) => {
        const c = compareAfterStep(got.subarray(i * R * C, (i + 1) * R * C), after(name), before(name), lrWdOf(g));
        console.log(`muon ${name} [${R}, ${C}]: relative error ${c.error.toExponential(2)}, ${c.flips} mask flips of ${c.size}`);
        expectWithin(name, c);
      });
    }
  });

  it('the plain-TS references match too (adamwStepRef, muonStepRef in float64)', () => {
    for (const g of adamwGroups) {
      for (const name of g.params) {
        const n = before(name).length;
        const ref = adamwStepRef(before(name), grad(name), new Float32Array(n), new Float32Array(n), {
          lr: g.lr, beta1: g.betas![0], beta2: g.betas![1], eps: g.eps!, weightDecay: g.weight_decay, step: 1,
        });
        expectWithin(`adamwStepRef ${name}`, compareAfterStep(ref.p, after(name), before(name)));
      }
    }
    for (const g of muonGroups) {
      const [R, C] = shapeOf(g.params[0]);
      const G = g.params.length;
      const stack = (get: (n: string) => Float32Array) => {
        const out = new Float32Array(G * R * C);
        g.params.forEach((n, i) => out.set(get(n), i * R * C));
        return out;
      };
      const ref = muonStepRef(stack(before), stack(grad), { momentumBuffer: new Float32Array(G * R * C), secondMoment: new Float32Array(G * (R >= C ? R : C)) }, { G, R, C }, {
        lr: g.lr, momentum: g.momentum ?? f.optimizer.muon_momentum, beta2: g.beta2!, weightDecay: g.weight_decay, nsSteps: g.ns_steps!,
      });
      g.params.forEach((name, i) => {
        const c = compareAfterStep(ref.params.subarray(i * R * C, (i + 1) * R * C), after(name), before(name), lrWdOf(g));
        console.log(`muonStepRef ${name}: relative error ${c.error.toExponential(2)}, ${c.flips} mask flips of ${c.size}`);
        expectWithin(`muonStepRef ${name}`, c);
      });
    }
  });

  it('without the flip allowance, a Muon parameter whose mask flips is caught by the comparison', () => {
    // guards the allowance itself: flipping the weight decay on one element must register as a flip
    const g = muonGroups[0];
    const name = g.params[0];
    const want = after(name), p = before(name);
    const got = Float32Array.from(want);
    const i = p.findIndex((v) => Math.abs(v) > 0.5 * Math.max(...p.map(Math.abs)));
    got[i] += lrWdOf(g) * Math.abs(p[i]) * Math.sign(p[i]);
    expect(compareAfterStep(got, want, p, lrWdOf(g)).flips).toBe(1);
    expect(compareAfterStep(got, want, p, 0).error).toBeGreaterThan(TOLERANCE.step);
  });
});
