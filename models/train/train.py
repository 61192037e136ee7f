#!/usr/bin/python3
"""Train the bundled demo model: a small Qwen3-MoE on Jane Austen's novels.

    train.py --data DATA_DIR --tok TOK_DIR -o HF_DIR [--steps N] [--threads T]

DATA_DIR: output of data.py (train.txt, heldout.txt); TOK_DIR: output of
`tokenizer.py train`.  Writes HF_DIR/{config.json, model.safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json} and
HF_DIR/train_log.json (loss per step, held-out evals, timings).

Training data: the novels' paragraphs grouped into plain-text documents
(paragraphs separated by a blank line), plus, built from a seeded random 25%
of paragraph runs, ChatML conversations of 1-3 turns in which the user turn
is the first sentence of a paragraph and the assistant turn its
continuation, so that `moe-cli chat` continues in the style of the data.
Documents are shuffled (seeded) and joined with <|endoftext|>; training
windows of n_ctx+1 tokens are drawn at seeded random offsets.
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Qwen3Moe, load_balancing_loss, write_safetensors  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402

SEED = 1234
CONFIG = {  # key set of Qwen/Qwen3-30B-A3B config.json
    "architectures": ["Qwen3MoeForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 4093,
    "decoder_sparse_step": 1,
    "eos_token_id": 4095,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1024,
    "max_position_embeddings": 256,
    "max_window_layers": 4,
    "mlp_only_layers": [],
    "model_type": "qwen3_moe",
    "moe_intermediate_size": 384,
    "norm_topk_prob": True,
    "num_attention_heads": 6,
    "num_experts": 16,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 4,
    "num_key_value_heads": 2,
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "router_aux_loss_coef": 0.01,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 4096,
}

SENT = re.compile(r'(?<=[.!?])["\']?\s+(?=["\']?[A-Z])')


def split_first_sentence(p):
    m = SENT.search(p)
    if not m or m.end() >= len(p) - 20:
        return None
    return p[:m.end()].strip(), p[m.end():].strip()


def build_documents(text, rng):
    paras = [p for p in text.split("\n\n") if p.strip()]
    docs, i = [], 0
    while i < len(paras):
        n = rng.randint(8, 24)
        docs.append("\n\n".join(paras[i:i + n]))
        i += n
    chats = []
    for i in range(len(paras)):
        if rng.random() >= 0.25:
            continue
        turns = []
        for p in paras[i:i + rng.randint(1, 3)]:
            s = split_first_sentence(p)
            if s is None:
                break
            turns.append(s)
        if not turns:
            continue
        chats.append("".join(f"<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
                             for u, a in turns))
    return docs, chats


def eval_windows(model, toks, n_ctx, max_windows=None):
    """Mean NLL over non-overlapping windows (see eval_ppl.py)."""
    nw = len(toks) // n_ctx
    if max_windows:
        nw = min(nw, max_windows)
    tot, cnt = 0.0, 0
    model.eval()
    with torch.no_grad():
        for w in range(nw):
            x = torch.tensor(toks[w * n_ctx:(w + 1) * n_ctx]).unsqueeze(0)
            lo = model(x)[0][0]
            nll = F.cross_entropy(lo[:-1].double(), x[0, 1:], reduction="sum")
            tot += nll.item()
            cnt += n_ctx - 1
    model.train()
    return tot / cnt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--tok", required=True)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=50.0)
    ap.add_argument("--eval-every", type=int, default=200)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    c = dict(CONFIG)
    n_ctx = c["max_position_embeddings"]

    t0 = time.time()
    tok = Tokenizer(a.tok)
    docs, chats = build_documents(open(os.path.join(a.data, "train.txt")).read(), rng)
    alldocs = docs + chats
    rng.shuffle(alldocs)
    stream = []
    for d in alldocs:
        stream += tok.encode(d) + [tok.special["<|endoftext|>"]]
    stream = np.array(stream, dtype=np.int64)
    held = tok.encode(open(os.path.join(a.data, "heldout.txt")).read())
    print(f"{len(docs)} text docs, {len(chats)} chat docs, {len(stream)} train tokens, "
          f"{len(held)} held-out tokens, prep {time.time() - t0:.1f}s", flush=True)

    model = Qwen3Moe(c)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    E, k, coef = c["num_experts"], c["num_experts_per_tok"], c["router_aux_loss_coef"]
    log = {"seed": SEED, "config": c, "params": n_params, "train_tokens": int(len(stream)),
           "steps": [], "evals": [], "args": vars(a)}
    gen = torch.Generator().manual_seed(SEED)
    t_start = time.time()
    step = 0
    for step in range(1, a.steps + 1):
        lr = a.lr * (step / a.warmup if step <= a.warmup else
                     0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - a.warmup) / (a.steps - a.warmup))))
        for g in opt.param_groups:
            g["lr"] = lr
        offs = torch.randint(0, len(stream) - n_ctx - 1, (a.batch,), generator=gen).numpy()
        xb = torch.from_numpy(np.stack([stream[o:o + n_ctx + 1] for o in offs]))
        logits, router_logits = model(xb[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, c["vocab_size"]), xb[:, 1:].reshape(-1))
        aux = load_balancing_loss(router_logits, E, k)
        loss = ce + coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        el = time.time() - t_start
        log["steps"].append({"step": step, "loss": ce.item(), "aux": aux.item(), "lr": lr,
                             "grad_norm": gn.item(), "time": el})
        if step % 10 == 0 or step == 1:
            print(f"step {step} loss {ce.item():.4f} aux {aux.item():.4f} lr {lr:.2e} "
                  f"gn {gn.item():.2f} {el:.0f}s {step * a.batch * n_ctx / el:.0f} tok/s", flush=True)
        if step % a.eval_every == 0:
            h = eval_windows(model, held, n_ctx, max_windows=12)
            log["evals"].append({"step": step, "heldout_nll_12w": h})
            print(f"  eval step {step}: held-out nll (12 windows) {h:.4f} ppl {math.exp(h):.2f}", flush=True)
        if el > a.max_minutes * 60:
            print(f"time cap reached at step {step}", flush=True)
            break
    log["steps_done"] = step
    log["train_seconds"] = time.time() - t_start
    h = eval_windows(model, held, n_ctx)
    log["final_heldout_nll"] = h
    log["final_heldout_ppl"] = math.exp(h)
    print(f"final held-out nll {h:.4f} ppl {math.exp(h):.3f} ({len(held) // n_ctx} windows of {n_ctx})", flush=True)

    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "model.safetensors"),
                      {n: p.detach().numpy() for n, p in model.state_dict().items()})
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 4093, "eos_token_id": [4095, 4093], "pad_token_id": 4093,
                   "do_sample": True, "temperature": 0.7, "top_p": 0.9,
                   "transformers_version": "4.51.0"}, f, indent=2)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(a.tok, fn), os.path.join(a.out, fn))
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump(log, f)
    print(f"saved {a.out}; total {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
