/**
 * @file Tensor: a shape and dtype over a range of a pooled GPU buffer.
 *
 * A tensor is `size` elements starting at element `offset` of its storage; views share storage
 * (kernels bind whole buffers and take offsets in their Params, so views cost nothing).
 * The autograd fields (`requiresGrad`, `grad`, `node`) are filled by src/autograd/ and are
 * opaque here.
 */
import type { Storage } from './buffers.ts';

export type DType = 'f32' | 'f16' | 'i32' | 'u32';

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, i32: 4, u32: 4 };

/** What autograd attaches to a tensor it produced (see src/autograd/tape.ts). */
export interface GradNodeRef {
  readonly name: string;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  /** Set by autograd: gradients flow to this tensor. */
  requiresGrad = false;
  /** Set by autograd: the accumulated gradient (same shape). */
  grad: Tensor | null = null;
  /** Set by autograd: the op that produced this tensor. */
  node: GradNodeRef | null = null;
  /** True once released back to the pool; using it after that is a bug we report. */
  released = false;
  /** Survives the enclosing runtime scope (parameters, optimizer state). */
  kept = false;

  constructor(
    readonly storage: Storage,
    shape: readonly number[],
    readonly dtype: DType,
    /** Offset into the storage, in elements. */
    readonly offset = 0,
    public name?: string,
  ) {
    this.shape = Object.freeze([...shape]);
    this.size = numel(shape);
    if (!Number.isInteger(this.size) || this.size < 0) throw new Error(`bad shape [${shape}]`);
    if ((offset + this.size) * DTYPE_BYTES[dtype] > storage.bytes) {
      throw new RangeError(`tensor [${shape}] at offset ${offset} does not fit its ${storage.bytes}-byte buffer`);
    }
  }

  get buffer(): GPUBuffer {
    if (this.released) throw new Error(`tensor ${this.describe()} used after release`);
    return this.storage.buffer;
  }

  get bytes(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** Size of dimension d (negative counts from the end). */
  dim(d: number): number {
    const i = d < 0 ? this.shape.length + d : d;
    const v = this.shape[i];
    if (v === undefined) throw new RangeError(`dim ${d} of [${this.shape}]`);
    return v;
  }

  describe(): string {
    return `${this.name ?? 'tensor'}[${this.shape.join(',')}]:${this.dtype}`;
  }
}
