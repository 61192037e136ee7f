#!/usr/bin/python3
"""Greedy generation with the PyTorch model, for comparison with `moe-cli run`.

    generate.py HF_DIR (--tokens ID,ID,... | -p TEXT | --chat TEXT) [-n N]

Prints the generated ids (comma-separated) and their text.  Greedy = argmax
of the f32 logits; no early stop unless --stop-eos.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import load_hf  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


def greedy(model, ids, n, stop=()):
    out = []
    with torch.no_grad():
        for _ in range(n):
            ctx = (ids + out)[-model.c["max_position_embeddings"]:]
            lo = model(torch.tensor(ctx).unsqueeze(0))[0][0, -1]
            t = int(lo.argmax())
            out.append(t)
            if t in stop:
                break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--tokens")
    ap.add_argument("-p", "--prompt")
    ap.add_argument("--chat")
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--stop-eos", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_hf(a.model_dir)
    tok = Tokenizer(a.model_dir)
    if a.tokens:
        ids = [int(t) for t in a.tokens.split(",")]
    elif a.chat is not None:
        ids = tok.encode(f"<|im_start|>user\n{a.chat}<|im_end|>\n<|im_start|>assistant\n")
    else:
        ids = tok.encode(a.prompt)
    stop = (tok.special["<|im_end|>"], tok.special["<|endoftext|>"]) if a.stop_eos else ()
    out = greedy(model, ids, a.n, stop)
    print(",".join(map(str, out)))
    print(repr(tok.decode(out)))


if __name__ == "__main__":
    main()
