/**
 * @file Module-loader hooks of a sandboxed experiment (registered by harness.ts before train.ts
 * loads; they run on Node's loader thread). The guard's import rule, enforced on resolved URLs so
 * no spelling (percent-encoding, `..`, data: URLs, builtins, dynamic import) gets around it:
 * train.ts may import only prepare.ts, modules under src/ outside src/research/, and the webgpu
 * package. Other modules (the project's fixed code) import what they need.
 */

interface HookData {
  /** file: URL of the transpiled train.ts. */
  trainUrl: string;
  /** file: URL of the build folder (ends with /). */
  buildUrl: string;
  /** file: URL of the webgpu package's folder (ends with /). */
  webgpuUrl: string;
}

let data: HookData | null = null;

export function initialize(d: HookData): void {
  data = d;
}

type Resolved = { url: string; format?: string | null; shortCircuit?: boolean };
type NextResolve = (specifier: string, context: unknown) => Promise<Resolved>;

/** Is `url` (already resolved) something train.ts may import? */
export function trainMayImport(url: string, d: HookData): boolean {
  if (url.startsWith(d.webgpuUrl)) return true;
  if (!url.startsWith(d.buildUrl)) return false;
  const rel = url.slice(d.buildUrl.length);
  if (rel.includes('?') || rel.includes('#') || rel.includes('%')) return false;
  if (rel === 'prepare.js') return true;
  return rel.startsWith('src/') && !rel.startsWith('src/research/') && rel.endsWith('.js');
}

export async function resolve(specifier: string, context: { parentURL?: string }, next: NextResolve): Promise<Resolved> {
  const d = data;
  if (!d || context.parentURL !== d.trainUrl) return next(specifier, context);
  let resolved: Resolved;
  try {
    resolved = await next(specifier, context);
  } catch {
    throw new Error(`sandbox: train.ts may not import '${specifier}' (it does not resolve)`);
  }
  if (!trainMayImport(resolved.url, d)) {
    throw new Error(`sandbox: train.ts may not import '${specifier}' (${resolved.url}): only ./prepare.ts, modules under ./src/ (not ./src/research/) and 'webgpu'`);
  }
  return resolved;
}
