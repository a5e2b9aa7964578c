/**
 * @file The contract between train.ts and the harness: the names the harness imports from
 * train.ts and the kind of each. Everything else in train.ts is the agent's to change.
 * The research guard (src/research/contract.ts) rejects a train.ts that removes or renames one of
 * these or changes its kind, and type-checks the harness files below against the proposed train.ts,
 * so a changed signature is caught before any GPU time as well.
 */

export type ContractKind = 'class' | 'function' | 'const' | 'type';

export const TRAIN_CONTRACT: Readonly<Record<string, ContractKind>> = Object.freeze({
  GPTConfig: 'type', // the model's configuration (the fixtures use the reference's fields)
  GPT: 'class', // verify, the step bench, the tests: built from a config, initWeights, forward, logits
  buildModelConfig: 'function', // depth, vocabulary and sizes → GPTConfig
  windowSizes: 'function', // verify compares the attention windows with the reference's
  ParamGroup: 'type',
  MuonAdamW: 'class', // verify steps it with the fixture's groups; the optimizer bench times it
  OPTIMIZER_SETTINGS: 'const', // setupOptimizer's arguments from the hyperparameters
  RUN_SIZES: 'const', // the sizes the step bench measures
  PRECISION: 'const', // the compute precision ('auto' | 'f16' | 'f32') the step bench runs at
  TrainState: 'type',
  trainStep: 'function', // one optimizer step of the loop, run by the step bench and the steady-state test
  TrainSummary: 'type',
  train: 'function', // the whole run (the smoke test)
});

/** Harness files that import train.ts, type-checked by the guard against a proposed train.ts. */
export const CONTRACT_USERS: readonly string[] = ['src/verify.ts', 'bench/step.bench.ts', 'bench/optimizer.bench.ts'];
