/**
 * Subgroup-matrix fragments (src/gpu/subgroup_matrix.ts): config parsing and choice (pure), and on
 * an adapter with subgroup matrices (lavapipe 26.2: 8×8×8) one fragment load → multiply → store in
 * every layout, natively and with NVIDIA's 16×16×16 / 16×8×16 / 16×8×8 built from 8×8×8 pieces in
 * 32-lane workgroups; NVIDIA's native types are type-checked there too.
 * AUTORESEARCH_REQUIRE_FEATURES=chromium-experimental-subgroup-matrix makes a missing feature fail.
 */
import { describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/gpu/runtime.ts';
import {
  candidateFragments, emulatedFragment, type FragmentConfig, fragmentLabel, fragmentLoad, fragmentPrelude, fragmentStore, type Layout,
  nativeCheckModule, nativeFragments, nativeTypes, NVIDIA_SHAPES, paddedStride, parseShape, pickF16Fragment, SUBGROUP_MATRIX_ENABLE,
  SUBGROUP_MATRIX_FEATURE, type SubgroupMatrixSupport,
} from '../../src/gpu/subgroup_matrix.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const LAVAPIPE: SubgroupMatrixSupport = {
  subgroupMinSize: 8,
  subgroupMaxSize: 8,
  configs: [
    { componentType: 'f16', resultComponentType: 'f16', M: 8, N: 8, K: 8 },
    { componentType: 'f16', resultComponentType: 'f32', M: 8, N: 8, K: 8 },
    { componentType: 'u8', resultComponentType: 'u32', M: 8, N: 8, K: 8 },
  ],
};
const NVIDIA: SubgroupMatrixSupport = {
  subgroupMinSize: 32,
  subgroupMaxSize: 32,
  configs: NVIDIA_SHAPES.flatMap((s) => [
    { componentType: 'f16' as const, resultComponentType: 'f16' as const, ...s },
    { componentType: 'f16' as const, resultComponentType: 'f32' as const, ...s },
  ]),
};

describe('subgroup-matrix configs', () => {
  it('writes WGSL types columns first', () => {
    expect(nativeTypes({ M: 16, N: 8, K: 16 })).toEqual({
      left: 'subgroup_matrix_left<f16, 16, 16>',
      right: 'subgroup_matrix_right<f16, 8, 16>',
      acc: 'subgroup_matrix_result<f32, 8, 16>',
    });
    expect(nativeTypes({ M: 16, N: 8, K: 8 }).left).toBe('subgroup_matrix_left<f16, 8, 16>');
  });

  it('picks the largest f16→f32 shape, or the emulated one the environment names', () => {
    expect(nativeFragments(LAVAPIPE).map(fragmentLabel)).toEqual(['8x8x8/sg8']);
    expect(fragmentLabel(pickF16Fragment(NVIDIA, undefined, {})!)).toBe('16x16x16/sg32');
    expect(fragmentLabel(pickF16Fragment(NVIDIA, { M: 16, N: 8, K: 8 }, {})!)).toBe('16x8x8/sg32');
    expect(pickF16Fragment(null, undefined, {})).toBeNull();
    const emu = pickF16Fragment(LAVAPIPE, undefined, { AUTORESEARCH_SGMAT_EMULATE: '16x8x16' })!;
    expect(emu).toMatchObject({ M: 16, N: 8, K: 16, native: { M: 8, N: 8, K: 8 }, subgroupSize: 32, emulated: true });
    expect(candidateFragments(LAVAPIPE, { AUTORESEARCH_SGMAT_EMULATE: '16x8x16' })).toEqual([emu]);
    expect(candidateFragments(NVIDIA, {}).length).toBe(3);
  });

  it('refuses shapes it cannot build and bad text', () => {
    expect(() => emulatedFragment(LAVAPIPE, { M: 12, N: 8, K: 8 })).toThrow(/divides 12x8x8/);
    expect(() => emulatedFragment(LAVAPIPE, { M: 16, N: 16, K: 16 }, 12)).toThrow(/multiple/);
    expect(() => parseShape('16x16')).toThrow(/MxNxK/);
    expect(parseShape('16×8×16')).toEqual({ M: 16, N: 8, K: 16 });
  });

  it('pads workgroup strides to 16-byte rows', () => {
    expect(paddedStride(32)).toBe(40);
    expect(paddedStride(30)).toBe(40);
  });
});

const rt = (await testRuntime()) as Runtime | null;
const required = (process.env.AUTORESEARCH_REQUIRE_FEATURES ?? '').split(',').includes(SUBGROUP_MATRIX_FEATURE);
if (required && !rt?.subgroupMatrix) throw new Error(`${SUBGROUP_MATRIX_FEATURE} is required (AUTORESEARCH_REQUIRE_FEATURES) but this adapter lacks it`);
const support = rt?.subgroupMatrix ?? null;

/**
 * One subgroup computes C = A·B for one FRAG_M×FRAG_N tile over two FRAG_K steps. A and B sit in
 * storage with padded strides in the given layouts; C is stored in `cLayout`.
 */
function fragmentKernel(f: FragmentConfig, aLayout: Layout, bLayout: Layout, cLayout: Layout): string {
  return [
    SUBGROUP_MATRIX_ENABLE,
    '@group(0) @binding(0) var<storage, read> a: array<f16>;',
    '@group(0) @binding(1) var<storage, read> b: array<f16>;',
    '@group(0) @binding(2) var<storage, read_write> c: array<f32>;',
    fragmentPrelude(f),
    fragmentLoad(f, 'left', { fn: 'load_a', array: 'a', layout: aLayout }),
    fragmentLoad(f, 'right', { fn: 'load_b', array: 'b', layout: bLayout }),
    fragmentStore(f, { fn: 'store_c', array: 'c', layout: cLayout }),
    `const LDA = ${strideOf(aLayout, f.M, 2 * f.K)}u;`,
    `const LDB = ${strideOf(bLayout, 2 * f.K, f.N)}u;`,
    `const LDC = ${strideOf(cLayout, f.M, f.N)}u;`,
    '@compute @workgroup_size(FRAG_SUBGROUP)',
    'fn main() {',
    '  var acc = frag_zero();',
    '  for (var k = 0u; k < 2u * FRAG_K; k += FRAG_K) {',
    `    acc = frag_mma(load_a(${aLayout === 'row_major' ? 'k' : 'k * LDA'}, LDA), load_b(${bLayout === 'row_major' ? 'k * LDB' : 'k'}, LDB), acc);`,
    '  }',
    '  store_c(0u, LDC, acc);',
    '}',
  ].join('\n');
}

/** A padded stride for a rows×cols matrix stored in `layout`. */
function strideOf(layout: Layout, rows: number, cols: number): number {
  return paddedStride(layout === 'row_major' ? cols : rows);
}

/** Dense rows×cols values → storage in `layout` with strideOf's padding (pads hold garbage). */
function store(layout: Layout, rows: number, cols: number, v: Float32Array, rng: Rng): Float32Array {
  const s = strideOf(layout, rows, cols);
  const out = rng.uniformArray(s * (layout === 'row_major' ? rows : cols));
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[layout === 'row_major' ? r * s + c : c * s + r] = v[r * cols + c];
  return out;
}

const fragments = (): FragmentConfig[] =>
  support ? [...nativeFragments(support), ...NVIDIA_SHAPES.map((s) => emulatedFragment(support, s))] : [];
const LAYOUTS: Layout[] = ['row_major', 'col_major'];

describe.skipIf(!support)('subgroup-matrix fragments on the adapter', () => {
  for (const f of fragments()) {
    for (const aL of LAYOUTS) {
      for (const bL of LAYOUTS) {
        const cL: Layout = aL === bL ? 'row_major' : 'col_major';
        it(`${fragmentLabel(f)} A ${aL}, B ${bL}, C ${cL}`, async () => {
          const rng = new Rng(f.M * 100 + f.N * 10 + f.K + (aL === 'row_major' ? 0 : 1) + (bL === 'row_major' ? 0 : 2));
          const K = 2 * f.K;
          // small integers and halves: exact in f16 and in f32 sums, so the comparison is exact
          const A = Float32Array.from({ length: f.M * K }, () => Math.round(rng.uniform() * 8 - 4) / 2);
          const B = Float32Array.from({ length: K * f.N }, () => Math.round(rng.uniform() * 8 - 4) / 2);
          const want = new Float32Array(f.M * f.N);
          for (let m = 0; m < f.M; m++) for (let n = 0; n < f.N; n++) for (let k = 0; k < K; k++) want[m * f.N + n] += A[m * K + k] * B[k * f.N + n];
          const code = fragmentKernel(f, aL, bL, cL);
          const k = await rt!.compile({ source: { code }, entry: 'main' });
          const ta = rt!.fromArray(store(aL, f.M, K, A, rng), [strideOf(aL, f.M, K) * (aL === 'row_major' ? f.M : K)], 'f16');
          const tb = rt!.fromArray(store(bL, K, f.N, B, rng), [strideOf(bL, K, f.N) * (bL === 'row_major' ? K : f.N)], 'f16');
          const ldc = strideOf(cL, f.M, f.N);
          const tc = rt!.zeros([ldc * (cL === 'row_major' ? f.M : f.N)]);
          rt!.dispatch(k, [ta, tb, tc], null, 1);
          const got = await rt!.read(tc);
          const dense = new Float32Array(f.M * f.N);
          for (let m = 0; m < f.M; m++) for (let n = 0; n < f.N; n++) dense[m * f.N + n] = got[cL === 'row_major' ? m * ldc + n : n * ldc + m];
          expectClose(dense, want, { atol: 0, rtol: 0, label: fragmentLabel(f) });
        });
      }
    }
  }

  it('type-checks NVIDIA native shapes (pipelines need the hardware)', async () => {
    for (const s of NVIDIA_SHAPES) {
      const module = rt!.device.createShaderModule({ code: nativeCheckModule(s) });
      const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
      expect(errors.map((e) => e.message), `${s.M}x${s.N}x${s.K}`).toEqual([]);
    }
    // a wrong type order is caught by the same check (so the check can fail)
    const wrong = nativeCheckModule({ M: 16, N: 8, K: 16 }).replace('subgroup_matrix_right<f16, 8, 16>', 'subgroup_matrix_right<f16, 16, 8>');
    const errs = (await rt!.device.createShaderModule({ code: wrong }).getCompilationInfo()).messages.filter((m) => m.type === 'error');
    expect(errs.length).toBeGreaterThan(0);
  });
});
