/**
 * The sandbox's parts that need no GPU: the environment allow-list, the build (transpiled
 * TypeScript with rewritten specifiers), the import policy on resolved URLs, the signed result
 * channel, and the two commands' argument handling. The sandboxed runs themselves are in
 * test/redteam/.
 */
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { main as checkMain } from '../../src/research/check_cli.ts';
import { parseExperimentArgs, UsageError } from '../../src/research/experiment_cli.ts';
import { trainMayImport } from '../../src/research/harness_hooks.ts';
import { parseSignedChannel } from '../../src/research/runner.ts';
import { buildProject, netIsolation, sandboxArgv, sandboxEnv, sandboxPaths } from '../../src/research/sandbox.ts';

const REPO = join(import.meta.dirname, '..', '..');

describe('sandboxEnv', () => {
  it('keeps only allow-listed variables and moves home and temp into the scratch folder', () => {
    const env = sandboxEnv({ PATH: '/usr/bin', ANTHROPIC_API_KEY: 'sk-ant-x', GITHUB_TOKEN: 'ghp', AWS_SECRET_ACCESS_KEY: 'a', EGL_PLATFORM: 'surfaceless', HOME: '/root', NODE_OPTIONS: '--require x' }, '/s');
    expect(env.PATH).toBe('/usr/bin');
    expect(env.EGL_PLATFORM).toBe('surfaceless');
    for (const k of ['ANTHROPIC_API_KEY', 'GITHUB_TOKEN', 'AWS_SECRET_ACCESS_KEY', 'NODE_OPTIONS']) expect(env[k]).toBeUndefined();
    expect(env.HOME).toBe('/s/home');
    expect(env.TMPDIR).toBe('/s/tmp');
    expect(env.MESA_SHADER_CACHE_DIR).toBe('/root/.cache/mesa_shader_cache');
  });
});

describe('the build and the command line', () => {
  const root = mkdtempSync(join(tmpdir(), 'sandbox-test-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('transpiles train.ts, prepare.ts and src/ to JavaScript with .js specifiers (imports and worker URLs)', () => {
    const paths = sandboxPaths(root);
    buildProject({ repoDir: REPO, trainSource: "import { MAX_SEQ_LEN } from './prepare.ts';\nconst n: number = MAX_SEQ_LEN;\nconsole.log(n);\n", outDir: paths.build });
    const train = readFileSync(join(paths.build, 'train.js'), 'utf8');
    expect(train).toMatch(/from ["']\.\/prepare\.js["']/);
    expect(train).not.toContain(': number');
    const loader = readFileSync(join(paths.build, 'src', 'data', 'loader.js'), 'utf8');
    expect(loader).toMatch(/new URL\(["']\.\/loader_worker\.js["'], import\.meta\.url\)/);
    expect(existsSync(join(paths.build, 'src', 'research', 'harness.js'))).toBe(true);
    expect(existsSync(join(paths.build, 'kernels', 'eval_bpb.wgsl'))).toBe(true);
    expect(JSON.parse(readFileSync(join(paths.build, 'package.json'), 'utf8')).type).toBe('module');
  });

  it('runs node under the permission model with the harness first, reads and writes limited, no child processes', () => {
    const paths = sandboxPaths(root);
    const { argv, warning } = sandboxArgv({ paths, repoDir: REPO, readPaths: ['/data/train.parquet'], entry: 'train.js' });
    const net = netIsolation();
    if (net.kind === 'netns') {
      expect(argv.slice(0, net.prefix.length)).toEqual(net.prefix);
      expect(warning).toBeNull();
    } else expect(warning).toMatch(/WITH network access/);
    expect(argv).toContain('--experimental-permission');
    expect(argv).toContain('--disallow-code-generation-from-strings');
    expect(argv).toContain(`--allow-fs-write=${paths.scratch}`);
    expect(argv).toContain('--allow-fs-read=/data/train.parquet');
    expect(argv.some((a) => a.startsWith('--allow-child-process'))).toBe(false);
    expect(argv.filter((a) => a.startsWith('--allow-fs-write'))).toHaveLength(1);
    const i = argv.indexOf('--import');
    expect(argv[i + 1]).toBe(join(paths.build, 'src', 'research', 'harness.js'));
    expect(argv[argv.length - 1]).toBe(join(paths.build, 'train.js'));
  });
});

describe('the import policy (resolved URLs)', () => {
  const build = pathToFileURL('/b').href + '/';
  const d = { trainUrl: build + 'train.js', buildUrl: build, webgpuUrl: pathToFileURL('/nm/webgpu').href + '/' };
  it.each([
    [build + 'prepare.js', true],
    [build + 'src/gpu/runtime.js', true],
    [d.webgpuUrl + 'index.js', true],
    [build + 'src/research/harness.js', false],
    [build + 'src/%72esearch/harness.js', false],
    [build + 'src/gpu/runtime.js?x=1', false],
    ['node:fs', false],
    ['data:text/javascript,1', false],
    [pathToFileURL('/nm/hyparquet/index.js').href, false],
    [build + 'train.js', false],
  ])('%s → %s', (url, ok) => {
    expect(trainMayImport(url, d)).toBe(ok);
  });
});

describe('the signed result channel', () => {
  const key = 'k'.repeat(64);
  const sign = (payload: string, k = key) => `${createHmac('sha256', k).update(payload).digest('hex')} ${payload}\n`;
  it('takes one line signed with the run key', () => {
    const r = parseSignedChannel(sign('{"val_bpb":1.5,"peak_vram_mb":10,"training_seconds":3}'), key);
    expect(r).toEqual({ ok: true, result: { val_bpb: 1.5, peak_vram_mb: 10, training_seconds: 3 } });
  });
  it.each([
    ['an unsigned line', '{"val_bpb":0.1,"peak_vram_mb":1}\n', /not signed/],
    ['a line signed with another key', sign('{"val_bpb":0.1,"peak_vram_mb":1}', 'x'), /not signed/],
    ['a forged line beside the real one', '00 {"val_bpb":0.1,"peak_vram_mb":1}\n' + sign('{"val_bpb":1.5,"peak_vram_mb":1}'), /2 lines/],
    ["the harness's failure line", sign('{"error":"CausalityError: the model is not causal"}'), /harness stopped the run: CausalityError/],
    ['nothing', '', /no result/],
  ])('refuses %s', (_name, text, why) => {
    const r = parseSignedChannel(text, key);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(why);
  });
});

describe('npm run experiment / npm run check arguments', () => {
  it('parses --max-steps and defaults; null for --help', () => {
    const a = parseExperimentArgs(['--max-steps', '5', '--repo', '/r'])!;
    expect(a).toEqual({ maxSteps: 5, repo: '/r', file: '/r/train.ts', log: '/r/run.log' });
    expect(parseExperimentArgs(['--help'])).toBeNull();
  });
  it.each([[['--max-steps', 'x']], [['--max-steps', '-1']], [['--bogus']], [['extra']]])('reports %j in one line', (argv) => {
    expect(() => parseExperimentArgs(argv)).toThrow(UsageError);
    try {
      parseExperimentArgs(argv);
    } catch (e) {
      expect((e as Error).message).not.toContain('\n');
    }
  });
  it('check lists what the guard rejects, and fails on a missing file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'check-test-'));
    const lines: string[] = [];
    const log = console.log;
    const err = console.error;
    console.log = (m: string) => lines.push(m);
    console.error = (m: string) => lines.push(m);
    try {
      writeFileSync(join(dir, 'bad.ts'), "// @ts-nocheck\nconst { constructor: F } = (() => 0);\nconsole.log(F);\n");
      expect(checkMain(['--repo', REPO, '--file', join(dir, 'bad.ts')])).toBe(1);
      expect(lines.join('\n')).toMatch(/@ts-nocheck' is not allowed/);
      expect(lines.join('\n')).toMatch(/destructuring 'constructor'/);
      lines.length = 0;
      expect(checkMain(['--file', join(dir, 'missing.ts')])).toBe(2);
      expect(lines).toEqual([`npm run check: cannot read ${join(dir, 'missing.ts')}`]);
      expect(checkMain(['--nope'])).toBe(2);
    } finally {
      console.log = log;
      console.error = err;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
