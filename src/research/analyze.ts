/**
 * @file `npm run analyze [-- --repo <dir>] [--json]`: summarize a research run from results.tsv
 * and research.jsonl (counts, baseline and best val_bpb, kept experiments, tokens and cost) and
 * redraw progress.svg / progress.png. `--json` prints the summary as one JSON object instead.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CliError, runCommand } from '../util/cli.ts';
import { isMain } from '../util/main.ts';
import { chartData, formatSummary, RESULTS_FILE, summarize, type ResearchSummary } from './summary.ts';
import { writeCharts } from './charts.ts';

export interface AnalyzeOutput {
  summary: ResearchSummary;
  charts: { svg: string; png: string | null; warning: string | null };
}

/** Summarize `repoDir`'s research and write its charts. */
export async function analyze(repoDir: string): Promise<AnalyzeOutput> {
  const dir = resolve(repoDir);
  if (!existsSync(join(dir, RESULTS_FILE))) throw new CliError(`no ${RESULTS_FILE} in ${dir}: run npm run research first (or pass --repo <dir>)`);
  const summary = summarize(dir);
  const charts = await writeCharts(dir, chartData(dir, summary));
  return { summary, charts };
}

const ANALYZE_CLI = {
  run: 'npm run analyze',
  name: 'analyze',
  usage: `Usage: npm run analyze [-- --repo <dir>] [--json]     (or: npx tsx src/research/analyze.ts …)

Summarizes a research run from results.tsv and research.jsonl (experiments, baseline and best
val_bpb, kept changes, tokens and cost) and writes progress.svg and progress.png.

  --repo <dir>   the project the research ran in (default: the current directory)
  --json         print the summary as one JSON object
  -h, --help     this text`,
  options: { repo: { type: 'string' }, json: { type: 'boolean' } },
} as const;

export async function main(argv: string[]): Promise<number> {
  return runCommand(ANALYZE_CLI, argv, async ({ values }) => {
    const { summary, charts } = await analyze(values.repo ?? process.cwd());
    if (values.json) {
      console.log(JSON.stringify({ ...summary, charts: { svg: charts.svg, png: charts.png } }, null, 2));
    } else {
      for (const line of formatSummary(summary)) console.log(line);
      console.log(`chart: ${charts.svg}${charts.png ? `, ${charts.png}` : ''}`);
    }
    if (charts.warning) console.error(`note: ${charts.warning}`);
    return 0;
  });
}

if (isMain(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}
