/**
 * @file Shared test helpers: one GPU runtime per test file, and closeness checks that report
 * like llm.c's validate_result (max difference and the first mismatches).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect } from 'vitest';
import { NoGpuError } from '../src/gpu/device.ts';
import { Runtime } from '../src/gpu/runtime.ts';

let runtime: Promise<Runtime | null> | null = null;

/**
 * The runtime for this test file, or null when there is no adapter at all — unless
 * AUTORESEARCH_REQUIRE_GPU=1 (set by CI), where a missing adapter fails instead of skipping.
 */
export function testRuntime(): Promise<Runtime | null> {
  runtime ??= Runtime.create().catch((e) => {
    if (e instanceof NoGpuError && process.env.AUTORESEARCH_REQUIRE_GPU !== '1') return null;
    throw e;
  });
  return runtime;
}

export interface CloseOptions {
  atol?: number;
  rtol?: number;
  label?: string;
}

/** Max |a-b| and the first mismatches beyond atol + rtol·|ref|; fails the test if any. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, opts: CloseOptions = {}): number {
  const { atol = 1e-5, rtol = 1e-4, label = 'values' } = opts;
  expect(actual.length, `${label}: length`).toBe(expected.length);
  let maxDiff = 0;
  const bad: string[] = [];
  let badCount = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const d = Math.abs(a - e);
    if (!(d <= atol + rtol * Math.abs(e))) {
      badCount++;
      if (bad.length < 5) bad.push(`[${i}] got ${a} want ${e}`);
    }
    if (d > maxDiff || Number.isNaN(d)) maxDiff = Number.isNaN(d) ? Infinity : d;
  }
  if (badCount) {
    expect.fail(`${label}: ${badCount}/${expected.length} mismatches (atol ${atol}, rtol ${rtol}, max diff ${maxDiff}): ${bad.join('; ')}`);
  }
  return maxDiff;
}

/** Relative error max|a-b| / max|b| (the fixture's tolerance measure). */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num = Math.max(num, Math.abs(actual[i] - expected[i]));
    den = Math.max(den, Math.abs(expected[i]));
  }
  return den === 0 ? num : num / den;
}

/**
 * Whether the runtime's adapter has `feature` (e.g. 'shader-f16', 'subgroups'). A test that needs it
 * skips where it is missing, except under AUTORESEARCH_REQUIRE_FEATURES (comma-separated, set by CI's
 * lavapipe run): there a missing required feature throws, so nothing skips silently.
 */
export function requireFeature(rt: Runtime | null, feature: string): boolean {
  const has = !!rt && rt.device.features.has(feature);
  const required = (process.env.AUTORESEARCH_REQUIRE_FEATURES ?? '').split(',').map((s) => s.trim());
  if (!has && required.includes(feature)) {
    throw new Error(`AUTORESEARCH_REQUIRE_FEATURES includes ${feature}, but the adapter (${rt?.gpu.info.name ?? 'none'}) lacks it`);
  }
  return has;
}

/** The smoke configuration: 2 layers of 64 (2 heads of 32), 64-token rows, 4 rows per step. */
export const TINY_SIZES = { depth: 2, aspectRatio: 32, headDim: 32, seqLen: 64, deviceBatchSize: 4, totalBatchSize: 256 };

/** Points AUTORESEARCH_CACHE at a fresh temporary folder for this file's tests; restored and removed after them. */
export function useTemporaryCache(prefix: string): string {
  const cache = mkdtempSync(join(tmpdir(), prefix));
  const saved = process.env.AUTORESEARCH_CACHE;
  process.env.AUTORESEARCH_CACHE = cache;
  afterAll(() => {
    if (saved === undefined) delete process.env.AUTORESEARCH_CACHE;
    else process.env.AUTORESEARCH_CACHE = saved;
    rmSync(cache, { recursive: true, force: true });
  });
  return cache;
}
