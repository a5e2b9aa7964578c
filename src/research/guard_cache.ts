/**
 * @file One TrainGuard per set of fixed files. Building a guard's type-checking project costs
 * seconds (lib and @types files parsed once), and the driver's checkout and each workspace copied
 * from it have the same prepare.ts, src/ and configs, so they share one: a text the guard accepts
 * for one accepts for all (the fingerprint is hashProtected's, which the runs are checked against).
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { hashProtected, TrainGuard } from './guard.ts';

const guards = new Map<string, TrainGuard>();

export function guardFor(repoDir: string, file = 'train.ts'): TrainGuard {
  const key = createHash('sha256').update(JSON.stringify([file, hashProtected(repoDir)])).digest('hex');
  let guard = guards.get(key);
  if (!guard) guards.set(key, (guard = new TrainGuard({ repoDir: resolve(repoDir), file })));
  return guard;
}
