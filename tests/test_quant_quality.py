#!/usr/bin/python3
"""Quality of q8 and q4 weights against f32, for each family's test model.

    test_quant_quality.py --convert moe-convert --cli moe-cli --workdir DIR

For each family, one f32 checkpoint is converted three times (--quant f32,
q8, q4) and, for the quantized file, also with the default recipe. Each
quantized model generates 16 tokens greedily after a 20-token prompt
(prefill, then decode through its KV cache); the f32 model then evaluates the
same whole sequence. Over all rows (prefill and decode) we report the mean
and worst cosine similarity of the logits, the mean KL divergence
KL(p_f32 || p_q), and the top-1 agreement, and assert the mean cosine:
q8 >= 0.999 and the default recipe (q4 experts, q8 elsewhere) >= 0.99.
Every-matrix q4 measures 0.96-0.98 on these random-weight models, short of
the 0.99 the project aims for (issue 3): its floor here, 0.95, guards
against regressions only. A better 4-bit format is the open work.

Prints one line per case and ends with "N passed, M failed".
"""

import os
import subprocess
import sys

import numpy as np

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import e2e_args  # noqa: E402
import gen_checkpoint  # noqa: E402
from test_families import SEEDS  # noqa: E402  -- the families' own test models

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
MIN_COSINE = {"q8": 0.999, "q4": 0.95, "default": 0.99}
PROMPT_LEN, N_GEN = 20, 16


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def logits(cli, model, tokens, n, path, vocab):
    out = run([cli, "run", "-m", model, "--tokens", ",".join(map(str, tokens)), "-n", str(n), "--logits-out", path])
    ids = [int(t) for t in out.strip().splitlines()[-1].split(",")] if n else []
    return ids, np.fromfile(path, dtype="<f4").reshape(-1, vocab).astype(np.float64)


def metrics(ref, got):
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    def logsoftmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    lp, lq = logsoftmax(ref), logsoftmax(got)
    kl = np.sum(np.exp(lp) * (lp - lq), axis=1)
    top1 = np.mean(ref.argmax(axis=1) == got.argmax(axis=1))
    return cos.mean(), cos.min(), kl.mean(), top1


def main():
    args = e2e_args()
    passed = failed = 0
    for family in FAMILIES:
        hf = os.path.join(args.workdir, family)
        run([sys.executable, os.path.join(HERE, "gen_checkpoint.py"), "--family", family, "--dtype", "f32",
             "--seed", str(SEEDS[family]), "-o", hf])
        vocab = gen_checkpoint.make_config(family, "f32")["vocab_size"]
        prompt = list(np.random.default_rng(11).integers(0, vocab, PROMPT_LEN))
        f32 = hf + ".f32.moe"
        run([args.convert, hf, "-o", f32, "--quant", "f32"])
        for quant in ("q8", "q4", "default"):
            name = f"{family} {quant}"
            try:
                qpath = f"{hf}.{quant}.moe"
                run([args.convert, hf, "-o", qpath] + ([] if quant == "default" else ["--quant", quant]))
                ids, got = logits(args.cli, qpath, prompt, N_GEN, qpath + ".bin", vocab)
                _, ref = logits(args.cli, f32, prompt + ids, 0, f32 + ".bin", vocab)
                cos, cos_min, kl, top1 = metrics(ref, got)
                ok = cos >= MIN_COSINE[quant]
                print(f"{'ok  ' if ok else 'FAIL'} {name}: cosine mean {cos:.6f} min {cos_min:.6f}, "
                      f"KL {kl:.2e}, top-1 {top1:.3f} over {len(ref)} rows (need cosine >= {MIN_COSINE[quant]})")
                passed += ok
                failed += not ok
            except Exception as e:  # noqa: BLE001 -- report and go on
                print(f"FAIL {name}: {e}")
                failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
