#!/usr/bin/env bash
# The main job: install what is needed, build, and chat with the bundled model.
#
# models/moe-tiny-austen.moe is a small Mixture-of-Experts model this project
# trained on Jane Austen's novels (models/moe-tiny-austen.md): a demo of the
# runtime, not an assistant. It continues what you type in loosely Austen-like
# English. Extra arguments go to moe-cli chat (e.g. --temp 0.7 --seed 1).
# With stdin not a terminal it reads one message per line and prints replies.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh build
echo "== moe-cli chat -m models/moe-tiny-austen.moe: a demo model trained on Jane Austen's novels (not an assistant)" >&2
exec build/tools/cli/moe-cli chat -m models/moe-tiny-austen.moe "$@"
