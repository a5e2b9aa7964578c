/**
 * The agent's reference section is generated from the source: it carries the signatures of every
 * module train.ts imports, the parts of prepare.ts train.ts uses (not the rest), the kernel
 * conventions, and it follows a change to a signature without anyone regenerating anything.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { apiReference } from '../../src/research/api_reference.ts';
import { REPO_ROOT } from './helpers.ts';

const text = apiReference(REPO_ROOT);
const copy = mkdtempSync(join(tmpdir(), 'autoresearch-api-'));
afterAll(() => rmSync(copy, { recursive: true, force: true }));

describe('the API reference in the agent prompt', () => {
  it("covers every module train.ts imports, with current signatures", () => {
    const train = readFileSync(join(REPO_ROOT, 'train.ts'), 'utf8');
    const modules = [...train.matchAll(/from '\.\/(src\/[^']+)'/g)].map((m) => m[1]);
    expect(modules.length).toBeGreaterThan(5);
    for (const m of modules) expect(text, m).toContain(`## ./${m}`);
    expect(text).toContain('export function binary(rt: Runtime, op: BinaryOp, a: Tensor, b: Tensor, o: BinaryOptions = {}): Tensor;');
    expect(text).toContain('kernel(spec: KernelSpec): Kernel;');
    expect(text).toContain('export async function startRun(o: RunOptions = {}): Promise<TrainRun>;');
    expect(text).not.toMatch(/function \w+Ref\(/); // plain-TS references are left out
    expect(text).not.toContain('## ./src/research/'); // train.ts may not import the driver
  });

  it('carries only the parts of prepare.ts train.ts uses, and the kernel conventions', () => {
    expect(text).toContain('export async function evaluateBpb(rt: Runtime, logitsFn: LogitsFn, tokenizer: Tokenizer, batchSize: number');
    expect(text).toContain('export function makeDataloader(');
    expect(text).toContain('export const TIME_BUDGET = 300;');
    for (const internal of ['trainTokenizer', 'prepareData', 'parseArgs', 'climbmixShardName']) expect(text).not.toContain(internal);
    expect(text).toContain('## Conventions');
    expect(text).toContain('@group(1) @binding(0) var<uniform> params: Params;');
    // much smaller than the source it summarises
    const prepare = readFileSync(join(REPO_ROOT, 'prepare.ts'), 'utf8');
    expect(text.slice(text.indexOf('# prepare.ts')).length).toBeLessThan(prepare.length / 4);
  });

  it('follows a changed signature in the source', () => {
    for (const f of ['src', 'kernels', 'prepare.ts', 'tsconfig.json']) cpSync(join(REPO_ROOT, f), join(copy, f), { recursive: true });
    const before = apiReference(copy);
    expect(before).toContain('export function sumAxis(rt: Runtime, x: Tensor, axis: number | readonly [number, number], o: SumAxisOptions = {}): Tensor;');
    const path = join(copy, 'src', 'ops', 'broadcast.ts');
    writeFileSync(path, readFileSync(path, 'utf8').replace('export function sumAxis(rt: Runtime, x: Tensor,', 'export function sumAxis(rt: Runtime, x: Tensor, keepDims: boolean,'));
    const after = apiReference(copy);
    expect(after).toContain('export function sumAxis(rt: Runtime, x: Tensor, keepDims: boolean, axis');
    expect(after).not.toEqual(before);
  });
});
