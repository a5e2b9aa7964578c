"""
The default autoresearch-ts model and training step in PyTorch, for a side-by-side throughput
comparison on the same GPU (npm run bench measures the WebGPU step). Synthetic token batches; no data,
no network, nothing but torch needed.

Same model as the reference train.py (and train.ts): RMS norm, rotary, QK-norm, value embeddings with
gates on alternating layers, sliding-window causal attention (SSSL), relu² MLP, residual/x0 lambdas,
softcap 15, untied head; MuonAdamW-style optimizer cost is included through a plain Muon (Polar Express)
+ AdamW step so that the step is comparable.

Usage (on the GPU machine):  python3 bench/pytorch/step.py --json out.json [--batch 128] [--depth 8]
Prints tokens/s and MFU (against the bf16 dense tensor peak of the GPU when known) as JSON.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PEAK_BF16 = {"H100": 989.5e12, "H200": 989.5e12, "A100": 312e12}
POLAR = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary(x, cos, sin):
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3)


def make_attention(T, window, device):
    """flex_attention with a sliding-window causal block mask when available, else SDPA (+ mask)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (q_idx - kv_idx <= window)

        block_mask = create_block_mask(mask_mod, None, None, T, T, device=device)
        compiled = torch.compile(flex_attention, dynamic=False)

        def attn(q, k, v):  # (B, H, T, D)
            return compiled(q, k, v, block_mask=block_mask)

        return attn, "flex_attention"
    except Exception:  # older torch
        if window >= T:
            return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), "sdpa-causal"
        i = torch.arange(T, device=device)
        mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] <= window)
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), "sdpa-mask"


class Block(nn.Module):
    def __init__(self, C, H, has_ve, attn):
        super().__init__()
        self.H, self.D = H, C // H
        self.c_q, self.c_k, self.c_v = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.c_proj = nn.Linear(C, C, bias=False)
        self.ve_gate = nn.Linear(32, H, bias=False) if has_ve else None
        self.c_fc = nn.Linear(C, 4 * C, bias=False)
        self.mlp_proj = nn.Linear(4 * C, C, bias=False)
        self.attn = attn

    def forward(self, x, ve, cos, sin):
        B, T, C = x.shape
        xn = norm(x)
        q = self.c_q(xn).view(B, T, self.H, self.D)
        k = self.c_k(xn).view(B, T, self.H, self.D)
        v = self.c_v(xn).view(B, T, self.H, self.D)
        if ve is not None:
            v = v + 2 * torch.sigmoid(self.ve_gate(xn[..., :32])).unsqueeze(-1) * ve.view(B, T, self.H, self.D)
        q, k = norm(rotary(q, cos, sin)), norm(rotary(k, cos, sin))
        y = self.attn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        x = x + self.c_proj(y.contiguous().view(B, T, C))
        return x + self.mlp_proj(F.relu(self.c_fc(norm(x))).square())


class GPT(nn.Module):
    def __init__(self, V, depth, C, H, T, device):
        super().__init__()
        windows = [T if "SSSL"[i % 4] == "L" else T // 2 for i in range(depth)]
        windows[-1] = T
        attns = {}
        self.attn_kind = None
        for w in set(windows):
            attns[w], self.attn_kind = make_attention(T, w, device)
        has_ve = [i % 2 == (depth - 1) % 2 for i in range(depth)]
        self.wte = nn.Embedding(V, C)
        self.blocks = nn.ModuleList([Block(C, H, has_ve[i], attns[windows[i]]) for i in range(depth)])
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(V, C) for i in range(depth) if has_ve[i]})
        self.lm_head = nn.Linear(C, V, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(depth))
        self.x0_lambdas = nn.Parameter(torch.full((depth,), 0.1))
        D = C // H
        inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", freqs.cos()[None, :, None, :].bfloat16(), persistent=False)
        self.register_buffer("sin", freqs.sin()[None, :, None, :].bfloat16(), persistent=False)

    def forward(self, idx, targets):
        x = norm(self.wte(idx))
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, self.cos, self.sin)
        logits = self.lm_head(norm(x)).float()
        logits = 15 * torch.tanh(logits / 15)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


@torch.no_grad()
def optimizer_step(matrices, others, state, lr=0.04, adam_lr=0.004):
    """Muon (Nesterov + Polar Express, bf16) on matrices, AdamW on the rest: the reference's cost profile."""
    for p in matrices:
        buf = state.setdefault(p, torch.zeros_like(p))
        buf.lerp_(p.grad, 0.05)
        g = p.grad.lerp(buf, 0.95)
        X = g.bfloat16()
        X = X / (X.norm() * 1.02 + 1e-6)
        tall = X.size(0) > X.size(1)
        for a, b, c in POLAR:
            A = X.mT @ X if tall else X @ X.mT
            B = b * A + c * (A @ A)
            X = a * X + (X @ B if tall else B @ X)
        p.sub_(lr * X.float())
    for p in others:
        m, v = state.setdefault(("m", p), torch.zeros_like(p)), state.setdefault(("v", p), torch.zeros_like(p))
        m.lerp_(p.grad, 0.2)
        v.lerp_(p.grad.square(), 0.05)
        p.sub_(adam_lr * m / (v.sqrt() + 1e-10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128, help="rows per micro-batch (reference: 128)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--total-batch", type=int, default=2**19)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()

    device = torch.device("cuda")
    torch.manual_seed(0)
    torch.set_float32_matmul_precision("high")
    C = math.ceil(args.depth * 64 / 128) * 128
    H = C // 128
    model = GPT(args.vocab, args.depth, C, H, args.seq, device).to(device)
    matrices = [p for n, p in model.named_parameters() if n.startswith("blocks.")]
    others = [p for n, p in model.named_parameters() if not n.startswith("blocks.")]
    compiled = torch.compile(model, dynamic=False)
    accum = args.total_batch // (args.batch * args.seq)
    state = {}

    # FLOPs per token as the reference estimates them
    n_all = sum(p.numel() for p in model.parameters())
    n_excl = model.wte.weight.numel() + sum(e.weight.numel() for e in model.value_embeds.values()) + 2 * args.depth
    windows = [args.seq if "SSSL"[i % 4] == "L" else args.seq // 2 for i in range(args.depth)]
    windows[-1] = args.seq
    flops_per_token = 6 * (n_all - n_excl) + sum(12 * H * 128 * min(w, args.seq) for w in windows)

    def step():
        for _ in range(accum):
            idx = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
            tgt = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = compiled(idx, tgt) / accum
            loss.backward()
        optimizer_step(matrices, others, state)
        model.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    dt = (time.time() - t0) / args.steps
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    tok_s = args.total_batch / dt
    result = {
        "framework": f"torch {torch.__version__}",
        "device": name,
        "attention": model.attn_kind,
        "depth": args.depth, "n_embd": C, "batch": args.batch, "seq": args.seq, "grad_accum": accum,
        "step_ms": dt * 1000,
        "tokens_per_s": tok_s,
        "flops_per_token": flops_per_token,
        "mfu_percent_bf16": 100 * flops_per_token * tok_s / peak if peak else None,
        "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
