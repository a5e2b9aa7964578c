/**
 * Datasheet peaks for MFU and '% of peak' (src/gpu/peaks.ts): the figure must be the peak of the
 * precision that runs — f32 SIMT for f32, f16 SIMT for f16 without matrix units, f16 matrix units when
 * subgroup matrices run. Pure table checks; no adapter needed.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { peakFlops } from '../../src/gpu/peaks.ts';

const gpu = (name: string) => ({ name, software: false });
const tflops = (...args: Parameters<typeof peakFlops>) => peakFlops(...args)! / 1e12;

describe('peakFlops by precision', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('uses the f32 FMA rate for f32 and the (double-rate where the GPU has it) f16 SIMT rate for f16', () => {
    expect(tflops(gpu('NVIDIA H100 80GB HBM3'), 'f32')).toBeCloseTo(66.9, 9);
    expect(tflops(gpu('NVIDIA H100 80GB HBM3'), 'f16')).toBeCloseTo(133.8, 9);
    expect(tflops(gpu('NVIDIA H100 80GB HBM3'), 'f16-matrix')).toBeCloseTo(989.5, 9);
    expect(tflops(gpu('NVIDIA GeForce RTX 4090'), 'f16')).toBeCloseTo(82.6, 9); // Ada: f16 SIMT at the f32 rate
    expect(tflops(gpu('AMD Radeon RX 7900 XTX'), 'f16')).toBeCloseTo(122.8, 9);
  });

  it('orders f32 ≤ f16 ≤ f16-matrix for every listed GPU', () => {
    for (const name of ['H100 PCIe', 'H100 SXM', 'H200', 'A100', 'L40S', 'RTX 4090', 'RTX 4080', 'RTX 3090', 'RX 7900 XTX', 'Apple M3 Max', 'Apple M2 Max', 'Apple M1 Max']) {
      const [f32, f16, mat] = (['f32', 'f16', 'f16-matrix'] as const).map((p) => peakFlops(gpu(name), p)!);
      expect(f32, name).toBeGreaterThan(0);
      expect(f16, name).toBeGreaterThanOrEqual(f32);
      expect(mat, name).toBeGreaterThanOrEqual(f16);
    }
  });

  it('knows no peak for a software adapter, and takes AUTORESEARCH_PEAK_TFLOPS for any precision', () => {
    expect(peakFlops({ name: 'llvmpipe (LLVM 19)', software: true }, 'f16')).toBeNull();
    vi.stubEnv('AUTORESEARCH_PEAK_TFLOPS', '100');
    expect(tflops(gpu('Unlisted GPU'), 'f16')).toBeCloseTo(100, 9);
  });
});
