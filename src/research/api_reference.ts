/**
 * @file The reference part of the agent's prompt, generated from the source with ts-morph each
 * time a prompt is built (so it is always current): the signatures of what train.ts may import
 * from src/ (with each declaration's one-line summary), the parts of prepare.ts train.ts uses,
 * and the kernel conventions from kernels/README.md for kernels written inline.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { type ClassDeclaration, type JSDocableNode, Node, Project, type SourceFile } from 'ts-morph';

/** Modules train.ts may import but has no use for (data preparation, the harness's own tools). */
const SKIPPED = [
  /^src\/research\//, /^src\/data\//, /^src\/verify\.ts$/, /^src\/fixture\.ts$/, /^src\/train_contract\.ts$/,
  /^src\/gpu\/(buffers|device|wgsl)\.ts$/, /^src\/ops\/eval_bpb\.ts$/, // the runtime's internals, prepare.ts's metric kernel
  /^src\/train_cli\.ts$/, /^src\/util\/cli\.ts$/, // the command lines
];

/** What train.ts takes from prepare.ts; the rest of it (downloads, tokenizer training, the CLI) is not for train.ts. */
export const PREPARE_EXPORTS = [
  'MAX_SEQ_LEN', 'TIME_BUDGET', 'EVAL_TOKENS', 'SOFTWARE_EVAL_TOKENS', 'VOCAB_SIZE', 'BOS_TOKEN',
  'Tokenizer', 'Batch', 'Dataloader', 'makeDataloader', 'LogitsFn', 'CausalityError', 'evaluateBpb',
];

/** Sections of kernels/README.md the prompt carries. */
const KERNEL_SECTIONS = ['Conventions', 'Known pitfalls'];

function listModules(repoDir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of readdirSync(join(repoDir, rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = posix.join(rel, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') && !SKIPPED.some((re) => re.test(path))) out.push(path);
    }
  };
  walk('src');
  return out;
}

/** The first sentence (or line) of a declaration's JSDoc, as a one-line comment; '' if none. */
function summary(node: Node, full = false): string {
  const docs = Node.isJSDocable(node) ? (node as JSDocableNode).getJsDocs() : [];
  const text = docs.at(-1)?.getDescription().trim() ?? '';
  if (!text) return '';
  const flat = text.replace(/\s*\n\s*/g, ' ');
  if (full) return `/** ${flat} */\n`;
  const m = /^(.*?\.)(\s|$)/.exec(flat);
  const first = (m ? m[1] : flat).slice(0, 200);
  return `/** ${first} */\n`;
}

/** A function's or method's text up to its body. */
function head(node: Node): string {
  const body = Node.isBodyable(node) ? node.getBody() : undefined;
  const text = node.getText();
  return (body ? text.slice(0, body.getStart() - node.getStart()) : text).trim().replace(/\s*\{$/, '');
}

function classSignature(c: ClassDeclaration): string {
  const text = c.getText();
  const nameEnd = (c.getNameNode()?.getEnd() ?? c.getStart()) - c.getStart();
  const lines: string[] = [`${text.slice(0, text.indexOf('{', nameEnd)).trim()} {`];
  for (const m of c.getMembers()) {
    if (Node.isModifierable(m) && (m.hasModifier(ts_private()) || m.hasModifier(ts_protected()))) continue;
    const name = Node.hasName(m) ? m.getName() : '';
    if (name.startsWith('#')) continue;
    const doc = summary(m).replace(/^/gm, '  ').trimEnd();
    let sig: string;
    if (Node.isPropertyDeclaration(m)) {
      const mods = m.getModifiers().map((x) => x.getText()).join(' ');
      // the declared type, else the initializer when it says enough (the type checker is slow to start)
      const init = m.getInitializer()?.getText();
      const type = m.getTypeNode()?.getText();
      const decl = type ? `: ${type}` : init ? ` = ${init.length <= 80 && !init.includes('\n') ? init : `${init.split('\n')[0].slice(0, 80)} …`}` : '';
      sig = `${mods ? `${mods} ` : ''}${name}${decl};`;
    } else if (Node.isConstructorDeclaration(m) || Node.isMethodDeclaration(m) || Node.isGetAccessorDeclaration(m)) {
      sig = `${head(m).replace(/\s+/g, ' ')};`;
    } else continue;
    if (doc) lines.push(doc);
    lines.push(`  ${sig}`);
  }
  lines.push('}');
  return lines.join('\n');
}

// SyntaxKind lookups kept in functions so the import stays type-only where it can
function ts_private() {
  return 'private' as const;
}
function ts_protected() {
  return 'protected' as const;
}

/** Exported declarations of a module, in file order, read from the syntax alone (no type checker: fast). */
function exportedDeclarations(sf: SourceFile): [string, Node][] {
  const out: [string, Node][] = [];
  for (const st of sf.getStatements()) {
    if (!Node.isExportable(st) || !st.hasExportKeyword()) continue;
    if (Node.isVariableStatement(st)) for (const d of st.getDeclarations()) out.push([d.getName(), d]);
    else if (Node.isFunctionDeclaration(st) || Node.isClassDeclaration(st) || Node.isInterfaceDeclaration(st) || Node.isTypeAliasDeclaration(st) || Node.isEnumDeclaration(st)) {
      const name = st.getName();
      if (name) out.push([name, st]);
    }
  }
  return out;
}

/** Signatures of a module's exports (plain-TS references, named …Ref, left out). */
function moduleSignatures(sf: SourceFile, only?: readonly string[], fullDocFor: readonly string[] = []): string {
  const parts: string[] = [];
  for (const [name, d] of exportedDeclarations(sf)) {
    if (only ? !only.includes(name) : /Ref$/.test(name)) continue;
    const doc = summary(Node.isVariableDeclaration(d) ? d.getVariableStatementOrThrow() : d, fullDocFor.includes(name));
    let sig: string;
    if (Node.isFunctionDeclaration(d)) {
      if (!d.hasBody()) sig = d.getText().trim(); // an overload
      else if (d.getOverloads().length) continue; // the implementation behind overloads printed already
      else sig = `${head(d)};`;
    } else if (Node.isClassDeclaration(d)) sig = classSignature(d);
    else if (Node.isInterfaceDeclaration(d) || Node.isTypeAliasDeclaration(d) || Node.isEnumDeclaration(d)) sig = d.getText();
    else if (Node.isVariableDeclaration(d)) {
      const init = d.getInitializer()?.getText() ?? '';
      const typeNode = d.getTypeNode()?.getText();
      const short = init.length <= 80 && !init.includes('\n');
      const value = short ? init : `${init.split('\n')[0].slice(0, 80)} …`;
      sig = `export const ${name}${typeNode ? `: ${typeNode}` : ''}${init ? ` = ${value}` : ''};`;
    } else continue;
    parts.push(`${doc}${sig}`);
  }
  return parts.join('\n');
}

/** The @file comment's first paragraph, on one line. */
function fileSummary(sf: SourceFile): string {
  const m = /^\/\*\*([\s\S]*?)\*\//.exec(sf.getFullText().trimStart());
  if (!m) return '';
  const text = m[1].replace(/^\s*\* ?/gm, '').replace(/@file\s*/, '').trim();
  return text.split(/\n\s*\n/)[0].replace(/\s*\n\s*/g, ' ');
}

/** The named `## ` sections of a markdown file. */
function markdownSections(text: string, names: readonly string[]): string {
  const sections = text.split(/^(?=## )/m);
  return sections.filter((s) => names.some((n) => s.startsWith(`## ${n}`))).map((s) => s.trim()).join('\n\n');
}

const cache = new Map<string, { key: string; text: string }>();

/** The prompt's reference section for the project at `repoDir` (rebuilt whenever a file it reads changed). */
export function apiReference(repoDir: string): string {
  const files = [...listModules(repoDir), 'prepare.ts', 'kernels/README.md'].filter((f) => existsSync(join(repoDir, f)));
  const key = files.map((f) => {
    const st = statSync(join(repoDir, f));
    return `${f}:${st.size}:${st.mtimeMs}`;
  }).join('|');
  const hit = cache.get(repoDir);
  if (hit?.key === key) return hit.text;
  const text = buildApiReference(repoDir);
  cache.set(repoDir, { key, text });
  return text;
}

function buildApiReference(repoDir: string): string {
  const project = new Project({ compilerOptions: { allowJs: false, noEmit: true, allowImportingTsExtensions: true }, skipAddingFilesFromTsConfig: true, skipFileDependencyResolution: true });
  const out: string[] = [
    '# What train.ts can use (generated from the source when this prompt was built)',
    '',
    'Signatures of the modules train.ts may import (as `./src/…`), each with its first doc line; plain-TS reference implementations (`…Ref`) are left out. The tape is ambient: call `useRuntime(rt)` once, then differentiable ops (src/autograd) record on it.',
  ];
  for (const rel of listModules(repoDir)) {
    const sf = project.addSourceFileAtPath(join(repoDir, rel));
    const sigs = moduleSignatures(sf);
    if (!sigs) continue;
    const about = fileSummary(sf);
    out.push('', `## ./${rel}`, ...(about ? [about] : []), '```ts', sigs, '```');
  }
  const preparePath = join(repoDir, 'prepare.ts');
  if (existsSync(preparePath)) {
    const sf = project.addSourceFileAtPath(preparePath);
    out.push(
      '', '# prepare.ts (fixed, read-only): what train.ts uses from it',
      'Data download, tokenizer training and the command line are left out. `evaluateBpb` is the metric; it takes exactly these four arguments.',
      '```ts', moduleSignatures(sf, PREPARE_EXPORTS, ['evaluateBpb', 'makeDataloader']), '```',
    );
  }
  const kernelsReadme = join(repoDir, 'kernels', 'README.md');
  if (existsSync(kernelsReadme)) {
    out.push('', '# Kernel conventions (kernels/README.md), for kernels written inline in train.ts', '', markdownSections(readFileSync(kernelsReadme, 'utf8'), KERNEL_SECTIONS));
  }
  return `${out.join('\n')}\n`;
}
