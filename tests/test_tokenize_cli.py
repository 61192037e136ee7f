#!/usr/bin/python3
"""moe-cli tokenize / detokenize end to end: tokenizer.json through
moe-convert into the .moe file, then the CLI, against the transformers.js
goldens of the tokenizer unit test (tests/text/tokenizer/golden).

    test_tokenize_cli.py --convert moe-convert --cli moe-cli --workdir DIR

A tiny Mixtral checkpoint with a 32000-token vocabulary gets Mixtral's real
tokenizer.json and tokenizer_config.json. The first 300 corpus strings that
are valid UTF-8 go through `moe-cli tokenize --jsonl` with and without
special tokens, and must give the reference's ids; `detokenize` must give the
string back where the reference round-trips. A tokenizer larger than the
model's vocabulary must be refused by moe-convert. Ends with "N passed, M failed".
"""

import base64
import gzip
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import MODEL_META, checkpoint_with_tokenizer, e2e_args  # noqa: E402
import gen_checkpoint  # noqa: E402

# Mixtral's real tokenizer files: shared/model-meta beside the checkout.
SOURCE = os.path.join(MODEL_META, "mistralai--Mixtral-8x7B-Instruct-v0.1")
N_STRINGS = 300


def main():
    args = e2e_args()
    hf = os.path.join(args.workdir, "mixtral-32k")
    checkpoint_with_tokenizer(hf, "mixtral", 32000, SOURCE, 3)
    model = hf + ".moe"
    subprocess.run([args.convert, hf, "-o", model], check=True, capture_output=True)

    corpus = [json.loads(line) for line in open(os.path.join(HERE, "text", "tokenizer", "corpus.jsonl"))]
    golden = [json.loads(line) for line in gzip.open(os.path.join(HERE, "text", "tokenizer", "golden", "mixtral.jsonl.gz"), "rt")]
    cases = []
    for c, g in zip(corpus, golden):
        try:
            cases.append((base64.b64decode(c["b64"]).decode("utf-8"), g))
        except UnicodeDecodeError:
            continue
        if len(cases) == N_STRINGS:
            break
    stdin = "".join(json.dumps(s) + "\n" for s, _ in cases)
    checks = []
    for flags, expect in (([], lambda g: g["pre"] + g["ids"]), (["--no-special"], lambda g: g["ids"])):
        p = subprocess.run([args.cli, "tokenize", "-m", model, "--jsonl"] + flags, input=stdin, capture_output=True,
                           text=True, timeout=300)
        got = [json.loads(line) for line in p.stdout.splitlines()]
        bad = [i for i, (_, g) in enumerate(cases) if i >= len(got) or got[i] != expect(g)]
        checks.append((f"tokenize --jsonl {' '.join(flags)}: {len(cases) - len(bad)}/{len(cases)} match",
                       p.returncode == 0 and not bad))
    trips = 0
    for s, g in cases[:40]:
        if not g.get("rt"):
            continue
        p = subprocess.run([args.cli, "detokenize", "-m", model, "--tokens", ",".join(map(str, g["ids"]))],
                           capture_output=True, timeout=60)
        trips += p.returncode == 0 and p.stdout.decode("utf-8") == s
    checks.append((f"detokenize round trip on {trips} strings", trips >= 30))
    small = os.path.join(args.workdir, "mixtral-256")
    shutil.rmtree(small, ignore_errors=True)
    gen_checkpoint.write_checkpoint(small, "mixtral", "f32", 1, 3)
    shutil.copy(os.path.join(SOURCE, "tokenizer.json"), small)
    p = subprocess.run([args.convert, small, "-o", small + ".moe"], capture_output=True, text=True)
    checks.append(("a tokenizer larger than vocab_size is refused",
                   p.returncode == 1 and "vocab_size" in p.stderr and not os.path.exists(small + ".moe")))
    failed = 0
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        failed += not ok
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
