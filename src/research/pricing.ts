/**
 * @file USD cost of the research driver's Messages API calls. A small table of list prices per
 * model family (USD per million tokens), matched by model-id prefix, so dated ids and `[1m]`
 * variants find their family. A model that is not in the table has no price unless the user
 * passes one (`--usd-per-mtok in,out`); its cost is then reported as unknown, never guessed.
 *
 * Prices as listed on platform.claude.com/docs/en/about-claude/pricing and the model pages,
 * checked 2026-11-20 (Sonnet 5.5 cache reads at $0.10 since the 2026-10-07 price cut). Prices
 * change: check the pricing page before trusting a total, and pass --usd-per-mtok to override.
 */

/** USD per million tokens. */
export interface Price {
  input: number;
  output: number;
  /** 5-minute cache writes (the driver uses the default 5-minute TTL). */
  cacheWrite: number;
  cacheRead: number;
  /** A higher price for the whole request when its prompt (input + cache) exceeds a threshold. */
  longPrompt?: { thresholdTokens: number; price: Omit<Price, 'longPrompt'> };
}

/** The date the table below was checked against Anthropic's pricing page. */
export const PRICES_CHECKED = '2026-11-20';

const p = (input: number, output: number, cacheWrite: number, cacheRead: number): Price => ({ input, output, cacheWrite, cacheRead });

/** Longest matching prefix wins, so 'claude-opus-4-5' is not priced as 'claude-opus-4'. */
const PRICE_TABLE: ReadonlyArray<readonly [string, Price]> = [
  ['claude-fable-5-1', p(10, 50, 12.5, 0.25)],
  ['claude-mythos-5-1', p(10, 50, 12.5, 0.25)],
  ['claude-fable-5', p(10, 50, 12.5, 1)],
  ['claude-mythos-5', p(10, 50, 12.5, 1)],
  ['claude-opus-5-5', p(4, 20, 5, 0.2)],
  ['claude-opus-5', p(5, 25, 6.25, 0.5)],
  ['claude-opus-4-8', p(5, 25, 6.25, 0.5)],
  ['claude-opus-4-7', p(5, 25, 6.25, 0.5)],
  ['claude-opus-4-6', p(5, 25, 6.25, 0.5)],
  ['claude-opus-4-5', p(5, 25, 6.25, 0.5)],
  ['claude-opus-4-1', p(15, 75, 18.75, 1.5)],
  ['claude-opus-4', p(15, 75, 18.75, 1.5)],
  ['claude-sonnet-5-5', p(2, 10, 2.5, 0.1)],
  ['claude-sonnet-5', p(2, 10, 2.5, 0.2)],
  ['claude-sonnet-4-6', p(3, 15, 3.75, 0.3)],
  ['claude-sonnet-4-5', p(3, 15, 3.75, 0.3)],
  ['claude-sonnet-4', p(3, 15, 3.75, 0.3)],
  ['claude-haiku-5-5', { ...p(0.1, 0.5, 0.125, 0.01), longPrompt: { thresholdTokens: 100_000, price: p(0.5, 2.5, 0.625, 0.05) } }],
  ['claude-haiku-4-5', p(1, 5, 1.25, 0.1)],
];

/**
 * The price of `model`, or null when the table has none. `override` ([input, output] USD per
 * MTok, from --usd-per-mtok) wins; cache writes and reads then get the standard 1.25× and 0.1×.
 */
export function priceFor(model: string, override?: readonly [number, number] | null): Price | null {
  if (override) {
    const [input, output] = override;
    return p(input, output, input * 1.25, input * 0.1);
  }
  let best: Price | null = null;
  let bestLength = -1;
  for (const [prefix, price] of PRICE_TABLE) {
    const next = model.charAt(prefix.length);
    const boundary = next === '' || next === '-' || next === '[' || next === '@';
    if (model.startsWith(prefix) && boundary && prefix.length > bestLength) {
      best = price;
      bestLength = prefix.length;
    }
  }
  return best;
}

/** Token counts as the Messages API reports them in `usage`. */
export interface TokenUsage {
  input: number;
  output: number;
  cacheCreation: number;
  cacheRead: number;
}

export const zeroUsage = (): TokenUsage => ({ input: 0, output: 0, cacheCreation: 0, cacheRead: 0 });

export function addUsage(a: TokenUsage, b: TokenUsage): TokenUsage {
  return { input: a.input + b.input, output: a.output + b.output, cacheCreation: a.cacheCreation + b.cacheCreation, cacheRead: a.cacheRead + b.cacheRead };
}

/** USD for one request's usage (a long-prompt tier applies per request, so price each response). */
export function requestCostUsd(usage: TokenUsage, price: Price): number {
  const promptTokens = usage.input + usage.cacheCreation + usage.cacheRead;
  const rate = price.longPrompt && promptTokens > price.longPrompt.thresholdTokens ? price.longPrompt.price : price;
  return (usage.input * rate.input + usage.output * rate.output + usage.cacheCreation * rate.cacheWrite + usage.cacheRead * rate.cacheRead) / 1e6;
}

/** Parse `--usd-per-mtok in,out` (e.g. "3,15"). */
export function parseUsdPerMtok(text: string): [number, number] {
  const parts = text.split(',').map((s) => Number(s.trim()));
  if (parts.length !== 2 || parts.some((x) => !Number.isFinite(x) || x < 0)) {
    throw new Error(`--usd-per-mtok expects "input,output" in USD per million tokens (e.g. 3,15), got '${text}'`);
  }
  return [parts[0], parts[1]];
}
