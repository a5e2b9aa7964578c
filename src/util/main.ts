/**
 * @file Entry-point detection for ESM files that are both importable and runnable (train.ts,
 * prepare.ts): `if (isMain(import.meta.url)) await main();`. Depends on nothing else in src/.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** True when the module at `moduleUrl` is the script node was started with. */
export function isMain(moduleUrl: string): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}
