/**
 * @file The packing dataloader's machinery: documents from parquet parts, BOS-aligned best-fit
 * packing (the reference's `make_dataloader`), and a worker thread that tokenizes and packs
 * batches ahead of the GPU. prepare.ts wraps it with GPU tensors (`makeDataloader`).
 *
 * Packing, as in the reference: rows of T + 1 tokens; each document is BOS + its tokens; from a
 * buffer of at least `bufferSize` documents, put the longest one that fits the space left in the
 * row (first such in buffer order on ties); if none fits, take the shortest (first on ties) and
 * crop it to fill the row exactly. No padding, every row starts with BOS. inputs = row[:-1],
 * targets = row[1:].
 */
import { Worker } from 'node:worker_threads';
import { readTextChunks } from './parquet.ts';

/** A slice of one parquet file (absolute path; rows [rowStart, rowEnd)). */
export interface DataPart {
  file: string;
  rowStart?: number;
  rowEnd?: number;
}

/** Documents per tokenizer call, as the reference's `tokenizer_batch_size`. */
export const DOC_BATCH = 128;

/**
 * Document batches from parts in order: within each row group, slices of DOC_BATCH texts (the
 * reference's `_document_batches`). `loop` repeats forever with epoch 1, 2, …; otherwise one pass.
 */
export async function* documentBatches(parts: readonly DataPart[], loop: boolean, docBatch = DOC_BATCH): AsyncGenerator<{ texts: string[]; epoch: number }> {
  if (parts.length === 0) throw new Error('documentBatches: no data parts');
  for (let epoch = 1; ; epoch++) {
    for (const part of parts) {
      for await (const texts of readTextChunks(part.file, part)) {
        for (let i = 0; i < texts.length; i += docBatch) yield { texts: texts.slice(i, i + docBatch), epoch };
      }
    }
    if (!loop) return;
  }
}

/** The document buffer and the best-fit rule. */
export class BestFitPacker {
  readonly docs: Int32Array[] = [];

  constructor(readonly rowCapacity: number) {
    if (!(rowCapacity >= 2)) throw new Error(`BestFitPacker: row capacity ${rowCapacity} < 2`);
  }

  get size(): number {
    return this.docs.length;
  }

  add(doc: Int32Array): void {
    if (doc.length === 0) throw new Error('BestFitPacker: empty document');
    this.docs.push(doc);
  }

  /**
   * Writes one document into row[pos..] and returns the new position: the longest document that
   * fits in rowCapacity - pos, else the shortest one cropped to fill the row. The buffer must not be empty.
   */
  place(row: Int32Array, rowOffset: number, pos: number): number {
    const docs = this.docs;
    const remaining = this.rowCapacity - pos;
    let best = -1;
    let bestLen = 0;
    let shortest = 0;
    for (let i = 0; i < docs.length; i++) {
      const n = docs[i].length;
      if (n <= remaining && n > bestLen) {
        best = i;
        bestLen = n;
      }
      if (n < docs[shortest].length) shortest = i;
    }
    if (best >= 0) {
      const doc = docs.splice(best, 1)[0];
      row.set(doc, rowOffset + pos);
      return pos + doc.length;
    }
    const doc = docs.splice(shortest, 1)[0];
    row.set(doc.subarray(0, remaining), rowOffset + pos);
    return this.rowCapacity;
  }
}

/**
 * Plain port of the reference's packing loop over an in-memory document list (already tokenized,
 * BOS first), repeated over epochs: the specification the worker's output is tested against.
 * Returns `numBatches` batches of B rows of T + 1 tokens and their epochs.
 */
export function packBatchesRef(docs: readonly Int32Array[], B: number, T: number, numBatches: number, bufferSize = 1000, docBatch = DOC_BATCH): { rows: number[][]; epoch: number }[] {
  const out: { rows: number[][]; epoch: number }[] = [];
  const buffer: number[][] = [];
  let cursor = 0;
  let epoch = 1;
  let batchEpoch = 1;
  const refill = () => {
    // the same slicing as documentBatches on a single part with one row group
    const slice = docs.slice(cursor, cursor + docBatch);
    batchEpoch = epoch;
    cursor += docBatch;
    if (cursor >= docs.length) {
      cursor = 0;
      epoch++;
    }
    for (const d of slice) buffer.push([...d]);
  };
  for (let b = 0; b < numBatches; b++) {
    const rows: number[][] = [];
    for (let r = 0; r < B; r++) {
      const row: number[] = [];
      while (row.length < T + 1) {
        while (buffer.length < bufferSize) refill();
        const remaining = T + 1 - row.length;
        let best = -1;
        let bestLen = 0;
        for (let i = 0; i < buffer.length; i++) {
          if (buffer[i].length <= remaining && buffer[i].length > bestLen) {
            best = i;
            bestLen = buffer[i].length;
          }
        }
        if (best >= 0) {
          row.push(...buffer.splice(best, 1)[0]);
        } else {
          let shortest = 0;
          for (let i = 1; i < buffer.length; i++) if (buffer[i].length < buffer[shortest].length) shortest = i;
          row.push(...buffer.splice(shortest, 1)[0].slice(0, remaining));
        }
      }
      rows.push(row);
    }
    out.push({ rows, epoch: batchEpoch });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Worker-backed batch stream

/** What the worker needs to rebuild the tokenizer and the packing. */
export interface BatchStreamOptions {
  parts: DataPart[];
  /** Merge table and split pattern (the tokenizer's). */
  merges: [number, number][];
  pattern: string;
  bosTokenId: number;
  /** Rows per batch and sequence length (rows hold T + 1 tokens). */
  B: number;
  T: number;
  /** Loop over the data forever (training) or make one pass (evaluation). */
  loop: boolean;
  /** Stop after this many rows (one-pass mode may also end earlier, when the data runs out). */
  maxRows?: number;
  /** Documents kept for best-fit packing (default 1000, the reference's). */
  bufferSize?: number;
  /** Batches packed ahead of the consumer (default 4). */
  prefetch?: number;
}

/** One packed batch: [inputs (rows × T) | targets (rows × T)] and the epoch it came from. */
export interface PackedBatch {
  data: Int32Array;
  rows: number;
  epoch: number;
}

type WorkerMessage = { type: 'batch'; data: Int32Array; rows: number; epoch: number } | { type: 'end' } | { type: 'error'; message: string };

/**
 * Tokenizes and packs in a worker thread, `prefetch` batches ahead; `next()` hands them over in
 * order (null once a one-pass stream is done). The worker runs TypeScript through tsx's loader
 * (worker_boot.mjs), whatever started this process (tsx, vitest).
 */
export class BatchStream {
  readonly #worker: Worker;
  readonly #ready: PackedBatch[] = [];
  #waiting: { resolve: (b: PackedBatch | null) => void; reject: (e: Error) => void } | null = null;
  #ended = false;
  #error: Error | null = null;
  #closed = false;

  constructor(readonly options: BatchStreamOptions) {
    const { B, T } = options;
    if (!(Number.isInteger(B) && B >= 1 && Number.isInteger(T) && T >= 1)) throw new Error(`dataloader: bad batch shape B=${B}, T=${T}`);
    const entry = new URL('./loader_worker.ts', import.meta.url).href;
    this.#worker = new Worker(new URL('./worker_boot.mjs', import.meta.url), { workerData: { entry, options } });
    this.#worker.unref(); // only a pending next() keeps the process alive
    this.#worker.on('message', (m: WorkerMessage) => this.#onMessage(m));
    this.#worker.on('error', (e) => this.#fail(e instanceof Error ? e : new Error(String(e))));
    this.#worker.on('exit', (code) => {
      if (!this.#ended && !this.#closed && !this.#error) this.#fail(new Error(`dataloader worker exited with code ${code}`));
    });
  }

  #onMessage(m: WorkerMessage): void {
    if (m.type === 'batch') this.#ready.push({ data: m.data, rows: m.rows, epoch: m.epoch });
    else if (m.type === 'end') this.#ended = true;
    else this.#fail(new Error(m.message));
    this.#deliver();
  }

  #fail(e: Error): void {
    this.#error ??= e;
    this.#deliver();
  }

  #deliver(): void {
    const w = this.#waiting;
    if (!w) return;
    const b = this.#ready.shift();
    if (b) {
      this.#waiting = null;
      this.#worker.unref();
      this.#worker.postMessage({ type: 'credit', n: 1 });
      w.resolve(b);
    } else if (this.#error) {
      this.#waiting = null;
      w.reject(this.#error);
    } else if (this.#ended) {
      this.#waiting = null;
      w.resolve(null);
    }
  }

  /** The next batch, or null when a one-pass stream has no more. */
  next(): Promise<PackedBatch | null> {
    if (this.#closed) return Promise.reject(new Error('dataloader: next() after close()'));
    if (this.#waiting) return Promise.reject(new Error('dataloader: next() called again before the previous one resolved'));
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#worker.ref();
      this.#deliver();
    });
  }

  /** Stops the worker. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#waiting?.reject(new Error('dataloader closed'));
    this.#waiting = null;
    await this.#worker.terminate();
  }
}
