/**
 * @file GPU memory: a pool of storage buffers reused across steps, with byte counts for
 * `peak_vram_mb`, and a pool of staging buffers for readback.
 *
 * Buffers are bucketed by exact size (rounded to 256 bytes): a training step asks for the same
 * sizes every time, so after the first step every request is a hit and nothing is created.
 * Each bucket hands out its lowest-id free buffer, so which buffer a request gets depends only on
 * which are free, not on the order they were released in: identical steps get identical buffers,
 * and the runtime's bind-group cache (keyed by buffer ids) hits every dispatch.
 * Reuse right after release is safe because all work runs in order on one queue.
 */

/** A pooled GPU buffer with a stable id (bind groups are cached by these ids). */
export interface Storage {
  readonly id: number;
  readonly buffer: GPUBuffer;
  /** Bytes actually allocated (>= what tensors use). */
  readonly bytes: number;
  /** Live tensors (including views) that share this storage. */
  refs: number;
}

const ALIGN = 256;

export class BufferPool {
  readonly #device: GPUDevice;
  /** Free buffers per size, sorted by descending id (the lowest id pops first). */
  readonly #free = new Map<number, Storage[]>();
  #nextId = 1;
  /** Bytes held by live tensors now. */
  bytesInUse = 0;
  /** Highest bytesInUse seen (what `peak_vram_mb` reports, like torch's max_memory_allocated). */
  peakBytesInUse = 0;
  /** Bytes of every buffer the pool owns, live or free. */
  bytesReserved = 0;
  /** Buffers created so far: flat after the first training step. */
  created = 0;
  /** Called when buffers are destroyed, so dependent caches (bind groups) can drop them. */
  onDestroy: (() => void) | null = null;

  /**
   * dryRun: account sizes without creating GPU buffers (Runtime's dry-run mode: the memory a step
   * would take, at sizes a software adapter could never run).
   */
  constructor(device: GPUDevice, readonly maxBufferSize: number, readonly dryRun = false) {
    this.#device = device;
  }

  acquire(bytes: number, label?: string): Storage {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    if (size > this.maxBufferSize) {
      throw new RangeError(
        `a tensor of ${(bytes / 2 ** 20).toFixed(1)} MiB${label ? ` (${label})` : ''} exceeds this adapter's ` +
          `largest storage buffer (${(this.maxBufferSize / 2 ** 20).toFixed(0)} MiB); use a smaller DEVICE_BATCH_SIZE ` +
          'or shorter sequences',
      );
    }
    let s = this.#free.get(size)?.pop();
    if (!s && this.dryRun) {
      s = { id: this.#nextId++, buffer: null as unknown as GPUBuffer, bytes: size, refs: 0 };
      this.bytesReserved += size;
      this.created++;
    }
    if (!s) {
      const buffer = this.#device.createBuffer({
        size,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        label,
      });
      s = { id: this.#nextId++, buffer, bytes: size, refs: 0 };
      this.bytesReserved += size;
      this.created++;
    }
    s.refs = 1;
    this.bytesInUse += size;
    if (this.bytesInUse > this.peakBytesInUse) this.peakBytesInUse = this.bytesInUse;
    return s;
  }

  release(s: Storage): void {
    if (s.refs !== 0) throw new Error(`storage ${s.id} released while referenced`);
    this.bytesInUse -= s.bytes;
    let list = this.#free.get(s.bytes);
    if (!list) this.#free.set(s.bytes, (list = []));
    // insert keeping descending ids (binary search; buckets hold tens of buffers)
    let lo = 0, hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].id > s.id) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, s);
  }

  /** Destroys every free buffer (e.g. between benchmark configs). */
  trim(): void {
    for (const list of this.#free.values()) {
      for (const s of list) {
        s.buffer?.destroy();
        this.bytesReserved -= s.bytes;
      }
    }
    this.#free.clear();
    this.onDestroy?.();
  }

  resetPeak(): void {
    this.peakBytesInUse = this.bytesInUse;
  }
}

/** MAP_READ buffers for readback, reused by size. */
export class StagingPool {
  readonly #device: GPUDevice;
  readonly #free = new Map<number, GPUBuffer[]>();

  constructor(device: GPUDevice) {
    this.#device = device;
  }

  acquire(bytes: number): GPUBuffer {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    return (
      this.#free.get(size)?.pop() ??
      this.#device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback' })
    );
  }

  release(b: GPUBuffer): void {
    let list = this.#free.get(b.size);
    if (!list) this.#free.set(b.size, (list = []));
    list.push(b);
  }
}
