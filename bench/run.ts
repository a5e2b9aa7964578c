/**
 * @file `npm run bench [-- --filter RE] [--size small|model] [--json] [--repeats N] [--out FILE]`
 * Runs the kernel suites and the training-step bench on the adapter this machine has, prints a table
 * (or JSON with --json) and saves the results with the adapter, date and commit under bench/results/.
 * Default sizes: the default model's shapes on a hardware GPU, a small set on a software adapter.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Runtime } from '../src/gpu/runtime.ts';
import { benchCase, type BenchResult, type BenchSuite, formatTable, type SizeSet } from './harness.ts';

const SUITES: Array<() => Promise<{ suite: BenchSuite }>> = [
  () => import('./elementwise.bench.ts'),
  () => import('./matmul.bench.ts'),
];

function commit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim();
    return dirty ? `${sha}+dirty` : sha;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      filter: { type: 'string' },
      size: { type: 'string' },
      json: { type: 'boolean', default: false },
      repeats: { type: 'string' },
      out: { type: 'string' },
      wallclock: { type: 'boolean', default: false },
    },
  });
  const rt = await Runtime.create();
  const size: SizeSet = (values.size as SizeSet | undefined) ?? (rt.gpu.info.software ? 'small' : 'model');
  if (size !== 'small' && size !== 'model') throw new Error(`--size must be small or model, not ${size}`);
  const filter = values.filter ? new RegExp(values.filter, 'i') : null;
  const log = (s: string) => (values.json ? process.stderr : process.stdout).write(s + '\n');
  log(rt.gpu.describe());
  log(`sizes: ${size}${rt.gpu.info.software ? ' (software adapter: speeds here say nothing about GPUs)' : ''}`);
  const results: BenchResult[] = [];
  for (const load of SUITES) {
    const { suite } = await load();
    const cases = (await suite.cases(rt, size)).filter((c) => !filter || filter.test(`${suite.family} ${c.name}`));
    for (const c of cases) {
      const r = await benchCase(rt, suite.family, c, { repeats: values.repeats ? Number(values.repeats) : undefined, wallclock: values.wallclock });
      results.push(r);
      log(`  ${r.name}: ${r.ms.toFixed(3)} ms${r.gflops ? `, ${r.gflops.toFixed(1)} GFLOP/s` : ''}${r.gbps ? `, ${r.gbps.toFixed(1)} GB/s` : ''}`);
      c.dispose?.();
    }
    rt.pool.trim();
  }
  const record = { adapter: rt.gpu.info, date: new Date().toISOString(), commit: commit(), size, results };
  const out = values.out ?? `bench/results/${record.date.slice(0, 19).replace(/[:T]/g, '-')}-${rt.gpu.info.name.replace(/[^\w.-]+/g, '_').slice(0, 40)}.json`;
  mkdirSync(out.replace(/\/[^/]*$/, ''), { recursive: true });
  writeFileSync(out, JSON.stringify(record, null, 2));
  if (values.json) process.stdout.write(JSON.stringify(record, null, 2) + '\n');
  else log('\n' + formatTable(results) + `\n\nsaved ${out}`);
}

await main();
process.exit(0);
