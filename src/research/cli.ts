/**
 * @file `npm run research -- --tag <tag> [options]`: parse the command line, run the research
 * driver, and turn Ctrl-C into a clean stop (first press: finish the current experiment; second:
 * abandon it and reset; third: exit at once). Errors a person can fix print one message, no stack.
 */
import { DEFAULT_MODEL, FatalApiError } from './agent.ts';
import { DEFAULTS, MIN_NOISE_FLOOR, ResearchDriver, ResearchError, type ResearchOptions } from './driver.ts';
import { DEFAULT_QUEUE_NAME, parseQueueUrl } from './executors.ts';
import { defaultCacheDir } from './preflight.ts';
import { parseUsdPerMtok } from './pricing.ts';
import { parseCommandLine, reportError, UsageError } from '../util/cli.ts';
import { isMain } from '../util/main.ts';

export const USAGE = `Usage: npm run research -- --tag <tag> [options]

Runs the autonomous research loop on branch autoresearch/<tag>: the baseline (3 runs: the bar is
their mean, the noise floor their spread), then experiments proposed by Claude from the current
best, each committed, trained for TIME_BUDGET and kept only if its mean val_bpb beats the bar
(small wins are re-run; wins on a superseded base are replayed on the new best). With workers,
one experiment per worker is in flight. Needs ANTHROPIC_API_KEY and prepared data.

  --tag <tag>               run name, e.g. nov22 (required)
  --resume                  continue autoresearch/<tag> after any interruption
  --model <id>              Claude model (default ${DEFAULT_MODEL})
  --max-experiments <n>     stop after n experiments in total on this tag
  --hours <h>               start no new experiment after h hours
  --max-usd <x>             stop once the API cost of this tag reaches x USD
  --usd-per-mtok <in,out>   price a model the built-in table lacks (USD per million tokens)
  --fix-attempts <n>        repairs offered after a crash (default ${DEFAULTS.fixAttempts})
  --proposal-retries <n>    rejected proposals answered per experiment (default ${DEFAULTS.proposalRetries})
  --train-command <cmd>     training command (default "${DEFAULTS.trainCommand}"; it must pass
                            descriptor 3 down to train.ts, which npx and the tsx CLI do not)
  --time-budget <s>         TIME_BUDGET in seconds (default: read from prepare.ts)
  --startup-allowance <s>   added to 2 × TIME_BUDGET for the hard kill (default ${DEFAULTS.startupAllowanceS})
  --noise-floor <bpb>       use this noise floor instead of measuring it (baseline then runs once
                            unless --baseline-runs says otherwise); never below ${MIN_NOISE_FLOOR}
  --baseline-runs <n>       baseline runs (default ${DEFAULTS.baselineRuns}; at least 3 to measure the noise)
  --noise-widths <k>        re-run a win smaller than k noise floors (default ${DEFAULTS.noiseWidths})
  --max-runs <n>            most runs of one commit, re-runs included (default ${DEFAULTS.maxRuns})
  --queue <url>             dispatch runs to the workers serving this Redis (redis://HOST:PORT);
                            start them with npm run worker -- --queue <url> [--gpu N]
  --workers <n>             start n local workers (on --queue, or on a private Redis: needs
                            redis-server installed)
  --parallel <n>            experiments in flight (default: one per worker)
  --queue-name <name>       BullMQ queue name (default ${DEFAULT_QUEUE_NAME})
  --dashboard <port>        serve the live dashboard at http://127.0.0.1:<port>/
  --max-tokens <n>          max_tokens per request (default ${DEFAULTS.maxTokens})
  --effort <level>          low | medium | high | xhigh | max (default: the model's)
  --recent-diffs <n>        diffs of recent experiments shown to the model (default ${DEFAULTS.recentDiffs})
  --repo <dir>              repository root (default: the current directory)
  --no-data-check           skip the check for prepared data and tokenizer
  --no-charts               do not refresh progress.svg / progress.png
  -h, --help                this text

Ctrl-C once: finish the experiments in flight, then stop. Twice: abandon them and stop.
Results: results.tsv (as the reference), research.jsonl (everything else), progress.svg/png.`;

function num(name: string, v: string | undefined, opts: { int?: boolean; min?: number } = {}): number | null {
  if (v === undefined) return null;
  const x = Number(v);
  if (!Number.isFinite(x) || (opts.int && !Number.isInteger(x)) || (opts.min !== undefined && x < opts.min)) {
    throw new UsageError(`--${name} expects ${opts.int ? 'an integer' : 'a number'}${opts.min !== undefined ? ` ≥ ${opts.min}` : ''}, got '${v}'`);
  }
  return x;
}

const EFFORTS = ['low', 'medium', 'high', 'xhigh', 'max'] as const;

const RESEARCH_CLI = {
  run: 'npm run research',
  name: 'research',
  usage: USAGE,
  options: {
    tag: { type: 'string' }, resume: { type: 'boolean' }, model: { type: 'string' },
    'max-experiments': { type: 'string' }, hours: { type: 'string' }, 'max-usd': { type: 'string' }, 'usd-per-mtok': { type: 'string' },
    'fix-attempts': { type: 'string' }, 'proposal-retries': { type: 'string' }, 'train-command': { type: 'string' },
    'time-budget': { type: 'string' }, 'startup-allowance': { type: 'string' }, 'noise-floor': { type: 'string' },
    'max-tokens': { type: 'string' }, effort: { type: 'string' }, 'recent-diffs': { type: 'string' }, repo: { type: 'string' },
    'no-data-check': { type: 'boolean' }, 'no-charts': { type: 'boolean' },
    'baseline-runs': { type: 'string' }, 'noise-widths': { type: 'string' }, 'max-runs': { type: 'string' }, queue: { type: 'string' },
    workers: { type: 'string' }, parallel: { type: 'string' }, 'queue-name': { type: 'string' }, dashboard: { type: 'string' },
    'worker-lock': { type: 'string' },
  },
} as const;

/** Parse argv (without node and script) into driver options; null means --help was asked. */
export function parseResearchArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ResearchOptions | null {
  const parsed = parseCommandLine(RESEARCH_CLI, argv);
  if (!parsed) return null;
  const v = parsed.values;
  if (!v.tag) throw new UsageError('--tag is required (e.g. --tag nov22)');
  const effort = v.effort ?? null;
  if (effort !== null && !(EFFORTS as readonly string[]).includes(effort)) throw new UsageError(`--effort must be one of ${EFFORTS.join(', ')}`);
  if (v.queue) {
    try {
      parseQueueUrl(v.queue);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const noiseFloor = num('noise-floor', v['noise-floor'], { min: 0 });
  const dashboard = num('dashboard', v.dashboard, { int: true, min: 0 });
  if (dashboard !== null && dashboard > 65535) throw new UsageError(`--dashboard expects a port number, got '${v.dashboard}'`);
  return {
    repoDir: v.repo ?? process.cwd(),
    tag: v.tag,
    resume: Boolean(v.resume),
    model: v.model ?? DEFAULT_MODEL,
    maxExperiments: num('max-experiments', v['max-experiments'], { int: true, min: 0 }),
    hours: num('hours', v.hours, { min: 0 }),
    maxUsd: num('max-usd', v['max-usd'], { min: 0 }),
    usdPerMtok: v['usd-per-mtok'] ? parseUsdPerMtok(v['usd-per-mtok']) : null,
    fixAttempts: num('fix-attempts', v['fix-attempts'], { int: true, min: 0 }) ?? DEFAULTS.fixAttempts,
    proposalRetries: num('proposal-retries', v['proposal-retries'], { int: true, min: 0 }) ?? DEFAULTS.proposalRetries,
    maxConsecutiveInvalid: DEFAULTS.maxConsecutiveInvalid,
    trainCommand: v['train-command'] ?? DEFAULTS.trainCommand,
    timeBudgetS: num('time-budget', v['time-budget'], { min: 0 }),
    startupAllowanceS: num('startup-allowance', v['startup-allowance'], { min: 0 }) ?? DEFAULTS.startupAllowanceS,
    noiseFloor,
    baselineRuns: num('baseline-runs', v['baseline-runs'], { int: true, min: 1 }) ?? (noiseFloor === null ? DEFAULTS.baselineRuns : 1),
    noiseWidths: num('noise-widths', v['noise-widths'], { min: 0 }) ?? DEFAULTS.noiseWidths,
    maxRuns: num('max-runs', v['max-runs'], { int: true, min: 1 }) ?? DEFAULTS.maxRuns,
    queue: v.queue ?? null,
    queueName: v['queue-name'] ?? DEFAULT_QUEUE_NAME,
    workers: num('workers', v.workers, { int: true, min: 1 }),
    parallel: num('parallel', v.parallel, { int: true, min: 1 }),
    dashboardPort: dashboard,
    workerLockS: num('worker-lock', v['worker-lock'], { min: 1 }) ?? DEFAULTS.workerLockS,
    maxTokens: num('max-tokens', v['max-tokens'], { int: true, min: 1 }) ?? DEFAULTS.maxTokens,
    effort: effort as ResearchOptions['effort'],
    recentDiffs: num('recent-diffs', v['recent-diffs'], { int: true, min: 0 }) ?? DEFAULTS.recentDiffs,
    cacheDir: v['no-data-check'] ? null : defaultCacheDir(env),
    apiMaxRetries: DEFAULTS.apiMaxRetries,
    backoffInitialMs: DEFAULTS.backoffInitialMs,
    backoffMaxMs: DEFAULTS.backoffMaxMs,
    charts: !v['no-charts'],
  };
}

/** The command: returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let driver: ResearchDriver;
  try {
    const opts = parseResearchArgs(argv);
    if (!opts) {
      console.log(USAGE);
      return 0;
    }
    driver = new ResearchDriver(opts);
  } catch (e) {
    return reportError(RESEARCH_CLI, e instanceof UsageError ? e : new UsageError((e as Error).message));
  }
  let presses = 0;
  const onSigint = () => {
    presses++;
    if (presses === 1) {
      driver.requestStop();
      driver.out.line('Ctrl-C: finishing the current experiment, then stopping (Ctrl-C again to abandon it now)');
    } else if (presses === 2) {
      driver.abandon();
      driver.out.line('Ctrl-C: abandoning the current experiment (reset to where it started)');
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', () => driver.abandon());
  try {
    await driver.run();
    return 0;
  } catch (e) {
    if (e instanceof ResearchError || e instanceof FatalApiError) {
      console.error(`research: ${e.message}`);
      return 1;
    }
    console.error(e);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

if (isMain(import.meta.url)) {
  process.exit(await main(process.argv.slice(2))); // a Redis client's timers must not hold the process
}
