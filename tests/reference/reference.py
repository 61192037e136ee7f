#!/usr/bin/python3
"""Independent numpy reference forward pass for Hugging Face MoE checkpoints.

    reference.py DIR --tokens 1,2,3 -n N --logits-out PATH [--stats-out JSON]

Families: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE (config.json "model_type").
Written from the Hugging Face transformers modeling code, not from the moe
runtime:
    src/transformers/models/mixtral/modeling_mixtral.py
    src/transformers/models/qwen2_moe/modeling_qwen2_moe.py
    src/transformers/models/qwen3_moe/modeling_qwen3_moe.py
    src/transformers/models/olmoe/modeling_olmoe.py
    (+ configuration_*.py for defaults, modeling_rope_utils.py for "linear")
Everything is computed in float64 from the stored weights (F32/BF16/F16/F64,
single-file or sharded via model.safetensors.index.json).

Greedy generation: the prompt has P tokens; token 1 is the argmax of the
logits at the last prompt position, and every generated token is appended and
evaluated, including the last.  PATH gets P + N rows of vocab_size float32
logits (little-endian, row-major): one per prompt position, then one per
generated token, computed at that token's position.  The generated ids are
printed on stdout as one comma-separated line (empty with -n 0).

There is no KV cache: every step recomputes the whole sequence.
"""

import argparse
import json
import os
import sys

import numpy as np

# --------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


def read_safetensors(path):
    """{name: float64 array} of one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[base + begin:base + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            x = bits.view(np.float32)
        elif info["dtype"] in _ST_DTYPES:
            x = np.frombuffer(raw, dtype=_ST_DTYPES[info["dtype"]])
        else:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        out[name] = x.astype(np.float64).reshape(info["shape"])
    return out


def load_checkpoint(model_dir):
    """(config dict, {tensor name: float64 array}) of a HF checkpoint dir."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for fname in files:
        tensors.update(read_safetensors(os.path.join(model_dir, fname)))
    return config, tensors


# --------------------------------------------------------------------------
# Building blocks (each mirrors the transformers function named)
# --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    """*RMSNorm.forward: x * rsqrt(mean(x^2) + eps) * weight (last axis)."""
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def rotate_half(x):
    """rotate_half: cat(-x2, x1) of the two halves (not interleaved pairs)."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope_inv_freq(config, head_dim):
    """ROPE_INIT_FUNCTIONS["default"] and ["linear"]: 1/theta^(2i/d) [/ factor]."""
    params = config.get("rope_parameters") or {}
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling") or (params if params else None)
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "linear":
            inv_freq = inv_freq / scaling["factor"]
        elif kind != "default":
            raise NotImplementedError(f"rope scaling type {kind!r}")
    return inv_freq


def rope_cos_sin(config, head_dim, n_pos):
    """*RotaryEmbedding.forward: cos/sin of cat(freqs, freqs), positions 0..n-1."""
    freqs = np.outer(np.arange(n_pos, dtype=np.float64), rope_inv_freq(config, head_dim))
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)


def repeat_kv(x, n_rep):
    """repeat_kv: [n_kv, T, d] -> [n_kv * n_rep, T, d]; head h uses kv head h // n_rep."""
    return np.repeat(x, n_rep, axis=0)


def swiglu(x, gate, up, down):
    """*MLP / MixtralBlockSparseTop2MLP: down(silu(gate(x)) * up(x))."""
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

class Model:
    """A HF MoE decoder whose weights are all read (and checked used) at init."""

    def __init__(self, config, tensors):
        self.cfg = c = config
        self.family = c["model_type"]
        if self.family not in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"):
            raise NotImplementedError(f"model_type {self.family!r}")
        if c.get("hidden_act", "silu") != "silu":
            raise NotImplementedError(f"hidden_act {c['hidden_act']!r}")
        self.H = c["hidden_size"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads") or self.n_heads
        if self.family == "olmoe":
            # OlmoeAttention: head_dim = hidden_size // num_heads (no head_dim key).
            self.head_dim = self.H // self.n_heads
        else:
            self.head_dim = c.get("head_dim") or self.H // self.n_heads
        self.scaling = self.head_dim ** -0.5
        self.eps = c["rms_norm_eps"]
        self.n_layers = c["num_hidden_layers"]
        self.vocab = c["vocab_size"]
        self.clip_qkv = c.get("clip_qkv") if self.family == "olmoe" else None
        if self.family == "mixtral":
            self.n_experts = c["num_local_experts"]
            self.norm_topk = True          # MixtralSparseMoeBlock always renormalizes
        else:
            self.n_experts = c.get("num_experts", c.get("num_local_experts"))
            self.norm_topk = bool(c.get("norm_topk_prob", False))
        self.top_k = c["num_experts_per_tok"]
        self.sliding_window = self._active_sliding_window()

        self._tensors = dict(tensors)
        take = self._take
        self.embed = take("model.embed_tokens.weight")
        tied = c.get("tie_word_embeddings", False) and "lm_head.weight" not in tensors
        self.lm_head = self.embed if tied else take("lm_head.weight")
        self.final_norm = take("model.norm.weight")
        self.layers = [self._load_layer(i) for i in range(self.n_layers)]
        if self._tensors:
            raise ValueError("checkpoint tensors the reference did not use: "
                             + ", ".join(sorted(self._tensors)[:10]))

    def _active_sliding_window(self):
        """The sliding window if one applies (not implemented: forward refuses
        sequences longer than it), else None."""
        c = self.cfg
        if self.family == "mixtral":
            active = c.get("sliding_window") is not None
        elif self.family in ("qwen2_moe", "qwen3_moe"):
            active = bool(c.get("use_sliding_window", False))
        else:
            active = False
        return c.get("sliding_window") if active else None

    def _take(self, name):
        try:
            return self._tensors.pop(name)
        except KeyError:
            raise KeyError(f"checkpoint has no tensor {name!r}") from None

    def _mlp(self, prefix, names):
        return tuple(self._take(f"{prefix}.{n}.weight") for n in names)

    def _is_sparse(self, i):
        """Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: MoE block or dense MLP."""
        if self.family in ("mixtral", "olmoe"):
            return True
        c = self.cfg
        return (i not in (c.get("mlp_only_layers") or [])
                and self.n_experts > 0
                and (i + 1) % c.get("decoder_sparse_step", 1) == 0)

    def _load_layer(self, i):
        c, take, fam = self.cfg, self._take, self.family
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        L = {"in_norm": take(f"{p}.input_layernorm.weight"),
             "post_norm": take(f"{p}.post_attention_layernorm.weight")}
        for proj in "qkvo":
            L[f"w{proj}"] = take(f"{a}.{proj}_proj.weight")
        # Biases: Qwen2-MoE q/k/v (qkv_bias, default True; o_proj never);
        # Qwen3-MoE and OLMoE q/k/v/o when attention_bias; Mixtral none.
        biased = ""
        if fam == "qwen2_moe" and c.get("qkv_bias", True):
            biased = "qkv"
        elif fam in ("qwen3_moe", "olmoe") and c.get("attention_bias", False):
            biased = "qkvo"
        for proj in "qkvo":
            L[f"b{proj}"] = take(f"{a}.{proj}_proj.bias") if proj in biased else None
        if fam in ("qwen3_moe", "olmoe"):
            L["q_norm"] = take(f"{a}.q_norm.weight")
            L["k_norm"] = take(f"{a}.k_norm.weight")

        gud = ("gate_proj", "up_proj", "down_proj")
        if fam == "mixtral":
            m = f"{p}.block_sparse_moe"
            L["router"] = take(f"{m}.gate.weight")
            # w1 = gate, w3 = up, w2 = down
            L["experts"] = [self._mlp(f"{m}.experts.{e}", ("w1", "w3", "w2"))
                            for e in range(self.n_experts)]
        elif self._is_sparse(i):
            m = f"{p}.mlp"
            L["router"] = take(f"{m}.gate.weight")
            L["experts"] = [self._mlp(f"{m}.experts.{e}", gud) for e in range(self.n_experts)]
            if fam == "qwen2_moe":
                L["shared"] = self._mlp(f"{m}.shared_expert", gud)
                L["shared_gate"] = take(f"{m}.shared_expert_gate.weight")
        else:
            L["dense"] = self._mlp(f"{p}.mlp", gud)
        return L

    # ---- forward ---------------------------------------------------------

    def attention(self, L, x, cos, sin):
        T, nh, nkv, hd = x.shape[0], self.n_heads, self.n_kv, self.head_dim

        def proj(name):
            y = x @ L[f"w{name}"].T
            return y if L[f"b{name}"] is None else y + L[f"b{name}"]

        q, k, v = proj("q"), proj("k"), proj("v")
        if self.family == "olmoe":
            # OlmoeAttention: q_norm / k_norm over the whole projection, before
            # the reshape into heads; then optional clamp of q, k and v.
            q = rms_norm(q, L["q_norm"], self.eps)
            k = rms_norm(k, L["k_norm"], self.eps)
            if self.clip_qkv is not None:
                q, k, v = (np.clip(t, -self.clip_qkv, self.clip_qkv) for t in (q, k, v))
        q = q.reshape(T, nh, hd).transpose(1, 0, 2)     # [nh, T, hd]
        k = k.reshape(T, nkv, hd).transpose(1, 0, 2)    # [nkv, T, hd]
        v = v.reshape(T, nkv, hd).transpose(1, 0, 2)
        if self.family == "qwen3_moe":
            # Qwen3MoeAttention: per-head RMSNorm over head_dim, before RoPE.
            q = rms_norm(q, L["q_norm"], self.eps)
            k = rms_norm(k, L["k_norm"], self.eps)
        q = q * cos + rotate_half(q) * sin               # apply_rotary_pos_emb
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, nh // nkv)
        v = repeat_kv(v, nh // nkv)
        scores = (q @ k.transpose(0, 2, 1)) * self.scaling   # [nh, T, T]
        mask = np.triu(np.ones((T, T), dtype=bool), 1)   # causal
        scores = np.where(mask, -np.inf, scores)
        out = softmax(scores) @ v                        # [nh, T, hd]
        out = out.transpose(1, 0, 2).reshape(T, nh * hd)
        out = out @ L["wo"].T
        return out if L["bo"] is None else out + L["bo"]

    def moe(self, L, x, stats):
        """*SparseMoeBlock.forward: softmax over all experts, top-k, optional
        renormalization, weighted sum of SwiGLU experts (+ Qwen2-MoE shared)."""
        logits = x @ L["router"].T                        # [T, E]
        probs = softmax(logits)
        order = np.argsort(-probs, axis=-1, kind="stable")
        top = order[:, :self.top_k]
        w = np.take_along_axis(probs, top, axis=-1)
        if self.norm_topk:
            w = w / w.sum(axis=-1, keepdims=True)
        wsum = w.sum(axis=-1)
        stats["min_topk_weight_sum"] = min(stats.get("min_topk_weight_sum", np.inf), float(wsum.min()))
        stats["max_topk_weight_sum"] = max(stats.get("max_topk_weight_sum", -np.inf), float(wsum.max()))
        if self.top_k < self.n_experts:
            srt = np.take_along_axis(logits, order, axis=-1)
            gap = srt[:, self.top_k - 1] - srt[:, self.top_k]
            stats["min_router_gap"] = min(stats.get("min_router_gap", np.inf), float(gap.min()))
        out = np.zeros_like(x)
        for e in np.unique(top):
            rows, slot = np.nonzero(top == e)
            out[rows] += swiglu(x[rows], *L["experts"][e]) * w[rows, slot][:, None]
        if "shared" in L:
            gate = sigmoid(x @ L["shared_gate"].T)         # [T, 1]
            out += gate * swiglu(x, *L["shared"])
        return out

    def forward(self, tokens, stats=None):
        """Logits [T, vocab] (float64) for the token sequence, positions 0..T-1."""
        stats = {} if stats is None else stats
        tokens = np.asarray(tokens, dtype=np.int64)
        T = len(tokens)
        if self.sliding_window is not None and T > self.sliding_window:
            raise NotImplementedError("sequence longer than the sliding window")
        if tokens.min() < 0 or tokens.max() >= self.vocab:
            raise ValueError("token id out of range")
        cos, sin = rope_cos_sin(self.cfg, self.head_dim, T)
        h = self.embed[tokens]
        for L in self.layers:
            h = h + self.attention(L, rms_norm(h, L["in_norm"], self.eps), cos, sin)
            x = rms_norm(h, L["post_norm"], self.eps)
            h = h + (swiglu(x, *L["dense"]) if "dense" in L else self.moe(L, x, stats))
        return rms_norm(h, self.final_norm, self.eps) @ self.lm_head.T


def greedy_margin(row):
    """Gap between the largest and second largest logit of a row."""
    top2 = np.sort(row)[-2:]
    return float(top2[1] - top2[0])


def generate(model, prompt, n):
    """(generated ids, logits [P+N, vocab] float64, stats) by greedy decoding.

    Each step recomputes the full sequence.  The returned rows come from one
    final forward over prompt + generated ids; they are checked against the
    per-step rows (a causal model must give the same values).
    """
    seq = list(prompt)
    generated, step_rows, margins = [], [], []
    for _ in range(n):
        row = model.forward(seq)[-1]
        step_rows.append(row)
        margins.append(greedy_margin(row))
        tok = int(np.argmax(row))
        generated.append(tok)
        seq.append(tok)
    stats = {}
    logits = model.forward(seq, stats)
    P = len(prompt)
    for i, row in enumerate(step_rows):
        err = np.max(np.abs(logits[P - 1 + i] - row))
        if not err <= 1e-9 * max(1.0, np.max(np.abs(row))):
            raise AssertionError(f"step {i}: full-sequence row differs from step row by {err}")
    stats["min_greedy_gap"] = min(margins) if margins else None
    stats["max_abs_logit"] = float(np.max(np.abs(logits)))
    return generated, logits, stats


def parse_tokens(text):
    text = text.strip()
    return [int(t) for t in text.split(",") if t.strip()] if text else []


def main(argv=None):
    ap = argparse.ArgumentParser(description="numpy reference forward pass (float64)")
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", required=True, help="prompt ids, comma-separated")
    ap.add_argument("-n", type=int, default=0, help="number of tokens to generate")
    ap.add_argument("--logits-out", help="write P+N rows of float32 logits here")
    ap.add_argument("--stats-out", help="write decision margins (JSON) here")
    args = ap.parse_args(argv)
    prompt = parse_tokens(args.tokens)
    if not prompt:
        ap.error("--tokens needs at least one id")
    model = Model(*load_checkpoint(args.model_dir))
    ids, logits, stats = generate(model, prompt, args.n)
    if args.logits_out:
        logits.astype("<f4").tofile(args.logits_out)
    if args.stats_out:
        with open(args.stats_out, "w") as f:
            json.dump(stats, f, indent=2)
    print(",".join(str(t) for t in ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
