"""What the end-to-end tests share: their arguments, running a tool, a tiny
checkpoint with a real tokenizer, and the "N passed, M failed" tally."""

import argparse
import os
import shutil
import subprocess

import gen_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_META = os.path.join(HERE, "..", "..", "shared", "model-meta")


def e2e_args():
    """--convert moe-convert --cli moe-cli --workdir DIR (created)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--convert", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    return args


def run(cmd, expect_ok=True, stdin=None, timeout=300):
    """Runs cmd with text I/O; raises with its stderr when it fails and should not."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    if expect_ok and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def checkpoint_with_tokenizer(hf, family, vocab_size, tokenizer_dir, seed):
    """A tiny random checkpoint of `family` in hf/ with vocab_size tokens and
    the tokenizer.json (and tokenizer_config.json, if there) of tokenizer_dir."""
    shutil.rmtree(hf, ignore_errors=True)
    make_config = gen_checkpoint.make_config
    gen_checkpoint.make_config = lambda f, d: dict(make_config(f, d), vocab_size=vocab_size)
    try:
        gen_checkpoint.write_checkpoint(hf, family, "f32", 1, seed)
    finally:
        gen_checkpoint.make_config = make_config
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tokenizer_dir, name)):
            shutil.copy(os.path.join(tokenizer_dir, name), hf)


class Tally:
    """Counts checks; a failed one prints why."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL:", what)
        return ok

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0
