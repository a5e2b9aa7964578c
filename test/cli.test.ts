/**
 * Every command keeps the command-line contract of src/util/cli.ts: `--help` prints its usage on
 * stdout and exits 0 without starting anything (no GPU device: Dawn would print its adapter
 * warnings on stderr; no data prepared: the cache stays empty); a bad argument or a missing file is
 * ONE line on stderr that says what to do, with no stack trace, exit 2 (usage) or 1 (the file).
 * The commands run as subprocesses (`node --import tsx`, one process each: tsx's CLI would add a
 * second), one after another; two through npm itself.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { choiceOption, intOption, parseCommandLine, UsageError } from '../src/util/cli.ts';

const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
const cache = mkdtempSync(join(tmpdir(), 'cli-cache-'));
afterAll(() => rmSync(cache, { recursive: true, force: true }));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `node --import tsx <file> args`, or with npm: `npm run --silent <script> -- args`. */
function run(file: string, args: string[], via: 'node' | 'npm' = 'node'): Promise<Run> {
  const cmd = via === 'node' ? process.execPath : 'npm';
  const argv = via === 'node' ? ['--import', 'tsx', file, ...args] : ['run', '--silent', file, '--', ...args];
  return new Promise((resolve) => {
    const env = { ...process.env, AUTORESEARCH_CACHE: cache, ANTHROPIC_API_KEY: '' };
    execFile(cmd, argv, { cwd: REPO_ROOT, env, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

/** The one-line usage error: `<name>: <what>; see \`npm run <name> -- --help\``. */
function expectOneLineUsageError(r: Run, name: string, what: RegExp): void {
  expect(r.status, r.stderr).toBe(2);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^${name}: .*; see \`npm run ${name} -- --help\`$`));
  expect(lines[0]).toMatch(what);
  expect(r.stdout).toBe('');
}

// [npm script name, the file behind it, a bad argument and what the error must say]
const COMMANDS: Array<[string, string, string[], RegExp]> = [
  ['prepare', 'prepare.ts', ['--datset', 'climbmix'], /unknown argument '--datset'/],
  ['train', 'src/train_cli.ts', ['--steps', '3'], /unexpected argument '--steps'.*edit train\.ts/],
  ['train', 'train.ts', ['--fast'], /unexpected argument '--fast'/],
  ['verify', 'src/verify.ts', ['--tolerance', '1'], /unknown option '--tolerance'/],
  ['research', 'src/research/cli.ts', ['--tag', 'x', '--max-experiments', 'many'], /--max-experiments expects an integer/],
  ['analyze', 'src/research/analyze.ts', ['--repos', '.'], /unknown option '--repos'/],
  ['bench', 'bench/run.ts', ['--size', 'huge'], /--size must be one of small, model, got 'huge'/],
];

describe('every command', () => {
  it.each(COMMANDS.map(([name, file]) => [file, name] as const))('%s --help prints its usage, starts nothing, exits 0', async (file, name) => {
    const r = await run(file, ['--help']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: npm run ${name}\\b`));
    expect(r.stdout).toMatch(/-h, --help/);
    expect(r.stderr).toBe(''); // no GPU adapter was requested (Dawn warns on stderr when it is)
    expect(r.stdout).not.toMatch(/^gpu: /m);
    expect(readdirSync(cache)).toEqual([]); // nothing prepared
  });

  it.each(COMMANDS.map(([name, file, args, what]) => [`${file} ${args.join(' ')}`, name, file, args, what] as const))(
    '%s: one line, exit 2',
    async (_, name, file, args, what) => {
      expectOneLineUsageError(await run(file, args), name, what);
    },
  );

  it('a missing file is one line that says what to do, exit 1, before any GPU starts', async () => {
    const v = await run('src/verify.ts', ['no/such/fixture.json']);
    expect(v.status).toBe(1);
    expect(v.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^verify: cannot read fixture .*no\/such\/fixture\.json: no such file; pass a fixture file \(e\.g\. fixtures\/gpt-tiny\.json\)/)]);
    const a = await run('src/research/analyze.ts', ['--repo', join(cache, 'nowhere')]);
    expect(a.status).toBe(1);
    expect(a.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^analyze: no results\.tsv in .*nowhere: run npm run research first/)]);
  });

  it('npm run bench -- --help and npm run verify -- --help (which crashed) print their usage', async () => {
    for (const name of ['bench', 'verify']) {
      const r = await run(name, ['--help'], 'npm');
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: npm run ${name}\\b`));
      expect(r.stderr).toBe('');
    }
  });
});

describe('parseCommandLine', () => {
  const spec = { run: 'npm run x', name: 'x', usage: 'Usage: x', options: { n: { type: 'string' }, flag: { type: 'boolean' } }, positionals: { max: 1, what: 'file' } } as const;

  it('reads options and positionals, and returns null for --help or -h wherever they are', () => {
    const p = parseCommandLine(spec, ['--n', '3', '--flag', 'a.json'])!;
    expect(p.values).toEqual({ n: '3', flag: true });
    expect(p.positionals).toEqual(['a.json']);
    expect(parseCommandLine(spec, ['--bogus', '--help'])).toBeNull();
    expect(parseCommandLine(spec, ['a', '-h'])).toBeNull();
  });

  it.each([
    [['--bogus'], "unknown option '--bogus'"],
    [['--n'], '--n needs a value'],
    [['--flag=yes'], '--flag takes no value'],
    [['a', 'b'], "too many arguments ('b'): at most 1 file"],
  ])('%j → %s', (argv, message) => {
    expect(() => parseCommandLine(spec, argv)).toThrow(new UsageError(message));
  });

  it('intOption and choiceOption name the option, what it takes and what it got', () => {
    expect(intOption('repeats', '3', 1)).toBe(3);
    expect(intOption('repeats', undefined, 1)).toBeUndefined();
    expect(() => intOption('repeats', '0', 1)).toThrow(new UsageError("--repeats needs an integer ≥ 1, got '0'"));
    expect(() => intOption('warmup', '1.5')).toThrow(new UsageError("--warmup needs an integer ≥ 0, got '1.5'"));
    expect(choiceOption('size', 'small', ['small', 'model'])).toBe('small');
    expect(() => choiceOption('size', 'huge', ['small', 'model'])).toThrow(new UsageError("--size must be one of small, model, got 'huge'"));
  });
});
