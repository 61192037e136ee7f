#!/usr/bin/python3
"""Held-out perplexity of the PyTorch model (the definition `moe-cli perplexity`
implements):

    eval_ppl.py HF_DIR TEXT_FILE [-c N_CTX]

The whole file is tokenized with the model's tokenizer (no BOS, special-token
strings are not expected in the text).  The ids are cut into
floor(N / n_ctx) non-overlapping windows of exactly n_ctx tokens (a final
partial window is dropped); each window is evaluated from position 0 with a
fresh context; its first token is not scored, each other token is scored by
-log softmax(logits at the previous position).  Mean NLL = sum of scored NLLs
/ (windows * (n_ctx - 1)); perplexity = exp(mean NLL).  n_ctx defaults to
config.json's max_position_embeddings.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import load_hf  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("text")
    ap.add_argument("-c", "--ctx", type=int)
    ap.add_argument("-t", "--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_hf(a.model_dir)
    n_ctx = a.ctx or model.c["max_position_embeddings"]
    with open(a.text, encoding="utf-8") as f:
        ids = Tokenizer(a.model_dir).encode(f.read())
    nw = len(ids) // n_ctx
    tot = 0.0
    with torch.no_grad():
        for w in range(nw):
            x = torch.tensor(ids[w * n_ctx:(w + 1) * n_ctx]).unsqueeze(0)
            lo = model(x)[0][0].double()
            tot += F.cross_entropy(lo[:-1], x[0, 1:], reduction="sum").item()
    n = nw * (n_ctx - 1)
    nll = tot / n
    print(json.dumps({"tokens": len(ids), "n_ctx": n_ctx, "windows": nw, "scored": n,
                      "mean_nll": round(nll, 6), "perplexity": round(math.exp(nll), 4)}))


if __name__ == "__main__":
    main()
