/**
 * @file The command-line contract every command keeps (npm run prepare|train|verify|research|
 * analyze|bench and the tsx files behind them): `--help` / `-h` prints the usage on stdout and exits
 * 0 before anything heavy starts (no GPU device, no data); a bad argument is ONE line on stderr that
 * says what to do, exit 2; a mistake the user can fix (a missing file, no adapter) is one message
 * without a stack trace, exit 1. Only programming errors (TypeError, …) keep their stack.
 * Depends on nothing but node:util, so `--help` costs no more than starting tsx.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A bad command line: the message names the argument and what to pass instead. Exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A failure the user can fix (missing file, bad input): printed as one message, no stack. Exit 1. */
export class CliError extends Error {
  override name = 'CliError';
}

export interface CommandSpec<O extends ParseArgsConfig['options']> {
  /** How the user runs it, e.g. 'npm run verify': the error lines point at `<run> -- --help`. */
  run: string;
  /** Short name that prefixes every error line, e.g. 'verify'. */
  name: string;
  /** The whole --help text. */
  usage: string;
  /** node:util parseArgs options (strict); `help`/`-h` is added. */
  options: O;
  /** How many positional arguments it takes (default none). */
  positionals?: { min?: number; max?: number; what?: string };
}

type Parsed<O extends ParseArgsConfig['options']> = ReturnType<typeof parseArgs<{ options: O; allowPositionals: true; strict: true }>>;

/** The hint every usage error ends with. */
export function helpHint(spec: Pick<CommandSpec<never>, 'run'>): string {
  return `see \`${spec.run}${spec.run.startsWith('npm run') ? ' --' : ''} --help\``;
}

/** node:util's parse errors, rewritten as one short line ("unknown option '--x'", …). */
function describeParseError(e: Error & { code?: string }): string {
  const quoted = /'([^']+)'/.exec(e.message)?.[1];
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option '${quoted ?? e.message}'`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument '${quoted ?? e.message}'`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const option = /(--[\w-]+)/.exec(e.message)?.[1];
      if (/argument missing/.test(e.message)) return `${option ?? 'an option'} needs a value`;
      if (/does not take an argument/.test(e.message)) return `${option ?? 'an option'} takes no value`;
      return e.message.split('\n')[0];
    }
    default:
      return e.message.split('\n')[0];
  }
}

/** True when the command line asks for help (checked before anything else, even a bad argument). */
export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

/**
 * Parses argv (without node and the script) strictly. Returns null when --help was asked (the caller
 * prints the usage); throws UsageError for anything it does not accept.
 */
export function parseCommandLine<O extends ParseArgsConfig['options']>(spec: CommandSpec<O>, argv: readonly string[]): Parsed<O> | null {
  if (wantsHelp(argv)) return null;
  let parsed: Parsed<O>;
  try {
    parsed = parseArgs({ args: [...argv], options: spec.options, allowPositionals: true, strict: true }) as Parsed<O>;
  } catch (e) {
    throw new UsageError(describeParseError(e as Error & { code?: string }));
  }
  const { min = 0, max = 0, what = 'argument' } = spec.positionals ?? {};
  if (parsed.positionals.length > max) {
    throw new UsageError(max === 0 ? `unexpected argument '${parsed.positionals[0]}'` : `too many arguments ('${parsed.positionals.slice(max).join("' '")}'): at most ${max} ${what}`);
  }
  if (parsed.positionals.length < min) throw new UsageError(`missing ${what}`);
  return parsed;
}

/** True for errors whose message is meant for the user as it stands (no stack trace helps). */
export function isUserError(e: unknown): e is Error {
  if (!(e instanceof Error)) return false;
  // plain Error: our own throws say what to do; typed errors of ours are listed by name so that this
  // file needs no import of the GPU layer (which loads Dawn)
  return e.constructor === Error || e instanceof UsageError || e instanceof CliError || ['NoGpuError', 'GpuOutOfMemoryError', 'ResearchError', 'FatalApiError'].includes(e.name);
}

/** The one-line (or, for a multi-line user message, the message's) report of an error and its exit status. */
export function reportError(spec: Pick<CommandSpec<never>, 'run' | 'name'>, e: unknown): number {
  if (e instanceof UsageError) {
    console.error(`${spec.name}: ${e.message}; ${helpHint(spec)}`);
    return 2;
  }
  if (isUserError(e)) {
    console.error(`${spec.name}: ${e.message}`);
    return 1;
  }
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  return 1;
}

/**
 * Runs a command's body with the contract above and returns its exit status: 0 after --help,
 * 2 for a usage error, 1 for any other error, else what `body` returns (default 0).
 */
export async function runCommand<O extends ParseArgsConfig['options']>(
  spec: CommandSpec<O>,
  argv: readonly string[],
  body: (args: Parsed<O>) => Promise<number | void> | number | void,
): Promise<number> {
  let args: Parsed<O> | null;
  try {
    args = parseCommandLine(spec, argv);
  } catch (e) {
    return reportError(spec, e);
  }
  if (!args) {
    console.log(spec.usage);
    return 0;
  }
  try {
    return (await body(args)) ?? 0;
  } catch (e) {
    return reportError(spec, e);
  }
}

/** A non-negative (or, with min 1, positive) integer option value, or undefined when absent. */
export function intOption(name: string, v: string | undefined, min = 0): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v) || Number(v) < min) throw new UsageError(`--${name} needs an integer ≥ ${min}, got '${v}'`);
  return Number(v);
}

/** One of a fixed set of values, or undefined when absent. */
export function choiceOption<T extends string>(name: string, v: string | undefined, choices: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!(choices as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got '${v}'`);
  return v as T;
}

export const TRAIN_USAGE = `Usage: npm run train     (or: npx tsx train.ts > run.log 2>&1)

Trains train.ts's GPT for TIME_BUDGET seconds (prepare.ts), evaluates val_bpb on the pinned
validation data and prints the summary block (grep "^val_bpb:" run.log). npm run train first
prepares the built-in corpus and tokenizer if none is prepared (npm run prepare does the others).
It takes no options: the experiment is whatever train.ts says. Environment:
  AUTORESEARCH_GPU=auto|vulkan|metal|d3d12|opengles|swiftshader   which adapter (default auto)
  AUTORESEARCH_CACHE=<dir>                                         data and tokenizer (default ~/.cache/autoresearch-ts)
  AUTORESEARCH_PEAK_TFLOPS=<x>                                     peak FLOP/s for MFU on an unlisted GPU
  -h, --help   this text`;

/**
 * train.ts's command line: --help prints TRAIN_USAGE and exits 0; any other argument is one line and
 * exit 2 (train.ts takes none, and must not start a 5-minute run on a typo).
 */
export function trainCommandLine(argv: readonly string[]): void {
  if (wantsHelp(argv)) {
    console.log(TRAIN_USAGE);
    process.exit(0);
  }
  if (argv.length) process.exit(reportError({ run: 'npm run train', name: 'train' }, new UsageError(`unexpected argument '${argv[0]}': train takes no options (edit train.ts instead)`)));
}
