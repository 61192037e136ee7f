#!/usr/bin/python3
"""Independent numpy reference forward pass for Hugging Face MoE checkpoints.

    reference.py DIR --tokens 1,2,3 -n N --logits-out PATH [--stats-out JSON]

Families: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2, DeepSeek-V3
(config.json "model_type"; DeepSeek: see DeepseekModel below for the sources
followed and the choices made where they differ).
Written from the Hugging Face transformers modeling code, not from the moe
runtime:
    src/transformers/models/mixtral/modeling_mixtral.py
    src/transformers/models/qwen2_moe/modeling_qwen2_moe.py
    src/transformers/models/qwen3_moe/modeling_qwen3_moe.py
    src/transformers/models/olmoe/modeling_olmoe.py
    (+ configuration_*.py for defaults, modeling_rope_utils.py for "linear")
Everything is computed in float64 from the stored weights (F32/BF16/F16/F64,
F8_E4M3 with 128x128 block scales, single-file or sharded via
model.safetensors.index.json).

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


def fp8_e4m3fn_to_float(codes):
    """uint8 e4m3fn codes -> float64 (torch.float8_e4m3fn): sign, 4-bit
    exponent with bias 7, 3-bit mantissa; exponent 0 is subnormal
    (m/8 * 2^-6); S.1111.111 is NaN; no infinities (max 448)."""
    c = codes.astype(np.int64)
    e, m = (c >> 3) & 0xF, (c & 7).astype(np.float64)
    mag = np.where(e == 0, np.ldexp(m / 8.0, -6), np.ldexp(1.0 + m / 8.0, e - 7))
    mag = np.where((c & 0x7F) == 0x7F, np.nan, mag)
    return np.where(c & 0x80, -mag, mag)


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
        elif info["dtype"] == "F8_E4M3":
            x = fp8_e4m3fn_to_float(np.frombuffer(raw, dtype=np.uint8))
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
    """A HF MoE decoder whose weights are all read (and checked used) at init.

    Model(config, tensors) with a DeepSeek model_type gives a DeepseekModel."""

    def __new__(cls, config=None, tensors=None):
        if (cls is Model and isinstance(config, dict)
                and config.get("model_type") in DEEPSEEK_FAMILIES):
            cls = DeepseekModel
        return super().__new__(cls)

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
        self._load_weights(c, tensors)

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

    def _load_weights(self, c, tensors):
        """Embedding, layers, final norm and head; every tensor must be used."""
        take = self._take
        self.embed = take("model.embed_tokens.weight")
        tied = c.get("tie_word_embeddings", False) and "lm_head.weight" not in tensors
        self.lm_head = self.embed if tied else take("lm_head.weight")
        self.final_norm = take("model.norm.weight")
        self.layers = [self._load_layer(i) for i in range(self.n_layers)]
        if self._tensors:
            raise ValueError("checkpoint tensors the reference did not use: "
                             + ", ".join(sorted(self._tensors)[:10]))

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

    def rope_cos_sin(self, T):
        """cos, sin of positions 0..T-1 (the family's RoPE)."""
        return rope_cos_sin(self.cfg, self.head_dim, T)

    def forward(self, tokens, stats=None):
        """Logits [T, vocab] (float64) for the token sequence, positions 0..T-1."""
        stats = {} if stats is None else stats
        tokens = np.asarray(tokens, dtype=np.int64)
        T = len(tokens)
        if self.sliding_window is not None and T > self.sliding_window:
            raise NotImplementedError("sequence longer than the sliding window")
        if tokens.min() < 0 or tokens.max() >= self.vocab:
            raise ValueError("token id out of range")
        cos, sin = self.rope_cos_sin(T)
        h = self.embed[tokens]
        for L in self.layers:
            h = h + self.attention(L, rms_norm(h, L["in_norm"], self.eps), cos, sin)
            x = rms_norm(h, L["post_norm"], self.eps)
            h = h + (swiglu(x, *L["dense"]) if "dense" in L else self.moe(L, x, stats))
        return rms_norm(h, self.final_norm, self.eps) @ self.lm_head.T


# --------------------------------------------------------------------------
# DeepSeek-V2 / V3
# --------------------------------------------------------------------------
#
# Followed (read from the public copies in the search index):
#   [HF3]  huggingface/transformers src/transformers/models/deepseek_v3/
#          modeling_deepseek_v3.py (DeepseekV3TopkRouter, DeepseekV3MoE,
#          DeepseekV3Attention, apply_rotary_pos_emb_interleave,
#          yarn_get_mscale)
#   [HF2]  huggingface/transformers src/transformers/models/deepseek_v2/
#          modeling_deepseek_v2.py (DeepseekV2Moe.route_tokens_to_experts,
#          DeepseekV2Attention, apply_rotary_emb)
#   [DS]   DeepSeek's own modeling_deepseek.py shipped with the checkpoints
#          (deepseek-ai/DeepSeek-V2-Lite and deepseek-ai/DeepSeek-V3 on the
#          HF hub; read through copies in public repos): MoEGate,
#          DeepseekV2YarnRotaryEmbedding / yarn_find_correction_range /
#          yarn_linear_ramp_mask / yarn_get_mscale, apply_rotary_pos_emb,
#          DeepseekV2Attention.softmax_scale, DeepseekV2DecoderLayer
#   [DSI]  deepseek-ai/DeepSeek-V3 inference/model.py (Gate) and
#          README_WEIGHTS.md (FP8 block scales, MTP layer naming)
#
# Where they differ, the choice made here (= [DS], the code the checkpoints
# were released with):
#   * RoPE layout: rope on the qk_rope_head_dim part only, rotating ADJACENT
#     pairs (x[2i], x[2i+1]) by pos * inv_freq[i].  [DS] de-interleaves
#     (view(..., d/2, 2).transpose) then uses rotate_half with
#     cat(freqs, freqs); [HF3] does the same when config.rope_interleave
#     (default True); [HF2] uses complex pairs; [DSI] view_as_complex: all
#     the same rotation.  The output order of the rope dims differs between
#     them (pairs vs halves), which changes nothing since q and k get the same
#     order.  The non-interleaved (rotate_half on the raw halves) variant is
#     WRONG for these checkpoints.
#   * YaRN ([DS], = transformers' "yarn" rope init): inv_freq mixes
#     extrapolation 1/theta^(2i/d) and interpolation (/factor) with
#     mask = 1 - clamp((i - low) / (high - low), 0, 1), low = floor(corr(beta_fast)),
#     high = ceil(corr(beta_slow)), corr(r) = d ln(orig_max / (2 pi r)) / (2 ln theta),
#     clamped to [0, d-1], d = qk_rope_head_dim; cos and sin multiplied by
#     mscale(factor, mscale) / mscale(factor, mscale_all_dim), mscale(s, m) =
#     0.1 m ln s + 1 (1 if s <= 1).  Softmax scale = (nope + rope)^-0.5 x
#     mscale(factor, mscale_all_dim)^2 when mscale_all_dim is set ([DS],
#     [HF3]); [HF2] omits this mscale^2 (a transformers port difference; not
#     followed).
#   * V2 routing ([DS] MoEGate): softmax scores; topk_method "greedy" = plain
#     top-k, "group_limited_greedy" = groups scored by their MAX score, keep
#     topk_group groups, top-k among their experts; then if top_k > 1 and
#     norm_topk_prob: weights /= sum (and NO routed_scaling_factor), else
#     weights *= routed_scaling_factor.  [HF2] ignores norm_topk_prob and
#     always multiplies: identical for V2-Lite (norm_topk_prob false).
#   * V3 routing ([DS] noaux_tc, [HF3]): sigmoid scores; choice scores =
#     scores + e_score_correction_bias; group score = sum of the top-2 choice
#     scores of the group; keep topk_group groups; top-k choice scores among
#     their experts; weights = UNBIASED scores of the chosen, divided by their
#     sum if norm_topk_prob, then x routed_scaling_factor (always).  The
#     unchosen groups are excluded (-inf, as [DSI]); [DS]/[HF3] fill them with
#     0.0, which differs only if a chosen group has a negative choice score
#     (impossible when the bias is >= 0, as gen_checkpoint.py makes it).
#   * Shared experts: one SwiGLU MLP of width moe_intermediate_size *
#     n_shared_experts, added unweighted.  Dense MLP (intermediate_size)
#     where not (layer >= first_k_dense_replace and layer % moe_layer_freq
#     == 0) ([DS]; transformers ignores moe_layer_freq).
#   * FP8 ([DSI] README_WEIGHTS.md): w = e4m3 value * weight_scale_inv[i //
#     128, j // 128] (block size from quantization_config.weight_block_size).
#   * MTP ([DSI] README_WEIGHTS.md): layers num_hidden_layers ..
#     num_hidden_layers + num_nextn_predict_layers - 1 are read into
#     model.mtp_tensors and never run.

DEEPSEEK_FAMILIES = ("deepseek_v2", "deepseek_v3")


def yarn_get_mscale(scale=1.0, mscale=1.0):
    """[DS] yarn_get_mscale."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * np.log(scale) + 1.0


def deepseek_rope(config):
    """(inv_freq [d/2], cos/sin multiplier) of the qk_rope_head_dim part."""
    d = config["qk_rope_head_dim"]
    theta = float(config.get("rope_theta", 10000.0))
    extra = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    rs = config.get("rope_scaling")
    if not rs:
        return extra, 1.0
    kind = rs.get("type", rs.get("rope_type"))
    if kind != "yarn":
        raise NotImplementedError(f"DeepSeek rope_scaling type {kind!r}")
    factor = float(rs["factor"])
    orig = rs.get("original_max_position_embeddings", 4096)
    beta_fast, beta_slow = rs.get("beta_fast", 32), rs.get("beta_slow", 1)

    def corr_dim(rot):
        return d * np.log(orig / (rot * 2 * np.pi)) / (2 * np.log(theta))

    low = max(int(np.floor(corr_dim(beta_fast))), 0)
    high = min(int(np.ceil(corr_dim(beta_slow))), d - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    mask = 1.0 - ramp                 # 1: extrapolate (keep), 0: interpolate
    inv_freq = (extra / factor) * (1.0 - mask) + extra * mask
    attn = (yarn_get_mscale(factor, rs.get("mscale", 1))
            / yarn_get_mscale(factor, rs.get("mscale_all_dim", 0)))
    return inv_freq, attn


def deepseek_softmax_scale(config):
    """[DS] DeepseekV2Attention.softmax_scale: (nope+rope)^-0.5, times
    mscale(factor, mscale_all_dim)^2 when rope_scaling has mscale_all_dim."""
    scale = (config["qk_nope_head_dim"] + config["qk_rope_head_dim"]) ** -0.5
    rs = config.get("rope_scaling")
    if rs and rs.get("mscale_all_dim"):
        m = yarn_get_mscale(float(rs["factor"]), rs["mscale_all_dim"])
        scale *= m * m
    return scale


def rope_pairs(x, cos, sin):
    """Rotate adjacent pairs (x[..., 2i], x[..., 2i+1]) by angle i (cos/sin
    [T, d/2], already times the YaRN multiplier); pair layout is kept."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = x0 * cos - x1 * sin
    y[..., 1::2] = x0 * sin + x1 * cos
    return y


def _topk_desc(values, k):
    """Indices of the k largest per row, largest first (stable on ties)."""
    return np.argsort(-values, axis=-1, kind="stable")[..., :k]


def route_v3(scores, bias, n_group, topk_group, k, norm, scale):
    """DeepSeek-V3 noaux_tc routing of sigmoid `scores` [T, E] (or [E]).

    Returns (idx [T, k], weights [T, k]), best choice first.  Choice scores
    are scores + bias; a group's score is the sum of its top-2 choice
    scores; the topk_group best groups are kept; the k best choice scores
    among their experts are chosen; the weights are the unbiased scores of
    the chosen, normalized to sum 1 if norm (and k > 1), times scale."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    T, E = scores.shape
    choice = scores + (0.0 if bias is None else np.asarray(bias, dtype=np.float64))
    grouped = choice.reshape(T, n_group, E // n_group)
    group_scores = np.sort(grouped, axis=-1)[..., -2:].sum(axis=-1)       # [T, G]
    keep = _topk_desc(group_scores, topk_group)
    gmask = np.zeros((T, n_group), dtype=bool)
    np.put_along_axis(gmask, keep, True, axis=-1)
    masked = np.where(np.repeat(gmask, E // n_group, axis=-1), choice, -np.inf)
    idx = _topk_desc(masked, k)
    w = np.take_along_axis(scores, idx, axis=-1)
    if norm and k > 1:
        w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
    return idx, w * scale


def route_v2(scores, k, topk_method="greedy", n_group=1, topk_group=1,
             norm=False, scale=1.0):
    """DeepSeek-V2 routing of softmax `scores` [T, E] (or [E]) ([DS] MoEGate).

    greedy: top-k of all; group_limited_greedy: keep the topk_group groups
    with the largest MAX score, top-k among them.  Then if norm and k > 1
    the weights are divided by their sum (no scale), else multiplied by
    scale.  Returns (idx [T, k], weights [T, k]), best first."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    T, E = scores.shape
    if topk_method == "greedy":
        masked = scores
    elif topk_method == "group_limited_greedy":
        group_scores = scores.reshape(T, n_group, E // n_group).max(axis=-1)
        keep = _topk_desc(group_scores, topk_group)
        gmask = np.zeros((T, n_group), dtype=bool)
        np.put_along_axis(gmask, keep, True, axis=-1)
        masked = np.where(np.repeat(gmask, E // n_group, axis=-1), scores, -np.inf)
    else:
        raise NotImplementedError(f"topk_method {topk_method!r}")
    idx = _topk_desc(masked, k)
    w = np.take_along_axis(scores, idx, axis=-1)
    if norm and k > 1:
        w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
    else:
        w = w * scale
    return idx, w


def fp8_block_dequant(w, scale_inv, block):
    """w * scale_inv[i // bo, j // bi] (DeepSeek-V3 README_WEIGHTS.md)."""
    bo, bi = block
    out, inn = w.shape
    want = (-(-out // bo), -(-inn // bi))
    if tuple(scale_inv.shape) != want:
        raise ValueError(f"weight_scale_inv shape {scale_inv.shape} for weight "
                         f"{w.shape}, expected {want}")
    s = np.repeat(np.repeat(scale_inv, bo, axis=0), bi, axis=1)[:out, :inn]
    return w * s


class DeepseekModel(Model):
    """DeepSeek-V2 / V3 (MLA attention, shared + routed experts); see the
    comment block above for the sources and choices.  Weights are read (and
    FP8 ones dequantized) at init; every tensor must be used, except the MTP
    layer's, which are kept in self.mtp_tensors."""

    def __init__(self, config, tensors):
        self.cfg = c = config
        self.family = c["model_type"]
        if c.get("hidden_act", "silu") != "silu":
            raise NotImplementedError(f"hidden_act {c['hidden_act']!r}")
        self.H = c["hidden_size"]
        self.n_heads = c["num_attention_heads"]
        self.q_lora_rank = c.get("q_lora_rank")
        self.kv_lora_rank = c["kv_lora_rank"]
        self.d_nope, self.d_rope = c["qk_nope_head_dim"], c["qk_rope_head_dim"]
        self.d_v = c["v_head_dim"]
        self.head_dim = self.d_nope + self.d_rope      # q/k head width
        self.scaling = deepseek_softmax_scale(c)
        self.inv_freq, self.rope_mscale = deepseek_rope(c)
        self.eps = c["rms_norm_eps"]
        self.n_layers = c["num_hidden_layers"]
        self.vocab = c["vocab_size"]
        self.n_experts = c.get("n_routed_experts")
        self.top_k = c.get("num_experts_per_tok")
        self.scoring_func = c.get("scoring_func", "softmax")
        self.topk_method = c.get("topk_method", "greedy")
        self.n_group = c.get("n_group") or 1
        self.topk_group = c.get("topk_group") or 1
        self.norm_topk = bool(c.get("norm_topk_prob", False))
        self.routed_scaling = float(c.get("routed_scaling_factor", 1.0))
        self.attn_bias = bool(c.get("attention_bias", False))
        self.sliding_window = None
        qc = c.get("quantization_config")
        self.block = tuple(qc.get("weight_block_size", (128, 128))) if qc else (128, 128)

        self._tensors = dict(tensors)
        n_mtp = c.get("num_nextn_predict_layers", 0) or 0
        mtp_prefixes = tuple(f"model.layers.{self.n_layers + j}." for j in range(n_mtp))
        self.mtp_tensors = {k: self._tensors.pop(k) for k in list(self._tensors)
                            if mtp_prefixes and k.startswith(mtp_prefixes)}
        self._load_weights(c, tensors)

    def _linear(self, prefix, bias=False):
        """(weight, bias or None) of prefix.weight, dequantized when a
        prefix.weight_scale_inv companion exists."""
        w = self._take(f"{prefix}.weight")
        if f"{prefix}.weight_scale_inv" in self._tensors:
            w = fp8_block_dequant(w, self._take(f"{prefix}.weight_scale_inv"), self.block)
        b = self._take(f"{prefix}.bias") if bias else None
        return w, b

    def _mlp3(self, prefix):
        return tuple(self._linear(f"{prefix}.{n}")[0]
                     for n in ("gate_proj", "up_proj", "down_proj"))

    def _is_moe(self, i):
        c = self.cfg
        return (self.n_experts is not None
                and i >= c.get("first_k_dense_replace", 0)
                and i % c.get("moe_layer_freq", 1) == 0)

    def _load_layer(self, i):
        take, ab = self._take, self.attn_bias
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        L = {"in_norm": take(f"{p}.input_layernorm.weight"),
             "post_norm": take(f"{p}.post_attention_layernorm.weight")}
        if self.q_lora_rank is None:
            L["wq"], _ = self._linear(f"{a}.q_proj")
        else:
            L["wq_a"], L["bq_a"] = self._linear(f"{a}.q_a_proj", ab)
            L["q_a_norm"] = take(f"{a}.q_a_layernorm.weight")
            L["wq_b"], _ = self._linear(f"{a}.q_b_proj")
        L["wkv_a"], L["bkv_a"] = self._linear(f"{a}.kv_a_proj_with_mqa", ab)
        L["kv_a_norm"] = take(f"{a}.kv_a_layernorm.weight")
        L["wkv_b"], _ = self._linear(f"{a}.kv_b_proj")
        L["wo"], L["bo"] = self._linear(f"{a}.o_proj", ab)
        m = f"{p}.mlp"
        if not self._is_moe(i):
            L["dense"] = self._mlp3(m)
            return L
        L["router"] = take(f"{m}.gate.weight")
        if self.topk_method == "noaux_tc":
            L["score_bias"] = take(f"{m}.gate.e_score_correction_bias")
        L["experts"] = [self._mlp3(f"{m}.experts.{e}") for e in range(self.n_experts)]
        if self.cfg.get("n_shared_experts"):
            L["shared"] = self._mlp3(f"{m}.shared_experts")
        return L

    # ---- forward ---------------------------------------------------------

    def rope_cos_sin(self, T):
        """cos, sin [T, d_rope/2] of positions 0..T-1, times the YaRN mscale."""
        ang = np.outer(np.arange(T, dtype=np.float64), self.inv_freq)
        return np.cos(ang) * self.rope_mscale, np.sin(ang) * self.rope_mscale

    def attention(self, L, x, cos, sin):
        """MLA, expanded form: per head q = [q_nope, rope(q_pe)],
        k = [k_nope, rope(k_pe)] with k_pe shared by all heads."""
        T, nh = x.shape[0], self.n_heads
        if self.q_lora_rank is None:
            q = x @ L["wq"].T
        else:
            qa = x @ L["wq_a"].T
            if L["bq_a"] is not None:
                qa = qa + L["bq_a"]
            q = rms_norm(qa, L["q_a_norm"], self.eps) @ L["wq_b"].T
        q = q.reshape(T, nh, self.head_dim).transpose(1, 0, 2)       # [nh, T, d]
        q_nope, q_pe = q[..., :self.d_nope], q[..., self.d_nope:]
        kv_a = x @ L["wkv_a"].T
        if L["bkv_a"] is not None:
            kv_a = kv_a + L["bkv_a"]
        latent, k_pe = kv_a[:, :self.kv_lora_rank], kv_a[:, self.kv_lora_rank:]
        kv = rms_norm(latent, L["kv_a_norm"], self.eps) @ L["wkv_b"].T
        kv = kv.reshape(T, nh, self.d_nope + self.d_v).transpose(1, 0, 2)
        k_nope, v = kv[..., :self.d_nope], kv[..., self.d_nope:]
        q_pe = rope_pairs(q_pe, cos, sin)
        k_pe = rope_pairs(k_pe, cos, sin)                             # [T, r]
        scores = (q_nope @ k_nope.transpose(0, 2, 1) + q_pe @ k_pe.T) * self.scaling
        mask = np.triu(np.ones((T, T), dtype=bool), 1)
        scores = np.where(mask, -np.inf, scores)
        out = softmax(scores) @ v                                     # [nh, T, v]
        out = out.transpose(1, 0, 2).reshape(T, nh * self.d_v) @ L["wo"].T
        return out if L["bo"] is None else out + L["bo"]

    def route(self, L, x):
        """(idx [T, k], weights [T, k], choice scores [T, E], group scores or
        None); for softmax scoring the last two are in logit units."""
        logits = x @ L["router"].T
        if self.scoring_func == "sigmoid":
            scores = sigmoid(logits)
        elif self.scoring_func == "softmax":
            scores = softmax(logits)
        else:
            raise NotImplementedError(f"scoring_func {self.scoring_func!r}")
        T, E = scores.shape
        if self.topk_method == "noaux_tc":
            idx, w = route_v3(scores, L["score_bias"], self.n_group, self.topk_group,
                              self.top_k, self.norm_topk, self.routed_scaling)
            choice = scores + L["score_bias"]
            groups = np.sort(choice.reshape(T, self.n_group, -1), axis=-1)[..., -2:].sum(-1)
        else:
            idx, w = route_v2(scores, self.top_k, self.topk_method, self.n_group,
                              self.topk_group, self.norm_topk, self.routed_scaling)
            # softmax is monotonic: margins in logit units, as for the other
            # families (the choice itself is made on the probabilities).
            choice = logits
            groups = (logits.reshape(T, self.n_group, -1).max(-1)
                      if self.topk_method == "group_limited_greedy" else None)
        return idx, w, choice, groups

    def moe(self, L, x, stats):
        idx, w, choice, groups = self.route(L, x)
        T, E = choice.shape
        # Stats: top-k weight sums BEFORE routed_scaling_factor (1 when
        # renormalized); decision margins: k-th vs (k+1)-th choice score among
        # the allowed experts, topk_group-th vs next group score.
        unscaled = w if (self.topk_method != "noaux_tc" and self.norm_topk and self.top_k > 1) \
            else w / self.routed_scaling
        wsum = unscaled.sum(axis=-1)
        stats["min_topk_weight_sum"] = min(stats.get("min_topk_weight_sum", np.inf), float(wsum.min()))
        stats["max_topk_weight_sum"] = max(stats.get("max_topk_weight_sum", -np.inf), float(wsum.max()))
        gaps = []
        allowed = np.ones_like(choice, dtype=bool)
        if groups is not None and self.topk_group < self.n_group:
            g = np.sort(groups, axis=-1)[:, ::-1]
            ggap = g[:, self.topk_group - 1] - g[:, self.topk_group]
            stats["min_group_gap"] = min(stats.get("min_group_gap", np.inf), float(ggap.min()))
            gaps.append(ggap.min())
            keep = _topk_desc(groups, self.topk_group)
            gm = np.zeros_like(groups, dtype=bool)
            np.put_along_axis(gm, keep, True, axis=-1)
            allowed = np.repeat(gm, E // self.n_group, axis=-1)
        if self.top_k < allowed.sum(axis=-1).min():
            srt = np.sort(np.where(allowed, choice, -np.inf), axis=-1)[:, ::-1]
            gaps.append((srt[:, self.top_k - 1] - srt[:, self.top_k]).min())
        if gaps:
            stats["min_router_gap"] = min(stats.get("min_router_gap", np.inf), float(min(gaps)))
        out = np.zeros_like(x)
        for e in np.unique(idx):
            rows, slot = np.nonzero(idx == e)
            out[rows] += swiglu(x[rows], *L["experts"][e]) * w[rows, slot][:, None]
        if "shared" in L:
            out += swiglu(x, *L["shared"])
        return out


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
