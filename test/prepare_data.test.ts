import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNpmInstallLifecycle, parseArgs, prepareData, readManifest, splitParts, Tokenizer, trainTokenizer } from '../prepare.ts';
import { downloadFile } from '../src/data/download.ts';
import { DOC_MAX_CHARS, embeddedCorpus, sourceTexts, splitIntoDocuments } from '../src/data/embedded.ts';
import { DataFileError, parquetInfo, readTextChunks, writeTextParquet } from '../src/data/parquet.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'prepare-data-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs `npx tsx <script> args` with extra env; resolves with exit code and output. */
function runTsx(script: string, args: string[], env: Record<string, string>): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(join(ROOT, 'node_modules/.bin/tsx'), [script, ...args], { cwd: ROOT, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

const docs = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `${tag} ${i}: It's a naïve café — ${'word '.repeat(i % 17)}😀`);

describe('embedded corpus', () => {
  it('cuts texts into documents of at most DOC_MAX_CHARS, at paragraph and sentence boundaries', () => {
    const para = (k: number) => `Paragraph ${k}. ` + 'It was a dark night. '.repeat(20 + k);
    const text = [para(1), para(2), 'Short one.', para(200)].join('\n\n');
    const out = splitIntoDocuments(text, 1000);
    expect(out.every((d) => d.length <= 1000 && d.length > 0)).toBe(true);
    expect(out[0].startsWith('Paragraph 1.')).toBe(true);
    // nothing lost: the words come back in order
    const words = (s: string) => s.replace(/\s+/g, ' ').trim();
    expect(words(out.join(' '))).toBe(words(text));
    // the long paragraph is cut after a full stop
    expect(out.slice(1).every((d) => /[.]$/.test(d))).toBe(true);
  });

  it('is deterministic, web-page sized, with whole texts pinned to validation', () => {
    const texts = sourceTexts();
    expect(texts.length).toBe(372);
    const a = embeddedCorpus(texts);
    const b = embeddedCorpus(texts);
    expect(a.train).toEqual(b.train);
    expect(a.val).toEqual(b.val);
    expect(a.valSources.length).toBe(37);
    const all = [...a.train, ...a.val];
    expect(all.every((d) => d.length <= DOC_MAX_CHARS)).toBe(true);
    expect(all.length).toBeGreaterThan(3000);
    // every validation text is absent from training (no document of a val text leaks)
    const valText = texts.find((t) => t.name === a.valSources[0])!;
    const firstDoc = splitIntoDocuments(valText.text)[0];
    expect(a.val).toContain(firstDoc);
    expect(a.train).not.toContain(firstDoc);
  });
});

describe('parquet shards', () => {
  it('reads back what was written, by row range across row groups', async () => {
    const file = join(tmp, 'rt.parquet');
    const texts = docs(2500, 'doc');
    writeTextParquet(file, texts, 1000);
    expect((await parquetInfo(file)).rowGroups).toEqual([1000, 1000, 500]);
    const got: string[] = [];
    for await (const chunk of readTextChunks(file, { rowStart: 990, rowEnd: 2010 })) got.push(...chunk);
    expect(got).toEqual(texts.slice(990, 2010));
  });

  it('a truncated or corrupt shard is a clear error naming the file', async () => {
    const good = join(tmp, 'good.parquet');
    writeTextParquet(good, docs(3000, 'x'), 1000);
    const bytes = readFileSync(good);
    const truncated = join(tmp, 'truncated.parquet');
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 50));
    await expect(parquetInfo(truncated)).rejects.toThrow(/truncated\.parquet: truncated parquet file.*npm run prepare/);
    const corrupt = join(tmp, 'corrupt.parquet');
    const flipped = Buffer.from(bytes);
    for (let i = 1000; i < 4000; i++) flipped[i] ^= 0x5a;
    writeFileSync(corrupt, flipped);
    const read = async () => {
      for await (const _ of readTextChunks(corrupt)) void _;
    };
    await expect(read()).rejects.toThrow(DataFileError);
    await expect(read()).rejects.toThrow(/corrupt\.parquet: corrupt data/);
    await expect(parquetInfo(join(tmp, 'absent.parquet'))).rejects.toThrow(/absent\.parquet: file not found/);
  });
});

describe('downloads (local HTTP server)', () => {
  const hub = join(tmp, 'hub');
  let server: Server;
  let base = '';
  const hits = new Map<string, number>();

  beforeAll(async () => {
    mkdirSync(hub, { recursive: true });
    for (const i of [0, 1, 6542]) writeTextParquet(join(hub, `shard_${String(i).padStart(5, '0')}.parquet`), docs(300, `shard${i}`));
    writeTextParquet(join(hub, 'tinystories_gpt4_clean.parquet'), Array.from({ length: 20_300 }, (_, i) => `story ${i}`), 5000);
    writeFileSync(join(hub, 'not_parquet.parquet'), 'hello, this is not parquet at all');
    server = createServer((req, res) => {
      const [, mode, name] = (req.url ?? '').split('/');
      const key = `${mode}/${name}`;
      const n = (hits.get(key) ?? 0) + 1;
      hits.set(key, n);
      const path = join(hub, name ?? '');
      if (mode === 'gone' || !name || !existsSync(path)) return void res.writeHead(404).end('not found');
      const body = readFileSync(path);
      if (mode === 'flaky' && n <= 2) return void res.writeHead(503).end('busy');
      if (mode === 'truncate') {
        // promise the whole file, send half, drop the connection
        res.writeHead(200, { 'content-length': body.length });
        res.write(body.subarray(0, body.length >> 1));
        return void setTimeout(() => res.destroy(), 20);
      }
      if (mode === 'short') return void res.writeHead(200).end(body.subarray(0, body.length >> 1)); // chunked, cut short
      res.writeHead(200, { 'content-length': body.length }).end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const validate = async (p: string) => void (await parquetInfo(p));
  const quiet = { attempts: 3, backoffMs: 5, validate, log: () => {} };

  it('downloads to .tmp then renames; a second call finds the file there', async () => {
    const dest = join(tmp, 'dl', 'shard_00000.parquet');
    expect(await downloadFile(`${base}/ok/shard_00000.parquet`, dest, quiet)).toBe('downloaded');
    expect(readFileSync(dest)).toEqual(readFileSync(join(hub, 'shard_00000.parquet')));
    expect(existsSync(dest + '.tmp')).toBe(false);
    expect(await downloadFile(`${base}/ok/shard_00000.parquet`, dest, quiet)).toBe('exists');
  });

  it('retries a server that fails twice, then succeeds', async () => {
    const dest = join(tmp, 'dl', 'flaky.parquet');
    const log: string[] = [];
    expect(await downloadFile(`${base}/flaky/shard_00001.parquet`, dest, { ...quiet, log: (m) => log.push(m) })).toBe('downloaded');
    expect(hits.get('flaky/shard_00001.parquet')).toBe(3);
    expect(log).toHaveLength(2);
    expect(log[0]).toMatch(/Attempt 1\/3 failed for flaky\.parquet: HTTP 503/);
    expect((await parquetInfo(dest)).rows).toBe(300);
  });

  it('a truncating server: every attempt fails, a clear error names the file, no partial file is left', async () => {
    const dir = join(tmp, 'dl-trunc');
    const dest = join(dir, 'shard_00001.parquet');
    const log: string[] = [];
    await expect(downloadFile(`${base}/truncate/shard_00001.parquet`, dest, { ...quiet, log: (m) => log.push(m) })).rejects.toThrow(
      /shard_00001\.parquet: download failed after 3 attempts/,
    );
    expect(log).toHaveLength(3);
    expect(readdirSync(dir)).toEqual([]);
    // cut short without a length: caught by the parquet check instead
    await expect(downloadFile(`${base}/short/shard_00001.parquet`, dest, { ...quiet, attempts: 1 })).rejects.toThrow(/truncated parquet file/);
    await expect(downloadFile(`${base}/ok/not_parquet.parquet`, dest, { ...quiet, attempts: 1 })).rejects.toThrow(/not a parquet file/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('climbmix: shards plus the pinned validation shard, then idempotent', async () => {
    const dir = join(tmp, 'climbmix');
    const log: string[] = [];
    await prepareData('climbmix', { dir, numShards: 2, baseUrl: `${base}/ok`, downloadWorkers: 2, attempts: 2, backoffMs: 5, log: (m) => log.push(m) });
    expect(log[0]).toMatch(/downloading 3 shards \(0 already exist\)/);
    expect(readManifest(dir)).toEqual({ dataset: 'climbmix', train: [{ file: 'shard_00000.parquet' }, { file: 'shard_00001.parquet' }], val: [{ file: 'shard_06542.parquet' }] });
    const requests = [...hits.values()].reduce((a, b) => a + b, 0);
    const again: string[] = [];
    await prepareData('climbmix', { dir, numShards: 2, baseUrl: `${base}/ok`, log: (m) => again.push(m) });
    expect(again).toEqual([`Data: all 3 shards already downloaded at ${dir}`]);
    expect([...hits.values()].reduce((a, b) => a + b, 0)).toBe(requests); // nothing fetched
    expect(splitParts(dir, 'val')[0].file).toBe(join(dir, 'shard_06542.parquet'));
  });

  it('climbmix: a missing validation shard is an error, not a silent train-only dataset', async () => {
    const dir = join(tmp, 'climbmix-noval');
    const log: string[] = [];
    await expect(prepareData('climbmix', { dir, numShards: 1, baseUrl: `${base}/gone`, attempts: 1, backoffMs: 1, log: (m) => log.push(m) })).rejects.toThrow(
      /validation shard shard_06542\.parquet could not be downloaded/,
    );
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp') || f.endsWith('.parquet'))).toEqual([]);
  });

  it('tinystories: one file split by rows (val 10,000..19,999, train 20,000..)', async () => {
    const dir = join(tmp, 'tinystories');
    await prepareData('tinystories', { dir, baseUrl: `${base}/ok`, log: () => {} });
    const val = splitParts(dir, 'val');
    expect(val).toEqual([{ file: join(dir, 'tinystories_gpt4_clean.parquet'), rowStart: 10_000, rowEnd: 20_000 }]);
    const rows: string[] = [];
    for await (const c of readTextChunks(val[0].file, val[0])) rows.push(...c);
    expect(rows.length).toBe(10_000);
    expect(rows[0]).toBe('story 10000');
    const train = splitParts(dir, 'train')[0];
    const first = (await readTextChunks(train.file, train).next()).value as string[];
    expect(first[0]).toBe('story 20000');
  });
});

describe('tokenizer training from a dataset directory', () => {
  it('trains on the training split only, with the requested vocabulary', async () => {
    const dir = join(tmp, 'ds');
    mkdirSync(dir, { recursive: true });
    writeTextParquet(join(dir, 'train.parquet'), docs(200, 'train'));
    writeTextParquet(join(dir, 'val.parquet'), ['VALIDATIONONLY '.repeat(50)]);
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ dataset: 'test', train: [{ file: 'train.parquet' }], val: [{ file: 'val.parquet' }] }));
    const out = join(tmp, 'ds-tok');
    const tok = await trainTokenizer('test', { dataDir: dir, outDir: out, vocabSize: 256 + 60 + 4, log: () => {}, progress: { update() {}, done() {} } as never });
    expect(tok.vocabSize).toBe(320);
    expect(Tokenizer.load(out).dataset).toBe('test');
    // the val text never shaped the merges: it stays in many pieces
    expect(tok.encode('VALIDATIONONLY').length).toBeGreaterThan(5);
  });
});

describe('CLI', () => {
  it('parses the reference flags', () => {
    expect(parseArgs([])).toEqual({ dataset: 'embedded', numShards: 10, downloadWorkers: 8, ifMissing: false });
    expect(parseArgs(['--dataset', 'climbmix', '--num-shards', '-1', '--download-workers=3'])).toEqual({ dataset: 'climbmix', numShards: 6542, downloadWorkers: 3, ifMissing: false });
    expect(parseArgs(['--if-missing']).ifMissing).toBe(true);
    expect(() => parseArgs(['--dataset', 'wikipedia'])).toThrow(/unknown dataset/);
    expect(() => parseArgs(['--num-shards', 'ten'])).toThrow(/integer/);
    expect(() => parseArgs(['--frobnicate'])).toThrow(/unknown argument/);
  });

  it('recognises npm running it as the install-time prepare script', () => {
    expect(isNpmInstallLifecycle({ npm_lifecycle_event: 'prepare', npm_command: 'ci' })).toBe(true);
    expect(isNpmInstallLifecycle({ npm_lifecycle_event: 'prepare', npm_command: 'install' })).toBe(true);
    expect(isNpmInstallLifecycle({ npm_lifecycle_event: 'prepare', npm_command: 'run-script' })).toBe(false);
    expect(isNpmInstallLifecycle({})).toBe(false);
  });

  it('npm run prepare (embedded): builds data and tokenizer, then a second run does nothing; install-time run is one line', async () => {
    const cache = join(tmp, 'cli-cache');
    const first = await runTsx('prepare.ts', ['--if-missing'], { AUTORESEARCH_CACHE: cache }); // nothing there yet: prepares
    expect(first.out).toContain('No prepared data yet');
    expect(first.out).toContain('Done! Ready to train.');
    expect(first.code).toBe(0);
    expect(first.out).toMatch(/Tokenizer: trained in/);
    const tok = Tokenizer.load(join(cache, 'tokenizer'));
    expect(tok.vocabSize).toBe(8192);
    expect(tok.dataset).toBe('embedded');
    const second = await runTsx('prepare.ts', [], { AUTORESEARCH_CACHE: cache });
    expect(second.out).toMatch(/embedded corpus already prepared/);
    // npm run train's first half: silent when prepared, prepares the default corpus when not
    const ready = await runTsx('prepare.ts', ['--if-missing'], { AUTORESEARCH_CACHE: cache });
    expect(ready.code).toBe(0);
    expect(ready.out.split('\n').filter((l) => l.trim() && !/nodedir|Warning/.test(l))).toEqual([]);
    expect(second.out).toMatch(/Tokenizer: already trained on embedded/);
    const install = await runTsx('prepare.ts', [], { AUTORESEARCH_CACHE: join(tmp, 'never'), npm_lifecycle_event: 'prepare', npm_command: 'ci' });
    expect(install.code).toBe(0);
    expect(install.out.trim().split('\n').filter((l) => !/nodedir/.test(l))).toEqual(['autoresearch-ts: data and tokenizer are prepared with `npm run prepare` (skipped during npm install).']);
    expect(existsSync(join(tmp, 'never'))).toBe(false);
  });

  it('train with no prepared cache tells the user to run npm run prepare', async () => {
    const r = await runTsx('train.ts', [], { AUTORESEARCH_CACHE: join(tmp, 'empty-cache') });
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/npm run prepare/);
  });
});
