import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main as analyzeMain } from '../../src/research/analyze.ts';
import { CHART_HEIGHT, CHART_WIDTH, niceTicks, pointsFromResults, renderSvg, writeCharts, type ChartData } from '../../src/research/charts.ts';
import { appendRecord, appendResult, type ResultRow } from '../../src/research/results.ts';
import { summarize } from '../../src/research/summary.ts';

const dir = mkdtempSync(join(tmpdir(), 'autoresearch-charts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ROWS: ResultRow[] = [
  { commit: 'aaaaaaa', valBpb: 1.013, memoryGb: 1.8, status: 'keep', description: 'baseline' },
  { commit: 'bbbbbbb', valBpb: 1.007, memoryGb: 1.8, status: 'keep', description: 'raise MATRIX_LR to 0.05' },
  { commit: 'ccccccc', valBpb: 1.015, memoryGb: 1.8, status: 'discard', description: 'halve the depth' },
  { commit: 'ddddddd', valBpb: 0, memoryGb: 0, status: 'crash', description: 'quadruple the batch (GpuOutOfMemoryError)' },
  { commit: 'eeeeeee', valBpb: 1.9, memoryGb: 1.8, status: 'discard', description: 'far worse <&> "quoted"' },
  { commit: 'fffffff', valBpb: 1.005, memoryGb: 1.8, status: 'keep', description: 'MATRIX_LR 0.06' },
];

function count(svg: string, re: RegExp): number {
  return (svg.match(re) ?? []).length;
}

describe('renderSvg', () => {
  const data: ChartData = { tag: 'nov22', points: pointsFromResults(ROWS), totalUsd: 1.234, noiseFloor: 0.0007 };
  const svg = renderSvg(data);

  it('titles the chart with counts and cost, and the best against the baseline', () => {
    expect(svg).toContain('autoresearch-ts · nov22 — 5 experiments: 3 keep · 2 discard · 1 crash · $1.23');
    expect(svg).toContain('best val_bpb 1.005000 · Δ -0.008000 vs baseline 1.013000 · noise floor 0.000700');
    expect(renderSvg({ ...data, totalUsd: null })).toContain('cost unknown');
  });

  it('marks kept points, labels them, and draws the running best as a step line', () => {
    const keep = svg.slice(svg.indexOf('<g class="keep">'), svg.indexOf('</g>', svg.indexOf('<g class="keep">')));
    expect(count(keep, /<circle /g)).toBe(3);
    for (const d of ['baseline', 'raise MATRIX_LR to 0.05', 'MATRIX_LR 0.06']) expect(keep).toContain(`>${d}</text>`);
    const path = /<path class="best" d="([^"]+)"/.exec(svg)![1];
    expect(path.match(/[MHV]/g)).toEqual(['M', 'H', 'V', 'H', 'V', 'H']); // two improvements, carried to the end
  });

  it('draws discarded points faint, crashes as crosses, and pins outliers to the top', () => {
    const discard = svg.slice(svg.indexOf('<g class="discard"'), svg.indexOf('</g>', svg.indexOf('<g class="discard"')));
    expect(discard).toContain('fill-opacity="0.45"');
    expect(count(discard, /<circle /g)).toBe(1);
    expect(count(discard, /<path /g)).toBe(1); // the 1.9 outlier, as a triangle on the top edge
    expect(discard).toContain('far worse &lt;&amp;&gt; &quot;quoted&quot;'); // escaped
    const crash = svg.slice(svg.indexOf('<g class="crash"'), svg.indexOf('</g>', svg.indexOf('<g class="crash"')));
    expect(count(crash, /<path /g)).toBe(1);
  });

  it('handles an empty run and a single baseline', () => {
    expect(renderSvg({ tag: 't', points: [], totalUsd: 0, noiseFloor: null })).toContain('0 experiments');
    const one = renderSvg({ tag: 't', points: pointsFromResults(ROWS.slice(0, 1)), totalUsd: 0, noiseFloor: 0 });
    expect(one).toContain('0 experiments: 1 keep');
    expect(one).not.toContain('NaN');
  });

  it('picks round ticks', () => {
    expect(niceTicks(0, 10, 5)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0.9941, 1.0162, 8)).toEqual([0.995, 1, 1.005, 1.01, 1.015]); // the finest round step giving at most 8
    expect(niceTicks(0.9941, 1.0162, 10)).toEqual([0.995, 0.9975, 1, 1.0025, 1.005, 1.0075, 1.01, 1.0125, 1.015]);
    expect(niceTicks(1, 1)).toEqual([1]);
  });
});

describe('writeCharts and npm run analyze', () => {
  it('writes an SVG and a PNG of the chart size', async () => {
    const r = await writeCharts(dir, { tag: 't', points: pointsFromResults(ROWS), totalUsd: 1, noiseFloor: 0 });
    expect(r.warning).toBeNull();
    const png = readFileSync(r.png!);
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    expect(png.readUInt32BE(16)).toBe(CHART_WIDTH); // IHDR width, height
    expect(png.readUInt32BE(20)).toBe(CHART_HEIGHT);
    expect(readFileSync(r.svg, 'utf8')).toMatch(/^<svg /);
  });

  it('summarizes results.tsv and research.jsonl, as text and as --json', async () => {
    for (const row of ROWS) appendResult(join(dir, 'results.tsv'), row);
    appendRecord(join(dir, 'research.jsonl'), { type: 'session', tag: 'nov22', branch: 'autoresearch/nov22', started_at: '', resumed: false, base_commit: 'a', model: 'claude-sonnet-5-5', train_command: 'x', time_budget_s: 300, protected_hashes: {} });
    appendRecord(join(dir, 'research.jsonl'), { type: 'baseline', experiment: 0, commit: 'a', runs: [], val_bpb: 1.013, peak_vram_mb: 1843, noise_floor: 0.0007, status: 'keep', at: '' });
    appendRecord(join(dir, 'research.jsonl'), {
      type: 'experiment', experiment: 1, status: 'keep', parent: 'a', commit: 'b', attempts: ['b'], description: 'raise MATRIX_LR to 0.05', val_bpb: 1.007, peak_vram_mb: 1843,
      runs: [], best_before: 1.013, duration_s: 310, error_excerpt: null, crash_reason: null, rejected: [], repairs: 0,
      tokens: { input: 1000, output: 200, cacheCreation: 0, cacheRead: 50_000 }, usd: 0.25, ref: null, at: '',
    });
    const s = summarize(dir);
    expect(s).toMatchObject({
      tag: 'nov22', model: 'claude-sonnet-5-5', experiments: 5, counts: { keep: 3, discard: 2, crash: 1 },
      baseline: { val_bpb: 1.013, commit: 'aaaaaaa' }, best: { val_bpb: 1.005, commit: 'fffffff', experiment: 5 },
      noise_floor: 0.0007, total_usd: 0.25, experiment_seconds: 310,
    });
    expect(s.improvement).toBeCloseTo(-0.008, 12);
    expect(s.kept.map((k) => k.experiment)).toEqual([0, 1, 5]);

    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      expect(await analyzeMain(['--repo', dir, '--json'])).toBe(0);
      const json = JSON.parse(log.mock.calls.map((c) => c[0]).join('\n'));
      expect(json.counts).toEqual({ keep: 3, discard: 2, crash: 1 });
      expect(json.best.description).toBe('MATRIX_LR 0.06');
      expect(json.charts.png).toBe(join(dir, 'progress.png'));
      log.mockClear();
      expect(await analyzeMain(['--repo', dir])).toBe(0);
      const text = log.mock.calls.map((c) => c[0]).join('\n');
      expect(text).toContain('experiments: 5   keep 3 · discard 2 · crash 1');
      expect(text).toContain('best val_bpb:     1.005000 (fffffff, #5: MATRIX_LR 0.06)');
      expect(text).toContain('cost: $0.25');
    } finally {
      log.mockRestore();
    }
  });

  it('says what to do when there are no results', async () => {
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const empty = mkdtempSync(join(tmpdir(), 'autoresearch-empty-'));
      expect(await analyzeMain(['--repo', empty])).toBe(1);
      expect(err.mock.calls[0][0]).toMatch(/no results\.tsv .*npm run research/);
      rmSync(empty, { recursive: true });
      writeFileSync(join(dir, 'x'), '');
      expect(await analyzeMain(['--bogus'])).toBe(2);
    } finally {
      err.mockRestore();
    }
  });
});
