/**
 * @file What a research run has produced so far, from results.tsv and research.jsonl: counts of
 * keep/discard/crash, baseline and best val_bpb, the kept experiments, tokens and cost, and the
 * data for the progress chart. Shared by the driver (which refreshes the chart after every
 * experiment) and `npm run analyze` (which prints this, or `--json`).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pointsFromResults, writeCharts, type ChartData } from './charts.ts';
import { readRecords, readResults, resumeState, type ResultRow } from './results.ts';
import type { TokenUsage } from './pricing.ts';

export const RESULTS_FILE = 'results.tsv';
export const RECORDS_FILE = 'research.jsonl';

export interface ResearchSummary {
  tag: string | null;
  model: string | null;
  /** Experiments after the baseline (results.tsv rows − 1). */
  experiments: number;
  counts: { keep: number; discard: number; crash: number };
  baseline: { val_bpb: number; commit: string } | null;
  best: { val_bpb: number; commit: string; experiment: number; description: string } | null;
  /** best − baseline (negative is better). */
  improvement: number | null;
  noise_floor: number | null;
  kept: { experiment: number; commit: string; val_bpb: number; description: string }[];
  tokens: TokenUsage;
  /** Total USD, null when some usage had no known price. */
  total_usd: number | null;
  /** Seconds spent in experiments (API + training), from research.jsonl. */
  experiment_seconds: number;
}

export function summarize(repoDir: string): ResearchSummary {
  const rows = readResults(join(repoDir, RESULTS_FILE));
  const records = readRecords(join(repoDir, RECORDS_FILE));
  const state = resumeState(records);
  const counts = { keep: 0, discard: 0, crash: 0 };
  for (const r of rows) counts[r.status]++;
  const kept = rows.map((r, i) => ({ r, i })).filter(({ r }) => r.status === 'keep')
    .map(({ r, i }) => ({ experiment: i, commit: r.commit, val_bpb: r.valBpb, description: r.description }));
  let best: ResearchSummary['best'] = null;
  for (const k of kept) if (!best || k.val_bpb < best.val_bpb) best = { val_bpb: k.val_bpb, commit: k.commit, experiment: k.experiment, description: k.description };
  const baselineRow: ResultRow | undefined = rows[0];
  const baseline = baselineRow && baselineRow.status === 'keep' ? { val_bpb: baselineRow.valBpb, commit: baselineRow.commit } : null;
  const seconds = records.reduce((s, r) => s + (r.type === 'experiment' ? r.duration_s : 0), 0);
  return {
    tag: state.session?.tag ?? null,
    model: state.session?.model ?? null,
    experiments: Math.max(0, rows.length - 1),
    counts,
    baseline,
    best,
    improvement: best && baseline ? best.val_bpb - baseline.val_bpb : null,
    noise_floor: state.noiseFloor,
    kept,
    tokens: state.tokens,
    total_usd: state.usdKnown ? state.usd : null,
    experiment_seconds: seconds,
  };
}

export function chartData(repoDir: string, summary: ResearchSummary = summarize(repoDir)): ChartData {
  const rows = readResults(join(repoDir, RESULTS_FILE));
  return { tag: summary.tag ?? 'research', points: pointsFromResults(rows), totalUsd: summary.total_usd, noiseFloor: summary.noise_floor };
}

/** Rewrite progress.svg / progress.png in `repoDir` from its results. */
export async function refreshCharts(repoDir: string): Promise<{ svg: string; png: string | null; warning: string | null } | null> {
  if (!existsSync(join(repoDir, RESULTS_FILE))) return null;
  return writeCharts(repoDir, chartData(repoDir));
}

/** Human-readable summary lines. */
export function formatSummary(s: ResearchSummary): string[] {
  const lines: string[] = [];
  lines.push(`tag: ${s.tag ?? '(unknown)'}${s.model ? `   model: ${s.model}` : ''}`);
  lines.push(`experiments: ${s.experiments}   keep ${s.counts.keep} · discard ${s.counts.discard} · crash ${s.counts.crash}`);
  if (s.baseline) lines.push(`baseline val_bpb: ${s.baseline.val_bpb.toFixed(6)} (${s.baseline.commit})`);
  if (s.best) lines.push(`best val_bpb:     ${s.best.val_bpb.toFixed(6)} (${s.best.commit}, #${s.best.experiment}: ${s.best.description})`);
  if (s.improvement !== null) lines.push(`improvement:      ${s.improvement.toFixed(6)}`);
  if (s.noise_floor !== null) lines.push(`noise floor:      ${s.noise_floor.toFixed(6)}`);
  const t = s.tokens;
  lines.push(`tokens: in ${t.input} · out ${t.output} · cache write ${t.cacheCreation} · cache read ${t.cacheRead}   cost: ${s.total_usd === null ? 'unknown' : `$${s.total_usd.toFixed(2)}`}`);
  if (s.kept.length > 1) {
    lines.push('kept:');
    for (const k of s.kept) lines.push(`  #${String(k.experiment).padStart(3)} ${k.commit} ${k.val_bpb.toFixed(6)}  ${k.description}`);
  }
  return lines;
}
