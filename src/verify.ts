/**
 * @file `npm run verify -- <fixture.json>`: checks train.ts's model and optimizer against numbers
 * produced by the reference (format: ../shared/fixtures/README.md). Builds the GPT of train.ts from
 * the fixture's config and weights, runs forward (logits, per-token loss, mean loss), backward (every
 * gradient) and one MuonAdamW step with the fixture's parameter groups, prints the relative error of
 * every tensor and exits non-zero above the tolerances.
 *
 * Tolerances (fixtures/README.md): max|a−b| / max|b| below 1e-4 for loss, per-token loss and logits,
 * below 1e-3 for gradients and parameters after the step; for Muon parameters an element whose
 * difference equals lr'·wd·|p| counts as a cautious-weight-decay mask flip, not an error, while flips
 * stay at most 2% of the tensor.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { GPT, type GPTConfig, MuonAdamW, type ParamGroup, windowSizes } from '../train.ts';
import { ctx, useRuntime } from './autograd/tape.ts';
import { Runtime } from './gpu/runtime.ts';
import type { Tensor } from './gpu/tensor.ts';
import { buildEmbeddingIndex } from './ops/embedding.ts';
import { isMain } from './util/main.ts';

export interface Fixture {
  name?: string;
  config: GPTConfig;
  window_sizes: [number, number][];
  batch: number;
  idx: number[];
  targets: number[];
  params: Record<string, { shape: number[]; f32: string }>;
  expected: {
    loss: number;
    per_token_loss: number[] | { shape: number[]; f32: string };
    logits: number[] | { shape: number[]; f32: string };
    grads: Record<string, { shape: number[]; f32: string }>;
    params_after_step: Record<string, { shape: number[]; f32: string }>;
  };
  optimizer: {
    step: number;
    muon_momentum: number;
    setup: { unembedding_lr: number; embedding_lr: number; matrix_lr: number; weight_decay: number; adam_betas: [number, number]; scalar_lr: number };
    param_groups: Array<{
      kind: 'adamw' | 'muon';
      params: string[];
      lr: number;
      betas?: [number, number];
      eps?: number;
      weight_decay: number;
      momentum?: number;
      ns_steps?: number;
      beta2?: number;
    }>;
  };
}

export const TOLERANCE = { forward: 1e-4, grad: 1e-3, step: 1e-3, maxFlipFraction: 0.02 };

/** Decodes base64 little-endian float32 (or passes plain arrays through). */
export function decodeF32(v: number[] | { f32: string }): Float32Array {
  if (Array.isArray(v)) return Float32Array.from(v);
  const bytes = Buffer.from(v.f32, 'base64');
  const out = new Float32Array(bytes.length / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** max|a−b| / max|b| */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    num = Number.isNaN(d) ? Infinity : Math.max(num, d);
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}

export interface CheckRow {
  name: string;
  error: number;
  tolerance: number;
  ok: boolean;
  flips?: number;
  size: number;
}

/**
 * Compares a Muon parameter after the step, counting mask flips: elements whose difference from the
 * expected value equals lr'·wd·|p_before| (within the tolerance) are flips, not errors.
 */
export function compareWithFlips(name: string, got: Float32Array, want: Float32Array, before: Float32Array, lrWd: number): CheckRow {
  let den = 0;
  for (const w of want) den = Math.max(den, Math.abs(w));
  const tol = TOLERANCE.step * (den || 1);
  let num = 0, flips = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (d > tol && Math.abs(d - lrWd * Math.abs(before[i])) <= tol) {
      flips++;
      continue;
    }
    num = Number.isNaN(d) ? Infinity : Math.max(num, d);
  }
  const error = den === 0 ? num : num / den;
  const ok = error < TOLERANCE.step && flips <= TOLERANCE.maxFlipFraction * want.length;
  return { name, error, tolerance: TOLERANCE.step, ok, flips, size: want.length };
}

function row(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tolerance: number): CheckRow {
  const error = relativeError(got, want);
  return { name, error, tolerance, ok: error < tolerance, size: want.length };
}

/** Runs every check of a fixture on train.ts's model and optimizer; returns the rows. */
export async function verifyFixture(rt: Runtime, fx: Fixture): Promise<CheckRow[]> {
  useRuntime(rt);
  const tape = ctx();
  const rows: CheckRow[] = [];
  const cfg = fx.config;
  const model = new GPT(rt, cfg);

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
  rows.push(row('logits', logits, decodeF32(fx.expected.logits), TOLERANCE.forward));
  const perToken = await rt.scopeAsync(async () => rt.read(tape.noGrad(() => model.forward({ ids, index: null }, targets, 'none'))));
  rows.push(row('per_token_loss', perToken, decodeF32(fx.expected.per_token_loss), TOLERANCE.forward));
  const loss = await rt.scopeAsync(async () => {
    const l = model.forward({ ids, index }, targets);
    const value = await rt.item(l);
    tape.backward(l);
    return value;
  });
  rows.push(row('loss', [loss], [fx.expected.loss], TOLERANCE.forward));

  for (const [name, p] of named) {
    const want = decodeF32(fx.expected.grads[name]);
    if (!p.grad) {
      rows.push({ name: `grad ${name}`, error: Infinity, tolerance: TOLERANCE.grad, ok: false, size: want.length });
      continue;
    }
    rows.push(row(`grad ${name}`, await rt.read(p.grad), want, TOLERANCE.grad));
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
    rows.push(lrWd === undefined ? row(`step ${name}`, got, want, TOLERANCE.step) : compareWithFlips(`step ${name}`, got, want, before.get(name)!, lrWd));
  }
  return rows;
}

export function formatRows(rows: CheckRow[]): string {
  const width = Math.max(...rows.map((r) => r.name.length));
  return rows
    .map((r) => `${r.ok ? 'ok  ' : 'FAIL'}  ${r.name.padEnd(width)}  rel err ${r.error.toExponential(2)}  (tol ${r.tolerance.toExponential(0)})${r.flips !== undefined ? `  mask flips ${r.flips}/${r.size}` : ''}`)
    .join('\n');
}

async function main(): Promise<void> {
  const path = process.argv[2];
  if (!path) {
    console.error('usage: npm run verify -- <fixture.json>   (e.g. ../shared/fixtures/gpt-tiny.json)');
    process.exit(2);
  }
  const fx = JSON.parse(readFileSync(resolve(path), 'utf8')) as Fixture;
  const rt = await Runtime.create();
  console.log(rt.gpu.describe());
  console.log(`fixture: ${path} ${JSON.stringify(fx.config)}`);
  const rows = await verifyFixture(rt, fx);
  console.log(formatRows(rows));
  const failed = rows.filter((r) => !r.ok);
  console.log(failed.length ? `\n${failed.length} of ${rows.length} checks FAILED` : `\nall ${rows.length} checks passed`);
  process.exit(failed.length ? 1 : 0);
}

if (isMain(import.meta.url)) await main();
