/**
 * @file The progress chart, like the reference's progress.png: val_bpb per experiment (x = row
 * of results.tsv, baseline = 0), kept experiments as green dots joined by the running best as a
 * step line and labelled with their descriptions, discarded ones faint grey, crashes as faint
 * red crosses along the bottom; a title with the keep/discard/crash counts and the total cost.
 * The SVG is written by hand (no dependencies); the PNG is that SVG rendered by resvg
 * (@resvg/resvg-js, loaded lazily: without it, only the SVG is written).
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ResultRow, Status } from './results.ts';

export interface ChartPoint {
  experiment: number;
  /** null for crashes. */
  valBpb: number | null;
  status: Status;
  description: string;
}

export interface ChartData {
  /** e.g. the run tag. */
  tag: string;
  points: ChartPoint[];
  /** Total USD, or null when unknown. */
  totalUsd: number | null;
  noiseFloor: number | null;
}

export const CHART_WIDTH = 1200;
export const CHART_HEIGHT = 640;
const MARGIN = { left: 84, right: 36, top: 86, bottom: 64 };
const FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";
const KEEP = '#2e7d32';
const DISCARD = '#9e9e9e';
const CRASH = '#c62828';

/** Chart points from results.tsv rows (row i is experiment i; the baseline is row 0). */
export function pointsFromResults(rows: readonly ResultRow[]): ChartPoint[] {
  return rows.map((r, i) => ({ experiment: i, valBpb: r.status === 'crash' ? null : r.valBpb, status: r.status, description: r.description }));
}

export interface ChartCounts {
  keep: number;
  discard: number;
  crash: number;
}

export function countStatuses(points: readonly ChartPoint[]): ChartCounts {
  const c = { keep: 0, discard: 0, crash: 0 };
  for (const p of points) c[p.status]++;
  return c;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function fmtUsd(usd: number | null): string {
  return usd === null ? 'cost unknown' : `$${usd.toFixed(2)}`;
}

/** The chart as an SVG document. */
export function renderSvg(data: ChartData): string {
  const W = CHART_WIDTH, H = CHART_HEIGHT;
  const x0 = MARGIN.left, x1 = W - MARGIN.right, y0 = MARGIN.top, y1 = H - MARGIN.bottom;
  const pts = data.points;
  const counts = countStatuses(pts);
  const kept = pts.filter((p) => p.status === 'keep' && p.valBpb !== null);
  const valued = pts.filter((p) => p.valBpb !== null).map((p) => p.valBpb as number);
  const baseline = pts[0]?.valBpb ?? null;
  const best = kept.length ? Math.min(...kept.map((p) => p.valBpb as number)) : null;

  // Focus on the kept range (as the reference does); worse points are pinned to the top edge.
  const lo = valued.length ? Math.min(...valued) : 0.9;
  const hiKept = kept.length ? Math.max(...kept.map((p) => p.valBpb as number)) : valued.length ? Math.max(...valued) : 1.1;
  let span = hiKept - lo;
  if (!(span > 0)) span = Math.max(Math.abs(lo) * 0.01, 1e-3);
  const yMin = lo - 0.12 * span;
  const yMax = hiKept + 0.4 * span;
  const nX = Math.max(pts.length - 1, 1);
  const sx = (i: number) => x0 + ((x1 - x0) * i) / nX;
  const sy = (v: number) => y1 - ((y1 - y0) * (Math.min(v, yMax) - yMin)) / (yMax - yMin);

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);

  // Title and subtitle
  const title = `autoresearch-ts · ${data.tag} — ${pts.length ? pts.length - 1 : 0} experiments: ${counts.keep} keep · ${counts.discard} discard · ${counts.crash} crash · ${fmtUsd(data.totalUsd)}`;
  out.push(`<text x="${x0}" y="34" font-size="20" font-weight="bold" fill="#212121">${esc(title)}</text>`);
  const sub: string[] = [];
  if (best !== null) sub.push(`best val_bpb ${best.toFixed(6)}`);
  if (best !== null && baseline !== null) sub.push(`Δ ${(best - baseline).toFixed(6)} vs baseline ${baseline.toFixed(6)}`);
  if (data.noiseFloor !== null) sub.push(`noise floor ${data.noiseFloor.toFixed(6)}`);
  out.push(`<text x="${x0}" y="58" font-size="14" fill="#555555">${esc(sub.join(' · ') || 'no results yet')}</text>`);

  // Grid, ticks and axes
  out.push(`<g font-size="12" fill="#555555">`);
  for (const t of niceTicks(yMin, yMax, 8)) {
    const y = sy(t).toFixed(1);
    out.push(`<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="#eeeeee"/>`);
    out.push(`<text x="${x0 - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${t.toFixed(4)}</text>`);
  }
  for (const t of niceTicks(0, nX, 10).filter((t) => Number.isInteger(t))) {
    const x = sx(t).toFixed(1);
    out.push(`<line x1="${x}" y1="${y1}" x2="${x}" y2="${y1 + 5}" stroke="#999999"/>`);
    out.push(`<text x="${x}" y="${y1 + 20}" text-anchor="middle">${t}</text>`);
  }
  out.push('</g>');
  out.push(`<rect x="${x0}" y="${y0}" width="${x1 - x0}" height="${y1 - y0}" fill="none" stroke="#bdbdbd"/>`);
  out.push(`<text x="${(x0 + x1) / 2}" y="${H - 18}" font-size="14" text-anchor="middle" fill="#333333">Experiment #</text>`);
  out.push(`<text transform="translate(22 ${(y0 + y1) / 2}) rotate(-90)" font-size="14" text-anchor="middle" fill="#333333">val_bpb (lower is better)</text>`);

  // Discarded (faint) and crashed (faint crosses on the bottom edge)
  out.push(`<g class="discard" fill="${DISCARD}" fill-opacity="0.45">`);
  for (const p of pts) {
    if (p.status !== 'discard' || p.valBpb === null) continue;
    const clipped = p.valBpb > yMax;
    const x = sx(p.experiment), y = sy(p.valBpb);
    out.push(clipped
      ? `<path d="M${(x - 4).toFixed(1)} ${(y + 6).toFixed(1)} L${x.toFixed(1)} ${(y + 1).toFixed(1)} L${(x + 4).toFixed(1)} ${(y + 6).toFixed(1)} Z"><title>${esc(`#${p.experiment} ${p.valBpb.toFixed(6)} ${p.description}`)}</title></path>`
      : `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5"><title>${esc(`#${p.experiment} ${p.valBpb.toFixed(6)} ${p.description}`)}</title></circle>`);
  }
  out.push('</g>');
  out.push(`<g class="crash" stroke="${CRASH}" stroke-opacity="0.5" stroke-width="1.5">`);
  for (const p of pts) {
    if (p.status !== 'crash') continue;
    const x = sx(p.experiment), y = y1 - 8;
    out.push(`<path d="M${(x - 4).toFixed(1)} ${(y - 4).toFixed(1)} L${(x + 4).toFixed(1)} ${(y + 4).toFixed(1)} M${(x - 4).toFixed(1)} ${(y + 4).toFixed(1)} L${(x + 4).toFixed(1)} ${(y - 4).toFixed(1)}"><title>${esc(`#${p.experiment} crash ${p.description}`)}</title></path>`);
  }
  out.push('</g>');

  // Running best as a step line through the kept points, carried to the last experiment
  if (kept.length) {
    let d = '';
    let runBest = Infinity;
    for (const p of kept) {
      const v = p.valBpb as number;
      if (!d) {
        d = `M${sx(p.experiment).toFixed(1)} ${sy(v).toFixed(1)}`;
        runBest = v;
        continue;
      }
      d += ` H${sx(p.experiment).toFixed(1)}`;
      if (v < runBest) {
        d += ` V${sy(v).toFixed(1)}`;
        runBest = v;
      }
    }
    d += ` H${sx(pts.length - 1).toFixed(1)}`;
    out.push(`<path class="best" d="${d}" fill="none" stroke="${KEEP}" stroke-width="2" stroke-opacity="0.8"/>`);
  }

  // Kept points with their descriptions
  out.push(`<g class="keep">`);
  for (const p of kept) {
    const x = sx(p.experiment), y = sy(p.valBpb as number);
    out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="5.5" fill="${KEEP}" stroke="#ffffff" stroke-width="1.5"><title>${esc(`#${p.experiment} ${(p.valBpb as number).toFixed(6)} ${p.description}`)}</title></circle>`);
    // labels near the right edge run leftwards so they stay inside the chart
    const right = x > x1 - 220;
    out.push(right
      ? `<text transform="translate(${(x - 7).toFixed(1)} ${(y - 8).toFixed(1)}) rotate(28)" text-anchor="end" font-size="11" fill="#1b5e20">${esc(truncate(p.description, 52))}</text>`
      : `<text transform="translate(${(x + 7).toFixed(1)} ${(y - 8).toFixed(1)}) rotate(-28)" font-size="11" fill="#1b5e20">${esc(truncate(p.description, 52))}</text>`);
  }
  out.push('</g>');

  // Legend
  const lx = x1 - 190, ly = y0 + 16;
  out.push(`<g font-size="12" fill="#333333">`);
  out.push(`<rect x="${lx - 12}" y="${ly - 14}" width="196" height="84" fill="#ffffff" fill-opacity="0.85" stroke="#e0e0e0"/>`);
  out.push(`<circle cx="${lx}" cy="${ly}" r="5.5" fill="${KEEP}"/><text x="${lx + 14}" y="${ly + 4}">kept (${counts.keep})</text>`);
  out.push(`<line x1="${lx - 7}" y1="${ly + 18}" x2="${lx + 7}" y2="${ly + 18}" stroke="${KEEP}" stroke-width="2"/><text x="${lx + 14}" y="${ly + 22}">running best</text>`);
  out.push(`<circle cx="${lx}" cy="${ly + 36}" r="3.5" fill="${DISCARD}" fill-opacity="0.45"/><text x="${lx + 14}" y="${ly + 40}">discarded (${counts.discard})</text>`);
  out.push(`<path d="M${lx - 4} ${ly + 50} L${lx + 4} ${ly + 58} M${lx - 4} ${ly + 58} L${lx + 4} ${ly + 50}" stroke="${CRASH}" stroke-opacity="0.5" stroke-width="1.5"/><text x="${lx + 14}" y="${ly + 58}">crashed (${counts.crash})</text>`);
  out.push('</g>');
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** Render an SVG to PNG with resvg, or null (with the reason) when resvg is unavailable. */
export async function renderPng(svg: string): Promise<{ png: Buffer | null; error: string | null }> {
  let Resvg: typeof import('@resvg/resvg-js').Resvg;
  try {
    ({ Resvg } = await import('@resvg/resvg-js'));
  } catch (e) {
    return { png: null, error: `PNG skipped: @resvg/resvg-js is not available (${(e as Error).message.split('\n')[0]})` };
  }
  try {
    const r = new Resvg(svg, { background: '#ffffff', font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } });
    return { png: Buffer.from(r.render().asPng()), error: null };
  } catch (e) {
    return { png: null, error: `PNG skipped: resvg failed (${(e as Error).message})` };
  }
}

function writeAtomic(path: string, data: string | Buffer): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/** Write progress.svg and progress.png into `dir`; returns their paths (png null if skipped). */
export async function writeCharts(dir: string, data: ChartData): Promise<{ svg: string; png: string | null; warning: string | null }> {
  const svgText = renderSvg(data);
  const svg = join(dir, 'progress.svg');
  writeAtomic(svg, svgText);
  const { png, error } = await renderPng(svgText);
  if (!png) return { svg, png: null, warning: error };
  const pngPath = join(dir, 'progress.png');
  writeAtomic(pngPath, png);
  return { svg, png: pngPath, warning: null };
}
