#!/usr/bin/python3
"""The bundled demo model (models/moe-tiny-austen.moe) end to end.

    test_bundled.py --cli moe-cli

- it loads and every tensor checksum verifies;
- greedy generation from a fixed prompt gives the same text on every run and
  at 1 and 2 threads, and it is text (letters and spaces, not nothing);
- a sampled chat reply (fixed seed) through a pipe ends by itself (the
  end-of-turn token) before the token limit, and repeats at 1 and 2 threads
  (greedy decoding of this small model tends to loop);
- held-out perplexity (moe-cli perplexity, the f32 PyTorch model's
  definition) stays within the margin recorded in models/moe-tiny-austen.json.
Ends with "N passed, M failed".
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import Tally, run  # noqa: E402

MODELS = os.path.join(HERE, "..", "models")
NAME = "moe-tiny-austen"
PROMPT = "It is a truth universally acknowledged"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    args = ap.parse_args()
    model = os.path.join(MODELS, NAME + ".moe")
    with open(os.path.join(MODELS, NAME + ".json")) as f:
        card = json.load(f)
    tally = Tally()
    check = tally.check

    info = run([args.cli, "info", "-m", model, "--verify"])
    check("tensor checksums match" in info.stdout, f"info --verify: {info.stdout[-300:]}")

    texts = [run([args.cli, "run", "-m", model, "-p", PROMPT, "-n", "48", "-t", str(t)]).stdout for t in (1, 2, 2, 1)]
    check(len(set(texts)) == 1, f"greedy text differs between runs or thread counts: {texts}")
    check(len(re.findall(r"[A-Za-z]+", texts[0])) >= 5, f"greedy text has words: {texts[0]!r}")

    chat = [args.cli, "chat", "-m", model, "--seed", "2", "-n", "200"]
    first = run(chat, stdin="Mr. Darcy walked into the room.\n/stats\n")
    m = re.search(r"replies: (\d+) tokens generated", first.stderr)
    check(first.stdout.strip() and m and int(m.group(1)) < 200,
          f"a sampled chat reply ends with the end-of-turn token before 200 tokens: {first.stdout!r} {first.stderr[-200:]}")
    again = run(chat + ["-t", "1"], stdin="Mr. Darcy walked into the room.\n")
    check(again.stdout == first.stdout, "the same seed gives the same chat reply (at 1 and 2 threads)")

    ppl = card["perplexity"]
    out = run([args.cli, "perplexity", "-m", model, "-f", os.path.join(MODELS, ppl["text"]), "-c", str(ppl["n_ctx"])],
              timeout=900).stdout
    got = float(re.search(r"perplexity ([0-9.]+)", out).group(1))
    want, margin = ppl["bundled"], ppl["margin"]
    check(abs(got - want) <= margin * want,
          f"held-out perplexity {got:.4f}, recorded {want:.4f} +/- {100 * margin:.1f}%")
    print(f"held-out perplexity {got:.4f} (recorded {want:.4f}; PyTorch f32 {ppl['pytorch_f32']:.4f})")
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
