/**
 * @file Helpers for the research driver's tests: a throwaway git repo holding the fake project
 * (fixtures/project, with node_modules linked so the guard can type-check), a fake Messages API
 * on 127.0.0.1 that the real SDK talks to, scripted replies (tool calls, text, errors), and
 * driver options that run the fake training command.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULTS, type DriverOutput, type ResearchOptions } from '../../src/research/driver.ts';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(HERE, '../..');
export const FIXTURES = join(HERE, 'fixtures');
export const FAKE_TRAIN = join(FIXTURES, 'fake_train.mjs');
export const TEST_MODEL = 'claude-sonnet-5-5';

export function git(dir: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd: dir, encoding: 'utf8' }).trim();
}

/** A fresh git repo with the fake project committed on `main`; returns its path. */
export function makeProject(edit?: (dir: string) => void): string {
  const dir = mkdtempSync(join(tmpdir(), 'autoresearch-test-'));
  cpSync(join(FIXTURES, 'project'), dir, { recursive: true });
  renameSync(join(dir, 'gitignore'), join(dir, '.gitignore'));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  edit?.(dir);
  git(dir, 'init', '-q', '-b', 'main');
  git(dir, 'config', 'user.name', 'autoresearch tests');
  git(dir, 'config', 'user.email', 'tests@autoresearch-ts.local');
  git(dir, 'config', 'commit.gpgsign', 'false');
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'initial');
  return dir;
}

/** What the driver needs of the real project (the working tree, so work in progress counts too). */
export const REAL_PROJECT_FILES = ['train.ts', 'prepare.ts', 'program.md', 'README.md', 'package.json', 'package-lock.json', 'tsconfig.json', 'src', 'kernels'];

/** A fresh git repo holding a copy of this project's real train.ts, prepare.ts, src/ and kernels/. */
export function makeRealProject(): string {
  const dir = mkdtempSync(join(tmpdir(), 'autoresearch-real-'));
  for (const f of REAL_PROJECT_FILES) cpSync(join(REPO_ROOT, f), join(dir, f), { recursive: true });
  cpSync(join(FIXTURES, 'project', 'gitignore'), join(dir, '.gitignore'));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  git(dir, 'init', '-q', '-b', 'main');
  git(dir, 'config', 'user.name', 'autoresearch tests');
  git(dir, 'config', 'user.email', 'tests@autoresearch-ts.local');
  git(dir, 'config', 'commit.gpgsign', 'false');
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'initial');
  return dir;
}

export function removeProject(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export function read(dir: string, file: string): string {
  return readFileSync(join(dir, file), 'utf8');
}

export function write(dir: string, file: string, text: string): void {
  writeFileSync(join(dir, file), text);
}

// ---------------------------------------------------------------------------
// Fake Messages API
// ---------------------------------------------------------------------------

export interface FakeRequest {
  method: string;
  path: string;
  body: any;
  headers: IncomingMessage['headers'];
}

export interface FakeReply {
  status?: number;
  json?: unknown;
  headers?: Record<string, string>;
  /** Drop the connection without answering (a network loss). */
  hangUp?: boolean;
}

export type Script = FakeReply | ((req: FakeRequest) => FakeReply);

export const DEFAULT_USAGE = { input_tokens: 1200, output_tokens: 300, cache_creation_input_tokens: 800, cache_read_input_tokens: 9000 };

let toolIds = 0;

/** A reply calling propose_experiment once (optionally after text and a thinking block). */
export function proposal(description: string, edits: [string, string][], opts: { usage?: object; thinking?: string; text?: string; stop?: string } = {}): FakeReply {
  const content: unknown[] = [];
  if (opts.thinking) content.push({ type: 'thinking', thinking: opts.thinking, signature: 'sig-abc' });
  if (opts.text) content.push({ type: 'text', text: opts.text });
  content.push({ type: 'tool_use', id: `toolu_${++toolIds}`, name: 'propose_experiment', input: { description, edits: edits.map(([o, n]) => ({ old_string: o, new_string: n })) } });
  return { json: message(content, opts.stop ?? 'tool_use', opts.usage) };
}

/** A reply with raw tool input (malformed proposals). */
export function rawToolCall(input: unknown, name = 'propose_experiment'): FakeReply {
  return { json: message([{ type: 'tool_use', id: `toolu_${++toolIds}`, name, input }], 'tool_use') };
}

export function textReply(text: string): FakeReply {
  return { json: message([{ type: 'text', text }], 'end_turn') };
}

export function apiError(status: number, type: string, msg: string, headers: Record<string, string> = {}): FakeReply {
  return { status, json: { type: 'error', error: { type, message: msg } }, headers };
}

function message(content: unknown[], stopReason: string, usage: object = DEFAULT_USAGE): object {
  return { id: `msg_${++toolIds}`, type: 'message', role: 'assistant', model: TEST_MODEL, content, stop_reason: stopReason, stop_sequence: null, usage };
}

export class FakeMessagesApi {
  readonly requests: FakeRequest[] = [];
  readonly #script: Script[] = [];
  #server: Server;
  url = '';
  knownModels = new Set([TEST_MODEL, 'claude-opus-5-5', 'custom-model']);

  private constructor() {
    this.#server = createServer((req, res) => this.#handle(req, res));
  }

  static async start(): Promise<FakeMessagesApi> {
    const api = new FakeMessagesApi();
    await new Promise<void>((r) => api.#server.listen(0, '127.0.0.1', r));
    api.url = `http://127.0.0.1:${(api.#server.address() as AddressInfo).port}`;
    return api;
  }

  /** Queue replies for POST /v1/messages, answered in order. */
  script(...replies: Script[]): this {
    this.#script.push(...replies);
    return this;
  }

  /** Drop unanswered replies. */
  clear(): void {
    this.#script.length = 0;
  }

  get pending(): number {
    return this.#script.length;
  }

  /** Bodies of the POST /v1/messages requests so far. */
  get messageBodies(): any[] {
    return this.requests.filter((r) => r.path === '/v1/messages').map((r) => r.body);
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const path = (req.url ?? '').split('?')[0];
      const body = raw ? JSON.parse(raw) : null;
      const fr: FakeRequest = { method: req.method ?? '', path, body, headers: req.headers };
      this.requests.push(fr);
      const send = (r: FakeReply) => {
        if (r.hangUp) {
          req.socket.destroy();
          return;
        }
        res.writeHead(r.status ?? 200, { 'content-type': 'application/json', 'request-id': `req_${this.requests.length}`, ...r.headers });
        res.end(JSON.stringify(r.json ?? {}));
      };
      if (req.method === 'GET' && path.startsWith('/v1/models/')) {
        const id = decodeURIComponent(path.slice('/v1/models/'.length));
        return send(this.knownModels.has(id)
          ? { json: { type: 'model', id, display_name: id, created_at: '2026-06-01T00:00:00Z' } }
          : apiError(404, 'not_found_error', `model: ${id}`));
      }
      if (req.method === 'POST' && path === '/v1/messages') {
        const key = req.headers['x-api-key'] ?? req.headers.authorization?.replace(/^Bearer /, '');
        if (key !== 'test-key') return send(apiError(401, 'authentication_error', 'invalid x-api-key'));
        if (!this.knownModels.has(body?.model)) return send(apiError(404, 'not_found_error', `model: ${body?.model}`));
        const next = this.#script.shift();
        if (!next) return send(apiError(400, 'invalid_request_error', 'fake API: the test script has no more replies'));
        return send(typeof next === 'function' ? next(fr) : next);
      }
      send(apiError(404, 'not_found_error', `no route ${req.method} ${path}`));
    });
  }
}

/** The text of the last user turn of a request (tool_result contents and text blocks). */
export function lastUserText(body: any): string {
  const last = body.messages[body.messages.length - 1];
  if (typeof last.content === 'string') return last.content;
  return last.content.map((b: any) => (b.type === 'text' ? b.text : b.type === 'tool_result' ? (typeof b.content === 'string' ? b.content : JSON.stringify(b.content)) : '')).join('\n');
}

// ---------------------------------------------------------------------------
// Driver options and output
// ---------------------------------------------------------------------------

export function memoryOutput(): DriverOutput & { lines: string[]; statuses: string[] } {
  const lines: string[] = [];
  const statuses: string[] = [];
  return {
    lines, statuses,
    line: (t) => lines.push(t),
    status: (t) => statuses.push(t),
  };
}

let queues = 0;

/** The stand-in trainer, keeping its run counter and pid file in the project `dir`. */
export function fakeTrainCommand(dir: string, args?: string): string {
  return `"${process.execPath}" "${FAKE_TRAIN}" --state "${dir}"${args ? ` ${args}` : ''}`;
}

export function options(dir: string, api: FakeMessagesApi, o: Partial<ResearchOptions> & { trainArgs?: string } = {}): ResearchOptions {
  const { trainArgs, ...rest } = o;
  return {
    repoDir: dir,
    tag: 'test',
    resume: false,
    model: TEST_MODEL,
    apiKey: 'test-key',
    baseURL: api.url,
    maxExperiments: null,
    hours: null,
    maxUsd: null,
    usdPerMtok: null,
    fixAttempts: DEFAULTS.fixAttempts,
    proposalRetries: DEFAULTS.proposalRetries,
    maxConsecutiveInvalid: DEFAULTS.maxConsecutiveInvalid,
    trainCommand: fakeTrainCommand(dir, trainArgs),
    timeBudgetS: null,
    startupAllowanceS: 30,
    noiseFloor: null,
    maxTokens: 4096,
    effort: null,
    recentDiffs: DEFAULTS.recentDiffs,
    cacheDir: null,
    apiMaxRetries: 0,
    backoffInitialMs: 5,
    backoffMaxMs: 20,
    charts: true,
    baselineRuns: o.noiseFloor === undefined || o.noiseFloor === null ? DEFAULTS.baselineRuns : 1,
    noiseWidths: DEFAULTS.noiseWidths,
    maxRuns: DEFAULTS.maxRuns,
    queue: null,
    queueName: `test-${process.pid}-${++queues}`,
    workers: null,
    parallel: null,
    dashboardPort: null,
    workerLockS: DEFAULTS.workerLockS,
    ...rest,
  };
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/** Is a process running? (A zombie, which containers may never reap, counts as gone.) */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (!existsSync('/proc/self/stat')) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

export async function waitFor<T>(what: string, fn: () => T | null | undefined | false, ms = 60_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The research CLI as its own node process (one process, so signals reach the driver itself). */
export function startCli(dir: string, api: FakeMessagesApi, args: string[]): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/research/cli.ts'),
    '--repo', dir, '--tag', 'test', '--no-data-check', '--noise-floor', '0',
    '--train-command', fakeTrainCommand(dir), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: api.url },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout!.on('data', (d) => (text += d));
  child.stderr!.on('data', (d) => (text += d));
  return Object.assign(child, { output: () => text });
}
