import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeDataloader } from '../prepare.ts';
import { BatchStream, BestFitPacker, type BatchStreamOptions, packBatchesRef } from '../src/data/loader.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { Rng } from '../src/util/rng.ts';
import { testRuntime } from './setup.ts';
import { makeTinyDataset } from './prepare_fixtures.ts';

const tmp = mkdtempSync(join(tmpdir(), 'prepare-loader-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const ds = makeTinyDataset(join(tmp, 'tiny'), { maxWords: 12 });
const tok = ds.tokenizer;
const BOS = tok.bosTokenId;

function streamOptions(o: Partial<BatchStreamOptions>): BatchStreamOptions {
  return {
    parts: [{ file: join(ds.dir, 'train.parquet') }],
    merges: tok.merges as [number, number][],
    pattern: tok.pattern,
    bosTokenId: BOS,
    B: 3,
    T: 32,
    loop: true,
    bufferSize: 20,
    ...o,
  };
}

/** Rows of a packed batch: row r = inputs[r] followed by the last target. */
function rowsOf(data: Int32Array, rows: number, T: number): number[][] {
  return Array.from({ length: rows }, (_, r) => [...data.subarray(r * T, (r + 1) * T), data[(rows + r) * T + T - 1]]);
}

describe('best-fit packing', () => {
  it('keeps the invariants: BOS first, no padding, documents whole and in order, crop only when nothing fits', () => {
    // document d = [BOS, code(d, 0), code(d, 1), ...] so every token can be traced back
    const rng = new Rng(3);
    const code = (d: number, i: number) => 1_000_000 + d * 1000 + i;
    const T = 64;
    const lengths = Array.from({ length: 3000 }, () => 1 + rng.int(rng.next() < 0.2 ? 150 : 40));
    const docs = lengths.map((n, d) => Int32Array.from({ length: n }, (_, i) => (i === 0 ? -1 : code(d, i - 1))));
    const packer = new BestFitPacker(T + 1);
    let next = 0;
    const row = new Int32Array(T + 1);
    const placed = new Set<number>();
    let crops = 0;
    for (let r = 0; r < 400; r++) {
      let pos = 0;
      while (pos < T + 1) {
        while (packer.size < 100) packer.add(docs[next++]);
        const remaining = T + 1 - pos;
        const before = [...packer.docs];
        const fits = before.filter((d) => d.length <= remaining);
        const newPos = packer.place(row, 0, pos);
        const taken = before.find((d) => !packer.docs.includes(d))!;
        if (fits.length) {
          // the longest that fits, first in buffer order on ties; placed whole
          const longest = Math.max(...fits.map((d) => d.length));
          expect(taken).toBe(fits.find((d) => d.length === longest));
          expect(newPos - pos).toBe(taken.length);
        } else {
          // nothing fits: the shortest (first on ties), cropped to fill the row exactly
          const shortest = Math.min(...before.map((d) => d.length));
          expect(taken).toBe(before.find((d) => d.length === shortest));
          expect(newPos).toBe(T + 1);
          crops++;
        }
        pos = newPos;
      }
      expect(row[0]).toBe(-1); // every row starts with BOS
      // walk the row: each BOS starts a document whose tokens follow in order from its start
      let d = -1;
      let i = 0;
      for (let t = 0; t < T + 1; t++) {
        if (row[t] === -1) {
          d = -2;
          i = 0;
          continue;
        }
        const doc = Math.floor((row[t] - 1_000_000) / 1000);
        const k = (row[t] - 1_000_000) % 1000;
        if (d === -2) {
          d = doc;
          expect(placed.has(doc), `document ${doc} placed twice`).toBe(false);
          placed.add(doc);
        }
        expect(doc).toBe(d);
        expect(k).toBe(i++);
      }
    }
    expect(crops).toBeGreaterThan(0);
  });

  it('rejects empty documents and rows shorter than 2', () => {
    expect(() => new BestFitPacker(1)).toThrow(/capacity/);
    expect(() => new BestFitPacker(8).add(new Int32Array(0))).toThrow(/empty/);
  });
});

describe('worker batch stream', () => {
  it('packs exactly as the reference loop, across epochs', async () => {
    const B = 3;
    const T = 32;
    const docs = tok.encodeBatch(ds.train, BOS);
    const want = packBatchesRef(docs, B, T, 40, 20);
    const stream = new BatchStream(streamOptions({ B, T, prefetch: 2 }));
    try {
      for (let b = 0; b < want.length; b++) {
        const got = (await stream.next())!;
        expect(got.rows).toBe(B);
        expect(rowsOf(got.data, B, T), `batch ${b}`).toEqual(want[b].rows);
        // targets are the inputs shifted by one
        for (let r = 0; r < B; r++) expect([...got.data.subarray((B + r) * T, (B + r) * T + T - 1)]).toEqual([...got.data.subarray(r * T + 1, (r + 1) * T)]);
        expect(got.epoch).toBe(want[b].epoch);
      }
      expect(want.at(-1)!.epoch).toBeGreaterThan(2); // the comparison crossed epochs
    } finally {
      await stream.close();
    }
  });

  it('one pass: ends, never repeats a document, and is the same every time', async () => {
    const collect = async () => {
      const stream = new BatchStream(streamOptions({ loop: false, B: 4, T: 16, bufferSize: 1000 }));
      const rows: number[][] = [];
      for (let b = await stream.next(); b; b = await stream.next()) {
        expect(b.epoch).toBe(1);
        rows.push(...rowsOf(b.data, b.rows, 16));
      }
      await stream.close();
      return rows;
    };
    const a = await collect();
    expect(a).toEqual(await collect());
    // every row starts with BOS; each document's first tokens appear at most once
    expect(a.every((r) => r[0] === BOS)).toBe(true);
    const ids = a.flatMap((r) => tok.decode(r).match(/doc\d+_\d+ /g) ?? []); // whole ids (a crop may cut one)
    expect(ids.length).toBeGreaterThan(ds.train.length / 2);
    expect(new Set(ids).size).toBe(ids.length);
    // about one pass of the data: all but the documents left when the last row could not be completed
    const totalTokens = tok.encodeBatch(ds.train, BOS).reduce((s, d) => s + d.length, 0);
    expect(a.length * 17).toBeLessThanOrEqual(totalTokens);
    expect(a.length).toBeGreaterThan(ds.train.length / 4);
  });

  it('stops at maxRows, with a short final batch', async () => {
    const stream = new BatchStream(streamOptions({ loop: false, B: 4, T: 16, maxRows: 10 }));
    const sizes: number[] = [];
    for (let b = await stream.next(); b; b = await stream.next()) sizes.push(b.rows);
    await stream.close();
    expect(sizes).toEqual([4, 4, 2]);
  });

  it('a corrupt shard fails next() with an error naming the file', async () => {
    const bad = join(tmp, 'bad.parquet');
    const bytes = readFileSync(join(ds.dir, 'train.parquet'));
    writeFileSync(bad, bytes.subarray(0, bytes.length - 10));
    const stream = new BatchStream(streamOptions({ parts: [{ file: bad }] }));
    await expect(stream.next()).rejects.toThrow(/bad\.parquet: truncated parquet file/);
    await stream.close();
  });
});

const rt = (await testRuntime()) as Runtime;

describe.skipIf(!rt)('makeDataloader (GPU tensors)', () => {
  it('writes each batch into the same [B, T] i32 tensors, equal to the host copies', async () => {
    const B = 4;
    const T = 16;
    const loader = makeDataloader(rt, tok, B, T, 'train', { dataDir: ds.dir, bufferSize: 20 });
    const want = packBatchesRef(tok.encodeBatch(ds.train, BOS), B, T, 30, 20);
    let first = null as null | { inputs: unknown; targets: unknown };
    let b = 0;
    for await (const batch of loader) {
      expect(batch.inputs.shape).toEqual([B, T]);
      expect(batch.inputs.dtype).toBe('i32');
      first ??= { inputs: batch.inputs, targets: batch.targets };
      expect(batch.inputs).toBe(first.inputs); // persistent: no allocation per step
      expect(batch.targets).toBe(first.targets);
      expect([...((await rt.read(batch.inputs, 'raw')) as Int32Array)]).toEqual([...batch.inputsHost]);
      expect([...((await rt.read(batch.targets, 'raw')) as Int32Array)]).toEqual([...batch.targetsHost]);
      expect(rowsOf(Int32Array.from([...batch.inputsHost, ...batch.targetsHost]), B, T)).toEqual(want[b].rows);
      expect(batch.epoch).toBe(want[b].epoch);
      if (++b === 30) break;
    }
    expect(want[29].epoch).toBeGreaterThan(1);
    await loader.close();
    await expect(loader.next()).rejects.toThrow(/after close/);
  });

  it('validation split and a missing data directory', async () => {
    const loader = makeDataloader(rt, tok, 1, 8, 'val', { dataDir: ds.dir });
    const batch = await loader.next();
    expect(batch.inputsHost[0]).toBe(BOS);
    expect(tok.decode(batch.inputsHost.subarray(1, 5))).toMatch(/^doc2_/); // the val documents
    await loader.close();
    expect(() => makeDataloader(rt, tok, 1, 8, 'train', { dataDir: join(tmp, 'nowhere') })).toThrow(/npm run prepare/);
  });
});
