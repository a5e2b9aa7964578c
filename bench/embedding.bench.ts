/**
 * @file Embedding lookup and its deterministic backward (kernels/embedding.wgsl) at the default
 * model's shapes: 16 × 2048 ids into a [8192, 512] table. Token ids are drawn from a Zipf
 * distribution (frequency ∝ 1/rank, like text: a few ids fill much of a batch, which is what the
 * backward's chunking is for), with uniform ids for comparison; plus the inverse index that the
 * training loop builds on the CPU and uploads every micro-step (host wall clock).
 */
import { buildEmbeddingIndex, embeddingBwd, embeddingFwd, type EmbeddingIndex, releaseEmbeddingIndex } from '../src/ops/embedding.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { type BenchCase, type BenchSuite, type Measured, median, type TimingOptions } from './harness.ts';

interface EmbeddingShape {
  /** Token positions (B·T). */
  N: number;
  V: number;
  C: number;
}

const MODEL: EmbeddingShape = { N: 16 * 2048, V: 8192, C: 512 };
// train.ts's software model width and tokens (2 × 256, C = 64), a smaller vocabulary
const SMALL: EmbeddingShape = { N: 512, V: 2048, C: 64 };

/** Zipf exponent: token frequencies in natural text fall off roughly as 1/rank. */
const ZIPF_S = 1;
const F32 = 4;

/**
 * n ids in [0, V) with P(rank r) ∝ 1/r^s (r = 1 … V); ranks map to ids through a seeded
 * permutation, so the frequent ids are scattered over the table as in a real vocabulary.
 */
export function zipfIds(n: number, V: number, rng: Rng, s = ZIPF_S): Int32Array {
  const cdf = new Float64Array(V);
  let total = 0;
  for (let r = 0; r < V; r++) cdf[r] = total += 1 / (r + 1) ** s;
  const idOfRank = Int32Array.from({ length: V }, (_, i) => i);
  for (let i = V - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [idOfRank[i], idOfRank[j]] = [idOfRank[j], idOfRank[i]];
  }
  const ids = new Int32Array(n);
  for (let k = 0; k < n; k++) {
    const u = rng.next() * total;
    let lo = 0, hi = V - 1; // first rank whose cumulative weight exceeds u
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    ids[k] = idOfRank[lo];
  }
  return ids;
}

type Ids = 'zipf' | 'uniform';

function makeIds(kind: Ids, s: EmbeddingShape): Int32Array {
  const rng = new Rng(8);
  return kind === 'zipf' ? zipfIds(s.N, s.V, rng) : rng.intArray(s.N, s.V);
}

function gpuCases(rt: Runtime, s: EmbeddingShape, kind: Ids): BenchCase[] {
  const { N, V, C } = s;
  let t: { table: Tensor; ids: Tensor; dOut: Tensor; out: Tensor; dTable: Tensor; index: EmbeddingIndex } | null = null;
  const setup = () => {
    if (t) return;
    const rng = new Rng(9);
    const idsHost = makeIds(kind, s);
    t = {
      table: rt.keep(rt.fromArray(rng.normalArray(V * C), [V, C])),
      ids: rt.keep(rt.fromArray(idsHost, [N], 'i32')),
      dOut: rt.keep(rt.fromArray(rng.normalArray(N * C), [N, C])),
      out: rt.keep(rt.empty([N, C])),
      dTable: rt.keep(rt.empty([V, C])),
      index: buildEmbeddingIndex(rt, idsHost, V),
    };
  };
  const dispose = () => {
    if (!t) return;
    releaseEmbeddingIndex(rt, t.index);
    for (const u of [t.table, t.ids, t.dOut, t.out, t.dTable]) rt.release(u);
    t = null;
  };
  return [
    {
      name: `embedding fwd ${kind} ids ${N} from ${V}x${C}`,
      bytes: F32 * (2 * N * C + N), // N rows gathered, ids, N rows written
      setup,
      run: () => void embeddingFwd(rt, t!.table, t!.ids, { out: t!.out }),
      dispose,
    },
    {
      name: `embedding bwd ${kind} ids ${N} into ${V}x${C}`,
      bytes: F32 * (N * C + V * C + 2 * N + 2 * V), // dOut in, dTable out, the index
      setup,
      run: () => void embeddingBwd(rt, t!.dOut, t!.index, V, { out: t!.dTable }),
      dispose,
    },
  ];
}

/** The inverse index as the training loop makes it each micro-step: built on the CPU, uploaded. */
function indexCase(rt: Runtime, s: EmbeddingShape): BenchCase {
  let idsHost: Int32Array | null = null;
  let index: EmbeddingIndex | null = null;
  const build = () => void buildEmbeddingIndex(rt, idsHost!, s.V, index!);
  return {
    name: `embedding index build (CPU + upload) zipf ids ${s.N}, V ${s.V}`,
    setup: () => {
      idsHost = makeIds('zipf', s);
      index = buildEmbeddingIndex(rt, idsHost, s.V);
    },
    run: build,
    async measure(o: TimingOptions): Promise<Measured> {
      const warmup = o.warmup ?? 2, repeats = o.repeats ?? 7;
      for (let i = 0; i < warmup; i++) build();
      await rt.sync();
      const samples: number[] = [];
      for (let i = 0; i < repeats; i++) {
        const t0 = performance.now();
        build();
        await rt.sync();
        samples.push(performance.now() - t0);
      }
      return { ms: median(samples), minMs: Math.min(...samples), method: 'wallclock', repeats, note: 'host time: counting sort on the CPU and four buffer uploads' };
    },
    dispose: () => {
      if (index) releaseEmbeddingIndex(rt, index);
      index = null;
      idsHost = null;
    },
  };
}

export const suite: BenchSuite = {
  family: 'embedding',
  cases(rt, size) {
    const s = size === 'model' ? MODEL : SMALL;
    return [...gpuCases(rt, s, 'zipf'), ...gpuCases(rt, s, 'uniform'), indexCase(rt, s)];
  },
};
