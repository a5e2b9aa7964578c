import { describe, expect, it } from 'vitest';
import { acquireGpu, NoGpuError } from '../../src/gpu/device.ts';
import { GpuError, type Runtime } from '../../src/gpu/runtime.ts';
import { preprocess, reflect } from '../../src/gpu/wgsl.ts';
import { testRuntime } from '../setup.ts';

const rt = (await testRuntime()) as Runtime;

describe.skipIf(!rt)('runtime', () => {
  it('reports the adapter in one line', () => {
    expect(rt.gpu.describe()).toMatch(/^gpu: .+ \| backend \w+/);
  });

  it('writes, fills and reads back f32 / i32 / f16 at offsets', async () => {
    const t = rt.fromArray([1, 2, 3, 4, 5], [5]);
    expect([...(await rt.read(t))]).toEqual([1, 2, 3, 4, 5]);
    const v = rt.view(t, [2], 2);
    rt.fill(v, -7.5);
    expect([...(await rt.read(t))]).toEqual([1, 2, -7.5, -7.5, 5]);
    const ints = rt.fromArray([-3, 0, 2 ** 30], [3], 'i32');
    expect([...(await rt.read(ints, 'raw'))]).toEqual([-3, 0, 2 ** 30]);
    if (rt.f16) {
      const h = rt.fromArray([0.5, -2, 65504], [3], 'f16');
      expect([...(await rt.read(h))]).toEqual([0.5, -2, 65504]);
    }
    rt.release(v);
    rt.release(t);
    rt.release(ints);
  });

  it('releases scoped tensors and keeps returned and kept ones', async () => {
    const before = rt.pool.bytesInUse;
    let inner = null as unknown as ReturnType<Runtime['empty']>;
    const kept = rt.keep(rt.zeros([16]));
    const out = rt.scope(() => {
      inner = rt.zeros([1000]);
      return rt.zeros([8]);
    });
    expect(inner.released).toBe(true);
    expect(out.released).toBe(false);
    expect(() => inner.buffer).toThrow(/used after release/);
    expect([...(await rt.read(out))]).toEqual(new Array(8).fill(0));
    rt.release(out);
    rt.release(kept);
    expect(rt.pool.bytesInUse).toBe(before);
  });

  it('reuses pooled buffers: a repeated step creates none', () => {
    const step = () => rt.scope(() => {
      rt.zeros([123]);
      rt.zeros([4096]);
    });
    step();
    const created = rt.pool.created;
    for (let i = 0; i < 5; i++) step();
    expect(rt.pool.created).toBe(created);
  });

  it('turns a WGSL error into an exception naming the kernel', async () => {
    const bad = { source: { code: 'struct Params { n: u32 }\n@group(1) @binding(0) var<uniform> params: Params;\n@compute @workgroup_size(1) fn broken_fwd() { let x: f32 = params.n; }' }, entry: 'broken_fwd' };
    await expect(rt.compile(bad)).rejects.toThrow(/broken_fwd[\s\S]*(f32|u32)/);
  });

  it('turns a validation error into an exception at the next flush', async () => {
    const k = rt.kernel({ source: 'fill.wgsl', entry: 'fill_u32', overrides: { WG: 256 } });
    const t = rt.empty([4]);
    await rt.sync();
    t.buffer.destroy(); // a destroyed buffer in a submit is a validation error (t stays out of the pool)
    rt.dispatch(k, [t], { offset: 0, count: 4, bits: 0 }, 1);
    rt.flush();
    await expect(rt.sync()).rejects.toThrow(GpuError);
    await rt.sync(); // the error was reported once and cleared
  });

  it('rejects a dispatch that binds a written buffer twice', () => {
    const k = rt.kernel({ source: { code: '@group(0) @binding(0) var<storage, read> a: array<f32>;\n@group(0) @binding(1) var<storage, read_write> b: array<f32>;\n@compute @workgroup_size(1) fn alias_fwd() { b[0] = a[0]; }' }, entry: 'alias_fwd' });
    const t = rt.zeros([4]);
    expect(() => rt.dispatch(k, [t, t], null, 1)).toThrow(/shares a buffer/);
    rt.release(t);
  });
});

describe('adapter fallback', () => {
  it('with every backend disabled, says what to install', async () => {
    await expect(acquireGpu({ disable: ['vulkan', 'metal', 'd3d12', 'opengles', 'swiftshader'] })).rejects.toThrow(NoGpuError);
    await expect(acquireGpu({ disable: ['vulkan', 'metal', 'd3d12', 'opengles', 'swiftshader'] })).rejects.toThrow(/install/);
  });

  it('rejects an unknown backend name', async () => {
    await expect(acquireGpu({ choice: 'cuda' })).rejects.toThrow(/not one of/);
  });

  it.skipIf(!rt || !rt.gpu.info.software)('with the native backend unavailable, falls back to a software adapter', async () => {
    const gpu = await acquireGpu({ choice: 'auto', disable: ['vulkan', 'metal', 'd3d12'] }); // (whatever AUTORESEARCH_GPU picked for the suite)
    expect(gpu.info.software).toBe(true);
    expect(['opengles', 'swiftshader']).toContain(gpu.info.backend);
    gpu.device.destroy();
  });
});

describe('wgsl preprocessing', () => {
  it('resolves #if/#else/#endif and #include, keeping line numbers', () => {
    const src = 'a\n#if X\nb\n#else\nc\n#endif\n#include "inc"\nd';
    const out = preprocess(src, { X: true }, () => 'inc1');
    expect(out.split('\n')).toEqual(['a', '', 'b', '', '', '', 'inc1', '', 'd']);
    expect(preprocess(src, {}, () => 'z')).toContain('c');
  });

  it('reflects storage bindings and Params', () => {
    const r = reflect(`struct Params { n: u32, scale: f32, off: i32 }
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;`);
    expect(r.storage.map((s) => [s.name, s.access])).toEqual([['x', 'read'], ['y', 'read_write']]);
    expect(r.params).toEqual([{ name: 'n', type: 'u32', offset: 0 }, { name: 'scale', type: 'f32', offset: 4 }, { name: 'off', type: 'i32', offset: 8 }]);
    expect(() => reflect('struct Params { v: vec2f }\n@group(1) @binding(0) var<uniform> params: Params;')).toThrow(/4-byte scalars/);
  });
});

describe.skipIf(!rt)('failure modes', () => {
  it('a tensor beyond the adapter limit says to lower DEVICE_BATCH_SIZE', () => {
    const tooBig = rt.pool.maxBufferSize / 4 + 1024;
    expect(() => rt.empty([tooBig])).toThrow(/DEVICE_BATCH_SIZE/);
  });

  it('a lost device turns reads and syncs into errors, never a hang', async () => {
    const { Runtime } = await import('../../src/gpu/runtime.ts');
    const own = await Runtime.create(); // its own device, so the shared one stays usable
    const t = own.fromArray([1, 2, 3], [3]);
    own.device.destroy();
    await expect(own.read(t)).rejects.toThrow(/device lost|destroyed|GPU/i);
    await expect(own.sync()).rejects.toThrow(/device lost/i);
  });
});
