/**
 * @file The runtime every op runs through: kernels (compiled once, cached), tensors (pooled
 * memory, scopes), dispatch (one open compute pass that a whole step records into), readback,
 * and GPU errors turned into exceptions.
 *
 * Dispatch path, per call: the kernel's pipeline (cached) + a bind group for the tensors' buffers
 * (cached by buffer ids; the pool hands out the same buffers every step, so these hit) + the
 * kernel's Params written into a CPU-side uniform arena and bound with a dynamic offset. `flush()`
 * uploads the arena with one writeBuffer and submits. Nothing is created per dispatch once warm.
 */
import { BufferPool, StagingPool } from './buffers.ts';
import { acquireGpu, type AcquireOptions, type Gpu } from './device.ts';
import { DTYPE_BYTES, type DType, numel, Tensor } from './tensor.ts';
import { type Defines, loadSource, type Reflection } from './wgsl.ts';

export interface KernelSpec {
  /** A file in kernels/ (e.g. 'rms_norm.wgsl') or inline WGSL (`{ code }`, for train.ts's own ops). */
  source: string | { code: string };
  /** Entry point, snake_case `<op>_fwd` / `<op>_bwd`. */
  entry: string;
  /** WGSL `override` constants: workgroup and tile sizes. */
  overrides?: Record<string, number>;
  /** Preprocessor defines (#if NAME): variants that `override` can't express. */
  defines?: Defines;
  /** Storage element type `T` (default f32). */
  dtype?: 'f32' | 'f16';
}

/** A compiled compute pipeline plus what the host needs to feed it. */
export class Kernel {
  readonly bindGroups = new Map<string, GPUBindGroup>();
  constructor(
    /** stem + entry + overrides, e.g. `rms_norm.rms_norm_fwd/WG=256`: shows up in Dawn's messages. */
    readonly label: string,
    readonly pipeline: GPUComputePipeline,
    readonly layout: GPUBindGroupLayout,
    readonly reflection: Reflection,
    readonly overrides: Readonly<Record<string, number>>,
  ) {}
}

/** A GPU error (validation, compilation, out of memory, device lost) with Dawn's message. */
export class GpuError extends Error {
  override name = 'GpuError';
}

export class GpuOutOfMemoryError extends GpuError {
  override name = 'GpuOutOfMemoryError';
}

/** Slot size for one dispatch's Params in the uniform arena (>= minUniformBufferOffsetAlignment). */
const PARAMS_SLOT = 256;
const ARENA_SLOTS = 8192;
/** Largest workgroup count per grid dimension (the WebGPU default limit). */
export const MAX_GRID = 65535;
/** Bind group cache entries per kernel before the cache is dropped (a safety valve, never hit in training). */
const BIND_GROUP_CACHE_MAX = 8192;

export interface TimedDispatch {
  label: string;
  ms: number;
}

type Returned = Tensor | readonly unknown[] | Record<string, unknown> | unknown;

export class Runtime {
  readonly device: GPUDevice;
  readonly pool: BufferPool;
  readonly limits: GPUSupportedLimits;
  readonly f16: boolean;
  /**
   * Reductions use subgroup operations (kernels' SUBGROUPS variants) where the device has
   * 'subgroups'; tests set it false to run the workgroup-memory fallback on the same adapter.
   */
  subgroups: boolean;
  readonly #staging: StagingPool;
  readonly #kernels = new Map<string, Kernel>();
  readonly #paramsLayout: GPUBindGroupLayout;
  readonly #arenaBuffer: GPUBuffer;
  readonly #arenaBindGroup: GPUBindGroup;
  readonly #arena = new ArrayBuffer(PARAMS_SLOT * ARENA_SLOTS);
  readonly #arenaU32 = new Uint32Array(this.#arena);
  readonly #arenaI32 = new Int32Array(this.#arena);
  readonly #arenaF32 = new Float32Array(this.#arena);
  readonly #dynamicOffset = [0];
  #slots = 0;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  readonly #scopes: Tensor[][] = [];
  readonly #errors: GPUError[] = [];
  #lost: GPUDeviceLostInfo | null = null;
  readonly #lostPromise: Promise<GPUDeviceLostInfo>;
  /** Dispatches recorded since creation (for host-overhead accounting in benches). */
  dispatches = 0;
  #profile: { querySet: GPUQuerySet; labels: string[]; results: Promise<TimedDispatch[]>[] } | null = null;

  /**
   * dryRun: a runtime that records nothing — kernels are reflected but not compiled, dispatches and
   * uploads are dropped, the pool hands out sizes without GPU buffers (and without the adapter's
   * per-buffer limit) and reading back throws. Every allocation and release happens exactly as in a
   * real run, so `pool.peakBytesInUse` after a dry training step is the memory that step takes
   * (bench step suite: the reference configuration's figure on an adapter too slow to run it).
   */
  private constructor(readonly gpu: Gpu, readonly dryRun = false) {
    const device = gpu.device;
    this.device = device;
    this.limits = device.limits;
    this.f16 = device.features.has('shader-f16');
    this.subgroups = device.features.has('subgroups');
    const maxBuffer = dryRun ? Infinity : Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    this.pool = new BufferPool(device, maxBuffer, dryRun);
    this.pool.onDestroy = () => {
      for (const k of this.#kernels.values()) k.bindGroups.clear();
    };
    this.#staging = new StagingPool(device);
    this.#paramsLayout = device.createBindGroupLayout({
      label: 'params',
      entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true } }],
    });
    this.#arenaBuffer = device.createBuffer({
      label: 'params-arena',
      size: this.#arena.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.#arenaBindGroup = device.createBindGroup({
      layout: this.#paramsLayout,
      entries: [{ binding: 0, resource: { buffer: this.#arenaBuffer, size: PARAMS_SLOT } }],
    });
    device.addEventListener('uncapturederror', (ev) => {
      this.#errors.push((ev as GPUUncapturedErrorEvent).error);
    });
    this.#lostPromise = device.lost.then((info) => (this.#lost = info));
  }

  /** Acquires an adapter (see device.ts) and builds a runtime on it. */
  static async create(options: AcquireOptions = {}): Promise<Runtime> {
    return new Runtime(await acquireGpu(options));
  }

  /** Builds a runtime on an existing device (tests share one per file). */
  static fromGpu(gpu: Gpu, options: { dryRun?: boolean } = {}): Runtime {
    return new Runtime(gpu, !!options.dryRun);
  }

  /** What the runtime has created so far: flat across training steps once the first has run. */
  stats(): { pipelines: number; bindGroups: number; buffersCreated: number; bytesInUse: number; dispatches: number } {
    let bindGroups = 0;
    for (const k of this.#kernels.values()) bindGroups += k.bindGroups.size;
    return { pipelines: this.#kernels.size, bindGroups, buffersCreated: this.pool.created, bytesInUse: this.pool.bytesInUse, dispatches: this.dispatches };
  }

  // ---------------------------------------------------------------------------------------------
  // Kernels

  /** The compiled kernel for a spec; compiled on first use, then cached. */
  kernel(spec: KernelSpec): Kernel {
    const dtype = spec.dtype ?? 'f32';
    const src = typeof spec.source === 'string' ? spec.source : spec.source.code;
    const key = `${src}\u0000${spec.entry}\u0000${dtype}\u0000${JSON.stringify(spec.defines ?? {})}\u0000${JSON.stringify(spec.overrides ?? {})}`;
    const hit = this.#kernels.get(key);
    if (hit) return hit;
    if (dtype === 'f16' && !this.f16 && !this.dryRun) throw new GpuError(`${spec.entry}: f16 requested but this adapter has no shader-f16`);
    if (spec.defines?.SUBGROUPS && !this.device.features.has('subgroups') && !this.dryRun) throw new GpuError(`${spec.entry}: subgroups requested but this adapter has no 'subgroups' feature`);
    const { code, reflection } = loadSource(spec.source, spec.defines ?? {}, dtype);
    if (this.dryRun) {
      const dry = new Kernel(`${spec.entry} (dry run)`, null as unknown as GPUComputePipeline, null as unknown as GPUBindGroupLayout, reflection, { ...(spec.overrides ?? {}) });
      this.#kernels.set(key, dry);
      return dry;
    }
    const stem = typeof spec.source === 'string' ? spec.source.replace(/\.wgsl$/, '') : 'inline';
    const ov = Object.entries(spec.overrides ?? {}).map(([k, v]) => `${k}=${v}`);
    const defs = Object.entries(spec.defines ?? {}).filter(([, v]) => v !== false).map(([k]) => k);
    const label = `${stem}.${spec.entry}${dtype === 'f16' ? ':f16' : ''}${[...defs, ...ov].length ? '/' + [...defs, ...ov].join(',') : ''}`;
    const module = this.device.createShaderModule({ label, code });
    const layout = this.device.createBindGroupLayout({
      label,
      entries: reflection.storage.map((s) => ({
        binding: s.binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: s.access === 'read' ? ('read-only-storage' as const) : ('storage' as const) },
      })),
    });
    const pipeline = this.device.createComputePipeline({
      label,
      layout: this.device.createPipelineLayout({
        label,
        bindGroupLayouts: reflection.params ? [layout, this.#paramsLayout] : [layout],
      }),
      compute: { module, entryPoint: spec.entry, constants: spec.overrides },
    });
    const kernel = new Kernel(label, pipeline, layout, reflection, { ...(spec.overrides ?? {}) });
    this.#kernels.set(key, kernel);
    return kernel;
  }

  /**
   * Compiles a kernel and waits for Dawn's verdict, so a WGSL error throws here with the
   * kernel's name and Dawn's message (use at setup; `kernel()` alone reports at the next flush).
   */
  async compile(spec: KernelSpec): Promise<Kernel> {
    this.device.pushErrorScope('validation');
    const k = this.kernel(spec);
    const err = await this.device.popErrorScope();
    if (err) throw new GpuError(`kernel ${k.label} failed to compile:\n${err.message}`);
    return k;
  }

  // ---------------------------------------------------------------------------------------------
  // Dispatch

  #ensurePass(): GPUComputePassEncoder {
    if (this.#pass) return this.#pass;
    this.#encoder ??= this.device.createCommandEncoder();
    this.#pass = this.#encoder.beginComputePass();
    return this.#pass;
  }

  #bindGroup(k: Kernel, tensors: readonly Tensor[]): GPUBindGroup {
    const n = k.reflection.storage.length;
    if (tensors.length !== n) {
      throw new Error(`${k.label}: expected ${n} tensors (${k.reflection.storage.map((s) => s.name).join(', ')}), got ${tensors.length}`);
    }
    let key = '';
    for (let i = 0; i < n; i++) key += tensors[i].storage.id + ',';
    let bg = k.bindGroups.get(key);
    if (!bg) {
      for (let i = 0; i < n; i++) {
        if (k.reflection.storage[i].access === 'read_write') {
          for (let j = 0; j < n; j++) {
            if (j !== i && tensors[j].storage === tensors[i].storage) {
              throw new Error(`${k.label}: '${k.reflection.storage[i].name}' is written and shares a buffer with '${k.reflection.storage[j].name}'`);
            }
          }
        }
      }
      if (k.bindGroups.size >= BIND_GROUP_CACHE_MAX) k.bindGroups.clear();
      bg = this.device.createBindGroup({
        label: k.label,
        layout: k.layout,
        entries: tensors.map((t, i) => ({ binding: i, resource: { buffer: t.buffer } })),
      });
      k.bindGroups.set(key, bg);
    } else {
      for (let i = 0; i < n; i++) if (tensors[i].released) throw new Error(`${k.label}: ${tensors[i].describe()} used after release`);
    }
    return bg;
  }

  #writeParams(k: Kernel, params: Readonly<Record<string, number>> | null): number {
    const fields = k.reflection.params;
    if (!fields) return -1;
    if (!params) throw new Error(`${k.label}: Params required (${fields.map((f) => f.name).join(', ')})`);
    if (this.#slots === ARENA_SLOTS) this.flush();
    const base = (this.#slots++ * PARAMS_SLOT) >> 2;
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i];
      const v = params[f.name];
      if (v === undefined) throw new Error(`${k.label}: Params.${f.name} missing`);
      const at = base + (f.offset >> 2);
      if (f.type === 'f32') this.#arenaF32[at] = v;
      else if (f.type === 'u32') this.#arenaU32[at] = v;
      else this.#arenaI32[at] = v;
    }
    return base << 2;
  }

  /**
   * Records one dispatch: `tensors` in binding order, `params` by Params field name, grid in
   * workgroups. Nothing runs until `flush()` (or a readback, which flushes).
   */
  dispatch(k: Kernel, tensors: readonly Tensor[], params: Readonly<Record<string, number>> | null, x: number, y = 1, z = 1): void {
    if (x === 0 || y === 0 || z === 0) return;
    if (x > MAX_GRID || y > MAX_GRID || z > MAX_GRID) {
      throw new RangeError(`${k.label}: grid (${x}, ${y}, ${z}) exceeds ${MAX_GRID} workgroups per dimension; use grid1d()`);
    }
    if (this.dryRun) {
      const n = k.reflection.storage.length;
      if (tensors.length !== n) throw new Error(`${k.label}: expected ${n} tensors, got ${tensors.length}`);
      for (const t of tensors) if (t.released) throw new Error(`${k.label}: ${t.describe()} used after release`);
      this.dispatches++;
      return;
    }
    const bg = this.#bindGroup(k, tensors);
    const offset = this.#writeParams(k, params);
    let pass: GPUComputePassEncoder;
    if (this.#profile) {
      this.#endPass();
      this.#encoder ??= this.device.createCommandEncoder();
      const i = this.#profile.labels.length;
      this.#profile.labels.push(k.label);
      pass = this.#pass = this.#encoder.beginComputePass({
        timestampWrites: { querySet: this.#profile.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
      });
    } else {
      pass = this.#ensurePass();
    }
    pass.setPipeline(k.pipeline);
    pass.setBindGroup(0, bg);
    if (offset >= 0) {
      this.#dynamicOffset[0] = offset;
      pass.setBindGroup(1, this.#arenaBindGroup, this.#dynamicOffset);
    }
    pass.dispatchWorkgroups(x, y, z);
    this.dispatches++;
    if (this.#profile) {
      this.#endPass();
      if (this.#profile.labels.length * 2 >= this.#profile.querySet.count) this.flush();
    }
  }

  /** Dispatches `workgroups` workgroups laid out on a 2-D grid (see `flat_workgroup` in common.wgsl). */
  dispatch1d(k: Kernel, tensors: readonly Tensor[], params: Readonly<Record<string, number>> | null, workgroups: number): void {
    const [x, y] = grid1d(workgroups);
    this.dispatch(k, tensors, params, x, y);
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }

  /** Submits everything recorded so far. */
  flush(): void {
    this.throwIfFailed();
    if (!this.#encoder) return;
    this.#endPass();
    if (this.#slots) this.device.queue.writeBuffer(this.#arenaBuffer, 0, this.#arena, 0, this.#slots * PARAMS_SLOT);
    this.#slots = 0;
    const collect = this.#profile && this.#profile.labels.length ? this.#resolveProfile(this.#encoder) : null;
    this.device.queue.submit([this.#encoder.finish()]);
    this.#encoder = null;
    if (collect) this.#profile!.results.push(collect()); // map only after the submit that fills it
  }

  /** Waits until the GPU has finished everything submitted; throws any GPU error. */
  async sync(): Promise<void> {
    this.flush();
    await Promise.race([this.device.queue.onSubmittedWorkDone(), this.#lostPromise]);
    this.throwIfFailed();
  }

  /** Throws the first GPU error seen since the last check (device lost, validation, OOM). */
  throwIfFailed(): void {
    if (this.#lost) {
      throw new GpuError(`GPU device lost (${this.#lost.reason}): ${this.#lost.message || 'no message'}`);
    }
    if (!this.#errors.length) return;
    const [first, ...rest] = this.#errors.splice(0);
    const more = rest.length ? `\n(+${rest.length} more GPU errors)` : '';
    if (first.constructor.name === 'GPUOutOfMemoryError' || /out of memory/i.test(first.message)) {
      throw new GpuOutOfMemoryError(
        `GPU out of memory: ${first.message.trim()}\nTry a smaller DEVICE_BATCH_SIZE in train.ts (gradient accumulation keeps the total batch).${more}`,
      );
    }
    throw new GpuError(first.message.trim() + more);
  }

  // ---------------------------------------------------------------------------------------------
  // Tensors

  /** An uninitialised tensor from the pool, owned by the innermost scope (if any). */
  empty(shape: readonly number[], dtype: DType = 'f32', name?: string): Tensor {
    const bytes = Math.max(4, numel(shape) * DTYPE_BYTES[dtype]);
    const t = new Tensor(this.pool.acquire(bytes, name), shape, dtype, 0, name);
    this.#scopes.at(-1)?.push(t);
    return t;
  }

  /** A tensor of zeros. */
  zeros(shape: readonly number[], dtype: DType = 'f32', name?: string): Tensor {
    const t = this.empty(shape, dtype, name);
    this.fill(t, 0);
    return t;
  }

  /** Sets every element of t to `value` (on the GPU, in the recorded stream). */
  fill(t: Tensor, value: number): void {
    const words = Math.ceil(t.bytes / 4);
    if (t.bytes % 4 !== 0 || (t.offset * DTYPE_BYTES[t.dtype]) % 4 !== 0) throw new Error(`fill: ${t.describe()} is not 4-byte aligned`);
    const bits = t.dtype === 'f32' ? f32Bits(value) : t.dtype === 'f16' ? f16PairBits(value) : value >>> 0;
    const k = this.kernel({ source: 'fill.wgsl', entry: 'fill_u32', overrides: { WG: 256 } });
    this.dispatch1d(k, [t], { offset: (t.offset * DTYPE_BYTES[t.dtype]) / 4, count: words, bits }, Math.ceil(words / 256));
  }

  /** A tensor holding `data` (uploaded now: pending work is submitted first so ordering holds). */
  fromArray(data: ArrayLike<number> | Float32Array | Int32Array | Uint32Array, shape: readonly number[], dtype: DType = 'f32', name?: string): Tensor {
    const t = this.empty(shape, dtype, name);
    this.write(t, data);
    return t;
  }

  /** Overwrites t with `data`. Submits pending work first, so earlier recorded reads see old values. */
  write(t: Tensor, data: ArrayLike<number> | Float32Array | Int32Array | Uint32Array | Uint16Array): void {
    if (data.length !== t.size) throw new RangeError(`write: ${data.length} values for ${t.describe()}`);
    if (this.dryRun) return;
    this.flush();
    let view: ArrayBufferView;
    if (t.dtype === 'f16') view = data instanceof Uint16Array ? data : toF16Bits(data);
    else if (t.dtype === 'f32') view = data instanceof Float32Array ? data : Float32Array.from(data);
    else if (t.dtype === 'i32') view = data instanceof Int32Array ? data : Int32Array.from(data);
    else view = data instanceof Uint32Array ? data : Uint32Array.from(data);
    const byteOffset = t.offset * DTYPE_BYTES[t.dtype];
    let bytes = view.byteLength;
    if (bytes % 4) {
      // writeBuffer needs 4-byte multiples: pad an f16 tail with one zero element
      const padded = new Uint16Array(view.byteLength / 2 + 1);
      padded.set(view as Uint16Array);
      view = padded;
      bytes += 2;
    }
    this.device.queue.writeBuffer(t.buffer, byteOffset, view.buffer, view.byteOffset, bytes);
  }

  /** Reads a tensor back to the CPU (submits pending work; f16 comes back as f32). */
  async read(t: Tensor): Promise<Float32Array>;
  async read(t: Tensor, as: 'raw'): Promise<Float32Array | Int32Array | Uint32Array>;
  async read(t: Tensor, as?: 'raw'): Promise<Float32Array | Int32Array | Uint32Array> {
    if (this.dryRun) throw new Error(`read ${t.describe()}: a dry-run runtime computes nothing to read back`);
    const byteOffset = t.offset * DTYPE_BYTES[t.dtype];
    const start = byteOffset & ~3;
    const bytes = Math.ceil((byteOffset + t.bytes) / 4) * 4 - start;
    const staging = this.#staging.acquire(Math.max(4, bytes));
    this.flush();
    const encoder = this.device.createCommandEncoder();
    if (bytes > 0) encoder.copyBufferToBuffer(t.buffer, start, staging, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    const mapped = staging.mapAsync(GPUMapMode.READ).then(() => true);
    const ok = await Promise.race([mapped, this.#lostPromise.then(() => false)]);
    if (!ok) this.throwIfFailed();
    const raw = staging.getMappedRange(0, Math.max(4, bytes)).slice(byteOffset - start, byteOffset - start + t.bytes);
    staging.unmap();
    this.#staging.release(staging);
    this.throwIfFailed();
    switch (t.dtype) {
      case 'f32':
        return new Float32Array(raw);
      case 'f16':
        return fromF16Bits(new Uint16Array(raw));
      case 'i32':
        return as === 'raw' ? new Int32Array(raw) : Float32Array.from(new Int32Array(raw));
      case 'u32':
        return as === 'raw' ? new Uint32Array(raw) : Float32Array.from(new Uint32Array(raw));
    }
  }

  /** Reads a single-element tensor as a number (the one sync the training loop makes per step). */
  async item(t: Tensor): Promise<number> {
    if (t.size !== 1) throw new Error(`item: ${t.describe()} has ${t.size} elements`);
    return (await this.read(t))[0];
  }

  /** A view of `shape` starting `offset` elements into t's storage (shares memory). */
  view(t: Tensor, shape: readonly number[], offset = 0, name?: string): Tensor {
    const v = new Tensor(t.storage, shape, t.dtype, t.offset + offset, name ?? t.name);
    if (offset + v.size > t.size && t.offset + offset + v.size > t.storage.bytes / DTYPE_BYTES[t.dtype]) {
      throw new RangeError(`view [${shape}] at ${offset} exceeds ${t.describe()}`);
    }
    t.storage.refs++;
    this.#scopes.at(-1)?.push(v);
    return v;
  }

  /** Same storage, new shape (element count must match). */
  reshape(t: Tensor, shape: readonly number[]): Tensor {
    if (numel(shape) !== t.size) throw new Error(`reshape ${t.describe()} to [${shape}]`);
    return this.view(t, shape, 0);
  }

  /** Returns t's memory to the pool (views keep it alive until they are released too). */
  release(t: Tensor | null | undefined): void {
    if (!t || t.released) return;
    t.released = true;
    if (--t.storage.refs === 0) this.pool.release(t.storage);
  }

  /** Marks t to survive scopes (parameters, optimizer state, persistent buffers). */
  keep<T extends Tensor>(t: T): T {
    t.kept = true;
    return t;
  }

  /**
   * Runs fn; every tensor created inside is released at the end except kept ones and those
   * returned (a tensor, or an array / plain object of tensors), which move to the outer scope.
   */
  scope<R extends Returned>(fn: () => R): R {
    this.#scopes.push([]);
    let result: R | undefined; // stays undefined if fn throws: then everything is released
    try {
      result = fn();
      return result;
    } finally {
      this.#closeScope(result);
    }
  }

  /** `scope` for async functions. */
  async scopeAsync<R>(fn: () => Promise<R>): Promise<R> {
    this.#scopes.push([]);
    let result: R | undefined;
    try {
      result = await fn();
      return result;
    } finally {
      this.#closeScope(result);
    }
  }

  #closeScope(result: unknown): void {
    const tensors = this.#scopes.pop()!;
    const escaping = new Set<Tensor>();
    const collect = (v: unknown) => {
      if (v instanceof Tensor) escaping.add(v);
    };
    if (Array.isArray(result)) result.forEach(collect);
    else if (result instanceof Tensor) collect(result);
    else if (result && typeof result === 'object') Object.values(result).forEach(collect);
    const parent = this.#scopes.at(-1);
    for (const t of tensors) {
      if (t.kept) continue;
      if (escaping.has(t)) parent?.push(t);
      else this.release(t);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Profiling (benches): one pass per dispatch with timestamp writes

  get canProfile(): boolean {
    return this.device.features.has('timestamp-query');
  }

  /** Starts timing every dispatch (needs timestamp-query). */
  startProfile(): void {
    if (!this.canProfile) throw new Error('this adapter has no timestamp-query');
    this.flush();
    this.#profile = { querySet: this.device.createQuerySet({ type: 'timestamp', count: 4096 }), labels: [], results: [] };
  }

  /** Records the query resolve; returns what reads it back once the encoder has been submitted. */
  #resolveProfile(encoder: GPUCommandEncoder): () => Promise<TimedDispatch[]> {
    const p = this.#profile!;
    const labels = p.labels.splice(0);
    const n = labels.length * 2;
    const resolveBuf = this.device.createBuffer({ size: n * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.device.createBuffer({ size: n * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.resolveQuerySet(p.querySet, 0, n, resolveBuf, 0);
    encoder.copyBufferToBuffer(resolveBuf, 0, read, 0, n * 8);
    return async () => {
      await read.mapAsync(GPUMapMode.READ);
      const ts = new BigUint64Array(read.getMappedRange().slice(0));
      read.destroy();
      resolveBuf.destroy();
      return labels.map((label, i) => ({ label, ms: Number(ts[2 * i + 1] - ts[2 * i]) / 1e6 }));
    };
  }

  /** Stops timing and returns each dispatch's GPU time in order. */
  async endProfile(): Promise<TimedDispatch[]> {
    if (!this.#profile) return [];
    this.flush();
    const p = this.#profile;
    this.#profile = null;
    const all = (await Promise.all(p.results)).flat();
    p.querySet.destroy();
    return all;
  }

  /** Releases the device. */
  destroy(): void {
    this.#pass = null;
    this.#encoder = null;
    this.device.destroy();
  }
}

/** A workgroup count laid out as (x, y) with x <= MAX_GRID; kernels use flat_workgroup(). */
export function grid1d(workgroups: number): [number, number] {
  if (workgroups <= MAX_GRID) return [workgroups, 1];
  const y = Math.ceil(workgroups / MAX_GRID);
  return [Math.ceil(workgroups / y), y];
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);
function f32Bits(v: number): number {
  f32Scratch[0] = v;
  return u32Scratch[0];
}

/** IEEE half bits of v (round to nearest even). */
export function f16Bits(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

function f16PairBits(v: number): number {
  const h = f16Bits(v);
  return ((h << 16) | h) >>> 0;
}

function toF16Bits(data: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f16Bits(data[i]);
  return out;
}

/** f16 bits → f32 values. */
export function fromF16Bits(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 0x1f ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}
