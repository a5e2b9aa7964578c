/**
 * The subgroup-matrix GEMM autotuner: cache keys (adapter, driver, kernel source), the on-disk round
 * trip (atomic writes, corrupt files), and — on an adapter with subgroup matrices — that a tuned
 * choice is the one planned and computes the right product, and that tuning records a candidate.
 * Never asserts a timing.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { f16Bits, fromF16Bits, type Runtime } from '../../src/gpu/runtime.ts';
import { fragmentLabel, SUBGROUP_MATRIX_FEATURE } from '../../src/gpu/subgroup_matrix.ts';
import { gemmRef, type GemmArgs } from '../../src/ops/matmul.ts';
import { defaultTile, gemmSubgroupMatrix, planSgGemm, sgmatFragment } from '../../src/ops/matmul_subgroup_matrix.ts';
import {
  candidates, defaultCachePath, deviceIdentity, deviceKey, type GemmProblem, pendingProblems, problemKey, readCache, tuneGemm, tunePending, useTuneCache, writeCache,
} from '../../src/ops/matmul_tune.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const dir = mkdtempSync(join(tmpdir(), 'sgmat-tune-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('tuner cache', () => {
  const id = { adapter: 'NVIDIA H100 [nvidia/hopper/0x2330] vulkan', driver: 'NVIDIA 560.35.03', source: 'abc123' };

  it('keys by adapter, driver and kernel source', () => {
    const k = deviceKey(id);
    expect(deviceKey({ ...id })).toBe(k);
    expect(deviceKey({ ...id, driver: 'NVIDIA 565.57.01' })).not.toBe(k);
    expect(deviceKey({ ...id, source: 'abc124' })).not.toBe(k);
    expect(deviceKey({ ...id, adapter: 'NVIDIA H200 [nvidia/hopper/0x2335] vulkan' })).not.toBe(k);
  });

  it('keys problems by layout, sizes, batch, C type and accumulation', () => {
    const p: GemmProblem = { M: 64, N: 128, K: 512, batch: 1, transA: false, transB: true, cDtype: 'f16', accumulate: false };
    expect(problemKey(p)).toBe('NT.64x128x512.b1.f16');
    expect(problemKey({ ...p, transA: true, accumulate: true, cDtype: 'f32' })).toBe('TT.64x128x512.b1.f32+');
  });

  it('round-trips through the file and survives a corrupt one', () => {
    const path = join(dir, 'sub', 'cache.json');
    expect(readCache(path)).toEqual({ version: 1, devices: {} }); // missing: empty
    const cache = {
      version: 1 as const,
      devices: { [deviceKey(id)]: { ...id, problems: { 'NT.1x2x3.b1.f16': { fragment: '16x16x16/sg32', tile: { WM: 2, WN: 2, TM: 2, TN: 4, BK: 32 }, splitK: 0, ms: 1, defaultMs: 2, candidates: 5, tunedAt: 'now' } } } },
    };
    expect(writeCache(path, cache)).toBe(true);
    expect(readCache(path)).toEqual(cache);
    writeFileSync(path, '{"version": 1, "devi');
    expect(readCache(path)).toEqual({ version: 1, devices: {} });
  });

  it('finds the cache under XDG_CACHE_HOME unless AUTORESEARCH_TUNE_CACHE names one', () => {
    expect(defaultCachePath({ XDG_CACHE_HOME: '/x' })).toBe('/x/autoresearch-ts/matmul-tune.json');
    expect(defaultCachePath({ AUTORESEARCH_TUNE_CACHE: '/y.json', XDG_CACHE_HOME: '/x' })).toBe('/y.json');
  });
});

const rt = (await testRuntime()) as Runtime | null;
const required = (process.env.AUTORESEARCH_REQUIRE_FEATURES ?? '').split(',').includes(SUBGROUP_MATRIX_FEATURE);
if (required && !rt?.subgroupMatrix) throw new Error(`${SUBGROUP_MATRIX_FEATURE} is required (AUTORESEARCH_REQUIRE_FEATURES) but this adapter lacks it`);
const fragment = rt ? sgmatFragment(rt) : null;

describe.skipIf(!fragment)('tuner on the adapter', () => {
  const rng = new Rng(5);
  const g: GemmArgs = { M: 40, N: 24, K: 72, transB: true, lda: 72, ldb: 72, ldc: 24 };
  const p: GemmProblem = { M: 40, N: 24, K: 72, batch: 1, transA: false, transB: true, cDtype: 'f32', accumulate: false };

  it('lists runnable candidates, the default first', () => {
    const list = candidates(rt!, p);
    expect(list.length).toBeGreaterThan(1);
    expect(list[0].tile).toEqual(defaultTile(list[0].fragment));
  });

  it('uses a tuned choice from the cache, and it computes the right product', async () => {
    const path = join(dir, 'tuned.json');
    useTuneCache(rt!, path);
    const a = rt!.zeros([40 * 72], 'f16'), b = rt!.zeros([24 * 72], 'f16'), c = rt!.zeros([40 * 24]);
    expect(planSgGemm(rt!, a, b, c, g).tile).toEqual(defaultTile(fragment!)); // nothing tuned yet
    expect(pendingProblems(rt!).map(problemKey)).toContain(problemKey(p));
    // a cache written by an earlier tuning (here by hand) with a non-default tile and forced splits
    const tile = { WM: 1, WN: 2, TM: 2, TN: 1, BK: 2 * fragment!.K };
    const cache = readCache(path);
    const id = deviceIdentity(rt!);
    cache.devices[deviceKey(id)] = { ...id, problems: { [problemKey(p)]: { fragment: fragmentLabel(fragment!), tile, splitK: 2, ms: 1, defaultMs: 1, candidates: 2, tunedAt: 'test' } } };
    writeCache(path, cache);
    useTuneCache(rt!, path);
    const plan = planSgGemm(rt!, a, b, c, g);
    expect(plan.tile).toEqual(tile);
    expect(plan.splits).toBe(2);
    const av = fromF16Bits(Uint16Array.from(rng.uniformArray(40 * 72, -1, 1), f16Bits));
    const bv = fromF16Bits(Uint16Array.from(rng.uniformArray(24 * 72, -1, 1), f16Bits));
    rt!.write(a, av);
    rt!.write(b, bv);
    const used = gemmSubgroupMatrix(rt!, a, b, c, g);
    expect(used.tile).toEqual(tile);
    expectClose(await rt!.read(c), gemmRef(av, bv, new Float32Array(40 * 24), g), { atol: 1e-4, rtol: 1e-4 });
  });

  it('tunes a product: the winner is a candidate and lands in the cache file', async () => {
    const path = join(dir, 'tune-run.json');
    useTuneCache(rt!, path);
    const q: GemmProblem = { ...p, M: 24, N: 16, K: 40 };
    // two small tilings (quick to compile on a CPU adapter)
    const list = [1, 2].map((TN) => ({ fragment: fragment!, tile: { WM: 2, WN: 1, TM: 1, TN, BK: 2 * fragment!.K }, splitK: undefined }));
    const choice = await tuneGemm(rt!, q, { only: list, reps: 1 });
    expect(choice).not.toBeNull();
    expect(list.some((c) => fragmentLabel(c.fragment) === choice!.fragment && JSON.stringify(c.tile) === JSON.stringify(choice!.tile))).toBe(true);
    const onDisk = JSON.parse(readFileSync(path, 'utf8'));
    const entry = Object.values(onDisk.devices)[0] as { problems: Record<string, unknown>; driver: string };
    expect(entry.problems[problemKey(q)]).toMatchObject({ fragment: choice!.fragment, tile: choice!.tile });
    // the lazy pass has nothing left for q, and tunes what is pending within its budget
    expect(pendingProblems(rt!).map(problemKey)).not.toContain(problemKey(q));
    expect(await tunePending(rt!, { budgetMs: 0 })).toBe(0);
  });
});
