/**
 * The CPU reference GPT + MuonAdamW (test/reference/model.ts) and its fixtures (fixture.ts).
 * First proven against the reference's own numbers, the shipped gpt-tiny fixture; then its backward
 * against finite differences of its forward on a config gpt-tiny does not cover (GQA, value
 * embeddings on two layers, short windows, ignored targets); then the generated fixtures' contents,
 * and that the copies shipped in fixtures/ are exactly what generate.ts writes today.
 * CPU only: no GPU adapter needed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES_DIR } from '../../src/fixture.ts';
import { Rng } from '../../src/util/rng.ts';
import { relError } from '../setup.ts';
import { buildFixture, decodePacked, type FixtureJson, fixtureInputs, GENERATED_CASES, makeFixture, randomInputs } from './fixture.ts';
import { REFERENCE_SETUP, type RefConfig, refBackward, refForward, refParamGroups, refParamSpecs, refWindowSizes } from './model.ts';

const SHIPPED = join(FIXTURES_DIR, 'gpt-tiny.json');
/**
 * The CPU reference must reproduce the reference's float32 numbers to rounding: measured ≤ 1.6e-6
 * relative per tensor (forward, gradients and parameters after the step). The fixture README's
 * tolerances for GPU kernels are looser (1e-4 forward, 1e-3 gradients and step).
 */
const MATCH = 1e-5;

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

describe('CPU reference vs the shipped gpt-tiny fixture', () => {
  const shipped = JSON.parse(readFileSync(SHIPPED, 'utf8')) as FixtureJson;
  const mine = buildFixture(shipped.config, fixtureInputs(shipped));

  it('logits, per-token loss and loss', () => {
    expect(relError(decodePacked(mine.expected.logits), decodePacked(shipped.expected.logits)), 'logits').toBeLessThan(MATCH);
    expect(relError(decodePacked(mine.expected.per_token_loss), decodePacked(shipped.expected.per_token_loss)), 'per-token loss').toBeLessThan(MATCH);
    expect(Math.abs(mine.expected.loss - shipped.expected.loss) / shipped.expected.loss, 'loss').toBeLessThan(MATCH);
    expect(mine.expected.logits.shape).toEqual(shipped.expected.logits.shape);
    expect(mine.expected.per_token_loss.shape).toEqual(shipped.expected.per_token_loss.shape);
  });

  it('every gradient', () => {
    expect(Object.keys(mine.expected.grads)).toEqual(Object.keys(shipped.expected.grads));
    for (const [name, want] of Object.entries(shipped.expected.grads)) {
      const got = mine.expected.grads[name];
      expect(got.shape, name).toEqual(want.shape);
      expect(relError(decodePacked(got), decodePacked(want)), `grad ${name}`).toBeLessThan(MATCH);
    }
  });

  it('parameter names and order, window sizes, optimizer groups and setup', () => {
    expect(Object.keys(mine.params)).toEqual(Object.keys(shipped.params));
    expect(refParamSpecs(shipped.config).map((s) => s.shape)).toEqual(Object.values(shipped.params).map((p) => p.shape));
    expect(mine.window_sizes).toEqual(shipped.window_sizes);
    expect(mine.optimizer.setup).toEqual(shipped.optimizer.setup);
    expect(mine.optimizer.muon_momentum).toBe(shipped.optimizer.muon_momentum);
    expect(mine.optimizer.step).toBe(shipped.optimizer.step);
    expect(mine.optimizer.param_groups).toEqual(shipped.optimizer.param_groups); // lr to the last bit
  });

  it('parameters after one MuonAdamW step', () => {
    expect(Object.keys(mine.expected.params_after_step)).toEqual(Object.keys(shipped.expected.params_after_step));
    for (const [name, want] of Object.entries(shipped.expected.params_after_step)) {
      expect(relError(decodePacked(mine.expected.params_after_step[name]), decodePacked(want)), `step ${name}`).toBeLessThan(MATCH);
    }
  });
});

describe('CPU reference backward vs finite differences of its forward', () => {
  // GQA (4 query heads on 2 kv heads), value embeddings on layers 0 and 2, windows 6/6/12, ignored targets
  const config: RefConfig = { sequence_len: 12, vocab_size: 23, n_layer: 3, n_head: 4, n_kv_head: 2, n_embd: 32, window_pattern: 'SSL' };
  const inputs = randomInputs(config, 5, 2, 0.2);
  const loss = (params: Map<string, Float32Array>) => refForward(config, params, inputs.idx, inputs.targets).loss;
  const grads = refBackward(inputs.params, refForward(config, inputs.params, inputs.idx, inputs.targets));
  const rng = new Rng(9);

  it.each(refParamSpecs(config).map((s) => s.name))('%s', (name) => {
    // direction u = unit(ĝ + random unit vector): a large directional derivative (float32 losses are
    // noisy) that still checks the gradient's components off its own direction
    const p = inputs.params.get(name)!, g = grads.get(name)!;
    const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, v) => s + v * v, 0));
    const r = rng.normalArray(p.length, 1);
    const gn = norm(g), rn = norm(r);
    expect(gn, `${name}: gradient is zero`).toBeGreaterThan(0);
    const u = r.map((v, i) => v / rn + g[i] / gn);
    const un = norm(u);
    const rms = norm(p) / Math.sqrt(p.length);
    const h = 0.03 * Math.max(rms, 0.1);
    const shifted = (s: number) => new Map(inputs.params).set(name, p.map((v, i) => v + (s * u[i]) / un));
    const numeric = (loss(shifted(h)) - loss(shifted(-h))) / (2 * h);
    let analytic = 0;
    for (let i = 0; i < g.length; i++) analytic += (g[i] * u[i]) / un;
    expect(Math.abs(numeric - analytic) / Math.abs(analytic), `${name}: numeric ${numeric} vs analytic ${analytic}`).toBeLessThan(5e-3);
  });
});

describe('window sizes and parameter groups', () => {
  const cfg = (n_layer: number, sequence_len: number, window_pattern: string): RefConfig => ({ sequence_len, vocab_size: 8, n_layer, n_head: 2, n_kv_head: 2, n_embd: 32, window_pattern });

  it('S = T // 2, L = T, pattern repeated, last layer always L', () => {
    expect(refWindowSizes(cfg(3, 24, 'SSL'))).toEqual([12, 12, 24]);
    expect(refWindowSizes(cfg(4, 13, 'SL'))).toEqual([6, 13, 6, 13]);
    expect(refWindowSizes(cfg(3, 8, 'S'))).toEqual([4, 4, 8]);
    expect(refWindowSizes(cfg(5, 10, 'ls'))).toEqual([10, 5, 10, 5, 10]); // the reference upper-cases the pattern
    expect(refWindowSizes(cfg(1, 7, 'S'))).toEqual([7]);
    expect(() => refWindowSizes(cfg(2, 8, 'SX'))).toThrow(/window_pattern/);
  });

  it('AdamW groups first, then one Muon group per shape (sorted), params in module order', () => {
    const config = GENERATED_CASES[0].config; // 3 layers, n_head 4, n_kv_head 2, n_embd 32
    const groups = refParamGroups(config, REFERENCE_SETUP, 0.85);
    const scale = Math.sqrt(768 / 32);
    expect(groups.slice(0, 5).map((g) => [g.kind, g.params, g.lr])).toEqual([
      ['adamw', ['lm_head.weight'], 0.004 * scale],
      ['adamw', ['transformer.wte.weight'], 0.6 * scale],
      ['adamw', ['value_embeds.0.weight', 'value_embeds.2.weight'], 0.6 * scale],
      ['adamw', ['resid_lambdas'], 0.005],
      ['adamw', ['x0_lambdas'], 0.5],
    ].map(([k, p, lr]) => [k, p, expect.closeTo(lr as number, 12)]));
    const h = (i: number, m: string) => `transformer.h.${i}.${m}.weight`;
    const layers = [0, 1, 2];
    expect(groups.slice(5).map((g) => [g.kind, g.params])).toEqual([
      ['muon', [h(0, 'attn.ve_gate'), h(2, 'attn.ve_gate')]], // [2, 32]
      ['muon', layers.flatMap((i) => [h(i, 'attn.c_k'), h(i, 'attn.c_v')])], // [16, 32]
      ['muon', layers.flatMap((i) => [h(i, 'attn.c_q'), h(i, 'attn.c_proj')])], // [32, 32]
      ['muon', layers.map((i) => h(i, 'mlp.c_proj'))], // [32, 128]
      ['muon', layers.map((i) => h(i, 'mlp.c_fc'))], // [128, 32]
    ]);
    for (const g of groups.slice(5)) {
      expect(g).toMatchObject({ lr: 0.04, initial_lr: 0.04, momentum: 0.85, ns_steps: 5, beta2: 0.95, weight_decay: 0.2 });
    }
    expect(groups[4]).toMatchObject({ betas: [0.96, 0.95], eps: 1e-10, weight_decay: 0 });
  });
});

describe('makeFixture', () => {
  it.each(GENERATED_CASES.map((c) => [c.options.name, c] as const))('%s: complete, consistent and deterministic', (_, c) => {
    const fx = makeFixture(c.config, c.seed, c.options);
    const { sequence_len: T, vocab_size: V } = c.config;
    const B = c.options.batch ?? 2;
    const specs = refParamSpecs(c.config);
    expect(fx.batch).toBe(B);
    expect(fx.idx.length).toBe(B * T);
    expect(fx.targets.length).toBe(B * T);
    expect(fx.idx.every((t) => t >= 0 && t < V)).toBe(true);
    expect(fx.window_sizes).toEqual(refWindowSizes(c.config).map((w) => [w, 0]));
    expect(fx.expected.logits.shape).toEqual([B, T, V]);
    expect(fx.expected.per_token_loss.shape).toEqual([B * T]);
    for (const key of ['params', 'grads', 'params_after_step'] as const) {
      const m = key === 'params' ? fx.params : fx.expected[key];
      expect(Object.keys(m), key).toEqual(specs.map((s) => s.name));
      for (const s of specs) expect(decodePacked(m[s.name]).length, `${key} ${s.name}`).toBe(size(s.shape));
    }
    for (const s of specs) {
      const before = decodePacked(fx.params[s.name]), after = decodePacked(fx.expected.params_after_step[s.name]);
      expect(decodePacked(fx.expected.grads[s.name]).some((v) => v !== 0), `grad ${s.name} non-zero`).toBe(true);
      expect(relError(after, before), `${s.name} moved by the step`).toBeGreaterThan(1e-4);
    }
    // loss = mean of the per-token losses over targets ≠ −1; ignored tokens have loss 0
    const perToken = decodePacked(fx.expected.per_token_loss);
    const kept = fx.targets.map((t, i) => (t === -1 ? null : perToken[i])).filter((v): v is number => v !== null);
    expect(fx.targets.filter((t, i) => t === -1 && perToken[i] !== 0)).toEqual([]);
    if (c.options.ignoreFraction) expect(kept.length).toBeLessThan(B * T);
    expect(fx.expected.loss).toBeCloseTo(kept.reduce((a, v) => a + v, 0) / kept.length, 5);
    expect(fx.expected.loss).toBeGreaterThan(0);
    // same seed, same fixture; another seed, other numbers
    expect(JSON.stringify(makeFixture(c.config, c.seed, c.options))).toBe(JSON.stringify(fx));
    expect(makeFixture(c.config, c.seed + 1, c.options).params['lm_head.weight'].f32).not.toBe(fx.params['lm_head.weight'].f32);
  });

  it.each(GENERATED_CASES.map((c) => [c.options.name, c] as const))('fixtures/%s.json is what generate.ts writes (rerun it after changing the reference)', (name, c) => {
    const file = readFileSync(join(FIXTURES_DIR, `${name}.json`), 'utf8');
    expect(file === JSON.stringify(makeFixture(c.config, c.seed, c.options)) + '\n').toBe(true);
  });

  it('refuses a config whose gradients vanish (T = 1: attention over one key ignores q and k)', () => {
    const config: RefConfig = { sequence_len: 1, vocab_size: 11, n_layer: 1, n_head: 2, n_kv_head: 2, n_embd: 32, window_pattern: 'L' };
    expect(() => makeFixture(config, 1)).toThrow(/c_q\.weight is identically zero/);
  });

  it('rejects configs the reference rejects', () => {
    const base: RefConfig = { sequence_len: 8, vocab_size: 11, n_layer: 1, n_head: 4, n_kv_head: 4, n_embd: 32, window_pattern: 'L' };
    expect(() => makeFixture({ ...base, n_kv_head: 3 }, 1)).toThrow(/n_kv_head 3 must divide n_head 4/);
    expect(() => makeFixture({ ...base, n_head: 3 }, 1)).toThrow(/not a multiple of n_head/);
    expect(() => makeFixture({ ...base, n_embd: 16, n_head: 2, n_kv_head: 2 }, 1)).toThrow(/ve_gate/);
  });
});
