/**
 * The live dashboard in headless Chromium (Debian's `chromium`, driven by playwright-core; no
 * browser is downloaded): while a research run with two workers goes on, the page shows what
 * each worker runs and the results as they arrive; afterwards, the chart, the table with each
 * experiment's diff, tokens and USD. `npm run dashboard` serves a finished run the same way.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResearchDriver } from '../../src/research/driver.ts';
import { readRecords, type ExperimentRecord } from '../../src/research/results.ts';
import { fakeTrainCommand, FakeMessagesApi, makeProject, memoryOutput, options, proposal, REPO_ROOT, removeProject, waitFor, type FakeRequest } from './helpers.ts';
import { startTestRedis, type TestRedis } from './redis.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_MISSING = `the dashboard test needs Chromium at ${CHROMIUM}: install it (Debian/Ubuntu: sudo apt-get install -y chromium) or set CHROMIUM_PATH`;

let redis: TestRedis;
let api: FakeMessagesApi;
let browser: BrowserContext;
let dir: string;
const profile = mkdtempSync(join(tmpdir(), 'autoresearch-chromium-'));

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(CHROMIUM_MISSING);
  redis = await startTestRedis();
  api = await FakeMessagesApi.start();
  // a fresh profile (--user-data-dir, which playwright passes for a persistent context)
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  dir = makeProject();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await api?.close();
  await redis?.stop();
  if (dir) removeProject(dir);
  rmSync(profile, { recursive: true, force: true });
});

const LR = 'const MATRIX_LR = 0.04;';
function reply(req: FakeRequest) {
  const n = Number(/experiment #(\d+)\)/.exec(req.body.messages[0].content[1].text as string)![1]);
  if (n === 1) return proposal('MATRIX_LR 0.05', [[LR, 'const MATRIX_LR = 0.05;']]);
  return proposal(`WARMDOWN_RATIO 0.5${n}`, [['const WARMDOWN_RATIO = 0.5;', `const WARMDOWN_RATIO = 0.5${n};`]]);
}

const cells = (page: Page, sel: string) => page.$$eval(sel, (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent ?? '')));

describe('the dashboard', () => {
  it('follows a run live: workers, runs in flight, results as they arrive', async () => {
    api.script(...Array.from({ length: 4 }, () => reply));
    const driver = new ResearchDriver(options(dir, api, {
      queue: redis.url, workers: 2, noiseFloor: 0, maxExperiments: 4, dashboardPort: 0, trainCommand: fakeTrainCommand(dir, '--sleep 2'),
    }), memoryOutput());
    const done = driver.run();
    const url = await waitFor('the dashboard', () => driver.dashboardUrl, 120_000);
    const page = await browser.newPage();
    await page.goto(url);
    await expect.poll(() => page.textContent('#title'), { timeout: 60_000 }).toMatch(/^autoresearch-ts · test · running$/);
    // a worker is shown running an experiment (its number and the elapsed seconds)
    await page.waitForFunction(`[...document.querySelectorAll('#workers tr')].some((tr) => /^#\\d+ (first|baseline|rerun|confirm) · \\d+ s/.test(tr.children[1]?.textContent ?? ''))`, null, { timeout: 120_000 });
    const workers = await cells(page, '#workers tr');
    expect(workers.map((w) => w[0]).sort()).toEqual(['test-local1', 'test-local2']);
    // results arrive without a reload
    await page.waitForFunction(`document.querySelectorAll('#results tr.row').length >= 2`, null, { timeout: 120_000 });
    const inFlight = await page.textContent('#inflight');
    await done; // (the driver's dashboard closes with it; npm run dashboard serves the finished run: next test)
    await page.close();
    expect(inFlight).toBeDefined();
  }, 300_000);

  it('shows the finished run: chart, results with diffs, workers, tokens and USD (npm run dashboard)', async () => {
    const server = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/research/dashboard.ts'), '--repo', dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    server.stdout!.on('data', (d) => (text += d));
    server.stderr!.on('data', (d) => (text += d));
    try {
      const url = await waitFor('npm run dashboard to listen', () => /dashboard: (http:\/\/\S+)/.exec(text)?.[1], 60_000);
      const page = await browser.newPage();
      await page.goto(url);
      await page.waitForFunction(`document.querySelectorAll('#results tr.row').length === 4 && document.querySelector('#chart svg') !== null`, null, { timeout: 30_000 });
      const exps = readRecords(join(dir, 'research.jsonl')).filter((r): r is ExperimentRecord => r.type === 'experiment').sort((a, b) => a.experiment - b.experiment);
      const rows = await cells(page, '#results tr');
      expect(rows[0].slice(2, 4)).toEqual(['1.013000', 'keep']);
      expect(rows.slice(1).map((r) => [r[0], r[2], r[3], r[5]])).toEqual(exps.map((e) => [`#${e.experiment}`, e.val_bpb!.toFixed(6), e.status, e.description]));
      expect(rows[1][4]).toMatch(/^1\.007000 @test-local[12] seed 42$/);
      expect(await page.textContent('#title')).toBe('autoresearch-ts · test · finished (--max-experiments 4 reached)');
      const summary = (await page.textContent('#summary'))!;
      expect(summary).toContain('best val_bpb 1.007000 (#1)');
      expect(summary).toContain('1 keep · 3 discard · 0 crash');
      expect(summary).toMatch(/tokens in 4800 · out 1200 · cache write 3200 · cache read 36000 {2}\| {2}USD \$0\.0\d{3}/);
      expect(await page.textContent('#chart svg')).toContain('4 experiments');
      // a row's diff, on click
      await page.click('#results tr.row[data-experiment="1"]');
      await page.waitForSelector('tr.diffrow[data-diff="1"] pre');
      const diff = (await page.textContent('tr.diffrow[data-diff="1"] pre'))!;
      expect(diff).toContain('-const MATRIX_LR = 0.04;');
      expect(diff).toContain('+const MATRIX_LR = 0.05;');
      expect(await page.$$eval('tr.diffrow pre span.add', (s) => s.map((x) => x.textContent))).toContain('+const MATRIX_LR = 0.05; // learning rate for matrix parameters (Muon)\n');
      const workers = await cells(page, '#workers tr');
      expect(workers).toEqual([['test-local1', 'idle'], ['test-local2', 'idle']]);
      await page.close();
    } finally {
      server.kill('SIGINT');
    }
  }, 120_000);
});
