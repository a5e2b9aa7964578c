import { describe, expect, it } from 'vitest';
import {
  buildEmbeddingIndex,
  EMBEDDING_CHUNK,
  embeddingBwd,
  embeddingBwdRef,
  embeddingFwd,
  embeddingIndexHost,
  embeddingRef,
  releaseEmbeddingIndex,
} from '../../src/ops/embedding.ts';
import type { Runtime } from '../../src/gpu/runtime.ts';
import { Rng } from '../../src/util/rng.ts';
import { expectClose, testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(5);

/** ids where id 0 occurs `heavy` times (chunked when > EMBEDDING_CHUNK), the rest random in [1, V/2): ids >= V/2 never occur. */
function skewedIds(N: number, V: number, heavy: number): Int32Array {
  const ids = rng.intArray(N, Math.max(1, V >> 1));
  for (let n = 0; n < N; n++) if (ids[n] === 0) ids[n] = 1 % V;
  // a seeded Fisher-Yates shuffle picks where the heavy id goes
  const order = Array.from({ length: N }, (_, i) => i);
  for (let i = N - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  for (let i = 0; i < heavy; i++) ids[order[i]] = 0;
  return ids;
}

describe.skipIf(!rt)('embedding forward', () => {
  const cases: [string, number, number, number[]][] = [
    ['V=1, C=1, N=1', 1, 1, [1]],
    ['odd C, 2-D ids', 7, 5, [3, 4]],
    ['C > workgroup size', 11, 300, [2, 3]],
  ];
  for (const [name, V, C, idsShape] of cases) {
    it(`gathers rows: ${name}`, async () => {
      const N = idsShape.reduce((p, d) => p * d, 1);
      const table = rng.uniformArray(V * C);
      const ids = rng.intArray(N, V);
      const out = embeddingFwd(rt, rt.fromArray(table, [V, C]), rt.fromArray(ids, idsShape, 'i32'));
      expect(out.shape).toEqual([...idsShape, C]);
      expect(await rt.read(out)).toEqual(embeddingRef(table, C, ids)); // a gather is exact
    });
  }

  it('reads a table view at an offset and writes into out', async () => {
    const V = 4, C = 3;
    const backing = rng.uniformArray(V * C + 5);
    const table = rt.view(rt.fromArray(backing, [V * C + 5]), [V, C], 5);
    const ids = new Int32Array([3, 0, 3, 2, 1]);
    const out = rt.zeros([5, C]);
    embeddingFwd(rt, table, rt.fromArray(ids, [5], 'i32'), { out });
    expect(await rt.read(out)).toEqual(embeddingRef(backing.subarray(5), C, ids));
  });

  it('rejects bad shapes and dtypes', () => {
    const table = rt.zeros([4, 3]);
    expect(() => embeddingFwd(rt, table, rt.zeros([2]))).toThrow(/embedding: ids .* must be i32/);
    expect(() => embeddingFwd(rt, rt.zeros([12]), rt.zeros([2], 'i32'))).toThrow(/must be \[V, C\]/);
    expect(() => embeddingFwd(rt, table, rt.zeros([2], 'i32'), { out: rt.zeros([2, 4]) })).toThrow(/embedding: out/);
  });
});

describe.skipIf(!rt)('embedding index', () => {
  it('groups positions by id, increasing, and chunks frequent ids', () => {
    const ids = skewedIds(2 * EMBEDDING_CHUNK + 40, 10, 2 * EMBEDDING_CHUNK + 1);
    const h = embeddingIndexHost(ids, 10);
    expect(h.offsets[0]).toBe(0);
    expect(h.offsets[10]).toBe(ids.length);
    for (let v = 0; v < 10; v++) {
      const pos = [...h.positions.subarray(h.offsets[v], h.offsets[v + 1])];
      expect(pos.every((n) => ids[n] === v)).toBe(true);
      expect(pos).toEqual([...pos].sort((a, b) => a - b));
    }
    // id 0 has 2K+1 occurrences: chunks of K, K, 1; no other id is chunked
    expect(h.numChunks).toBe(3);
    expect([...h.chunkOffsets.subarray(0, 3)]).toEqual([0, 3, 3]);
    expect([...h.chunks.subarray(0, 6)]).toEqual([0, EMBEDDING_CHUNK, EMBEDDING_CHUNK, 2 * EMBEDDING_CHUNK, 2 * EMBEDDING_CHUNK, 2 * EMBEDDING_CHUNK + 1]);
  });

  it('rejects ids outside the vocabulary, naming the position', () => {
    expect(() => buildEmbeddingIndex(rt, new Int32Array([0, 1, 5]), 5)).toThrow(/id 5 at position 2 is outside the vocabulary \[0, 5\)/);
    expect(() => buildEmbeddingIndex(rt, new Int32Array([-1]), 5)).toThrow(/id -1 at position 0/);
  });

  it('rejects a reused index of another size', () => {
    const index = buildEmbeddingIndex(rt, new Int32Array([0, 1, 2]), 4);
    expect(() => buildEmbeddingIndex(rt, new Int32Array([0, 1]), 4, index)).toThrow(/built for 3 tokens and V=4, got 2 tokens/);
    releaseEmbeddingIndex(rt, index);
  });
});

describe.skipIf(!rt)('embedding backward', () => {
  // [name, V, C, N, occurrences of id 0]: chunk boundaries at K and K + 1, odd C, C > 256, N = 1
  const K = EMBEDDING_CHUNK;
  const cases: [string, number, number, number, number][] = [
    ['N=1, C=1', 3, 1, 1, 0],
    ['repeated and unused ids, odd C', 9, 5, 40, 7],
    ['one id exactly a chunk', 6, 3, K + 10, K],
    ['one id a chunk + 1 (two chunks)', 6, 3, K + 10, K + 1],
    ['three chunks, C > workgroup size', 5, 300, 2 * K + 20, 2 * K + 1],
  ];
  for (const [name, V, C, N, heavy] of cases) {
    it(`sums rows per id: ${name}`, async () => {
      const ids = skewedIds(N, V, heavy);
      const dOut = rng.uniformArray(N * C);
      const index = buildEmbeddingIndex(rt, ids, V);
      expect(index.numChunks).toBe(heavy > K ? Math.ceil(heavy / K) : 0);
      const dTable = embeddingBwd(rt, rt.fromArray(dOut, [N, C]), index, V);
      expect(dTable.shape).toEqual([V, C]);
      const got = await rt.read(dTable);
      const want = embeddingBwdRef(dOut, ids, V, C);
      expectClose(got, want, { atol: 1e-5, rtol: 1e-5 });
      // ids >= V/2 never occur: their rows are exactly zero
      for (let i = (V >> 1) * C; i < V * C; i++) if (!ids.includes(Math.floor(i / C))) expect(got[i]).toBe(0);
      releaseEmbeddingIndex(rt, index);
    });
  }

  it('accumulates into an existing gradient (unused ids untouched), from a 3-D dOut view', async () => {
    const V = 8, C = 7, N = 2 * K + 3;
    const ids = skewedIds(N, V, K + 30);
    const dOut = rng.uniformArray(N * C + 2);
    const init = rng.uniformArray(V * C);
    const index = buildEmbeddingIndex(rt, ids, V);
    const dTable = rt.fromArray(init, [V, C]);
    const dOutView = rt.view(rt.fromArray(dOut, [N * C + 2]), [1, N, C], 2);
    embeddingBwd(rt, dOutView, index, V, { out: dTable, accumulate: true });
    const got = await rt.read(dTable);
    expectClose(got, embeddingBwdRef(dOut.subarray(2), ids, V, C, init), { atol: 1e-5, rtol: 1e-5 });
    for (let v = V >> 1; v < V; v++) {
      if (!ids.includes(v)) expect([...got.subarray(v * C, (v + 1) * C)]).toEqual([...init.subarray(v * C, (v + 1) * C)]);
    }
    releaseEmbeddingIndex(rt, index);
  });

  it('is deterministic: bit-identical results from repeated runs', async () => {
    const V = 4, C = 9, N = 3 * K + 5;
    const ids = skewedIds(N, V, 3 * K);
    const dOut = rt.fromArray(rng.normalArray(N * C, 100), [N, C]);
    const index = buildEmbeddingIndex(rt, ids, V);
    const first = await rt.read(embeddingBwd(rt, dOut, index, V));
    for (let i = 0; i < 3; i++) expect(await rt.read(embeddingBwd(rt, dOut, index, V))).toEqual(first);
    releaseEmbeddingIndex(rt, index);
  });

  it('rebuilds an index in place for the next batch (no new tensors)', async () => {
    const V = 6, C = 4, N = K + 20;
    const idsA = skewedIds(N, V, K + 5);
    const idsB = skewedIds(N, V, 3);
    const index = buildEmbeddingIndex(rt, idsA, V);
    const tensors = [index.offsets, index.positions, index.chunkOffsets, index.chunks];
    const dOut = rng.uniformArray(N * C);
    expectClose(await rt.read(embeddingBwd(rt, rt.fromArray(dOut, [N, C]), index, V)), embeddingBwdRef(dOut, idsA, V, C));
    expect(buildEmbeddingIndex(rt, idsB, V, index)).toBe(index);
    expect([index.offsets, index.positions, index.chunkOffsets, index.chunks]).toEqual(tensors);
    expect(index.numChunks).toBe(0);
    expectClose(await rt.read(embeddingBwd(rt, rt.fromArray(dOut, [N, C]), index, V)), embeddingBwdRef(dOut, idsB, V, C));
    releaseEmbeddingIndex(rt, index);
  });

  it('covers a vocabulary of more than 65535 ids (a two-dimensional grid)', async () => {
    const V = 70_001, C = 2;
    const ids = new Int32Array([70_000, 3, 65_535, 70_000, 65_536]);
    const dOut = rng.uniformArray(ids.length * C);
    const index = buildEmbeddingIndex(rt, ids, V);
    const got = await rt.read(embeddingBwd(rt, rt.fromArray(dOut, [ids.length, C]), index, V));
    expectClose(got, embeddingBwdRef(dOut, ids, V, C), { atol: 1e-6 });
    releaseEmbeddingIndex(rt, index);
  });

  it('rejects a dOut that does not match the index', () => {
    const index = buildEmbeddingIndex(rt, new Int32Array([0, 1, 1]), 3);
    expect(() => embeddingBwd(rt, rt.zeros([2, 4]), index, 3)).toThrow(/embeddingBwd: dOut .* with 3 rows/);
    expect(() => embeddingBwd(rt, rt.zeros([3, 4]), index, 5)).toThrow(/index built for V=3/);
    expect(() => embeddingBwd(rt, rt.zeros([3, 4]), index, 3, { accumulate: true })).toThrow(/accumulate needs out/);
    releaseEmbeddingIndex(rt, index);
  });
});
