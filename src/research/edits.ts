/**
 * @file The `propose_experiment` tool: its JSON schema, and the checks and application of a
 * proposal. A proposal is `{ description, edits: [{ old_string, new_string }] }`; every
 * old_string must occur exactly once in the current train.ts, the edits must not overlap, and
 * they must change something. Edits are located in the original text and applied together, so
 * their order does not matter. Pure functions: no file system, no git.
 */

export const TOOL_NAME = 'propose_experiment';

/** Longest description kept (a results.tsv cell; the rest is cut). */
export const MAX_DESCRIPTION_CHARS = 160;

export interface Edit {
  old_string: string;
  new_string: string;
}

export interface Proposal {
  description: string;
  edits: Edit[];
}

/** The tool definition sent to the Messages API. */
export const PROPOSE_TOOL = {
  name: TOOL_NAME,
  description:
    'Propose one experiment: a short description and exact text edits to train.ts. ' +
    'Each old_string must appear exactly once in the current train.ts (copy it verbatim, whitespace included, ' +
    'with enough surrounding lines to be unique); new_string replaces it. Edits must not overlap. ' +
    'The driver checks the edits, type-checks train.ts, commits, trains for the fixed time budget and reports val_bpb.',
  input_schema: {
    type: 'object' as const,
    properties: {
      description: { type: 'string', description: 'One line saying what this experiment tries (goes into results.tsv), e.g. "raise MATRIX_LR to 0.05".' },
      edits: {
        type: 'array',
        minItems: 1,
        items: {
          type: 'object',
          properties: {
            old_string: { type: 'string', description: 'Exact text of train.ts to replace; must occur exactly once.' },
            new_string: { type: 'string', description: 'Replacement text.' },
          },
          required: ['old_string', 'new_string'],
          additionalProperties: false,
        },
      },
    },
    required: ['description', 'edits'],
    additionalProperties: false,
  },
};

export type ParseResult = { ok: true; proposal: Proposal } | { ok: false; reason: string };

/** Check the shape of a tool call's input (the API does not enforce the schema for us). */
export function parseProposal(input: unknown): ParseResult {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { ok: false, reason: 'the input must be an object { description, edits }' };
  const { description, edits } = input as Record<string, unknown>;
  if (typeof description !== 'string' || description.trim() === '') return { ok: false, reason: '"description" must be a non-empty string' };
  if (!Array.isArray(edits) || edits.length === 0) return { ok: false, reason: '"edits" must be a non-empty array of { old_string, new_string }' };
  const parsed: Edit[] = [];
  for (const [i, e] of edits.entries()) {
    if (typeof e !== 'object' || e === null) return { ok: false, reason: `edits[${i}] must be an object { old_string, new_string }` };
    const { old_string: oldString, new_string: newString } = e as Record<string, unknown>;
    if (typeof oldString !== 'string' || typeof newString !== 'string') return { ok: false, reason: `edits[${i}] needs string old_string and new_string` };
    if (oldString === '') return { ok: false, reason: `edits[${i}].old_string is empty; quote the text to replace` };
    parsed.push({ old_string: oldString, new_string: newString });
  }
  return { ok: true, proposal: { description: cleanDescription(description), edits: parsed } };
}

/** One line, no tabs (results.tsv is tab-separated), at most MAX_DESCRIPTION_CHARS. */
export function cleanDescription(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > MAX_DESCRIPTION_CHARS ? `${line.slice(0, MAX_DESCRIPTION_CHARS - 1)}…` : line;
}

function countOccurrences(haystack: string, needle: string): number[] {
  const at: number[] = [];
  for (let i = haystack.indexOf(needle); i !== -1; i = haystack.indexOf(needle, i + 1)) at.push(i);
  return at;
}

function excerpt(s: string, n = 80): string {
  const one = s.replace(/\n/g, '\\n');
  return one.length > n ? `${one.slice(0, n)}…` : one;
}

export type ApplyResult = { ok: true; text: string } | { ok: false; reason: string };

/** Apply the edits to `source`; every failure names the edit and says why. */
export function applyEdits(source: string, edits: readonly Edit[], file = 'train.ts'): ApplyResult {
  const spans: { start: number; end: number; replacement: string; index: number }[] = [];
  for (const [i, e] of edits.entries()) {
    const at = countOccurrences(source, e.old_string);
    if (at.length === 0) return { ok: false, reason: `edits[${i}].old_string was not found in ${file} (it must match exactly, whitespace included): "${excerpt(e.old_string)}"` };
    if (at.length > 1) return { ok: false, reason: `edits[${i}].old_string occurs ${at.length} times in ${file}; include more surrounding text so it occurs exactly once: "${excerpt(e.old_string)}"` };
    spans.push({ start: at[0], end: at[0] + e.old_string.length, replacement: e.new_string, index: i });
  }
  spans.sort((a, b) => a.start - b.start);
  for (let k = 1; k < spans.length; k++) {
    if (spans[k].start < spans[k - 1].end) return { ok: false, reason: `edits[${spans[k - 1].index}] and edits[${spans[k].index}] overlap in ${file}; merge them into one edit` };
  }
  let out = '';
  let pos = 0;
  for (const s of spans) {
    out += source.slice(pos, s.start) + s.replacement;
    pos = s.end;
  }
  out += source.slice(pos);
  if (out === source) return { ok: false, reason: `the edits leave ${file} unchanged` };
  return { ok: true, text: out };
}
