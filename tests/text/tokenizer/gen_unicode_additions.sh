#!/usr/bin/env bash
# gen_unicode_additions.sh — regenerates src/text/tok_unicode_data.c from this
# machine's node (the reference's Unicode), PCRE2 and utf8proc. Run it when any
# of them changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node "$here/unicode_dump.mjs" > "$tmp/dump.txt"
cc -O2 -o "$tmp/additions" "$here/unicode_additions.c" $(pkg-config --cflags --libs libpcre2-8 libutf8proc)
"$tmp/additions" "$tmp/dump.txt" > "$here/../../../src/text/tok_unicode_data.c"
echo "wrote src/text/tok_unicode_data.c"
