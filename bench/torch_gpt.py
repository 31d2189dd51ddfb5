#!/usr/bin/env python3
"""nanoGPT's character-level GPT on Tiny Shakespeare in PyTorch (eager), beside wgnn's char_gpt.

    python3 bench/torch_gpt.py [--iters N] [--n-layer N] [--n-head N] [--n-embd N] [--block-size N]
                               [--batch-size N] [--dropout P] [--bias] [--device cuda|cpu]

The recipe of the issue (its defaults are this script's): nanoGPT's small CPU configuration of
`train_shakespeare_char` — 4 layers, 4 heads, width 128, block 64, batch 12, 2,000 iterations,
dropout 0 — with nanoGPT's model.py: token and learned position embeddings, pre-norm blocks
(x + attn(ln_1(x)), x + mlp(ln_2(x))), causal self-attention (one q/k/v projection of 3C, then
an output projection), an MLP of 4C with exact GELU (nn.GELU()), a final LayerNorm, the output
head tied to the token embedding; nanoGPT's init (normal 0.02, the residual projections
0.02/sqrt(2 layers), zero biases); no biases in the linear layers and LayerNorms (nanoGPT's
default bias=False, which its train_shakespeare_char keeps; `--bias` turns them on). AdamW with
betas (0.9, 0.99), weight decay 0.1 on matrices only (dim >= 2: linear weights and embeddings,
not LayerNorm gains or biases, as configure_optimizers), gradient clipping at global norm 1.0,
lr 1e-3 with nanoGPT's get_lr: linear warmup over 100 iterations, then a cosine to 1e-4 at the
last. Data: assets/tinyshakespeare/input.txt, its sorted characters as the vocabulary (65, as
nanoGPT's prepare.py), the first 90% for training and the last 10% for validation; each batch
`batch` random windows of block + 1 characters. The validation loss is the mean over a fixed
set of `--val-batches` (200) batches drawn once from the seed. Prints the running training loss
every `--log-every` iterations, ms per iteration (the training steps only, not the evaluation)
and the final validation loss. On a CPU, `--threads 2` (the default) matches the 2-core
machine. Needs torch.
"""
import argparse
import math
import time

import torch
from torch import nn
from torch.nn import functional as F


class SelfAttention(nn.Module):
    """nanoGPT's CausalSelfAttention: q, k, v from one projection, causal scaled dot product."""

    def __init__(self, c, heads, bias, dropout):
        super().__init__()
        self.c_attn = nn.Linear(c, 3 * c, bias=bias)
        self.c_proj = nn.Linear(c, c, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.heads, self.dropout = heads, dropout

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    """A pre-norm transformer block."""

    def __init__(self, c, heads, bias, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c, bias=bias)
        self.attn = SelfAttention(c, heads, bias, dropout)
        self.ln_2 = nn.LayerNorm(c, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(c, 4 * c, bias=bias), nn.GELU(), nn.Linear(4 * c, c, bias=bias), nn.Dropout(dropout)
        )

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab, block, layers, heads, c, bias, dropout):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(block, c)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(c, heads, bias, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c, bias=bias)
        self.lm_head = nn.Linear(c, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # tied, as nanoGPT: the gradient sums both uses
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        t = idx.size(1)
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(t, device=idx.device)))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def lr_at(it, args):
    """nanoGPT's get_lr: linear warmup, then a cosine from lr down to min_lr at the last iteration."""
    if it < args.warmup:
        return args.lr * (it + 1) / (args.warmup + 1)
    if it > args.iters:
        return args.min_lr
    ratio = (it - args.warmup) / max(1, args.iters - args.warmup)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (args.lr - args.min_lr)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="assets/tinyshakespeare/input.txt")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="global gradient norm (0: no clipping)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--bias", action="store_true", help="biases in the linear layers and LayerNorms")
    p.add_argument("--val-batches", type=int, default=200)
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    split = int(len(data) * 0.9)
    train, val = data[:split].to(dev), data[split:].to(dev)

    def batch(source, generator=None):
        starts = torch.randint(len(source) - args.block_size, (args.batch_size,), generator=generator)
        rows = starts.to(dev)[:, None] + torch.arange(args.block_size + 1, device=dev)
        windows = source[rows]
        return windows[:, :-1], windows[:, 1:]

    # The validation batches, drawn once from the seed: every evaluation reads the same ones.
    val_gen = torch.Generator().manual_seed(args.seed + 1)
    val_batches = [batch(val, val_gen) for _ in range(args.val_batches)]

    model = GPT(len(chars), args.block_size, args.n_layer, args.n_head, args.n_embd, args.bias, args.dropout).to(dev)
    params = [q for q in model.parameters() if q.requires_grad]
    groups = [
        {"params": [q for q in params if q.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    count = sum(q.numel() for q in params)
    print(f"device: {dev} ({name}), torch {torch.__version__}")
    print(
        f"vocabulary {len(chars)}, {len(train)} training and {len(val)} validation characters; "
        f"{args.n_layer} layers, {args.n_head} heads, width {args.n_embd}, block {args.block_size}, "
        f"batch {args.batch_size}, bias {args.bias}: {count} parameters"
    )

    def val_loss():
        model.eval()
        with torch.no_grad():
            total = sum(model(x, y).item() for x, y in val_batches)
        model.train()
        return total / len(val_batches)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    seconds, running = 0.0, []
    for it in range(args.iters):
        sync()
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(it, args)
        x, y = batch(train)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        running.append(loss.detach())
        sync()
        seconds += time.perf_counter() - start
        if (it + 1) % args.log_every == 0 or it + 1 == args.iters:
            mean = torch.stack(running).mean().item()
            print(f"iter {it + 1:>5}  train loss {mean:.4f}  {1000 * seconds / (it + 1):.1f} ms/iter")
            running = []
    final = val_loss()
    print(
        f"trained {args.iters} iterations in {seconds:.1f} s, {1000 * seconds / args.iters:.1f} ms/iter; "
        f"validation loss {final:.4f} over {len(val_batches)} batches"
    )


if __name__ == "__main__":
    main()
