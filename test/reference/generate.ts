/**
 * @file `npx tsx test/reference/generate.ts [DIR]`: writes the fixtures the CPU reference
 * (./model.ts) computes for GENERATED_CASES to DIR (default: the repository's fixtures/), one
 * `<name>.json` each. Deterministic: test/reference/model.test.ts checks the shipped files equal
 * what this writes, so rerun it (and commit the result) after changing the reference or the cases.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FIXTURES_DIR } from '../../src/fixture.ts';
import { runCommand } from '../../src/util/cli.ts';
import { GENERATED_CASES, makeFixture } from './fixture.ts';

const GENERATE_CLI = {
  run: 'npx tsx test/reference/generate.ts',
  name: 'generate',
  usage: `Usage: npx tsx test/reference/generate.ts [DIR]

Writes the CPU reference's fixtures (${GENERATED_CASES.map((c) => c.options.name).join(', ')}) to DIR
(default: fixtures/), one <name>.json each.`,
  options: {},
  positionals: { max: 1, what: 'directory' },
};

process.exitCode = await runCommand(GENERATE_CLI, process.argv.slice(2), ({ positionals }) => {
  const dir = resolve(positionals[0] ?? FIXTURES_DIR);
  mkdirSync(dir, { recursive: true });
  for (const c of GENERATED_CASES) {
    const path = join(dir, `${c.options.name}.json`);
    writeFileSync(path, JSON.stringify(makeFixture(c.config, c.seed, c.options)) + '\n');
    console.log(`wrote ${path}`);
  }
});
