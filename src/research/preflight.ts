/**
 * @file Checks the research driver makes before it touches git: prepared data and tokenizer,
 * an API key, and the time budget read from prepare.ts. Kept small and free of prepare.ts
 * imports (the driver must not load the runtime), so the lead can adjust the data check in one
 * place: prepare.ts keeps data in `<cacheDir>/data` and the tokenizer in `<cacheDir>/tokenizer`,
 * with cacheDir = $AUTORESEARCH_CACHE or ~/.cache/autoresearch-ts.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** prepare.ts's cache directory (same rule as its cacheDir()). */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.AUTORESEARCH_CACHE || join(homedir(), '.cache', 'autoresearch-ts');
}

function nonEmptyDir(path: string): boolean {
  try {
    return statSync(path).isDirectory() && readdirSync(path).some((n) => !n.startsWith('.') && !n.endsWith('.tmp'));
  } catch {
    return false;
  }
}

/** null when the data and tokenizer are there, else a message saying what to run. */
export function checkPreparedData(cacheDir: string): string | null {
  const missing = ['data', 'tokenizer'].filter((d) => !nonEmptyDir(join(cacheDir, d)));
  if (missing.length === 0) return null;
  return `no prepared ${missing.join(' or ')} in ${cacheDir}: run \`npm run prepare\` first (it prepares the data and trains the tokenizer; see prepare.ts for the datasets)`;
}

/** null when an API credential is configured, else the message to show. */
export function checkApiKey(apiKey: string | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (apiKey || env.ANTHROPIC_API_KEY || env.ANTHROPIC_AUTH_TOKEN || env.ANTHROPIC_PROFILE) return null;
  return 'ANTHROPIC_API_KEY is not set. The research driver calls Claude through the Anthropic API: ' +
    'export ANTHROPIC_API_KEY=sk-ant-… (from console.anthropic.com) and run again. ' +
    '(To drive the loop with another coding agent instead, point it at program.md.)';
}

/** TIME_BUDGET (seconds) as prepare.ts declares it, or `fallback` if it cannot be read. */
export function readTimeBudget(repoDir: string, fallback = 300): number {
  const path = join(repoDir, 'prepare.ts');
  if (!existsSync(path)) return fallback;
  const m = /export\s+const\s+TIME_BUDGET\s*(?::\s*number\s*)?=\s*([\d_.]+)/.exec(readFileSync(path, 'utf8'));
  const v = m ? Number(m[1].replace(/_/g, '')) : NaN;
  return Number.isFinite(v) && v > 0 ? v : fallback;
}
