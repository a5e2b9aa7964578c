/**
 * @file Wrapper for kernels/embedding.wgsl (gather rows of a table by token id, and the
 * deterministic scatter-add backward) and the plain-TS references.
 *
 * The backward needs no float atomics: the token ids are on the CPU anyway (the dataloader has
 * them), so `buildEmbeddingIndex` builds the inverse index there — for each vocab id, the rows
 * where it occurs, in increasing order — and uploads it once per batch. The same index serves
 * every table looked up with the same ids (wte and the value embeddings). Ids that occur more
 * than EMBEDDING_CHUNK times are split into chunks summed by separate workgroups, so one
 * frequent token does not leave a single workgroup walking thousands of rows.
 */
import type { Runtime } from '../gpu/runtime.ts';
import type { Tensor } from '../gpu/tensor.ts';

/** Occurrences of one id that one workgroup sums before the work is split into chunks. */
export const EMBEDDING_CHUNK = 64;
const FWD_WG = 256;

/** The inverse of a batch of token ids, on the GPU (kept tensors; reuse with `into`). */
export interface EmbeddingIndex {
  /** V: the vocabulary size the index was built for. */
  readonly vocabSize: number;
  /** N: the number of token positions. */
  readonly tokens: number;
  /** i32 [V+1]: positions of id v are positions[offsets[v] .. offsets[v+1]]. */
  readonly offsets: Tensor;
  /** i32 [N]: token positions grouped by id, increasing within an id. */
  readonly positions: Tensor;
  /** i32 [V+1]: chunks of id v are chunk_offsets[v] .. chunk_offsets[v+1] (empty for light ids). */
  readonly chunkOffsets: Tensor;
  /** i32 [maxChunks, 2]: [start, end) ranges into `positions`, one per chunk. */
  readonly chunks: Tensor;
  /** Capacity of `chunks` (an upper bound for any batch of N tokens). */
  readonly maxChunks: number;
  /** Chunks in use for the current batch (rewritten by each rebuild). */
  numChunks: number;
  /** CPU arrays reused by every rebuild (no allocation per training step). */
  readonly host: HostIndex;
}

/** An upper bound on the chunks of N positions: an id with c > K occurrences makes ceil(c/K) < 2c/K. */
function chunkCapacity(tokens: number): number {
  return Math.max(1, Math.ceil((2 * tokens) / EMBEDDING_CHUNK));
}

/** The CSR inverse index of `ids` as host arrays (shared by the GPU index and the tests). */
/** The CPU side of an index; `scratch` (same N and V) is filled in place instead of allocating. */
export interface HostIndex {
  offsets: Int32Array;
  positions: Int32Array;
  fill: Int32Array;
  chunkOffsets: Int32Array;
  chunks: Int32Array;
  numChunks: number;
}

export function embeddingIndexHost(ids: Int32Array, vocabSize: number, scratch?: HostIndex): HostIndex {
  const N = ids.length;
  const offsets = scratch?.offsets.fill(0) ?? new Int32Array(vocabSize + 1);
  for (let n = 0; n < N; n++) {
    const id = ids[n];
    if (!(id >= 0 && id < vocabSize)) {
      throw new RangeError(`buildEmbeddingIndex: id ${id} at position ${n} is outside the vocabulary [0, ${vocabSize})`);
    }
    offsets[id + 1]++;
  }
  for (let v = 0; v < vocabSize; v++) offsets[v + 1] += offsets[v];
  // counting sort: scanning n upward keeps positions increasing within each id
  const positions = scratch?.positions ?? new Int32Array(N);
  const fill = scratch?.fill ?? new Int32Array(vocabSize);
  fill.set(offsets.subarray(0, vocabSize));
  for (let n = 0; n < N; n++) positions[fill[ids[n]]++] = n;
  const chunkOffsets = scratch?.chunkOffsets ?? new Int32Array(vocabSize + 1);
  const chunks = scratch?.chunks ?? new Int32Array(2 * chunkCapacity(N));
  let numChunks = 0;
  for (let v = 0; v < vocabSize; v++) {
    const first = offsets[v], last = offsets[v + 1];
    if (last - first > EMBEDDING_CHUNK) {
      for (let s = first; s < last; s += EMBEDDING_CHUNK) {
        chunks[2 * numChunks] = s;
        chunks[2 * numChunks + 1] = Math.min(s + EMBEDDING_CHUNK, last);
        numChunks++;
      }
    }
    chunkOffsets[v + 1] = numChunks;
  }
  const host = scratch ?? { offsets, positions, fill, chunkOffsets, chunks, numChunks };
  host.numChunks = numChunks;
  return host;
}
export function buildEmbeddingIndex(rt: Runtime, idsHost: Int32Array, vocabSize: number, into?: EmbeddingIndex): EmbeddingIndex {
  if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new Error(`buildEmbeddingIndex: vocabulary size ${vocabSize}`);
  const N = idsHost.length;
  if (into && (into.vocabSize !== vocabSize || into.tokens !== N)) {
    throw new Error(`buildEmbeddingIndex: into was built for ${into.tokens} tokens and V=${into.vocabSize}, got ${N} tokens and V=${vocabSize}`);
  }
  const host = embeddingIndexHost(idsHost, vocabSize, into?.host);
  if (into) {
    rt.write(into.offsets, host.offsets);
    if (N) rt.write(into.positions, host.positions);
    rt.write(into.chunkOffsets, host.chunkOffsets);
    if (host.numChunks) rt.write(into.chunks, host.chunks);
    into.numChunks = host.numChunks;
    return into;
  }
  const maxChunks = host.chunks.length / 2;
  return {
    vocabSize,
    tokens: N,
    offsets: rt.keep(rt.fromArray(host.offsets, [vocabSize + 1], 'i32', 'embedding.offsets')),
    positions: rt.keep(rt.fromArray(N ? host.positions : [0], [Math.max(N, 1)], 'i32', 'embedding.positions')),
    chunkOffsets: rt.keep(rt.fromArray(host.chunkOffsets, [vocabSize + 1], 'i32', 'embedding.chunk_offsets')),
    chunks: rt.keep(rt.fromArray(host.chunks, [maxChunks, 2], 'i32', 'embedding.chunks')),
    maxChunks,
    numChunks: host.numChunks,
    host,
  };
}

/** Returns an index's tensors to the pool. */
export function releaseEmbeddingIndex(rt: Runtime, index: EmbeddingIndex): void {
  for (const t of [index.offsets, index.positions, index.chunkOffsets, index.chunks]) rt.release(t);
}

function floatDtype(t: Tensor, op: string): 'f32' | 'f16' {
  if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new Error(`${op}: ${t.describe()} is not a float tensor`);
  return t.dtype;
}

export interface EmbeddingFwdOptions {
  /** Write here ([...ids.shape, C], the table's dtype) instead of a new tensor. */
  out?: Tensor;
}

/** out[..., :] = table[ids[...], :]: table [V, C], ids i32 of any shape → [...ids.shape, C]. */
export function embeddingFwd(rt: Runtime, table: Tensor, ids: Tensor, o: EmbeddingFwdOptions = {}): Tensor {
  const dtype = floatDtype(table, 'embedding');
  if (table.ndim !== 2) throw new Error(`embedding: table ${table.describe()} must be [V, C]`);
  if (ids.dtype !== 'i32') throw new Error(`embedding: ids ${ids.describe()} must be i32`);
  const [V, C] = table.shape;
  const outShape = [...ids.shape, C];
  const out = o.out ?? rt.empty(outShape, dtype);
  if (out.size !== ids.size * C || out.dtype !== dtype) {
    throw new Error(`embedding: out ${out.describe()} must be ${dtype}[${outShape}] for table ${table.describe()} and ids ${ids.describe()}`);
  }
  const n = ids.size * C;
  const k = rt.kernel({ source: 'embedding.wgsl', entry: 'embedding_fwd', defines: { FWD: true }, overrides: { WG: FWD_WG }, dtype });
  const params = { n, cols: C, vocab: V, table_off: table.offset, ids_off: ids.offset, out_off: out.offset, accumulate: 0 };
  rt.dispatch1d(k, [table, ids, out], params, Math.ceil(n / FWD_WG));
  return out;
}

export interface EmbeddingBwdOptions {
  /** Write (or add) the table gradient here ([V, C], dOut's dtype) instead of a new tensor. */
  out?: Tensor;
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
}

/** Threads per workgroup for rows of C columns: enough to cover short rows, at most 256. */
function rowThreads(C: number): number {
  let wg = 32;
  while (wg < C && wg < 256) wg *= 2;
  return wg;
}

/**
 * dTable [V, C] with dTable[v] = Σ dOut[n] over the positions n where ids[n] = v, summed in a fixed
 * order (bit-identical every run). dOut is [..., C] with N = index.tokens rows.
 */
export function embeddingBwd(rt: Runtime, dOut: Tensor, index: EmbeddingIndex, vocabSize: number, o: EmbeddingBwdOptions = {}): Tensor {
  const dtype = floatDtype(dOut, 'embeddingBwd');
  if (vocabSize !== index.vocabSize) throw new Error(`embeddingBwd: index built for V=${index.vocabSize}, called with V=${vocabSize}`);
  const N = index.tokens;
  const C = dOut.ndim === 0 ? 1 : dOut.dim(-1);
  if (dOut.ndim < 1 || dOut.size !== N * C) throw new Error(`embeddingBwd: dOut ${dOut.describe()} must be [..., C] with ${N} rows (the index's tokens)`);
  if (o.accumulate && !o.out) throw new Error('embeddingBwd: accumulate needs out');
  const dTable = o.out ?? rt.empty([vocabSize, C], dtype);
  if (dTable.size !== vocabSize * C || dTable.dtype !== dtype) {
    throw new Error(`embeddingBwd: out ${dTable.describe()} must be ${dtype}[${vocabSize},${C}] for dOut ${dOut.describe()}`);
  }
  const WG = rowThreads(C);
  // sized for the index's capacity, not this batch, so the pool hands back the same buffer every step
  const partial = rt.empty([index.maxChunks * C], 'f32');
  const params = { n: index.numChunks, cols: C, vocab: vocabSize, table_off: dTable.offset, ids_off: 0, out_off: dOut.offset, accumulate: o.accumulate ? 1 : 0 };
  if (index.numChunks > 0) {
    const chunked = rt.kernel({ source: 'embedding.wgsl', entry: 'embedding_bwd_chunks', defines: { BWD_CHUNKS: true }, overrides: { WG }, dtype });
    rt.dispatch1d(chunked, [dOut, index.positions, index.chunks, partial], params, index.numChunks);
  }
  const k = rt.kernel({ source: 'embedding.wgsl', entry: 'embedding_bwd', defines: { BWD: true }, overrides: { WG }, dtype });
  rt.dispatch1d(k, [dOut, index.offsets, index.positions, index.chunkOffsets, partial, dTable], params, vocabSize);
  rt.release(partial);
  return dTable;
}

// ---------------------------------------------------------------------------------------------
// References: plain loops, written to be read.

/** out[n, c] = table[ids[n], c] for table [V, C]. */
export function embeddingRef(table: Float32Array, C: number, ids: Int32Array): Float32Array {
  const out = new Float32Array(ids.length * C);
  for (let n = 0; n < ids.length; n++) {
    for (let c = 0; c < C; c++) out[n * C + c] = table[ids[n] * C + c];
  }
  return out;
}

/** dTable[v, c] = Σ_{n: ids[n] = v} dOut[n, c], summed in increasing n (plus `init` if given). */
export function embeddingBwdRef(dOut: Float32Array, ids: Int32Array, V: number, C: number, init?: Float32Array): Float32Array {
  const dTable = init ? Float32Array.from(init) : new Float32Array(V * C);
  for (let n = 0; n < ids.length; n++) {
    for (let c = 0; c < C; c++) dTable[ids[n] * C + c] += dOut[n * C + c];
  }
  return dTable;
}
