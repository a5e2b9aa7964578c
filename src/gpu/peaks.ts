/**
 * @file Peak arithmetic rates of known GPUs, for MFU. These are vendor datasheet figures (dense, no
 * sparsity), not measurements. MFU is reported against the precision train.ts computes in: the FP32
 * vector rate for f32 kernels, the FP16 tensor-core rate for f16 with subgroup matrices, else the FP16
 * vector rate. AUTORESEARCH_PEAK_TFLOPS overrides the table (for an unlisted GPU); unknown → null,
 * and MFU is printed as 0.00 with a note instead of being made up. Bandwidths likewise (TB/s).
 */
import type { GpuInfo } from './device.ts';

export type Precision = 'f32' | 'f16' | 'f16-matrix';

interface Peak {
  /** Matched against the adapter name (case-insensitive). */
  pattern: RegExp;
  /** TFLOP/s: FP32 vector, FP16 vector (non-tensor), FP16 tensor cores with FP32 accumulation. */
  f32: number;
  f16: number;
  f16Matrix: number;
  /** Memory bandwidth, TB/s. */
  tbps: number;
}

// Order matters: the first match wins (more specific names first).
const PEAKS: Peak[] = [
  { pattern: /H100.*PCIe/i, f32: 51.2, f16: 102.4, f16Matrix: 756, tbps: 2.0 },
  { pattern: /H100|H800/i, f32: 66.9, f16: 133.8, f16Matrix: 989.5, tbps: 3.35 },
  { pattern: /H200/i, f32: 66.9, f16: 133.8, f16Matrix: 989.5, tbps: 4.8 },
  { pattern: /A100/i, f32: 19.5, f16: 78, f16Matrix: 312, tbps: 2.04 },
  { pattern: /L40S/i, f32: 91.6, f16: 91.6, f16Matrix: 362, tbps: 0.864 },
  { pattern: /RTX 4090/i, f32: 82.6, f16: 82.6, f16Matrix: 165.2, tbps: 1.008 },
  { pattern: /RTX 4080/i, f32: 48.7, f16: 48.7, f16Matrix: 97.5, tbps: 0.717 },
  { pattern: /RTX 3090/i, f32: 35.6, f16: 35.6, f16Matrix: 71, tbps: 0.936 },
  { pattern: /RX 7900 XTX/i, f32: 61.4, f16: 122.8, f16Matrix: 122.8, tbps: 0.96 },
  { pattern: /Apple M3 Max/i, f32: 16.4, f16: 16.4, f16Matrix: 16.4, tbps: 0.4 },
  { pattern: /Apple M2 Max/i, f32: 13.6, f16: 13.6, f16Matrix: 13.6, tbps: 0.4 },
  { pattern: /Apple M1 Max/i, f32: 10.4, f16: 10.4, f16Matrix: 10.4, tbps: 0.4 },
];

function lookup(info: Pick<GpuInfo, 'name' | 'software'>): Peak | undefined {
  return info.software ? undefined : PEAKS.find((x) => x.pattern.test(info.name));
}

/** Peak FLOP/s for the adapter at a precision, or null when unknown. */
export function peakFlops(info: Pick<GpuInfo, 'name' | 'software'>, precision: Precision): number | null {
  const override = Number(process.env.AUTORESEARCH_PEAK_TFLOPS);
  if (override > 0) return override * 1e12;
  const p = lookup(info);
  if (!p) return null;
  return (precision === 'f32' ? p.f32 : precision === 'f16' ? p.f16 : p.f16Matrix) * 1e12;
}

/** Peak memory bandwidth in bytes/s, or null when unknown (AUTORESEARCH_PEAK_TBPS overrides). */
export function peakBandwidth(info: Pick<GpuInfo, 'name' | 'software'>): number | null {
  const override = Number(process.env.AUTORESEARCH_PEAK_TBPS);
  if (override > 0) return override * 1e12;
  const p = lookup(info);
  return p ? p.tbps * 1e12 : null;
}
