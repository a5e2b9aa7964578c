/**
 * @file `npm run experiment [-- --max-steps N]`: run train.ts exactly as the research driver does
 * (guard, sandbox, the harness's metric) and print the summary with the harness's val_bpb. This,
 * not run.log, is the figure to trust: run.log is written by train.ts.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { runExperiment } from './experiment.ts';
import { logTail } from './runner.ts';
import { isMain } from '../util/main.ts';

export const USAGE = `Usage: npm run experiment [-- options]

Runs train.ts the way the research driver does: the guard, then a sandbox (no network, no secrets,
reads only the project and the data, writes only a scratch folder), then the harness's own
evaluation. Prints the harness's val_bpb and figures; train.ts's output goes to run.log.

  --max-steps <n>    stop after n optimizer steps (quick checks; 0 evaluates the initialised model)
  --file <path>      the train.ts to run (default: train.ts in the repository)
  --log <path>       where train.ts's output goes (default: run.log)
  --repo <dir>       repository root (default: the current directory)
  -h, --help         this text`;

export interface ExperimentArgs {
  maxSteps?: number;
  file: string;
  log: string;
  repo: string;
}

export class UsageError extends Error {}

/** argv (without node and script) → options; null for --help. */
export function parseExperimentArgs(argv: string[]): ExperimentArgs | null {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        'max-steps': { type: 'string' },
        file: { type: 'string' },
        log: { type: 'string' },
        repo: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split('\n')[0]} (see --help)`);
  }
  const v = parsed.values;
  if (v.help) return null;
  let maxSteps: number | undefined;
  if (v['max-steps'] !== undefined) {
    maxSteps = Number(v['max-steps']);
    if (!Number.isInteger(maxSteps) || maxSteps < 0) throw new UsageError(`--max-steps expects an integer ≥ 0, got '${v['max-steps']}'`);
  }
  const repo = resolve(v.repo ?? '.');
  return { maxSteps, repo, file: resolve(v.file ?? join(repo, 'train.ts')), log: resolve(v.log ?? join(repo, 'run.log')) };
}

export async function main(argv: string[]): Promise<number> {
  let args: ExperimentArgs | null;
  try {
    args = parseExperimentArgs(argv);
  } catch (e) {
    console.error(`npm run experiment: ${(e as Error).message}`);
    return 2;
  }
  if (!args) {
    console.log(USAGE);
    return 0;
  }
  let source: string;
  try {
    source = readFileSync(args.file, 'utf8');
  } catch {
    console.error(`npm run experiment: cannot read ${args.file}`);
    return 2;
  }
  console.log(`experiment: guard, sandbox and harness for ${args.file}${args.maxSteps !== undefined ? ` (at most ${args.maxSteps} step${args.maxSteps === 1 ? "" : "s"})` : ''}; train.ts's output: ${args.log}`);
  const r = await runExperiment({ repoDir: args.repo, trainSource: source, logPath: args.log, maxSteps: args.maxSteps });
  if (r.rejected) {
    console.log(`rejected (nothing was run):\n${r.rejected}`);
    return 1;
  }
  if (!r.ok) {
    const tail = logTail(args.log, 15);
    console.log(`crash: ${r.error}${tail ? `\n--- last lines of ${args.log}\n${tail}` : ''}`);
    return 1;
  }
  console.log('---');
  console.log(`val_bpb:          ${r.valBpb!.toFixed(6)}`);
  console.log(`training_seconds: ${r.trainingSeconds?.toFixed(1) ?? 'n/a'}`);
  console.log(`total_seconds:    ${r.durationS.toFixed(1)}`);
  console.log(`peak_vram_mb:     ${r.peakVramMb!.toFixed(1)}`);
  console.log(`num_steps:        ${r.numSteps ?? 'n/a'} (as train.ts reports it)`);
  console.log('(val_bpb, training_seconds and peak_vram_mb are the harness\'s, signed on its own channel)');
  return 0;
}

if (isMain(import.meta.url)) process.exit(await main(process.argv.slice(2)));
