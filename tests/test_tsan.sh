#!/bin/sh
# test_tsan.sh BUILD_OUT_DIR — the expert cache unit test (concurrent
# acquire, release and prefetch against the I/O thread) built with
# ThreadSanitizer and run; any data race fails it. Built directly with the C
# compiler, like test_neon.sh, from only the sources the test needs, without
# OpenMP (libgomp is not instrumented and would give false reports; the
# synthetic writer's pragmas then run serially). Skips (exit 77, meson's skip
# code) with the reason when the compiler or the kernel cannot run TSan.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
if [ $# -ge 1 ] && [ -n "$1" ]; then
    out=$1
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
cc=${CC:-cc}
mkdir -p "$out"

# Can this compiler and kernel run a TSan program at all?
printf 'int main(void) { return 0; }\n' > "$out/probe.c"
if ! "$cc" -fsanitize=thread -o "$out/probe" "$out/probe.c" 2>"$out/probe.log"; then
    echo "skip: $cc cannot build with -fsanitize=thread: $(head -n 1 "$out/probe.log")"
    exit 77
fi
if ! "$out/probe" 2>"$out/probe.log"; then
    echo "skip: ThreadSanitizer programs do not run here: $(head -n 1 "$out/probe.log")"
    exit 77
fi

cd "$root"
flags="-std=c17 -O1 -g -fsanitize=thread -D_GNU_SOURCE -DMOE_HAVE_BLAS -Iinclude -Isrc"
objs=
# the library code the test reaches, warnings as the main build reports them
for f in bench/synthetic.c src/util/error.c src/util/buf.c src/util/file.c src/util/size.c \
         src/format/reader.c src/format/writer.c src/model/schema.c src/model/model.c src/model/layout.c \
         src/quant/quant.c; do
    o=$out/$(echo "$f" | tr / _).o
    "$cc" $flags -Wno-unknown-pragmas -c "$f" -o "$o"
    objs="$objs $o"
done
# the code under test: warnings are errors
for f in src/cache/expert_cache.c tests/unit/test_expert_cache.c; do
    o=$out/$(echo "$f" | tr / _).o
    "$cc" $flags -Wall -Wextra -Werror -c "$f" -o "$o"
    objs="$objs $o"
done
# shellcheck disable=SC2086
"$cc" -fsanitize=thread -o "$out/test_expert_cache_tsan" $objs -lxxhash -lm -lpthread
echo "running $out/test_expert_cache_tsan under ThreadSanitizer"
TSAN_OPTIONS="halt_on_error=1 exitcode=66 ${TSAN_OPTIONS:-}" "$out/test_expert_cache_tsan"
