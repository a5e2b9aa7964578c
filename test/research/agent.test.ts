/**
 * The Messages API side: the real SDK against the fake API on 127.0.0.1. Malformed turns are
 * answered and retried; outages (429, 529, 5xx, a dropped connection) are waited out; a bad key,
 * an unknown model or a bad request end the run with a message a person can act on.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ApiAbortedError, DRIVER_PROTOCOL, FatalApiError, ResearchAgent, type ExperimentContext } from '../../src/research/agent.ts';
import { priceFor } from '../../src/research/pricing.ts';
import { apiError, DEFAULT_USAGE, FakeMessagesApi, lastUserText, proposal, rawToolCall, TEST_MODEL, textReply } from './helpers.ts';

const CTX: ExperimentContext = { programMd: '# program', readme: '# readme', apiReference: '# What train.ts can use\nexport const TIME_BUDGET = 300;', trainTs: 'const DEPTH = 8;\n', state: '# state' };

let api: FakeMessagesApi;
let log: string[];
function agent(over: Partial<ConstructorParameters<typeof ResearchAgent>[0]> = {}): ResearchAgent {
  return new ResearchAgent({
    model: TEST_MODEL, apiKey: 'test-key', baseURL: api.url, maxTokens: 2048, price: priceFor(TEST_MODEL), maxRetries: 0,
    backoffInitialMs: 5, backoffMaxMs: 20, log: (l) => log.push(l), ...over,
  });
}

beforeAll(async () => {
  api = await FakeMessagesApi.start();
});
afterAll(() => api.close());
beforeEach(() => {
  log = [];
  api.requests.length = 0;
});

describe('Conversation', () => {
  it('builds a cached system prompt and returns a parsed proposal with its cost', async () => {
    api.script(proposal('deeper', [['const DEPTH = 8;', 'const DEPTH = 10;']]));
    const a = agent({ effort: 'medium' });
    const conv = a.startConversation(CTX);
    const turn = await conv.next();
    expect(turn).toEqual({ kind: 'proposal', proposal: { description: 'deeper', edits: [{ old_string: 'const DEPTH = 8;', new_string: 'const DEPTH = 10;' }] } });
    const body = api.messageBodies[0];
    expect(body.system.map((b: { text: string }) => b.text.split('\n')[0])).toEqual(['# program', DRIVER_PROTOCOL.split('\n')[0], '# README.md', '# What train.ts can use']);
    expect(body.system.map((b: { cache_control?: unknown }) => Boolean(b.cache_control))).toEqual([false, false, false, true]);
    expect(body.messages[0].content[0].cache_control).toEqual({ type: 'ephemeral' }); // train.ts
    expect(body.messages[0].content[1].text).toContain('# state');
    expect(body.output_config).toEqual({ effort: 'medium' });
    expect(body.max_tokens).toBe(2048);
    expect(body.tool_choice).toBeUndefined();
    const u = DEFAULT_USAGE;
    expect(conv.usage).toEqual({ input: u.input_tokens, output: u.output_tokens, cacheCreation: u.cache_creation_input_tokens, cacheRead: u.cache_read_input_tokens });
    expect(conv.usd).toBeCloseTo((1200 * 2 + 300 * 10 + 800 * 2.5 + 9000 * 0.1) / 1e6, 12);
    expect(a.usd).toBeCloseTo(conv.usd!, 12);
  });

  it('answers every malformed turn and lets the model try again', async () => {
    api.script(
      textReply('Let me think about it.'),
      { json: { id: 'm', type: 'message', role: 'assistant', model: TEST_MODEL, stop_reason: 'tool_use', stop_sequence: null, usage: DEFAULT_USAGE,
        content: [
          { type: 'tool_use', id: 't1', name: 'propose_experiment', input: { description: 'a', edits: [{ old_string: 'x', new_string: 'y' }] } },
          { type: 'tool_use', id: 't2', name: 'propose_experiment', input: { description: 'b', edits: [{ old_string: 'x', new_string: 'y' }] } },
        ] } },
      rawToolCall({ description: 'no edits' }),
      rawToolCall({ description: 'x', edits: [] }, 'run_bash'),
      proposal('cut off', [['a', 'b']], { stop: 'max_tokens' }),
      proposal('finally', [['const DEPTH = 8;', 'const DEPTH = 9;']]),
    );
    const conv = agent().startConversation(CTX);
    const turns = [];
    for (let i = 0; i < 6; i++) turns.push(await conv.next());
    expect(turns.map((t) => (t.kind === 'invalid' ? t.reason : `ok ${t.proposal.description}`))).toEqual([
      'no propose_experiment call (stop_reason end_turn)',
      'expected exactly one propose_experiment call, got 2 tool calls (propose_experiment, propose_experiment)',
      '"edits" must be a non-empty array of { old_string, new_string }',
      'expected exactly one propose_experiment call, got 1 tool calls (run_bash)',
      'the tool call was cut off at max_tokens; propose a smaller edit',
      'ok finally',
    ]);
    const bodies = api.messageBodies;
    expect(lastUserText(bodies[1])).toMatch(/^no propose_experiment call .*Call propose_experiment exactly once/);
    // both tool calls get a tool_result, as the API requires
    expect(bodies[2].messages.at(-1).content.map((b: { tool_use_id: string }) => b.tool_use_id)).toEqual(['t1', 't2']);
    expect(lastUserText(bodies[3])).toMatch(/Rejected: "edits" must be/);
    // the conversation grows: user, assistant, user, … and only the last turn carries a cache breakpoint
    expect(bodies[5].messages.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user']);
    const breakpoints = bodies[5].messages.slice(1).filter((m: any) => Array.isArray(m.content) && m.content.some((c: any) => c.cache_control));
    expect(breakpoints).toHaveLength(1);
    expect(conv.requests).toBe(6);
  });

  it('sends rejections and crashes back as tool results', async () => {
    api.script(proposal('a', [['const DEPTH = 8;', 'const DEPTH = 9;']]), proposal('b', [['const DEPTH = 9;', 'const DEPTH = 10;']]), proposal('c', [['x', 'y']]));
    const conv = agent().startConversation(CTX);
    await conv.next();
    conv.reject('the guard rejected train.ts:\ntrain.ts:3: eval is not allowed');
    await conv.next();
    conv.crashed('the train command exited with code 1', 'Traceback\nGpuOutOfMemoryError: out of memory', 2);
    await conv.next();
    const [, second, third] = api.messageBodies;
    expect(second.messages.at(-1).content[0]).toMatchObject({ type: 'tool_result', is_error: true });
    expect(lastUserText(second)).toContain('Rejected before running: the guard rejected train.ts:\ntrain.ts:3: eval is not allowed');
    expect(lastUserText(third)).toContain('The run crashed: the train command exited with code 1');
    expect(lastUserText(third)).toContain('GpuOutOfMemoryError: out of memory');
    expect(lastUserText(third)).toContain('2 repair attempts left');
  });
});

describe('API errors', () => {
  it('waits out 429, 529, 500 and a dropped connection, then continues', async () => {
    api.script(
      apiError(429, 'rate_limit_error', 'slow down', { 'retry-after-ms': '1' }),
      apiError(529, 'overloaded_error', 'Overloaded'),
      apiError(500, 'api_error', 'internal'),
      { hangUp: true },
      proposal('ok after all', [['const DEPTH = 8;', 'const DEPTH = 9;']]),
    );
    const turn = await agent().startConversation(CTX).next();
    expect(turn.kind).toBe('proposal');
    expect(log).toHaveLength(4);
    expect(log[0]).toMatch(/^API unavailable \(429 rate_limit_error: slow down\); retrying in/);
    expect(log[1]).toMatch(/529 overloaded_error: Overloaded/);
    expect(log[2]).toMatch(/500 api_error/);
    expect(log[3]).toMatch(/connection/i);
  });

  it('lets the SDK retry first, then backs off', async () => {
    api.script(apiError(529, 'overloaded_error', 'Overloaded', { 'retry-after-ms': '1' }), proposal('ok', [['const DEPTH = 8;', 'const DEPTH = 9;']]));
    const turn = await agent({ maxRetries: 2 }).startConversation(CTX).next();
    expect(turn.kind).toBe('proposal');
    expect(log).toEqual([]); // the SDK's own retry absorbed it
    expect(api.messageBodies).toHaveLength(2);
  });

  it('gives up waiting when asked to stop, or when aborted', async () => {
    api.script(apiError(529, 'overloaded_error', 'Overloaded'));
    await expect(agent().startConversation(CTX).next(undefined, () => true)).rejects.toThrow(ApiAbortedError);
    api.script(...Array.from({ length: 50 }, () => apiError(503, 'api_error', 'unavailable')));
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    await expect(agent({ backoffInitialMs: 30, backoffMaxMs: 30 }).startConversation(CTX).next(ac.signal)).rejects.toThrow(ApiAbortedError);
    api.clear();
  });

  it('ends with a clear message on a rejected key, an unknown model or a bad request', async () => {
    await expect(agent({ apiKey: 'wrong' }).startConversation(CTX).next()).rejects.toThrow(/rejected the API key \(401 authentication_error.*Check ANTHROPIC_API_KEY/);
    await expect(agent({ model: 'claude-sonnet-9' }).startConversation(CTX).next()).rejects.toThrow(/Model 'claude-sonnet-9' was not found \(404 not_found_error: model: claude-sonnet-9\)\. Pass a valid --model/);
    await expect(agent({ model: 'claude-sonnet-9' }).checkModel()).rejects.toThrow(/Unknown model 'claude-sonnet-9'.*--model claude-sonnet-5-5/);
    await expect(agent({ apiKey: 'wrong' }).checkModel()).resolves.toBeUndefined(); // the fake lets anyone list models
    api.script(apiError(400, 'invalid_request_error', 'messages: text content blocks must be non-empty'));
    const e = await agent().startConversation(CTX).next().catch((x) => x);
    expect(e).toBeInstanceOf(FatalApiError);
    expect(e.message).toMatch(/rejected the request \(400 invalid_request_error: messages: text content blocks/);
    await expect(agent().checkModel()).resolves.toBeUndefined();
  });

  it('warns but continues when the model list is unreachable', async () => {
    const a = agent({ baseURL: 'http://127.0.0.1:9' }); // nothing listens on the discard port
    await a.checkModel();
    expect(log[0]).toMatch(/^warning: could not look up model/);
  });
});

describe('large replies', () => {
  it('accepts a max_tokens above what the SDK allows without streaming by default', async () => {
    api.script(proposal('ok', [['const DEPTH = 8;', 'const DEPTH = 9;']]));
    const turn = await agent({ maxTokens: 64_000 }).startConversation(CTX).next();
    expect(turn.kind).toBe('proposal');
    expect(api.messageBodies.at(-1).max_tokens).toBe(64_000);
    expect(api.messageBodies.at(-1).stream).toBeUndefined();
  });
});
