#!/usr/bin/python3
"""Self-checks of the DeepSeek-V2/V3 parts of tests/gen_checkpoint.py and
tests/reference/reference.py (no moe binaries needed).

    test_reference_deepseek.py [--workdir DIR]

1. Routing on crafted scores (numpy, always run): V3 group limits exclude
   the right experts (group score = sum of the top-2 biased scores, not the
   max), the correction bias changes the choice but not the weights,
   norm_topk_prob / routed_scaling_factor as DeepSeek's code applies them,
   V2 greedy and group_limited_greedy (group score = max), and route_v3 /
   route_v2 against a loop-by-loop re-implementation on random scores.
2. FP8 e4m3fn: the generator's encoder/decoder against the reference's
   decoder on all 256 codes, exact round trip, ties to even, saturation,
   block scales of shape [ceil(out/128), ceil(in/128)] with >1 block.
3. The generated checkpoints: config keys = the real DeepSeek-V3
   config.json's (when ../shared/model-meta is there), FP8 / F32 / BF16
   tensors where DeepSeek-V3 has them, the MTP layer present and not run,
   the correction bias changing real routing decisions, and plausible runtime
   bugs moving the logits by more than the bf16 tolerance.
4. PyTorch (skipped with a message when torch is missing): an independent
   torch re-implementation written after DeepSeek's modeling_deepseek.py
   (de-interleave + rotate_half RoPE, YaRN cos/sin cache, MoEGate with 0.0
   masking, ...), loading the same safetensors files with its own parser and
   FP8 decoder, must give the reference's logits within 1e-6 relative.

Prints one line per check and ends with "N passed, M failed"; exits non-zero
if any check failed.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "reference"))
import gen_checkpoint as G  # noqa: E402
import reference as R       # noqa: E402
from test_families import apply_mutants, swapped  # noqa: E402

V3_META = os.path.join(HERE, "..", "..", "shared", "model-meta",
                       "deepseek-ai--DeepSeek-V3", "config.json")
SEEDS = {"deepseek_v2": 2, "deepseek_v3": 54}     # no near-tie decisions (margins >= 3e-3)
TOL_TORCH = 1e-6
PROMPT = 24


class Tally:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, what, detail=""):
        print(("PASS " if ok else "FAIL ") + what + (f": {detail}" if detail else ""), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


# --------------------------------------------------------------------------
# 1. Routing
# --------------------------------------------------------------------------

def loop_route_v3(s, b, G_, TG, k, norm, scale):
    """Plain-Python noaux_tc for one token (independent of route_v3)."""
    E = len(s)
    c = [s[e] + b[e] for e in range(E)]
    n = E // G_
    gs = [sum(sorted(c[g * n:(g + 1) * n])[-2:]) for g in range(G_)]
    groups = sorted(range(G_), key=lambda g: -gs[g])[:TG]
    allowed = [e for e in range(E) if e // n in groups]
    chosen = sorted(allowed, key=lambda e: -c[e])[:k]
    w = [s[e] for e in chosen]
    if norm and k > 1:
        t = sum(w)
        w = [x / t for x in w]
    return chosen, [x * scale for x in w]


def loop_route_v2(s, k, method, G_, TG, norm, scale):
    E = len(s)
    allowed = list(range(E))
    if method == "group_limited_greedy":
        n = E // G_
        gs = [max(s[g * n:(g + 1) * n]) for g in range(G_)]
        groups = sorted(range(G_), key=lambda g: -gs[g])[:TG]
        allowed = [e for e in range(E) if e // n in groups]
    chosen = sorted(allowed, key=lambda e: -s[e])[:k]
    w = [s[e] for e in chosen]
    if norm and k > 1:
        t = sum(w)
        return chosen, [x / t for x in w]
    return chosen, [x * scale for x in w]


def routing_checks(t):
    # 16 experts in 4 groups of 4, keep 2 groups, top-4.  Expert 0 has the
    # single best score but its group's top-2 sum is the lowest: excluded.
    s = np.array([0.95, 0.05, 0.04, 0.03,     # g0: max .95, top2 1.00
                  0.60, 0.58, 0.10, 0.11,     # g1: top2 1.18
                  0.57, 0.56, 0.20, 0.21,     # g2: top2 1.13
                  0.50, 0.52, 0.02, 0.01])    # g3: top2 1.02
    zero = np.zeros(16)
    idx, w = R.route_v3(s, zero, 4, 2, 4, True, 2.5)
    t.check(sorted(idx[0]) == [4, 5, 8, 9], "route_v3: group limit excludes the best single expert",
            f"chosen {sorted(idx[0].tolist())}")
    t.check(abs(w.sum() - 2.5) < 1e-12, "route_v3: normalized weights x 2.5 sum to 2.5")
    idx_all, _ = R.route_v3(s, zero, 4, 4, 4, True, 1.0)
    t.check(0 in idx_all[0], "route_v3: with topk_group = n_group expert 0 is chosen")
    # V2 group_limited_greedy scores groups by their max: group 0 survives.
    idx2, _ = R.route_v2(s, 4, "group_limited_greedy", 4, 2, False, 1.0)
    # groups by max: g0 .95, g1 .60 kept; top-4 of experts 0..7: 0, 4, 5, 7.
    t.check(sorted(idx2[0]) == [0, 4, 5, 7],
            "route_v2 group_limited_greedy: group score is the max (expert 0 kept, groups 0, 1)",
            f"chosen {sorted(idx2[0].tolist())}")

    # Correction bias: changes the choice, not the weights.
    s2 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    b2 = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.55])   # expert 7: .75 > .7 (expert 2)
    i0, w0 = R.route_v3(s2, np.zeros(8), 1, 1, 3, False, 1.0)
    i1, w1 = R.route_v3(s2, b2, 1, 1, 3, False, 1.0)
    t.check(sorted(i0[0]) == [0, 1, 2] and sorted(i1[0]) == [0, 1, 7],
            "route_v3: bias changes the choice", f"{sorted(i0[0].tolist())} -> {sorted(i1[0].tolist())}")
    t.check(np.allclose(np.sort(w1[0]), np.sort(s2[[0, 1, 7]])),
            "route_v3: weights are the unbiased scores", f"{w1[0]}")
    b3 = np.full(8, 0.3)          # uniform bias: same choice, same weights
    i3, w3 = R.route_v3(s2, b3, 1, 1, 3, True, 2.5)
    i4, w4 = R.route_v3(s2, np.zeros(8), 1, 1, 3, True, 2.5)
    t.check(np.array_equal(i3, i4) and np.allclose(w3, w4),
            "route_v3: a uniform bias changes nothing")
    i5, w5 = R.route_v3(s2, b2 * 1.5, 1, 1, 3, True, 2.5)
    t.check(np.array_equal(np.sort(i5[0]), np.sort(i1[0])) and
            np.allclose(np.sort(w5[0]), np.sort(s2[[0, 1, 7]] / s2[[0, 1, 7]].sum() * 2.5)),
            "route_v3: weights independent of the bias size (normalized x 2.5)")
    # Bias inside groups: it can move a whole group in or out.
    s6 = np.array([0.9, 0.8, 0.1, 0.1, 0.7, 0.6, 0.1, 0.1, 0.3, 0.3, 0.1, 0.1])
    b6 = np.zeros(12)
    b6[8:10] = 0.7                 # group 2: .3+.7 twice = 2.0 > g0 1.7 > g1 1.3
    i6, _ = R.route_v3(s6, np.zeros(12), 3, 2, 2, True, 1.0)
    i7, w7 = R.route_v3(s6, b6, 3, 2, 2, True, 1.0)
    t.check(sorted(i6[0]) == [0, 1] and sorted(i7[0]) == [8, 9] and np.allclose(w7, 0.5),
            "route_v3: bias promotes a group; weights from unbiased scores",
            f"{sorted(i6[0].tolist())} -> {sorted(i7[0].tolist())}, w {w7[0]}")

    # V2 weight post-processing ([DS] MoEGate).
    p = R.softmax(np.array([2.0, 1.0, 0.5, 0.0, -1.0, -2.0]))
    i, w = R.route_v2(p, 2, "greedy", norm=False, scale=1.5)
    t.check(sorted(i[0]) == [0, 1] and np.allclose(np.sort(w[0]), np.sort(p[[0, 1]] * 1.5)),
            "route_v2 greedy, norm false: softmax top-k x routed_scaling_factor")
    i, w = R.route_v2(p, 2, "greedy", norm=True, scale=1.5)
    t.check(abs(w.sum() - 1.0) < 1e-12, "route_v2 greedy, norm true: sums to 1, no scaling factor")
    i, w = R.route_v2(p, 1, "greedy", norm=True, scale=1.5)
    t.check(np.allclose(w[0], p[0] * 1.5), "route_v2 top-1 with norm true: not normalized, scaled")

    # Against the loop re-implementations on random scores.
    rng = np.random.default_rng(5)
    bad = 0
    for _ in range(300):
        s = 1 / (1 + np.exp(-rng.standard_normal(16) * 2))
        b = rng.uniform(0, 0.4, 16)
        norm = bool(rng.integers(2))
        k = int(rng.integers(1, 7))
        idx, w = R.route_v3(s, b, 4, 2, k, norm, 2.5)
        ci, cw = loop_route_v3(list(s), list(b), 4, 2, k, norm, 2.5)
        bad += list(idx[0]) != ci or not np.allclose(w[0], cw, rtol=1e-12)
        p = R.softmax(rng.standard_normal(12) * 2)
        for method in ("greedy", "group_limited_greedy"):
            idx, w = R.route_v2(p, k, method, 3, 2, norm, 1.5)
            ci, cw = loop_route_v2(list(p), k, method, 3, 2, norm, 1.5)
            bad += list(idx[0]) != ci or not np.allclose(w[0], cw, rtol=1e-12)
    t.check(bad == 0, "route_v3 / route_v2 = loop re-implementations on 900 random cases",
            f"{bad} mismatches")


# --------------------------------------------------------------------------
# 2. FP8
# --------------------------------------------------------------------------

def fp8_checks(t):
    codes = np.arange(256, dtype=np.uint8)
    g = G.fp8_e4m3_decode(codes)
    r = R.fp8_e4m3fn_to_float(codes)
    same = np.array_equal(np.isnan(g), np.isnan(r)) and np.array_equal(g[~np.isnan(g)], r[~np.isnan(r)])
    t.check(same and np.isnan(g).sum() == 2 and np.nanmax(g) == 448.0 and np.nanmin(np.abs(g[g != 0])) == 2.0 ** -9,
            "e4m3fn decoders agree on 256 codes (2 NaN, max 448, min subnormal 2^-9)")
    finite = codes[~np.isnan(g)]
    rt = G.fp8_e4m3_encode(g[~np.isnan(g)])
    # +0 and -0 both decode to 0; -0.0 encodes to 0x80.
    t.check(np.array_equal(rt, finite), "e4m3fn encode(decode(c)) == c for all finite codes")
    pos = G.E4M3_POS
    mids = (pos[:-1] + pos[1:]) / 2
    enc = G.fp8_e4m3_encode(mids).astype(int)
    even = np.where(np.arange(len(mids)) % 2 == 0, np.arange(len(mids)), np.arange(len(mids)) + 1)
    t.check(np.array_equal(enc, even), "e4m3fn midpoints round to the even code")
    near = G.fp8_e4m3_decode(G.fp8_e4m3_encode(mids * (1 + 1e-9)))
    t.check(np.array_equal(near, pos[1:]), "e4m3fn just above a midpoint rounds up")
    t.check(G.fp8_e4m3_decode(G.fp8_e4m3_encode(np.array([460.0, 1e6, -1e6]))).tolist() == [448.0, 448.0, -448.0],
            "e4m3fn saturates to +-448")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((300, 200)).astype(np.float32)
    w[:128, :128] *= 1e-3           # blocks with very different ranges
    c, s = G.fp8_block_quantize(w, (128, 128))
    dq = R.fp8_block_dequant(R.fp8_e4m3fn_to_float(c), s.astype(np.float64), (128, 128))
    rel = np.abs(dq - w) / np.maximum(np.abs(w), 1e-30)
    big = np.abs(w) >= s.repeat(128, 0).repeat(128, 1)[:300, :200] * 2.0 ** -6
    t.check(s.shape == (3, 2) and s.dtype == np.float32 and float(rel[big].max()) <= 2.0 ** -4 + 1e-9,
            "block quantize/dequantize: scales [3, 2], normal-range rel err <= 2^-4",
            f"max rel err {rel[big].max():.4f}")


# --------------------------------------------------------------------------
# 3. The generated checkpoints
# --------------------------------------------------------------------------

def read_header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def checkpoint_checks(t, work):
    cfg3 = G.make_config("deepseek_v3", "bf16")
    if os.path.exists(V3_META):
        with open(V3_META) as f:
            real = json.load(f)
        t.check(set(real) == set(cfg3) and set(real["rope_scaling"]) == set(cfg3["rope_scaling"])
                and real["quantization_config"] == cfg3["quantization_config"],
                "deepseek_v3 config: key set = real DeepSeek-V3 config.json",
                f"missing {sorted(set(real) - set(cfg3))}, extra {sorted(set(cfg3) - set(real))}")
    else:
        print(f"SKIP deepseek_v3 config key set: {V3_META} not present")
    hf3 = os.path.join(work, "v3-bf16")
    G.write_checkpoint(hf3, "deepseek_v3", "bf16", 1, SEEDS["deepseek_v3"])
    hdr = read_header(os.path.join(hf3, "model.safetensors"))
    hdr.pop("__metadata__")
    fp8 = sorted(k for k, v in hdr.items() if v["dtype"] == "F8_E4M3")
    scales = sorted(k for k in hdr if k.endswith("_scale_inv"))
    ok = (scales == sorted(k + "_scale_inv" for k in fp8)
          and all(hdr[k]["dtype"] == "F32" for k in scales)
          and all(hdr[k + "_scale_inv"]["shape"] == [-(-hdr[k]["shape"][0] // 128), -(-hdr[k]["shape"][1] // 128)]
                  for k in fp8))
    kinds = {k.split(".")[-2] if "experts" not in k else "experts." + k.split(".")[-2] for k in fp8}
    t.check(ok, "v3: every F8_E4M3 tensor has an F32 weight_scale_inv [ceil(out/128), ceil(in/128)]",
            f"{len(fp8)} FP8 tensors: {sorted(kinds)}")
    per_layer = {".".join(k.split(".")[3:]) if ".experts." not in k else
                 "mlp.experts.E." + k.split(".")[-2] + ".weight" for k in fp8}
    want_fp8 = {f"self_attn.{x}.weight" for x in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa",
                                                  "kv_b_proj", "o_proj")}
    want_fp8 |= {f"mlp.{p}{x}.weight" for p in ("", "experts.E.", "shared_experts.")
                 for x in ("gate_proj", "up_proj", "down_proj")}
    t.check(per_layer == want_fp8, "v3: FP8 = attention q_a/q_b/kv_a_proj_with_mqa/kv_b/o, dense, routed "
            "and shared expert projections", f"missing {sorted(want_fp8 - per_layer)}, "
            f"extra {sorted(per_layer - want_fp8)}")
    multi = [k for k in fp8 if max(hdr[k + "_scale_inv"]["shape"]) > 1]
    t.check(bool(multi), "v3: some weights have more than one scale block", ", ".join(multi[:4]))
    not_fp8 = ("embed_tokens", "norm", "lm_head", "mlp.gate.weight", "e_score_correction_bias",
               "eh_proj", "shared_head")
    t.check(not any(x in k for k in fp8 for x in not_fp8)
            and all(hdr[k]["dtype"] == "F32" for k in hdr if k.endswith("e_score_correction_bias"))
            and hdr["model.layers.1.mlp.gate.weight"]["dtype"] == "BF16"
            and hdr["lm_head.weight"]["dtype"] == "BF16",
            "v3: embeddings, norms, router, lm_head, MTP eh_proj/shared_head not FP8; bias F32")
    n = cfg3["num_hidden_layers"]
    mtp = sorted(k for k in hdr if k.startswith(f"model.layers.{n}."))
    want = {f"model.layers.{n}.{x}" for x in ("embed_tokens.weight", "enorm.weight", "hnorm.weight",
                                               "eh_proj.weight", "shared_head.norm.weight",
                                               "shared_head.head.weight",
                                               "self_attn.kv_b_proj.weight", "mlp.gate.weight")}
    t.check(want <= set(mtp), f"v3: MTP layer model.layers.{n}.* present", f"{len(mtp)} tensors")
    cfg, tensors = R.load_checkpoint(hf3)
    model = R.Model(cfg, tensors)
    t.check(isinstance(model, R.DeepseekModel) and len(model.layers) == n
            and sorted(model.mtp_tensors) == mtp, "v3: reference keeps the MTP tensors aside, runs n layers")

    # The correction bias changes routing decisions on real activations.
    rng = np.random.default_rng(SEEDS["deepseek_v3"] + 1000)
    toks = [int(x) for x in rng.integers(0, cfg["vocab_size"], PROMPT)]
    captured = []
    orig = model.route

    def spy(L, x):
        captured.append((L, x))
        return orig(L, x)
    model.route = spy
    base = model.forward(toks)
    del model.route
    changed = total = 0
    for L, x in captured:
        a, _, _, _ = model.route(L, x)
        with swapped(L, "score_bias", np.zeros_like(L["score_bias"])):
            b, _, _, _ = model.route(L, x)
        changed += sum(set(a[i]) != set(b[i]) for i in range(len(a)))
        total += len(a)
    t.check(changed >= total // 4, "v3: the correction bias changes the chosen experts",
            f"{changed} of {total} token-layer choices")

    # Plausible runtime bugs must move the logits by more than 2 x 1e-2.
    def rope_halves(x, cos, sin):
        h = x.shape[-1] // 2
        return np.concatenate([x[..., :h] * cos - x[..., h:] * sin,
                               x[..., :h] * sin + x[..., h:] * cos], axis=-1)
    for fam, m in (("deepseek_v3", model), ("deepseek_v2", None)):
        if m is None:
            hf2 = os.path.join(work, "v2-f32")
            G.write_checkpoint(hf2, fam, "f32", 1, SEEDS[fam])
            m = R.Model(*R.load_checkpoint(hf2))
            base = m.forward(toks)
        mutants = {
            "rope on halves (not interleaved pairs)": [(R, "rope_pairs", rope_halves)],
            "no softmax mscale^2": [(m, "scaling", m.head_dim ** -0.5)],
            "no YaRN (plain RoPE)": [(m, "inv_freq", 1.0 / 10000 ** (np.arange(0, m.d_rope, 2) / m.d_rope)),
                                     (m, "rope_mscale", 1.0)],
            "routed_scaling_factor ignored": [(m, "routed_scaling", 1.0)],
            "top-k renormalization flipped": [(m, "norm_topk", not m.norm_topk)],
            "no shared experts": [(L, "shared", tuple(np.zeros_like(w) for w in L["shared"]))
                                  for L in m.layers if "shared" in L],
        }
        if fam == "deepseek_v3":
            mutants["correction bias ignored"] = [(L, "score_bias", np.zeros_like(L["score_bias"]))
                                                  for L in m.layers if "score_bias" in L]
            mutants["no group limit"] = [(m, "topk_group", m.n_group)]
            mutants["no cos/sin mscale"] = [(m, "rope_mscale", 1.0)]
        eff = apply_mutants(m, toks, base, mutants)
        weakest = min(eff, key=eff.get)
        t.check(eff[weakest] > 2e-2, f"{fam}: every mutant moves the logits by > 2e-2",
                ", ".join(f"{k} {v:.3g}" for k, v in eff.items()))




# --------------------------------------------------------------------------
# 4. PyTorch re-implementation (after DeepSeek's modeling_deepseek.py)
# --------------------------------------------------------------------------

def torch_checks(t, work):
    try:
        import torch
        from torch import nn
        import torch.nn.functional as F
    except ImportError as e:
        print(f"SKIP torch comparison: PyTorch is not installed ({e})")
        return
    torch.set_num_threads(1)
    DT = torch.float64

    def load_st(path):
        """safetensors -> {name: float64 tensor}; FP8 decoded bit by bit."""
        with open(path, "rb") as f:
            data = f.read()
        n = int.from_bytes(data[:8], "little")
        hdr = json.loads(data[8:8 + n])
        out = {}
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            raw = bytearray(data[8 + n + a:8 + n + b])
            if info["dtype"] == "F32":
                x = torch.frombuffer(raw, dtype=torch.float32).to(DT)
            elif info["dtype"] == "BF16":
                x = torch.frombuffer(raw, dtype=torch.bfloat16).to(DT)
            elif info["dtype"] == "F8_E4M3":
                c = torch.frombuffer(raw, dtype=torch.uint8).to(torch.int64)
                e, m = (c >> 3) & 15, (c & 7).to(DT)
                mag = torch.where(e == 0, m / 8 * 2.0 ** -6, (1 + m / 8) * torch.pow(2.0, (e - 7).to(DT)))
                x = torch.where((c >> 7) == 1, -mag, mag)
            else:
                raise ValueError(info["dtype"])
            out[name] = x.reshape(info["shape"])
        return out

    def load_dir(d):
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        sd = load_st(os.path.join(d, "model.safetensors"))
        blk = (cfg.get("quantization_config") or {}).get("weight_block_size")
        for k in [k for k in sd if k.endswith("_scale_inv")]:
            wname = k[:-len("_scale_inv")]
            w, s = sd[wname], sd.pop(k)
            s = s.repeat_interleave(blk[0], 0).repeat_interleave(blk[1], 1)
            sd[wname] = w * s[:w.shape[0], :w.shape[1]]
        return cfg, sd

    class C:  # config as attributes
        def __init__(self, d):
            self.__dict__.update(d)

    class RMSNorm(nn.Module):
        def __init__(self, n, eps=1e-6):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n, dtype=DT))
            self.variance_epsilon = eps

        def forward(self, x):
            variance = x.pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))

    def yarn_find_correction_dim(num_rotations, dim, base, maxpos):
        return (dim * math.log(maxpos / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    def yarn_find_correction_range(lo_rot, hi_rot, dim, base, maxpos):
        low = math.floor(yarn_find_correction_dim(lo_rot, dim, base, maxpos))
        high = math.ceil(yarn_find_correction_dim(hi_rot, dim, base, maxpos))
        return max(low, 0), min(high, dim - 1)

    def yarn_get_mscale(scale=1, mscale=1):
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    def yarn_linear_ramp_mask(mn, mx, dim):
        if mn == mx:
            mx += 0.001
        return torch.clamp((torch.arange(dim, dtype=DT) - mn) / (mx - mn), 0, 1)

    class YarnRotaryEmbedding(nn.Module):
        """DeepseekV2YarnRotaryEmbedding._set_cos_sin_cache."""

        def __init__(self, dim, base, rs, seq_len):
            super().__init__()
            factor = rs["factor"]
            freq_extra = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=DT) / dim))
            freq_inter = 1.0 / (factor * base ** (torch.arange(0, dim, 2, dtype=DT) / dim))
            low, high = yarn_find_correction_range(rs.get("beta_fast", 32), rs.get("beta_slow", 1), dim, base,
                                                   rs["original_max_position_embeddings"])
            inv_freq_mask = 1.0 - yarn_linear_ramp_mask(low, high, dim // 2)
            inv_freq = freq_inter * (1 - inv_freq_mask) + freq_extra * inv_freq_mask
            t_ = torch.arange(seq_len, dtype=DT)
            freqs = torch.outer(t_, inv_freq)
            _mscale = float(yarn_get_mscale(factor, rs.get("mscale", 1))
                            / yarn_get_mscale(factor, rs.get("mscale_all_dim", 0)))
            emb = torch.cat((freqs, freqs), dim=-1)
            self.cos_cached = emb.cos() * _mscale
            self.sin_cached = emb.sin() * _mscale

    def rotate_half(x):
        x1, x2 = x[..., :x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
        cos = cos[position_ids].unsqueeze(unsqueeze_dim)
        sin = sin[position_ids].unsqueeze(unsqueeze_dim)
        b, h, s, d = q.shape
        q = q.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
        b, h, s, d = k.shape
        k = k.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
        return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)

    def Lin(i, o):
        return nn.Linear(i, o, bias=False).to(DT)

    class MLP(nn.Module):
        def __init__(self, c, intermediate_size=None):
            super().__init__()
            inter = intermediate_size or c.intermediate_size
            self.gate_proj, self.up_proj = Lin(c.hidden_size, inter), Lin(c.hidden_size, inter)
            self.down_proj = Lin(inter, c.hidden_size)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class MoEGate(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.weight = nn.Parameter(torch.empty(c.n_routed_experts, c.hidden_size, dtype=DT))
            if c.topk_method == "noaux_tc":
                self.e_score_correction_bias = nn.Parameter(torch.empty(c.n_routed_experts, dtype=DT))

        def forward(self, h):
            c = self.c
            bsz, seq_len, hd = h.shape
            h = h.view(-1, hd)
            logits = F.linear(h, self.weight)
            scores = logits.softmax(dim=-1) if c.scoring_func == "softmax" else logits.sigmoid()
            n = bsz * seq_len
            if c.topk_method == "greedy":
                topk_weight, topk_idx = torch.topk(scores, k=c.num_experts_per_tok, dim=-1, sorted=False)
            elif c.topk_method == "group_limited_greedy":
                group_scores = scores.view(n, c.n_group, -1).max(dim=-1).values
                group_idx = torch.topk(group_scores, k=c.topk_group, dim=-1, sorted=False)[1]
                group_mask = torch.zeros_like(group_scores)
                group_mask.scatter_(1, group_idx, 1)
                score_mask = group_mask.unsqueeze(-1).expand(n, c.n_group, c.n_routed_experts // c.n_group)
                tmp = scores.masked_fill(~score_mask.reshape(n, -1).bool(), 0.0)
                topk_weight, topk_idx = torch.topk(tmp, k=c.num_experts_per_tok, dim=-1, sorted=False)
            else:  # noaux_tc
                sfc = scores.view(n, -1) + self.e_score_correction_bias.unsqueeze(0)
                group_scores = sfc.view(n, c.n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
                group_idx = torch.topk(group_scores, k=c.topk_group, dim=-1, sorted=False)[1]
                group_mask = torch.zeros_like(group_scores)
                group_mask.scatter_(1, group_idx, 1)
                score_mask = group_mask.unsqueeze(-1).expand(n, c.n_group, c.n_routed_experts // c.n_group)
                tmp = sfc.masked_fill(~score_mask.reshape(n, -1).bool(), 0.0)
                _, topk_idx = torch.topk(tmp, k=c.num_experts_per_tok, dim=-1, sorted=False)
                topk_weight = scores.gather(1, topk_idx)
            if c.model_type == "deepseek_v3":
                if c.num_experts_per_tok > 1 and c.norm_topk_prob:
                    topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
                topk_weight = topk_weight * c.routed_scaling_factor
            elif c.num_experts_per_tok > 1 and c.norm_topk_prob:
                topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
            else:
                topk_weight = topk_weight * c.routed_scaling_factor
            return topk_idx, topk_weight

    class MoE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.experts = nn.ModuleList([MLP(c, c.moe_intermediate_size) for _ in range(c.n_routed_experts)])
            self.gate = MoEGate(c)
            self.shared_experts = MLP(c, c.moe_intermediate_size * c.n_shared_experts)

        def forward(self, h):
            idx, w = self.gate(h)
            x = h.view(-1, h.shape[-1])
            y = torch.zeros_like(x)
            for e, expert in enumerate(self.experts):
                tok, slot = torch.where(idx == e)
                if len(tok):
                    y.index_add_(0, tok, expert(x[tok]) * w[tok, slot, None])
            return y.view(*h.shape) + self.shared_experts(h)

    class Attention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.q_head_dim = c.qk_nope_head_dim + c.qk_rope_head_dim
            nh = c.num_attention_heads
            if c.q_lora_rank is None:
                self.q_proj = Lin(c.hidden_size, nh * self.q_head_dim)
            else:
                self.q_a_proj = Lin(c.hidden_size, c.q_lora_rank)
                self.q_a_layernorm = RMSNorm(c.q_lora_rank)
                self.q_b_proj = Lin(c.q_lora_rank, nh * self.q_head_dim)
            self.kv_a_proj_with_mqa = Lin(c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim)
            self.kv_a_layernorm = RMSNorm(c.kv_lora_rank)
            self.kv_b_proj = Lin(c.kv_lora_rank, nh * (c.qk_nope_head_dim + c.v_head_dim))
            self.o_proj = Lin(nh * c.v_head_dim, c.hidden_size)
            self.softmax_scale = self.q_head_dim ** (-0.5)
            rs = c.rope_scaling
            if rs.get("mscale_all_dim", 0):
                m = yarn_get_mscale(rs["factor"], rs["mscale_all_dim"])
                self.softmax_scale = self.softmax_scale * m * m

        def forward(self, h, rotary, position_ids):
            c = self.c
            bsz, q_len, _ = h.size()
            nh = c.num_attention_heads
            q = self.q_proj(h) if c.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(h)))
            q = q.view(bsz, q_len, nh, self.q_head_dim).transpose(1, 2)
            q_nope, q_pe = torch.split(q, [c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)
            compressed_kv = self.kv_a_proj_with_mqa(h)
            compressed_kv, k_pe = torch.split(compressed_kv, [c.kv_lora_rank, c.qk_rope_head_dim], dim=-1)
            k_pe = k_pe.view(bsz, q_len, 1, c.qk_rope_head_dim).transpose(1, 2)
            kv = self.kv_b_proj(self.kv_a_layernorm(compressed_kv))
            kv = kv.view(bsz, q_len, nh, c.qk_nope_head_dim + c.v_head_dim).transpose(1, 2)
            k_nope, value_states = torch.split(kv, [c.qk_nope_head_dim, c.v_head_dim], dim=-1)
            q_pe, k_pe = apply_rotary_pos_emb(q_pe, k_pe, rotary.cos_cached, rotary.sin_cached, position_ids)
            query_states = torch.cat([q_nope, q_pe], dim=-1)
            key_states = torch.cat([k_nope, k_pe.expand(bsz, nh, q_len, c.qk_rope_head_dim)], dim=-1)
            attn = torch.matmul(query_states, key_states.transpose(2, 3)) * self.softmax_scale
            mask = torch.full((q_len, q_len), float("-inf"), dtype=DT).triu(1)
            attn = F.softmax(attn + mask, dim=-1)
            out = torch.matmul(attn, value_states).transpose(1, 2).reshape(bsz, q_len, nh * c.v_head_dim)
            return self.o_proj(out)

    class DecoderLayer(nn.Module):
        def __init__(self, c, i):
            super().__init__()
            self.self_attn = Attention(c)
            moe = i >= c.first_k_dense_replace and i % c.moe_layer_freq == 0
            self.mlp = MoE(c) if moe else MLP(c)
            self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
            self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

        def forward(self, h, rotary, pos):
            h = h + self.self_attn(self.input_layernorm(h), rotary, pos)
            return h + self.mlp(self.post_attention_layernorm(h))

    class Inner(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size).to(DT)
            self.layers = nn.ModuleList([DecoderLayer(c, i) for i in range(c.num_hidden_layers)])
            self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    class ForCausalLM(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.model = Inner(c)
            self.lm_head = Lin(c.hidden_size, c.vocab_size)

        def forward(self, ids):
            c = self.c
            h = self.model.embed_tokens(ids)
            rotary = YarnRotaryEmbedding(c.qk_rope_head_dim, c.rope_theta, c.rope_scaling, ids.shape[1])
            pos = torch.arange(ids.shape[1]).unsqueeze(0)
            for layer in self.model.layers:
                h = layer(h, rotary, pos)
            return self.lm_head(self.model.norm(h))

    for fam, dtype in (("deepseek_v2", "f32"), ("deepseek_v3", "f32"), ("deepseek_v3", "bf16")):
        hf = os.path.join(work, f"torch-{fam}-{dtype}")
        G.write_checkpoint(hf, fam, dtype, 1, SEEDS[fam])
        cfg, sd = load_dir(hf)
        c = C(cfg)
        n = cfg["num_hidden_layers"]
        mtp = [k for k in sd if k.startswith(f"model.layers.{n}.")]
        for k in mtp:
            del sd[k]
        tm = ForCausalLM(c)
        try:
            tm.load_state_dict(sd, strict=True)
            loaded = True
        except RuntimeError as e:
            loaded = False
            t.check(False, f"torch {fam}/{dtype}: state dict loads strictly", str(e)[:300])
        if not loaded:
            continue
        rng = np.random.default_rng(SEEDS[fam] + 1000)
        toks = [int(x) for x in rng.integers(0, cfg["vocab_size"], PROMPT)]
        with torch.no_grad():
            got = tm(torch.tensor([toks])).numpy()[0]
        ref = R.Model(*R.load_checkpoint(hf)).forward(toks)
        rel = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        t.check(rel <= TOL_TORCH, f"torch {fam}/{dtype}: logits = reference (tol {TOL_TORCH:g})",
                f"rel err {rel:.3g}, {len(mtp)} MTP tensors not loaded")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    args = ap.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="test_ref_deepseek.")
    os.makedirs(work, exist_ok=True)
    t = Tally()
    try:
        for part in (routing_checks, fp8_checks):
            try:
                part(t)
            except Exception as e:  # a bug in the test itself
                t.check(False, f"{part.__name__} raised", f"{type(e).__name__}: {e}")
        for part in (checkpoint_checks, torch_checks):
            try:
                part(t, work)
            except Exception as e:
                t.check(False, f"{part.__name__} raised", f"{type(e).__name__}: {e}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{t.passed} passed, {t.failed} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
