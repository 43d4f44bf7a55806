#!/usr/bin/env bash
# The wheels benchmarks/gpu_trial.py uses that a GPU machine without network may lack, fetched
# here (with PyPI) into benchmarks/wheels/ (git-ignored), at most 64 MiB in all: what a device
# run carries. Groups in order of worth; a group that would pass the limit is left out, said so.
#   1. bitsandbytes (4-bit QLoRA; needs only torch, numpy, packaging)
#   2. trl + datasets + their binary deps (TRL's SFTTrainer beside llmhpo's training)
# lm-eval (9 MB, plus datasets, pyarrow, scikit-learn, ...) does not fit beside them.
# usage: PY=3.12 benchmarks/gpu_wheels.sh   (PY: the GPU machine's Python, for binary wheels)
# then, on the GPU machine: pip install --no-index --no-deps benchmarks/wheels/*.whl
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-3.12}
LIMIT=$((64 * 1024 * 1024))
OUT=wheels
PIP=${PIP:-python3 -m pip}
mkdir -p "$OUT"
platform=(--only-binary=:all: --python-version "$PY" --platform manylinux_2_28_x86_64
          --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)

size() {  # total bytes of the files given (0 for a glob that matched nothing)
  local total=0 f
  for f in "$@"; do [[ -f $f ]] && total=$((total + $(stat -c %s "$f"))); done
  echo "$total"
}

group() {  # group NAME PACKAGE...: download with no deps; keep it if the total stays under the limit
  local name=$1; shift
  local tmp; tmp=$(mktemp -d)
  if ! $PIP download --quiet --no-deps "${platform[@]}" -d "$tmp" "$@"; then
    echo "group $name: download failed, left out"; rm -rf "$tmp"; return
  fi
  local have new
  have=$(size "$OUT"/*.whl)
  new=$(size "$tmp"/*.whl)
  if (( have + new > LIMIT )); then
    echo "group $name: $((new / 1048576)) MiB would bring the total to $(((have + new) / 1048576)) MiB > 64 MiB; left out"
  else
    mv "$tmp"/*.whl "$OUT"/
    echo "group $name: kept"
  fi
  rm -rf "$tmp"
}

group bitsandbytes bitsandbytes
group trl trl datasets pyarrow dill multiprocess xxhash pandas
echo "wheels in benchmarks/$OUT:"
for w in "$OUT"/*.whl; do
  awk -v b="$(stat -c %s "$w")" -v n="$(basename "$w")" 'BEGIN { printf "  %6.1f MiB  %s\n", b / 1048576, n }'
done
awk -v b="$(size "$OUT"/*.whl)" 'BEGIN { printf "  total %.1f MiB (limit 64)\n", b / 1048576 }'
