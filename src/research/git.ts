/**
 * @file The git side of the research driver, on simple-git: the `autoresearch/<tag>` branch,
 * one commit per experiment (train.ts only), `reset --hard` to where an experiment started,
 * and refs under `refs/autoresearch/<tag>/` that keep every discarded, crashed or abandoned
 * commit reachable, so `git log refs/autoresearch/<tag>/0007` shows any idea tried.
 * Experiments in flight side by side are commits made without the working tree (`commitOnto`:
 * hash-object, mktree, commit-tree), so the checkout only ever moves to a kept commit.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleGit, type SimpleGit } from 'simple-git';

export const BRANCH_PREFIX = 'autoresearch/';
export const REF_PREFIX = 'refs/autoresearch/';

/** A tag becomes part of a branch name and of refs: keep it to safe characters. */
export function validateTag(tag: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(tag) || tag.includes('..') || tag.endsWith('.lock')) {
    throw new Error(`--tag '${tag}' must be letters, digits, '.', '_' or '-' (e.g. nov22), at most 64 characters`);
  }
}

export class ResearchGit {
  readonly git: SimpleGit;

  constructor(readonly dir: string, readonly tag: string) {
    validateTag(tag);
    this.git = simpleGit({ baseDir: dir, trimmed: true });
  }

  get branch(): string {
    return `${BRANCH_PREFIX}${this.tag}`;
  }

  /** refs/autoresearch/<tag>/<name>, e.g. 0007 or 0007-attempt1. */
  refName(name: string): string {
    return `${REF_PREFIX}${this.tag}/${name}`;
  }

  async assertRepoRoot(): Promise<void> {
    let top: string;
    try {
      top = await this.git.revparse(['--show-toplevel']);
    } catch {
      throw new Error(`${this.dir} is not a git repository`);
    }
    if (realpathSync(top) !== realpathSync(this.dir)) throw new Error(`run the driver from the repository root (${top}), not ${this.dir}`);
  }

  async assertIdentity(): Promise<void> {
    const name = (await this.git.raw(['config', '--get', 'user.name']).catch(() => '')).trim();
    const email = (await this.git.raw(['config', '--get', 'user.email']).catch(() => '')).trim();
    if (!name || !email) throw new Error('git has no identity for commits: run git config user.name "..." and git config user.email "..."');
  }

  async head(): Promise<string> {
    return this.git.revparse(['HEAD']);
  }

  async short(commit: string): Promise<string> {
    return this.git.revparse(['--short=7', commit]);
  }

  async currentBranch(): Promise<string | null> {
    const name = await this.git.raw(['symbolic-ref', '--quiet', '--short', 'HEAD']).catch(() => '');
    return name.trim() || null;
  }

  async branchExists(): Promise<boolean> {
    const out = await this.git.raw(['branch', '--list', this.branch]);
    return out.trim() !== '';
  }

  async createBranch(): Promise<void> {
    await this.git.raw(['checkout', '-b', this.branch]);
  }

  async checkoutBranch(): Promise<void> {
    await this.git.raw(['checkout', this.branch]);
  }

  async isTracked(path: string): Promise<boolean> {
    try {
      await this.git.raw(['ls-files', '--error-unmatch', '--', path]);
      return true;
    } catch {
      return false;
    }
  }

  /** Tracked files with staged or unstaged changes (untracked files are not listed). */
  async dirtyTrackedFiles(): Promise<string[]> {
    const out = await this.git.raw(['diff', '--name-only', 'HEAD']); // staged and unstaged, against HEAD
    return out.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  }

  /** Commit train.ts (only) with `message`; returns the new commit's full hash. */
  async commitFile(path: string, message: string): Promise<string> {
    await this.git.raw(['add', '--', path]);
    await this.git.raw(['commit', '--no-verify', '-m', message, '--', path]);
    return this.head();
  }

  // a commit's top-level tree listing never changes
  #trees = new Map<string, Promise<string>>();

  /** Run git with `input` on stdin; resolves with stdout (trimmed). */
  #plumb(args: string[], input?: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = execFile('git', args, { cwd: this.dir, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`git ${args[0]}: ${stderr.trim() || err.message}`));
        else resolve(stdout.trim());
      });
      child.stdin?.on('error', () => {}); // a command that reads no input may exit first
      child.stdin?.end(input ?? '');
    });
  }

  /** A file's text at a commit. */
  async show(commit: string, path: string): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile('git', ['show', `${commit}:${path}`], { cwd: this.dir, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`git show ${commit.slice(0, 7)}:${path}: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      });
    });
  }

  /** A commit whose tree is `parent`'s with `path` (a top-level file) set to `text`; the working tree is not touched. */
  async commitOnto(parent: string, path: string, text: string, message: string): Promise<string> {
    if (path.includes('/')) throw new Error(`commitOnto: ${path} must be a top-level file`);
    const blob = await this.#plumb(['hash-object', '-w', '--stdin'], text);
    let tree = this.#trees.get(parent);
    if (!tree) this.#trees.set(parent, (tree = this.#plumb(['ls-tree', parent])));
    const entries = (await tree).split('\n').filter((l) => l !== '' && !l.endsWith(`\t${path}`));
    entries.push(`100644 blob ${blob}\t${path}`);
    const newTree = await this.#plumb(['mktree'], `${entries.join('\n')}\n`);
    return this.#plumb(['commit-tree', newTree, '-p', parent, '-F', '-'], message);
  }

  /**
   * Three-way merge of one file: the change `base` → `theirs` applied to `ours`. Returns the
   * merged text, or null on a conflict.
   */
  async merge3(ours: string, base: string, theirs: string): Promise<string | null> {
    const dir = mkdtempSync(join(tmpdir(), 'autoresearch-merge-'));
    try {
      for (const [n, t] of [['ours', ours], ['base', base], ['theirs', theirs]]) writeFileSync(join(dir, n), t);
      return await new Promise((resolve) => {
        execFile('git', ['merge-file', '-p', join(dir, 'ours'), join(dir, 'base'), join(dir, 'theirs')], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout) => {
          resolve(err ? null : stdout); // exit status = number of conflicts
        });
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  async resetHard(commit: string): Promise<void> {
    await this.git.raw(['reset', '--hard', '--quiet', commit]);
  }

  async updateRef(name: string, commit: string): Promise<string> {
    const ref = this.refName(name);
    await this.git.raw(['update-ref', ref, commit]);
    return ref;
  }

  /** Refs this tag has under refs/autoresearch/<tag>/ (name → commit). */
  async refs(): Promise<Map<string, string>> {
    const out = await this.git.raw(['for-each-ref', '--format=%(refname) %(objectname)', `${REF_PREFIX}${this.tag}/`]);
    const map = new Map<string, string>();
    for (const line of out.split('\n')) {
      const [ref, obj] = line.trim().split(' ');
      if (ref && obj) map.set(ref, obj);
    }
    return map;
  }

  /** Files that differ between two commits. */
  async changedFiles(from: string, to: string): Promise<string[]> {
    const out = await this.git.raw(['diff', '--name-only', from, to]);
    return out.split('\n').filter((l) => l.trim() !== '');
  }

  async diff(from: string, to: string, path?: string): Promise<string> {
    return this.git.raw(['diff', '--no-color', '-U2', from, to, ...(path ? ['--', path] : [])]);
  }

  async isAncestor(ancestor: string, of: string): Promise<boolean> {
    try {
      await this.git.raw(['merge-base', '--is-ancestor', ancestor, of]);
      return true;
    } catch {
      return false;
    }
  }

  async commitExists(commit: string): Promise<boolean> {
    try {
      await this.git.raw(['cat-file', '-e', `${commit}^{commit}`]);
      return true;
    } catch {
      return false;
    }
  }
}
