/**
 * @file `npm run bench [-- --suite LIST] [--filter RE] [--size small|model] [--json] [--repeats N]
 * [--warmup N] [--wallclock] [--out FILE]`
 * Runs the kernel suites and the training-step bench on the adapter this machine has, prints a table
 * (or JSON with --json) and saves the results with the adapter, date and commit under bench/results/.
 * Default sizes: the default model's shapes on a hardware GPU, a small set on a software adapter.
 * `--suite` takes family names (comma-separated: elementwise, matmul, attention, norm, loss,
 * optimizer, embedding, eval_bpb, step); `--filter` is a regular expression over `family case-name`.
 * A case that throws is reported as failed (the exit status is then 1) and the run goes on.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Runtime } from '../src/gpu/runtime.ts';
import { choiceOption, intOption, runCommand, UsageError } from '../src/util/cli.ts';
import { type BenchCase, benchCase, type BenchResult, type BenchSuite, formatBreakdown, formatExtra, formatTable, type SizeSet } from './harness.ts';

/** Suites in run order; the training step last (it holds the whole model until the process ends). */
const SUITES: Array<() => Promise<{ suite: BenchSuite }>> = [
  () => import('./elementwise.bench.ts'),
  () => import('./matmul.bench.ts'),
  () => import('./attention.bench.ts'),
  () => import('./norm.bench.ts'),
  () => import('./loss.bench.ts'),
  () => import('./optimizer.bench.ts'),
  () => import('./embedding.bench.ts'),
  () => import('./prepare.bench.ts'), // family eval_bpb: the metric's kernel
  () => import('./step.bench.ts'),
];

/** A case that did not produce a result: skipped (cannot run on this adapter) or failed (threw). */
interface NotRun {
  family: string;
  name: string;
  reason: string;
}

function commit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim();
    return dirty ? `${sha}+dirty` : sha;
  } catch {
    return 'unknown';
  }
}

const BENCH_CLI = {
  run: 'npm run bench',
  name: 'bench',
  usage: `Usage: npm run bench [-- options]     (or: npx tsx bench/run.ts [options])

Runs the kernel suites and the training-step bench on this machine's adapter, prints a table and
saves JSON (adapter, date, commit, results) under bench/results/.

  --suite LIST      families to run, comma-separated: elementwise, matmul, attention, norm, loss,
                    optimizer, embedding, eval_bpb, step (default: all)
  --filter RE       only cases whose "family case-name" matches this regular expression
  --size SET        small | model (default: model on a hardware GPU, small on a software adapter)
  --repeats N       timed repetitions per case (positive integer)
  --warmup N        untimed runs before timing (non-negative integer)
  --wallclock       time with the wall clock instead of GPU timestamps
  --json            print the JSON record on stdout (logs go to stderr)
  --out FILE        where to save the JSON (default bench/results/<date>-<adapter>.json)
  -h, --help        this text`,
  options: {
    suite: { type: 'string' },
    filter: { type: 'string' },
    size: { type: 'string' },
    json: { type: 'boolean', default: false },
    repeats: { type: 'string' },
    warmup: { type: 'string' },
    out: { type: 'string' },
    wallclock: { type: 'boolean', default: false },
  },
} as const;

async function bench({ values }: { values: { suite?: string; filter?: string; size?: string; json: boolean; repeats?: string; warmup?: string; out?: string; wallclock: boolean } }): Promise<number> {
  // every argument is checked before the GPU starts
  const timing = { repeats: intOption('repeats', values.repeats, 1), warmup: intOption('warmup', values.warmup), wallclock: values.wallclock };
  const sizeChoice = choiceOption<SizeSet>('size', values.size, ['small', 'model']);
  let filter: RegExp | null = null;
  try {
    filter = values.filter ? new RegExp(values.filter, 'i') : null;
  } catch {
    throw new UsageError(`--filter '${values.filter}' is not a regular expression`);
  }
  const suites = await Promise.all(SUITES.map(async (load) => (await load()).suite));
  const families = suites.map((s) => s.family);
  const wanted = values.suite ? values.suite.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean) : null;
  const unknown = (wanted ?? []).filter((w) => !families.includes(w));
  if (unknown.length) throw new UsageError(`--suite: unknown ${unknown.join(', ')}; the suites are ${families.join(', ')}`);
  // with --json, stdout carries the JSON alone: what code under test logs goes to stderr
  if (values.json) console.log = console.error;
  const rt = await Runtime.create();
  const size: SizeSet = sizeChoice ?? (rt.gpu.info.software ? 'small' : 'model');
  const log = (s: string) => (values.json ? process.stderr : process.stdout).write(s + '\n');
  log(rt.gpu.describe());
  log(`sizes: ${size}${rt.gpu.info.software ? ' (software adapter: speeds here say nothing about GPUs)' : ''}`);
  const results: BenchResult[] = [];
  const skipped: NotRun[] = [];
  const failed: NotRun[] = [];
  for (const suite of suites) {
    if (wanted && !wanted.includes(suite.family)) continue;
    let all: BenchCase[];
    try {
      all = await suite.cases(rt, size);
    } catch (e) {
      // a suite that allocates its inputs eagerly can fail here (a buffer over the adapter's limit)
      failed.push({ family: suite.family, name: '(building the cases)', reason: (e as Error).message ?? String(e) });
      log(`  ${suite.family}: FAILED to build its cases: ${(e as Error).message}`);
      continue;
    }
    const chosen = all.filter((c) => !filter || filter.test(`${suite.family} ${c.name}`));
    for (const c of chosen) {
      if (c.skip) {
        skipped.push({ family: suite.family, name: c.name, reason: c.skip });
        log(`  ${c.name}: skipped (${c.skip})`);
        continue;
      }
      try {
        const r = await benchCase(rt, suite.family, c, timing);
        results.push(r);
        log(`  ${r.name}: ${r.ms.toFixed(3)} ms${r.gflops ? `, ${r.gflops.toFixed(1)} GFLOP/s` : ''}${r.gbps ? `, ${r.gbps.toFixed(1)} GB/s` : ''}`);
      } catch (e) {
        const reason = (e as Error).message ?? String(e);
        failed.push({ family: suite.family, name: c.name, reason });
        log(`  ${c.name}: FAILED ${reason}`);
      } finally {
        c.dispose?.();
      }
    }
    // cases built eagerly but filtered out still hold inputs (dispose is idempotent)
    for (const c of all) if (!chosen.includes(c)) c.dispose?.();
    rt.pool.trim();
  }
  const record = { adapter: rt.gpu.info, date: new Date().toISOString(), commit: commit(), size, results, skipped, failed };
  const out = values.out ?? `bench/results/${record.date.slice(0, 19).replace(/[:T]/g, '-')}-${rt.gpu.info.name.replace(/[^\w.-]+/g, '_').slice(0, 40)}.json`;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(record, null, 2));
  if (values.json) {
    process.stdout.write(JSON.stringify(record, null, 2) + '\n');
  } else {
    const sections = [formatTable(results)];
    for (const r of results) if (r.extra || r.note) sections.push(formatExtra(r));
    for (const r of results) if (r.breakdown?.length) sections.push(formatBreakdown(r));
    const list = (xs: NotRun[]) => xs.map((x) => `  ${x.name.startsWith(x.family) ? '' : `${x.family} `}${x.name}: ${x.reason}`).join('\n');
    if (skipped.length) sections.push('skipped:\n' + list(skipped));
    if (failed.length) sections.push('FAILED:\n' + list(failed));
    log('\n' + sections.join('\n\n') + `\n\nsaved ${out}`);
  }
  return failed.length ? 1 : 0;
}

process.exit(await runCommand(BENCH_CLI, process.argv.slice(2), bench));
