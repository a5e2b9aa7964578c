/**
 * @file `npm run verify [-- <fixture.json>...]`: checks train.ts's model and optimizer against numbers
 * produced by the reference (format and provenance: fixtures/README.md); with no file, every fixture
 * shipped in fixtures/. Builds the GPT of train.ts from
 * the fixture's config and weights, runs forward (logits, per-token loss, mean loss), backward (every
 * gradient) and one MuonAdamW step with the fixture's parameter groups, prints the relative error of
 * every tensor and exits non-zero above the tolerances.
 *
 * Tolerances (fixtures/README.md): max|a−b| / max|b| below 1e-4 for loss, per-token loss and logits,
 * below 1e-3 for gradients and parameters after the step; for Muon parameters an element whose
 * difference equals lr'·wd·|p| counts as a cautious-weight-decay mask flip, not an error, while flips
 * stay at most 2% of the tensor.
 *
 * `--precision f16` builds the GPT in f16 compute (train.ts's PRECISION = 'f16': f16 activations and
 * matmul operands, f32 master weights and optimizer) against the same f32 reference, with the
 * mixed-precision tolerances of TOLERANCE_F16 (src/fixture.ts) for the forward and the gradients; the
 * f32 optimizer then steps from the reference's gradients and is held to the f32 tolerance (AdamW's
 * first step is sign-like: an f16-rounded gradient near zero flips a whole lr-sized update). f32
 * verification is unchanged.
 */
import { relative, resolve } from 'node:path';
import { GPT, MuonAdamW, type ParamGroup, windowSizes } from '../train.ts';
import { ctx, useRuntime } from './autograd/tape.ts';
import { Runtime } from './gpu/runtime.ts';
import type { Tensor } from './gpu/tensor.ts';
import { scale } from './autograd/basic.ts';
import { compareAfterStep, decodeF32, type Fixture, readFixture, relativeError, shippedFixtures, TOLERANCE, TOLERANCE_F16 } from './fixture.ts';
import { buildEmbeddingIndex } from './ops/embedding.ts';
import { scaleByScalarInPlace } from './ops/elementwise.ts';
import { choiceOption, CliError, runCommand } from './util/cli.ts';
import { isMain } from './util/main.ts';

export interface CheckRow {
  name: string;
  error: number;
  tolerance: number;
  ok: boolean;
  flips?: number;
  size: number;
}

/** A row for a parameter after the step; Muon parameters (lrWd > 0) may have mask flips. */
function stepRow(name: string, got: Float32Array, want: Float32Array, before: Float32Array, lrWd: number, tol: typeof TOLERANCE): CheckRow {
  const c = compareAfterStep(got, want, before, lrWd, tol);
  return { name, error: c.error, tolerance: tol.step, ok: c.ok, flips: lrWd > 0 ? c.flips : undefined, size: c.size };
}

function row(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tolerance: number): CheckRow {
  const error = relativeError(got, want);
  return { name, error, tolerance, ok: error < tolerance, size: want.length };
}

/** Runs every check of a fixture on train.ts's model and optimizer; returns the rows. */
export async function verifyFixture(rt: Runtime, fx: Fixture, precision: 'f32' | 'f16' = 'f32'): Promise<CheckRow[]> {
  useRuntime(rt);
  const tape = ctx();
  const rows: CheckRow[] = [];
  const cfg = fx.config;
  if (precision === 'f16' && !rt.f16) throw new Error(`--precision f16 needs an adapter with shader-f16; ${rt.gpu.info.name} has none`);
  const TOL = precision === 'f16' ? TOLERANCE_F16 : TOLERANCE;
  const model = new GPT(rt, cfg, precision);

  // the window sizes the reference computed
  const windows = windowSizes(cfg);
  const wantWindows = fx.window_sizes.map((w) => w[0]);
  rows.push({ name: 'window_sizes', error: windows.every((w, i) => w === wantWindows[i]) ? 0 : 1, tolerance: 0.5, ok: windows.every((w, i) => w === wantWindows[i]) && windows.length === wantWindows.length, size: windows.length });

  // weights by name
  const named = new Map(model.namedParameters());
  const fixtureNames = Object.keys(fx.params).sort();
  const modelNames = [...named.keys()].sort();
  if (fixtureNames.join() !== modelNames.join()) {
    throw new Error(`parameter names differ:\n  fixture only: ${fixtureNames.filter((n) => !named.has(n)).join(', ') || '-'}\n  model only: ${modelNames.filter((n) => !(n in fx.params)).join(', ') || '-'}`);
  }
  const before = new Map<string, Float32Array>();
  for (const [name, p] of named) {
    const { shape } = fx.params[name];
    if (shape.join() !== p.shape.join()) throw new Error(`${name}: fixture shape [${shape}] vs model [${p.shape}]`);
    const data = decodeF32(fx.params[name]);
    before.set(name, data);
    rt.write(p, data);
  }

  const B = fx.batch;
  const T = cfg.sequence_len;
  const idsHost = Int32Array.from(fx.idx);
  const ids = rt.keep(rt.fromArray(idsHost, [B, T], 'i32'));
  const targets = rt.keep(rt.fromArray(Int32Array.from(fx.targets), [B, T], 'i32'));
  const index = buildEmbeddingIndex(rt, idsHost, cfg.vocab_size);

  // forward: logits and per-token loss (no grad), then the mean loss with backward
  const logits = await rt.scopeAsync(async () => rt.read(model.logits(ids)));
  rows.push(row('logits', logits, decodeF32(fx.expected.logits), TOL.forward));
  const perToken = await rt.scopeAsync(async () => rt.read(tape.noGrad(() => model.forward({ ids, index: null }, targets, 'none'))));
  rows.push(row('per_token_loss', perToken, decodeF32(fx.expected.per_token_loss), TOL.forward));
  // f16 backward runs on the loss scaled to per-token units, as train.ts's loop does (its LOSS_SCALE)
  const lossScale = precision === 'f16' ? B * T : 1;
  const loss = await rt.scopeAsync(async () => {
    const l = model.forward({ ids, index }, targets);
    const value = await rt.item(l);
    tape.backward(lossScale === 1 ? l : scale(l, lossScale));
    if (lossScale !== 1) {
      const inv = rt.fromArray([1 / lossScale], [1]);
      for (const p of named.values()) if (p.grad) scaleByScalarInPlace(rt, p.grad, inv);
    }
    return value;
  });
  rows.push(row('loss', [loss], [fx.expected.loss], TOL.forward));

  for (const [name, p] of named) {
    const want = decodeF32(fx.expected.grads[name]);
    if (!p.grad) {
      rows.push({ name: `grad ${name}`, error: Infinity, tolerance: TOL.grad, ok: false, size: want.length });
      continue;
    }
    rows.push(row(`grad ${name}`, await rt.read(p.grad), want, TOL.grad));
  }

  // the optimizer groups train.ts builds must be the reference's (names, kinds, learning rates)
  const s = fx.optimizer.setup;
  const built = model.setupOptimizer({ unembeddingLr: s.unembedding_lr, embeddingLr: s.embedding_lr, matrixLr: s.matrix_lr, weightDecay: s.weight_decay, adamBetas: s.adam_betas, scalarLr: s.scalar_lr });
  const describe = (kind: string, names: string[], lr: number) => `${kind}:${names.join('+')}@${lr.toPrecision(6)}`;
  const builtGroups = built.paramGroups.map((g) => describe(g.kind, g.params.map((p) => p.name!), g.lr));
  const wantGroups = fx.optimizer.param_groups.map((g) => describe(g.kind, g.params, g.lr));
  const sameGroups = builtGroups.join('|') === wantGroups.join('|');
  rows.push({ name: 'param_groups', error: sameGroups ? 0 : 1, tolerance: 0.5, ok: sameGroups, size: wantGroups.length });
  if (!sameGroups) console.error(`param groups differ:\n  train.ts:  ${builtGroups.join('\n             ')}\n  reference: ${wantGroups.join('\n             ')}`);

  // one step with exactly the fixture's groups
  const groups: ParamGroup[] = fx.optimizer.param_groups.map((g) => {
    const params = g.params.map((n) => named.get(n)!);
    return g.kind === 'adamw'
      ? { kind: 'adamw', params, lr: g.lr, initialLr: g.lr, betas: g.betas!, eps: g.eps!, weightDecay: g.weight_decay }
      : { kind: 'muon', params, lr: g.lr, initialLr: g.lr, momentum: g.momentum ?? fx.optimizer.muon_momentum, nsSteps: g.ns_steps!, beta2: g.beta2!, weightDecay: g.weight_decay };
  });
  const optimizer = new MuonAdamW(rt, groups);
  if (precision === 'f16') {
    // the optimizer runs in f32 in both precisions: in f16 it steps from the reference's gradients, so
    // gradient rounding (checked above) is not counted twice through AdamW's sign-like first step
    for (const [name, p] of named) if (p.grad) rt.write(p.grad, decodeF32(fx.expected.grads[name]));
  }
  optimizer.step();
  const muonLrWd = new Map<Tensor, number>();
  for (const g of groups) {
    if (g.kind !== 'muon') continue;
    const [R, C] = g.params[0].shape;
    for (const p of g.params) muonLrWd.set(p, g.lr * Math.sqrt(Math.max(1, R / C)) * g.weightDecay);
  }
  for (const [name, p] of named) {
    const want = decodeF32(fx.expected.params_after_step[name]);
    const got = await rt.read(p);
    const lrWd = muonLrWd.get(p);
    rows.push(stepRow(`step ${name}`, got, want, before.get(name)!, lrWd ?? 0, TOL));
  }
  return rows;
}

export function formatRows(rows: CheckRow[]): string {
  const width = Math.max(...rows.map((r) => r.name.length));
  return rows
    .map((r) => `${r.ok ? 'ok  ' : 'FAIL'}  ${r.name.padEnd(width)}  rel err ${r.error.toExponential(2)}  (tol ${r.tolerance.toExponential(0)})${r.flips !== undefined ? `  mask flips ${r.flips}/${r.size}` : ''}`)
    .join('\n');
}

const VERIFY_CLI = {
  run: 'npm run verify',
  name: 'verify',
  usage: `Usage: npm run verify [-- [--precision f32|f16] <fixture.json>...]     (or: npx tsx src/verify.ts [...])

Checks train.ts's GPT and MuonAdamW against reference numbers: forward (logits, per-token loss, loss),
every gradient, and one optimizer step, each against the fixture README's tolerances. Prints one row
per check and exits 1 if any fails.

  <fixture.json>   fixture files (format: fixtures/README.md); default: every fixture in fixtures/
                   (gpt-tiny.json from the PyTorch reference, the others from the CPU reference)
  --precision P    f32 (default) or f16: train.ts's PRECISION 'f16' (f16 activations and matmul
                   operands, f32 master weights) against the same reference, with the mixed-precision
                   tolerances (TOLERANCE_F16 in src/fixture.ts); needs an adapter with shader-f16
  -h, --help       this text`,
  options: { precision: { type: 'string' as const } },
  positionals: { max: Infinity, what: 'fixture files' },
};

/** The command: returns the exit status (1 when a check fails). */
export async function main(argv: readonly string[]): Promise<number> {
  return runCommand(VERIFY_CLI, argv, async ({ positionals, values }) => {
    const precision = choiceOption('precision', values.precision, ['f32', 'f16'] as const) ?? 'f32';
    const paths = positionals.length ? positionals.map((p) => resolve(p)) : shippedFixtures();
    if (!paths.length) throw new CliError('no fixtures in fixtures/; pass a fixture file');
    // read every fixture before starting the GPU: a wrong path fails in one line, at once
    const fixtures = paths.map((path) => {
      try {
        return { path, fx: readFixture(path) };
      } catch (e) {
        throw new CliError(`${(e as Error).message}; pass a fixture file (e.g. fixtures/gpt-tiny.json), or none for every shipped fixture`);
      }
    });
    const rt = await Runtime.create();
    console.log(rt.gpu.describe());
    let failedFixtures = 0;
    for (const { path, fx } of fixtures) {
      console.log(`\nfixture: ${relative(process.cwd(), path) || path} ${JSON.stringify(fx.config)} precision ${precision}`);
      const rows = await verifyFixture(rt, fx, precision);
      console.log(formatRows(rows));
      const failed = rows.filter((r) => !r.ok);
      console.log(failed.length ? `${failed.length} of ${rows.length} checks FAILED` : `all ${rows.length} checks passed`);
      if (failed.length) failedFixtures++;
    }
    if (fixtures.length > 1) console.log(`\n${fixtures.length - failedFixtures} of ${fixtures.length} fixtures passed`);
    return failedFixtures ? 1 : 0;
  });
}

if (isMain(import.meta.url)) process.exit(await main(process.argv.slice(2)));
