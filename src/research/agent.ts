/**
 * @file The research driver's side of the conversation with Claude, through `@anthropic-ai/sdk`.
 * Each experiment is one conversation: a system prompt that stays the same all run (program.md,
 * the driver's protocol, the README, the baseline's run.log, and the API reference that
 * api_reference.ts generates from the source: src/ signatures, the parts of prepare.ts train.ts
 * uses, the kernel conventions; prompt-cached), a first message with the current train.ts, the
 * results so far, recent diffs (discarded ones included) and the best val_bpb, then a
 * `propose_experiment` tool call from the model. A bad call (no call, two calls, a malformed
 * input, an edit that does not apply, a guard rejection) is answered with the reason in a
 * tool_result and the model tries again; a crash is answered with the log tail for a repair.
 *
 * No sampling parameters, prefill or forced tool choice are sent (current models reject them);
 * thinking blocks are passed back unchanged. The SDK retries 408/409/429/5xx and connection
 * errors; past its retries, `Conversation.next` backs off and tries again until stopped, while
 * a rejected key, an unknown model or a bad request end the run with a clear message.
 */
import Anthropic, {
  AnthropicError, APIConnectionError, APIError, APIUserAbortError, AuthenticationError, BadRequestError, ConflictError, InternalServerError,
  NotFoundError, PaymentRequiredError, PermissionDeniedError, RateLimitError, RequestTimeoutError,
} from '@anthropic-ai/sdk';
import type { ContentBlock, ContentBlockParam, MessageCreateParamsNonStreaming, MessageParam, TextBlockParam, Tool } from '@anthropic-ai/sdk/resources/messages/messages';
import { parseProposal, PROPOSE_TOOL, TOOL_NAME, type Proposal } from './edits.ts';
import { addUsage, requestCostUsd, zeroUsage, type Price, type TokenUsage } from './pricing.ts';

/** A sensible current default: the latest Sonnet (speed and cost suit an all-night loop). */
export const DEFAULT_MODEL = 'claude-sonnet-5-5';

/** An API failure the run cannot continue after (bad key, unknown model, bad request, billing). */
export class FatalApiError extends Error {
  override name = 'FatalApiError';
}

/** The request was abandoned (Ctrl-C, or a stop while waiting out an outage). */
export class ApiAbortedError extends Error {
  override name = 'ApiAbortedError';
}

export interface AgentOptions {
  model: string;
  /** Defaults to ANTHROPIC_API_KEY (the SDK's own default). */
  apiKey?: string;
  /** Defaults to ANTHROPIC_BASE_URL, else the public API (the SDK's own default). */
  baseURL?: string;
  maxTokens: number;
  /** output_config.effort; omitted when null (the model's default). */
  effort?: 'low' | 'medium' | 'high' | 'xhigh' | 'max' | null;
  /** Price used for USD; null = unknown. */
  price: Price | null;
  /** SDK-level retries per request. */
  maxRetries?: number;
  /** First wait after the SDK gives up on a retryable error; doubles up to backoffMaxMs. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Per-request timeout (ms). */
  timeoutMs?: number;
  log: (line: string) => void;
}

/** What the model sees first in each experiment. */
export interface ExperimentContext {
  /** Stable for the whole run (system prompt, cached). */
  programMd: string;
  readme: string;
  /** What train.ts can use: src/ signatures, prepare.ts's parts, kernel conventions (api_reference.ts). */
  apiReference?: string;
  /** The whole of prepare.ts (older drivers; apiReference replaces it). */
  prepareTs?: string;
  /** The baseline's run.log (hardware, model size, summary), or '' if there is none. */
  baselineLog?: string;
  /** Changes when an experiment is kept. */
  trainTs: string;
  /** Changes every experiment: best, counts, results.tsv, recent diffs. */
  state: string;
}

/** Instructions specific to running under the driver; program.md covers the research itself. */
export const DRIVER_PROTOCOL = `# Running under the autoresearch-ts driver

You are the researcher in the loop that program.md describes, but the driver (\`npm run research\`) does the mechanical steps for you: it applies your edit, checks and commits it, runs training, reads val_bpb from the harness, keeps or resets, and logs results.tsv. You do not run commands.

Each turn, call the tool \`${TOOL_NAME}\` exactly once, with:
- \`description\`: one short line saying what the experiment tries (it becomes the results.tsv description).
- \`edits\`: a list of { old_string, new_string } replacements in train.ts. Each old_string must occur exactly once in the current train.ts, copied verbatim (whitespace included) with enough context to be unique; edits must not overlap.

Before any GPU time the driver rejects a proposal that does not apply, does not type-check, imports anything but './prepare.ts', './src/…' (not src/research) or 'webgpu', renames or removes an export the harness uses (src/train_contract.ts) or breaks its signature, or uses eval, Function, dynamic import, require, fs, process.env, child processes or the network. A rejection comes back as a tool_result with the reason; fix it and call the tool again (rejections are limited). If the run crashes you get the end of run.log and may propose a fix to the crashed train.ts through the same tool; if the idea itself is broken, propose the smallest change that makes it run, or a different idea.

One experiment per proposal: a single idea you can name in a line, so that keeping or discarding it teaches something. Read the results and the recent diffs (discarded ones included) so you don't repeat what already failed.

With several GPUs, several experiments run at once: the state lists those running now (with their diffs) and every finished one. Propose something different from what is running. Your edit applies to the current best train.ts; if another experiment is kept while yours runs and yours also wins, the driver replays your change onto the new best and keeps it only if it still wins there.`;

/** Result of one turn of the conversation. */
export type Turn =
  | { kind: 'proposal'; proposal: Proposal }
  | { kind: 'invalid'; reason: string; description: string | null };

function toParam(block: ContentBlock): ContentBlockParam | null {
  switch (block.type) {
    case 'text':
      return { type: 'text', text: block.text };
    case 'thinking':
      return { type: 'thinking', thinking: block.thinking, signature: block.signature };
    case 'redacted_thinking':
      return { type: 'redacted_thinking', data: block.data };
    case 'tool_use':
      return { type: 'tool_use', id: block.id, name: block.name, input: block.input };
    default:
      return null; // server-tool blocks: this driver offers no server tools
  }
}

function withCacheBreakpoint(message: MessageParam): MessageParam {
  const content: ContentBlockParam[] = typeof message.content === 'string' ? [{ type: 'text', text: message.content }] : [...message.content];
  const last = content.length - 1;
  content[last] = { ...content[last], cache_control: { type: 'ephemeral' } } as ContentBlockParam;
  return { ...message, content } as MessageParam;
}

function describeApiError(e: APIError): string {
  const status = e.status ?? 'connection';
  const type = e.type ?? (e.error as { error?: { type?: string } } | undefined)?.error?.type ?? '';
  const msg = e.apiMessage ?? e.message;
  return `${status}${type ? ` ${type}` : ''}: ${msg}`.slice(0, 300);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new ApiAbortedError('aborted'));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new ApiAbortedError('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class ResearchAgent {
  readonly client: Anthropic;
  readonly opts: AgentOptions;
  /** Totals over every conversation of this agent. */
  usage: TokenUsage = zeroUsage();
  usd = 0;

  constructor(opts: AgentOptions) {
    this.opts = opts;
    this.client = new Anthropic({
      ...(opts.apiKey ? { apiKey: opts.apiKey } : {}),
      ...(opts.baseURL ? { baseURL: opts.baseURL } : {}),
      maxRetries: opts.maxRetries ?? 4,
    });
  }

  /** A fatal error for problems no retry fixes, with a message a person can act on. */
  fatalFor(e: APIError): FatalApiError | null {
    const what = describeApiError(e);
    if (e instanceof AuthenticationError) return new FatalApiError(`The Anthropic API rejected the API key (${what}). Check ANTHROPIC_API_KEY.`);
    if (e instanceof PermissionDeniedError) return new FatalApiError(`The API key may not use this (${what}).`);
    if (e instanceof PaymentRequiredError) return new FatalApiError(`The Anthropic API refused for billing reasons (${what}).`);
    if (e instanceof NotFoundError) return new FatalApiError(`Model '${this.opts.model}' was not found (${what}). Pass a valid --model, e.g. --model ${DEFAULT_MODEL}.`);
    if (e instanceof BadRequestError) {
      if (/model/i.test(e.apiMessage ?? e.message)) return new FatalApiError(`The API rejected model '${this.opts.model}' (${what}). Pass a valid --model, e.g. --model ${DEFAULT_MODEL}.`);
      return new FatalApiError(`The Anthropic API rejected the request (${what}).`);
    }
    const retryable = e instanceof RateLimitError || e instanceof InternalServerError || e instanceof APIConnectionError ||
      e instanceof RequestTimeoutError || e instanceof ConflictError || (typeof e.status === 'number' && e.status >= 500);
    if (!retryable) return new FatalApiError(`The Anthropic API returned an error (${what}).`);
    return null;
  }

  /** Fail early on an unknown model or a rejected key; other failures only warn (the loop retries). */
  async checkModel(): Promise<void> {
    try {
      await this.client.models.retrieve(this.opts.model, null, { maxRetries: 1 });
    } catch (e) {
      // a proxy behind ANTHROPIC_BASE_URL may lack /v1/models: only a 404 about the model is fatal
      if (e instanceof NotFoundError && /model/i.test(e.apiMessage ?? '')) {
        throw new FatalApiError(`Unknown model '${this.opts.model}' (${describeApiError(e)}). Pass a valid --model, e.g. --model ${DEFAULT_MODEL}.`);
      }
      if (e instanceof AuthenticationError || e instanceof PermissionDeniedError) throw this.fatalFor(e);
      if (e instanceof APIError) this.opts.log(`warning: could not look up model '${this.opts.model}' (${describeApiError(e)}); continuing`);
      else if (e instanceof AnthropicError) throw new FatalApiError(`Anthropic client error: ${e.message}`);
      else throw e;
    }
  }

  startConversation(ctx: ExperimentContext): Conversation {
    return new Conversation(this, ctx);
  }

  // An explicit timeout, scaled as the SDK scales it, so a large --max-tokens is not refused
  // as "streaming required" (non-streaming is fine here: one tool call per reply).
  #timeoutMs(maxTokens: number): number {
    return this.opts.timeoutMs ?? Math.max(600_000, (3_600_000 * maxTokens) / 128_000);
  }

  /** One Messages API call, retried past outages with backoff until it succeeds or is stopped. */
  async create(params: MessageCreateParamsNonStreaming, signal?: AbortSignal, giveUp?: () => boolean): Promise<Anthropic.Message> {
    const initial = this.opts.backoffInitialMs ?? 15_000;
    const max = this.opts.backoffMaxMs ?? 600_000;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.client.messages.create(params, { signal, timeout: this.#timeoutMs(params.max_tokens) });
      } catch (e) {
        if (e instanceof APIUserAbortError || signal?.aborted) throw new ApiAbortedError('the request was abandoned');
        if (!(e instanceof APIError)) {
          // e.g. no credentials could be resolved: nothing a retry changes
          if (e instanceof AnthropicError) throw new FatalApiError(`Anthropic client error: ${e.message}`);
          throw e;
        }
        const fatal = this.fatalFor(e);
        if (fatal) throw fatal;
        if (giveUp?.()) throw new ApiAbortedError('stopped while the API was unavailable');
        const wait = Math.min(max, initial * 2 ** attempt) * (1 - Math.random() * 0.2);
        this.opts.log(`API unavailable (${describeApiError(e)}); retrying in ${(wait / 1000).toFixed(wait < 10_000 ? 1 : 0)} s`);
        await sleep(wait, signal);
      }
    }
  }
}

export class Conversation {
  readonly #agent: ResearchAgent;
  readonly #system: TextBlockParam[];
  readonly #messages: MessageParam[];
  #pending: ContentBlockParam[] | null = null;
  #lastToolUseId: string | null = null;
  usage: TokenUsage = zeroUsage();
  /** USD of this conversation; null when the model has no known price. */
  usd: number | null;
  requests = 0;

  constructor(agent: ResearchAgent, ctx: ExperimentContext) {
    this.#agent = agent;
    this.usd = agent.opts.price ? 0 : null;
    this.#system = [
      { type: 'text', text: ctx.programMd },
      { type: 'text', text: DRIVER_PROTOCOL },
      { type: 'text', text: `# README.md\n\n${ctx.readme}` },
      ...(ctx.baselineLog ? [{ type: 'text' as const, text: `# The baseline run: run.log of the unmodified train.ts on this machine\n\n\`\`\`\n${ctx.baselineLog}\n\`\`\`` }] : []),
      {
        type: 'text',
        text: ctx.apiReference ?? `# prepare.ts (fixed, read-only: for reference only)\n\n\`\`\`ts\n${ctx.prepareTs ?? ''}\n\`\`\``,
        cache_control: { type: 'ephemeral' },
      },
    ];
    this.#messages = [{
      role: 'user',
      content: [
        { type: 'text', text: `# Current train.ts (the file you edit)\n\n\`\`\`ts\n${ctx.trainTs}\n\`\`\``, cache_control: { type: 'ephemeral' } },
        { type: 'text', text: `${ctx.state}\n\nPropose the next experiment: call ${TOOL_NAME} once.` },
      ],
    }];
  }

  /** The messages so far (for tests and debugging). */
  get messages(): readonly MessageParam[] {
    return this.#messages;
  }

  /** Ask for the next proposal. `giveUp` ends waiting out an outage (e.g. a stop was requested). */
  async next(signal?: AbortSignal, giveUp?: () => boolean): Promise<Turn> {
    if (this.#pending) {
      this.#messages.push({ role: 'user', content: this.#pending });
      this.#pending = null;
    }
    const messages = this.#messages.map((m, i) => (i === this.#messages.length - 1 && i > 0 ? withCacheBreakpoint(m) : m));
    const opts = this.#agent.opts;
    const params: MessageCreateParamsNonStreaming = {
      model: opts.model,
      max_tokens: opts.maxTokens,
      system: this.#system,
      tools: [PROPOSE_TOOL as unknown as Tool],
      messages,
      ...(opts.effort ? { output_config: { effort: opts.effort } } : {}),
    };
    const response = await this.#agent.create(params, signal, giveUp);
    this.requests++;
    const u = response.usage;
    const usage: TokenUsage = { input: u.input_tokens ?? 0, output: u.output_tokens ?? 0, cacheCreation: u.cache_creation_input_tokens ?? 0, cacheRead: u.cache_read_input_tokens ?? 0 };
    this.usage = addUsage(this.usage, usage);
    this.#agent.usage = addUsage(this.#agent.usage, usage);
    if (opts.price) {
      const cost = requestCostUsd(usage, opts.price);
      this.usd = (this.usd ?? 0) + cost;
      this.#agent.usd += cost;
    }

    const content = response.content.map(toParam).filter((b): b is ContentBlockParam => b !== null);
    if (content.length === 0) content.push({ type: 'text', text: '(no content)' });
    this.#messages.push({ role: 'assistant', content });

    const toolUses = response.content.filter((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use');
    const answerAll = (text: string): ContentBlockParam[] => toolUses.map((t) => ({ type: 'tool_result', tool_use_id: t.id, content: text, is_error: true }));
    const ours = toolUses.filter((t) => t.name === TOOL_NAME);

    if (toolUses.length === 0) {
      const why = response.stop_reason === 'max_tokens' ? 'the reply hit max_tokens before any tool call' : `no ${TOOL_NAME} call (stop_reason ${response.stop_reason})`;
      this.#pending = [{ type: 'text', text: `${why}. Call ${TOOL_NAME} exactly once with a description and edits.` }];
      return { kind: 'invalid', reason: why, description: null };
    }
    if (ours.length !== 1 || toolUses.length !== 1) {
      const why = `expected exactly one ${TOOL_NAME} call, got ${toolUses.length} tool calls (${toolUses.map((t) => t.name).join(', ')})`;
      this.#pending = answerAll(`Rejected: ${why}. Make a single ${TOOL_NAME} call.`);
      return { kind: 'invalid', reason: why, description: null };
    }
    const call = ours[0];
    this.#lastToolUseId = call.id;
    if (response.stop_reason === 'max_tokens') {
      const why = 'the tool call was cut off at max_tokens; propose a smaller edit';
      this.#pending = answerAll(`Rejected: ${why}.`);
      return { kind: 'invalid', reason: why, description: null };
    }
    const parsed = parseProposal(call.input);
    if (!parsed.ok) {
      this.#pending = answerAll(`Rejected: ${parsed.reason}.`);
      const d = (call.input as { description?: unknown } | null)?.description;
      return { kind: 'invalid', reason: parsed.reason, description: typeof d === 'string' ? d : null };
    }
    return { kind: 'proposal', proposal: parsed.proposal };
  }

  /** Answer the last proposal with why it was rejected (the next `next()` sends it). */
  reject(reason: string): void {
    this.#answer(`Rejected before running: ${reason}\nNothing was run. Fix the proposal and call ${TOOL_NAME} again.`);
  }

  /** Answer the last proposal with its crash, asking for a repair of the crashed train.ts. */
  crashed(reason: string, logTail: string, attemptsLeft: number): void {
    this.#answer(
      `The run crashed: ${reason}\n\nLast lines of run.log:\n\`\`\`\n${logTail}\n\`\`\`\n\n` +
      `train.ts now contains your proposal as applied. If this is a bug in the change, call ${TOOL_NAME} with edits to the crashed train.ts that fix it ` +
      `(${attemptsLeft} repair attempt${attemptsLeft === 1 ? '' : 's'} left); the description should stay the experiment's.`,
    );
  }

  #answer(text: string): void {
    if (!this.#lastToolUseId) throw new Error('Conversation: nothing to answer');
    this.#pending = [{ type: 'tool_result', tool_use_id: this.#lastToolUseId, content: text, is_error: true }];
  }
}
