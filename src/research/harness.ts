/**
 * @file The harness of a sandboxed experiment: the module node preloads (`--import`) before
 * train.ts, in the sandboxed process. Outside a research run (no AUTORESEARCH_HARNESS_FD) it does
 * nothing and `harnessActive()` is false.
 *
 * In a run it, before any of train.ts's code exists:
 * - reads its setup from a pipe (descriptor $AUTORESEARCH_HARNESS_FD, closed after): the key that
 *   signs the result, the validation rows (tokenized and packed by the parent, so the validation
 *   split itself is not readable here), token byte counts, budget, step cap;
 * - captures every function the metric relies on (JSON, Math, typed arrays, the WebGPU methods,
 *   HMAC, fs.writeSync on the result descriptor), so patching globals or prototypes later changes
 *   nothing it does;
 * - installs the import policy (harness_hooks.ts) and locks `process.dlopen` once dawn.node is in;
 * - counts every GPU buffer the process creates (peak memory is the harness's figure);
 * - looks at the adapter itself: a software adapter scores `softwareRows` rows, a GPU all of them.
 *
 * evaluateBpb (prepare.ts) hands the model's logits function to `harnessEvaluate`: the inputs are
 * written into harness-owned buffers, targets never leave harness memory, cross-entropy runs in the
 * harness's own pipelines (kernels/eval_bpb.wgsl) with its own buffers, and causality probes sit at
 * harness-random chunks and rows, in a random order, each pair compared from copies taken when each
 * call returned. A model caught looking ahead, a second evaluation, or training past the budget plus
 * allowance ends the process with a signed failure line: a crash, never a score.
 */
import { createHmac } from 'node:crypto';
import { closeSync, readSync, writeSync } from 'node:fs';
import { register } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { globals as webgpuGlobals, create as webgpuCreate } from 'webgpu';
import { Tensor } from '../gpu/tensor.ts';
import { loadSource } from '../gpu/wgsl.ts';

// ---------------------------------------------------------------------------------------------
// Captured primordials (read once, at preload, before train.ts's code runs)
// ---------------------------------------------------------------------------------------------

const apply = Reflect.apply;
const defineProperty = Object.defineProperty;
const getOwnDescriptor = Object.getOwnPropertyDescriptor;
const freeze = Object.freeze;
const mathFloor = Math.floor;
const mathMin = Math.min;
const mathMax = Math.max;
const mathCeil = Math.ceil;
const mathImul = Math.imul;
const mathExp = Math.exp;
const mathLog = Math.log;

/** IEEE half → float (f16 logits). */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
const LN2 = Math.LN2;
const NumberIsInteger = Number.isInteger;
const NumberIsFinite = Number.isFinite;
const F32 = Float32Array;
const U32 = Uint32Array;
const I32 = Int32Array;
const U8 = Uint8Array;
const Err = Error;
const nowMs = performance.now.bind(performance);
const writeSyncCaptured = writeSync;
const readSyncCaptured = readSync;
const closeSyncCaptured = closeSync;
const reallyExit = (process as unknown as { reallyExit?: (code: number) => void }).reallyExit;
const processExit: (code: number) => void = reallyExit ? reallyExit.bind(process) : process.exit.bind(process);
const stderrWrite = process.stderr.write.bind(process.stderr);
const hmacProbe = createHmac('sha256', 'x');
const hmacUpdate = hmacProbe.update;
const hmacDigest = hmacProbe.digest;
const createHmacCaptured = createHmac;
const bufferConcat = Buffer.concat;
const bufferAlloc = Buffer.alloc;
const bufferToString = Buffer.prototype.toString;
const bufferSubarray = Buffer.prototype.subarray;
const jsonParse = JSON.parse;
const FinReg = FinalizationRegistry;
const finRegRegister = FinalizationRegistry.prototype.register;
const finRegUnregister = FinalizationRegistry.prototype.unregister;
const WeakMapCtor = WeakMap;
const weakMapGet = WeakMap.prototype.get;
const weakMapSet = WeakMap.prototype.set;
const weakMapHas = WeakMap.prototype.has;

type AnyFn = (...args: never[]) => unknown;
function method<T extends object>(proto: T, name: string): AnyFn {
  const d = getOwnDescriptor(proto, name);
  if (!d || typeof d.value !== 'function') throw new Err(`harness: ${name} is not a method`);
  return d.value as AnyFn;
}
function getter<T extends object>(proto: T, name: string): AnyFn {
  const d = getOwnDescriptor(proto, name);
  if (!d || typeof d.get !== 'function') throw new Err(`harness: ${name} is not a getter`);
  return d.get as AnyFn;
}
const call = (fn: AnyFn, self: unknown, ...args: unknown[]): unknown => apply(fn, self, args);

const G = webgpuGlobals as unknown as Record<string, { prototype: object }>;
const deviceProto = G.GPUDevice.prototype;
const queueProto = G.GPUQueue.prototype;
const bufferProto = G.GPUBuffer.prototype;
const encoderProto = G.GPUCommandEncoder.prototype;
const passProto = G.GPUComputePassEncoder.prototype;
const pipelineProto = G.GPUComputePipeline.prototype;
const adapterProto = G.GPUAdapter.prototype;
const gpuProto = G.GPU.prototype;
const Dev = {
  createBuffer: method(deviceProto, 'createBuffer'),
  createShaderModule: method(deviceProto, 'createShaderModule'),
  createComputePipeline: method(deviceProto, 'createComputePipeline'),
  createBindGroup: method(deviceProto, 'createBindGroup'),
  createCommandEncoder: method(deviceProto, 'createCommandEncoder'),
  pushErrorScope: method(deviceProto, 'pushErrorScope'),
  popErrorScope: method(deviceProto, 'popErrorScope'),
  submit: method(queueProto, 'submit'),
  writeBuffer: method(queueProto, 'writeBuffer'),
  onSubmittedWorkDone: method(queueProto, 'onSubmittedWorkDone'),
  bufferSize: getter(bufferProto, 'size'),
  destroy: method(bufferProto, 'destroy'),
  mapAsync: method(bufferProto, 'mapAsync'),
  getMappedRange: method(bufferProto, 'getMappedRange'),
  unmap: method(bufferProto, 'unmap'),
  beginComputePass: method(encoderProto, 'beginComputePass'),
  copyBufferToBuffer: method(encoderProto, 'copyBufferToBuffer'),
  finish: method(encoderProto, 'finish'),
  setPipeline: method(passProto, 'setPipeline'),
  setBindGroup: method(passProto, 'setBindGroup'),
  dispatchWorkgroups: method(passProto, 'dispatchWorkgroups'),
  end: method(passProto, 'end'),
  getBindGroupLayout: method(pipelineProto, 'getBindGroupLayout'),
  requestDevice: method(adapterProto, 'requestDevice'),
  requestAdapter: method(gpuProto, 'requestAdapter'),
};
const USAGE_STORAGE = 0x80;
const USAGE_COPY_SRC = 0x04;
const USAGE_COPY_DST = 0x08;
const USAGE_MAP_READ = 0x01;
const USAGE_UNIFORM = 0x40;
const MAP_READ = 0x1;

/**
 * An array for the WebGPU bindings whose iteration cannot be redirected: its own Symbol.iterator,
 * yielding its own elements (patching Array.prototype or the array iterator's `next` changes nothing).
 */
function list<T>(a: T[]): T[] {
  defineProperty(a, Symbol.iterator, {
    value: () => {
      let i = 0;
      return { __proto__: null, next: () => (i < a.length ? { __proto__: null, value: a[i++], done: false } : { __proto__: null, value: undefined, done: true }) };
    },
    enumerable: false,
  });
  return a;
}

/** A descriptor object nothing on Object.prototype can add fields to. */
function desc<T extends object>(fields: T): T {
  const o = { __proto__: null, ...fields } as unknown as T;
  return o;
}

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

export interface HarnessSetup {
  key: string;
  resultFd: number;
  seqLen: number;
  /** Rows in `rows` (the GPU evaluation size, or the whole split when it is smaller). */
  rowCount: number;
  /** Rows scored on a software adapter. */
  softwareRows: number;
  vocabSize: number;
  tokenBytes: number[];
  timeBudgetS: number;
  allowanceS: number;
  /** Seed for probe placement (from the parent's CSPRNG) . */
  seed: string;
}

const HARNESS_FD_ENV = 'AUTORESEARCH_HARNESS_FD';

function readAll(fd: number): Buffer {
  const parts: Buffer[] = [];
  for (;;) {
    const chunk = bufferAlloc(1 << 20);
    let n: number;
    try {
      n = readSyncCaptured(fd, chunk, 0, chunk.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      throw e;
    }
    if (n === 0) break;
    parts[parts.length] = call(bufferSubarray as AnyFn, chunk, 0, n) as Buffer;
  }
  return bufferConcat(parts);
}

let setup: HarnessSetup | null = null;
const seedWords = new U32(4);
let rows: Int32Array | null = null; // rowCount × (T + 1)
const fdEnv = process.env[HARNESS_FD_ENV];
if (fdEnv !== undefined) {
  delete process.env[HARNESS_FD_ENV];
  const fd = Number(fdEnv);
  const all = readAll(fd);
  closeSyncCaptured(fd);
  const headerLen = all.readUInt32LE(0);
  const header = jsonParse(call(bufferToString as AnyFn, all, 'utf8', 4, 4 + headerLen) as string) as HarnessSetup;
  const bodyStart = 4 + headerLen;
  const body = new U8(all.length - bodyStart);
  body.set(all.subarray(bodyStart));
  rows = new I32(body.buffer, 0, header.rowCount * (header.seqLen + 1));
  setup = freeze(header);
  for (let i = 0; i < 4; i++) seedWords[i] = parseInt(header.seed.slice(i * 8, i * 8 + 8), 16) >>> 0;
}

/** True in a sandboxed research run (the setup pipe was there). */
export function harnessActive(): boolean {
  return setup !== null;
}

const preloadMs = nowMs();
let trainStartMs: number | null = null;

/** prepare.ts's makeDataloader calls this for the training split: the training clock starts. */
export function harnessNoteTraining(): void {
  if (trainStartMs === null) trainStartMs = nowMs();
}

/** Seconds of training so far, by the harness's clock. */
export function harnessTrainingSeconds(): number {
  return (nowMs() - (trainStartMs ?? preloadMs)) / 1000;
}

function fail(message: string): never {
  // a signed failure line: the parent reports it as a crash with this reason
  try {
    emit(`{"error":${JSON.stringify(message)}}`);
  } catch {
    // the channel is gone; the exit code says it
  }
  stderrWrite(`\nharness: ${message}\n`);
  processExit(1);
  throw new Err(message);
}

let emitted = false;
function emit(payload: string): void {
  if (!setup || emitted) return;
  emitted = true;
  const h = createHmacCaptured('sha256', setup.key);
  call(hmacUpdate as AnyFn, h, payload);
  const mac = call(hmacDigest as AnyFn, h, 'hex') as string;
  writeSyncCaptured(setup.resultFd, `${mac} ${payload}\n`);
}

// ---------------------------------------------------------------------------------------------
// Process lock-down and GPU memory accounting (only in a run)
// ---------------------------------------------------------------------------------------------

let liveBytes = 0;
let peakBytes = 0;
const bufferBytes = new WeakMapCtor<object, number>();
const finalizer = new FinReg<number>((bytes) => {
  liveBytes -= bytes;
});

function track(buffer: object, size: number): void {
  call(weakMapSet as AnyFn, bufferBytes, buffer, size);
  liveBytes += size;
  if (liveBytes > peakBytes) peakBytes = liveBytes;
  call(finRegRegister as AnyFn, finalizer, buffer, size, buffer);
}

function untrack(buffer: object): void {
  if (!call(weakMapHas as AnyFn, bufferBytes, buffer)) return;
  liveBytes -= call(weakMapGet as AnyFn, bufferBytes, buffer) as number;
  call(weakMapSet as AnyFn, bufferBytes, buffer, 0);
  call(finRegUnregister as AnyFn, finalizer, buffer);
}

/** Adapters this process obtained: is any a hardware one? (Decides the evaluation size with the harness's own probe.) */
let hardwareAdapter: boolean | null = null;
const SOFTWARE_RE = /llvmpipe|swiftshader|lavapipe|softpipe|warp|microsoft basic/;
function isSoftwareInfo(info: GPUAdapterInfo): boolean {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  return SOFTWARE_RE.test(text) || !!(info as { isFallbackAdapter?: boolean }).isFallbackAdapter;
}

const keepAlive: unknown[] = [];

if (setup) {
  const lock = (name: string) => {
    defineProperty(process, name, {
      value: () => {
        throw new Err(`sandbox: process.${name} is not available to train.ts`);
      },
      writable: false,
      configurable: false,
      enumerable: false,
    });
  };
  // dawn.node is loaded (the webgpu import above): no more native addons, no internal bindings
  lock('dlopen');
  lock('binding');
  lock('_linkedBinding');
  lock('_debugProcess');
  lock('_kill');
  lock('openStdin');
  // signals only to itself (a run must not stop its driver or anything else on the machine)
  const nativeKill = process.kill.bind(process);
  const selfPid = process.pid;
  defineProperty(process, 'kill', {
    value: (pid: number, signal?: string | number) => {
      if (pid !== selfPid) throw new Err('sandbox: train.ts may signal only its own process');
      if (signal === 'SIGUSR1' || signal === 10) throw new Err('sandbox: SIGUSR1 (the inspector) is not available to train.ts');
      return nativeKill(pid, signal);
    },
    writable: false,
    configurable: false,
  });
  // diagnostic reports are written by native code, outside the permission model
  defineProperty(process, 'report', { value: freeze({ __proto__: null }), writable: false, configurable: false });
  // every buffer the process creates is counted, whoever asks for it
  const nativeCreateBuffer = Dev.createBuffer;
  const nativeDestroy = Dev.destroy;
  defineProperty(deviceProto, 'createBuffer', {
    value: function createBuffer(this: GPUDevice, d: GPUBufferDescriptor) {
      const buf = apply(nativeCreateBuffer, this, [d]) as GPUBuffer;
      track(buf, call(Dev.bufferSize, buf) as number);
      return buf;
    },
    writable: false,
    configurable: false,
  });
  defineProperty(bufferProto, 'destroy', {
    value: function destroy(this: GPUBuffer) {
      untrack(this);
      return apply(nativeDestroy, this, []);
    },
    writable: false,
    configurable: false,
  });

  // the harness's own look at the adapter: hardware if Dawn's default instance offers one
  try {
    const gpu = webgpuCreate([]);
    keepAlive[keepAlive.length] = gpu;
    const adapter = (await call(Dev.requestAdapter, gpu, desc({ powerPreference: 'high-performance' }))) as GPUAdapter | null;
    hardwareAdapter = adapter ? !isSoftwareInfo(adapter.info) : false;
    keepAlive[keepAlive.length] = adapter;
  } catch {
    hardwareAdapter = false;
  }

  // the import policy, enforced by the module loader on resolved URLs
  const here = dirname(fileURLToPath(import.meta.url)); // <build>/src/research
  const build = join(here, '..', '..');
  const webgpuDir = dirname(fileURLToPath(import.meta.resolve('webgpu')));
  register(pathToFileURL(join(here, 'harness_hooks.js')).href, {
    data: {
      trainUrl: pathToFileURL(join(build, 'train.js')).href,
      buildUrl: pathToFileURL(build).href + '/',
      webgpuUrl: pathToFileURL(webgpuDir).href + '/',
    },
  });
}

// WGSL of the evaluation kernels, read now (the files cannot change later: the build is read-only)
const evalCode: Record<string, string> = { __proto__: null } as unknown as Record<string, string>;
if (setup) {
  for (const variant of ['NATS', 'SUM', 'DIFF'] as const) {
    for (const dtype of variant === 'SUM' ? (['f32'] as const) : (['f32', 'f16'] as const)) {
      evalCode[`${variant}:${dtype}`] = loadSource('eval_bpb.wgsl', { [variant]: true }, dtype).code;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Private evaluation
// ---------------------------------------------------------------------------------------------

/** The runtime surface evaluateBpb gets from train.ts (only these are touched, each read once). */
interface ModelRuntime {
  device: GPUDevice;
  flush(): void;
  release(t: unknown): void;
}
interface ModelTensor {
  storage: { buffer: GPUBuffer; id: number };
  offset: number;
  dtype: string;
  size: number;
}
type TensorCtor = new (storage: { id: number; buffer: GPUBuffer; bytes: number; refs: number }, shape: number[], dtype: 'i32') => unknown;

/** xoshiro128** from the parent's seed: placement nobody in the process can predict or pin. */
function makeRng(seed: Uint32Array): () => number {
  const s = new U32(4);
  for (let i = 0; i < 4; i++) s[i] = seed[i] || 0x9e3779b9;
  return () => {
    const x = mathImul(s[1], 5);
    const r = mathImul((x << 7) | (x >>> 25), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 11) | (s[3] >>> 21);
    return r / 4294967296;
  };
}

const TensorCaptured = Tensor;
let evaluations = 0;

export interface HarnessEvalResult {
  valBpb: number;
  peakVramMb: number;
  trainingSeconds: number;
  rowsScored: number;
  probes: number;
}

/**
 * Score the model: `logitsFn(inputs)` must return logits [n, T, V]. `TensorClass` wraps harness
 * buffers as the runtime's tensors (the model's side only ever sees inputs).
 */
export async function harnessEvaluate(rt: ModelRuntime, logitsFn: (inputs: unknown) => unknown, batchSize: number, log: (m: string) => void): Promise<number> {
  const s = setup;
  const data = rows;
  if (!s || !data) throw new Err('harnessEvaluate: not in a research run');
  evaluations++;
  if (evaluations > 1) fail('evaluateBpb was called more than once: a run gets one evaluation');
  const trainingSeconds = harnessTrainingSeconds();
  // the limit runs from the harness's start, which train.ts cannot move (the reported figure runs
  // from the first training batch); the allowance covers start-up and the uncounted first steps
  const sinceStart = (nowMs() - preloadMs) / 1000;
  if (sinceStart > s.timeBudgetS + s.allowanceS) {
    fail(`training took ${sinceStart.toFixed(1)} s by the harness's clock: over the ${s.timeBudgetS} s budget plus the ${s.allowanceS} s allowance`);
  }
  try {
    return await evaluate(s, data, rt, logitsFn, batchSize, TensorCaptured as unknown as TensorCtor, log, trainingSeconds);
  } catch (e) {
    return fail(e instanceof Err ? `${(e as Error).name}: ${(e as Error).message}` : String(e));
  }
}

async function evaluate(s: HarnessSetup, data: Int32Array, rt: ModelRuntime, logitsFn: (inputs: unknown) => unknown, batchSize: number, TensorClass: TensorCtor, log: (m: string) => void, trainingSeconds: number): Promise<number> {
  const T = s.seqLen;
  const V = s.vocabSize;
  const W = T + 1;
  const software = hardwareAdapter !== true;
  const rowsTotal = software ? mathMin(s.softwareRows, s.rowCount) : s.rowCount;
  if (software) log(`evaluateBpb: software adapter (the harness's own probe), scoring ${rowsTotal} rows of ${T} tokens`);
  if (!(typeof batchSize === 'number' && batchSize >= 1)) throw new Err(`evaluateBpb: batch size ${batchSize} < 1`);
  const device = rt.device;
  const queue = device.queue; // an own property of the device: read once
  const maxBuf = 512 * 2 ** 20;
  const chunk = mathMax(1, mathMin(mathFloor(batchSize), mathFloor(maxBuf / (T * V * 4)), rowsTotal));
  const chunks = mathCeil(rowsTotal / chunk);
  const rng = makeRng(seedWords);

  // probes: which chunks, which row, where, and before or after the real call
  const probeCount = mathMin(chunks, mathMax(4, mathCeil(chunks / 8)));
  const probed = new U8(chunks); // 0: none, 1: probe after the real call, 2: probe first
  let firstCount = 0;
  let lastProbed = 0;
  for (let k = 0; k < probeCount; ) {
    const c = mathFloor(rng() * chunks);
    if (!probed[c]) {
      probed[c] = rng() < 0.5 ? 2 : 1;
      if (probed[c] === 2) firstCount++;
      lastProbed = c;
      k++;
    }
  }
  if (firstCount === 0) probed[lastProbed] = 2;
  let spliceChecks = 0;
  let spliceKnown = 0;

  // harness buffers (never from the runtime's pool; the model sees only the two input buffers)
  const made: GPUBuffer[] = [];
  const buffer = (size: number, usage: number): GPUBuffer => {
    const b = call(Dev.createBuffer, device, desc({ size: mathMax(256, mathCeil(size / 256) * 256), usage, mappedAtCreation: false, label: 'harness' })) as GPUBuffer;
    made[made.length] = b;
    track(b, call(Dev.bufferSize, b) as number);
    return b;
  };
  const inputBuf = buffer(chunk * T * 4, USAGE_STORAGE | USAGE_COPY_DST);
  const probeBuf = buffer(chunk * T * 4, USAGE_STORAGE | USAGE_COPY_DST);
  const targetsBuf = buffer(chunk * T * 4, USAGE_STORAGE | USAGE_COPY_DST);
  const tokenBytesBuf = buffer(V * 4, USAGE_STORAGE | USAGE_COPY_DST);
  const natsBuf = buffer(chunk * T * 4, USAGE_STORAGE);
  const bytesBuf = buffer(chunk * T * 4, USAGE_STORAGE);
  const sumsNats = buffer(chunks * 4, USAGE_STORAGE | USAGE_COPY_SRC);
  const sumsBytes = buffer(chunks * 4, USAGE_STORAGE | USAGE_COPY_SRC);
  const rowCopyA = buffer(T * V * 4, USAGE_STORAGE | USAGE_COPY_DST);
  const rowCopyB = buffer(T * V * 4, USAGE_STORAGE | USAGE_COPY_DST | USAGE_COPY_SRC);
  const boundBuf = buffer(4, USAGE_STORAGE | USAGE_COPY_DST);
  const diffBuf = buffer(T * 4, USAGE_STORAGE | USAGE_COPY_SRC);
  const readBuf = buffer(mathMax(chunks, T, V) * 4, USAGE_MAP_READ | USAGE_COPY_DST);
  const paramBufs: GPUBuffer[] = [];
  const tb = new I32(V);
  for (let i = 0; i < V; i++) tb[i] = s.tokenBytes[i];
  call(Dev.writeBuffer, queue, tokenBytesBuf, 0, tb.buffer, 0, V * 4);

  const pipelines: Record<string, GPUComputePipeline> = { __proto__: null } as unknown as Record<string, GPUComputePipeline>;
  const pipeline = (variant: 'NATS' | 'SUM' | 'DIFF', dtype: string): GPUComputePipeline => {
    const key = variant + ':' + dtype;
    const hit = pipelines[key];
    if (hit) return hit;
    const code = evalCode[key];
    if (!code) throw new Err(`evaluateBpb: logits of dtype ${dtype} are not supported`);
    const module = call(Dev.createShaderModule, device, desc({ code, label: `harness ${key}` }));
    const entry = variant === 'NATS' ? 'eval_token_nats' : variant === 'SUM' ? 'eval_sum_chunk' : 'eval_causal_diff';
    const p = call(Dev.createComputePipeline, device, desc({ layout: 'auto', label: `harness ${key}`, compute: desc({ module, entryPoint: entry, constants: desc({ WG: 256 }) }) })) as GPUComputePipeline;
    pipelines[key] = p;
    return p;
  };
  const paramsBuffer = (rowsP: number, cols: number, aOff: number, bOff: number, seq: number, slot: number): GPUBuffer => {
    const b = buffer(256, USAGE_UNIFORM | USAGE_COPY_DST);
    paramBufs[paramBufs.length] = b;
    const u = new U32(6);
    u[0] = rowsP;
    u[1] = cols;
    u[2] = aOff;
    u[3] = bOff;
    u[4] = seq;
    u[5] = slot;
    call(Dev.writeBuffer, queue, b, 0, u.buffer, 0, 24);
    return b;
  };
  const entries = (bufs: { buffer: GPUBuffer; offset: number; size: number | undefined }[]) => {
    const out: object[] = list<object>([]);
    for (let i = 0; i < bufs.length; i++) {
      const r = bufs[i];
      out[i] = desc({ binding: i, resource: r.size === undefined ? desc({ buffer: r.buffer, offset: r.offset }) : desc({ buffer: r.buffer, offset: r.offset, size: r.size }) });
    }
    return out;
  };
  const whole = (b: GPUBuffer) => ({ buffer: b, offset: 0, size: undefined });
  const run = (enc: GPUCommandEncoder, p: GPUComputePipeline, bufs: { buffer: GPUBuffer; offset: number; size: number | undefined }[], params: GPUBuffer, workgroups: number) => {
    const bg0 = call(Dev.createBindGroup, device, desc({ layout: call(Dev.getBindGroupLayout, p, 0), entries: entries(bufs) }));
    const bg1 = call(Dev.createBindGroup, device, desc({ layout: call(Dev.getBindGroupLayout, p, 1), entries: entries([whole(params)]) }));
    const pass = call(Dev.beginComputePass, enc, desc({}));
    call(Dev.setPipeline, pass, p);
    call(Dev.setBindGroup, pass, 0, bg0);
    call(Dev.setBindGroup, pass, 1, bg1);
    const x = mathMin(workgroups, 65535);
    call(Dev.dispatchWorkgroups, pass, x, mathCeil(workgroups / x), 1);
    call(Dev.end, pass);
  };
  const submit = (enc: GPUCommandEncoder) => {
    const cb = call(Dev.finish, enc);
    call(Dev.submit, queue, list([cb]));
  };
  const encoder = () => call(Dev.createCommandEncoder, device, desc({})) as GPUCommandEncoder;
  const readback = async (src: GPUBuffer, bytes: number): Promise<ArrayBuffer> => {
    const enc = encoder();
    call(Dev.copyBufferToBuffer, enc, src, 0, readBuf, 0, bytes);
    submit(enc);
    await (call(Dev.mapAsync, readBuf, MAP_READ, 0, bytes) as Promise<void>);
    const mapped = call(Dev.getMappedRange, readBuf, 0, bytes) as ArrayBuffer;
    const copy = new U8(bytes);
    copy.set(new U8(mapped));
    call(Dev.unmap, readBuf);
    return copy.buffer;
  };

  let nextId = -1;
  const tensorOver = (buf: GPUBuffer, n: number) => new TensorClass({ id: nextId--, buffer: buf, bytes: chunk * T * 4, refs: 1 }, [n, T], 'i32');

  /** Ask the model once; returns what it gave, read once and checked. */
  const ask = (buf: GPUBuffer, host: Int32Array, n: number): { buffer: GPUBuffer; offset: number; dtype: string; tensor: unknown } => {
    call(Dev.writeBuffer, queue, buf, 0, host.buffer, host.byteOffset, n * T * 4);
    const out = logitsFn(tensorOver(buf, n)) as ModelTensor;
    const storage = out?.storage;
    const gbuf = storage?.buffer;
    const offset = out?.offset;
    const dtype = out?.dtype;
    const size = out?.size;
    if ((dtype !== 'f32' && dtype !== 'f16') || size !== n * T * V || !(typeof offset === 'number' && NumberIsInteger(offset) && offset >= 0)) {
      throw new Err(`evaluateBpb: the model returned ${String(dtype)} logits of ${String(size)} elements for inputs [${n}, ${T}]; expected f32 logits [${n}, ${T}, ${V}]`);
    }
    const elem = dtype === 'f16' ? 2 : 4;
    const have = call(Dev.bufferSize, gbuf) as number;
    if ((offset + n * T * V) * elem > have) throw new Err('evaluateBpb: the logits tensor is larger than its buffer');
    rt.flush(); // the model's recorded work goes to the queue before the harness reads its output
    return { buffer: gbuf, offset, dtype, tensor: out };
  };

  const host = new I32(chunk * T);
  const targetsHost = new I32(chunk * T);
  const expectedBytes = new U32(chunks); // from the harness's own targets: a pass that did not run shows
  // every validation error on the device while the harness scores (its passes, and anything the model
  // makes fail on purpose to drop a chunk) ends the run
  call(Dev.pushErrorScope, device, 'validation');
  const probeHost = new I32(chunk * T);
  let rowsDone = 0;
  let probes = 0;
  for (let c = 0; c < chunks; c++) {
    const first = c * chunk;
    const n = mathMin(chunk, rowsTotal - first);
    for (let r = 0; r < n; r++) {
      const base = (first + r) * W;
      for (let t = 0; t < T; t++) {
        host[r * T + t] = data[base + t];
        targetsHost[r * T + t] = data[base + t + 1];
      }
    }
    call(Dev.writeBuffer, queue, targetsBuf, 0, targetsHost.buffer, 0, n * T * 4);
    let cb = 0;
    for (let i = 0; i < n * T; i++) cb += s.tokenBytes[targetsHost[i]];
    expectedBytes[c] = cb;
    let probeRow = -1;
    let bound = 0;
    let probeFirst = false;
    if (probed[c] && T >= 2) {
      probeRow = mathFloor(rng() * n);
      probeFirst = probed[c] === 2;
      // every row of the probe call keeps a prefix and takes its suffix from another row of the split
      for (let r = 0; r < n; r++) {
        const p = 1 + mathFloor(rng() * (T - 1));
        if (r === probeRow) bound = p;
        let donor = mathFloor(rng() * s.rowCount);
        if (donor === first + r) donor = (donor + 1) % s.rowCount;
        for (let t = 0; t < T; t++) probeHost[r * T + t] = t < p ? host[r * T + t] : data[donor * W + t];
        if (s.rowCount === 1) for (let t = p; t < T; t++) probeHost[r * T + t] = (host[r * T + t] + 1) % V;
      }
      const bh = new I32(1);
      bh[0] = bound;
      call(Dev.writeBuffer, queue, boundBuf, 0, bh.buffer, 0, 4);
    }
    const copyRow = (got: { buffer: GPUBuffer; offset: number; dtype: string }, into: GPUBuffer) => {
      const elem = got.dtype === 'f16' ? 2 : 4;
      const enc = encoder();
      call(Dev.copyBufferToBuffer, enc, got.buffer, (got.offset + probeRow * T * V) * elem, into, 0, T * V * elem);
      submit(enc);
    };
    let probeOut: { buffer: GPUBuffer; offset: number; dtype: string; tensor: unknown } | null = null;
    if (probeRow >= 0 && probeFirst) {
      probeOut = ask(probeBuf, probeHost, n);
      copyRow(probeOut, rowCopyB); // the probe's row as it was when the call returned
    }
    const real = ask(inputBuf, host, n);
    {
      // score now: nats and bytes from the logits as they are when the call returned
      const enc = encoder();
      const elem = real.dtype === 'f16' ? 2 : 4;
      run(enc, pipeline('NATS', real.dtype), [whole(real.buffer), whole(targetsBuf), whole(tokenBytesBuf), whole(natsBuf), whole(bytesBuf)], paramsBuffer(n * T, V, real.offset, 0, 1, 0), n * T);
      run(enc, pipeline('SUM', 'f32'), [whole(natsBuf), whole(bytesBuf), whole(sumsNats), whole(sumsBytes)], paramsBuffer(n * T, 0, 0, 0, 1, c), 1);
      if (probeRow >= 0) call(Dev.copyBufferToBuffer, enc, real.buffer, (real.offset + probeRow * T * V) * elem, rowCopyA, 0, T * V * elem);
      submit(enc);
    }
    if (probeRow >= 0 && !probeFirst) {
      probeOut = ask(probeBuf, probeHost, n);
      copyRow(probeOut, rowCopyB);
    }
    if (probeOut) {
      if (probeOut.buffer === real.buffer && probeOut.offset === real.offset) {
        throw new Err('evaluateBpb: the model returned the same logits buffer twice; return a new tensor per call (the harness releases it)');
      }
      const enc = encoder();
      run(enc, pipeline('DIFF', real.dtype), [whole(rowCopyA), whole(rowCopyB), whole(boundBuf), whole(diffBuf)], paramsBuffer(T, V, 0, 0, T, 0), T);
      submit(enc);
      const diff = new F32(await readback(diffBuf, T * 4));
      let worst = 0;
      for (let t = 1; t < T; t++) if (diff[t] > diff[worst]) worst = t;
      probes++;
      if (!(diff[worst] <= 1e-3)) {
        const e = new Err(
          `the model is not causal: changing input tokens from position ${bound} on changed the logits at position ${worst} by up to ${diff[worst]}. ` +
            'Logits at position t may depend only on inputs 0..t; a model that looks ahead gets no score.',
        );
        e.name = 'CausalityError';
        throw e;
      }
      if (probeFirst) {
        // The probe came first, so nothing the model had seen held its spliced-in token at the
        // bound: an honest model cannot be sure of it. A model that looks ahead on first sight (and
        // replays itself later to stay consistent) is: it gave that token almost all its mass.
        const elem = real.dtype === 'f16' ? 2 : 4;
        const enc = encoder();
        call(Dev.copyBufferToBuffer, enc, rowCopyB, (bound - 1) * V * elem, readBuf, 0, V * elem);
        submit(enc);
        await (call(Dev.mapAsync, readBuf, MAP_READ, 0, V * elem) as Promise<void>);
        const row = new F32(V);
        const mapped = call(Dev.getMappedRange, readBuf, 0, V * elem) as ArrayBuffer;
        if (elem === 4) row.set(new F32(mapped));
        else {
          const h = new Uint16Array(mapped);
          for (let v = 0; v < V; v++) row[v] = halfToFloat(h[v]);
        }
        call(Dev.unmap, readBuf);
        let m = -Infinity;
        for (let v = 0; v < V; v++) if (row[v] > m) m = row[v];
        let z = 0;
        for (let v = 0; v < V; v++) z += mathExp(row[v] - m);
        const spliced = probeHost[probeRow * T + bound];
        const nll = m + mathLog(z) - row[spliced];
        spliceChecks++;
        if (nll < 1e-3 && spliced !== host[probeRow * T + bound]) spliceKnown++;
      }
      rt.release(probeOut.tensor);
    }
    rt.release(real.tensor);
    rowsDone += n;
    // at most a few chunks in flight
    if ((c & 1) === 1) await (call(Dev.onSubmittedWorkDone, queue) as Promise<void>);
  }
  if (spliceKnown >= 1 && spliceKnown * 4 >= spliceChecks) {
    const e = new Err(
      `the model is not causal: in ${spliceKnown} of ${spliceChecks} probes it gave over 99.9% to a token spliced in after the position it predicted, ` +
        'which it had never seen: it looks ahead (and replays itself to look consistent). A model that looks ahead gets no score.',
    );
    e.name = 'CausalityError';
    throw e;
  }
  const natsHost = new F32(await readback(sumsNats, chunks * 4));
  const bytesHost = new U32(await readback(sumsBytes, chunks * 4));
  const scopeError = (await (call(Dev.popErrorScope, device) as Promise<GPUError | null>)) as { message?: string } | null;
  if (scopeError) throw new Err(`evaluateBpb: a GPU error during evaluation: ${String(scopeError.message).slice(0, 300)}`);
  let totalNats = 0;
  let totalBytes = 0;
  for (let i = 0; i < chunks; i++) {
    if (bytesHost[i] !== expectedBytes[i]) throw new Err(`evaluateBpb: chunk ${i} was not scored (bytes ${bytesHost[i]}, expected ${expectedBytes[i]})`);
    totalNats += natsHost[i];
    totalBytes += bytesHost[i];
  }
  for (let i = 0; i < made.length; i++) {
    untrack(made[i]);
    call(Dev.destroy, made[i]);
  }
  if (!(totalBytes > 0)) throw new Err('evaluateBpb: the scored rows hold no bytes');
  const valBpb = totalNats / (LN2 * totalBytes);
  if (!NumberIsFinite(valBpb)) throw new Err(`evaluateBpb: val_bpb is ${valBpb}`);
  const peakMb = peakBytes / 1024 / 1024;
  emit(`{"val_bpb":${valBpb},"peak_vram_mb":${peakMb},"training_seconds":${trainingSeconds},"rows":${rowsDone},"probes":${probes},"splice_checks":${spliceChecks}}`);
  return valBpb;
}
