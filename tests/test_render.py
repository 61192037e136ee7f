#!/usr/bin/python3
"""moe-cli render end to end: checkpoint text files -> moe-convert -> the
model's chat template, byte-identical to @huggingface/jinja.

    test_render.py --convert moe-convert --cli moe-cli --workdir DIR

For each template with golden renderings (tests/text/templates/golden/*.json,
made by tests/text/templates/gen_golden.mjs with @huggingface/jinja), a tiny
checkpoint is given the template's real files as a Hugging Face checkpoint
carries them (tokenizer_config.json, and chat_template.jinja where the model
ships one; a tokenizer_config.json with just bos/eos for templates that come
without one) and converted. Then every golden case of the plain API
(messages, add_generation_prompt, enable_thinking) is rendered with
`moe-cli render --messages` and compared byte for byte; cases where the
template raises must fail with the template's message. Templates that come
from npm are skipped (their files are fetched by the template unit test).
Ends with "N passed, M failed".
"""

import glob
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import e2e_args  # noqa: E402
TEMPLATES = os.path.join(HERE, "text", "templates")


def checkpoint_for(golden, workdir, args):
    name = golden["template"]
    hf = os.path.join(workdir, name)
    shutil.rmtree(hf, ignore_errors=True)
    subprocess.run([sys.executable, os.path.join(HERE, "gen_checkpoint.py"), "--family", "qwen3_moe", "--dtype",
                    "f32", "-o", hf], check=True, capture_output=True)
    source = os.path.join(TEMPLATES, golden["source"])
    src_dir = os.path.dirname(source)
    if source.endswith(".jinja"):
        shutil.copy(source, os.path.join(hf, "chat_template.jinja"))
    config = os.path.join(src_dir, "tokenizer_config.json")
    if os.path.exists(config):
        shutil.copy(config, os.path.join(hf, "tokenizer_config.json"))
    else:
        first = golden["cases"][0]["vars"]
        tokens = {k: first[k] for k in ("bos_token", "eos_token") if k in first}
        with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
            json.dump(tokens, f)
    model = hf + ".moe"
    subprocess.run([args.convert, hf, "-o", model], check=True, capture_output=True)
    return model


def main():
    args = e2e_args()
    env = dict(os.environ, TZ="UTC")  # strftime_now reads local time; the goldens were made in UTC
    passed = failed = 0
    for path in sorted(glob.glob(os.path.join(TEMPLATES, "golden", "*.json"))):
        golden = json.load(open(path))
        if not golden.get("source") or golden["source"].startswith("node_modules"):
            continue
        model = checkpoint_for(golden, args.workdir, args)
        for case in golden["cases"]:
            if case["api"] != "struct":
                continue
            v = case["vars"]
            conv = os.path.join(args.workdir, "conv.json")
            with open(conv, "w") as f:
                json.dump(v["messages"], f)
            cmd = [args.cli, "render", "-m", model, "--messages", conv, "--now", str(golden["now_unix"])]
            if not v.get("add_generation_prompt"):
                cmd.append("--no-generation-prompt")
            if "enable_thinking" in v:
                cmd += ["--thinking", "on" if v["enable_thinking"] else "off"]
            p = subprocess.run(cmd, capture_output=True, env=env, timeout=60)
            name = f"{golden['template']} / {case['conversation']}"
            if "error" in case:
                ok = p.returncode != 0 and case["error"].split("\n")[0][:40] in p.stderr.decode("utf-8", "replace")
                why = f"expected the error {case['error']!r}, got rc={p.returncode} {p.stderr[:200]!r}"
            else:
                ok = p.returncode == 0 and p.stdout == case["output"].encode("utf-8")
                why = f"rc={p.returncode} stderr={p.stderr[:200]!r}\n  got  {p.stdout[:300]!r}\n  want {case['output'][:300]!r}"
            if ok:
                passed += 1
            else:
                failed += 1
                print(f"FAIL {name}: {why}")
        print(f"ok   {golden['template']}: rendered through moe-convert and moe-cli")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
