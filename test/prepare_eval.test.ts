import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CausalityError, evaluateBpb, type LogitsFn, splitParts, Tokenizer } from '../prepare.ts';
import { BatchStream } from '../src/data/loader.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { causalDiff, causalDiffRef, sumChunk, sumChunkRef, tokenNats, tokenNatsRef } from '../src/ops/eval_bpb.ts';
import { Rng } from '../src/util/rng.ts';
import { makeTinyDataset } from './prepare_fixtures.ts';
import { expectClose, testRuntime } from './setup.ts';

const rt = (await testRuntime()) as Runtime;
const rng = new Rng(21);
const tmp = mkdtempSync(join(tmpdir(), 'prepare-eval-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(!rt)('eval_bpb kernels', () => {
  // awkward shapes: V = 1, odd V, V around and above the workgroup size; one row, odd row counts
  for (const [rows, V] of [[1, 1], [5, 7], [33, 256], [3, 1000], [2, 2049]]) {
    it(`tokenNats and sumChunk match the references for ${rows} rows of V = ${V}, at offsets`, async () => {
      const logits = rng.uniformArray(rows * V + 3, -30, 30); // large logits: the online max must hold
      const targets = Int32Array.from({ length: rows + 2 }, () => rng.int(V));
      const bytesOf = Int32Array.from({ length: V }, (_, i) => (i % 5 === 4 ? 0 : 1 + (i % 4))); // some 0-byte "specials"
      const L = rt.view(rt.fromArray(logits, [rows * V + 3]), [rows, V], 3);
      const Y = rt.view(rt.fromArray(targets, [rows + 2], 'i32'), [rows], 2);
      const TB = rt.fromArray(bytesOf, [V], 'i32');
      const nats = rt.empty([rows + 4], 'f32');
      const bytes = rt.empty([rows + 4], 'u32');
      tokenNats(rt, L, Y, TB, nats, bytes);
      const want = tokenNatsRef(logits.subarray(3), targets.subarray(2), bytesOf, V);
      const gotNats = (await rt.read(nats)).subarray(0, rows);
      const gotBytes = ((await rt.read(bytes, 'raw')) as Uint32Array).subarray(0, rows);
      expectClose(gotNats, want.nats, { atol: 1e-4, rtol: 1e-5, label: 'nats' });
      expect([...gotBytes]).toEqual([...want.bytes]);
      expect(want.nats.some((v, i) => v === 0 && want.bytes[i] === 0) || want.bytes.every((b) => b > 0)).toBe(true);

      const chunkNats = rt.zeros([3], 'f32');
      const chunkBytes = rt.zeros([3], 'u32');
      sumChunk(rt, nats, bytes, rows, chunkNats, chunkBytes, 2);
      const [s, b] = sumChunkRef(want.nats, want.bytes, rows);
      const cn = await rt.read(chunkNats);
      expectClose(cn, [0, 0, s], { atol: 1e-3, rtol: 1e-5, label: 'chunk nats' });
      expect([...((await rt.read(chunkBytes, 'raw')) as Uint32Array)]).toEqual([0, 0, b]);
    });
  }

  it('causalDiff matches the reference, zero at and after each bound', async () => {
    const [rows, T, V] = [3, 5, 300];
    const a = rng.uniformArray(rows * T * V);
    const b = Float32Array.from(a, (v, i) => (i % 7 === 0 ? v + (i % 13) * 0.01 : v));
    const bound = Int32Array.of(0, 3, 5);
    const d = causalDiff(rt, rt.fromArray(a, [rows, T, V]), rt.fromArray(b, [rows, T, V]), rt.fromArray(bound, [rows], 'i32'));
    const got = await rt.read(d);
    const want = causalDiffRef(a, b, bound, rows, T, V);
    expectClose(got, want, { atol: 1e-6 });
    expect(Math.max(...want)).toBeGreaterThan(0.05);
  });

  it('rejects mismatched shapes, naming them', () => {
    const L = rt.zeros([4, 10]);
    expect(() => tokenNats(rt, L, rt.zeros([3], 'i32'), rt.zeros([10], 'i32'), rt.zeros([4]), rt.zeros([4], 'u32'))).toThrow(/tokenNats: targets .*\[3\]:i32 must be i32 with 4 elements/);
    expect(() => causalDiff(rt, rt.zeros([1, 2, 3]), rt.zeros([1, 3, 2]), rt.zeros([1], 'i32'))).toThrow(/causalDiff/);
  });
});

// ---------------------------------------------------------------------------------------------
// evaluateBpb with tiny models built from an inline kernel

const MODEL_WGSL = `
struct Params { n: u32, seq: u32, vocab: u32, mode: u32 }
@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
// logits[r, t, v] = table[x_t, v] + 0.5 table[x_{t-1}, v]; mode 1 adds table[x_{t+1}, v] (looks ahead);
// mode 2 adds 0.01 · Σ_t' x_t' over the row (sees the whole row)
@compute @workgroup_size(64)
fn toy_logits(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= params.n) { return; }
  let v = i % params.vocab;
  let pos = i / params.vocab;
  let t = pos % params.seq;
  let row = pos / params.seq;
  var y = table[u32(ids[pos]) * params.vocab + v];
  if (t > 0u) { y += 0.5 * table[u32(ids[pos - 1u]) * params.vocab + v]; }
  if (params.mode == 1u && t + 1u < params.seq) { y += table[u32(ids[pos + 1u]) * params.vocab + v]; }
  if (params.mode == 2u) {
    var s = 0.0;
    for (var k = 0u; k < params.seq; k++) { s += f32(ids[row * params.seq + k]); }
    y += 0.01 * s;
  }
  out[i] = y;
}`;

function toyModel(table: Tensor, V: number, mode: 0 | 1 | 2, seen?: number[]): LogitsFn {
  return (inputs: Tensor) => {
    const [b, T] = inputs.shape;
    seen?.push(b);
    const out = rt.empty([b, T, V], 'f32');
    const k = rt.kernel({ source: { code: MODEL_WGSL }, entry: 'toy_logits' });
    rt.dispatch1d(k, [inputs, table, out], { n: b * T * V, seq: T, vocab: V, mode }, Math.ceil((b * T * V) / 64));
    return out;
  };
}

function toyLogitsRef(x: Int32Array, T: number, V: number, table: Float32Array): Float32Array {
  const out = new Float32Array(x.length * V);
  for (let p = 0; p < x.length; p++) {
    for (let v = 0; v < V; v++) out[p * V + v] = table[x[p] * V + v] + (p % T > 0 ? 0.5 * table[x[p - 1] * V + v] : 0);
  }
  return out;
}

/** The validation rows evaluateBpb scores (one pass, at most maxRows), packed by the same loader. */
async function valRows(dir: string, tok: ReturnType<typeof makeTinyDataset>['tokenizer'], T: number, maxRows?: number): Promise<{ x: Int32Array; y: Int32Array; rows: number }> {
  const stream = new BatchStream({ parts: splitParts(dir, 'val'), merges: tok.merges as [number, number][], pattern: tok.pattern, bosTokenId: tok.bosTokenId, B: 1, T, loop: false, maxRows });
  const xs: number[] = [];
  const ys: number[] = [];
  let rows = 0;
  for (let b = await stream.next(); b; b = await stream.next()) {
    xs.push(...b.data.subarray(0, T));
    ys.push(...b.data.subarray(T));
    rows++;
  }
  await stream.close();
  return { x: Int32Array.from(xs), y: Int32Array.from(ys), rows };
}

describe.skipIf(!rt)('evaluateBpb', () => {
  const ds = makeTinyDataset(join(tmp, 'tiny'), { valDocs: 40, maxWords: 20 });
  const tok = ds.tokenizer;
  const V = tok.vocabSize;
  const T = 16;
  const table = rt.keep(rt.fromArray(rng.uniformArray(V * V, -3, 3), [V, V]));
  const tableHost = async () => rt.read(table);
  const opts = { seqLen: T, dataDir: ds.dir, resultFd: null, log: () => {} };

  it('uniform logits give log2(V) · tokens / bytes', async () => {
    const uniform: LogitsFn = (x) => rt.zeros([x.dim(0), x.dim(1), V]);
    const bpb = await evaluateBpb(rt, uniform, tok, 3, { ...opts, evalTokens: 9 * T, chunkRows: 2 });
    const { y } = await valRows(ds.dir, tok, T, 9);
    let counted = 0;
    let bytes = 0;
    for (const t of y) {
      if (tok.tokenBytes[t] > 0) counted++;
      bytes += tok.tokenBytes[t];
    }
    expect(counted).toBeLessThan(y.length); // some targets were BOS (0 bytes) and left out
    expect(bpb).toBeCloseTo((Math.log2(V) * counted) / bytes, 6);
  });

  it('a causal model scores exactly the CPU reference over the same rows, in chunks with a short last one', async () => {
    const seen: number[] = [];
    const bpb = await evaluateBpb(rt, toyModel(table, V, 0, seen), tok, 3, { ...opts, evalTokens: 9 * T, chunkRows: 2 });
    expect(seen).toEqual([2, 2, 2, 2, 2, 1]); // first chunk twice (causality probe), then 2, 2, 2, 1 rows
    const { x, y, rows } = await valRows(ds.dir, tok, T, 9);
    expect(rows).toBe(9);
    const { nats, bytes } = tokenNatsRef(toyLogitsRef(x, T, V, await tableHost()), y, tok.tokenBytes, V);
    const [n, b] = sumChunkRef(nats, bytes, y.length);
    expect(bpb).toBeCloseTo(n / (Math.LN2 * b), 5);
  });

  it('a model that looks ahead gets an error, not a score', async () => {
    await expect(evaluateBpb(rt, toyModel(table, V, 1), tok, 2, { ...opts, evalTokens: 4 * T })).rejects.toThrow(CausalityError);
    await expect(evaluateBpb(rt, toyModel(table, V, 2), tok, 2, { ...opts, evalTokens: 4 * T })).rejects.toThrow(/not causal/);
  });

  it('scores exactly one pass when the split is smaller than EVAL_TOKENS, the same every time', async () => {
    const seen: number[] = [];
    const bpb1 = await evaluateBpb(rt, toyModel(table, V, 0, seen), tok, 4, { ...opts, evalTokens: 1e9 });
    const bpb2 = await evaluateBpb(rt, toyModel(table, V, 0), tok, 4, { ...opts, evalTokens: 1e9 });
    expect(bpb2).toBe(bpb1);
    const { x, y, rows } = await valRows(ds.dir, tok, T);
    expect(seen.reduce((a, b) => a + b, 0) - seen[0]).toBe(rows); // every row once (+ the probe of chunk 1)
    const { nats, bytes } = tokenNatsRef(toyLogitsRef(x, T, V, await tableHost()), y, tok.tokenBytes, V);
    const [n, b] = sumChunkRef(nats, bytes, y.length);
    expect(bpb1).toBeCloseTo(n / (Math.LN2 * b), 5);
  });

  it('writes {"val_bpb", "peak_vram_mb"} to the result descriptor', async () => {
    const path = join(tmp, 'result.jsonl');
    const fd = openSync(path, 'w');
    try {
      const bpb = await evaluateBpb(rt, toyModel(table, V, 0), tok, 2, { ...opts, evalTokens: 4 * T, resultFd: fd });
      closeSync(fd);
      const lines = readFileSync(path, 'utf8').trim().split('\n');
      expect(lines).toHaveLength(1);
      const r = JSON.parse(lines[0]);
      expect(Object.keys(r)).toEqual(['val_bpb', 'peak_vram_mb']);
      expect(r.val_bpb).toBe(bpb);
      expect(r.peak_vram_mb).toBeCloseTo(rt.pool.peakBytesInUse / 1024 / 1024, 6);
      expect(r.peak_vram_mb).toBeGreaterThan(0);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  });

  it('in a research run (AUTORESEARCH_RESULT_FD set) fixes the metric: no options, token bytes from disk', async () => {
    // a cache with a dataset big enough for full MAX_SEQ_LEN rows, and its tokenizer saved
    const cache = join(tmp, 'research-cache');
    const big = makeTinyDataset(join(cache, 'data', 'tiny'), { trainDocs: 20, valDocs: 400, maxWords: 40 });
    big.tokenizer.save(join(cache, 'tokenizer'));
    const Vb = big.tokenizer.vocabSize;
    const tableB = rt.keep(rt.fromArray(rng.uniformArray(Vb * Vb, -3, 3), [Vb, Vb]));
    const path = join(tmp, 'research-result.jsonl');
    const fd = openSync(path, 'w');
    const saved = process.env.AUTORESEARCH_CACHE;
    process.env.AUTORESEARCH_CACHE = cache;
    process.env.AUTORESEARCH_RESULT_FD = String(fd);
    try {
      const model = toyModel(tableB, Vb, 0);
      await expect(evaluateBpb(rt, model, big.tokenizer, 2, { evalTokens: 4 * T })).rejects.toThrow(/evalTokens cannot be set during research runs/);
      await expect(evaluateBpb(rt, model, big.tokenizer, 2, { dataDir: ds.dir })).rejects.toThrow(/dataDir cannot be set/);
      const honest = await evaluateBpb(rt, model, big.tokenizer, 2, { log: () => {} });
      // train.ts holds the tokenizer object: inflating its byte counts must not lower the score
      const tampered = new Tokenizer(big.tokenizer.merges as [number, number][], { dataset: 'tiny' });
      tampered.tokenBytes.fill(1000);
      const gamed = await evaluateBpb(rt, model, tampered, 2, { log: () => {} });
      expect(gamed).toBe(honest);
      expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(2);
    } finally {
      closeSync(fd);
      delete process.env.AUTORESEARCH_RESULT_FD;
      if (saved === undefined) delete process.env.AUTORESEARCH_CACHE;
      else process.env.AUTORESEARCH_CACHE = saved;
      rt.release(tableB);
    }
  });

  it('scores the same rows whatever batch size the model asks for', async () => {
    const model = toyModel(table, V, 0);
    const rows = 6; // the old steps·B rule gave 6 rows at B = 2 but 4 at B = 4
    const a = await evaluateBpb(rt, model, tok, 2, { ...opts, evalTokens: rows * T });
    const b = await evaluateBpb(rt, model, tok, 4, { ...opts, evalTokens: rows * T });
    expect(b).toBeCloseTo(a, 5);
  });

  it('rejects logits of the wrong shape, and eval sizes that make no row', async () => {
    const wrong: LogitsFn = (x) => rt.zeros([x.dim(0), x.dim(1), V - 1]);
    await expect(evaluateBpb(rt, wrong, tok, 2, { ...opts, evalTokens: 2 * T })).rejects.toThrow(/returned .*\[2,16,\d+\]:f32 for inputs \[2, 16\]; expected f32 logits \[2, 16, \d+\]/);
    await expect(evaluateBpb(rt, toyModel(table, V, 0), tok, 4, { ...opts, evalTokens: T - 1 })).rejects.toThrow(/make no row/);
    // a model that hands back one persistent buffer would let its second answer overwrite the first
    const persistent = rt.keep(rt.zeros([2, T, V]));
    await expect(evaluateBpb(rt, () => persistent, tok, 2, { ...opts, evalTokens: 2 * T })).rejects.toThrow(/same logits buffer twice/);
  });
});
