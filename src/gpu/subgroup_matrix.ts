/**
 * @file Subgroup matrices (Dawn's `chromium-experimental-subgroup-matrix`: tensor cores through
 * Vulkan cooperative matrices, Apple simdgroup matrices): what the adapter offers, which fragment
 * shape a kernel uses, and the WGSL that kernels write fragments with.
 *
 * Kernels are written over a *logical* fragment of M×N×K (a left M×K, a right K×N, an M×N f32
 * accumulator) through the `frag_*` names this file generates, never over a hardware shape. A
 * logical fragment is either one native matrix (`emulated: false`, what runs on real hardware) or
 * a grid of native ones (`emulated: true`): on lavapipe, whose only shape is 8×8×8, NVIDIA's
 * 16×16×16, 16×8×16 and 16×8×8 are built from 8×8×8 pieces, so every shape-dependent part of a
 * kernel — fragment offsets and strides in both layouts, fragments per subgroup, tile sizes,
 * workgroup memory, a workgroup x size that is a multiple of a 32-wide subgroup — runs on the CPU
 * adapter before it ever runs on an NVIDIA card. What emulation cannot run (the native types of a
 * wide shape) is type-checked on lavapipe by compiling a native-typed module (`nativeCheckModule`).
 *
 * WGSL type order (from the proposal; easy to get wrong): `subgroup_matrix_left<T, K, M>` is M rows
 * × K columns, `subgroup_matrix_right<T, N, K>` K rows × N columns, `subgroup_matrix_result<T, N, M>`
 * M rows × N columns — columns first. Load/store offsets and strides count array elements.
 * The workgroup's x size must be a multiple of the adapter's max subgroup size.
 */
import type { Gpu } from './device.ts';

export const SUBGROUP_MATRIX_FEATURE = 'chromium-experimental-subgroup-matrix';
/** The WGSL enable line a subgroup-matrix kernel starts with (wgsl.ts hoists it above the header). */
export const SUBGROUP_MATRIX_ENABLE = 'enable f16;\nenable chromium_experimental_subgroup_matrix;';

export type ComponentType = 'f32' | 'f16' | 'u32' | 'i32' | 'u8' | 'i8';

/** One entry of `adapter.info.subgroupMatrixConfigs`. */
export interface SubgroupMatrixConfig {
  componentType: ComponentType;
  resultComponentType: ComponentType;
  M: number;
  N: number;
  K: number;
}

/** What the device can do with subgroup matrices (null on the runtime when it cannot). */
export interface SubgroupMatrixSupport {
  configs: readonly SubgroupMatrixConfig[];
  subgroupMinSize: number;
  /** The workgroup x size of a subgroup-matrix kernel must be a multiple of this. */
  subgroupMaxSize: number;
}

export interface Shape3 {
  M: number;
  N: number;
  K: number;
}

/** The fragment a kernel is generated for. */
export interface FragmentConfig extends Shape3 {
  /** The hardware config every piece uses; equal to (M, N, K) unless emulated. */
  native: Shape3;
  input: 'f16';
  /** Accumulator type: always f32 here (accumulation is f32 in this project). */
  result: 'f32';
  /** Workgroup x sizes are multiples of this (≥ the adapter's max subgroup size). */
  subgroupSize: number;
  /** Built from several native pieces (a test mode: NVIDIA's shapes on an 8×8×8 adapter). */
  emulated: boolean;
}

/** NVIDIA's f16 cooperative-matrix shapes through Vulkan (as reported), most preferred first. */
export const NVIDIA_SHAPES: readonly Shape3[] = [
  { M: 16, N: 16, K: 16 },
  { M: 16, N: 8, K: 16 },
  { M: 16, N: 8, K: 8 },
];
/** NVIDIA's subgroup size: what the emulation builds workgroups for. */
export const NVIDIA_SUBGROUP_SIZE = 32;

/**
 * Reads the device's subgroup-matrix support: null when the device was created without the
 * feature (no adapter support, or Dawn without `allow_unsafe_apis`).
 */
export function readSubgroupMatrixSupport(gpu: Pick<Gpu, 'device' | 'adapter'>): SubgroupMatrixSupport | null {
  if (!gpu.device.features.has(SUBGROUP_MATRIX_FEATURE) || !gpu.device.features.has('shader-f16')) return null;
  const info = gpu.adapter.info as GPUAdapterInfo & {
    subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[];
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
  };
  // copy the fields: Dawn's objects expose them as getters only
  const configs = (info.subgroupMatrixConfigs ?? []).map((c) => ({
    componentType: c.componentType,
    resultComponentType: c.resultComponentType,
    M: c.M,
    N: c.N,
    K: c.K,
  }));
  if (!configs.length) return null;
  const max = info.subgroupMaxSize ?? 0;
  return { configs, subgroupMinSize: info.subgroupMinSize ?? max, subgroupMaxSize: max };
}

/** f16-input, f32-result native fragments of the adapter, largest first (more work per load). */
export function nativeFragments(support: SubgroupMatrixSupport): FragmentConfig[] {
  return support.configs
    .filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32')
    .map((c) => ({ M: c.M, N: c.N, K: c.K, native: { M: c.M, N: c.N, K: c.K }, input: 'f16' as const, result: 'f32' as const, subgroupSize: support.subgroupMaxSize, emulated: false }))
    .sort((a, b) => b.M * b.N * b.K - a.M * a.N * a.K);
}

/**
 * A logical M×N×K fragment built from one of the adapter's native f16→f32 shapes that divides it,
 * with workgroups sized for `subgroupSize` (default: NVIDIA's 32, itself a multiple of the
 * adapter's max size). Throws when no native shape divides the logical one.
 */
export function emulatedFragment(support: SubgroupMatrixSupport, shape: Shape3, subgroupSize = Math.max(NVIDIA_SUBGROUP_SIZE, support.subgroupMaxSize)): FragmentConfig {
  const native = nativeFragments(support).find((n) => shape.M % n.M === 0 && shape.N % n.N === 0 && shape.K % n.K === 0);
  if (!native) throw new Error(`no native f16 subgroup-matrix shape of this adapter divides ${shapeLabel(shape)}`);
  if (subgroupSize % support.subgroupMaxSize !== 0) {
    throw new Error(`emulated subgroup size ${subgroupSize} is not a multiple of the adapter's max subgroup size ${support.subgroupMaxSize}`);
  }
  return { ...shape, native: { M: native.M, N: native.N, K: native.K }, input: 'f16', result: 'f32', subgroupSize, emulated: true };
}

/** Parses "16x8x16" (or "16×8×16"). */
export function parseShape(text: string): Shape3 {
  const m = /^\s*(\d+)\s*[x×]\s*(\d+)\s*[x×]\s*(\d+)\s*$/.exec(text);
  if (!m) throw new Error(`subgroup-matrix shape '${text}' is not MxNxK (e.g. 16x8x16)`);
  return { M: +m[1], N: +m[2], K: +m[3] };
}

/**
 * The fragment kernels use on this device: AUTORESEARCH_SGMAT_EMULATE=16x8x16 (a test mode) builds
 * that shape from native pieces; otherwise the adapter's largest native f16→f32 shape (or the one
 * `prefer` names). Null when the device has none.
 */
export function pickF16Fragment(support: SubgroupMatrixSupport | null, prefer?: Shape3, env = process.env): FragmentConfig | null {
  if (!support) return null;
  const emulate = env.AUTORESEARCH_SGMAT_EMULATE?.trim();
  if (emulate) return emulatedFragment(support, parseShape(emulate));
  const natives = nativeFragments(support);
  if (prefer) return natives.find((f) => sameShape(f, prefer)) ?? natives[0] ?? null;
  return natives[0] ?? null;
}

/** Every fragment worth trying on this device: its native shapes (the autotuner's candidates). */
export function candidateFragments(support: SubgroupMatrixSupport | null, env = process.env): FragmentConfig[] {
  if (!support) return [];
  const picked = pickF16Fragment(support, undefined, env);
  return picked?.emulated ? [picked] : nativeFragments(support);
}

export function sameShape(a: Shape3, b: Shape3): boolean {
  return a.M === b.M && a.N === b.N && a.K === b.K;
}

export function shapeLabel(s: Shape3): string {
  return `${s.M}x${s.N}x${s.K}`;
}

/** "16x8x16" natively, "16x8x16=8x8x8" when emulated, plus "/sg32" when workgroups assume 32 lanes. */
export function fragmentLabel(f: FragmentConfig): string {
  return `${shapeLabel(f)}${f.emulated ? '=' + shapeLabel(f.native) : ''}/sg${f.subgroupSize}`;
}

// ---------------------------------------------------------------------------------------------
// WGSL generation

export type Layout = 'row_major' | 'col_major';

/** WGSL types of one native piece (columns before rows: see the file header). */
export function nativeTypes(native: Shape3, input = 'f16', result = 'f32'): { left: string; right: string; acc: string } {
  return {
    left: `subgroup_matrix_left<${input}, ${native.K}, ${native.M}>`,
    right: `subgroup_matrix_right<${input}, ${native.N}, ${native.K}>`,
    acc: `subgroup_matrix_result<${result}, ${native.N}, ${native.M}>`,
  };
}

/** Pieces per logical fragment along M, N, K. */
export function pieces(f: FragmentConfig): Shape3 {
  const p = { M: f.M / f.native.M, N: f.N / f.native.N, K: f.K / f.native.K };
  if (!Number.isInteger(p.M) || !Number.isInteger(p.N) || !Number.isInteger(p.K)) throw new Error(`fragment ${fragmentLabel(f)} is not a whole number of native pieces`);
  return p;
}

/**
 * The fragment prelude every subgroup-matrix kernel includes:
 *   consts FRAG_M, FRAG_N, FRAG_K, FRAG_SUBGROUP (workgroup x sizes are multiples of it);
 *   types frag_left, frag_right, frag_acc (one native matrix, or an array of pieces when emulated);
 *   fn frag_zero() -> frag_acc; fn frag_mma(l, r, acc) -> frag_acc (acc + l·r).
 * Loads and stores come from `fragmentLoad` / `fragmentStore` (they name the array they touch).
 */
export function fragmentPrelude(f: FragmentConfig): string {
  const t = nativeTypes(f.native);
  const p = pieces(f);
  const head = [
    `// subgroup-matrix fragment ${fragmentLabel(f)} (generated by src/gpu/subgroup_matrix.ts)`,
    `const FRAG_M = ${f.M}u;`,
    `const FRAG_N = ${f.N}u;`,
    `const FRAG_K = ${f.K}u;`,
    `const FRAG_SUBGROUP = ${f.subgroupSize}u;`,
  ];
  if (!f.emulated) {
    return [
      ...head,
      `alias frag_left = ${t.left};`,
      `alias frag_right = ${t.right};`,
      `alias frag_acc = ${t.acc};`,
      `fn frag_zero() -> frag_acc { return frag_acc(); }`,
      `fn frag_mma(l: frag_left, r: frag_right, acc: frag_acc) -> frag_acc { return subgroupMatrixMultiplyAccumulate(l, r, acc); }`,
      '',
    ].join('\n');
  }
  // pieces: left [i][kk] at i * PK + kk, right [kk][j] at kk * PN + j, acc [i][j] at i * PN + j
  const mma: string[] = [];
  for (let i = 0; i < p.M; i++) {
    for (let j = 0; j < p.N; j++) {
      for (let kk = 0; kk < p.K; kk++) {
        mma.push(`  c[${i * p.N + j}] = subgroupMatrixMultiplyAccumulate(l[${i * p.K + kk}], r[${kk * p.N + j}], c[${i * p.N + j}]);`);
      }
    }
  }
  return [
    ...head,
    `// emulated: ${p.M}×${p.N}×${p.K} native ${shapeLabel(f.native)} pieces per fragment`,
    `alias frag_left = array<${t.left}, ${p.M * p.K}>;`,
    `alias frag_right = array<${t.right}, ${p.K * p.N}>;`,
    `alias frag_acc = array<${t.acc}, ${p.M * p.N}>;`,
    `fn frag_zero() -> frag_acc { return frag_acc(); }`,
    `fn frag_mma(l: frag_left, r: frag_right, acc: frag_acc) -> frag_acc {`,
    `  var c = acc;`,
    ...mma,
    `  return c;`,
    `}`,
    '',
  ].join('\n');
}

export interface FragmentAccess {
  /** Name of the generated WGSL function. */
  fn: string;
  /** The array it reads or writes: a `var<workgroup>` or `var<storage>` name. */
  array: string;
  /** How the fragment lies in the array (stride = elements between rows, or columns for col_major). */
  layout: Layout;
}

/** Element offset of the native piece at (row r0, column c0) of a fragment stored with `layout`. */
function pieceOffset(layout: Layout, r0: number, c0: number): string {
  const [major, minor] = layout === 'row_major' ? [r0, c0] : [c0, r0];
  if (major === 0 && minor === 0) return 'off';
  if (major === 0) return `off + ${minor}u`;
  return `off + ${major}u * stride${minor ? ` + ${minor}u` : ''}`;
}

/**
 * `fn <fn>(off: u32, stride: u32) -> frag_left | frag_right`: loads a fragment whose [0, 0] is at
 * element `off` of `array`. Left fragments are FRAG_M × FRAG_K, right ones FRAG_K × FRAG_N.
 */
export function fragmentLoad(f: FragmentConfig, kind: 'left' | 'right', a: FragmentAccess): string {
  const t = nativeTypes(f.native);
  const type = kind === 'left' ? t.left : t.right;
  const ret = kind === 'left' ? 'frag_left' : 'frag_right';
  if (!f.emulated) {
    return `fn ${a.fn}(off: u32, stride: u32) -> ${ret} { return subgroupMatrixLoad<${type}, ${a.layout}>(&${a.array}, off, stride); }\n`;
  }
  const p = pieces(f);
  const lines = [`fn ${a.fn}(off: u32, stride: u32) -> ${ret} {`, `  var x: ${ret};`];
  if (kind === 'left') {
    for (let i = 0; i < p.M; i++) {
      for (let kk = 0; kk < p.K; kk++) {
        lines.push(`  x[${i * p.K + kk}] = subgroupMatrixLoad<${type}, ${a.layout}>(&${a.array}, ${pieceOffset(a.layout, i * f.native.M, kk * f.native.K)}, stride);`);
      }
    }
  } else {
    for (let kk = 0; kk < p.K; kk++) {
      for (let j = 0; j < p.N; j++) {
        lines.push(`  x[${kk * p.N + j}] = subgroupMatrixLoad<${type}, ${a.layout}>(&${a.array}, ${pieceOffset(a.layout, kk * f.native.K, j * f.native.N)}, stride);`);
      }
    }
  }
  lines.push('  return x;', '}', '');
  return lines.join('\n');
}

/** `fn <fn>(off: u32, stride: u32, acc: frag_acc)`: stores an FRAG_M × FRAG_N accumulator. */
export function fragmentStore(f: FragmentConfig, a: FragmentAccess): string {
  if (!f.emulated) {
    return `fn ${a.fn}(off: u32, stride: u32, acc: frag_acc) { subgroupMatrixStore<${a.layout}>(&${a.array}, off, acc, stride); }\n`;
  }
  const p = pieces(f);
  const lines = [`fn ${a.fn}(off: u32, stride: u32, acc: frag_acc) {`];
  for (let i = 0; i < p.M; i++) {
    for (let j = 0; j < p.N; j++) {
      lines.push(`  subgroupMatrixStore<${a.layout}>(&${a.array}, ${pieceOffset(a.layout, i * f.native.M, j * f.native.N)}, acc[${i * p.N + j}], stride);`);
    }
  }
  lines.push('}', '');
  return lines.join('\n');
}

/**
 * Workgroup memory arrays that fragments load from need row strides that keep every piece's rows
 * 16-byte aligned (Vulkan's cooperative-matrix stride rule) and spread across banks: a multiple
 * of 8 f16 elements, plus 8 so consecutive rows start in different banks.
 */
export function paddedStride(elements: number): number {
  return Math.ceil(elements / 8) * 8 + 8;
}

/**
 * A module that only *type-checks* a fragment's native WGSL (a load, an MMA and a store of each
 * type). On an adapter without that shape, `createShaderModule` still validates it; only pipeline
 * creation needs the hardware. Tests compile NVIDIA's shapes on lavapipe with it.
 */
export function nativeCheckModule(native: Shape3, subgroupSize = NVIDIA_SUBGROUP_SIZE): string {
  const f: FragmentConfig = { ...native, native, input: 'f16', result: 'f32', subgroupSize, emulated: false };
  return [
    SUBGROUP_MATRIX_ENABLE,
    '@group(0) @binding(0) var<storage, read> a: array<f16>;',
    '@group(0) @binding(1) var<storage, read_write> c: array<f32>;',
    fragmentPrelude(f),
    fragmentLoad(f, 'left', { fn: 'load_l', array: 'a', layout: 'row_major' }),
    fragmentLoad(f, 'right', { fn: 'load_r', array: 'a', layout: 'col_major' }),
    fragmentStore(f, { fn: 'store_c', array: 'c', layout: 'row_major' }),
    `@compute @workgroup_size(FRAG_SUBGROUP)`,
    `fn main() {`,
    `  var acc = frag_zero();`,
    `  acc = frag_mma(load_l(0u, ${native.K}u), load_r(0u, ${native.K}u), acc);`,
    `  store_c(0u, ${native.N}u, acc);`,
    `}`,
  ].join('\n');
}
