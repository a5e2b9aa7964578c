/**
 * @file The sandbox an experiment's train.ts runs in (issue 11). The parent (runExperiment) is
 * trusted; the child is not. What the child gets:
 *
 * - Code: the project's TypeScript transpiled in the parent (TypeScript's transpileModule, no type
 *   check) into a fresh build folder: train.ts as proposed, the rest from the checkout. No tsx and
 *   no esbuild child process inside, so the child needs no permission to start processes.
 * - Node's permission model (`--experimental-permission`): reads only the build, the project's
 *   node_modules and kernels, the tokenizer and the training split (not the validation split, which
 *   the harness gets through a pipe); writes only a scratch folder; worker threads (the
 *   dataloader) and addons (dawn.node) allowed, child processes not; `process.binding` and /proc
 *   out of reach. `--disallow-code-generation-from-strings` stops eval and the Function constructor.
 * - The harness preload (src/research/harness.ts) loads first: it captures what the metric needs,
 *   installs the import policy (train.ts imports only prepare.ts, src/ outside src/research/, and
 *   webgpu, checked by resolved URL), and locks `process.dlopen` once dawn.node is loaded.
 * - An environment built from an allow-list (no API keys, no tokens), HOME and TMPDIR in the scratch
 *   folder.
 * - No network: a fresh network namespace (`unshare -n` as root, `unshare -rn` through a user
 *   namespace otherwise); where neither works the run goes on with a printed warning.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { ts } from 'ts-morph';
import { nativeVulkanProbe } from '../gpu/device.ts';

/** Environment variables a run may see (values copied from the parent when set). */
export const ENV_ALLOW = [
  'PATH', 'LANG', 'LC_ALL', 'TZ', 'TERM', 'COLUMNS',
  // software adapters and GPU drivers
  'EGL_PLATFORM', 'VK_ICD_FILENAMES', 'VK_DRIVER_FILES', 'VK_LOADER_DEBUG', 'VK_LOADER_DRIVERS_SELECT', 'VK_LOADER_DRIVERS_DISABLE', 'LD_LIBRARY_PATH', 'LIBGL_ALWAYS_SOFTWARE', 'GALLIUM_DRIVER',
  'LP_NUM_THREADS', 'MESA_LOADER_DRIVER_OVERRIDE', 'MESA_SHADER_CACHE_DISABLE', 'CUDA_VISIBLE_DEVICES', 'DISPLAY', 'WAYLAND_DISPLAY',
  // the project's own settings
  'AUTORESEARCH_CACHE', 'AUTORESEARCH_GPU', 'AUTORESEARCH_GPU_DISABLE', 'AUTORESEARCH_PEAK_TFLOPS', 'AUTORESEARCH_QUIET_DAWN',
  'AUTORESEARCH_SEED', // the driver's per-run seed (recorded with the run)
];

/** The environment of a sandboxed run: the allow-list only, home and temp in the scratch folder. */
export function sandboxEnv(source: NodeJS.ProcessEnv, scratch: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const k of ENV_ALLOW) if (source[k] !== undefined) env[k] = source[k];
  env.HOME = join(scratch, 'home');
  env.TMPDIR = join(scratch, 'tmp');
  env.XDG_RUNTIME_DIR = join(scratch, 'tmp');
  env.XDG_CACHE_HOME = join(scratch, 'home', '.cache');
  // Mesa's shader cache is written by native code (out of the permission model's reach anyway):
  // keep the parent's, so a run does not recompile every shader from cold
  const home = source.HOME;
  const mesa = source.MESA_SHADER_CACHE_DIR ?? (source.XDG_CACHE_HOME ? join(source.XDG_CACHE_HOME, 'mesa_shader_cache') : home ? join(home, '.cache', 'mesa_shader_cache') : undefined);
  if (mesa) env.MESA_SHADER_CACHE_DIR = mesa;
  env.NODE_NO_WARNINGS = '1'; // the permission model's "experimental" warning, once per worker
  // The runtime looks for GPU device nodes (/dev/dri/renderD*, /dev/nvidia*) before asking Vulkan;
  // /dev is not readable inside, so the parent looks and passes on what the runtime would have done
  const probe = nativeVulkanProbe(env, gpuDeviceNodes());
  if (probe.probeEnv) Object.assign(env, probe.probeEnv);
  return env;
}

function gpuDeviceNodes(): string[] {
  const list = (dir: string, re: RegExp) => {
    try {
      return readdirSync(dir).filter((n) => re.test(n)).map((n) => `${dir}/${n}`);
    } catch {
      return [];
    }
  };
  return process.platform === 'linux' ? [...list('/dev/dri', /^renderD\d+$/), ...list('/dev', /^(nvidia\d+|dxg)$/)] : [];
}

// ---------------------------------------------------------------------------------------------
// Network isolation
// ---------------------------------------------------------------------------------------------

export type NetIsolation = { kind: 'netns'; prefix: string[] } | { kind: 'none'; warning: string };

let netCache: NetIsolation | null = null;

/** How this machine cuts a child's network: `unshare -n` (root), `unshare -rn` (user namespaces), or not at all. */
export function netIsolation(): NetIsolation {
  if (netCache) return netCache;
  const tries = process.getuid?.() === 0 ? [['-n'], ['-rn']] : [['-rn'], ['-n']];
  for (const flags of tries) {
    const r = spawnSync('unshare', [...flags, 'true'], { stdio: 'ignore', timeout: 10_000 });
    if (r.status === 0) return (netCache = { kind: 'netns', prefix: ['unshare', ...flags, '--'] });
  }
  return (netCache = {
    kind: 'none',
    warning: 'warning: this machine cannot make a network namespace (unshare -n / unshare -rn failed): the experiment runs WITH network access. ' +
      'On Linux, run as root or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1).',
  });
}

// ---------------------------------------------------------------------------------------------
// Build: the project transpiled to JavaScript
// ---------------------------------------------------------------------------------------------

const TRANSPILE: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  rewriteRelativeImportExtensions: true,
  verbatimModuleSyntax: false,
  isolatedModules: true,
  sourceMap: false,
  inlineSourceMap: false,
};

/** `new URL('./x.ts', import.meta.url)` → './x.js' (workers and entries named by URL). */
function rewriteUrlSpecifiers(js: string): string {
  return js.replace(/new URL\((['"])(\.{1,2}\/[^'"]+)\.ts\1,\s*import\.meta\.url\)/g, (_m, q: string, p: string) => `new URL(${q}${p}.js${q}, import.meta.url)`);
}

function transpile(source: string, fileName: string): string {
  const out = ts.transpileModule(source, { compilerOptions: TRANSPILE, fileName, reportDiagnostics: false });
  return rewriteUrlSpecifiers(out.outputText);
}

function walkFiles(dir: string, out: string[], rel = ''): void {
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const r = join(rel, name);
    const st = statSync(join(dir, r));
    if (st.isDirectory()) walkFiles(dir, out, r);
    else out.push(r);
  }
}

export interface BuildOptions {
  repoDir: string;
  /** The train.ts text to run. */
  trainSource: string;
  /** Empty folder the build is written to. */
  outDir: string;
}

/** Transpile prepare.ts, src/ and the given train.ts into outDir (kernels and node_modules linked). */
export function buildProject(o: BuildOptions): void {
  const repo = resolve(o.repoDir);
  mkdirSync(o.outDir, { recursive: true });
  const files: string[] = [];
  walkFiles(join(repo, 'src'), files);
  const emit = (rel: string, text: string) => {
    const dest = join(o.outDir, rel);
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, text);
  };
  for (const rel of files) {
    const abs = join(repo, 'src', rel);
    const relOut = join('src', rel);
    if (rel.endsWith('.d.ts')) continue;
    if (rel.endsWith('.ts')) emit(relOut.slice(0, -3) + '.js', transpile(readFileSync(abs, 'utf8'), abs));
    else if (/\.(mjs|js|json|wgsl)$/.test(rel)) copyFileSync(abs, join(o.outDir, relOut));
  }
  emit('prepare.js', transpile(readFileSync(join(repo, 'prepare.ts'), 'utf8'), join(repo, 'prepare.ts')));
  emit('train.js', transpile(o.trainSource, join(repo, 'train.ts')));
  // ESM: "type": "module" for .js files, as in the project
  writeFileSync(join(o.outDir, 'package.json'), JSON.stringify({ type: 'module', private: true }) + '\n');
  for (const link of ['node_modules', 'kernels']) {
    const target = join(repo, link);
    if (existsSync(target)) symlinkSync(realpathSync(target), join(o.outDir, link), 'dir');
  }
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

export interface SandboxPaths {
  /** Root of everything the run owns (removed afterwards). */
  root: string;
  build: string;
  /** The only folder the run may write (home, temp). */
  scratch: string;
}

export function sandboxPaths(root: string): SandboxPaths {
  return { root, build: join(root, 'build'), scratch: join(root, 'scratch') };
}

export interface CommandOptions {
  paths: SandboxPaths;
  repoDir: string;
  /** Files or folders the run may read besides the build, node_modules and kernels (tokenizer, training data). */
  readPaths: string[];
  /** Entry module relative to the build (train.js, or the harness's entry when a step cap is set). */
  entry: string;
  /** Skip the network namespace (tests of the namespace itself only). */
  network?: boolean;
}

/** argv of the sandboxed node process (network namespace prefix included where available). */
export function sandboxArgv(o: CommandOptions): { argv: string[]; warning: string | null } {
  const { build, scratch } = o.paths;
  const repo = realpathSync(o.repoDir);
  const reads = [build, join(repo, 'node_modules'), join(repo, 'kernels'), ...o.readPaths].map((p) => (existsSync(p) ? realpathSync(p) : p));
  const node = [
    process.execPath,
    '--experimental-permission',
    // one flag per path: Node 20 splits a single flag's value on commas
    ...reads.map((p) => `--allow-fs-read=${p}`),
    `--allow-fs-write=${scratch}`,
    '--allow-worker',
    '--allow-addons',
    '--disallow-code-generation-from-strings',
    '--import', join(build, 'src', 'research', 'harness.js'),
    join(build, o.entry),
  ];
  if (o.network) return { argv: node, warning: null };
  const net = netIsolation();
  if (net.kind === 'netns') return { argv: [...net.prefix, ...node], warning: null };
  return { argv: node, warning: net.warning };
}

/** Make the run's folders (scratch: home, tmp). */
export function makeSandboxDirs(p: SandboxPaths): void {
  mkdirSync(join(p.scratch, 'home'), { recursive: true });
  mkdirSync(join(p.scratch, 'tmp'), { recursive: true });
}

export function removeSandbox(p: SandboxPaths): void {
  rmSync(p.root, { recursive: true, force: true });
}

/** Path of `p` relative to the build, for messages. */
export function buildRelative(p: SandboxPaths, file: string): string {
  return relative(p.build, file);
}
