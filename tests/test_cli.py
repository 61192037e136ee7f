#!/usr/bin/python3
"""moe-cli run end to end: sampling flags and reproducibility.

    test_cli.py --convert moe-convert --cli moe-cli --workdir DIR

- without --temp, run is greedy: two runs agree, and equal --temp 0;
- with --temp and a --seed, two runs give the same ids, and another seed
  (at a high temperature) gives other ids;
- the same seed gives the same ids at 1 and 2 threads;
- --top-k 1 at any temperature is greedy;
- bad sampling flags are refused with a message;
- with an expert cache (30 % of the experts, and a single slot) the logits
  are bit-identical to the plain mapping, and the cache reports its counters.
Ends with "N passed, M failed".
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import e2e_args, run  # noqa: E402
import gen_checkpoint  # noqa: E402


def main():
    args = e2e_args()
    hf = os.path.join(args.workdir, "olmoe")
    run([sys.executable, os.path.join(HERE, "gen_checkpoint.py"), "--family", "olmoe", "--dtype", "f32", "-o", hf])
    model = hf + ".moe"
    run([args.convert, hf, "-o", model])
    base = [args.cli, "run", "-m", model, "--tokens", "1,2,3,4,5", "-n", "24"]

    def ids(*extra, threads=2):
        return run(base + ["-t", str(threads)] + list(extra)).stdout.strip().splitlines()[-1]

    checks = []
    greedy = ids()
    checks.append(("greedy by default, reproducible", greedy == ids() and greedy == ids("--temp", "0")))
    trace = os.path.join(args.workdir, "trace.tsv")
    checks.append(("--trace-experts does not change the output", ids("--trace-experts", trace) == greedy))
    rows = [line.split("\t") for line in open(trace) if not line.startswith("#")]
    cfg = gen_checkpoint.make_config("olmoe", "f32")
    k, n_exp = cfg["num_experts_per_tok"], cfg["num_experts"]
    positions = {(int(r[0]), int(r[1])) for r in rows}
    good = all(len(set(map(int, r[2].split(",")))) == k and all(0 <= int(e) < n_exp for e in r[2].split(","))
               and len(r[3].split(",")) == k for r in rows)
    checks.append(("--trace-experts: one row per position and layer with k distinct experts",
                   good and len(rows) == len(positions) == (5 + 24) * cfg["num_hidden_layers"]))
    hot = ["--temp", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0"]
    a, b, c = ids(*hot, "--seed", "1"), ids(*hot, "--seed", "1"), ids(*hot, "--seed", "2")
    checks.append(("same seed, same ids", a == b))
    checks.append(("another seed, other ids", a != c))
    checks.append(("same seed at 1 and 2 threads", a == ids(*hot, "--seed", "1", threads=1)))
    checks.append(("top-k 1 is greedy", ids("--temp", "2", "--top-k", "1", "--seed", "5") == greedy))
    plain = os.path.join(args.workdir, "plain.bin")
    run(base + ["--logits-out", plain])
    variants = [["--expert-cache", "30%"], ["--expert-cache", "1"]]
    variants += [["--expert-cache", "25%", "--cache-policy", pol, "--prefetch", pf] for pol in ("lru", "lfu", "stats")
                 for pf in ("off", "on")]
    variants += [["--expert-cache", "40%", "--cache-pin", "4", "--prefetch", "on"]]
    for flags in variants:
        cached = os.path.join(args.workdir, "cached.bin")
        p = run(base + ["--logits-out", cached] + flags)
        same = open(plain, "rb").read() == open(cached, "rb").read()
        checks.append((f"{' '.join(flags)}: identical logits, stats printed", same and "expert cache:" in p.stderr))
    loaded = os.path.join(args.workdir, "loaded.bin")
    run(base + ["--logits-out", loaded, "--no-mmap"])
    checks.append(("--no-mmap: identical logits", open(plain, "rb").read() == open(loaded, "rb").read()))
    f16, f32 = (os.path.join(args.workdir, f"kv-{t}.bin") for t in ("f16", "f32"))
    run(base + ["--logits-out", f16, "--kv-type", "f16"])
    run(base + ["--logits-out", f32, "--kv-type", "f32"])
    checks.append(("--kv-type f16 is the default", open(plain, "rb").read() == open(f16, "rb").read()))
    checks.append(("--kv-type f32 gives other logits than f16", open(f16, "rb").read() != open(f32, "rb").read()))
    p = run(base + ["--kv-type", "q4"], expect_ok=False)
    checks.append(("--kv-type q4 is refused naming it", p.returncode == 2 and "q4" in p.stderr and "--kv-type" in p.stderr))
    p = run(base + ["--prefetch", "on"], expect_ok=False)
    checks.append(("--prefetch without --expert-cache is refused", p.returncode == 1 and "--expert-cache" in p.stderr))
    p = run(base + ["--expert-cache", "30%", "--cache-policy", "fifo"], expect_ok=False)
    checks.append(("an unknown --cache-policy is refused naming it", p.returncode == 1 and "fifo" in p.stderr))
    p = run(base + ["--expert-cache", "lots"], expect_ok=False)
    checks.append(("--expert-cache lots refused", p.returncode in (1, 2) and "expert-cache" in p.stderr))
    for flag, value in (("--top-p", "0"), ("--temp", "x"), ("--seed", "-1"), ("--top-k", "-2")):
        p = run(base + [flag, value], expect_ok=False)
        checks.append((f"{flag} {value} refused", p.returncode in (1, 2) and p.stderr.strip() != ""))
    failed = 0
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        failed += not ok
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
