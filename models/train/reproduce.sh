#!/bin/sh
# Rebuild the bundled demo model moe-tiny-austen from scratch (about 85 min on
# one CPU thread).  It installs what it needs with apt-get: python3-torch
# (1.13), python3-numpy, python3-matplotlib and the Debian package
# r-cran-janeaustenr (R itself is not run; data.py reads the package's data
# files), and builds moe (scripts/build.sh build).  Run from the repository
# root, after scripts/install-deps.sh.
set -eu
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    python3-torch python3-numpy python3-matplotlib $(cat models/train/packages.txt)
scripts/build.sh build
W=${WORK:-/tmp/moe-tiny-austen-work}
PY=/usr/bin/python3
mkdir -p "$W"
$PY models/train/data.py -o "$W/data"
$PY models/train/tokenizer.py train -i "$W/data/train.txt" -o "$W/tok" --vocab 4096 --ctx 256
$PY models/train/train.py --data "$W/data" --tok "$W/tok" -o models/moe-tiny-austen-hf \
    --steps 2000 --batch 8 --lr 2e-3 --threads 1 --max-minutes 110
cp "$W/data/heldout.txt" models/moe-tiny-austen-heldout.txt
$PY models/train/analyze.py models/moe-tiny-austen-hf models/moe-tiny-austen-heldout.txt \
    --loss-png models/moe-tiny-austen-loss.png --experts-png models/moe-tiny-austen-experts.png \
    --json models/moe-tiny-austen-hf/expert_counts.json
$PY models/train/eval_ppl.py models/moe-tiny-austen-hf models/moe-tiny-austen-heldout.txt
build/tools/convert/moe-convert models/moe-tiny-austen-hf -o models/moe-tiny-austen.moe
