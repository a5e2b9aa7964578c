/**
 * @file Parquet shards with a `text` column: validate, read in row-group chunks, write. Reading
 * and writing go through hyparquet / hyparquet-writer (with hyparquet-compressors for ZSTD and
 * friends: the reference's shards are ZSTD-compressed). Every failure names the file.
 */
import { closeSync, openSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { asyncBufferFromFile, type FileMetaData, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { parquetWriteFile } from 'hyparquet-writer';

/** The column every shard must have (as in the reference's parquet files). */
export const TEXT_COLUMN = 'text';

/** A data file that is missing, truncated or corrupt. The message names it and says what to do. */
export class DataFileError extends Error {
  override name = 'DataFileError';
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`${file}: ${reason}. Delete it and run \`npm run prepare\` again.`);
  }
}

export interface ParquetInfo {
  rows: number;
  /** Rows in each row group, in file order. */
  rowGroups: number[];
  metadata: FileMetaData;
}

const MAGIC = 'PAR1';

/** Checks the magic bytes at both ends and parses the footer; throws DataFileError if either fails. */
export async function parquetInfo(file: string): Promise<ParquetInfo> {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    throw new DataFileError(file, 'file not found');
  }
  if (size < 12) throw new DataFileError(file, `not a parquet file (${size} bytes)`);
  const fd = openSync(file, 'r');
  const head = Buffer.alloc(4);
  const tail = Buffer.alloc(4);
  try {
    readSync(fd, head, 0, 4, 0);
    readSync(fd, tail, 0, 4, size - 4);
  } finally {
    closeSync(fd);
  }
  if (head.toString('latin1') !== MAGIC) throw new DataFileError(file, 'not a parquet file (no PAR1 header)');
  if (tail.toString('latin1') !== MAGIC) throw new DataFileError(file, 'truncated parquet file (no PAR1 footer)');
  let metadata: FileMetaData;
  try {
    metadata = await parquetMetadataAsync(await asyncBufferFromFile(file));
  } catch (e) {
    throw new DataFileError(file, `corrupt parquet footer (${(e as Error).message})`);
  }
  const names = metadata.schema.slice(1).map((s) => s.name);
  if (!names.includes(TEXT_COLUMN)) throw new DataFileError(file, `no '${TEXT_COLUMN}' column (columns: ${names.join(', ')})`);
  const rowGroups = metadata.row_groups.map((g) => Number(g.num_rows));
  return { rows: Number(metadata.num_rows), rowGroups, metadata };
}

export interface ReadRange {
  /** First row (inclusive), default 0. */
  rowStart?: number;
  /** Last row (exclusive), default the end of the file. */
  rowEnd?: number;
}

/**
 * The `text` column of rows [rowStart, rowEnd), one array per row group (the unit the reference
 * reads too), so memory stays bounded for large shards.
 */
export async function* readTextChunks(file: string, range: ReadRange = {}): AsyncGenerator<string[]> {
  const { rows, rowGroups, metadata } = await parquetInfo(file);
  const rowStart = Math.max(0, range.rowStart ?? 0);
  const rowEnd = Math.min(rows, range.rowEnd ?? rows);
  const buffer = await asyncBufferFromFile(file);
  let groupStart = 0;
  for (const n of rowGroups) {
    const lo = Math.max(groupStart, rowStart);
    const hi = Math.min(groupStart + n, rowEnd);
    groupStart += n;
    if (lo >= hi) continue;
    let objects: Record<string, unknown>[];
    try {
      objects = await parquetReadObjects({ file: buffer, metadata, columns: [TEXT_COLUMN], rowStart: lo, rowEnd: hi, compressors });
    } catch (e) {
      throw new DataFileError(file, `corrupt data in rows ${lo}..${hi} (${(e as Error).message})`);
    }
    const texts = objects.map((o, i) => {
      const t = o[TEXT_COLUMN];
      if (typeof t !== 'string') throw new DataFileError(file, `row ${lo + i} has no text`);
      return t;
    });
    yield texts;
  }
}

/**
 * Writes texts as a parquet file with one `text` column (snappy), atomically: to `file.tmp`,
 * then renamed, so a crash never leaves a partial file under the real name.
 */
export function writeTextParquet(file: string, texts: readonly string[], rowGroupSize = 1024): void {
  const tmp = file + '.tmp';
  try {
    parquetWriteFile({
      filename: tmp,
      columnData: [{ name: TEXT_COLUMN, data: texts as string[], type: 'STRING', nullable: false }],
      rowGroupSize,
      codec: 'SNAPPY',
    });
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
