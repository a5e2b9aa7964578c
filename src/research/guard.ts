/**
 * @file The guard the driver runs before any GPU time. `TrainGuard.check(text)` parses a proposed
 * train.ts with ts-morph, enforces the rules (imports only './prepare.ts', modules under './src/'
 * other than src/research/, and 'webgpu'; no eval, Function, dynamic import, require, fs,
 * process.env, child processes, network, or the reflective routes to them) and type-checks it
 * in memory with the project's tsconfig. `hashProtected` fingerprints the files the agent must
 * not change (prepare.ts, program.md, src/, kernels/, package and ts config files), checked
 * before every run.
 *
 * The guard is a lint, not a sandbox: it stops honest mistakes and the obvious ways around the
 * rules. What makes the metric trustworthy is that it comes from the harness over descriptor 3
 * (which train.ts cannot reach without fs, net, process.binding or a stream constructor, all
 * rejected here) and that everything but train.ts is hash-checked.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join, posix, relative, resolve } from 'node:path';
import { Node, Project, SyntaxKind, ts, type SourceFile } from 'ts-morph';
import { contractProblems } from './contract.ts';

/** Files and folders (relative to the repo root) that must stay byte-identical during research. */
export const PROTECTED_PATHS = ['prepare.ts', 'program.md', 'src', 'kernels', 'package.json', 'package-lock.json', 'tsconfig.json'] as const;

// Identifiers that reach code loading, evaluation, the module system or the network.
const BANNED_IDENTIFIERS = new Map<string, string>([
  ['eval', 'eval is not allowed'],
  ['Function', 'the Function constructor is not allowed'],
  ['require', 'require is not allowed (use a static import of an allowed module)'],
  ['module', "'module' (CommonJS) is not allowed"],
  ['exports', "'exports' (CommonJS) is not allowed"],
  ['globalThis', 'globalThis is not allowed (it reaches process.env and the module system)'],
  ['global', "'global' is not allowed (it reaches process.env and the module system)"],
  ['Reflect', 'Reflect is not allowed'],
  ['fetch', 'network access (fetch) is not allowed'],
  ['WebSocket', 'network access (WebSocket) is not allowed'],
  ['XMLHttpRequest', 'network access (XMLHttpRequest) is not allowed'],
  ['EventSource', 'network access (EventSource) is not allowed'],
  ['Worker', 'workers are not allowed'],
]);

// Property names that lead to constructors of streams/functions, prototypes or native bindings.
const BANNED_PROPERTIES = new Set([
  'constructor', '__proto__', 'getPrototypeOf', 'setPrototypeOf', 'getOwnPropertyDescriptor', 'getOwnPropertyDescriptors',
  '__defineGetter__', '__defineSetter__', '__lookupGetter__', '__lookupSetter__',
  'binding', '_linkedBinding', 'dlopen', 'getBuiltinModule', 'mainModule', 'prototype',
]);

/** The harness's metric takes (runtime, logits function, tokenizer, batch size) and no options. */
const EVALUATE_MAX_ARGS = 4;

// What train.ts may use of `process` (printing, exiting, timing); process.env and the rest are out.
const PROCESS_ALLOWED = new Set(['exit', 'exitCode', 'stdout', 'stderr', 'hrtime', 'memoryUsage', 'uptime', 'platform', 'arch', 'version', 'versions', 'argv', 'on', 'once', 'nextTick', 'pid']);
const STREAM_ALLOWED = new Set(['write', 'isTTY', 'columns', 'rows']);

export const IMPORT_RULE = "train.ts may import only './prepare.ts', modules under './src/' (not './src/research/') and 'webgpu'";

/** Is `specifier` an import train.ts may have? */
export function importAllowed(specifier: string): boolean {
  if (specifier === 'webgpu' || specifier === './prepare.ts') return true;
  if (!specifier.startsWith('./src/')) return false;
  // module specifiers are URLs: '%2e%2e' is '..', and '?', '#' or '\\' change what they name
  if (/[%?#\\]/.test(specifier) || !specifier.endsWith('.ts')) return false;
  const normalized = posix.normalize(specifier);
  if (!normalized.startsWith('src/') || normalized.includes('..')) return false;
  return !normalized.startsWith('src/research/') && normalized !== 'src/research';
}

export interface GuardReport {
  ok: boolean;
  /** One line each: `train.ts:LINE: what is wrong`. */
  problems: string[];
}

export interface GuardOptions {
  /** Repo root (where train.ts, tsconfig.json and node_modules are). */
  repoDir: string;
  /** The edited file, relative to repoDir. */
  file?: string;
  /** Skip the type check (policy only); for tools that only lint. */
  typeCheck?: boolean;
  /** Most type errors reported back. */
  maxTypeErrors?: number;
}

export class TrainGuard {
  readonly repoDir: string;
  readonly file: string;
  readonly #typeCheck: boolean;
  readonly #maxTypeErrors: number;
  #project: Project | null = null;

  constructor(opts: GuardOptions) {
    this.repoDir = resolve(opts.repoDir);
    this.file = opts.file ?? 'train.ts';
    this.#typeCheck = opts.typeCheck ?? true;
    this.#maxTypeErrors = opts.maxTypeErrors ?? 12;
  }

  // One project per guard: later checks reuse the parsed src/, lib and @types files.
  #getProject(): Project {
    if (this.#project) return this.#project;
    const tsconfig = join(this.repoDir, 'tsconfig.json');
    const base = existsSync(tsconfig)
      ? new Project({ tsConfigFilePath: tsconfig, skipAddingFilesFromTsConfig: true }).getCompilerOptions()
      : { target: ts.ScriptTarget.ES2022, strict: true, skipLibCheck: true, allowImportingTsExtensions: true };
    const options: ts.CompilerOptions = { ...base, noEmit: true };
    // ts-morph does not give in-memory files package.json's "type": "module" under NodeNext
    // (dsherret/ts-morph#1446), so import.meta would be flagged; ESNext + Bundler type-checks the same code.
    if (options.module === ts.ModuleKind.NodeNext || options.module === ts.ModuleKind.Node16 || options.module === undefined) {
      options.module = ts.ModuleKind.ESNext;
      options.moduleResolution = ts.ModuleResolutionKind.Bundler;
    }
    delete options.configFilePath;
    this.#project = new Project({ compilerOptions: options, skipAddingFilesFromTsConfig: true });
    return this.#project;
  }

  /** Check a proposed train.ts text (not written to disk). */
  check(text: string): GuardReport {
    const project = this.#getProject();
    const path = join(this.repoDir, this.file);
    const sf = project.createSourceFile(path, text, { overwrite: true });
    project.resolveSourceFileDependencies();
    const problems = policyProblems(sf, this.file, project);
    // the type check includes syntax errors; without it, report those alone
    const errors = (this.#typeCheck ? sf.getPreEmitDiagnostics() : project.getProgram().getSyntacticDiagnostics(sf))
      .filter((d) => d.getCategory() === ts.DiagnosticCategory.Error);
    for (const d of errors.slice(0, this.#maxTypeErrors)) {
      const message = ts.flattenDiagnosticMessageText(d.compilerObject.messageText, ' ');
      const source = d.getSourceFile();
      const where = source ? `${relative(this.repoDir, source.getFilePath())}:${d.getLineNumber() ?? '?'}` : this.file;
      problems.push(`${where}: TS${d.getCode()}: ${message}`);
    }
    if (errors.length > this.#maxTypeErrors) problems.push(`… and ${errors.length - this.#maxTypeErrors} more type errors`);
    // the exports the harness imports (src/train_contract.ts); checked on a train.ts that compiles
    if (!errors.length) problems.push(...contractProblems(sf, this.file, this.repoDir, this.#typeCheck, this.#maxTypeErrors));
    return { ok: problems.length === 0, problems };
  }
}

function isReference(id: Node): boolean {
  const parent = id.getParent();
  if (!parent) return true;
  // `x.eval`, `{ eval: 1 }`, `class { eval() {} }`, `interface { eval: … }`: names, not references
  if (Node.isPropertyAccessExpression(parent) && parent.getNameNode() === id) return false;
  if ((Node.isPropertyAssignment(parent) || Node.isPropertyDeclaration(parent) || Node.isPropertySignature(parent) ||
       Node.isMethodDeclaration(parent) || Node.isMethodSignature(parent) || Node.isGetAccessorDeclaration(parent) ||
       Node.isSetAccessorDeclaration(parent) || Node.isEnumMember(parent)) && parent.getNameNode() === id) return false;
  if (Node.isQualifiedName(parent) && parent.getRight() === id) return false;
  if (Node.isImportSpecifier(parent) || Node.isExportSpecifier(parent)) return false;
  return true;
}

function stringValue(node: Node | undefined): string | null {
  if (!node) return null;
  if (Node.isStringLiteral(node) || Node.isNoSubstitutionTemplateLiteral(node)) return node.getLiteralValue();
  return null;
}

function policyProblems(sf: SourceFile, file: string, project: Project): string[] {
  const problems: string[] = [];
  const at = (n: Node, msg: string) => problems.push(`${file}:${n.getStartLineNumber()}: ${msg}`);

  if (sf.getPathReferenceDirectives().length || sf.getTypeReferenceDirectives().length || sf.getLibReferenceDirectives().length) {
    problems.push(`${file}:1: triple-slash reference directives are not allowed`);
  }

  const suppression = /@ts-(?:ignore|nocheck|expect-error)/.exec(sf.getFullText());
  if (suppression) {
    const line = sf.getFullText().slice(0, suppression.index).split('\n').length;
    problems.push(`${file}:${line}: '${suppression[0]}' is not allowed: type errors must be fixed, not silenced`);
  }

  for (const decl of sf.getImportDeclarations()) {
    const spec = decl.getModuleSpecifierValue();
    if (!importAllowed(spec)) at(decl, `imports '${spec}': ${IMPORT_RULE}`);
  }
  for (const decl of sf.getExportDeclarations()) {
    const spec = decl.getModuleSpecifierValue();
    if (spec !== undefined && !importAllowed(spec)) at(decl, `re-exports '${spec}': ${IMPORT_RULE}`);
  }

  const checker = project.getTypeChecker();
  sf.forEachDescendant((node) => {
    switch (node.getKind()) {
      case SyntaxKind.ImportEqualsDeclaration:
        at(node, `'import = require()' is not allowed: ${IMPORT_RULE}`);
        break;
      case SyntaxKind.CallExpression: {
        const call = node.asKindOrThrow(SyntaxKind.CallExpression);
        if (call.getExpression().getKind() === SyntaxKind.ImportKeyword) at(node, 'dynamic import() is not allowed');
        const args = call.getArguments();
        if (call.getExpression().getText() === 'evaluateBpb' && (args.length > EVALUATE_MAX_ARGS || args.some((a) => Node.isSpreadElement(a)))) {
          at(node, 'evaluateBpb takes only (rt, logitsFn, tokenizer, batchSize): its options would change the metric');
        }
        break;
      }
      case SyntaxKind.ImportType:
        at(node, "import('…') types are not allowed");
        break;
      case SyntaxKind.MetaProperty: {
        const parent = node.getParent();
        const isImportMetaUrl = node.getText() === 'import.meta' && Node.isPropertyAccessExpression(parent) && parent.getName() === 'url';
        if (!isImportMetaUrl) at(node, 'only import.meta.url is allowed');
        break;
      }
      case SyntaxKind.Identifier: {
        const name = node.getText();
        if (!isReference(node)) break;
        const banned = BANNED_IDENTIFIERS.get(name);
        if (banned) {
          at(node, banned);
          break;
        }
        if (name === 'process') checkProcessUse(node, at);
        break;
      }
      case SyntaxKind.PropertyAccessExpression: {
        const pa = node.asKindOrThrow(SyntaxKind.PropertyAccessExpression);
        if (BANNED_PROPERTIES.has(pa.getName()) && !(pa.getName() === 'constructor' && isComparedOnly(pa))) {
          at(node, `'.${pa.getName()}' is not allowed (it reaches constructors, prototypes or native bindings)`);
        }
        break;
      }
      case SyntaxKind.ElementAccessExpression: {
        const ea = node.asKindOrThrow(SyntaxKind.ElementAccessExpression);
        const arg = ea.getArgumentExpression();
        const key = stringValue(arg);
        if (key !== null) {
          if (BANNED_PROPERTIES.has(key) || key === 'env') at(node, `['${key}'] is not allowed`);
          break;
        }
        if (arg) {
          const type = checker.getTypeAtLocation(arg);
          const flags = type.getFlags();
          const stringish = (f: number) => (f & (ts.TypeFlags.String | ts.TypeFlags.Any | ts.TypeFlags.Unknown | ts.TypeFlags.Never | ts.TypeFlags.TemplateLiteral | ts.TypeFlags.ESSymbol)) !== 0;
          const parts = type.isUnion() ? type.getUnionTypes() : [type];
          const unsafe = parts.some((t) => stringish(t.getFlags())) ||
            parts.some((t) => t.isStringLiteral() && (BANNED_PROPERTIES.has(String(t.getLiteralValue())) || t.getLiteralValue() === 'env'));
          if (unsafe || stringish(flags)) at(node, `computed property access with a non-literal string key (${ea.getText().slice(0, 60)}) is not allowed; use a literal key, a number index or a Map`);
        }
        break;
      }
      case SyntaxKind.BindingElement: {
        // `const { constructor: F } = x`: destructuring reaches the same properties as `x.constructor`
        const be = node.asKindOrThrow(SyntaxKind.BindingElement);
        const prop = be.getPropertyNameNode();
        const key = prop ? (Node.isIdentifier(prop) ? prop.getText() : stringValue(prop) ?? (Node.isComputedPropertyName(prop) ? null : prop.getText())) : be.getNameNode().getText();
        if (prop && Node.isComputedPropertyName(prop) && stringValue(prop.getExpression()) === null) at(node, 'a computed key in a destructuring pattern is not allowed; use a literal key');
        else if (key !== null && (BANNED_PROPERTIES.has(key) || key === 'env')) at(node, `destructuring '${key}' is not allowed (it reaches constructors, prototypes or native bindings)`);
        break;
      }
      case SyntaxKind.AsExpression:
      case SyntaxKind.TypeAssertionExpression: {
        // `k as unknown as number` turns any string into an "index": casts through any/unknown are out
        const expr = node.getChildAtIndex(node.getKind() === SyntaxKind.AsExpression ? 0 : 3) ?? node;
        const target = (node as unknown as { getTypeNode(): Node | undefined }).getTypeNode?.();
        const targetText = target?.getText() ?? '';
        const from = checker.getTypeAtLocation(expr).getFlags();
        const to = checker.getTypeAtLocation(node);
        const toParts = to.isUnion() ? to.getUnionTypes() : [to];
        const numberish = toParts.some((t) => (t.getFlags() & (ts.TypeFlags.NumberLike | ts.TypeFlags.BigIntLike)) !== 0);
        if (targetText === 'any' || targetText === 'unknown' || targetText === 'never' || ((from & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) !== 0 && numberish)) {
          at(node, `a type assertion through any/unknown (${node.getText().slice(0, 60)}) is not allowed: it hides what a value is from the guard`);
        }
        break;
      }
      case SyntaxKind.WithStatement:
        at(node, "'with' is not allowed");
        break;
      default:
        break;
    }
  });
  return problems;
}

const EQUALITY = new Set([SyntaxKind.EqualsEqualsEqualsToken, SyntaxKind.ExclamationEqualsEqualsToken, SyntaxKind.EqualsEqualsToken, SyntaxKind.ExclamationEqualsToken]);

/** `x.constructor === Error`: reading a constructor only to compare it reaches nothing. */
function isComparedOnly(node: Node): boolean {
  let n: Node = node;
  let parent = n.getParent();
  while (parent && Node.isParenthesizedExpression(parent)) {
    n = parent;
    parent = n.getParent();
  }
  return Boolean(parent && Node.isBinaryExpression(parent) && EQUALITY.has(parent.getOperatorToken().getKind()));
}

function checkProcessUse(id: Node, at: (n: Node, msg: string) => void): void {
  const parent = id.getParent();
  if (!Node.isPropertyAccessExpression(parent) || parent.getExpression() !== id) {
    at(id, "'process' may only be used as process.exit/stdout.write/stderr.write/hrtime/… (not passed around or indexed)");
    return;
  }
  const prop = parent.getName();
  if (prop === 'env') {
    at(id, 'process.env is not allowed (train.ts must not depend on the environment)');
    return;
  }
  if (!PROCESS_ALLOWED.has(prop)) {
    at(id, `process.${prop} is not allowed (allowed: ${[...PROCESS_ALLOWED].join(', ')})`);
    return;
  }
  if (prop === 'stdout' || prop === 'stderr') {
    const grand = parent.getParent();
    if (!Node.isPropertyAccessExpression(grand) || grand.getExpression() !== parent || !STREAM_ALLOWED.has(grand.getName())) {
      at(id, `process.${prop} may only be used as process.${prop}.write(…), .isTTY, .columns or .rows`);
    }
  }
}

// ---------------------------------------------------------------------------
// Protected files
// ---------------------------------------------------------------------------

function walk(abs: string, rel: string, out: Map<string, string>): void {
  const st = lstatSync(abs);
  if (st.isSymbolicLink()) {
    // a link's target, not what it points to: re-pointing it is a change
    out.set(rel, `symlink:${createHash('sha256').update(readlinkSync(abs)).digest('hex')}`);
  } else if (st.isDirectory()) {
    for (const name of readdirSync(abs).sort()) walk(join(abs, name), posix.join(rel, name), out);
  } else if (st.isFile()) {
    out.set(rel, createHash('sha256').update(readFileSync(abs)).digest('hex'));
  }
}

/** sha256 of every protected file (path relative to the repo → hex), sorted by path. */
export function hashProtected(repoDir: string, paths: readonly string[] = PROTECTED_PATHS): Record<string, string> {
  const out = new Map<string, string>();
  for (const p of paths) {
    const abs = join(repoDir, p);
    if (lstatExists(abs)) walk(abs, p, out);
  }
  return Object.fromEntries([...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function lstatExists(abs: string): boolean {
  try {
    lstatSync(abs);
    return true;
  } catch {
    return false;
  }
}

/** What differs between two fingerprints: "changed: x", "added: y", "removed: z". */
export function compareHashes(expected: Record<string, string>, actual: Record<string, string>): string[] {
  const diffs: string[] = [];
  for (const [path, hash] of Object.entries(expected)) {
    if (!(path in actual)) diffs.push(`removed: ${path}`);
    else if (actual[path] !== hash) diffs.push(`changed: ${path}`);
  }
  for (const path of Object.keys(actual)) if (!(path in expected)) diffs.push(`added: ${path}`);
  return diffs;
}
