#!/usr/bin/env python3
"""Recomputes a nanodist run's validation loss in PyTorch, from its checkpoint alone.

    python3 tests/pytorch/val_loss.py RUN_DIR [--data FILE]

Loads RUN_DIR/checkpoint.safetensors into nanoGPT's model (model.py with bias=False,
dropout 0, tanh GELU as nanoGPT's new_gelu) by nanoGPT's own tensor names, rebuilds the
validation split exactly as nanodist does, and prints both losses:

    checkpoint  step 30, 0.80M parameters, 65-char vocabulary
    pytorch     val_loss 3.276420 over 1716 windows
    nanodist    val_loss 3.276421 (summary.json)
    difference  6.2e-08

The data file is found by the path the run recorded (provenance.json) unless --data names
it; the built-in `tales` corpus has no file, so train on a file for this check. Needs
torch, safetensors and numpy (pip install torch safetensors numpy); nanodist's tests do
not run it, so `cargo test` needs nothing but Rust.

Why the two agree: the checkpoint holds every weight under nanoGPT's names (the head is
tied to transformer.wte.weight and not stored twice), the vocabulary is stored beside the
weights, the validation split is the last 10% of the token stream (tokens n*9//10 on), and
val_loss is the mean cross-entropy over ALL non-overlapping windows of T+1 tokens. Whatever
the strategy that trained the model (data, ZeRO, tensor or pipeline parallel), the
checkpoint is consolidated into this one layout.
"""

import argparse
import json
import math
import pathlib
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open


class LayerNorm(nn.Module):
    """LayerNorm with no bias (nanoGPT bias=False), eps 1e-5."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.c_attn = nn.Linear(c, 3 * c, bias=False)
        self.c_proj = nn.Linear(c, c, bias=False)
        self.n_head = n_head

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(c, dim=2)
        shape = (b, t, self.n_head, c // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c, bias=False)
        self.c_proj = nn.Linear(4 * c, c, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.ln_1 = LayerNorm(c)
        self.attn = CausalSelfAttention(c, n_head)
        self.ln_2 = LayerNorm(c)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab, block, n_layer, n_head, c):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab, c),
                wpe=nn.Embedding(block, c),
                h=nn.ModuleList([Block(c, n_head) for _ in range(n_layer)]),
                ln_f=LayerNorm(c),
            )
        )

    def forward(self, idx, targets):
        t = idx.size(1)
        tr = self.transformer
        x = tr.wte(idx) + tr.wpe(torch.arange(t))
        for block in tr.h:
            x = block(x)
        logits = tr.ln_f(x) @ tr.wte.weight.t()  # the head, tied to wte
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=pathlib.Path, help="a nanodist run directory")
    ap.add_argument("--data", type=pathlib.Path, help="the corpus file (default: recorded path)")
    args = ap.parse_args()

    ck_path = args.run / "checkpoint.safetensors"
    with safe_open(str(ck_path), framework="pt") as f:
        meta = f.metadata()
        weights = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("optimizer.")}
    cfg = json.loads(meta["config"])
    vocab = meta["vocab"]
    model_cfg = cfg.get("model", cfg)
    v, t = model_cfg["vocab_size"], model_cfg["block_size"]
    n_layer, n_head, c = model_cfg["n_layer"], model_cfg["n_head"], model_cfg["n_embd"]
    assert len(vocab) == v, f"vocabulary of {len(vocab)} chars, config says {v}"

    model = GPT(v, t, n_layer, n_head, c)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # strict except for nothing: every nanoGPT tensor must be in the checkpoint
    if missing or unexpected:
        sys.exit(f"tensor names differ from nanoGPT's: missing {missing}, unexpected {unexpected}")
    params = sum(p.numel() for p in model.parameters())

    data = args.data
    if data is None:
        prov = json.loads((args.run / "provenance.json").read_text())
        path = prov.get("data", {}).get("path")
        if path is None:
            sys.exit("this run trained on the built-in corpus, which has no file: train with --data FILE")
        data = pathlib.Path(path)
    text = data.read_text(encoding="utf-8")
    stoi = {ch: i for i, ch in enumerate(vocab)}
    tokens = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    val = tokens[len(tokens) * 9 // 10 :]
    n_win = len(val) // (t + 1)
    windows = val[: n_win * (t + 1)].view(n_win, t + 1)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    total = 0.0
    with torch.no_grad():
        for chunk in windows.split(64):
            # per-window mean losses, summed: the windows all have T targets
            loss = model(chunk[:, :-1], chunk[:, 1:])
            total += loss.item() * chunk.size(0)
    ours = total / n_win

    summary = json.loads((args.run / "summary.json").read_text())
    theirs = summary.get("val_loss")
    print(f"checkpoint  step {meta['step']}, {params / 1e6:.2f}M parameters, {v}-char vocabulary")
    print(f"pytorch     val_loss {ours:.6f} over {n_win} windows")
    if theirs is None or not math.isfinite(theirs):
        print("nanodist    no final val_loss in summary.json (an interrupted run?)")
        return
    print(f"nanodist    val_loss {theirs:.6f} (summary.json)")
    print(f"difference  {abs(ours - theirs):.1e}")
    if abs(ours - theirs) > 1e-4:
        sys.exit("the two validation losses differ by more than 1e-4")


if __name__ == "__main__":
    main()
