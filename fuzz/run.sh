#!/usr/bin/env bash
# Coverage-guided fuzzing of the API and the decoders (fuzz/fuzz_api.py): a bounded
# number of inputs per target (default 20000), at low CPU priority, one core.
# The corpus grows in var/fuzz/<target>/ between runs; a crash is saved there too.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20000}"
if ! .venv/bin/python -c 'import atheris' 2>/dev/null; then
  .venv/bin/pip install --disable-pip-version-check -q -e '.[fuzz]'
fi
for target in decoders api; do
  corpus="var/fuzz/$target"
  mkdir -p "$corpus"
  echo "fuzz: $target, $runs inputs"
  (cd "$corpus" && nice -n 19 ../../../.venv/bin/python ../../../fuzz/fuzz_api.py \
      --target="$target" -runs="$runs" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 .)
done
