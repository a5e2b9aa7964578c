/**
 * @file A Redis for the queue tests. AUTORESEARCH_TEST_REDIS=redis://HOST:PORT uses one you run;
 * otherwise the tests start Debian's `redis-server` on a free 127.0.0.1 port (no persistence) and
 * stop it afterwards. Without either, they fail with what to install: the queue is the feature
 * under test, so there is nothing to skip to.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { checkRedis, redisServerPath } from '../../src/research/executors.ts';

export interface TestRedis {
  url: string;
  stop: () => Promise<void>;
}

export const REDIS_MISSING = 'the queue tests need Redis: install it (Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis) ' +
  'so they can start redis-server on a free loopback port, or point AUTORESEARCH_TEST_REDIS at one (redis://127.0.0.1:6379)';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startTestRedis(): Promise<TestRedis> {
  const given = process.env.AUTORESEARCH_TEST_REDIS;
  if (given) {
    await checkRedis(given);
    return { url: given, stop: async () => {} };
  }
  const bin = redisServerPath();
  if (!bin) throw new Error(REDIS_MISSING);
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' });
    const url = `redis://127.0.0.1:${port}`;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const t0 = Date.now();
    for (;;) {
      try {
        await checkRedis(url, 1000);
        return {
          url,
          stop: async () => {
            child.kill('SIGTERM');
            await exited;
          },
        };
      } catch (e) {
        if (child.exitCode !== null || Date.now() - t0 > 10_000) {
          child.kill('SIGKILL');
          if (attempt >= 2) throw new Error(`redis-server did not start on 127.0.0.1:${port}: ${(e as Error).message}`);
          break; // the port was taken meanwhile: another one
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}
