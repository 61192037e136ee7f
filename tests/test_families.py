#!/usr/bin/python3
"""End-to-end family tests: moe-convert + moe-cli against the numpy reference.

    test_families.py --convert build/tools/convert/moe-convert \
                     --cli build/tools/cli/moe-cli --workdir DIR
    test_families.py --reference-only --workdir DIR    (no binaries needed)

For each family (mixtral, qwen2_moe, qwen3_moe, olmoe) x dtype (f32, bf16;
qwen3_moe f32 is written in 3 shards):
  1. tests/gen_checkpoint.py writes a tiny seeded checkpoint;
  2. moe-convert HFDIR -o OUT.moe --quant f32|bf16 (the checkpoint's own type);
  3. moe-cli run -m OUT.moe --kv-type f32 --tokens <P ids> -n 16
     --logits-out X.bin, and tests/reference/reference.py with the same
     tokens; the generated ids must match, and max|dlogit| <= tol *
     max|logit_ref| over all P + N rows (tol 1e-3 for f32, 1e-2 for bf16);
  4. cache vs prefill: moe-cli run --tokens <prompt + generated> -n 0 must
     reproduce X.bin's rows (tol 1e-4 * max|logit|), in one chunk and in
     chunks of 7 (-b 7);
  5. the f16 KV cache (the default): a prefill of the reference's tokens
     against the reference (tol 5e-3), and (f32 checkpoints) decode at
     150-156 positions against a prefill, as for f32.
With --reference-only, steps 2-5 are replaced by self-checks of the
generator and the reference: shapes, finiteness, causality, bf16 rounding,
sharded == unsharded, top-k weight sums, decision margins far from ties, and
that plausible runtime bugs ("mutants": interleaved RoPE, wrong GQA mapping,
flipped top-k renormalization, missing shared-expert gate / qkv bias / q-k
norm, ...) move the logits by more than the bf16 tolerance.

Prints one line per case and ends with exactly "N passed, M failed"; the
exit status is non-zero if any case failed.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.dont_write_bytecode = True      # keep tests/ free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "gen_checkpoint.py")
REF = os.path.join(HERE, "reference", "reference.py")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "reference"))
import gen_checkpoint  # noqa: E402
import reference       # noqa: E402

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3")
SEEDS = {"mixtral": 105, "qwen2_moe": 202, "qwen3_moe": 308, "olmoe": 408, "deepseek_v2": 2, "deepseek_v3": 54}
PROMPT_LEN = 20
N_GEN = 16
LONG_PROMPT_LEN = 150   # decode attention over more than two of its 64-position blocks
LONG_N_GEN = 6
TOL_LOGITS = {"f32": 1e-3, "bf16": 1e-2}
TOL_CACHE = 1e-4
TOL_KV_F16 = 5e-3   # keys and values rounded to f16 (2^-11 relative); up to 1.2e-3 seen
MIN_GAP = 1e-3      # decision margins (logit units) below this are flagged
TIMEOUT = 300


class CaseFailure(Exception):
    pass


def cases():
    """(family, dtype, shards) for every case."""
    return [(f, d, 3 if (f, d) == ("qwen3_moe", "f32") else 1)
            for f in FAMILIES for d in ("f32", "bf16")]


def case_name(family, dtype, shards):
    return f"{family}/{dtype}" + (f"/{shards}-shards" if shards > 1 else "")


def run(cmd, what):
    """Run cmd; return stdout, or raise CaseFailure with stderr's tail."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CaseFailure(f"{what} timed out after {TIMEOUT}s: {' '.join(cmd)}")
    except OSError as e:
        raise CaseFailure(f"{what} could not start: {e}")
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise CaseFailure(f"{what} exited {p.returncode}: {' '.join(cmd)}\n{tail}")
    return p.stdout


def last_line(stdout):
    lines = stdout.rstrip("\n").split("\n")
    return lines[-1].strip() if lines else ""


def read_logits(path, vocab, rows, what):
    x = np.fromfile(path, dtype="<f4").astype(np.float64)
    if x.size != rows * vocab:
        raise CaseFailure(f"{what}: {x.size} floats in {path}, expected "
                          f"{rows} rows x {vocab} = {rows * vocab}")
    return x.reshape(rows, vocab)


def row_name(row, n_prompt):
    if row < n_prompt:
        return f"row {row} (prompt position {row})"
    return f"row {row} (generated token {row - n_prompt})"


def compare(got, ref, tol, n_prompt):
    """(ok, relative max error, details) of got vs ref logits rows."""
    scale = np.max(np.abs(ref))
    diff = np.abs(got - ref)
    if not np.all(np.isfinite(got)):
        bad = np.argwhere(~np.isfinite(got))[0]
        return False, np.inf, f"non-finite logit at {row_name(bad[0], n_prompt)}, column {bad[1]}"
    per_row = diff.max(axis=1) / scale
    worst = int(np.argmax(per_row))
    rel = float(per_row[worst])
    over = np.nonzero(per_row > tol)[0]
    details = f"worst {row_name(worst, n_prompt)}"
    if len(over):
        col = int(np.argmax(diff[over[0]]))
        details += (f"; {len(over)} rows over tolerance, first {row_name(over[0], n_prompt)} "
                    f"(column {col}: got {got[over[0], col]:.6g}, "
                    f"expected {ref[over[0], col]:.6g})")
    return len(over) == 0, rel, details


def gen_checkpoint_dir(workdir, family, dtype, shards):
    hf = os.path.join(workdir, f"{family}-{dtype}" + (f"-sh{shards}" if shards > 1 else ""))
    shutil.rmtree(hf, ignore_errors=True)
    run([sys.executable, GEN, "--family", family, "--dtype", dtype, "--shards", str(shards),
         "--seed", str(SEEDS[family]), "-o", hf], "gen_checkpoint.py")
    return hf


def prompt_for(family, vocab):
    rng = np.random.default_rng(SEEDS[family] + 1000)
    return [int(t) for t in rng.integers(0, vocab, PROMPT_LEN)]


def run_reference(hf, prompt, n, out_prefix):
    logits_path, stats_path = out_prefix + ".ref.bin", out_prefix + ".ref.json"
    stdout = run([sys.executable, REF, hf, "--tokens", ",".join(map(str, prompt)),
                  "-n", str(n), "--logits-out", logits_path, "--stats-out", stats_path],
                 "reference.py")
    ids = reference.parse_tokens(last_line(stdout))
    with open(stats_path) as f:
        stats = json.load(f)
    return ids, logits_path, stats


def margin_note(stats):
    notes = []
    for key, label in (("min_router_gap", "router"), ("min_greedy_gap", "greedy")):
        v = stats.get(key)
        if v is not None:
            notes.append(f"{label} gap {v:.3g}" + (" (NEAR TIE)" if v < MIN_GAP else ""))
    return ", ".join(notes)


# --------------------------------------------------------------------------
# Runtime case
# --------------------------------------------------------------------------

def runtime_case(args, family, dtype, shards):
    hf = gen_checkpoint_dir(args.workdir, family, dtype, shards)
    vocab = gen_checkpoint.make_config(family, dtype)["vocab_size"]
    prompt = prompt_for(family, vocab)
    P, N = len(prompt), N_GEN
    ref_ids, ref_path, stats = run_reference(hf, prompt, N, hf)
    ref = read_logits(ref_path, vocab, P + N, "reference")

    moe = hf + ".moe"
    # DeepSeek-V3 ships FP8 weights with block scales: converted to f32 they
    # are exact, while --quant bf16 would round them a second time, away from
    # the reference (which keeps fp8 x scale exactly). Its bf16 case covers
    # the bf16 tensors beside the FP8 ones, at the f32 tolerance.
    quant = "f32" if family == "deepseek_v3" else dtype
    convert = [args.convert, hf, "-o", moe, "--quant", quant]
    run(convert, "moe-convert")

    x_path = hf + ".X.bin"
    stdout = run([args.cli, "run", "-m", moe, "--kv-type", "f32", "--tokens", ",".join(map(str, prompt)),
                  "-n", str(N), "--logits-out", x_path], "moe-cli run")
    try:
        ids = reference.parse_tokens(last_line(stdout))
    except ValueError:
        raise CaseFailure(f"moe-cli: last stdout line is not a list of ids: {last_line(stdout)!r}")
    if len(ids) != N:
        raise CaseFailure(f"moe-cli printed {len(ids)} ids, expected {N}: {ids}")
    X = read_logits(x_path, vocab, P + N, "moe-cli --logits-out")
    problems = []

    # Rows are comparable up to the first differing generated id: row P + i
    # is computed at generated token i, so it differs once that token does.
    mismatch = next((i for i in range(N) if ids[i] != ref_ids[i]), None)
    n_rows = P + N if mismatch is None else P + mismatch
    ok, rel, details = compare(X[:n_rows], ref[:n_rows], TOL_LOGITS[quant], P)
    line = f"logits rel err {rel:.3g} (tol {TOL_LOGITS[quant]:g}, {details})"
    if mismatch is not None:
        problems.append(f"generated ids differ from token {mismatch} on: "
                        f"moe {ids} vs reference {ref_ids}")
    if not ok:
        problems.append(f"logits over tolerance: {details}")

    # Decoding through the KV cache must equal a prefill of the same tokens,
    # in one chunk and in chunks of 7 (-b 7: the cache carries each chunk
    # into the next).
    for what, extra, suffix in (("cache vs prefill", [], ".Y.bin"), ("prefill in chunks of 7", ["-b", "7"], ".Z.bin")):
        cmd = [args.cli, "run", "-m", moe, "--kv-type", "f32", "--tokens", ",".join(map(str, prompt + ids)), "-n", "0",
               *extra]
        run(cmd + ["--logits-out", hf + suffix], " ".join(["moe-cli run -n 0", *extra]))
        Y = read_logits(hf + suffix, vocab, P + N, " ".join(["moe-cli -n 0", *extra, "--logits-out"]))
        ok2, rel2, details2 = compare(X, Y, TOL_CACHE, P)
        line += f"; {what} rel err {rel2:.3g} (tol {TOL_CACHE:g}, {details2})"
        if not ok2:
            problems.append(f"{what} over tolerance: {details2}")

    # The f16 cache: the reference's own tokens, so that rows compare even
    # where a near tie would let f16's rounding pick another token.
    f16_path = hf + ".F16.bin"
    run([args.cli, "run", "-m", moe, "--tokens", ",".join(map(str, prompt + ref_ids)), "-n", "0",
         "--logits-out", f16_path], "moe-cli run -n 0 (f16 KV cache)")
    F = read_logits(f16_path, vocab, P + N, "moe-cli -n 0 --logits-out (f16 KV cache)")
    ok3, rel3, details3 = compare(F, ref, TOL_KV_F16, P)
    line += f"; f16 KV cache rel err {rel3:.3g} (tol {TOL_KV_F16:g}, {details3})"
    if not ok3:
        problems.append(f"f16 KV cache over tolerance: {details3}")
    if dtype == "f32":
        for kv_type in ("f32", "f16"):
            long_problems, long_line = long_decode_checks(args, family, moe, vocab, kv_type)
            problems += long_problems
            line += "; " + long_line
    line += f"; {margin_note(stats)}"
    if family.startswith("deepseek"):
        problems += deepseek_checks(args, hf, moe)
    if problems:
        raise CaseFailure(line + "\n    " + "\n    ".join(problems))
    return line


def long_decode_checks(args, family, moe, vocab, kv_type):
    """Decoding at 150-156 positions must equal a prefill of the same tokens.
    Decode attention reads the cache in blocks of 64 positions, each thread
    its own run of them, and merges the runs: one thread takes three blocks
    (its running softmax rescaled as the maximum grows), three threads one
    each, merged. Prefill attention is separate code, which walks keys in
    blocks of 128 for groups of 32 queries; with -t 3 the prefill goes in
    chunks of 50, so groups start at positions that are not multiples of 32
    and straddle the blocks. Both read the same cache, so an f16 cache is held
    to the same tolerance."""
    rng = np.random.default_rng(SEEDS[family] + 2000)
    prompt = [int(t) for t in rng.integers(0, vocab, LONG_PROMPT_LEN)]
    P, N = LONG_PROMPT_LEN, LONG_N_GEN
    problems, notes = [], []
    for threads, chunks in (("1", []), ("3", ["-b", "50"])):
        base = moe + f".long-{kv_type}-t{threads}"
        stdout = run([args.cli, "run", "-m", moe, "--kv-type", kv_type, "--tokens", ",".join(map(str, prompt)),
                      "-n", str(N), "-t", threads, "--logits-out", base + ".X.bin"], f"moe-cli run -t {threads} (long)")
        ids = reference.parse_tokens(last_line(stdout))
        X = read_logits(base + ".X.bin", vocab, P + N, "moe-cli --logits-out (long)")
        run([args.cli, "run", "-m", moe, "--kv-type", kv_type, "--tokens", ",".join(map(str, prompt + ids)), "-n", "0",
             "-t", threads,
             *chunks, "--logits-out", base + ".Y.bin"], f"moe-cli run -n 0 -t {threads} {' '.join(chunks)} (long)")
        Y = read_logits(base + ".Y.bin", vocab, P + N, "moe-cli -n 0 --logits-out (long)")
        ok, rel, details = compare(X, Y, TOL_CACHE, P)
        what = f"{kv_type} {P}-token decode with -t {threads} vs prefill" + (f" in chunks of {chunks[1]}" if chunks else "")
        notes.append(f"{what}: rel err {rel:.3g}")
        if not ok:
            problems.append(f"{what} over tolerance: {details}")
    return problems, "; ".join(notes)


def deepseek_checks(args, hf, moe):
    """MLA caches only the latent and the rope key; the MTP layer is kept, not run."""
    with open(os.path.join(hf, "config.json")) as f:
        cfg = json.load(f)
    info = run([args.cli, "info", "-m", moe, "--tensors"], "moe-cli info")
    want = (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) * cfg["num_hidden_layers"] * 2
    problems = []
    if f"KV cache:        {want} bytes per token" not in info:
        problems.append(f"KV cache per token is not (kv_lora_rank + qk_rope_head_dim) x layers x 2 (f16) = {want}")
    mtp = [line for line in info.splitlines() if line.strip().startswith("mtp.")]
    n_mtp = cfg.get("num_nextn_predict_layers", 0)
    if n_mtp and not any(".eh_proj.weight" in line for line in mtp):
        problems.append("the multi-token-prediction layer is not kept in the file (mtp.*)")
    if not n_mtp and mtp:
        problems.append("mtp.* tensors in a model without prediction layers")
    if any(f"blk.{cfg['num_hidden_layers']}." in line for line in info.splitlines()):
        problems.append("the prediction layer was taken for a decoder layer")
    return problems


# --------------------------------------------------------------------------
# Reference-only case (self-checks of the generator and the reference)
# --------------------------------------------------------------------------

def reference_case(args, family, dtype, shards):
    hf = gen_checkpoint_dir(args.workdir, family, dtype, shards)
    config, tensors = reference.load_checkpoint(hf)
    vocab = config["vocab_size"]
    prompt = prompt_for(family, vocab)
    P, N = len(prompt), N_GEN
    ids, ref_path, stats = run_reference(hf, prompt, N, hf)
    logits = read_logits(ref_path, vocab, P + N, "reference")
    checks = []

    if len(ids) != N or not all(0 <= t < vocab for t in ids):
        raise CaseFailure(f"bad generated ids {ids}")
    if not np.all(np.isfinite(logits)):
        raise CaseFailure("non-finite logits")
    if list(np.argmax(logits[P - 1:P + N - 1], axis=1)) != ids:
        raise CaseFailure("generated ids are not the argmax of the rows before them")
    checks.append("ids = argmax")
    spread = float(np.std(logits))
    if not 0.3 < spread < 30:
        raise CaseFailure(f"logit std {spread:.3g} out of the useful range")
    checks.append(f"logit std {spread:.2f}")

    # Causality: changing the last token leaves all earlier rows unchanged.
    model = reference.Model(config, tensors)
    seq = prompt + ids
    full = model.forward(seq)
    other = list(seq)
    other[-1] = (other[-1] + 1) % vocab
    alt = model.forward(other)
    if np.max(np.abs(alt[:-1] - full[:-1])) > 1e-12 or np.allclose(alt[-1], full[-1]):
        raise CaseFailure("causality check failed")
    checks.append("causal")

    # The -n 0 prefill of prompt + ids gives the same rows (float32 file).
    stdout = run([sys.executable, REF, hf, "--tokens", ",".join(map(str, seq)), "-n", "0",
                  "--logits-out", hf + ".prefill.bin"], "reference.py -n 0")
    if last_line(stdout) != "":
        raise CaseFailure(f"-n 0 printed {last_line(stdout)!r}, expected an empty line")
    pre = read_logits(hf + ".prefill.bin", vocab, P + N, "reference -n 0")
    if not np.array_equal(pre, logits):
        raise CaseFailure("-n 0 prefill rows differ from the generation rows")
    checks.append("prefill = steps")

    # Same seed, other storage: sharded == unsharded exactly, and bf16 values
    # are the round-to-nearest bf16 of the f32 values.
    if shards > 1:
        one = gen_checkpoint_dir(args.workdir + "/single", family, dtype, 1)
        _, t1 = reference.load_checkpoint(one)
        if t1.keys() != tensors.keys() or any(not np.array_equal(t1[k], tensors[k]) for k in t1):
            raise CaseFailure("sharded checkpoint differs from the single-file one")
        checks.append("shards = single file")
    if dtype == "bf16":
        f32dir = gen_checkpoint_dir(args.workdir + "/f32", family, "f32", 1)
        _, t32 = reference.load_checkpoint(f32dir)
        for k, b in tensors.items():
            f = t32[k]
            # bf16 keeps 8 significant bits: for |f| in [2^(e-1), 2^e) the
            # rounding error is at most half an ulp, 2^(e-9).
            _, e = np.frexp(f)
            if np.any(np.abs(b - f) > np.ldexp(1.0, e - 9)):
                raise CaseFailure(f"{k}: bf16 values are not f32 values rounded to nearest")
            if np.any(f32_bits_low(b) != 0):
                raise CaseFailure(f"{k}: bf16 values have more than 16 bits")
        checks.append("bf16 = round(f32)")

    # Routing weights: renormalized top-k sums to 1, plain top-k to less.
    lo, hi = stats["min_topk_weight_sum"], stats["max_topk_weight_sum"]
    renorm = family == "mixtral" or config.get("norm_topk_prob", False)
    if renorm and not (abs(lo - 1) < 1e-12 and abs(hi - 1) < 1e-12):
        raise CaseFailure(f"renormalized top-k weights sum to {lo}..{hi}")
    if not renorm and not (0 < lo <= hi < 1):
        raise CaseFailure(f"top-k weights sum to {lo}..{hi}, expected < 1")
    checks.append(f"top-k weight sums {lo:.3f}..{hi:.3f}")

    # The test must be able to tell family details apart: each plausible
    # runtime bug ("mutant") must move the logits by more than the bf16
    # tolerance.
    weakest = min(mutant_effects(model, family, seq, full).items(), key=lambda kv: kv[1])
    if weakest[1] <= 2 * TOL_LOGITS["bf16"]:
        raise CaseFailure(f"mutant '{weakest[0]}' changes the logits by only {weakest[1]:.3g}")
    checks.append(f"weakest mutant '{weakest[0]}' {weakest[1]:.3g}")

    # Near-tie decisions (routing or greedy) would make the runtime test flaky.
    line = ", ".join(checks) + f"; {margin_note(stats)}"
    gaps = [stats[k] for k in ("min_router_gap", "min_greedy_gap") if stats.get(k) is not None]
    if gaps and min(gaps) < MIN_GAP:
        raise CaseFailure(line + "\n    a decision margin is too small for a robust test")
    return line


@contextlib.contextmanager
def swapped(obj, key, value):
    """Temporarily replace obj[key] (dict) or obj.key (anything else) by value."""
    if isinstance(obj, dict):
        get, put = obj.__getitem__, obj.__setitem__
    else:
        get, put = (lambda k: getattr(obj, k)), (lambda k, v: setattr(obj, k, v))
    saved = get(key)
    put(key, value)
    try:
        yield
    finally:
        put(key, saved)


def interleaved_cos_sin(config, head_dim, n_pos):
    freqs = np.outer(np.arange(n_pos, dtype=np.float64), reference.rope_inv_freq(config, head_dim))
    emb = np.repeat(freqs, 2, axis=-1)
    return np.cos(emb), np.sin(emb)


def rotate_pairs(x):
    y = np.empty_like(x)
    y[..., 0::2], y[..., 1::2] = -x[..., 1::2], x[..., 0::2]
    return y


def mutant_effects(model, family, seq, base):
    """{bug: max|dlogit| / max|logit|} for bugs a runtime could plausibly have."""
    R = reference
    mutants = {
        "top-k renormalization flipped": [(model, "norm_topk", not model.norm_topk)],
        "interleaved RoPE": [(R, "rope_cos_sin", interleaved_cos_sin),
                             (R, "rotate_half", rotate_pairs)],
        "GQA kv head h % n_kv": [(R, "repeat_kv", lambda x, n: np.tile(x, (n, 1, 1)))],
        "no final norm weight": [(model, "final_norm", np.ones_like(model.final_norm))],
    }
    if model.head_dim != model.H // model.n_heads:
        mutants["scale 1/sqrt(hidden/heads)"] = [(model, "scaling", (model.H // model.n_heads) ** -0.5)]
    if family == "qwen2_moe":
        mutants["shared expert without sigmoid gate"] = [(R, "sigmoid", np.ones_like)]
        mutants["no qkv bias"] = [(L, b, None) for L in model.layers for b in ("bq", "bk", "bv")]
    if family in ("qwen3_moe", "olmoe"):
        mutants["no q/k norm weight"] = [(L, n, np.ones_like(L[n])) for L in model.layers
                                         for n in ("q_norm", "k_norm")]
    return apply_mutants(model, seq, base, mutants)


def apply_mutants(model, seq, base, mutants):
    """max |logit change| / max |logit| of each mutant: its patches applied,
    a forward pass over seq, the patches undone."""
    effects = {}
    scale = np.max(np.abs(base))
    for name, patches in mutants.items():
        with contextlib.ExitStack() as stack:
            for obj, key, value in patches:
                stack.enter_context(swapped(obj, key, value))
            effects[name] = float(np.max(np.abs(model.forward(seq) - base)) / scale)
    return effects


def f32_bits_low(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32) & 0xFFFF


ISA_FLAGS = {"avx2": ["avx2", "fma", "f16c"],
             "avx512": ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"],
             "avx512bf16": ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
                            "avx512_bf16"]}


def missing_cpu_flags(isa):
    """The /proc/cpuinfo flags a forced x86 ISA needs that this CPU lacks."""
    if isa not in ISA_FLAGS:
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [f for f in ISA_FLAGS[isa] if f not in flags]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--convert", help="path to moe-convert")
    ap.add_argument("--cli", help="path to moe-cli")
    ap.add_argument("--workdir", required=True, help="scratch directory (created)")
    ap.add_argument("--families", default=",".join(FAMILIES),
                    help="comma-separated subset of " + ",".join(FAMILIES))
    ap.add_argument("--reference-only", action="store_true",
                    help="self-check the generator and reference; no binaries needed")
    args = ap.parse_args(argv)
    if not args.reference_only:
        for opt in ("convert", "cli"):
            path = getattr(args, opt)
            if not path:
                ap.error(f"--{opt} is required (or use --reference-only)")
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                ap.error(f"--{opt} {path}: not an executable file")
            setattr(args, opt, os.path.abspath(path))
    wanted = [f for f in args.families.split(",") if f]
    unknown = set(wanted) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families: {', '.join(sorted(unknown))}")
    os.makedirs(args.workdir, exist_ok=True)
    args.workdir = os.path.abspath(args.workdir)
    missing = missing_cpu_flags(os.environ.get("MOE_ISA", ""))
    if missing and not args.reference_only:
        print(f"skip: MOE_ISA={os.environ['MOE_ISA']} needs CPU features this machine lacks: {', '.join(missing)}")
        return 77

    if args.reference_only:
        # The self-checks below (mutants, bf16 rounding) are written for the
        # GQA families; tests/test_reference_deepseek.py self-checks DeepSeek's.
        deepseek = [f for f in wanted if f.startswith("deepseek")]
        if deepseek:
            print(f"reference-only: {', '.join(deepseek)} left to tests/test_reference_deepseek.py")
        wanted = [f for f in wanted if not f.startswith("deepseek")]
    body = reference_case if args.reference_only else runtime_case
    passed = failed = 0
    for family, dtype, shards in cases():
        if family not in wanted:
            continue
        name = case_name(family, dtype, shards)
        try:
            line = body(args, family, dtype, shards)
            print(f"PASS {name}: {line}", flush=True)
            passed += 1
        except CaseFailure as e:
            print(f"FAIL {name}: {e}", flush=True)
            failed += 1
        except Exception as e:  # a bug in the test itself: still count and go on
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
