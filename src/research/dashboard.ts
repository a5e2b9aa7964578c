/**
 * @file The live dashboard: `npm run research -- --dashboard PORT` serves it while the driver
 * runs, `npm run dashboard [-- --port N] [--repo DIR]` for a finished (or running) run. A local
 * page on plain node:http (127.0.0.1 only): the progress chart (charts.ts's SVG), the results
 * table with each experiment's diff, what each worker is running, tokens and USD so far. The page
 * polls /api/state every second; everything it shows comes from research.jsonl (folded by
 * results.ts's applyRecord, as the driver does) plus, under the driver, who runs what right now.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isMain } from '../util/main.ts';
import { renderSvg } from './charts.ts';
import type { Activity } from './executors.ts';
import { readRecords, resumeState } from './results.ts';
import { chartData, RECORDS_FILE, RESULTS_FILE } from './summary.ts';

/** What only the running driver knows. */
export interface LiveView {
  activity: Activity[];
  workers: string[];
  /** USD including conversations still open. */
  usd: number;
  running: boolean;
}

export interface DashboardOptions {
  repoDir: string;
  port: number;
  host?: string;
  live?: () => LiveView;
}

export interface Dashboard {
  url: string;
  close: () => Promise<void>;
}

/** The page's data: a research run as JSON. */
export function dashboardState(repoDir: string, live?: LiveView): object {
  const records = readRecords(join(repoDir, RECORDS_FILE));
  const st = resumeState(records);
  const stopped = records.at(-1)?.type === 'stop';
  const experiments = [...st.completed].sort((a, b) => a.experiment - b.experiment).map((r) => ({
    experiment: r.experiment, status: r.status, val_bpb: r.val_bpb, description: r.description, commit: r.commit?.slice(0, 7) ?? null,
    parent: r.parent.slice(0, 7), decision: r.decision ?? null, replayed: Boolean(r.replayed_from), duration_s: r.duration_s,
    runs: r.runs.map((x) => ({ val_bpb: x.val_bpb, worker: x.worker ?? null, seed: x.seed ?? null, kind: x.kind ?? null, error: x.error?.split('\n')[0] ?? null })),
  }));
  const inFlight = [...st.inFlight.values()].map((f) => ({
    experiment: f.experiment, description: f.description || '(the model is proposing)', commit: f.commit.slice(0, 7), parent: f.parent.slice(0, 7),
    runs: f.runs.map((x) => ({ val_bpb: x.val_bpb, worker: x.worker ?? null })), queued: f.pending.map((d) => d.kind), replayed: Boolean(f.replay),
  }));
  const seen = new Set<string>(live?.workers ?? []);
  for (const r of [...(st.baseline?.runs ?? []), ...st.completed.flatMap((x) => x.runs)]) if (r.worker) seen.add(r.worker);
  const workers = [...seen].sort().map((name) => {
    const a = live?.activity.find((x) => x.worker === name);
    return { name, doing: a ? { experiment: a.experiment, kind: a.kind, progress: a.progress, seconds: Math.round((Date.now() - a.since) / 1000) } : null };
  });
  const counts = { keep: 0, discard: 0, crash: 0 };
  for (const r of st.completed) counts[r.status as keyof typeof counts]++;
  return {
    tag: st.session?.tag ?? null, model: st.session?.model ?? null, executor: st.session?.executor ?? null,
    running: live?.running ?? !stopped, stop: stopped ? (records.at(-1) as { reason: string }).reason : null,
    baseline: st.baseline ? { val_bpb: st.baseline.val_bpb, runs: st.baseline.runs.map((x) => ({ val_bpb: x.val_bpb, worker: x.worker ?? null, seed: x.seed ?? null })), noise_floor: st.baseline.noise_floor } : null,
    best: st.bestValBpb !== null ? { val_bpb: st.bestValBpb, experiment: st.bestExperiment, commit: st.bestCommit?.slice(0, 7) } : null,
    counts, experiments, in_flight: inFlight, workers,
    tokens: st.tokens, usd: st.usdKnown ? (live?.usd ?? st.usd) : null, updated: new Date().toISOString(),
  };
}

function gitDiff(repoDir: string, from: string, to: string): Promise<string> {
  return new Promise((res) => {
    execFile('git', ['diff', '--no-color', '-U3', from, to, '--', 'train.ts'], { cwd: repoDir, maxBuffer: 16 * 1024 * 1024 }, (err, stdout) => res(err ? `(diff unavailable: ${err.message.split('\n')[0]})` : stdout));
  });
}

async function experimentDiff(repoDir: string, n: number): Promise<string | null> {
  const st = resumeState(readRecords(join(repoDir, RECORDS_FILE)));
  const done = st.completed.find((r) => r.experiment === n);
  if (done?.commit) return gitDiff(repoDir, done.parent, done.commit);
  const f = st.inFlight.get(n);
  if (f?.commit) return gitDiff(repoDir, f.parent, f.commit);
  return null;
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

export async function startDashboard(o: DashboardOptions): Promise<Dashboard> {
  const repoDir = resolve(o.repoDir);
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    void (async () => {
      try {
        if (path === '/') return send(res, 200, 'text/html; charset=utf-8', PAGE);
        if (path === '/api/state') return send(res, 200, 'application/json', JSON.stringify(dashboardState(repoDir, o.live?.())));
        if (path === '/chart.svg') {
          if (!existsSync(join(repoDir, RESULTS_FILE))) return send(res, 404, 'text/plain', 'no results yet');
          return send(res, 200, 'image/svg+xml', renderSvg(chartData(repoDir)));
        }
        const m = /^\/api\/diff\/(\d+)$/.exec(path);
        if (m) {
          const diff = await experimentDiff(repoDir, Number(m[1]));
          return diff === null ? send(res, 404, 'text/plain', `no commit for experiment #${m[1]}`) : send(res, 200, 'text/plain; charset=utf-8', diff);
        }
        send(res, 404, 'text/plain', 'not found');
      } catch (e) {
        send(res, 500, 'text/plain', (e as Error).message);
      }
    })();
  });
  await new Promise<void>((res, rej) => {
    server.once('error', (e: NodeJS.ErrnoException) => rej(new Error(e.code === 'EADDRINUSE' ? `port ${o.port} is in use: choose another --dashboard port` : e.message)));
    server.listen(o.port, o.host ?? '127.0.0.1', () => res());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.address}:${addr.port}/`,
    close: () => new Promise((res) => {
      server.closeAllConnections();
      server.close(() => res());
    }),
  };
}

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>autoresearch-ts dashboard</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px 24px;color:#212121}
h1{font-size:20px;margin:0 0 6px} .muted{color:#666} .grid{display:flex;gap:24px;flex-wrap:wrap}
#chart svg{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
tr.row{cursor:pointer} tr.row:hover{background:#f5f5f5} .keep{color:#2e7d32;font-weight:bold} .discard{color:#757575} .crash{color:#c62828}
pre.diff{margin:0;padding:6px;background:#fafafa;font-size:12px;max-width:1100px;overflow:auto} .add{color:#2e7d32} .del{color:#c62828}
</style></head><body>
<h1 id="title">autoresearch-ts</h1>
<div id="summary" class="muted">loading…</div>
<div class="grid">
<div><h2>Workers</h2><table><thead><tr><th>worker</th><th>running</th></tr></thead><tbody id="workers"></tbody></table></div>
<div><h2>In flight</h2><table><thead><tr><th>#</th><th>experiment</th><th>runs</th></tr></thead><tbody id="inflight"></tbody></table></div>
</div>
<h2>Progress</h2><div id="chart"></div>
<h2>Results <span class="muted">(click a row for its diff)</span></h2>
<table><thead><tr><th>#</th><th>commit</th><th>val_bpb</th><th>status</th><th>runs</th><th>description</th></tr></thead><tbody id="results"></tbody></table>
<script>
const open = new Set(); const diffs = new Map(); let lastChart = '';
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function row(cells) { const tr = el('tr'); for (const c of cells) tr.append(typeof c === 'string' ? el('td', c) : c); return tr; }
function fmt(v) { return v === null || v === undefined ? '—' : v.toFixed(6); }
function runsText(runs) { return runs.map(r => (r.val_bpb === null ? 'crash' : r.val_bpb.toFixed(6)) + (r.worker ? ' @' + r.worker : '') + (r.seed !== null && r.seed !== undefined ? ' seed ' + r.seed : '')).join(', '); }
function diffNode(text) { const pre = el('pre', undefined, 'diff'); for (const line of text.split('\\n')) { const s = el('span', line + '\\n', line.startsWith('+') && !line.startsWith('+++') ? 'add' : line.startsWith('-') && !line.startsWith('---') ? 'del' : ''); pre.append(s); } return pre; }
async function toggle(n) {
  if (open.has(n)) open.delete(n); else { open.add(n); if (!diffs.has(n)) { const r = await fetch('/api/diff/' + n); diffs.set(n, await r.text()); } }
  render(window.lastState);
}
function render(s) {
  if (!s) return; window.lastState = s;
  document.getElementById('title').textContent = 'autoresearch-ts · ' + (s.tag ?? '?') + (s.running ? ' · running' : ' · finished' + (s.stop ? ' (' + s.stop + ')' : ''));
  const t = s.tokens;
  document.getElementById('summary').textContent = [
    'best val_bpb ' + (s.best ? fmt(s.best.val_bpb) + ' (#' + s.best.experiment + ')' : '—'),
    'baseline ' + (s.baseline ? fmt(s.baseline.val_bpb) + ' ± ' + s.baseline.noise_floor.toFixed(6) : '—'),
    s.counts.keep + ' keep · ' + s.counts.discard + ' discard · ' + s.counts.crash + ' crash',
    'tokens in ' + t.input + ' · out ' + t.output + ' · cache write ' + t.cacheCreation + ' · cache read ' + t.cacheRead,
    'USD ' + (s.usd === null ? 'unknown' : '$' + s.usd.toFixed(4)),
  ].join('  |  ');
  const workers = document.getElementById('workers'); workers.replaceChildren();
  for (const w of s.workers) { const tr = row([w.name, w.doing ? '#' + w.doing.experiment + ' ' + w.doing.kind + ' · ' + w.doing.seconds + ' s' + (w.doing.progress ? ' · ' + w.doing.progress : '') : 'idle']); tr.dataset.worker = w.name; workers.append(tr); }
  const inflight = document.getElementById('inflight'); inflight.replaceChildren();
  for (const f of s.in_flight) { const tr = row(['#' + f.experiment, f.description + (f.replayed ? ' (replayed on the new best)' : ''), runsText(f.runs) + (f.queued.length ? ' · queued: ' + f.queued.join(', ') : '')]); tr.dataset.experiment = f.experiment; inflight.append(tr); }
  const tbody = document.getElementById('results'); tbody.replaceChildren();
  if (s.baseline) tbody.append(row(['0', '', fmt(s.baseline.val_bpb), el('td', 'keep', 'keep'), runsText(s.baseline.runs), 'baseline']));
  for (const e of s.experiments) {
    const tr = row(['#' + e.experiment, e.commit ?? '', fmt(e.val_bpb), el('td', e.status, e.status), runsText(e.runs), e.description + (e.replayed ? ' (replayed)' : '')]);
    tr.className = 'row'; tr.dataset.experiment = e.experiment; tr.title = e.decision ?? ''; tr.onclick = () => toggle(e.experiment); tbody.append(tr);
    if (open.has(e.experiment) && diffs.has(e.experiment)) { const d = el('tr', undefined, 'diffrow'); const td = el('td'); td.colSpan = 6; td.append(diffNode(diffs.get(e.experiment))); d.append(td); d.dataset.diff = e.experiment; tbody.append(d); }
  }
}
async function refresh() {
  try {
    const s = await (await fetch('/api/state')).json(); render(s);
    const key = s.experiments.length + ':' + (s.best ? s.best.val_bpb : '');
    if (key !== lastChart) { const r = await fetch('/chart.svg'); if (r.ok) { document.getElementById('chart').innerHTML = await r.text(); lastChart = key; } }
  } catch (e) { document.getElementById('summary').textContent = 'dashboard: ' + e.message; }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
`;

export const DASHBOARD_USAGE = `Usage: npm run dashboard [-- --port N] [--repo DIR]

Serves the research dashboard of DIR (default: the current directory) at http://127.0.0.1:N/
(default port 8787): progress chart, results with diffs, workers, tokens and USD. It reads
research.jsonl, so it also follows a run in progress. Ctrl-C stops it.`;

export async function main(argv: string[]): Promise<number> {
  let v;
  try {
    ({ values: v } = parseArgs({ args: argv, strict: true, options: { port: { type: 'string' }, repo: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    console.error(`dashboard: ${(e as Error).message} (see --help)`);
    return 2;
  }
  if (v.help) {
    console.log(DASHBOARD_USAGE);
    return 0;
  }
  const port = v.port === undefined ? 8787 : Number(v.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`dashboard: --port expects a port number, got '${v.port}'`);
    return 2;
  }
  const repoDir = resolve(v.repo ?? process.cwd());
  if (!existsSync(join(repoDir, RECORDS_FILE))) {
    console.error(`dashboard: no ${RECORDS_FILE} in ${repoDir}: run npm run research first (or pass --repo)`);
    return 1;
  }
  try {
    const d = await startDashboard({ repoDir, port });
    console.log(`dashboard: ${d.url} (Ctrl-C to stop)`);
    await new Promise<void>((r) => process.once('SIGINT', () => void d.close().then(r)));
    return 0;
  } catch (e) {
    console.error(`dashboard: ${(e as Error).message}`);
    return 1;
  }
}

if (isMain(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}
