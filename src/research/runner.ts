/**
 * @file Runs one training job for the driver: the train command (default `node --import tsx
 * train.ts`: one process, since wrappers such as npx or the tsx CLI do not pass descriptor 3 on)
 * through the shell, in the repo root, in its own process group, stdout and stderr to run.log,
 * and an extra pipe on descriptor 3 with AUTORESEARCH_RESULT_FD=3 in its environment. The
 * harness (prepare.ts's evaluate_bpb) writes exactly one JSON line `{"val_bpb", "peak_vram_mb"}`
 * there; that line, with exit code 0, is the only thing trusted as a result. Anything else
 * (no line, two lines, bad JSON, a non-zero exit, a timeout) is a crash. A hard kill of the
 * whole group comes at the deadline; an AbortSignal abandons the run the same way.
 */
import { spawn } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, realpathSync, statSync } from 'node:fs';

export const RESULT_FD = 3;

export interface RunOptions {
  /** Shell command line, run with cwd = repoDir. */
  command: string;
  repoDir: string;
  /** run.log path (truncated at the start of the run). */
  logPath: string;
  /** Hard kill after this many seconds (2 × TIME_BUDGET + startup allowance). */
  timeoutS: number;
  /** Environment for the job (AUTORESEARCH_RESULT_FD is added). */
  env?: NodeJS.ProcessEnv;
  /** Abandon the run (kills the process group). */
  signal?: AbortSignal;
  /** Called once the job has started, with its process-group id. */
  onStart?: (pgid: number) => void;
  /** Run this argv directly (no shell) instead of `command` (the sandbox). */
  argv?: string[];
  /** Bytes written to a pipe on descriptor 4 (the harness's setup), then closed. */
  setupData?: Buffer;
  /** Only result lines signed with this key (HMAC-SHA256, the harness's) count. */
  resultKey?: string;
}

export interface RunResult {
  ok: boolean;
  valBpb: number | null;
  peakVramMb: number | null;
  /** Why there is no result (null when ok). */
  error: string | null;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  aborted: boolean;
  durationS: number;
  /** Training time by the harness's clock (signed results only). */
  harnessTrainingS?: number | null;
}

export interface HarnessResult {
  val_bpb: number;
  peak_vram_mb: number;
  training_seconds?: number;
}

export const SETUP_FD = 4;

/**
 * Parse a signed result channel: one line `<hex HMAC-SHA256 of payload> <payload>`, the payload
 * {"val_bpb", "peak_vram_mb", "training_seconds", …} or {"error"} (the harness ended the run).
 * Unsigned or wrongly signed lines (train.ts writing to the descriptor) are not results.
 */
export function parseSignedChannel(text: string, key: string): { ok: true; result: HarnessResult } | { ok: false; error: string } {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (lines.length === 0) return { ok: false, error: 'no result on the result channel: the run did not reach evaluate_bpb' };
  if (lines.length > 1) return { ok: false, error: `the result channel carried ${lines.length} lines; exactly one signed line is expected (something besides the harness wrote to it)` };
  const space = lines[0].indexOf(' ');
  const mac = space > 0 ? lines[0].slice(0, space) : '';
  const payload = space > 0 ? lines[0].slice(space + 1) : lines[0];
  const want = createHmac('sha256', key).update(payload).digest('hex');
  if (mac.length !== want.length || !timingSafeEqual(Buffer.from(mac), Buffer.from(want))) {
    return { ok: false, error: `the result line is not signed by the harness: ${lines[0].slice(0, 120)}` };
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(payload) as Record<string, unknown>;
  } catch {
    return { ok: false, error: `the harness's result is not JSON: ${payload.slice(0, 120)}` };
  }
  if (typeof parsed.error === 'string') return { ok: false, error: `the harness stopped the run: ${parsed.error}` };
  const r = parseResultChannel(JSON.stringify({ val_bpb: parsed.val_bpb, peak_vram_mb: parsed.peak_vram_mb }));
  if (!r.ok) return r;
  const ts = parsed.training_seconds;
  return { ok: true, result: { ...r.result, training_seconds: typeof ts === 'number' && Number.isFinite(ts) ? ts : undefined } };
}

/** Parse what arrived on descriptor 3: exactly one JSON line with finite val_bpb and peak_vram_mb. */
export function parseResultChannel(text: string): { ok: true; result: HarnessResult } | { ok: false; error: string } {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (lines.length === 0) return { ok: false, error: 'no result on the result channel (descriptor 3): the run did not reach evaluate_bpb' };
  if (lines.length > 1) return { ok: false, error: `the result channel carried ${lines.length} lines; exactly one is expected` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(lines[0]);
  } catch {
    return { ok: false, error: `the result channel carried something that is not JSON: ${lines[0].slice(0, 120)}` };
  }
  const r = parsed as Record<string, unknown>;
  const val = r?.val_bpb;
  const mem = r?.peak_vram_mb;
  if (typeof val !== 'number' || !Number.isFinite(val) || val <= 0) return { ok: false, error: `the result channel's val_bpb is not a positive finite number: ${lines[0].slice(0, 120)}` };
  if (typeof mem !== 'number' || !Number.isFinite(mem) || mem < 0) return { ok: false, error: `the result channel's peak_vram_mb is not a finite number ≥ 0: ${lines[0].slice(0, 120)}` };
  return { ok: true, result: { val_bpb: val, peak_vram_mb: mem } };
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

const KILL_GRACE_MS = 3000;

/** Run the training command once; resolves when the job and its descriptor-3 pipe are done. */
export function runTraining(opts: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const logFd = openSync(opts.logPath, 'w');
  const env: NodeJS.ProcessEnv = { ...(opts.env ?? process.env), AUTORESEARCH_RESULT_FD: String(RESULT_FD) };
  if (opts.setupData) env.AUTORESEARCH_HARNESS_FD = String(SETUP_FD);
  const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', logFd, logFd, 'pipe'];
  if (opts.setupData) stdio.push('pipe');
  const spawnOpts = {
    cwd: opts.repoDir,
    detached: true, // its own process group: a kill reaches npx, tsx and node alike
    stdio,
    env,
  };
  const child = opts.argv ? spawn(opts.argv[0], opts.argv.slice(1), spawnOpts) : spawn(opts.command, { ...spawnOpts, shell: true });
  closeSync(logFd); // the child holds its own copy
  if (opts.setupData) {
    const setupStream = child.stdio[SETUP_FD] as NodeJS.WritableStream | null;
    setupStream?.on('error', () => {}); // a child that died early closed it
    setupStream?.end(opts.setupData);
  }

  return new Promise((resolvePromise) => {
    let channel = '';
    let timedOut = false;
    let aborted = false;
    let exitCode: number | null = null;
    let exitSignal: string | null = null;
    let exited = false;
    let channelClosed = false;
    let spawnError: string | null = null;
    const pgid = child.pid ?? 0;
    if (pgid) opts.onStart?.(pgid);

    const stop = (why: 'timeout' | 'abort') => {
      if (exited || !pgid) return;
      if (why === 'timeout') timedOut = true;
      else aborted = true;
      killGroup(pgid, 'SIGTERM');
      setTimeout(() => killGroup(pgid, 'SIGKILL'), KILL_GRACE_MS).unref();
    };
    const timer = setTimeout(() => stop('timeout'), Math.max(0, opts.timeoutS * 1000));
    const onAbort = () => stop('abort');
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });

    const resultStream = child.stdio[RESULT_FD] as NodeJS.ReadableStream | null;
    if (resultStream) {
      resultStream.setEncoding('utf8');
      resultStream.on('data', (chunk: string) => {
        if (channel.length < 65536) channel += chunk;
      });
      resultStream.on('error', () => {});
      resultStream.on('close', () => {
        channelClosed = true;
        finish();
      });
    } else {
      channelClosed = true;
    }

    child.on('error', (e) => {
      spawnError = `could not start the train command: ${e.message}`;
      exited = true;
      channelClosed = true;
      finish();
    });
    child.on('exit', (code, sig) => {
      exitCode = code;
      exitSignal = sig;
      exited = true;
      // stragglers of the group (a grandchild still holding descriptor 3) go too
      if (pgid) killGroup(pgid, 'SIGKILL');
      finish();
    });

    let done = false;
    function finish() {
      if (done || !exited || !channelClosed) return;
      done = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      const durationS = (performance.now() - t0) / 1000;
      const base = { exitCode, signal: exitSignal, timedOut, aborted, durationS };
      let error: string | null = null;
      let parsed: HarnessResult | null = null;
      if (spawnError) error = spawnError;
      else if (timedOut) error = `killed after the ${opts.timeoutS.toFixed(0)} s limit (2 × TIME_BUDGET + startup allowance)`;
      else if (aborted) error = 'abandoned (interrupted)';
      else if (exitCode !== 0) error = exitSignal ? `the train command was killed by ${exitSignal}` : `the train command exited with code ${exitCode}`;
      else {
        const r = opts.resultKey ? parseSignedChannel(channel, opts.resultKey) : parseResultChannel(channel);
        if (r.ok) parsed = r.result;
        else error = r.error;
      }
      if (!parsed && opts.resultKey && exitCode !== 0 && !timedOut && !aborted && !spawnError) {
        // the harness's own reason (a signed failure line) says more than the exit code
        const r = parseSignedChannel(channel, opts.resultKey);
        if (!r.ok && r.error.startsWith('the harness stopped the run')) error = r.error;
      }
      if (!parsed && opts.resultKey && error && !/harness stopped/.test(error)) {
        // the harness says why on stderr when it could not sign a failure line (it had already scored)
        const m = /^harness: (.*)$/m.exec(logTail(opts.logPath, 40));
        if (m) error = `the harness stopped the run: ${m[1]}`;
      }
      const harnessTrainingS = parsed?.training_seconds ?? null;
      resolvePromise(parsed
        ? { ok: true, valBpb: parsed.val_bpb, peakVramMb: parsed.peak_vram_mb, error: null, ...base, harnessTrainingS }
        : { ok: false, valBpb: null, peakVramMb: null, error, ...base, harnessTrainingS });
    }
  });
}

/**
 * A few words on why a run failed, for results.tsv descriptions (as the reference's
 * "LSTM model (shape mismatch)"): the last error name in the log, FAIL, a timeout, or the exit.
 */
export function crashSummary(result: RunResult, tail: string): string {
  if (result.timedOut) return 'timeout';
  const lines = tail.split('\n').reverse();
  if (lines.some((l) => l.trim() === 'FAIL')) return 'loss diverged, FAIL';
  for (const l of lines) {
    const m = /\b([A-Z][A-Za-z]*(?:Error|Exception))\b/.exec(l);
    if (m) return m[1];
  }
  if (result.exitCode !== null && result.exitCode !== 0) return `exit code ${result.exitCode}`;
  if (result.signal) return `killed by ${result.signal}`;
  return 'no result';
}

/** The last `lines` lines of a log (progress lines rewritten with \r count as their last state). */
export function logTail(path: string, lines = 50, maxBytes = 64 * 1024): string {
  if (!existsSync(path)) return '';
  const text = readTailBytes(path, maxBytes).split('\n').map((l) => l.split('\r').filter((s) => s.trim() !== '').pop() ?? '');
  return text.slice(-lines).join('\n').trimEnd();
}

/** The latest progress of a running job from its log: "step 00042 (13.2%) loss 4.123456", or ''. */
export function latestProgress(path: string): string {
  if (!existsSync(path)) return '';
  const tail = readTailBytes(path, 2048);
  const segments = tail.split(/[\r\n]/).filter((s) => /step \d+/.test(s));
  const last = segments.pop();
  if (!last) return '';
  const step = /step (\d+) \(([\d.]+)%\)/.exec(last);
  const loss = /loss: ([\d.]+)/.exec(last);
  return [step ? `step ${Number(step[1])} (${step[2]}%)` : '', loss ? `loss ${loss[1]}` : ''].filter(Boolean).join(' ');
}

function readTailBytes(path: string, n: number): string {
  const size = statSync(path).size;
  const start = Math.max(0, size - n);
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(size - start);
    readSync(fd, buf, 0, buf.length, start);
    return buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Is a process group still alive? */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Pids in process group `pgid`, from /proc (empty where there is no /proc). */
function groupMembers(pgid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // fields after the parenthesised command: state ppid pgrp …
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/**
 * Stop a training job left running by a driver that was killed (kill -9 leaves the job's own
 * process group alive). Where there is /proc, only a group with a member working in `repoDir`
 * is killed, so a reused pid is left alone. Returns true if a group was killed.
 */
export function killOrphan(pgid: number, repoDir: string): boolean {
  if (!pgid || !groupAlive(pgid)) return false;
  if (existsSync('/proc/self/stat')) {
    const repo = realpathSync(repoDir);
    const ours = groupMembers(pgid).some((pid) => {
      try {
        return realpathSync(readlinkSync(`/proc/${pid}/cwd`)) === repo;
      } catch {
        return false;
      }
    });
    if (!ours) return false;
  }
  killGroup(pgid, 'SIGKILL');
  return true;
}
