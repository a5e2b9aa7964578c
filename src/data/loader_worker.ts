/**
 * @file The dataloader's worker thread: reads documents, tokenizes them (BOS first) and packs
 * rows by best fit, posting [inputs | targets] batches to the main thread. Flow control by
 * credits: it packs at most `prefetch` batches ahead of the consumer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BpeEncoder } from './bpe.ts';
import { BestFitPacker, type BatchStreamOptions, documentBatches } from './loader.ts';

const { options } = workerData as { options: BatchStreamOptions };
const port = parentPort!;

let credits = options.prefetch ?? 4;
let wake: (() => void) | null = null;
port.on('message', (m: { type: 'credit'; n: number }) => {
  if (m.type === 'credit') {
    credits += m.n;
    wake?.();
    wake = null;
  }
});

async function run(): Promise<void> {
  const { B, T, loop, bosTokenId } = options;
  const bufferSize = options.bufferSize ?? 1000;
  const maxRows = options.maxRows ?? Infinity;
  const encoder = new BpeEncoder(options.merges, options.pattern);
  const packer = new BestFitPacker(T + 1);
  const docs = documentBatches(options.parts, loop);
  let exhausted = false;
  let epoch = 1;
  let rowsSent = 0;
  const row = new Int32Array(T + 1);

  const refill = async () => {
    while (!exhausted && packer.size < bufferSize) {
      const r = await docs.next();
      if (r.done) {
        exhausted = true;
        break;
      }
      epoch = r.value.epoch;
      for (const text of r.value.texts) {
        const ids = encoder.encode(text);
        const doc = new Int32Array(ids.length + 1);
        doc[0] = bosTokenId;
        doc.set(ids, 1);
        packer.add(doc);
      }
    }
  };

  for (;;) {
    const want = Math.min(B, maxRows - rowsSent);
    const data = new Int32Array(2 * want * T);
    let rows = 0;
    fill: while (rows < want) {
      let pos = 0;
      while (pos < T + 1) {
        if (packer.size < bufferSize) await refill();
        if (packer.size === 0) break fill; // one pass is over; the partial row is dropped
        pos = packer.place(row, 0, pos);
      }
      data.set(row.subarray(0, T), rows * T);
      data.set(row.subarray(1), (want + rows) * T);
      rows++;
    }
    if (rows > 0) {
      while (credits <= 0) await new Promise<void>((r) => (wake = r));
      credits--;
      // a short final batch (one-pass end) is compacted to [inputs (rows × T) | targets (rows × T)]
      let out = data;
      if (rows < want) {
        out = new Int32Array(2 * rows * T);
        out.set(data.subarray(0, rows * T));
        out.set(data.subarray(want * T, (want + rows) * T), rows * T);
      }
      port.postMessage({ type: 'batch', data: out, rows, epoch }, [out.buffer]);
      rowsSent += rows;
    }
    if (rows < want || rowsSent >= maxRows) {
      port.postMessage({ type: 'end' });
      return;
    }
  }
}

run().catch((e: unknown) => {
  port.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e) });
});
