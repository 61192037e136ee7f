#!/usr/bin/env bash
# The main job: install what is needed, build, and run a model.
# Until the bundled trained model lands, this makes a tiny random-weight
# Qwen3-MoE checkpoint, converts it and generates from it, saying what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh build
bin=build/tools
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== generating a tiny random-weight Qwen3-MoE checkpoint in Hugging Face format"
/usr/bin/python3 tests/gen_checkpoint.py --family qwen3_moe --dtype bf16 -o "$work/hf" >/dev/null
echo "== moe-convert $work/hf -o $work/tiny.moe --quant bf16"
"$bin/convert/moe-convert" "$work/hf" -o "$work/tiny.moe" --quant bf16
echo "== moe-cli info -m tiny.moe --verify"
"$bin/cli/moe-cli" info -m "$work/tiny.moe" --verify
echo "== moe-cli run -m tiny.moe --tokens 1,2,3,4 -n 16 (greedy; token ids until the tokenizer lands)"
"$bin/cli/moe-cli" run -m "$work/tiny.moe" --tokens 1,2,3,4 -n 16
