/**
 * @file WGSL source handling: a tiny preprocessor and reflection of the two things the host needs
 * to know about a kernel — its storage bindings (group 0) and its uniform `Params` struct (group 1).
 *
 * Kernel conventions (every file in kernels/ follows them):
 *   - storage buffers at `@group(0) @binding(i) var<storage, read|read_write> name: array<...>;`,
 *     numbered from 0 in the order inputs → outputs;
 *   - scalars in one `struct Params { a: u32, b: f32, ... }` (4-byte scalars only) bound at
 *     `@group(1) @binding(0) var<uniform> params: Params;` (the runtime feeds it with a dynamic offset);
 *   - the storage element type is `T` (f32, or f16 where enabled): the loader prepends its alias;
 *   - `#include "file.wgsl"`, `#if NAME`, `#ifdef NAME`, `#ifndef NAME`, `#else`, `#endif` are
 *     resolved here from the define set, before Dawn sees the code.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Directory of the hand-written kernels. */
export const KERNEL_DIR = fileURLToPath(new URL('../../kernels/', import.meta.url));

export type Defines = Record<string, boolean | number | string>;

export interface ParamField {
  name: string;
  type: 'u32' | 'i32' | 'f32';
  /** Byte offset inside the struct. */
  offset: number;
}

export interface StorageBinding {
  binding: number;
  name: string;
  access: 'read' | 'read_write';
}

export interface Reflection {
  storage: StorageBinding[];
  params: ParamField[] | null;
}

function truthy(v: Defines[string] | undefined): boolean {
  return v !== undefined && v !== false && v !== 0 && v !== '';
}

/** Resolves #include and #if/#ifdef/#ifndef/#else/#endif. Unknown names are false. */
export function preprocess(source: string, defines: Defines, readInclude: (file: string) => string, depth = 0): string {
  if (depth > 8) throw new Error('WGSL #include nested too deeply (cycle?)');
  const out: string[] = [];
  const stack: { active: boolean; taken: boolean }[] = [];
  const active = () => stack.every((s) => s.active);
  for (const line of source.split('\n')) {
    const m = /^\s*#(include|ifdef|ifndef|if|else|endif)\b\s*(.*)$/.exec(line);
    if (!m) {
      out.push(active() ? line : '');
      continue;
    }
    const [, directive, rest] = m;
    const arg = rest.trim();
    switch (directive) {
      case 'include':
        if (active()) out.push(preprocess(readInclude(arg.replace(/^"|"$/g, '')), defines, readInclude, depth + 1));
        break;
      case 'if':
      case 'ifdef': {
        const cond = directive === 'ifdef' ? arg in defines : truthy(defines[arg]);
        stack.push({ active: cond, taken: cond });
        break;
      }
      case 'ifndef': {
        const cond = !(arg in defines);
        stack.push({ active: cond, taken: cond });
        break;
      }
      case 'else': {
        const top = stack.at(-1);
        if (!top) throw new Error('WGSL #else without #if');
        top.active = !top.taken;
        break;
      }
      case 'endif':
        if (!stack.pop()) throw new Error('WGSL #endif without #if');
        break;
    }
    out.push(''); // keep line numbers aligned with the file for Dawn's messages
  }
  if (stack.length) throw new Error('WGSL #if without #endif');
  return out.join('\n');
}

/** Reads storage bindings and the Params struct from preprocessed WGSL. */
export function reflect(code: string): Reflection {
  const noComments = code.replace(/\/\/.*$/gm, '').replace(/\/\*[\s\S]*?\*\//g, '');
  const storage: StorageBinding[] = [];
  const bindingRe = /@group\(\s*(\d+)\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var\s*<\s*(storage|uniform)\s*(?:,\s*(read|read_write))?\s*>\s*(\w+)/g;
  let hasParams = false;
  for (const m of noComments.matchAll(bindingRe)) {
    const [, group, binding, space, access, name] = m;
    if (space === 'uniform') {
      if (group !== '1' || binding !== '0') throw new Error(`uniform '${name}' must be at @group(1) @binding(0)`);
      hasParams = true;
      continue;
    }
    if (group !== '0') throw new Error(`storage '${name}' must be in @group(0)`);
    storage.push({ binding: Number(binding), name, access: (access ?? 'read') as StorageBinding['access'] });
  }
  storage.sort((a, b) => a.binding - b.binding);
  storage.forEach((s, i) => {
    if (s.binding !== i) throw new Error(`storage bindings must be numbered 0..n-1; '${s.name}' is ${s.binding}`);
  });
  let params: ParamField[] | null = null;
  if (hasParams) {
    const sm = /struct\s+Params\s*\{([^}]*)\}/.exec(noComments);
    if (!sm) throw new Error('kernel binds a uniform but declares no `struct Params`');
    params = [];
    for (const field of sm[1].split(',')) {
      const fm = /^\s*(\w+)\s*:\s*(\w+)\s*$/.exec(field);
      if (!fm) {
        if (field.trim()) throw new Error(`Params field '${field.trim()}' must be 'name: u32|i32|f32'`);
        continue;
      }
      const type = fm[2];
      if (type !== 'u32' && type !== 'i32' && type !== 'f32') {
        throw new Error(`Params field '${fm[1]}' has type ${type}; only 4-byte scalars (u32, i32, f32) are allowed`);
      }
      params.push({ name: fm[1], type, offset: params.length * 4 });
    }
  }
  return { storage, params };
}

export interface LoadedSource {
  code: string;
  reflection: Reflection;
}

/**
 * Builds the final WGSL: dtype alias + enable lines, then the preprocessed file.
 * `source` is either a file name in kernels/ (`rms_norm.wgsl`) or inline code (`{ code }`).
 */
export function loadSource(source: string | { code: string }, defines: Defines, dtype: 'f32' | 'f16'): LoadedSource {
  const readInclude = (file: string) => readFileSync(KERNEL_DIR + file, 'utf8');
  const raw = typeof source === 'string' ? readInclude(source) : source.code;
  // SUBGROUPS (a define): kernels' subgroup variants; the runtime sets it only where the device has 'subgroups'
  const header = (truthy(defines.SUBGROUPS) ? 'enable subgroups;\n' : '') + (dtype === 'f16' ? 'enable f16;\nalias T = f16;\n' : 'alias T = f32;\n');
  const body = preprocess(raw, { ...defines, [dtype.toUpperCase()]: true }, readInclude);
  const code = header + body;
  return { code, reflection: reflect(code) };
}
