#!/usr/bin/python3
"""Write a tiny, seeded-random Hugging Face MoE checkpoint for tests.

    gen_checkpoint.py --family {mixtral,qwen2_moe,qwen3_moe,olmoe}
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
Tensor names follow the real checkpoints (per-expert tensors, not fused);
Mixtral's were checked against its real model.safetensors.index.json, the
others against the module names in transformers' modeling_*.py.

numpy only: safetensors is written by hand (u64 little-endian header length,
JSON header padded with spaces to a multiple of 8, raw little-endian data).
"""

import argparse
import json
import os
import sys

import numpy as np

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")


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
    """{name: float32 array} of seeded random weights, in model order."""
    rng = np.random.default_rng(seed)
    return {name: random_tensor(rng, shape, kind).astype(np.float32)
            for name, shape, kind in tensor_specs(family, cfg)}


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
    return "F32", np.ascontiguousarray(x, dtype="<f4").tobytes()


def write_safetensors(path, tensors, dtype):
    """Write {name: float32 array} to `path` as one safetensors file."""
    header, blobs, offset = {}, [], 0
    for name, x in tensors.items():
        st_dtype, blob = encode(x, dtype)
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
    elem = 2 if dtype == "bf16" else 4
    sizes = [x.size * elem for x in tensors.values()]
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
