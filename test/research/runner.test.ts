import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { alive, REPO_ROOT, waitFor } from './helpers.ts';
import { crashSummary, groupAlive, killOrphan, latestProgress, logTail, parseResultChannel, runTraining, type RunResult } from '../../src/research/runner.ts';

const dir = mkdtempSync(join(tmpdir(), 'autoresearch-runner-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A node script in the temp dir, run as the "train command". */
function script(name: string, body: string): string {
  writeFileSync(join(dir, name), `import { writeSync, writeFileSync } from 'node:fs';\n${body}\n`);
  return `"${process.execPath}" ${name}`;
}

const run = (command: string, extra: Partial<Parameters<typeof runTraining>[0]> = {}) =>
  runTraining({ command, repoDir: dir, logPath: join(dir, 'run.log'), timeoutS: 20, ...extra });

describe('parseResultChannel', () => {
  it('accepts exactly one JSON line with finite numbers', () => {
    expect(parseResultChannel('{"val_bpb": 0.9979, "peak_vram_mb": 45060.2}\n')).toEqual({ ok: true, result: { val_bpb: 0.9979, peak_vram_mb: 45060.2 } });
  });

  it.each([
    ['', /no result on the result channel/],
    ['{"val_bpb":1,"peak_vram_mb":1}\n{"val_bpb":1,"peak_vram_mb":1}\n', /2 lines/],
    ['val_bpb: 0.99\n', /not JSON/],
    ['{"val_bpb":"0.9","peak_vram_mb":1}', /val_bpb is not a positive finite number/],
    ['{"val_bpb":null,"peak_vram_mb":1}', /val_bpb/],
    ['{"val_bpb":0,"peak_vram_mb":1}', /val_bpb/],
    ['{"val_bpb":1}', /peak_vram_mb/],
  ])('rejects %j', (text, why) => {
    const r = parseResultChannel(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(why);
  });
});

describe('runTraining', () => {
  it('reads the result from descriptor 3 and sends output to run.log', async () => {
    const cmd = script('ok.mjs', `
      console.log('step 00001 | loss 3.0');
      console.error('a warning on stderr');
      writeSync(Number(process.env.AUTORESEARCH_RESULT_FD), JSON.stringify({ val_bpb: 0.987654, peak_vram_mb: 1234.5 }) + '\\n');
      console.log('---\\nval_bpb:          0.987654');`);
    let pgid = 0;
    const r = await run(cmd, { onStart: (p) => (pgid = p) });
    expect(r).toMatchObject({ ok: true, valBpb: 0.987654, peakVramMb: 1234.5, error: null, exitCode: 0, timedOut: false, aborted: false });
    expect(pgid).toBeGreaterThan(0);
    const log = readFileSync(join(dir, 'run.log'), 'utf8');
    expect(log).toContain('step 00001');
    expect(log).toContain('a warning on stderr');
    expect(log).toContain('val_bpb:          0.987654');
  });

  it('does not trust the summary on stdout: no descriptor-3 line is a crash', async () => {
    const cmd = script('stdout_only.mjs', `console.log('---\\nval_bpb:          0.500000\\npeak_vram_mb:     1.0');`);
    const r = await run(cmd);
    expect(r.ok).toBe(false);
    expect(r.valBpb).toBeNull();
    expect(r.error).toMatch(/no result on the result channel \(descriptor 3\)/);
  });

  it('treats two result lines, or a result followed by a failing exit, as a crash', async () => {
    const two = await run(script('two.mjs', `const l = JSON.stringify({ val_bpb: 1, peak_vram_mb: 1 }) + '\\n'; writeSync(3, l); writeSync(3, l);`));
    expect(two.error).toMatch(/2 lines/);
    const failing = await run(script('fail_after.mjs', `writeSync(3, JSON.stringify({ val_bpb: 1, peak_vram_mb: 1 }) + '\\n'); process.exit(3);`));
    expect(failing).toMatchObject({ ok: false, exitCode: 3, error: 'the train command exited with code 3' });
  });

  it('kills the whole process group at the deadline', async () => {
    // the job starts a grandchild that would outlive it; both must go
    const cmd = script('hang.mjs', `
      import { spawn } from 'node:child_process';
      const g = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
      writeFileSync('grandchild.pid', String(g.pid));
      setInterval(() => {}, 1000);`);
    // neither ends on its own: that the run returns at all shows the deadline killed it (4 s: time
    // for the job to start its grandchild on a busy machine)
    const r = await run(cmd, { timeoutS: 4 });
    expect(r).toMatchObject({ ok: false, timedOut: true });
    expect(r.error).toMatch(/killed after the 4 s limit/);
    const grandchild = Number(readFileSync(join(dir, 'grandchild.pid'), 'utf8'));
    await waitFor('the grandchild to be gone', () => !alive(grandchild));
  });

  it('abandons a run on abort', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 500);
    const r = await run(script('long.mjs', 'setTimeout(() => {}, 60000);'), { signal: ac.signal });
    expect(r).toMatchObject({ ok: false, aborted: true, error: 'abandoned (interrupted)' });
  });

  it('gets descriptor 3 through `node --import tsx` (the default command form) but not through the tsx CLI', async () => {
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
    writeFileSync(join(dir, 'typed.ts'), "import { writeSync } from 'node:fs';\nconst line: string = JSON.stringify({ val_bpb: 1.25, peak_vram_mb: 3 });\nwriteSync(Number(process.env.AUTORESEARCH_RESULT_FD), line + '\\n');\n");
    expect(await run(`"${process.execPath}" --import tsx typed.ts`)).toMatchObject({ ok: true, valBpb: 1.25 });
    // the tsx CLI runs the file in a child that has its own use for descriptor 3
    expect((await run(`"${join(REPO_ROOT, 'node_modules/.bin/tsx')}" typed.ts`)).ok).toBe(false);
  });

  it('reports a command that cannot start', async () => {
    const r = await run('/nonexistent/train-command');
    expect(r.ok).toBe(false);
    expect(r.exitCode).toBe(127); // the shell's "not found"
  });
});

describe('orphans, logs and crash summaries', () => {
  it('kills an orphaned group working in the repo, and leaves others alone', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { cwd: dir, detached: true, stdio: 'ignore' });
    const pgid = child.pid!;
    expect(groupAlive(pgid)).toBe(true);
    expect(killOrphan(pgid, tmpdir())).toBe(existsSync('/proc/self/stat') ? false : true); // not working in that dir
    if (existsSync('/proc/self/stat')) {
      expect(killOrphan(pgid, dir)).toBe(true);
    }
    await new Promise((res) => child.on('exit', res));
    expect(groupAlive(pgid)).toBe(false);
    expect(killOrphan(pgid, dir)).toBe(false);
  });

  it('tails logs with \\r progress collapsed, and finds the latest progress', () => {
    const path = join(dir, 'progress.log');
    writeFileSync(path, 'header\nstep 00001 (1.0%) | loss: 9.000000\rstep 00002 (2.5%) | loss: 8.500000 | lrm: 1.00\rstep 00003 (3.1%) | loss: 8.250000 | lrm');
    expect(logTail(path, 5)).toBe('header\nstep 00003 (3.1%) | loss: 8.250000 | lrm');
    expect(latestProgress(path)).toBe('step 3 (3.1%) loss 8.250000');
    expect(logTail(join(dir, 'missing.log'))).toBe('');
    expect(latestProgress(join(dir, 'missing.log'))).toBe('');
  });

  it('names why a run crashed', () => {
    const base: RunResult = { ok: false, valBpb: null, peakVramMb: null, error: 'x', exitCode: 1, signal: null, timedOut: false, aborted: false, durationS: 1 };
    expect(crashSummary(base, 'step 1\nTypeError: x is undefined\n    at foo')).toBe('TypeError');
    expect(crashSummary(base, 'step 1\nFAIL')).toBe('loss diverged, FAIL');
    expect(crashSummary({ ...base, timedOut: true }, '')).toBe('timeout');
    expect(crashSummary(base, 'nothing useful')).toBe('exit code 1');
    expect(crashSummary({ ...base, exitCode: 0 }, '')).toBe('no result');
  });
});
