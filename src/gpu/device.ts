/**
 * @file Adapter and device acquisition through Dawn's node bindings (npm `webgpu`).
 *
 * Order of preference (AUTORESEARCH_GPU=auto, the default):
 *   1. a hardware adapter from Dawn's default backend (Vulkan on Linux, Metal on macOS, D3D12 on Windows);
 *   2. Mesa llvmpipe through Dawn's OpenGL ES backend (EGL surfaceless, compatibility feature level);
 *   3. SwiftShader's Vulkan driver, when its ICD file is installed (Debian's `chromium` ships it).
 * AUTORESEARCH_GPU=<backend> picks one (vulkan, metal, d3d12, opengles, swiftshader) and fails if it
 * is missing; AUTORESEARCH_GPU_DISABLE=a,b removes candidates (used to test the fallback path).
 * Every device is created with the adapter's own limits and every useful feature it offers.
 */
import { create, globals } from 'webgpu';

// The npm package exposes GPUBufferUsage etc. as `globals`; install them once so that code
// written against the WebGPU spec (and @webgpu/types) runs unchanged in node.
Object.assign(globalThis, globals);

export type BackendName = 'vulkan' | 'metal' | 'd3d12' | 'opengles' | 'swiftshader';
const BACKENDS: readonly BackendName[] = ['vulkan', 'metal', 'd3d12', 'opengles', 'swiftshader'];

/** Features we ask for whenever the adapter has them. */
const WANTED_FEATURES = [
  'shader-f16',
  'subgroups',
  'timestamp-query',
  'chromium-experimental-subgroup-matrix',
] as const;

/** Dawn toggles: f16 on NVIDIA Vulkan, subgroup matrices (unsafe API), unquantized timestamps. */
const DAWN_FLAGS = [
  'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
  'disable-dawn-features=timestamp_quantization',
];

/** Where Debian's chromium package puts SwiftShader's Vulkan ICD. */
export const SWIFTSHADER_ICD_PATHS = [
  '/usr/lib/chromium/vk_swiftshader_icd.json',
  '/usr/lib/chromium-browser/vk_swiftshader_icd.json',
];

export interface GpuInfo {
  backend: BackendName;
  /** Human-readable adapter name, e.g. "NVIDIA H100 80GB HBM3" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  name: string;
  vendor: string;
  architecture: string;
  /** True for CPU implementations (llvmpipe, SwiftShader): tests must use tiny shapes there. */
  software: boolean;
  features: string[];
}

export interface Gpu {
  device: GPUDevice;
  adapter: GPUAdapter;
  info: GpuInfo;
  /** One line for logs: adapter, backend, features. */
  describe(): string;
}

/** Thrown when no adapter can be had; the message says what to install. */
export class NoGpuError extends Error {
  override name = 'NoGpuError';
}

interface Candidate {
  backend: BackendName;
  flags: string[];
  featureLevel: 'core' | 'compatibility';
  /** Environment Dawn's loaders read at instance creation. */
  env?: Record<string, string>;
  /** Environment for this candidate's adapter request only, restored afterwards. */
  probeEnv?: Record<string, string>;
  /** Accept only hardware adapters from this candidate. */
  hardwareOnly?: boolean;
  /** Why this candidate is not worth asking (nothing to find), or undefined. */
  skip?: string;
}

/** Vulkan drivers that run on the CPU, by their loader manifest's file name (lavapipe, SwiftShader). */
export const CPU_VULKAN_DRIVERS = ['*lvp_icd*', '*swiftshader*'];

/**
 * How auto mode asks Vulkan for a hardware adapter on Linux. Without a GPU device node (DRM render
 * node, NVIDIA's or WSL's) no hardware driver can answer, so it does not ask: asking makes the Vulkan
 * loader and Dawn print warnings (no device; Dawn rejecting an old lavapipe) in every process that
 * starts a runtime. With one, the loader is told to skip the CPU drivers this candidate would reject
 * anyway, so that a machine with a GPU and Debian's mesa-vulkan-drivers does not print Dawn's
 * lavapipe rejection on every run. A user who chose Vulkan drivers (VK_ICD_FILENAMES, VK_DRIVER_FILES,
 * VK_LOADER_DRIVERS_*) keeps the choice; AUTORESEARCH_GPU=vulkan always asks.
 * (Dawn's notice that it clamps an adapter's dynamic-buffer limits to 16, "… artificially reduced
 * from 90 to 16 …", stays: native code writes it straight to descriptor 2 for the adapter we use, on
 * every backend, and nothing in-process can filter that.)
 */
export function nativeVulkanProbe(env: NodeJS.ProcessEnv, deviceNodes: readonly string[]): { skip?: string; probeEnv?: Record<string, string> } {
  if (['VK_ICD_FILENAMES', 'VK_DRIVER_FILES', 'VK_LOADER_DRIVERS_SELECT', 'VK_LOADER_DRIVERS_DISABLE'].some((k) => env[k])) return {};
  if (!deviceNodes.length) return { skip: 'no GPU device node (/dev/dri/renderD*, /dev/nvidia*, /dev/dxg)' };
  return { probeEnv: { VK_LOADER_DRIVERS_DISABLE: CPU_VULKAN_DRIVERS.join(',') } };
}

/** The GPU device nodes of this Linux machine. */
function gpuDeviceNodes(fs: typeof import('node:fs')): string[] {
  const list = (dir: string, re: RegExp) => {
    try {
      return fs.readdirSync(dir).filter((n) => re.test(n)).map((n) => `${dir}/${n}`);
    } catch {
      return [];
    }
  };
  return [...list('/dev/dri', /^renderD\d+$/), ...list('/dev', /^(nvidia\d+|dxg)$/)];
}

function existingSwiftShaderIcd(fs: typeof import('node:fs')): string | undefined {
  return SWIFTSHADER_ICD_PATHS.find((p) => fs.existsSync(p));
}

function nativeBackend(): BackendName {
  if (process.platform === 'darwin') return 'metal';
  if (process.platform === 'win32') return 'd3d12';
  return 'vulkan';
}

function candidates(choice: string, disabled: Set<string>, icd: string | undefined, fs: typeof import('node:fs')): Candidate[] {
  // Vulkan drivers warn on every start without XDG_RUNTIME_DIR (headless machines, CI): give them one
  const vulkanEnv = process.platform === 'linux' ? { XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' } : undefined;
  const native: Candidate = {
    backend: nativeBackend(),
    flags: [],
    featureLevel: 'core',
    hardwareOnly: true,
    env: vulkanEnv,
    ...(process.platform === 'linux' ? nativeVulkanProbe(process.env, gpuDeviceNodes(fs)) : {}),
  };
  const gles: Candidate = {
    backend: 'opengles',
    flags: ['backend=opengles'],
    featureLevel: 'compatibility',
    env: { EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless' },
  };
  const swiftshader: Candidate | undefined = icd
    ? {
        backend: 'swiftshader',
        flags: ['backend=vulkan'],
        featureLevel: 'core',
        env: { VK_ICD_FILENAMES: icd, VK_DRIVER_FILES: icd, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' },
      }
    : undefined;
  let list: Candidate[];
  switch (choice) {
    case 'auto':
      list = [native, gles, ...(swiftshader ? [swiftshader] : [])];
      break;
    case 'opengles':
      list = [gles];
      break;
    case 'swiftshader':
      list = swiftshader ? [swiftshader] : [];
      break;
    case 'vulkan':
    case 'metal':
    case 'd3d12':
      list = [{ backend: choice, flags: [`backend=${choice}`], featureLevel: 'core', env: choice === 'vulkan' ? vulkanEnv : undefined }];
      break;
    default:
      throw new NoGpuError(`AUTORESEARCH_GPU=${choice} is not one of: auto, ${BACKENDS.join(', ')}`);
  }
  return list.filter((c) => !disabled.has(c.backend));
}

function isSoftware(info: GPUAdapterInfo): boolean {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  return /llvmpipe|swiftshader|lavapipe|softpipe|warp|microsoft basic/.test(text) || !!info.isFallbackAdapter;
}

function adapterName(info: GPUAdapterInfo): string {
  const desc = info.description?.trim();
  const dev = info.device?.trim().replace(/-+$/, '');
  return desc && !/^OpenGL/.test(desc) ? desc : dev || desc || 'unknown adapter';
}

/** Copies every numeric limit of the adapter, so the device gets the adapter's real limits. */
function adapterLimits(adapter: GPUAdapter): Record<string, number> {
  const limits: Record<string, number> = {};
  const source = adapter.limits as unknown as Record<string, unknown>;
  for (const key in source) {
    const v = source[key];
    if (typeof v === 'number') limits[key] = v;
  }
  return limits;
}

/**
 * Every Dawn instance we create stays referenced for the life of the process: letting the GC
 * finalize a rejected instance (e.g. the Vulkan one on a machine without a GPU) while another is
 * in use crashes Dawn's threads ("terminate called after throwing std::system_error").
 */
const instances: GPU[] = [];

async function tryCandidate(c: Candidate): Promise<{ adapter: GPUAdapter } | { reason: string }> {
  if (c.skip) return { reason: `${c.backend}: ${c.skip}` };
  for (const [k, v] of Object.entries(c.env ?? {})) process.env[k] = v;
  const saved = Object.fromEntries(Object.keys(c.probeEnv ?? {}).map((k) => [k, process.env[k]]));
  Object.assign(process.env, c.probeEnv);
  let adapter: GPUAdapter | null;
  try {
    const gpu = create([...c.flags, ...DAWN_FLAGS]);
    instances.push(gpu);
    adapter = await gpu.requestAdapter({ featureLevel: c.featureLevel, powerPreference: 'high-performance' });
  } catch (e) {
    return { reason: `${c.backend}: ${(e as Error).message}` };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  if (!adapter) return { reason: `${c.backend}: no adapter` };
  if (c.hardwareOnly && isSoftware(adapter.info)) {
    return { reason: `${c.backend}: only a software adapter (${adapterName(adapter.info)})` };
  }
  return { adapter };
}

export interface AcquireOptions {
  /** Backend choice; defaults to AUTORESEARCH_GPU or 'auto'. */
  choice?: string;
  /** Backends to skip; defaults to AUTORESEARCH_GPU_DISABLE. */
  disable?: string[];
  /** Request these features only if present (default: all of WANTED_FEATURES). */
  features?: readonly string[];
}

/** Finds the best adapter and creates a device with its full limits and features. */
export async function acquireGpu(options: AcquireOptions = {}): Promise<Gpu> {
  const fs = await import('node:fs');
  const choice = (options.choice ?? process.env.AUTORESEARCH_GPU ?? 'auto').toLowerCase();
  const disabled = new Set(
    (options.disable ?? (process.env.AUTORESEARCH_GPU_DISABLE ?? '').split(','))
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  const icd = existingSwiftShaderIcd(fs);
  const reasons: string[] = [];
  for (const c of candidates(choice, disabled, icd, fs)) {
    const got = await tryCandidate(c);
    if ('reason' in got) {
      reasons.push(got.reason);
      continue;
    }
    const adapter = got.adapter;
    const wanted = options.features ?? WANTED_FEATURES;
    const features = wanted.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
    const device = await adapter.requestDevice({
      requiredLimits: adapterLimits(adapter),
      requiredFeatures: features,
      label: `autoresearch-ts on ${adapterName(adapter.info)}`,
    });
    const info: GpuInfo = {
      backend: c.backend,
      name: adapterName(adapter.info),
      vendor: adapter.info.vendor,
      architecture: adapter.info.architecture,
      software: isSoftware(adapter.info),
      features: [...features],
    };
    return {
      device,
      adapter,
      info,
      describe: () =>
        `gpu: ${info.name} | backend ${info.backend}${info.software ? ' (software)' : ''} | features: ${
          info.features.join(', ') || 'none'
        }`,
    };
  }
  const tried = reasons.length ? `Tried: ${reasons.join('; ')}.` : `No backend left to try (choice '${choice}', disabled: ${[...disabled].join(',') || 'none'}).`;
  throw new NoGpuError(
    `No WebGPU adapter found. ${tried}\n` +
      'To fix: install a GPU driver with Vulkan (Linux), or a software adapter: Mesa EGL/GLES ' +
      '(Debian: apt-get install libegl1 libgles2 libegl-mesa0) for llvmpipe, or Debian\'s chromium package ' +
      'for SwiftShader. AUTORESEARCH_GPU=opengles|swiftshader|vulkan selects one explicitly.',
  );
}
