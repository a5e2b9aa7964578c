/**
 * @file A small reverse-mode tape. Differentiable functions (src/autograd/*.ts, or train.ts's own)
 * run their forward kernels, then `record()` a backward closure; `backward()` walks the records
 * in reverse, hands each closure the gradients of its outputs and accumulates what it returns.
 *
 * Memory: gradients of intermediate tensors are released as soon as their producer's backward has
 * run; tensors saved for backward live until the enclosing `rt.scope()` ends (one micro-step).
 * Leaf gradients (`param.grad`) are kept across scopes and accumulate across micro-batches until
 * `zeroGrad()`. A backward closure may return one of its incoming gradients unchanged (add does);
 * the tape copies a gradient before it would be accumulated into in two places.
 * Ops whose forward has no differentiable path to a tensor simply return null for it.
 *
 * The tape is ambient, like PyTorch's: `useRuntime(rt)` once, then ops find it via `ctx()`.
 */
import { axpyInPlace, copy } from '../ops/elementwise.ts';
import type { Runtime } from '../gpu/runtime.ts';
import type { GradNodeRef, Tensor } from '../gpu/tensor.ts';

/** Gradients of a node's outputs in, gradients of its inputs out (null/undefined = none). */
export type Backward = (gradOutputs: readonly (Tensor | null)[]) => readonly (Tensor | null | undefined)[];

export interface GradNode extends GradNodeRef {
  readonly name: string;
  readonly inputs: readonly Tensor[];
  readonly outputs: readonly Tensor[];
  readonly backward: Backward;
}

export class Tape {
  readonly nodes: GradNode[] = [];
  #enabled = true;

  constructor(readonly rt: Runtime) {}

  get enabled(): boolean {
    return this.#enabled;
  }

  /** True if an op on these inputs should record (grad mode on and some input requires grad). */
  needsGrad(inputs: readonly Tensor[]): boolean {
    return this.#enabled && inputs.some((t) => t.requiresGrad);
  }

  /** Records an op; a no-op when no input requires grad or grad mode is off. */
  record(name: string, inputs: readonly Tensor[], outputs: readonly Tensor[], backward: Backward): void {
    if (!this.needsGrad(inputs)) return;
    const node: GradNode = { name, inputs, outputs, backward };
    for (const o of outputs) {
      o.requiresGrad = true;
      o.node = node;
    }
    this.nodes.push(node);
  }

  /** Runs fn with recording off (evaluation). */
  noGrad<R>(fn: () => R): R {
    const was = this.#enabled;
    this.#enabled = false;
    try {
      return fn();
    } finally {
      this.#enabled = was;
    }
  }

  /**
   * Backpropagates from `root` with gradient `seed` (default: ones, for a scalar loss), adding
   * into the `.grad` of every leaf that requires grad. Clears the tape.
   */
  backward(root: Tensor, seed?: Tensor): void {
    const rt = this.rt;
    if (!root.requiresGrad) throw new Error(`backward: ${root.describe()} does not require grad`);
    if (!seed && root.size !== 1) throw new Error(`backward: ${root.describe()} is not a scalar; pass a seed gradient`);
    if (seed && seed.size !== root.size) throw new Error(`backward: seed ${seed.describe()} does not match ${root.describe()}`);
    const grads = new Map<Tensor, Tensor>();
    /** Gradient tensors the tape holds (in `grads` or as a leaf's .grad): never stored twice. */
    const held = new Set<Tensor>();
    const accumulate = (t: Tensor, g: Tensor) => {
      if (g.size !== t.size) throw new Error(`gradient ${g.describe()} does not match ${t.describe()}`);
      if (t.node === null) {
        // a leaf: parameters keep their gradient across scopes
        if (t.grad) {
          axpyInPlace(rt, t.grad, g);
          if (!held.has(g)) rt.release(g);
        } else {
          const owned = held.has(g) ? copy(rt, g) : g;
          t.grad = rt.keep(owned);
          held.add(owned);
        }
        return;
      }
      const prev = grads.get(t);
      if (prev) {
        axpyInPlace(rt, prev, g);
        if (!held.has(g)) rt.release(g);
      } else {
        const owned = held.has(g) ? copy(rt, g) : g;
        grads.set(t, owned);
        held.add(owned);
      }
    };
    if (seed) {
      accumulate(root, copy(rt, seed)); // the caller keeps its seed
    } else {
      const one = rt.empty(root.shape, root.dtype);
      rt.fill(one, 1);
      accumulate(root, one);
    }
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const node = this.nodes[i];
      const gradOutputs = node.outputs.map((o) => grads.get(o) ?? null);
      if (gradOutputs.every((g) => g === null)) continue;
      const gradInputs = node.backward(gradOutputs);
      if (gradInputs.length !== node.inputs.length) {
        throw new Error(`${node.name} backward returned ${gradInputs.length} gradients for ${node.inputs.length} inputs`);
      }
      // this node's output gradients are done: drop them unless passed through to an input
      for (let j = 0; j < node.outputs.length; j++) {
        const g = gradOutputs[j];
        if (!g) continue;
        grads.delete(node.outputs[j]);
        held.delete(g);
      }
      for (let j = 0; j < node.inputs.length; j++) {
        const g = gradInputs[j];
        if (g && node.inputs[j].requiresGrad) accumulate(node.inputs[j], g);
        else if (g && !gradOutputs.includes(g)) rt.release(g);
      }
      for (const g of gradOutputs) if (g && !held.has(g)) rt.release(g);
    }
    for (const g of grads.values()) rt.release(g);
    this.clear();
  }

  /** Forgets recorded ops (without backpropagating) and detaches their outputs. */
  clear(): void {
    for (const n of this.nodes) {
      for (const o of n.outputs) {
        o.node = null;
        o.requiresGrad = false;
      }
    }
    this.nodes.length = 0;
  }
}

/** Releases the gradients of `params` (the next backward starts fresh; buffers return to the pool). */
export function zeroGrad(rt: Runtime, params: Iterable<Tensor>): void {
  for (const p of params) {
    if (p.grad) {
      p.grad.kept = false;
      rt.release(p.grad);
      p.grad = null;
    }
  }
}

let current: Tape | null = null;

/** Sets the runtime that differentiable ops use (one per process, like a CUDA device). */
export function useRuntime(rt: Runtime): Tape {
  current = new Tape(rt);
  return current;
}

/** The ambient tape and runtime, for differentiable ops. */
export function ctx(): Tape {
  if (!current) throw new Error('no runtime: call useRuntime(rt) first');
  return current;
}

/** Marks a tensor as a leaf that collects gradients (a parameter). */
export function requiresGrad<T extends Tensor>(t: T): T {
  t.requiresGrad = true;
  t.node = null;
  return t;
}
