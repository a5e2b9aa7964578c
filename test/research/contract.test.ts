/**
 * The guard holds train.ts to its export contract (src/train_contract.ts): the names verify, the
 * benches and the tests import stay exported as the same kind, and the harness files still
 * type-check against the proposed train.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TrainGuard } from '../../src/research/guard.ts';
import { TRAIN_CONTRACT } from '../../src/train_contract.ts';
import * as trainModule from '../../train.ts';
import { REPO_ROOT } from './helpers.ts';

const TRAIN = readFileSync(join(REPO_ROOT, 'train.ts'), 'utf8');
const guard = new TrainGuard({ repoDir: REPO_ROOT });

function replaced(from: string, to: string): string {
  expect(TRAIN.split(from).length - 1, `'${from}' occurs once in train.ts`).toBe(1);
  return TRAIN.replace(from, to);
}

describe('the train.ts export contract', () => {
  it('holds for the project train.ts, whose runtime exports match the declared kinds', () => {
    expect(guard.check(TRAIN)).toEqual({ ok: true, problems: [] });
    const runtime = trainModule as Record<string, unknown>;
    for (const [name, kind] of Object.entries(TRAIN_CONTRACT)) {
      if (kind === 'type') continue;
      expect(typeof runtime[name], name).toBe(kind === 'const' ? 'object' : 'function');
    }
  });

  it('rejects a renamed export, naming it', () => {
    const r = guard.check(replaced('export async function trainStep(', 'export async function runOneStep(').replace('await trainStep(state', 'await runOneStep(state'));
    expect(r.ok).toBe(false);
    expect(r.problems).toContainEqual(expect.stringMatching(/^train\.ts:1: must export the function 'trainStep'/));
  });

  it('rejects a removed export and a changed kind', () => {
    const unexported = guard.check(replaced('export const OPTIMIZER_SETTINGS', 'const OPTIMIZER_SETTINGS'));
    expect(unexported.problems).toContainEqual(expect.stringMatching(/must export the const 'OPTIMIZER_SETTINGS'/));
    const kind = guard.check(`${replaced('export function windowSizes(', 'function windowSizesOf(').replace('this.windowSizes = windowSizes(config)', 'this.windowSizes = windowSizesOf(config)')}\nexport const windowSizes = 3;\n`);
    expect(kind.problems).toContainEqual(expect.stringMatching(/'windowSizes' must stay a function, not a const/));
  });

  it('rejects a signature change that breaks the harness, with its type errors', () => {
    // train.ts never calls namedParameters itself; verify does
    const r = guard.check(replaced('  namedParameters(): [string, Tensor][] {', '  named(): [string, Tensor][] {'));
    expect(r.ok).toBe(false);
    expect(r.problems[0]).toMatch(/the harness no longer type-checks against this train\.ts/);
    expect(r.problems).toContainEqual(expect.stringMatching(/^src\/verify\.ts:\d+: TS\d+: Property 'namedParameters' does not exist/));
  });
});
