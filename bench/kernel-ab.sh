#!/bin/bash
# kernel-ab.sh — is a kernel change faster? Times two versions of one ISA's
# kernel file against each other in one process (bench/kernel_ab.c), in
# alternating 0.1 s slices, so a shared host's moving bandwidth hits both.
#
#   bench/kernel-ab.sh OLD.c NEW.c [TYPE [THREADS [ROUNDS [TOKENS]]]]
#
# OLD.c and NEW.c are versions of src/kernels/kernels_avx512.c or
# kernels_avx2.c, e.g. OLD from `git show HEAD:src/kernels/kernels_avx512.c`.
# Defaults: q4, 1 thread, 20 rounds, 1 token (decode). AB_COPIES=N cycles
# N copies of the weight (default 64, so they come from memory; 1 keeps them
# in cache). AB_ROWS and AB_COLS set the weight's shape (default 1024 x
# 2048, an OLMoE expert). Needs the project built in build/
# (scripts/build.sh build).
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
old=$(realpath "$1") new=$(realpath "$2")
type=${3:-q4} threads=${4:-1} rounds=${5:-20} tokens=${6:-1}
isa=$(grep -o 'const moe_kernels moe_kernels_[a-z0-9]*' "$old" | head -1 | sed "s/.*moe_kernels_//" || true)
case "$isa" in
    avx512) flags="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c" ;;
    avx2) flags="-mavx2 -mfma -mf16c" ;;
    *) echo "kernel-ab.sh: $1: not an AVX2 or AVX-512 kernel file" >&2; exit 2 ;;
esac
for lib in libmoe.a libmoe_avx2.a; do
    [ -f "$root/build/$lib" ] || { echo "kernel-ab.sh: build/$lib missing: run scripts/build.sh build" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc="cc -std=c17 -O3 -DNDEBUG -D_GNU_SOURCE -fopenmp -Wall -Wextra -Werror -I$root/include -I$root/src -I$root/src/kernels"
# the file's own includes ("kernels.h") resolve against src/kernels
cp "$old" "$work/a.c"
cp "$new" "$work/b.c"
$cc $flags -Dmoe_kernels_$isa=kern_a -c "$work/a.c" -o "$work/a.o"
$cc $flags -Dmoe_kernels_$isa=kern_b -c "$work/b.c" -o "$work/b.o"
$cc -c "$root/bench/kernel_ab.c" -o "$work/ab.o"
$cc -c "$root/bench/bench_util.c" -o "$work/util.o"
libs="$root/build/libmoe.a $root/build/libmoe_avx2.a"
[ -f "$root/build/libmoe_avx512.a" ] && libs="$libs $root/build/libmoe_avx512.a"
cc -fopenmp "$work/ab.o" "$work/util.o" "$work/a.o" "$work/b.o" $libs -lopenblas -lm -o "$work/kernel_ab"
"$work/kernel_ab" "$type" "$threads" "$rounds" "$tokens"
