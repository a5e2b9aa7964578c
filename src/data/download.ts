/**
 * @file Downloads with retries: each file streams to `<dest>.tmp`, is checked (length, then a
 * caller's validator such as the parquet footer), and only then renamed to `dest`; a failed
 * attempt removes the partial file and retries after an exponential backoff (the reference:
 * 5 attempts, 2^attempt seconds). Several files download in parallel behind one progress line.
 */
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface DownloadOptions {
  /** Attempts per file (default 5, as the reference). */
  attempts?: number;
  /** Sleep before retry k (1-based) is backoffMs · 2^(k-1) (default 2000 ms: 2 s, 4 s, 8 s, …). */
  backoffMs?: number;
  /** Abort an attempt when no byte arrives for this long (default 30 s). */
  idleTimeoutMs?: number;
  /** Checks the downloaded `.tmp` file before it is renamed; throw to reject it (the attempt is retried). */
  validate?: (tmpPath: string) => Promise<void> | void;
  /** Bytes received so far in this attempt (called often). */
  onBytes?: (delta: number) => void;
  /** Messages (attempt failures). */
  log?: (msg: string) => void;
}

/** Every attempt to fetch `url` failed; no partial file was left behind. */
export class DownloadError extends Error {
  override name = 'DownloadError';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fileName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

async function attemptOnce(url: string, tmp: string, o: DownloadOptions): Promise<void> {
  const controller = new AbortController();
  const idleMs = o.idleTimeoutMs ?? 30_000;
  let idle = setTimeout(() => controller.abort(new Error(`no data for ${idleMs} ms`)), idleMs);
  const touch = () => {
    clearTimeout(idle);
    idle = setTimeout(() => controller.abort(new Error(`no data for ${idleMs} ms`)), idleMs);
  };
  try {
    const res = await fetch(url, { signal: controller.signal, redirect: 'follow' });
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => {}); // free the connection
      throw new Error(`HTTP ${res.status} ${res.statusText}`);
    }
    const expected = Number(res.headers.get('content-length') ?? NaN);
    let received = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        received += chunk.length;
        touch();
        o.onBytes?.(chunk.length);
        done(null, chunk);
      },
    });
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), counter, createWriteStream(tmp));
    if (Number.isFinite(expected) && received !== expected) {
      throw new Error(`truncated: received ${received} of ${expected} bytes`);
    }
    await o.validate?.(tmp);
  } finally {
    clearTimeout(idle);
  }
}

/**
 * Downloads url to dest unless dest exists. Returns 'exists' or 'downloaded'; throws a
 * DownloadError naming the file after the last failed attempt.
 */
export async function downloadFile(url: string, dest: string, o: DownloadOptions = {}): Promise<'exists' | 'downloaded'> {
  if (existsSync(dest)) return 'exists';
  mkdirSync(dirname(dest), { recursive: true });
  const attempts = o.attempts ?? 5;
  const tmp = dest + '.tmp';
  let last = '';
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      await attemptOnce(url, tmp, o);
      renameSync(tmp, dest);
      return 'downloaded';
    } catch (e) {
      last = (e as Error).message || String(e);
      const cause = (e as { cause?: Error }).cause?.message;
      if (cause && !last.includes(cause)) last += ` (${cause})`;
      o.log?.(`  Attempt ${attempt}/${attempts} failed for ${fileName(dest)}: ${last}`);
      rmSync(tmp, { force: true });
      rmSync(dest, { force: true });
      if (attempt < attempts) await sleep((o.backoffMs ?? 2000) * 2 ** (attempt - 1));
    }
  }
  throw new DownloadError(`${fileName(dest)}: download failed after ${attempts} attempts from ${url}: ${last}`);
}

/** One `\r`-rewritten status line on a terminal; occasional plain lines in a log. */
export class ProgressLine {
  readonly #stream: NodeJS.WriteStream;
  readonly #tty: boolean;
  #lastPlain = 0;
  #lastDraw = 0;
  #shown = false;

  constructor(stream: NodeJS.WriteStream = process.stderr) {
    this.#stream = stream;
    this.#tty = Boolean(stream.isTTY);
  }

  /** Shows `text`; `force` draws even if one was drawn very recently. */
  update(text: string, force = false): void {
    const now = performance.now();
    if (this.#tty) {
      if (!force && now - this.#lastDraw < 100) return;
      this.#lastDraw = now;
      this.#stream.write(`\r${text}\x1b[K`);
      this.#shown = true;
    } else if (force || now - this.#lastPlain > 10_000) {
      this.#lastPlain = now;
      this.#stream.write(text + '\n');
    }
  }

  /** Ends the line (a newline on a terminal). */
  done(text?: string): void {
    if (text !== undefined) this.update(text, true);
    if (this.#tty && this.#shown) this.#stream.write('\n');
    this.#shown = false;
  }
}

function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e3).toFixed(0)} kB`;
}

export interface DownloadJob {
  url: string;
  dest: string;
}

export interface DownloadAllResult {
  downloaded: string[];
  existed: string[];
  failed: { dest: string; error: string }[];
}

/**
 * Downloads jobs with `workers` in parallel, one progress line for all. Failures are collected
 * (and logged), not thrown, so one bad file does not cancel the others.
 */
export async function downloadAll(jobs: readonly DownloadJob[], o: DownloadOptions & { workers?: number; progress?: ProgressLine } = {}): Promise<DownloadAllResult> {
  const result: DownloadAllResult = { downloaded: [], existed: [], failed: [] };
  const progress = o.progress ?? new ProgressLine();
  let next = 0;
  let finished = 0;
  let bytes = 0;
  const t0 = performance.now();
  const draw = (force = false) => {
    const s = (performance.now() - t0) / 1000;
    const width = 24;
    const filled = Math.round((width * finished) / Math.max(1, jobs.length));
    progress.update(
      `  [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${finished}/${jobs.length} files | ${formatBytes(bytes)} | ${formatBytes(bytes / Math.max(s, 1e-3))}/s`,
      force,
    );
  };
  const log = (msg: string) => {
    progress.done();
    (o.log ?? console.log)(msg);
  };
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      try {
        const r = await downloadFile(job.url, job.dest, {
          ...o,
          log,
          onBytes: (d) => {
            bytes += d;
            o.onBytes?.(d);
            draw();
          },
        });
        (r === 'exists' ? result.existed : result.downloaded).push(job.dest);
      } catch (e) {
        result.failed.push({ dest: job.dest, error: (e as Error).message });
        log(`  ${(e as Error).message}`);
      }
      finished++;
      draw(true);
    }
  };
  const n = Math.max(1, Math.min(o.workers ?? 8, jobs.length));
  await Promise.all(Array.from({ length: n }, worker));
  progress.done();
  return result;
}
