"""A Qwen3-MoE decoder in PyTorch, with exactly transformers' Qwen3MoeForCausalLM
semantics (modeling_qwen3_moe.py): RMSNorm (float32 inside), per-head q_norm /
k_norm before rotate-half RoPE, GQA, no biases, router softmax -> top-k ->
renormalise (norm_topk_prob), SwiGLU experts, and the Switch-style load
balancing loss of load_balancing_loss_func (router_aux_loss_coef)."""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, self.nh, self.nkv, self.hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.q_proj = nn.Linear(H, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, H, bias=False)
        self.q_norm = RMSNorm(self.hd, c["rms_norm_eps"])
        self.k_norm = RMSNorm(self.hd, c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.nh, self.hd)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, T, self.nkv, self.hd)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = torch.baddbmm(mask.expand(B * self.nh, T, T), q.reshape(B * self.nh, T, self.hd),
                          k.reshape(B * self.nh, T, self.hd).transpose(1, 2), alpha=self.hd ** -0.5)
        o = (torch.softmax(s, dim=-1) @ v.reshape(B * self.nh, T, self.hd)).view(B, self.nh, T, self.hd)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class Expert(nn.Module):
    def __init__(self, H, I):
        super().__init__()
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SparseMoe(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.E, self.k, self.norm_topk = c["num_experts"], c["num_experts_per_tok"], c["norm_topk_prob"]
        self.gate = nn.Linear(c["hidden_size"], self.E, bias=False)
        self.experts = nn.ModuleList(Expert(c["hidden_size"], c["moe_intermediate_size"]) for _ in range(self.E))

    def forward(self, x):
        B, T, H = x.shape
        x = x.reshape(-1, H)
        logits = self.gate(x)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        w, sel = torch.topk(probs, self.k, dim=-1)
        if self.norm_topk:
            w = w / w.sum(dim=-1, keepdim=True)
        w = w.to(x.dtype)
        out = torch.zeros_like(x)
        for e in range(self.E):
            rows, slot = torch.where(sel == e)
            if rows.numel() == 0:
                continue
            y = self.experts[e](x[rows]) * w[rows, slot, None]
            out.index_add_(0, rows, y)
        return out.view(B, T, H), logits, sel


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = SparseMoe(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        m, logits, sel = self.mlp(self.post_attention_layernorm(h))
        return h + m, logits, sel


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Qwen3Moe(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        std = c["initializer_range"]
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
        hd = c["head_dim"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        self.register_buffer("inv_freq", inv, persistent=False)

    def rope(self, T):
        f = torch.outer(torch.arange(T, dtype=torch.float64), self.inv_freq)
        emb = torch.cat((f, f), dim=-1)
        return emb.cos().float(), emb.sin().float()

    def forward(self, ids, want_sel=False):
        B, T = ids.shape
        cos, sin = self.rope(T)
        mask = torch.full((T, T), float("-inf")).triu(1)
        h = self.model.embed_tokens(ids)
        all_logits, sels = [], []
        for L in self.model.layers:
            h, rl, sel = L(h, cos, sin, mask)
            all_logits.append(rl)
            sels.append(sel)
        logits = self.lm_head(self.model.norm(h))
        return (logits, all_logits, sels) if want_sel else (logits, all_logits)


def load_balancing_loss(router_logits, E, k):
    """transformers' load_balancing_loss_func without attention mask."""
    g = torch.cat(router_logits, dim=0)
    rw = torch.softmax(g, dim=-1)
    _, sel = torch.topk(rw, k, dim=-1)
    mask = F.one_hot(sel, E)
    tokens_per_expert = mask.float().mean(dim=0)          # [k, E]
    router_prob = rw.mean(dim=0)                           # [E]
    return (tokens_per_expert * router_prob.unsqueeze(0)).sum() * E


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, x in tensors.items():
        b = np.ascontiguousarray(x, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(x.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    hdr = json.loads(buf[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(buf, dtype="<f4", count=(b - a) // 4, offset=8 + n + a).reshape(v["shape"]).copy())
    return out


def load_hf(d):
    c = json.load(open(os.path.join(d, "config.json")))
    m = Qwen3Moe(c)
    sd = read_safetensors(os.path.join(d, "model.safetensors"))
    m.load_state_dict(sd, strict=True)
    return m.eval()
