/**
 * @file The guard's check of train.ts's export contract (src/train_contract.ts): every name the
 * harness imports must still be exported, as the same kind of thing, and the harness files that
 * import train.ts must still type-check against the proposed text. A project without a declared
 * contract (no src/train_contract.ts) has nothing to check.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Node, type SourceFile, ts } from 'ts-morph';
import { CONTRACT_USERS, type ContractKind, TRAIN_CONTRACT } from '../train_contract.ts';

const CONTRACT_FILE = 'src/train_contract.ts';

function kindOf(decl: Node): ContractKind | null {
  if (Node.isClassDeclaration(decl)) return 'class';
  if (Node.isFunctionDeclaration(decl)) return 'function';
  if (Node.isInterfaceDeclaration(decl) || Node.isTypeAliasDeclaration(decl)) return 'type';
  if (Node.isVariableDeclaration(decl)) {
    const init = decl.getInitializer();
    return init && (Node.isArrowFunction(init) || Node.isFunctionExpression(init)) ? 'function' : 'const';
  }
  return null;
}

/** Problems (`file:LINE: …`, one line each) with the exports of train.ts `sf` under the contract. */
export function contractProblems(sf: SourceFile, file: string, repoDir: string, typeCheck = true, maxTypeErrors = 12): string[] {
  if (!existsSync(join(repoDir, CONTRACT_FILE))) return [];
  const problems: string[] = [];
  const exported = sf.getExportedDeclarations();
  for (const [name, kind] of Object.entries(TRAIN_CONTRACT)) {
    const decls = exported.get(name) ?? [];
    if (!decls.length) {
      problems.push(`${file}:1: must export the ${kind} '${name}': verify, the benches and the tests import it (${CONTRACT_FILE}); keep that name`);
      continue;
    }
    const kinds = decls.map(kindOf);
    if (!kinds.includes(kind)) {
      problems.push(`${file}:${decls[0].getStartLineNumber()}: '${name}' must stay a ${kind}, not a ${kinds[0] ?? 'different kind of declaration'} (${CONTRACT_FILE})`);
    }
  }
  if (!typeCheck || problems.length) return problems;
  // the harness's own use of the exports: a changed signature shows up as a type error there
  const project = sf.getProject();
  const errors: string[] = [];
  for (const rel of CONTRACT_USERS) {
    const abs = join(repoDir, rel);
    if (!existsSync(abs)) continue;
    const user = project.getSourceFile(abs) ?? project.addSourceFileAtPath(abs);
    project.resolveSourceFileDependencies();
    for (const d of user.getPreEmitDiagnostics()) {
      if (d.getCategory() !== ts.DiagnosticCategory.Error) continue;
      errors.push(`${rel}:${d.getLineNumber() ?? '?'}: TS${d.getCode()}: ${ts.flattenDiagnosticMessageText(d.compilerObject.messageText, ' ')}`);
    }
  }
  if (errors.length) {
    problems.push(`${file}:1: the harness no longer type-checks against this train.ts: keep the signatures of the exports in ${CONTRACT_FILE}`);
    problems.push(...errors.slice(0, maxTypeErrors));
    if (errors.length > maxTypeErrors) problems.push(`… and ${errors.length - maxTypeErrors} more type errors in the harness`);
  }
  return problems;
}
