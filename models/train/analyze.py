#!/usr/bin/python3
"""Plots for the model card.

    analyze.py HF_DIR HELDOUT_TEXT --loss-png OUT1 --experts-png OUT2 [--json OUT3]

OUT1: training loss per step (raw and 20-step moving average) with the
held-out evaluations.  OUT2: per-layer expert usage on the held-out text: the
share of (token, top-k slot) selections each expert receives, from the
PyTorch model's router, over the same n_ctx windows as eval_ppl.py.
"""
import argparse
import json
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import load_hf  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("heldout")
    ap.add_argument("--loss-png", required=True)
    ap.add_argument("--experts-png", required=True)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    name = os.path.basename(os.path.normpath(a.model_dir)).removesuffix("-hf")

    log = json.load(open(os.path.join(a.model_dir, "train_log.json")))
    st = log["steps"]
    x = np.array([s["step"] for s in st])
    y = np.array([s["loss"] for s in st])
    k = max(1, min(20, len(y) // 2))
    ma = np.convolve(y, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(x, y, lw=0.6, alpha=0.5, label="train loss (cross-entropy, per step)")
    ax.plot(x[k - 1:], ma, lw=1.5, label=f"train loss, {k}-step mean")
    if log.get("evals"):
        ax.plot([e["step"] for e in log["evals"]], [e["heldout_nll_12w"] for e in log["evals"]],
                "o-", label="held-out NLL (12 windows)")
    if "final_heldout_nll" in log:
        ax.axhline(log["final_heldout_nll"], ls="--", c="k", lw=0.8,
                   label=f"final held-out NLL {log['final_heldout_nll']:.3f} "
                         f"(ppl {log['final_heldout_ppl']:.1f})")
    ax.set_xlabel("step (8 x 256 tokens)")
    ax.set_ylabel("nats / token")
    ax.set_ylim(max(0, y.min() - 0.5), min(9, y.max() + 0.2))
    ax.set_title(f"{name}: training loss, seed {log['seed']}, {log.get('train_seconds', 0) / 60:.0f} min on 1 CPU thread")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.loss_png, dpi=100)

    model = load_hf(a.model_dir)
    c = model.c
    n_ctx, E, L = c["max_position_embeddings"], c["num_experts"], c["num_hidden_layers"]
    ids = Tokenizer(a.model_dir).encode(open(a.heldout, encoding="utf-8").read())
    counts = np.zeros((L, E), dtype=np.int64)
    with torch.no_grad():
        for w in range(len(ids) // n_ctx):
            xw = torch.tensor(ids[w * n_ctx:(w + 1) * n_ctx]).unsqueeze(0)
            _, _, sels = model(xw, want_sel=True)
            for l, s in enumerate(sels):
                counts[l] += np.bincount(s.reshape(-1).numpy(), minlength=E)
    share = counts / counts.sum(axis=1, keepdims=True)
    fig, axes = plt.subplots(L, 1, figsize=(8, 1.6 * L + 0.8), sharex=True)
    for l in range(L):
        axes[l].bar(np.arange(E), 100 * share[l], color="C%d" % l)
        axes[l].axhline(100 / E, ls="--", c="k", lw=0.7)
        axes[l].set_ylabel(f"layer {l}\n% of picks")
        axes[l].text(0.99, 0.85, f"top expert {100 * share[l].max():.1f}%, {int((share[l] < 0.005).sum())} below 0.5%",
                     transform=axes[l].transAxes, ha="right", fontsize=8)
    axes[-1].set_xticks(np.arange(E))
    axes[-1].set_xlabel("expert")
    axes[0].set_title(f"{name}: expert usage on held-out text ({len(ids)} tokens, top-{c['num_experts_per_tok']}; dashed = uniform)")
    fig.tight_layout()
    fig.savefig(a.experts_png, dpi=100)
    if a.json:
        json.dump({"expert_counts": counts.tolist()}, open(a.json, "w"))
    print("expert share per layer (%):")
    for l in range(L):
        print(f"  layer {l}: " + " ".join(f"{100 * v:.1f}" for v in share[l]))


if __name__ == "__main__":
    main()
