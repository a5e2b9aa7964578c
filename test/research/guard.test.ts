import { existsSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compareHashes, hashProtected, importAllowed, TrainGuard } from '../../src/research/guard.ts';
import { makeProject, read, REPO_ROOT, removeProject } from './helpers.ts';

const dir = makeProject();
afterAll(() => removeProject(dir));
const guard = new TrainGuard({ repoDir: dir });
const TRAIN = read(dir, 'train.ts');

/** train.ts with `code` appended inside a function (so statements type-check in context). */
const withCode = (code: string) => `${TRAIN}\nexport function extra(): void {\n${code}\n}\n`;

describe('TrainGuard', () => {
  it('accepts the project train.ts and an ordinary hyperparameter change', () => {
    expect(guard.check(TRAIN)).toEqual({ ok: true, problems: [] });
    expect(guard.check(TRAIN.replace('const DEPTH = 8;', 'const DEPTH = 12;')).ok).toBe(true);
    expect(guard.check(withCode("process.stdout.write('x'); if (process.stdout.isTTY) process.exit(0); const u = import.meta.url; void u;")).ok).toBe(true);
    expect(guard.check(withCode('const xs = [1, 2, 3]; let s = 0; for (let i = 0; i < xs.length; i++) s += xs[i]; const m: Record<"a" | "b", number> = { a: 1, b: 2 }; const k: "a" | "b" = "a"; s += m[k]; void s;')).ok).toBe(true);
  });

  it('rejects a train.ts that does not type-check, naming the line', () => {
    const r = guard.check(TRAIN.replace('const DEPTH = 8;', "const DEPTH: number = 'eight';"));
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([expect.stringMatching(/^train\.ts:\d+: TS2322: Type 'string' is not assignable to type 'number'/)]);
    const missing = guard.check(TRAIN.replace('clamp((1', 'clampp((1'));
    expect(missing.problems.join('\n')).toMatch(/TS2552: Cannot find name 'clampp'/);
  });

  it('rejects syntax errors', () => {
    const r = guard.check(`${TRAIN}\nconst broken = ;\n`);
    expect(r.ok).toBe(false);
    expect(r.problems.join('\n')).toMatch(/TS1109: Expression expected/);
    const syntaxOnly = new TrainGuard({ repoDir: dir, typeCheck: false });
    expect(syntaxOnly.check(`${TRAIN}\nconst broken = ;\n`).problems.join('\n')).toMatch(/TS1109/);
    expect(syntaxOnly.check(TRAIN.replace('const DEPTH = 8;', "const DEPTH: number = 'eight';")).ok).toBe(true);
  });

  it.each([
    ["import { readFileSync } from 'node:fs';", /imports 'node:fs'/],
    ["import fs from 'fs';", /imports 'fs'/],
    ["import { spawn } from 'node:child_process';", /imports 'node:child_process'/],
    ["import { execSync } from 'child_process';", /imports 'child_process'/],
    ["import { driverOnly } from './src/research/secret.ts';", /imports '\.\/src\/research\/secret\.ts'/],
    ["import { clamp as c2 } from './src/util/../research/secret.ts';", /imports/],
    ["import { x } from '../outside.ts';", /imports '\.\.\/outside\.ts'/],
    ["export { clamp } from 'node:path';", /re-exports 'node:path'/],
    ["import os = require('os');", /import = require/],
  ])('rejects the import %s', (line, why) => {
    const r = guard.check(`${line}\n${TRAIN}`);
    expect(r.ok).toBe(false);
    expect(r.problems.join('\n')).toMatch(why);
  });

  it.each([
    ["eval('1 + 1');", /eval is not allowed/],
    ["const f = new Function('return 1'); f();", /Function constructor/],
    ["void import('node:fs');", /dynamic import\(\) is not allowed/],
    ["const r = require('fs'); void r;", /require is not allowed/],
    ['const home = process.env.HOME; void home;', /process\.env is not allowed/],
    ["const b = (process as any).binding('fs'); void b;", /'process' may only be used/],
    ["const m = process.getBuiltinModule('fs'); void m;", /process\.getBuiltinModule is not allowed/],
    ['const p = process; void p;', /'process' may only be used/],
    ['const S = process.stdout.constructor as any; new S({ fd: 3 });', /'\.constructor' is not allowed/],
    ['const o = process.stdout; void o;', /process\.stdout may only be used as/],
    ["const g = (globalThis as any).process; void g;", /globalThis is not allowed/],
    ["const k = 'con' + 'structor'; const obj: Record<string, unknown> = {}; void obj[k];", /computed property access with a non-literal string key/],
    ["const fn = (() => 0)['constructor']; void fn;", /\['constructor'\] is not allowed/],
    ['const C = (() => 0).constructor; void C;', /'\.constructor' is not allowed/],
    ["const same = (() => 0).constructor === Function ? 1 : (0).constructor('x'); void same;", /'\.constructor' is not allowed/],
    ["const d = Object.getOwnPropertyDescriptor(process, 'env'); void d;", /getOwnPropertyDescriptor/],
    ["const r = Reflect.get(process, 'env'); void r;", /Reflect is not allowed/],
    ["void fetch('https://example.com/weights.bin');", /network access \(fetch\)/],
    ['const u = import.meta.dirname; void u;', /only import\.meta\.url is allowed/],
    ['void evaluateBpb(DEPTH, DEVICE_BATCH_SIZE, 0, 0, { evalTokens: 1 } as never);', /evaluateBpb takes only/],
    ['const a: [number, number] = [1, 2]; void evaluateBpb(...a);', /evaluateBpb takes only/],
    ['const p = Object.prototype; void p;', /'\.prototype' is not allowed/],
  ])('rejects %s', (code, why) => {
    const r = guard.check(withCode(code));
    expect(r.ok).toBe(false);
    expect(r.problems.join('\n')).toMatch(why);
  });

  it('rejects triple-slash references', () => {
    expect(guard.check(`/// <reference path="./x.d.ts" />\n${TRAIN}`).problems.join('\n')).toMatch(/triple-slash/);
  });

  it('does not mistake names for references', () => {
    // property names and object keys called eval/require/process are harmless
    const code = 'const o = { eval: 1, require: 2, process: 3 }; const n = o.eval + o.require + o.process; void n;';
    expect(guard.check(withCode(code))).toEqual({ ok: true, problems: [] });
    // comparing a constructor reaches nothing (train.ts tells plain Errors apart this way)
    expect(guard.check(withCode('const e: unknown = new Error("x"); const plain = e instanceof Error && (e.constructor) === Error; void plain;')).ok).toBe(true);
  });

  it('knows which imports train.ts may have', () => {
    expect(['./prepare.ts', 'webgpu', './src/gpu/runtime.ts', './src/ops/matmul.ts'].every(importAllowed)).toBe(true);
    expect(['./src/research/agent.ts', './src/../x.ts', 'node:fs', './prepare.js', '@anthropic-ai/sdk', './src'].some(importAllowed)).toBe(false);
  });

  it("passes the policy on the project's real train.ts (when there is one)", () => {
    const real = join(REPO_ROOT, 'train.ts');
    if (!existsSync(real)) return;
    // policy and syntax only: the real train.ts may import modules other engineers are still writing
    const r = new TrainGuard({ repoDir: REPO_ROOT, typeCheck: false }).check(readFileSync(real, 'utf8'));
    expect(r.problems).toEqual([]);
  });
});

describe('protected files', () => {
  it('fingerprints prepare.ts, program.md, src/, package and ts config files', () => {
    const h = hashProtected(dir);
    expect(Object.keys(h)).toEqual(['package.json', 'prepare.ts', 'program.md', 'src/research/secret.ts', 'src/util/math.ts', 'tsconfig.json']);
    expect(h['prepare.ts']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('names every change, addition and removal', () => {
    const before = hashProtected(dir);
    writeFileSync(join(dir, 'prepare.ts'), `${read(dir, 'prepare.ts')}\n// edited\n`);
    writeFileSync(join(dir, 'src/util/new.ts'), 'export {};\n');
    unlinkSync(join(dir, 'program.md'));
    symlinkSync('prepare.ts', join(dir, 'src/link.ts'));
    expect(compareHashes(before, hashProtected(dir)).sort()).toEqual(['added: src/link.ts', 'added: src/util/new.ts', 'changed: prepare.ts', 'removed: program.md']);
    expect(compareHashes(before, before)).toEqual([]);
    // train.ts is not protected
    writeFileSync(join(dir, 'train.ts'), `${TRAIN}\n`);
    expect(compareHashes(hashProtected(dir), hashProtected(dir))).toEqual([]);
  });
});
