/**
 * @file `npm run check [-- --file path]`: run the research guard on train.ts alone and say what it
 * rejects and why (one line per problem: `train.ts:LINE: what is wrong`). Exit 0 when it passes.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { TrainGuard } from './guard.ts';
import { isMain } from '../util/main.ts';

export const USAGE = `Usage: npm run check [-- options]

Runs the research guard on train.ts (the rules every experiment must pass before it runs: allowed
imports only; no eval, Function, dynamic import, require, fs, process.env, network, workers or
reflective routes to them; no type-check suppression; and a clean type check) and lists what it
rejects and why.

  --file <path>   the train.ts to check (default: train.ts in the repository)
  --repo <dir>    repository root (default: the current directory)
  -h, --help      this text`;

export function main(argv: string[]): number {
  let values;
  try {
    values = parseArgs({ args: argv, options: { file: { type: 'string' }, repo: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values;
  } catch (e) {
    console.error(`npm run check: ${(e as Error).message.split('\n')[0]} (see --help)`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const repo = resolve(values.repo ?? '.');
  const file = resolve(values.file ?? join(repo, 'train.ts'));
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    console.error(`npm run check: cannot read ${file}`);
    return 2;
  }
  const report = new TrainGuard({ repoDir: repo }).check(text);
  if (report.ok) {
    console.log(`check: ${file} passes the guard`);
    return 0;
  }
  console.log(`check: the guard rejects ${file} (${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}):`);
  for (const p of report.problems) console.log(`  ${p}`);
  return 1;
}

if (isMain(import.meta.url)) process.exit(main(process.argv.slice(2)));
