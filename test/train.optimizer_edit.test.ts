/**
 * The optimizer's math lives in train.ts, so the agent's edits to it take effect: copies of
 * train.ts with a different Polar Express (Newton–Schulz) iteration count, or without the
 * cautious weight-decay mask, step the same model from the same gradients to different
 * parameters, while an unedited copy reproduces the original exactly.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { useRuntime } from '../src/autograd/tape.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { Rng } from '../src/util/rng.ts';
import { testRuntime } from './setup.ts';

const rt = (await testRuntime()) as Runtime;
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SOURCE = readFileSync(`${ROOT}train.ts`, 'utf8');
const written: string[] = [];
afterAll(() => written.forEach((f) => rmSync(f, { force: true })));

type TrainModule = typeof import('../train.ts');

/** A copy of train.ts with `edits` applied, beside it (so its imports resolve), imported. */
async function variant(name: string, edits: [string, string][]): Promise<TrainModule> {
  let text = SOURCE;
  for (const [from, to] of edits) {
    expect(text.split(from).length - 1, `'${from}' occurs once in train.ts`).toBe(1);
    text = text.replace(from, to);
  }
  const file = `${ROOT}.train-edit-${process.pid}-${name}.ts`;
  writeFileSync(file, text);
  written.push(file);
  return (await import(/* @vite-ignore */ file)) as TrainModule;
}

/** Every parameter after one MuonAdamW step of a tiny GPT from seeded weights and gradients. */
async function stepOnce(m: TrainModule): Promise<Map<string, Float32Array>> {
  useRuntime(rt);
  const model = new m.GPT(rt, m.buildModelConfig(2, 48, { aspectRatio: 32, headDim: 32, seqLen: 16 }));
  model.initWeights();
  const rng = new Rng(11);
  for (const [, p] of model.namedParameters()) {
    p.grad = rt.keep(rt.fromArray(rng.normalArray(p.size, 0.02), p.shape));
  }
  const optimizer = model.setupOptimizer(m.OPTIMIZER_SETTINGS);
  optimizer.step();
  const out = new Map<string, Float32Array>();
  for (const [name, p] of model.namedParameters()) out.set(name, await rt.read(p));
  optimizer.zeroGrad();
  return out;
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}

describe.skipIf(!rt)('edits to the optimizer in train.ts change its result', () => {
  let base: Map<string, Float32Array>;
  const muonName = 'transformer.h.0.attn.c_q.weight';
  const adamName = 'lm_head.weight';

  it('an unedited copy reproduces the original step exactly', async () => {
    base = await stepOnce(await variant('same', []));
    const again = await stepOnce(await variant('same2', []));
    for (const [name, values] of base) expect(maxRelDiff(again.get(name)!, values), name).toBe(0);
  });

  it('3 Newton–Schulz (Polar Express) iterations instead of 5 change the Muon parameters only', async () => {
    const edited = await stepOnce(await variant('ns3', [['nsSteps: 5', 'nsSteps: 3']]));
    expect(maxRelDiff(edited.get(muonName)!, base.get(muonName)!)).toBeGreaterThan(1e-3);
    expect(maxRelDiff(edited.get(adamName)!, base.get(adamName)!)).toBe(0);
  });

  it('dropping the cautious mask (decay every element) changes the Muon parameters', async () => {
    const edited = await stepOnce(await variant('nomask', [["{ c: 0 }); // (g · p) ≥ 0", '{ c: -Infinity }); // every element decays']]));
    const d = maxRelDiff(edited.get(muonName)!, base.get(muonName)!);
    expect(d).toBeGreaterThan(1e-4);
    expect(maxRelDiff(edited.get(adamName)!, base.get(adamName)!)).toBe(0);
  });
});
