/**
 * @file `npx tsx bench/sandbox_overhead.ts [--steps N] [--rounds R] [--json]`: what the sandbox
 * costs an honest experiment. The same train.ts trains N optimizer steps directly (`node --import
 * tsx train.ts`, as `npm run train`, with AUTORESEARCH_MAX_STEPS) and through runExperiment (build, permission model, network namespace,
 * harness preload), alternating R times; per-step times come from train.ts's own `dt:` lines, the
 * first steps (pipeline compilation) left out. Reports steps per 300 s of steady training with and
 * without the sandbox and the loss, with the adapter and date; saves JSON under bench/results/.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { runExperiment } from '../src/research/experiment.ts';
import { netIsolation } from '../src/research/sandbox.ts';

const USAGE = 'Usage: npx tsx bench/sandbox_overhead.ts [--steps N (default 40)] [--rounds R (default 2)] [--warmup W (default 3)] [--parallel] [--json]\n' +
  '  --parallel  run the direct and the sandboxed training at the same time (a paired comparison on a shared, busy machine)';

function runDirect(steps: number, repo: string, logPath: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const env = { ...process.env, AUTORESEARCH_MAX_STEPS: String(steps) };
    const child = spawn(process.execPath, ['--import', 'tsx', 'train.ts'], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', () => {
      writeFileSync(logPath, out);
      resolvePromise();
    });
  });
}

function stepTimes(log: string): number[] {
  return [...log.matchAll(/dt: (\d+)ms/g)].map((m) => Number(m[1]));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<number> {
  let v;
  try {
    v = parseArgs({ options: { steps: { type: 'string' }, rounds: { type: 'string' }, warmup: { type: 'string' }, json: { type: 'boolean' }, parallel: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (e) {
    console.error(`${(e as Error).message.split('\n')[0]}\n${USAGE}`);
    return 2;
  }
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  const steps = Number(v.steps ?? 40);
  const rounds = Number(v.rounds ?? 2);
  const warmup = Number(v.warmup ?? 3);
  if (![steps, rounds, warmup].every((x) => Number.isInteger(x) && x >= 0) || steps <= warmup) {
    console.error(`--steps, --rounds and --warmup take integers, steps > warmup\n${USAGE}`);
    return 2;
  }
  const repo = resolve('.');
  const work = mkdtempSync(join(tmpdir(), 'sandbox-overhead-'));
  const source = readFileSync(join(repo, 'train.ts'), 'utf8');
  const runs: { mode: 'direct' | 'sandbox'; dt: number[] }[] = [];
  let adapter = '';
  try {
    for (let r = 0; r < rounds; r++) {
      const one = async (mode: 'direct' | 'sandbox') => {
        const logPath = join(work, `${mode}-${r}.log`);
        if (mode === 'direct') await runDirect(steps, repo, logPath);
        else {
          // the guard's type check is not training time (and in --parallel it would slow the direct run)
          const res = await runExperiment({ repoDir: repo, trainSource: source, logPath, maxSteps: steps, evalRows: 1, evalSeqLen: 64, guard: { check: () => ({ ok: true, problems: [] }) } });
          if (!res.ok) throw new Error(`sandboxed run failed: ${res.error}`);
        }
        const log = readFileSync(logPath, 'utf8');
        adapter ||= /^gpu: ([^|]+)/m.exec(log)?.[1]?.trim() ?? 'unknown';
        const dt = stepTimes(log).slice(warmup);
        if (dt.length < steps - warmup) throw new Error(`${mode} run ${r}: ${dt.length} step times in its log (expected ${steps - warmup})`);
        runs.push({ mode, dt });
        console.error(`${mode} round ${r + 1}: median step ${median(dt).toFixed(0)} ms`);
      };
      if (v.parallel) await Promise.all([one('direct'), one('sandbox')]);
      else {
        await one('direct');
        await one('sandbox');
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const all = (mode: string) => runs.filter((x) => x.mode === mode).flatMap((x) => x.dt);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const direct = all('direct');
  const sandbox = all('sandbox');
  const stepsPer300 = (xs: number[]) => 300_000 / mean(xs);
  const result = {
    date: new Date().toISOString(),
    adapter,
    network_namespace: netIsolation().kind === 'netns',
    steps_per_run: steps,
    warmup_steps_left_out: warmup,
    rounds,
    parallel: Boolean(v.parallel),
    load_average_1m: loadavg()[0],
    direct: { mean_step_ms: mean(direct), median_step_ms: median(direct), steps_per_300s: stepsPer300(direct) },
    sandbox: { mean_step_ms: mean(sandbox), median_step_ms: median(sandbox), steps_per_300s: stepsPer300(sandbox) },
    steps_lost_percent: 100 * (1 - stepsPer300(sandbox) / stepsPer300(direct)),
    steps_lost_percent_by_median: 100 * (1 - median(direct) / median(sandbox)),
  };
  mkdirSync(join(repo, 'bench', 'results'), { recursive: true });
  writeFileSync(join(repo, 'bench', 'results', 'sandbox_overhead.json'), JSON.stringify(result, null, 2) + '\n');
  if (v.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`sandbox overhead on ${adapter}, ${result.date} (${rounds} rounds × ${steps} steps, first ${warmup} left out${result.parallel ? ', direct and sandboxed side by side' : ''}; load average ${result.load_average_1m.toFixed(1)})`);
    console.log(`  direct : ${result.direct.mean_step_ms.toFixed(1)} ms/step mean, ${result.direct.median_step_ms.toFixed(1)} median → ${result.direct.steps_per_300s.toFixed(0)} steps / 300 s`);
    console.log(`  sandbox: ${result.sandbox.mean_step_ms.toFixed(1)} ms/step mean, ${result.sandbox.median_step_ms.toFixed(1)} median → ${result.sandbox.steps_per_300s.toFixed(0)} steps / 300 s`);
    console.log(`  steps lost to the sandbox: ${result.steps_lost_percent.toFixed(2)}% (by median step: ${result.steps_lost_percent_by_median.toFixed(2)}%)`);
  }
  return 0;
}

process.exit(await main());
