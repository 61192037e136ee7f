#!/usr/bin/python3
"""moe-bench end to end, on the bundled model (small, trained, with a tokenizer).

    test_bench.py --bench moe-bench

- `-o json` gives one record per test with llama-bench's fields and ours
  (n_batch: the prompt unless `-b` sets it; n_depth, `-d`'s tokens already
  in the context, named in the markdown as "tg8 @ d24"):
  the counts asked for, one sample per run, t/s from the samples, bytes per
  token and bandwidth fraction for decode only;
- with `--expert-cache`, the cache fields, in range;
- `-p`, `-n` and `-d` take comma-separated lists: a test per prompt and
  generation length, at every depth, in that order;
- `--kv-type f16|f32`: the KV cache's type in `type_k`/`type_v` (f16 by
  default) and in bytes per token;
- `--text FILE` feeds windows of the text: two invocations see the same
  routing (the windows depend only on the run), and it differs from the
  seeded stream's;
- bad input (a text shorter than the tests, a missing file, options that do
  not go together) gives one clear error and a non-zero exit.
Ends with "N passed, M failed".
"""

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import Tally, run  # noqa: E402

MODELS = os.path.join(HERE, "..", "models")
MODEL = os.path.join(MODELS, "moe-tiny-austen.moe")
TEXT = os.path.join(MODELS, "moe-tiny-austen-heldout.txt")


def bench_json(bench, *extra):
    p = run([bench, "-m", MODEL, "-p", "16", "-n", "8", "-r", "2", "-t", "1", "-o", "json", *extra])
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    a = ap.parse_args()
    tally = Tally()
    check = tally.check

    recs = bench_json(a.bench, "--text", TEXT)
    check(len(recs) == 2, f"two records (pp16, tg8), got {len(recs)}")
    pp, tg = recs[0], recs[-1]
    check(pp["n_prompt"] == 16 and pp["n_gen"] == 0 and tg["n_prompt"] == 0 and tg["n_gen"] == 8,
          f"n_prompt/n_gen: {pp['n_prompt']}/{pp['n_gen']}, {tg['n_prompt']}/{tg['n_gen']}")
    for r in recs:
        check(r["n_threads"] == 1 and len(r["samples_ts"]) == 2 and len(r["samples_ns"]) == 2,
              f"threads and samples: {r['n_threads']}, {r['samples_ts']}")
        mean = sum(r["samples_ts"]) / 2
        check(r["avg_ts"] > 0 and abs(r["avg_ts"] - mean) <= 1e-6 * mean, f"avg_ts {r['avg_ts']} vs samples {mean}")
        check(isinstance(r["isa"], str) and r["isa"] and r["membw_gbs"] > 0, f"isa {r['isa']}, membw {r['membw_gbs']}")
    check(pp["bytes_per_token"] is None and pp["bw_fraction"] is None, "prefill has no bytes_per_token / bw_fraction")
    check(tg["bytes_per_token"] > 1e6 and tg["bw_fraction"] > 0,
          f"decode bytes_per_token {tg['bytes_per_token']}, bw_fraction {tg['bw_fraction']}")

    check(pp["n_batch"] == 16 and tg["n_batch"] == 16, f"n_batch defaults to the prompt: {pp['n_batch']}, {tg['n_batch']}")
    chunked = bench_json(a.bench, "--text", TEXT, "-b", "5")
    check(all(r["n_batch"] == 5 and r["avg_ts"] > 0 for r in chunked), f"-b 5: {[r['n_batch'] for r in chunked]}")

    deep = bench_json(a.bench, "--text", TEXT, "-d", "24")
    check(all(r["n_depth"] == 24 for r in deep) and all(r["n_depth"] == 0 for r in recs),
          f"n_depth: {[r['n_depth'] for r in deep]} with -d 24, {[r['n_depth'] for r in recs]} without")
    check(deep[-1]["bytes_per_token"] > tg["bytes_per_token"],
          f"decode at depth 24 reads more KV cache per token: {deep[-1]['bytes_per_token']} vs {tg['bytes_per_token']}")
    # the KV cache in f16 by default: at depth 24 decode reads 24 + 4.5
    # positions on average, each twice the bytes in f32
    deep32 = bench_json(a.bench, "--text", TEXT, "-d", "24", "--kv-type", "f32")
    check(all(r["type_k"] == r["type_v"] == "f16" for r in recs + deep) and
          all(r["type_k"] == r["type_v"] == "f32" for r in deep32),
          f"type_k/type_v: f16 by default, f32 with --kv-type f32: {[(r['type_k'], r['type_v']) for r in deep + deep32]}")
    kv16_24 = deep[-1]["bytes_per_token"] - tg["bytes_per_token"]
    ratio = (deep32[-1]["bytes_per_token"] - deep[-1]["bytes_per_token"]) / kv16_24
    check(abs(ratio - 28.5 / 24) < 1e-6, f"f32 KV cache counted at twice f16's bytes per position: ratio {ratio}")
    md = run([a.bench, "-m", MODEL, "-p", "16", "-n", "8", "-d", "24", "-r", "1", "-t", "1"]).stdout
    check("| pp16 @ d24 |" in md and "| tg8 @ d24 |" in md, "markdown names the tests pp16 @ d24 and tg8 @ d24")

    lists = run([a.bench, "-m", MODEL, "-p", "8,16", "-n", "4", "-d", "0,8", "-r", "1", "-t", "1", "-o", "json"])
    got = [(r["n_prompt"], r["n_gen"], r["n_depth"]) for r in json.loads(lists.stdout)]
    want = [(8, 0, 0), (16, 0, 0), (0, 4, 0), (8, 0, 8), (16, 0, 8), (0, 4, 8)]
    check(got == want, f"-p 8,16 -n 4 -d 0,8: tests {got}, expected {want}")
    check(all(r["n_batch"] == 16 for r in json.loads(lists.stdout)), "-b defaults to the longest prompt of a list")

    again = bench_json(a.bench, "--text", TEXT)[-1]
    check(again["routing_top10_share"] == tg["routing_top10_share"] and again["routing_overlap"] == tg["routing_overlap"],
          "--text: the same windows, the same routing statistics, run after run")
    seeded = bench_json(a.bench)[-1]
    check((seeded["routing_top10_share"], seeded["routing_overlap"]) != (tg["routing_top10_share"], tg["routing_overlap"]),
          "--text routes differently from the seeded token stream")

    cached = bench_json(a.bench, "--text", TEXT, "--expert-cache", "25%", "--cache-policy", "stats")[-1]
    check(0 <= cached["cache_hit_rate"] <= 1 and cached["bytes_read_per_token"] >= 0 and cached["io_stall_s"] >= 0,
          f"cache fields: {cached.get('cache_hit_rate')}, {cached.get('bytes_read_per_token')}, {cached.get('io_stall_s')}")
    check(cached["bytes_read_per_token"] > 0 or cached["cache_hit_rate"] == 1, "a cold 25% cache reads experts")

    with tempfile.TemporaryDirectory() as tmp:
        short = os.path.join(tmp, "short.txt")
        with open(short, "w") as f:
            f.write("It is a truth.")
        bad = [([a.bench, "-m", MODEL, "-p", "16", "-n", "8", "-r", "1", "--text", short], 1, ["--text", "short.txt", "tokens"]),
               ([a.bench, "-m", MODEL, "-p", "16", "-r", "1", "--text", os.path.join(tmp, "none.txt")], 1, ["none.txt"]),
               ([a.bench, "-m", MODEL, "--skew", "1"], 2, ["--skew", "--synthetic"]),
               ([a.bench, "-m", MODEL, "--prefetch", "on"], 2, ["--expert-cache"]),
               ([a.bench, "-m", MODEL, "-r", "0"], 2, ["-r"]),
               ([a.bench, "-m", MODEL, "--kv-type", "q8"], 2, ["--kv-type", "q8"]),
               ([a.bench, "-m", MODEL, "-p", "8,x"], 2, ["-p", "8,x"]),
               ([a.bench, "-m", MODEL, "-d", ",".join(["1"] * 17)], 2, ["-d", "at most 16"])]
        for cmd, code, words in bad:
            p = run(cmd, expect_ok=False)
            err = p.stderr.strip()
            check(p.returncode == code and err.count("\n") == 0 and all(w in err for w in words),
                  f"{' '.join(cmd[1:])}: exit {p.returncode} (want {code}), stderr {err!r}")
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
