/**
 * @file Fixtures in the format of fixtures/README.md, computed by the CPU reference GPT
 * and MuonAdamW of ./model.ts, for any config: `makeFixture(config, seed)` draws random parameters
 * (random values, not the init, so every gradient is non-zero) and random tokens, then records the
 * reference's logits, per-token loss, loss, every gradient, the optimizer's parameter groups and
 * the parameters after one MuonAdamW step. `buildFixture` does the same for given inputs (the
 * shipped gpt-tiny's, to prove the reference right).
 */
import { Rng } from '../../src/util/rng.ts';
import {
  type OptimizerSetup,
  type Params,
  REFERENCE_SETUP,
  type RefConfig,
  refBackward,
  refForward,
  refOptimizerStep,
  refParamGroups,
  refParamSpecs,
  refWindowSizes,
} from './model.ts';
import { decodeF32 as decodePacked, encodeF32, type Fixture, type PackedF32 } from '../../src/fixture.ts';

export type { PackedF32 } from '../../src/fixture.ts';
export { decodeF32 as decodePacked, encodeF32 } from '../../src/fixture.ts';

/** The fixture JSON (fixtures/README.md) as this generator writes it: every field present. */
export interface FixtureJson extends Fixture {
  name: string;
  generator: string;
  expected: Fixture['expected'] & { per_token_loss: PackedF32; logits: PackedF32 };
  optimizer: Fixture['optimizer'] & { setup: OptimizerSetup };
}

/** get_muon_momentum(0): the momentum of the first step. */
export const FIRST_STEP_MUON_MOMENTUM = 0.85;

/** The inputs of a fixture: parameters by name, and token ids / targets [batch, sequence_len]. */
export interface FixtureInputs {
  params: Params;
  idx: Int32Array;
  targets: Int32Array;
}

export interface FixtureOptions {
  name?: string;
  /** Rows of the batch (makeFixture; default 2). */
  batch?: number;
  /** Fraction of targets set to −1 (ignored by the loss) in makeFixture; default 0. */
  ignoreFraction?: number;
  /** Logit softcap of the reference computation (default 15). Only negative tests change it. */
  softcap?: number;
  setup?: OptimizerSetup;
  muonMomentum?: number;
}

/**
 * Random inputs for a config: matrices ~ N(0, (0.5/√fan_in)²), wte and value_embeds ~ N(0, 0.25),
 * resid_lambdas ~ U(0.8, 1.4), x0_lambdas ~ U(−0.4, 0.4) (the scales of the shipped gpt-tiny);
 * token ids and targets uniform over the vocabulary.
 */
export function randomInputs(config: RefConfig, seed: number, batch = 2, ignoreFraction = 0): FixtureInputs {
  const rng = new Rng(seed);
  const params: Params = new Map();
  for (const { name, shape } of refParamSpecs(config)) {
    const size = shape.reduce((p, d) => p * d, 1);
    let values: Float32Array;
    if (name === 'resid_lambdas') values = rng.uniformArray(size, 0.8, 1.4);
    else if (name === 'x0_lambdas') values = rng.uniformArray(size, -0.4, 0.4);
    else if (name === 'transformer.wte.weight' || name.startsWith('value_embeds.')) values = rng.normalArray(size, 0.5);
    else values = rng.normalArray(size, 0.5 / Math.sqrt(shape[1]));
    params.set(name, values);
  }
  const n = batch * config.sequence_len;
  const idx = Int32Array.from({ length: n }, () => rng.int(config.vocab_size));
  const targets = Int32Array.from({ length: n }, () => rng.int(config.vocab_size));
  if (ignoreFraction > 0) {
    for (let i = 0; i < n; i++) if (rng.next() < ignoreFraction) targets[i] = -1;
    if (targets.every((t) => t === -1)) targets[0] = 0; // keep the mean defined
  }
  return { params, idx, targets };
}

/** The fixture for given inputs: the reference's forward, backward and one optimizer step. */
export function buildFixture(config: RefConfig, inputs: FixtureInputs, o: FixtureOptions = {}): FixtureJson {
  const specs = refParamSpecs(config);
  const T = config.sequence_len;
  const batch = inputs.idx.length / T;
  const setup = o.setup ?? REFERENCE_SETUP;
  const muonMomentum = o.muonMomentum ?? FIRST_STEP_MUON_MOMENTUM;
  const fwd = refForward(config, inputs.params, inputs.idx, inputs.targets, { softcap: o.softcap });
  const grads = refBackward(inputs.params, fwd);
  const groups = refParamGroups(config, setup, muonMomentum);
  const after = refOptimizerStep(config, inputs.params, grads, groups);
  const pack = (m: Params) => Object.fromEntries(specs.map(({ name, shape }) => [name, encodeF32(m.get(name)!, shape)]));
  return {
    name: o.name ?? `ref-${config.n_layer}l-${config.n_head}h${config.n_kv_head}kv-${config.n_embd}c-T${T}-V${config.vocab_size}-${config.window_pattern}`,
    generator: 'test/reference/model.ts: CPU reference GPT and MuonAdamW from the plain-TS references in src/ops (float32 storage)',
    config: { ...config },
    window_sizes: refWindowSizes(config).map((w) => [w, 0] as [number, number]),
    batch,
    idx: Array.from(inputs.idx),
    targets: Array.from(inputs.targets),
    params: pack(inputs.params),
    expected: {
      loss: fwd.loss,
      per_token_loss: encodeF32(fwd.perTokenLoss, [batch * T]),
      logits: encodeF32(fwd.logits, [batch, T, config.vocab_size]),
      grads: pack(grads),
      params_after_step: pack(after),
    },
    optimizer: {
      step: 1,
      muon_momentum: muonMomentum,
      setup: { ...setup, adam_betas: [setup.adam_betas[0], setup.adam_betas[1]] },
      param_groups: groups,
    },
  };
}

/**
 * A fixture for `config` from random parameters and tokens drawn with `seed`. Throws when some
 * gradient is identically zero (e.g. sequence_len 1: attention over one key ignores q and k), since
 * the format promises non-zero gradients and Muon would then turn rounding noise into a full step.
 */
export function makeFixture(config: RefConfig, seed: number, o: FixtureOptions = {}): FixtureJson {
  const fx = buildFixture(config, randomInputs(config, seed, o.batch ?? 2, o.ignoreFraction ?? 0), o);
  for (const [name, packed] of Object.entries(fx.expected.grads)) {
    const g = decodePacked(packed);
    if (!g.every(Number.isFinite)) throw new Error(`makeFixture: gradient of ${name} is not finite (config ${JSON.stringify(config)})`);
    if (g.every((v) => v === 0)) throw new Error(`makeFixture: gradient of ${name} is identically zero (config ${JSON.stringify(config)})`);
  }
  return fx;
}

/** The inputs of an existing fixture (its params, idx, targets). */
export function fixtureInputs(fx: Pick<FixtureJson, 'params' | 'idx' | 'targets'>): FixtureInputs {
  const params: Params = new Map(Object.entries(fx.params).map(([n, p]) => [n, decodePacked(p)]));
  return { params, idx: Int32Array.from(fx.idx), targets: Int32Array.from(fx.targets) };
}

/** A config the tests generate a fixture for, with its seed and options. */
export interface GeneratedCase {
  config: RefConfig;
  seed: number;
  options: FixtureOptions;
}

/**
 * Configs beyond gpt-tiny, each small enough for the software adapter:
 * - `gqa-3l-ssl`: 3 layers, n_kv_head < n_head (4 / 2, head_dim 8), pattern SSL, T = 24 (windows
 *   12, 12, 24), vocab 50; value embeddings on layers 0 and 2;
 * - `mqa-1l-l`: 1 layer, pattern L, n_head 4 / n_kv_head 1 (one kv head, a [1, 32] ve_gate);
 * - `odd-4l-sl`: 4 layers, n_embd 48 (head_dim 12), odd T = 13 (windows 6 / 13), vocab 37,
 *   batch 3, about a fifth of the targets −1 (ignored).
 */
export const GENERATED_CASES: readonly GeneratedCase[] = [
  {
    config: { sequence_len: 24, vocab_size: 50, n_layer: 3, n_head: 4, n_kv_head: 2, n_embd: 32, window_pattern: 'SSL' },
    seed: 101,
    options: { name: 'gqa-3l-ssl' },
  },
  {
    config: { sequence_len: 16, vocab_size: 40, n_layer: 1, n_head: 4, n_kv_head: 1, n_embd: 32, window_pattern: 'L' },
    seed: 202,
    options: { name: 'mqa-1l-l' },
  },
  {
    config: { sequence_len: 13, vocab_size: 37, n_layer: 4, n_head: 4, n_kv_head: 2, n_embd: 48, window_pattern: 'SL' },
    seed: 303,
    options: { name: 'odd-4l-sl', batch: 3, ignoreFraction: 0.2 },
  },
];
