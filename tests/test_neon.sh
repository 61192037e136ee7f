#!/bin/sh
# test_neon.sh BUILD_OUT_DIR — the NEON kernels on an x86-64 machine: builds
# test_kernels for AArch64 with the Debian cross compiler and runs it under
# qemu-user, so the NEON kernels are checked against scalar without ARM
# hardware. Needs the Debian packages gcc-aarch64-linux-gnu and qemu-user
# (or qemu-user-static); without them it skips (exit 77, meson's skip code).
# Exits with the test binary's status. Works from any directory.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)

if [ $# -ge 1 ] && [ -n "$1" ]; then
    out=$1
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

cc=aarch64-linux-gnu-gcc
sysroot=/usr/aarch64-linux-gnu
qemu=
for q in qemu-aarch64 qemu-aarch64-static; do
    if command -v "$q" >/dev/null 2>&1; then qemu=$q; break; fi
done
if ! command -v "$cc" >/dev/null 2>&1 || [ -z "$qemu" ] || [ ! -d "$sysroot" ]; then
    echo "skip: NEON test needs gcc-aarch64-linux-gnu and qemu-user (not installed)"
    exit 77
fi

mkdir -p "$out"
cd "$root"
# Twice: the baseline ARMv8.0 kernels, and the dot-product (SDOT) path.
status=0
for variant in armv8-a armv8.2-a+dotprod; do
    bin=$out/test_kernels_neon_$variant
    "$cc" -std=c17 -O2 -march="$variant" -Wall -Wextra -Werror -fopenmp -D_GNU_SOURCE -Iinclude -Isrc \
        -o "$bin" \
        tests/unit/test_kernels.c \
        src/kernels/matmul.c src/kernels/kernels_scalar.c src/kernels/kernels_neon.c \
        src/quant/quant.c src/util/error.c \
        -lm
    echo "running $bin under $qemu (-march=$variant)"
    "$qemu" -L "$sysroot" "$bin" || status=$?
done
exit "$status"
