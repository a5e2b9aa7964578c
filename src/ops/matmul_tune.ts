/**
 * @file Autotuner for the subgroup-matrix GEMM: times candidate configurations (fragment shape,
 * workgroup tiling, K splits) for a product on the adapter in use, and caches the winner on disk
 * keyed by adapter, driver and kernel source (a driver update or a kernel edit retunes).
 *
 * - `npm run bench -- --tune` tunes the products of the training step (bench/matmul.bench.ts).
 * - Products met without a tuned choice are remembered (`pendingProblems`); `tunePending` tunes
 *   them within a time budget (the bounded lazy pass: call it after the first training step, never
 *   inside one — the step records GPU work synchronously).
 * - Nothing tuned: `defaultTile` and the split-K heuristic of matmul_subgroup_matrix.ts.
 * The cache lives at $AUTORESEARCH_TUNE_CACHE, else $XDG_CACHE_HOME/autoresearch-ts/matmul-tune.json
 * (~/.cache/...). A corrupt or unwritable cache warns once and tuning results stay in memory.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { candidateFragments, type FragmentConfig, fragmentLabel } from '../gpu/subgroup_matrix.ts';
import type { GemmArgs } from './matmul.ts';
import { Rng } from '../util/rng.ts';
import { blockShape, defaultTile, gemmSubgroupMatrix, type SgTile, sgmatSourceHash, tileLabel, tileProblem } from './matmul_subgroup_matrix.ts';

/** A product as the tuner sees it (strides do not change which kernel wins; vec4 eligibility is part of M, N, K). */
export interface GemmProblem {
  M: number;
  N: number;
  K: number;
  batch: number;
  transA: boolean;
  transB: boolean;
  cDtype: 'f16' | 'f32';
  /** C += (beta ≠ 0): changes the epilogue. */
  accumulate: boolean;
}

export interface TunedChoice {
  /** fragmentLabel of the winner (must match one of the adapter's candidates to be used). */
  fragment: string;
  tile: SgTile;
  splitK: number;
  /** Median GPU (or wall) milliseconds of the winner, and of the default for comparison. */
  ms: number;
  defaultMs: number | null;
  candidates: number;
  tunedAt: string;
}

interface DeviceEntry {
  adapter: string;
  driver: string;
  source: string;
  problems: Record<string, TunedChoice>;
}

interface CacheFile {
  version: 1;
  devices: Record<string, DeviceEntry>;
}

export function problemKey(p: GemmProblem): string {
  return `${p.transA ? 'T' : 'N'}${p.transB ? 'T' : 'N'}.${p.M}x${p.N}x${p.K}.b${p.batch}.${p.cDtype}${p.accumulate ? '+' : ''}`;
}

export function problemOf(g: GemmArgs, cDtype: 'f16' | 'f32'): GemmProblem {
  return { M: g.M, N: g.N, K: g.K, batch: g.batch ?? 1, transA: !!g.transA, transB: !!g.transB, cDtype, accumulate: (g.beta ?? 0) !== 0 };
}

/** Identity of an adapter + driver + kernel source: the cache's device key. */
export interface DeviceIdentity {
  adapter: string;
  driver: string;
  source: string;
}

export function deviceIdentity(rt: Runtime): DeviceIdentity {
  const info = rt.gpu.adapter.info;
  return {
    adapter: `${rt.gpu.info.name} [${info.vendor}/${info.architecture}/${info.device}] ${rt.gpu.info.backend}`,
    // Dawn reports the driver in the description on Vulkan (e.g. "llvmpipe: Mesa 26.2.0-rc1 (LLVM 19.1.7)")
    driver: `${info.description ?? ''}`.trim(),
    source: sgmatSourceHash(),
  };
}

export function deviceKey(id: DeviceIdentity): string {
  return createHash('sha256').update(`${id.adapter}\u0000${id.driver}\u0000${id.source}`).digest('hex').slice(0, 24);
}

export function defaultCachePath(env = process.env): string {
  if (env.AUTORESEARCH_TUNE_CACHE) return env.AUTORESEARCH_TUNE_CACHE;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'autoresearch-ts', 'matmul-tune.json');
}

let warned = false;
function warnOnce(msg: string): void {
  if (warned) return;
  warned = true;
  process.stderr.write(`matmul tuner: ${msg}\n`);
}

/** Reads the cache file; a missing file is empty, a corrupt one warns and is treated as empty. */
export function readCache(path: string): CacheFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return { version: 1, devices: {} };
  }
  try {
    const parsed = JSON.parse(text) as CacheFile;
    if (parsed?.version !== 1 || typeof parsed.devices !== 'object' || parsed.devices === null) throw new Error('unknown format');
    return parsed;
  } catch (e) {
    warnOnce(`ignoring unreadable cache ${path} (${(e as Error).message}); it will be rewritten by the next tuning`);
    return { version: 1, devices: {} };
  }
}

/** Writes atomically (temp file + rename): a crash mid-write never leaves half a cache. */
export function writeCache(path: string, cache: CacheFile): boolean {
  try {
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(cache, null, 1) + '\n');
    renameSync(tmp, path);
    return true;
  } catch (e) {
    warnOnce(`cannot write ${path} (${(e as Error).message}); tuned choices stay in memory for this run`);
    return false;
  }
}

/** Per-runtime view of the cache: this device's choices, loaded once. */
interface TunerState {
  path: string;
  key: string;
  id: DeviceIdentity;
  choices: Map<string, TunedChoice>;
  pending: Map<string, GemmProblem>;
}
const states = new WeakMap<Runtime, TunerState>();

function state(rt: Runtime): TunerState {
  let s = states.get(rt);
  if (!s) {
    const path = defaultCachePath();
    const id = deviceIdentity(rt);
    const key = deviceKey(id);
    const entry = readCache(path).devices[key];
    s = { path, key, id, choices: new Map(Object.entries(entry?.problems ?? {})), pending: new Map() };
    states.set(rt, s);
  }
  return s;
}

/** Points a runtime's tuner at another cache file (tests, benches); reloads from it. */
export function useTuneCache(rt: Runtime, path: string): void {
  states.delete(rt);
  const prev = process.env.AUTORESEARCH_TUNE_CACHE;
  process.env.AUTORESEARCH_TUNE_CACHE = path;
  try {
    state(rt);
  } finally {
    if (prev === undefined) delete process.env.AUTORESEARCH_TUNE_CACHE;
    else process.env.AUTORESEARCH_TUNE_CACHE = prev;
  }
}

/**
 * The tuned (fragment, tile, splitK) for a product, or null (then: defaults, and the product is
 * remembered for `tunePending`). A choice whose fragment this adapter no longer offers is ignored.
 */
export function tunedChoice(rt: Runtime, g: GemmArgs, cDtype: 'f16' | 'f32'): { fragment: FragmentConfig; tile: SgTile; splitK: number | undefined } | null {
  const s = state(rt);
  const p = problemOf(g, cDtype);
  const key = problemKey(p);
  const c = s.choices.get(key);
  if (c) {
    const fragment = candidateFragments(rt.subgroupMatrix).find((f) => fragmentLabel(f) === c.fragment);
    if (fragment && !tileProblem(rt, fragment, c.tile, p.transA, p.transB)) return { fragment, tile: c.tile, splitK: c.splitK || undefined };
  }
  if (!s.pending.has(key) && s.pending.size < 256) s.pending.set(key, p);
  return null;
}

/** Products met without a tuned choice since the runtime started. */
export function pendingProblems(rt: Runtime): GemmProblem[] {
  return [...state(rt).pending.values()];
}

/** Records a choice for this device and writes the cache file. */
export function saveChoice(rt: Runtime, p: GemmProblem, choice: TunedChoice): void {
  const s = state(rt);
  const key = problemKey(p);
  s.choices.set(key, choice);
  s.pending.delete(key);
  const cache = readCache(s.path);
  const entry = (cache.devices[s.key] ??= { adapter: s.id.adapter, driver: s.id.driver, source: s.id.source, problems: {} });
  entry.problems[key] = choice;
  writeCache(s.path, cache);
}

// ---------------------------------------------------------------------------------------------
// Candidates and timing

export interface Candidate {
  fragment: FragmentConfig;
  tile: SgTile;
  splitK: number | undefined; // undefined: the heuristic
}

/**
 * Candidate configurations for a product: each fragment the adapter offers × tilings from small
 * (more workgroups, fewer registers) to large (more reuse per load) × K depths, with the split-K
 * heuristic and, where K is long, a few forced split counts. At most `limit`, default first.
 */
export function candidates(rt: Runtime, p: GemmProblem, limit = 32): Candidate[] {
  const out: Candidate[] = [];
  const seen = new Set<string>();
  const add = (fragment: FragmentConfig, tile: SgTile, splitK?: number) => {
    const key = `${fragmentLabel(fragment)}|${tileLabel(tile)}|${splitK ?? 'auto'}`;
    if (seen.has(key) || tileProblem(rt, fragment, tile, p.transA, p.transB)) return;
    const { BM, BN } = blockShape(fragment, tile);
    if (BM > 4 * Math.max(p.M, 16) && BN > 4 * Math.max(p.N, 16)) return; // far larger than the product
    seen.add(key);
    out.push({ fragment, tile, splitK });
  };
  for (const f of candidateFragments(rt.subgroupMatrix)) {
    add(f, defaultTile(f));
    const blocks: [number, number][] = [[32, 32], [64, 64], [64, 128], [128, 64], [128, 128]];
    const warps: [number, number][] = [[2, 2], [2, 4], [4, 2], [1, 2]];
    for (const [bm, bn] of blocks) {
      for (const [wm, wn] of warps) {
        const TM = bm / (wm * f.M), TN = bn / (wn * f.N);
        if (!Number.isInteger(TM) || !Number.isInteger(TN) || TM < 1 || TN < 1 || TM * TN > 16) continue;
        for (const BK of [32, 64]) if (BK % f.K === 0) for (const stages of [2, 1] as const) add(f, { WM: wm, WN: wn, TM, TN, BK, stages });
      }
    }
    if (p.K >= 1024) for (const s of [1, 2, 4, 8]) add(f, defaultTile(f), s);
  }
  return out.slice(0, limit);
}

export interface TuneOptions {
  /** Stop trying more candidates after this long (the winner so far is kept). */
  budgetMs?: number;
  /** Timed repetitions per candidate (after one warm-up that compiles). */
  reps?: number;
  limit?: number;
  /** Try exactly these (tests); default: candidates(). */
  only?: Candidate[];
  onProgress?: (msg: string) => void;
}

/** The product's operands, filled with random values (all-zero inputs would understate power draw and so time). */
interface Operands {
  g: GemmArgs;
  a: Tensor;
  b: Tensor;
  c: Tensor;
}

function operands(rt: Runtime, p: GemmProblem): Operands {
  const g: GemmArgs = {
    M: p.M, N: p.N, K: p.K, batch: p.batch, transA: p.transA, transB: p.transB,
    lda: p.transA ? p.M : p.K, ldb: p.transB ? p.K : p.N, ldc: p.N,
    strideA: p.batch > 1 ? p.M * p.K : 0, strideB: p.batch > 1 ? p.K * p.N : 0, strideC: p.M * p.N,
    beta: p.accumulate ? 1 : 0,
  };
  const rng = new Rng(1);
  const random = (n: number, dtype: 'f16' | 'f32') => rt.keep(rt.fromArray(rng.uniformArray(n, -1, 1), [n], dtype));
  return { g, a: random(p.batch * p.M * p.K, 'f16'), b: random(p.batch * p.K * p.N, 'f16'), c: random(p.batch * p.M * p.N, p.cDtype) };
}

/** Median milliseconds of one product with candidate `c` (GPU timestamps when available). */
async function timeCandidate(rt: Runtime, x: Operands, c: Candidate, reps: number): Promise<number> {
  const opts = { fragment: c.fragment, tile: c.tile, splitK: c.splitK };
  const run = () => void gemmSubgroupMatrix(rt, x.a, x.b, x.c, x.g, opts);
  run(); // warm-up: compiles the pipeline
  await rt.sync();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    if (rt.canProfile) {
      rt.startProfile();
      run();
      times.push((await rt.endProfile()).reduce((s, t) => s + t.ms, 0));
    } else {
      const t0 = performance.now();
      run();
      await rt.sync();
      times.push(performance.now() - t0);
    }
  }
  times.sort((u, v) => u - v);
  return times[Math.floor(times.length / 2)];
}

/** Times the candidates for one product, saves and returns the winner (null: no candidate ran). */
export async function tuneGemm(rt: Runtime, p: GemmProblem, o: TuneOptions = {}): Promise<TunedChoice | null> {
  const list = o.only ?? candidates(rt, p, o.limit);
  if (!list.length) return null;
  const reps = o.reps ?? 3;
  const deadline = performance.now() + (o.budgetMs ?? 60_000);
  let best: { c: Candidate; ms: number } | null = null;
  let defaultMs: number | null = null;
  let tried = 0;
  const x = operands(rt, p);
  for (const c of list) {
    if (tried > 0 && performance.now() > deadline) break;
    let ms: number;
    try {
      ms = await timeCandidate(rt, x, c, reps);
    } catch (e) {
      o.onProgress?.(`  ${fragmentLabel(c.fragment)} ${tileLabel(c.tile)}: failed (${(e as Error).message.split('\n')[0]})`);
      continue;
    }
    tried++;
    if (c === list[0] && !o.only) defaultMs = ms; // candidates() lists the default first
    o.onProgress?.(`  ${fragmentLabel(c.fragment)} ${tileLabel(c.tile)} split ${c.splitK ?? 'auto'}: ${ms.toFixed(3)} ms`);
    if (!best || ms < best.ms) best = { c, ms };
  }
  for (const t of [x.a, x.b, x.c]) rt.release(t);
  if (!best) return null;
  const choice: TunedChoice = {
    fragment: fragmentLabel(best.c.fragment),
    tile: best.c.tile,
    splitK: best.c.splitK ?? 0,
    ms: best.ms,
    defaultMs,
    candidates: tried,
    tunedAt: new Date().toISOString(),
  };
  saveChoice(rt, p, choice);
  return choice;
}

/** The bounded lazy pass: tunes the products met so far without a choice, within `budgetMs` in all. */
export async function tunePending(rt: Runtime, o: TuneOptions = {}): Promise<number> {
  const budget = o.budgetMs ?? 60_000;
  const end = performance.now() + budget;
  let n = 0;
  for (const p of pendingProblems(rt)) {
    const left = end - performance.now();
    if (left <= 0) break;
    if (await tuneGemm(rt, p, { ...o, budgetMs: left })) n++;
  }
  return n;
}
