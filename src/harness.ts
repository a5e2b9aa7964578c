/**
 * @file The harness side of a training run, kept out of train.ts: which runtime and tokenizer a
 * run gets, how many steps it may take, the sizes it trains at on a software adapter (or in a
 * test), and how a failed run is reported. train.ts asks for a run (`startRun`), passes its own
 * sizes through `run.sizes(...)`, and ends with `runMain(train)`.
 */
import { Tokenizer } from '../prepare.ts';
import { GpuOutOfMemoryError, Runtime } from './gpu/runtime.ts';
import { trainCommandLine } from './util/cli.ts';

/** The sizes a run trains at: train.ts's hyperparameters, unless the harness shrinks them. */
export interface RunSizes {
  depth: number;
  aspectRatio: number;
  headDim: number;
  seqLen: number;
  /** Rows per forward/backward (DEVICE_BATCH_SIZE). */
  deviceBatchSize: number;
  /** Tokens per optimizer step (TOTAL_BATCH_SIZE); a multiple of deviceBatchSize · seqLen. */
  totalBatchSize: number;
}

/**
 * Software adapters (llvmpipe, SwiftShader) run near 1 GFLOP/s: they train this tiny model so a run
 * ends in minutes. Their val_bpb compares only with other software-adapter runs.
 */
export const SOFTWARE_SIZES: Readonly<RunSizes> = Object.freeze({ depth: 2, aspectRatio: 32, headDim: 32, seqLen: 256, deviceBatchSize: 2, totalBatchSize: 2 * 256 });

/** What train() gets from the harness. */
export interface TrainRun {
  rt: Runtime;
  tokenizer: Tokenizer;
  /** Optimizer steps allowed besides the time budget (Infinity in a normal run; 0 evaluates the initialised model). */
  maxSteps: number;
  /** The sizes to train at, given train.ts's own (a software adapter or a test may replace them). */
  sizes(wanted: RunSizes): RunSizes;
  /** The compute dtype for train.ts's PRECISION on this adapter ('auto': f16 where it has shader-f16); a test may replace it. */
  precision(wanted: 'auto' | 'f16' | 'f32'): 'f32' | 'f16';
  /** The run's seed: the research driver gives each re-run its own (AUTORESEARCH_SEED), else 42 as in the reference. */
  seed: number;
}

export interface RunOptions {
  runtime?: Runtime;
  tokenizer?: Tokenizer;
  /** Default: $AUTORESEARCH_MAX_STEPS, else no limit. */
  maxSteps?: number;
  /** Sizes that replace train.ts's (tests); applied after the software-adapter sizing. */
  sizes?: Partial<RunSizes>;
  /** A precision that replaces train.ts's PRECISION (tests). */
  precision?: 'auto' | 'f16' | 'f32';
  /** Default: $AUTORESEARCH_SEED, else 42. */
  seed?: number;
  log?: (line: string) => void;
}

function maxStepsFromEnv(): number {
  const raw = process.env.AUTORESEARCH_MAX_STEPS;
  if (raw === undefined || raw === '') return Infinity;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`AUTORESEARCH_MAX_STEPS must be a whole number of steps, got '${raw}'`);
  return n;
}

function seedFromEnv(): number {
  const raw = process.env.AUTORESEARCH_SEED;
  if (raw === undefined || raw === '') return 42;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`AUTORESEARCH_SEED must be a whole number, got '${raw}'`);
  return n;
}

/** The compute dtype a PRECISION setting asks for on this runtime's adapter. */
export function computeDtype(rt: Runtime, precision: 'auto' | 'f16' | 'f32'): 'f32' | 'f16' {
  if (precision === 'f16' && !rt.f16) throw new Error(`PRECISION 'f16' needs an adapter with shader-f16; ${rt.gpu.info.name} has none (use 'auto' or 'f32' in train.ts)`);
  return precision === 'auto' ? (rt.f16 ? 'f16' : 'f32') : precision;
}

/** Opens the GPU (unless given one), loads the tokenizer, and says how the run is sized. */
export async function startRun(o: RunOptions = {}): Promise<TrainRun> {
  const log = o.log ?? ((line: string) => console.log(line));
  const rt = o.runtime ?? (await Runtime.create());
  log(rt.gpu.describe());
  const software = rt.gpu.info.software;
  const tokenizer = o.tokenizer ?? Tokenizer.load();
  return {
    rt,
    tokenizer,
    maxSteps: o.maxSteps ?? maxStepsFromEnv(),
    sizes(wanted: RunSizes): RunSizes {
      if (software) log('Software adapter: training the small configuration (SOFTWARE_SIZES in src/harness.ts)');
      return { ...(software ? SOFTWARE_SIZES : wanted), ...o.sizes };
    },
    precision: (wanted) => computeDtype(rt, o.precision ?? wanted),
    seed: o.seed ?? seedFromEnv(),
  };
}

/**
 * Runs train.ts's main function and exits: 0 on success, 1 on an error. The command line is checked
 * first (--help; train.ts takes no arguments). Errors that say what to do (plain Errors, out of
 * memory) print their message; programming errors (TypeError, …) their stack.
 */
export async function runMain(main: () => Promise<unknown>): Promise<never> {
  trainCommandLine(process.argv.slice(2)); // --help; any argument is a mistake (one line, exit 2)
  try {
    await main();
    process.exit(0);
  } catch (e) {
    const plain = e instanceof GpuOutOfMemoryError || (e instanceof Error && e.constructor === Error);
    console.error(`\n${plain ? (e as Error).message : ((e as Error)?.stack ?? e)}`);
    process.exit(1);
  }
}
