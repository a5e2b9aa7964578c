/**
 * The host side of f16 storage (upload and readback convert with f16Bits / fromF16Bits): exact
 * for representable values, round-to-nearest-even otherwise, subnormals, overflow, inf and NaN.
 * Pure CPU: it runs even where no adapter has shader-f16.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { f16Bits, fromF16Bits, type Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { requireFeature } from '../setup.ts';

const roundTrip = (v: number) => fromF16Bits(Uint16Array.of(f16Bits(v)))[0];

describe('f16 conversion', () => {
  it('keeps representable values exactly', () => {
    for (const v of [0, 1, -1, 0.5, -2, 1024, 65504, -65504, 2 ** -14, 2 ** -24, 0.333251953125]) expect(roundTrip(v)).toBe(v);
    expect(f16Bits(1)).toBe(0x3c00);
    expect(f16Bits(-2)).toBe(0xc000);
    expect(f16Bits(65504)).toBe(0x7bff);
    expect(f16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
  });

  it('rounds to nearest, ties to even', () => {
    const ulpAt1 = 2 ** -10;
    expect(roundTrip(1 + ulpAt1 / 2)).toBe(1); // tie → even (1.0)
    expect(roundTrip(1 + (3 * ulpAt1) / 2)).toBe(1 + 2 * ulpAt1); // tie → even (1 + 2 ulp)
    expect(roundTrip(1 + ulpAt1 * 0.51)).toBe(1 + ulpAt1);
    expect(roundTrip(2 ** -25 * 1.5)).toBe(2 ** -24); // subnormal rounding
    expect(roundTrip(2 ** -26)).toBe(0); // underflow
  });

  it('overflows to infinity and keeps inf, -0 and NaN', () => {
    expect(roundTrip(65520)).toBe(Infinity); // rounds up past the largest finite half
    expect(roundTrip(1e6)).toBe(Infinity);
    expect(roundTrip(-Infinity)).toBe(-Infinity);
    expect(Object.is(roundTrip(-0), -0)).toBe(true);
    expect(Number.isNaN(roundTrip(NaN))).toBe(true);
  });

  it('is within half an ulp on random values', () => {
    const rng = new Rng(9);
    for (let i = 0; i < 2000; i++) {
      const v = (rng.next() - 0.5) * 2 ** (rng.int(30) - 14);
      const r = roundTrip(v);
      const e = Math.floor(Math.log2(Math.max(Math.abs(v), 2 ** -14)));
      expect(Math.abs(r - v)).toBeLessThanOrEqual(2 ** (e - 11) * 1.0000001);
    }
  });
});

describe('requireFeature (tests that need an adapter feature)', () => {
  const fake = (features: string[]) => ({ device: { features: new Set(features) }, gpu: { info: { name: 'fake adapter' } } }) as unknown as Runtime;
  afterEach(() => vi.unstubAllEnvs());

  it('says whether the adapter has the feature, and throws where AUTORESEARCH_REQUIRE_FEATURES lists a missing one', () => {
    vi.stubEnv('AUTORESEARCH_REQUIRE_FEATURES', ''); // (CI's lavapipe run sets it for the whole suite)
    expect(requireFeature(fake(['shader-f16']), 'shader-f16')).toBe(true);
    expect(requireFeature(fake([]), 'shader-f16')).toBe(false);
    expect(requireFeature(null, 'subgroups')).toBe(false);
    vi.stubEnv('AUTORESEARCH_REQUIRE_FEATURES', 'shader-f16,subgroups');
    expect(() => requireFeature(fake(['shader-f16']), 'subgroups')).toThrow(/AUTORESEARCH_REQUIRE_FEATURES includes subgroups, but the adapter \(fake adapter\) lacks it/);
    expect(requireFeature(fake(['shader-f16']), 'shader-f16')).toBe(true);
    expect(requireFeature(fake([]), 'timestamp-query')).toBe(false); // not required: skips quietly
  });
});
