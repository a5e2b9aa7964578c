/**
 * @file The loss head at the default model's shapes: the fused softcap + cross-entropy kernel
 * (kernels/softcap_xent.wgsl) on one chunk of logits as lmHeadLoss holds it (2048 rows × V = 8192),
 * loss only and with the in-place gradient, the in-place softcap of evaluation; and the whole
 * chunked lmHeadLoss over a micro-batch (B·T = 32768 rows, C = 512): logits, loss and both
 * gradients (three matmuls per chunk), and the forward alone.
 */
import { lmHeadLoss } from '../src/autograd/model_ops.ts';
import { ctx, requiresGrad, useRuntime } from '../src/autograd/tape.ts';
import { softcapFwd, softcapXentCount, softcapXentFwd } from '../src/ops/softcap_xent.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { Tensor } from '../src/gpu/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import type { BenchCase, BenchSuite } from './harness.ts';

interface LossShape {
  /** Rows of one micro-batch (B·T). */
  N: number;
  C: number;
  V: number;
  /** Rows of logits held at once (lmHeadLoss's chunk). */
  chunk: number;
}

// default model: 16 × 2048 tokens, C = 512, vocab 8192; lmHeadLoss holds 2^24 logits = 2048 rows
const MODEL: LossShape = { N: 16 * 2048, C: 512, V: 8192, chunk: 2048 };
// small: train.ts's software model width (C = 64) and tokens (2 × 256); a smaller vocabulary and
// chunk, so that the chunk loop runs four times and a run takes well under a second on llvmpipe
const SMALL: LossShape = { N: 512, C: 64, V: 2048, chunk: 128 };

const SOFTCAP = 15; // train.ts
const F32 = 4;

export const suite: BenchSuite = {
  family: 'loss',
  cases(rt: Runtime, size) {
    const { N, C, V, chunk } = size === 'model' ? MODEL : SMALL;
    let t: { logits: Tensor; chunkTargets: Tensor; stats: Tensor; loss: Tensor; x: Tensor; w: Tensor; targets: Tensor } | null = null;
    const setup = () => {
      useRuntime(rt); // lmHeadLoss records on the ambient tape
      if (t) return;
      const rng = new Rng(5);
      const logits = rt.keep(rt.fromArray(rng.normalArray(chunk * V, 3), [chunk, V]));
      const chunkTargets = rt.keep(rt.fromArray(rng.intArray(chunk, V), [chunk], 'i32'));
      const stats = rt.keep(softcapXentCount(rt, chunkTargets));
      const loss = rt.keep(rt.empty([chunk]));
      // final hidden states are RMS-normed (unit scale); lm_head as trained, small
      const x = requiresGrad(rt.keep(rt.fromArray(rng.normalArray(N * C, 1), [N, C])));
      const w = requiresGrad(rt.keep(rt.fromArray(rng.normalArray(V * C, 0.05), [V, C])));
      const targets = rt.keep(rt.fromArray(rng.intArray(N, V), [N], 'i32'));
      t = { logits, chunkTargets, stats, loss, x, w, targets };
    };
    const dispose = () => {
      if (t) for (const u of Object.values(t)) rt.release(u);
      t = null;
    };
    /** lmHeadLoss over the micro-batch; with grad the tape saves dx, dW, which the scope then frees. */
    const lmHead = (grad: boolean) => () => {
      const tape = ctx();
      rt.scope(() => {
        const run = () => lmHeadLoss(t!.x, t!.w, t!.targets, { softcap: SOFTCAP, chunkRows: chunk });
        if (grad) run();
        else tape.noGrad(run);
      });
      tape.clear();
    };
    const cases: BenchCase[] = [
      {
        name: `softcap_xent loss ${chunk}x${V}`,
        bytes: F32 * (chunk * V + 2 * chunk), // logits, targets in; per-token loss out
        setup,
        run: () => void softcapXentFwd(rt, t!.logits, t!.chunkTargets, { softcap: SOFTCAP, out: t!.loss }),
      },
      {
        // overwrites its logits with the gradient: later runs read gradients, which costs the same
        name: `softcap_xent loss+grad in place ${chunk}x${V}`,
        bytes: F32 * (2 * chunk * V + 2 * chunk),
        setup,
        run: () => void softcapXentFwd(rt, t!.logits, t!.chunkTargets, { softcap: SOFTCAP, out: t!.loss, grad: { stats: t!.stats } }),
      },
      {
        name: `softcap in place ${chunk}x${V}`,
        bytes: F32 * 2 * chunk * V,
        setup,
        run: () => void softcapFwd(rt, t!.logits, SOFTCAP),
      },
      {
        name: `lmHeadLoss fwd ${N}x${C} @ (${V}x${C})ᵀ, chunks of ${chunk}`,
        flops: 2 * N * C * V,
        precision: 'f32',
        setup,
        run: lmHead(false),
      },
      {
        name: `lmHeadLoss fwd+grads ${N}x${C} @ (${V}x${C})ᵀ, chunks of ${chunk}`,
        flops: 6 * N * C * V, // logits, dx = dz·W, dW = dzᵀ·x
        precision: 'f32',
        setup,
        run: lmHead(true),
      },
    ];
    for (const c of cases) c.dispose = dispose;
    return cases;
  },
};
