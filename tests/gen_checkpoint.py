#!/usr/bin/python3
"""Write a tiny, seeded-random Hugging Face MoE checkpoint for tests.

    gen_checkpoint.py --family {mixtral,qwen2_moe,qwen3_moe,olmoe,deepseek_v2,deepseek_v3}
                      --dtype {f32,bf16} [--shards N] [--seed S] -o DIR

DIR gets a config.json with the key names of the real model's config.json
(sizes shrunk) and the weights as safetensors: one model.safetensors, or with
--shards N >= 2, model-0000K-of-0000N.safetensors plus
model.safetensors.index.json.  No tokenizer files are written.

Where the config keys come from:
  mixtral    /work/shared/model-meta/mistralai--Mixtral-8x7B-Instruct-v0.1/config.json
  qwen2_moe  Qwen/Qwen1.5-MoE-A2.7B config.json (as copied in public repos) plus
             `mlp_only_layers` from transformers' Qwen2MoeConfig
  qwen3_moe  Qwen/Qwen3-30B-A3B config.json (as copied in public repos)
  olmoe      allenai/OLMoE-1B-7B-0924 config.json keys (OlmoeConfig fields)
  deepseek_v2  deepseek-ai/DeepSeek-V2-Lite(-Chat) config.json (as printed by
             transformers when loading it; seen in public training logs)
  deepseek_v3  /work/shared/model-meta/deepseek-ai--DeepSeek-V3/config.json
             (every key), FP8 e4m3 weights with 128x128 block scales as shipped
Tensor names follow the real checkpoints (per-expert tensors, not fused);
Mixtral's were checked against its real model.safetensors.index.json, the
others against the module names in transformers' modeling_*.py.

numpy only: safetensors is written by hand (u64 little-endian header length,
JSON header padded with spaces to a multiple of 8, raw little-endian data).

DeepSeek specifics (see deepseek_tensor_specs / make_deepseek_tensors):
  * tensor names as in the real checkpoints (modeling_deepseek.py module
    names; DeepSeek-V3's README_WEIGHTS.md for the MTP layer);
  * deepseek_v3 is written as shipped: every "*_proj.weight" of the decoder
    layers (attention q_a/q_b/kv_a_proj_with_mqa/kv_b/o, dense MLP, routed and
    shared experts; also those of the MTP layer) is F8_E4M3 (one byte per
    value, e4m3fn: bias 7, no inf, max 448) with a float32 companion
    "<name>_scale_inv" of shape [ceil(out/128), ceil(in/128)];
    w = fp8_value * scale_inv[i // 128, j // 128].  Embeddings, norms, the
    router (mlp.gate.weight), mlp.gate.e_score_correction_bias (always F32),
    lm_head and the MTP eh_proj / embed_tokens / shared_head are not FP8;
  * deepseek_v3 has num_nextn_predict_layers = 1: the MTP layer is
    model.layers.{num_hidden_layers}.* (embed_tokens, enorm, hnorm, eh_proj,
    shared_head.norm, shared_head.head + a full MoE decoder layer); it is not
    part of the normal forward pass.
"""

import argparse
import json
import os
import sys

import numpy as np

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3")
DEEPSEEK_FAMILIES = ("deepseek_v2", "deepseek_v3")


# --------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------

def make_config(family, dtype):
    """config.json for a tiny model of `family` (real key names, tiny sizes)."""
    torch_dtype = "bfloat16" if dtype == "bf16" else "float32"
    if family == "mixtral":
        # Keys of mistralai/Mixtral-8x7B-Instruct-v0.1/config.json.
        return {
            "architectures": ["MixtralForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.02,
            "intermediate_size": 48,          # expert width
            "max_position_embeddings": 256,
            "model_type": "mixtral",
            "num_attention_heads": 4,
            "num_experts_per_tok": 2,
            "num_hidden_layers": 2,
            "num_key_value_heads": 2,
            "num_local_experts": 8,
            "output_router_logits": False,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1000000.0,
            "router_aux_loss_coef": 0.02,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "torch_dtype": torch_dtype,
            "transformers_version": "4.36.0.dev0",
            "use_cache": True,
            "vocab_size": 256,
        }
    if family == "qwen2_moe":
        # Keys of Qwen/Qwen1.5-MoE-A2.7B/config.json, plus mlp_only_layers
        # (a Qwen2MoeConfig field, default []) so that layer 1 is a dense MLP.
        # The real config has no "qkv_bias" key: q/k/v biases are always there.
        return {
            "architectures": ["Qwen2MoeForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 151643,
            "eos_token_id": 151643,
            "decoder_sparse_step": 1,
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.02,
            "intermediate_size": 96,          # dense MLP width (mlp_only_layers)
            "max_position_embeddings": 256,
            "max_window_layers": 3,
            "mlp_only_layers": [1],
            "model_type": "qwen2_moe",
            "moe_intermediate_size": 32,      # routed expert width
            "norm_topk_prob": False,
            "num_attention_heads": 4,
            "num_experts": 8,
            "num_experts_per_tok": 4,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "output_router_logits": False,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "router_aux_loss_coef": 0.001,
            "shared_expert_intermediate_size": 64,
            "sliding_window": 32768,
            "tie_word_embeddings": False,
            "torch_dtype": torch_dtype,
            "transformers_version": "4.39.0.dev0",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": 300,
        }
    if family == "qwen3_moe":
        # Keys of Qwen/Qwen3-30B-A3B/config.json.  head_dim (24) is
        # deliberately not hidden_size / num_attention_heads (16).
        return {
            "architectures": ["Qwen3MoeForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 151643,
            "decoder_sparse_step": 1,
            "eos_token_id": 151645,
            "head_dim": 24,
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.02,
            "intermediate_size": 96,
            "max_position_embeddings": 256,
            "max_window_layers": 3,
            "mlp_only_layers": [],
            "model_type": "qwen3_moe",
            "moe_intermediate_size": 40,
            "norm_topk_prob": True,
            "num_attention_heads": 4,
            "num_experts": 8,
            "num_experts_per_tok": 3,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "output_router_logits": False,
            "rms_norm_eps": 1e-06,
            "rope_scaling": None,
            "rope_theta": 1000000.0,
            "router_aux_loss_coef": 0.001,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "torch_dtype": torch_dtype,
            "transformers_version": "4.51.0",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": 288,
        }
    if family == "olmoe":
        # Keys of allenai/OLMoE-1B-7B-0924/config.json.  OLMoE has no head_dim
        # key: head_dim = hidden_size / num_attention_heads.  The real model is
        # MHA; GQA here makes k_norm's width (kv_heads * head_dim) differ from
        # q_norm's (hidden_size).
        return {
            "architectures": ["OlmoeForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "clip_qkv": None,
            "eos_token_id": 50279,
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.02,
            "intermediate_size": 32,          # expert width
            "max_position_embeddings": 256,
            "model_type": "olmoe",
            "norm_topk_prob": False,
            "num_attention_heads": 4,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "num_hidden_layers": 2,
            "num_key_value_heads": 2,
            "output_router_logits": False,
            "pad_token_id": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": None,
            "rope_theta": 10000.0,
            "router_aux_loss_coef": 0.01,
            "tie_word_embeddings": False,
            "torch_dtype": torch_dtype,
            "transformers_version": "4.45.0.dev0",
            "use_cache": True,
            "vocab_size": 272,
        }
    if family == "deepseek_v2":
        # Key set of deepseek-ai/DeepSeek-V2-Lite(-Chat)/config.json: no q LoRA,
        # softmax scoring, greedy top-k, 2 shared experts, one dense first
        # layer, YaRN.  Tiny sizes; v_head_dim (24) != qk_nope_head_dim (16)
        # so the two cannot be confused; routed_scaling_factor 1.5 (1.0 in
        # V2-Lite) so that forgetting it shows; rope_scaling as V2-Lite
        # (mscale == mscale_all_dim = 0.707: cos/sin unscaled, softmax scale
        # x mscale^2) but factor 4 with original_max_position_embeddings 64
        # (= max_position_embeddings / factor, as in the real config) so the
        # YaRN ramp covers the tiny rope dimension.
        return {
            "architectures": ["DeepseekV2ForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "auto_map": {
                "AutoConfig": "configuration_deepseek.DeepseekV2Config",
                "AutoModel": "modeling_deepseek.DeepseekV2Model",
                "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM",
            },
            "aux_loss_alpha": 0.001,
            "bos_token_id": 100000,
            "eos_token_id": 100001,
            "ep_size": 1,
            "first_k_dense_replace": 1,
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.02,
            "intermediate_size": 96,          # dense MLP (layer 0)
            "kv_lora_rank": 32,
            "max_position_embeddings": 256,
            "model_type": "deepseek_v2",
            "moe_intermediate_size": 24,      # routed expert width
            "moe_layer_freq": 1,
            "n_group": 1,
            "n_routed_experts": 12,
            "n_shared_experts": 2,            # shared MLP width 2 * 24
            "norm_topk_prob": False,
            "num_attention_heads": 4,
            "num_experts_per_tok": 3,
            "num_hidden_layers": 3,
            "num_key_value_heads": 4,
            "pretraining_tp": 1,
            "q_lora_rank": None,
            "qk_nope_head_dim": 16,
            "qk_rope_head_dim": 8,
            "rms_norm_eps": 1e-06,
            "rope_scaling": {
                "beta_fast": 32,
                "beta_slow": 1,
                "factor": 4,
                "mscale": 0.707,
                "mscale_all_dim": 0.707,
                "original_max_position_embeddings": 64,
                "type": "yarn",
            },
            "rope_theta": 10000,
            "routed_scaling_factor": 1.5,
            "scoring_func": "softmax",
            "seq_aux": True,
            "tie_word_embeddings": False,
            "topk_group": 1,
            "topk_method": "greedy",
            "torch_dtype": torch_dtype,
            "transformers_version": "4.33.1",
            "use_cache": True,
            "v_head_dim": 24,
            "vocab_size": 264,
        }
    if family == "deepseek_v3":
        # Every key of deepseek-ai/DeepSeek-V3/config.json.  Tiny sizes;
        # intermediate_size 160 > 128 so the dense MLP's scales have two
        # blocks along one axis; mscale_all_dim 0.707 != mscale 1.0 so that
        # cos/sin are scaled (by mscale(4, 1.0) / mscale(4, 0.707)) and the
        # softmax scale by mscale(4, 0.707)^2.
        return {
            "architectures": ["DeepseekV3ForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "auto_map": {
                "AutoConfig": "configuration_deepseek.DeepseekV3Config",
                "AutoModel": "modeling_deepseek.DeepseekV3Model",
                "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
            },
            "bos_token_id": 0,
            "eos_token_id": 1,
            "ep_size": 1,
            "first_k_dense_replace": 1,
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.02,
            "intermediate_size": 160,         # dense MLP (layer 0)
            "kv_lora_rank": 32,
            "max_position_embeddings": 256,
            "model_type": "deepseek_v3",
            "moe_intermediate_size": 32,
            "moe_layer_freq": 1,
            "n_group": 4,
            "n_routed_experts": 16,
            "n_shared_experts": 1,
            "norm_topk_prob": True,
            "num_attention_heads": 4,
            "num_experts_per_tok": 4,
            "num_hidden_layers": 3,
            "num_key_value_heads": 4,
            "num_nextn_predict_layers": 1,
            "q_lora_rank": 48,
            "qk_nope_head_dim": 16,
            "qk_rope_head_dim": 8,
            "quantization_config": {
                "activation_scheme": "dynamic",
                "fmt": "e4m3",
                "quant_method": "fp8",
                "weight_block_size": [128, 128],
            },
            "rms_norm_eps": 1e-06,
            "rope_scaling": {
                "beta_fast": 32,
                "beta_slow": 1,
                "factor": 4,
                "mscale": 1.0,
                "mscale_all_dim": 0.707,
                "original_max_position_embeddings": 64,
                "type": "yarn",
            },
            "rope_theta": 10000,
            "routed_scaling_factor": 2.5,
            "scoring_func": "sigmoid",
            "tie_word_embeddings": False,
            "topk_group": 2,
            "topk_method": "noaux_tc",
            "torch_dtype": torch_dtype,
            "transformers_version": "4.46.3",
            "use_cache": True,
            "v_head_dim": 16,
            "vocab_size": 256,
        }
    raise ValueError(f"unknown family {family!r}")


# --------------------------------------------------------------------------
# Tensor list (names and shapes) and random values
# --------------------------------------------------------------------------

def is_sparse_layer(cfg, layer):
    """Qwen2-MoE / Qwen3-MoE rule for a sparse (MoE) layer vs a dense MLP."""
    return (layer not in cfg.get("mlp_only_layers", [])
            and cfg["num_experts"] > 0
            and (layer + 1) % cfg.get("decoder_sparse_step", 1) == 0)


def tensor_specs(family, cfg):
    """[(name, shape, kind)] for every tensor of the checkpoint, in model order.

    kind picks the random distribution: "embed", "linear", "norm", "bias",
    "router", "shared_gate" or "qk" (q/k projections, a bit larger so the
    attention pattern is far from uniform).
    """
    if family in DEEPSEEK_FAMILIES:
        return deepseek_tensor_specs(cfg)
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    V = cfg["vocab_size"]
    specs = [("model.embed_tokens.weight", (V, H), "embed")]

    def mlp(prefix, names, width):
        gate, up, down = names
        return [(f"{prefix}.{gate}.weight", (width, H), "linear"),
                (f"{prefix}.{up}.weight", (width, H), "linear"),
                (f"{prefix}.{down}.weight", (H, width), "linear")]

    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        specs.append((f"{p}.input_layernorm.weight", (H,), "norm"))
        specs += [(f"{a}.q_proj.weight", (nh * hd, H), "qk"),
                  (f"{a}.k_proj.weight", (nkv * hd, H), "qk"),
                  (f"{a}.v_proj.weight", (nkv * hd, H), "linear")]
        if family == "qwen2_moe":
            specs += [(f"{a}.q_proj.bias", (nh * hd,), "bias"),
                      (f"{a}.k_proj.bias", (nkv * hd,), "bias"),
                      (f"{a}.v_proj.bias", (nkv * hd,), "bias")]
        specs.append((f"{a}.o_proj.weight", (H, nh * hd), "linear"))
        if family == "qwen3_moe":      # per-head norms
            specs += [(f"{a}.q_norm.weight", (hd,), "norm"),
                      (f"{a}.k_norm.weight", (hd,), "norm")]
        if family == "olmoe":          # norms over the whole projection
            specs += [(f"{a}.q_norm.weight", (nh * hd,), "norm"),
                      (f"{a}.k_norm.weight", (nkv * hd,), "norm")]
        specs.append((f"{p}.post_attention_layernorm.weight", (H,), "norm"))

        if family == "mixtral":
            m = f"{p}.block_sparse_moe"
            specs.append((f"{m}.gate.weight", (cfg["num_local_experts"], H), "router"))
            for e in range(cfg["num_local_experts"]):
                specs += mlp(f"{m}.experts.{e}", ("w1", "w3", "w2"),
                             cfg["intermediate_size"])
            continue

        m = f"{p}.mlp"
        gate_up_down = ("gate_proj", "up_proj", "down_proj")
        if family in ("qwen2_moe", "qwen3_moe") and not is_sparse_layer(cfg, i):
            specs += mlp(m, gate_up_down, cfg["intermediate_size"])
            continue
        width = cfg["intermediate_size"] if family == "olmoe" else cfg["moe_intermediate_size"]
        specs.append((f"{m}.gate.weight", (cfg["num_experts"], H), "router"))
        for e in range(cfg["num_experts"]):
            specs += mlp(f"{m}.experts.{e}", gate_up_down, width)
        if family == "qwen2_moe":
            specs += mlp(f"{m}.shared_expert", gate_up_down,
                         cfg["shared_expert_intermediate_size"])
            specs.append((f"{m}.shared_expert_gate.weight", (1, H), "shared_gate"))

    specs.append(("model.norm.weight", (H,), "norm"))
    specs.append(("lm_head.weight", (V, H), "lm_head"))
    return specs


def random_tensor(rng, shape, kind):
    """Values scaled so activations stay O(1) and decisions are well separated.

    Linear layers get std 1/sqrt(fan_in) (unit-variance outputs); norm weights
    are 1 +- 0.1 so that a missing or misplaced norm weight shows; router rows
    give logits of std ~2, so top-k choices are clear but the top-k weights do
    not sum to ~1 (renormalizing or not matters); lm_head gives logits of
    std ~3 so greedy choices are clear.
    """
    fan_in = shape[-1]
    if kind == "embed":
        return rng.standard_normal(shape)
    if kind == "norm":
        return 1.0 + 0.1 * rng.uniform(-1.0, 1.0, shape)
    if kind == "bias":
        return 0.3 * rng.standard_normal(shape)
    scale = {"linear": 1.0, "qk": 1.5, "router": 2.0, "shared_gate": 1.0,
             "lm_head": 3.0}[kind]
    return rng.standard_normal(shape) * (scale / np.sqrt(fan_in))


def make_tensors(family, cfg, seed):
    """{name: float32 array} of seeded random weights, in model order.

    DeepSeek-V3 (quantization_config fp8): FP8 weights are uint8 arrays of
    e4m3fn codes, each followed by its float32 "<name>_scale_inv"."""
    if family in DEEPSEEK_FAMILIES:
        return make_deepseek_tensors(cfg, seed)
    rng = np.random.default_rng(seed)
    return {name: random_tensor(rng, shape, kind).astype(np.float32)
            for name, shape, kind in tensor_specs(family, cfg)}


# --------------------------------------------------------------------------
# DeepSeek-V2 / V3
# --------------------------------------------------------------------------

def deepseek_is_moe_layer(cfg, layer):
    """DeepseekV2/V3DecoderLayer (DeepSeek's modeling_deepseek.py): MoE block
    iff n_routed_experts and layer >= first_k_dense_replace and
    layer % moe_layer_freq == 0, else a dense MLP of intermediate_size."""
    return (cfg.get("n_routed_experts") is not None
            and layer >= cfg.get("first_k_dense_replace", 0)
            and layer % cfg.get("moe_layer_freq", 1) == 0)


def deepseek_layer_specs(cfg, i):
    """[(name, shape, kind)] of decoder layer i (also used for the MTP layer)."""
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kvr, qr = cfg["kv_lora_rank"], cfg.get("q_lora_rank")
    p = f"model.layers.{i}"
    a = f"{p}.self_attn"
    specs = [(f"{p}.input_layernorm.weight", (H,), "norm")]
    if qr is None:
        specs.append((f"{a}.q_proj.weight", (nh * (nope + rope), H), "qk"))
    else:
        specs += [(f"{a}.q_a_proj.weight", (qr, H), "linear"),
                  (f"{a}.q_a_layernorm.weight", (qr,), "norm"),
                  (f"{a}.q_b_proj.weight", (nh * (nope + rope), qr), "qk")]
    specs += [(f"{a}.kv_a_proj_with_mqa.weight", (kvr + rope, H), "qk"),
              (f"{a}.kv_a_layernorm.weight", (kvr,), "norm"),
              (f"{a}.kv_b_proj.weight", (nh * (nope + vd), kvr), "qk"),
              (f"{a}.o_proj.weight", (H, nh * vd), "linear"),
              (f"{p}.post_attention_layernorm.weight", (H,), "norm")]

    def mlp(prefix, width):
        return [(f"{prefix}.gate_proj.weight", (width, H), "linear"),
                (f"{prefix}.up_proj.weight", (width, H), "linear"),
                (f"{prefix}.down_proj.weight", (H, width), "linear")]

    m = f"{p}.mlp"
    if not deepseek_is_moe_layer(cfg, i):
        return specs + mlp(m, cfg["intermediate_size"])
    E = cfg["n_routed_experts"]
    specs.append((f"{m}.gate.weight", (E, H), "router"))
    if cfg.get("topk_method") == "noaux_tc":
        specs.append((f"{m}.gate.e_score_correction_bias", (E,), "score_bias"))
    for e in range(E):
        specs += mlp(f"{m}.experts.{e}", cfg["moe_intermediate_size"])
    if cfg.get("n_shared_experts"):
        specs += mlp(f"{m}.shared_experts",
                     cfg["moe_intermediate_size"] * cfg["n_shared_experts"])
    return specs


def deepseek_mtp_specs(cfg, i):
    """The multi-token-prediction layer model.layers.{i}.* of DeepSeek-V3
    (README_WEIGHTS.md): embed_tokens, enorm, hnorm, eh_proj [H, 2H],
    shared_head.norm / shared_head.head, and a full decoder layer."""
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    p = f"model.layers.{i}"
    specs = [(f"{p}.embed_tokens.weight", (V, H), "embed"),
             (f"{p}.enorm.weight", (H,), "norm"),
             (f"{p}.hnorm.weight", (H,), "norm"),
             (f"{p}.eh_proj.weight", (H, 2 * H), "linear")]
    specs += deepseek_layer_specs(cfg, i)
    specs += [(f"{p}.shared_head.norm.weight", (H,), "norm"),
              (f"{p}.shared_head.head.weight", (V, H), "lm_head")]
    return specs


def deepseek_tensor_specs(cfg):
    """[(name, shape, kind)] of a DeepSeek-V2/V3 checkpoint (weights only,
    before FP8 quantization adds the *_scale_inv companions)."""
    H, V, n = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    specs = [("model.embed_tokens.weight", (V, H), "embed")]
    for i in range(n):
        specs += deepseek_layer_specs(cfg, i)
    specs.append(("model.norm.weight", (H,), "norm"))
    specs.append(("lm_head.weight", (V, H), "lm_head"))
    for j in range(cfg.get("num_nextn_predict_layers", 0)):
        specs += deepseek_mtp_specs(cfg, n + j)
    return specs


def is_fp8_weight(name, shape):
    """True for the tensors DeepSeek-V3 ships as F8_E4M3 with a
    weight_scale_inv: the 2-D "*_proj.weight" and kv_a_proj_with_mqa.weight
    of attention and MLPs (dense,
    routed and shared experts), not the MTP eh_proj (BF16 in the real index),
    not embeddings, norms, the router gate or lm_head."""
    return (len(shape) == 2
            and name.endswith(("_proj.weight", ".kv_a_proj_with_mqa.weight"))
            and not name.endswith(".eh_proj.weight"))


# e4m3fn: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; exponent
# field 0 is subnormal (m/8 * 2^-6); no infinities; only S.1111.111 is NaN;
# largest finite 0x7E = 1.75 * 2^8 = 448.
def _e4m3_table():
    """Float64 values of the codes 0x00..0x7E (non-negative, increasing)."""
    codes = np.arange(0x7F)
    e, m = codes >> 3, codes & 7
    return np.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * 2.0 ** (e - 7.0))


E4M3_POS = _e4m3_table()
E4M3_MAX = 448.0


def fp8_e4m3_encode(x):
    """float array -> uint8 e4m3fn codes, round to nearest, ties to even
    (the even code), saturating to +-448 (values are pre-scaled so that
    |x| <= 448 anyway); -0.0 and tiny negatives give 0x80."""
    x = np.asarray(x, dtype=np.float64)
    a = np.minimum(np.abs(x), E4M3_MAX)
    hi = np.clip(np.searchsorted(E4M3_POS, a, side="left"), 0, len(E4M3_POS) - 1)
    lo = np.maximum(hi - 1, 0)
    dlo, dhi = a - E4M3_POS[lo], E4M3_POS[hi] - a
    code = np.where(dlo < dhi, lo, hi)
    tie = dlo == dhi
    code = np.where(tie, np.where(lo % 2 == 0, lo, hi), code)
    sign = np.signbit(x).astype(np.int64) << 7
    return (code | sign).astype(np.uint8)


def fp8_e4m3_decode(codes):
    """uint8 e4m3fn codes -> float64 values (NaN for 0x7F / 0xFF)."""
    c = np.asarray(codes, dtype=np.int64)
    mag = c & 0x7F
    v = np.where(mag == 0x7F, np.nan, E4M3_POS[np.minimum(mag, 0x7E)])
    return np.where(c & 0x80, -v, v)


def fp8_block_quantize(w, block):
    """(e4m3 codes uint8, scale_inv float32 [ceil(out/bo), ceil(in/bi)]) with
    w ~= decode(codes) * scale_inv[block]; each block's amax maps to 448."""
    bo, bi = block
    out, inn = w.shape
    so, si = -(-out // bo), -(-inn // bi)
    scale = np.empty((so, si), dtype=np.float32)
    codes = np.empty(w.shape, dtype=np.uint8)
    for r in range(so):
        for c in range(si):
            blk = w[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi].astype(np.float64)
            amax = float(np.max(np.abs(blk)))
            s = np.float32(amax / E4M3_MAX if amax > 0 else 1.0)
            scale[r, c] = s
            codes[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi] = fp8_e4m3_encode(blk / float(s))
    return codes, scale


def fp8_block_dequantize(codes, scale, block):
    """float64 weights of (codes, scale_inv): decode(codes) * scale_inv[block]."""
    bo, bi = block
    s = np.repeat(np.repeat(scale.astype(np.float64), bo, axis=0), bi, axis=1)
    return fp8_e4m3_decode(codes) * s[:codes.shape[0], :codes.shape[1]]


def make_deepseek_tensors(cfg, seed):
    """{name: array}: float32 weights; with quantization_config (V3) the FP8
    weights as uint8 e4m3 codes each followed by "<name>_scale_inv"."""
    rng = np.random.default_rng(seed)
    qc = cfg.get("quantization_config")
    block = tuple(qc["weight_block_size"]) if qc else None
    out = {}
    for name, shape, kind in deepseek_tensor_specs(cfg):
        if kind == "score_bias":
            # e_score_correction_bias: non-negative (so that masking the
            # unchosen groups with 0.0, as the HF modeling code does, or with
            # -inf, as DeepSeek's inference/model.py does, agree) and large
            # enough against sigmoid scores in (0, 1) to change choices.
            x = rng.uniform(0.0, 0.4, shape)
        else:
            x = random_tensor(rng, shape, kind)
        x = x.astype(np.float32)
        if block and is_fp8_weight(name, shape):
            codes, scale = fp8_block_quantize(x, block)
            out[name] = codes
            out[name + "_scale_inv"] = scale
        else:
            out[name] = x
    return out


# Tensors stored as F32 whatever --dtype says (as in DeepSeek-V3's files).
F32_ALWAYS_SUFFIXES = (".weight_scale_inv", ".e_score_correction_bias")


def stored_dtype(name, x, dtype):
    """The --dtype choice for one tensor: "fp8" for uint8 e4m3 codes, "f32"
    for the F32_ALWAYS_SUFFIXES tensors, else dtype."""
    if x.dtype == np.uint8:
        return "fp8"
    if name.endswith(F32_ALWAYS_SUFFIXES):
        return "f32"
    return dtype


# --------------------------------------------------------------------------
# safetensors writing
# --------------------------------------------------------------------------

def f32_to_bf16_bits(x):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def encode(x, dtype):
    """(safetensors dtype string, little-endian bytes) of a float32 array."""
    if dtype == "bf16":
        return "BF16", f32_to_bf16_bits(x).astype("<u2").tobytes()
    if dtype == "fp8":
        return "F8_E4M3", np.ascontiguousarray(x, dtype=np.uint8).tobytes()
    return "F32", np.ascontiguousarray(x, dtype="<f4").tobytes()


def write_safetensors(path, tensors, dtype):
    """Write {name: float32 array} to `path` as one safetensors file."""
    header, blobs, offset = {}, [], 0
    for name, x in tensors.items():
        st_dtype, blob = encode(x, stored_dtype(name, x, dtype))
        header[name] = {"dtype": st_dtype, "shape": list(x.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    return offset


def split_shards(tensors, n, dtype):
    """Split {name: array} into n contiguous groups of about equal byte size."""
    elem = {"bf16": 2, "f32": 4, "fp8": 1}
    sizes = [x.size * elem[stored_dtype(name, x, dtype)] for name, x in tensors.items()]
    total = sum(sizes)
    groups = [dict() for _ in range(n)]
    done = 0
    for (name, x), size in zip(tensors.items(), sizes):
        k = min(n - 1, done * n // total)
        groups[k][name] = x
        done += size
    if any(not g for g in groups):
        raise ValueError(f"cannot split {len(tensors)} tensors into {n} non-empty shards")
    return groups


def write_checkpoint(out_dir, family, dtype, shards=1, seed=0):
    """Write config.json and the weights of a tiny `family` model to out_dir."""
    cfg = make_config(family, dtype)
    tensors = make_tensors(family, cfg, seed)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, dtype)
        return cfg
    weight_map, total = {}, 0
    for k, group in enumerate(split_shards(tensors, shards, dtype), start=1):
        fname = f"model-{k:05d}-of-{shards:05d}.safetensors"
        total += write_safetensors(os.path.join(out_dir, fname), group, dtype)
        weight_map.update({name: fname for name in group})
    index = {"metadata": {"total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", required=True, choices=FAMILIES)
    ap.add_argument("--dtype", default="f32", choices=("f32", "bf16"))
    ap.add_argument("--shards", type=int, default=1,
                    help="N >= 2 writes N shard files plus model.safetensors.index.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", required=True, help="output directory")
    args = ap.parse_args(argv)
    if args.shards < 1:
        ap.error("--shards must be >= 1")
    write_checkpoint(args.out, args.family, args.dtype, args.shards, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
