/**
 * `npm run verify` (src/verify.ts) on every fixture shipped in fixtures/: gpt-tiny from the PyTorch
 * reference, and those the CPU reference (test/reference/) generates for other layer counts,
 * n_kv_head < n_head, other window patterns and lengths. train.ts's GPT and MuonAdamW must pass every
 * check, and the check must fail when a fixture is wrong (a perturbed gradient, another softcap,
 * reordered groups, other windows). The CLI runs as a subprocess: with no argument (every shipped
 * fixture, passing) and on a corrupted one (failing).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../src/gpu/runtime.ts';
import { readFixture, shippedFixtures } from '../src/fixture.ts';
import { type CheckRow, formatRows, verifyFixture } from '../src/verify.ts';
import { decodePacked, encodeF32, type FixtureJson, GENERATED_CASES, makeFixture } from './reference/fixture.ts';
import { requireFeature, testRuntime } from './setup.ts';

const rt = (await testRuntime()) as Runtime;
const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));

const shipped = shippedFixtures().map((path) => ({ file: basename(path), fx: readFixture(path) as FixtureJson }));
const byName = (name: string) => shipped.find((s) => s.fx.name === name)!.fx;
const failing = (rows: CheckRow[]) => rows.filter((r) => !r.ok).map((r) => r.name);
/** window_sizes, logits, per_token_loss, loss, param_groups, and a grad and a step row per parameter. */
const rowCount = (fx: Pick<FixtureJson, 'params'>) => 5 + 2 * Object.keys(fx.params).length;

function expectAllOk(rows: CheckRow[], fx: Pick<FixtureJson, 'params'>, label: string): void {
  expect(failing(rows), `${label}:\n${formatRows(rows.filter((r) => !r.ok))}`).toEqual([]);
  expect(rows.length, `${label}: rows`).toBe(rowCount(fx));
  for (const r of rows) expect(Number.isFinite(r.error), `${label}: ${r.name} error ${r.error}`).toBe(true);
}

/** A deep copy with one element of one gradient moved by `by` (default 1%) of that gradient's largest magnitude. */
function withPerturbedGrad(fx: FixtureJson, name: string, by = 0.01): FixtureJson {
  const copy = structuredClone(fx);
  const g = decodePacked(copy.expected.grads[name]);
  const max = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  let at = 0; // the smallest element, so max|g| (the error's denominator) stays put
  for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) < Math.abs(g[at])) at = i;
  g[at] += by * max;
  copy.expected.grads[name] = encodeF32(g, copy.expected.grads[name].shape);
  return copy;
}

describe.skipIf(!rt)('verifyFixture', () => {
  it('ships the PyTorch reference fixture and one per generated case', () => {
    expect(shipped.map((s) => s.file)).toEqual(['gpt-tiny.json', ...GENERATED_CASES.map((c) => `${c.options.name}.json`).sort()]);
  });

  it.each(shipped.map((s) => [s.file, s.fx] as const))('passes the shipped fixture %s', async (name, fx) => {
    const rows = await verifyFixture(rt, fx);
    expectAllOk(rows, fx, name);
    // it really compared the parameters this config has
    const names = rows.map((r) => r.name);
    if (fx.config.n_layer > 1) expect(names).toContain(`grad transformer.h.${fx.config.n_layer - 1}.attn.ve_gate.weight`);
    expect(names).toContain(`step transformer.h.0.attn.c_k.weight`);
  });

  it('fails on a perturbed gradient, in that row only', async () => {
    const target = 'transformer.h.1.attn.c_k.weight';
    const rows = await verifyFixture(rt, withPerturbedGrad(byName('gqa-3l-ssl'), target));
    expect(failing(rows)).toEqual([`grad ${target}`]);
    const row = rows.find((r) => r.name === `grad ${target}`)!;
    expect(row.error).toBeGreaterThan(5e-3);
  });

  it('fails when the reference used another logit softcap', async () => {
    const c = GENERATED_CASES.find((g) => g.options.name === 'mqa-1l-l')!;
    const rows = await verifyFixture(rt, makeFixture(c.config, c.seed, { ...c.options, softcap: 3 }));
    const bad = failing(rows);
    for (const name of ['logits', 'per_token_loss', 'loss', 'grad lm_head.weight']) expect(bad).toContain(name);
    expect(bad).not.toContain('param_groups');
    expect(bad).not.toContain('window_sizes');
  });

  it('fails when the Muon groups are listed in another order, or the windows differ', async () => {
    const fx = structuredClone(byName('mqa-1l-l'));
    const adamw = fx.optimizer.param_groups.filter((g) => g.kind === 'adamw');
    const muon = fx.optimizer.param_groups.filter((g) => g.kind === 'muon');
    fx.optimizer.param_groups = [...adamw, ...muon.reverse()];
    expect(failing(await verifyFixture(rt, fx))).toEqual(['param_groups']);

    const windows = structuredClone(byName('gqa-3l-ssl'));
    windows.window_sizes = windows.window_sizes.map(() => [windows.config.sequence_len, 0]);
    expect(failing(await verifyFixture(rt, windows))).toEqual(['window_sizes']);
  });
});

// f16 compute (train.ts PRECISION 'f16') against the same f32 reference, with TOLERANCE_F16; needs
// shader-f16 (lavapipe 26.2), required under AUTORESEARCH_REQUIRE_FEATURES=shader-f16 (CI).
describe.skipIf(!requireFeature(rt, 'shader-f16'))('verifyFixture --precision f16', () => {
  const worst = (rows: CheckRow[], prefix: string) => Math.max(...rows.filter((r) => r.name.startsWith(prefix)).map((r) => r.error));

  it.each(shipped.map((s) => [s.file, s.fx] as const))('passes the shipped fixture %s', async (name, fx) => {
    const rows = await verifyFixture(rt, fx, 'f16');
    expectAllOk(rows, fx, `${name} f16`);
    console.log(`${name} f16: logits ${worst(rows, 'logits').toExponential(1)}, grads ${worst(rows, 'grad').toExponential(1)}, step ${worst(rows, 'step').toExponential(1)}`);
  });

  it('still fails on a gradient perturbed past the f16 tolerance', async () => {
    const target = 'transformer.h.1.attn.c_k.weight';
    const rows = await verifyFixture(rt, withPerturbedGrad(byName('gqa-3l-ssl'), target, 0.1), 'f16');
    expect(failing(rows)).toContain(`grad ${target}`);
    expect(failing(rows).filter((n) => n.startsWith('grad'))).toEqual([`grad ${target}`]);
  });

  it('the CLI takes --precision f16 and passes the shipped fixture', () => {
    const gptTiny = shippedFixtures().find((p) => basename(p) === 'gpt-tiny.json')!;
    const r = spawnSync('npx', ['tsx', 'src/verify.ts', '--precision', 'f16', gptTiny], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/precision f16/);
    expect(r.stdout).toMatch(/^all \d+ checks passed$/m);
    const bad = spawnSync('npx', ['tsx', 'src/verify.ts', '--precision', 'bf16', gptTiny], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim()).toMatch(/^verify: --precision must be one of f32, f16, got 'bf16'; see .*--help`$/);
  });
});

describe.skipIf(!rt)('verify CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'verify-fixture-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = (fx: FixtureJson, file: string) => {
    const path = join(dir, file);
    writeFileSync(path, JSON.stringify(fx));
    return spawnSync('npx', ['tsx', 'src/verify.ts', path], { cwd: REPO_ROOT, encoding: 'utf8' });
  };

  it('with no argument checks every shipped fixture and exits 0; exits 1 on a corrupted one', () => {
    const ok = spawnSync('npx', ['tsx', 'src/verify.ts'], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(ok.status, ok.stdout + ok.stderr).toBe(0);
    for (const s of shipped) {
      expect(ok.stdout).toContain(`fixture: fixtures/${s.file} `);
      expect(ok.stdout).toMatch(new RegExp(`^all ${rowCount(s.fx)} checks passed$`, 'm'));
    }
    expect(ok.stdout).toMatch(new RegExp(`^${shipped.length} of ${shipped.length} fixtures passed$`, 'm'));

    const fx = byName('mqa-1l-l');
    const bad = run(withPerturbedGrad(fx, 'lm_head.weight'), 'bad.json');
    expect(bad.status, bad.stdout + bad.stderr).toBe(1);
    expect(bad.stdout).toMatch(new RegExp(`^1 of ${rowCount(fx)} checks FAILED$`, 'm'));
    expect(bad.stdout).toMatch(/^FAIL\s+grad lm_head\.weight/m);
  });
});
