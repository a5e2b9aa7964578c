/**
 * @file `npm run train`: checks the command line (--help, no options) before anything starts, prepares
 * the built-in corpus if nothing is prepared yet (prepare --if-missing), then runs train.ts as its own
 * process exactly as `npx tsx train.ts` does, and exits with its status.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { main as prepare } from '../prepare.ts';
import { reportError, trainCommandLine } from './util/cli.ts';

trainCommandLine(process.argv.slice(2));
try {
  await prepare(['--if-missing']);
} catch (e) {
  process.exit(reportError({ run: 'npm run prepare', name: 'prepare' }, e));
}
const root = fileURLToPath(new URL('../', import.meta.url));
const run = spawnSync(process.execPath, ['--import', 'tsx', 'train.ts'], { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? 1);
