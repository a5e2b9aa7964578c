import { describe, expect, it } from 'vitest';
import { applyEdits, cleanDescription, MAX_DESCRIPTION_CHARS, parseProposal, PROPOSE_TOOL } from '../../src/research/edits.ts';

const SRC = `const MATRIX_LR = 0.04; // lr
const DEPTH = 8; // layers
const X = 1;
const Y = 1;
`;

describe('parseProposal', () => {
  it('accepts a well-formed proposal and cleans its description', () => {
    const r = parseProposal({ description: '  raise\tMATRIX_LR\n to 0.05 ', edits: [{ old_string: 'a', new_string: 'b' }] });
    expect(r).toEqual({ ok: true, proposal: { description: 'raise MATRIX_LR to 0.05', edits: [{ old_string: 'a', new_string: 'b' }] } });
  });

  it.each([
    [null, /object/],
    ['text', /object/],
    [{ edits: [{ old_string: 'a', new_string: 'b' }] }, /description/],
    [{ description: '  ', edits: [{ old_string: 'a', new_string: 'b' }] }, /description/],
    [{ description: 'x' }, /edits/],
    [{ description: 'x', edits: [] }, /edits/],
    [{ description: 'x', edits: ['a'] }, /edits\[0\]/],
    [{ description: 'x', edits: [{ old_string: 'a' }] }, /edits\[0\] needs string/],
    [{ description: 'x', edits: [{ old_string: '', new_string: 'b' }] }, /empty/],
  ])('rejects %j', (input, why) => {
    const r = parseProposal(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(why);
  });

  it('cuts long descriptions to one results.tsv cell', () => {
    const d = cleanDescription('x'.repeat(500));
    expect(d.length).toBe(MAX_DESCRIPTION_CHARS);
    expect(d.endsWith('…')).toBe(true);
  });

  it('declares the tool input the issue specifies', () => {
    expect(PROPOSE_TOOL.name).toBe('propose_experiment');
    expect(PROPOSE_TOOL.input_schema.required).toEqual(['description', 'edits']);
    expect(PROPOSE_TOOL.input_schema.properties.edits.items.required).toEqual(['old_string', 'new_string']);
  });
});

describe('applyEdits', () => {
  it('applies several non-overlapping edits regardless of order', () => {
    const r = applyEdits(SRC, [
      { old_string: 'const DEPTH = 8;', new_string: 'const DEPTH = 10;' },
      { old_string: 'MATRIX_LR = 0.04', new_string: 'MATRIX_LR = 0.05' },
    ]);
    expect(r).toEqual({ ok: true, text: SRC.replace('0.04', '0.05').replace('DEPTH = 8', 'DEPTH = 10') });
  });

  it('can delete and insert text', () => {
    const r = applyEdits(SRC, [{ old_string: 'const X = 1;\n', new_string: '' }]);
    expect(r.ok && r.text).toBe(SRC.replace('const X = 1;\n', ''));
  });

  it('rejects an old_string that is missing, with the edit index', () => {
    const r = applyEdits(SRC, [{ old_string: 'DEPTH = 8', new_string: 'DEPTH = 9' }, { old_string: 'const Z = 3;', new_string: '' }]);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/edits\[1\]\.old_string was not found in train\.ts/);
  });

  it('rejects an old_string that occurs more than once', () => {
    const r = applyEdits(SRC, [{ old_string: ' = 1;', new_string: ' = 2;' }]);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/occurs 2 times/);
  });

  it('rejects overlapping edits', () => {
    const r = applyEdits(SRC, [{ old_string: 'const MATRIX_LR = 0.04;', new_string: '' }, { old_string: '0.04; // lr', new_string: '' }]);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/overlap/);
  });

  it('rejects edits that change nothing', () => {
    const r = applyEdits(SRC, [{ old_string: 'DEPTH = 8', new_string: 'DEPTH = 8' }]);
    expect(r).toEqual({ ok: false, reason: 'the edits leave train.ts unchanged' });
  });

  it('is exact about whitespace', () => {
    const r = applyEdits(SRC, [{ old_string: 'const  DEPTH = 8;', new_string: '' }]);
    expect(r.ok).toBe(false);
  });
});
