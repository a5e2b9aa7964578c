/**
 * @file The reference-fixture format (fixtures/README.md): types, float32 packing, where the shipped
 * fixtures live, and the README's comparison rules — shared by `npm run verify`, the optimizer tests
 * and the CPU reference that generates fixtures. Depends on nothing in src/ but Node's Buffer and fs.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's fixtures/ directory (gpt-tiny.json from the PyTorch reference, and the CPU reference's). */
export const FIXTURES_DIR = fileURLToPath(new URL('../fixtures/', import.meta.url));

/** The shipped fixture files, gpt-tiny.json first, then the others by name. */
export function shippedFixtures(dir = FIXTURES_DIR): string[] {
  const names = readdirSync(dir).filter((n) => n.endsWith('.json')).sort((a, b) => (a === 'gpt-tiny.json' ? -1 : b === 'gpt-tiny.json' ? 1 : a.localeCompare(b)));
  return names.map((n) => join(dir, n));
}

/** Reads a fixture file; the error names the file and what is wrong with it. */
export function readFixture(path: string): Fixture {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read fixture ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  let fx: Fixture;
  try {
    fx = JSON.parse(text) as Fixture;
  } catch (e) {
    throw new Error(`fixture ${path} is not valid JSON (${(e as Error).message})`);
  }
  for (const key of ['config', 'params', 'expected', 'optimizer'] as const) {
    if (!fx || typeof fx !== 'object' || !(key in fx)) throw new Error(`fixture ${path} has no '${key}' (format: fixtures/README.md)`);
  }
  return fx;
}

/** A float32 tensor as fixtures store it: base64 of little-endian float32, row-major. */
export interface PackedF32 {
  shape: number[];
  f32: string;
}

export interface FixtureConfig {
  sequence_len: number;
  vocab_size: number;
  n_layer: number;
  n_head: number;
  n_kv_head: number;
  n_embd: number;
  window_pattern: string;
}

export interface FixtureParamGroup {
  kind: 'adamw' | 'muon';
  params: string[];
  lr: number;
  betas?: [number, number];
  eps?: number;
  weight_decay: number;
  momentum?: number;
  ns_steps?: number;
  beta2?: number;
}

export interface Fixture {
  name?: string;
  generator?: string;
  config: FixtureConfig;
  window_sizes: [number, number][];
  batch: number;
  idx: number[];
  targets: number[];
  params: Record<string, PackedF32>;
  expected: {
    loss: number;
    per_token_loss: PackedF32 | number[];
    logits: PackedF32 | number[];
    grads: Record<string, PackedF32>;
    params_after_step: Record<string, PackedF32>;
  };
  optimizer: {
    step: number;
    muon_momentum: number;
    setup: { unembedding_lr: number; embedding_lr: number; matrix_lr: number; weight_decay: number; adam_betas: [number, number]; scalar_lr: number };
    param_groups: FixtureParamGroup[];
  };
}

/** The README's tolerances: max|a−b| / max|b| per tensor; at most 2% of a Muon tensor may be mask flips. */
export const TOLERANCE = { forward: 1e-4, grad: 1e-3, step: 1e-3, maxFlipFraction: 0.02 };

/**
 * Mixed precision (verify --precision f16) against the same f32 reference: f16 keeps 11 significant
 * bits (relative rounding 2^-11 ≈ 4.9e-4 per stored value), and a value passes through a few dozen
 * roundings (activations, both matmul operands, saved tensors) between input and loss. Measured on
 * lavapipe 26.2 (2026-12-01), worst over gpt-tiny and the generated fixtures: logits 1.1e-3, gradients
 * 4.4e-3 — 10× and 7× under these bounds. The optimizer step (f32, from the reference's gradients in
 * f16 verification) keeps the f32 tolerance.
 */
export const TOLERANCE_F16 = { forward: 1e-2, grad: 3e-2, step: TOLERANCE.step, maxFlipFraction: TOLERANCE.maxFlipFraction };

export function encodeF32(data: Float32Array, shape: readonly number[]): PackedF32 {
  const size = shape.reduce((p, d) => p * d, 1);
  if (size !== data.length) throw new Error(`encodeF32: ${data.length} values for shape [${shape}]`);
  const copy = Float32Array.from(data); // an own, aligned buffer; little-endian wherever node runs
  return { shape: [...shape], f32: Buffer.from(copy.buffer).toString('base64') };
}

/** Decodes a packed tensor (checking its element count) or passes a plain array through. */
export function decodeF32(v: PackedF32 | number[]): Float32Array {
  if (Array.isArray(v)) return Float32Array.from(v);
  const bytes = Buffer.from(v.f32, 'base64');
  const out = new Float32Array(bytes.length / 4);
  new Uint8Array(out.buffer).set(bytes);
  const size = v.shape.reduce((a, d) => a * d, 1);
  if (out.length !== size) throw new Error(`decodeF32: ${out.length} values for shape [${v.shape}]`);
  return out;
}

/** max|a−b| / max|b| (NaN counts as infinitely wrong). */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    num = Number.isNaN(d) ? Infinity : Math.max(num, d);
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}

export interface StepComparison {
  /** max|got − want| / max|want| over the elements that are not flips. */
  error: number;
  flips: number;
  size: number;
  ok: boolean;
}

/**
 * Compares a parameter after the optimizer step. With lrWd = lr'·wd (a Muon parameter), an element
 * whose difference equals lr'·wd·|p_before| within the tolerance is a cautious-weight-decay mask flip,
 * not an error, while flips stay within maxFlipFraction of the tensor.
 */
export function compareAfterStep(got: ArrayLike<number>, want: ArrayLike<number>, before: ArrayLike<number>, lrWd = 0, tolerance = TOLERANCE): StepComparison {
  let den = 0;
  for (let i = 0; i < want.length; i++) den = Math.max(den, Math.abs(want[i]));
  const tol = tolerance.step * (den || 1);
  let worst = 0, flips = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (lrWd > 0 && d > tol && Math.abs(d - lrWd * Math.abs(before[i])) <= tol) flips++;
    else worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
  }
  const error = den === 0 ? worst : worst / den;
  return { error, flips, size: want.length, ok: error < tolerance.step && flips <= tolerance.maxFlipFraction * want.length };
}
