#!/usr/bin/env bash
# Coverage-guided fuzzing of the API and the decoders (fuzz/fuzz_api.py): a bounded
# number of inputs per target, at low CPU priority, on one core.
#   fuzz/run.sh [RUNS] [TARGET...]     (default: 100000 inputs; targets decoders api)
# The corpus grows in var/fuzz/<target>/ between runs (seeded from fuzz/seeds/); a
# crash is saved there as crash-<sha1> and stops the run with its traceback.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-100000}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(decoders api)
if ! .venv/bin/python -c 'import atheris' 2>/dev/null; then
  .venv/bin/pip install --disable-pip-version-check -q -e '.[fuzz]'
fi
root="$(pwd)"
for target in "${targets[@]}"; do
  corpus="var/fuzz/$target"
  mkdir -p "$corpus"
  if [ -d "fuzz/seeds/$target" ]; then
    cp -n "fuzz/seeds/$target"/* "$corpus"/  # valid inputs to start from
  fi
  echo "fuzz: $target, $runs inputs"
  (cd "$corpus" && nice -n 19 "$root/.venv/bin/python" "$root/fuzz/fuzz_api.py" \
      --target="$target" -runs="$runs" -rss_limit_mb=2048 -max_len=4096 \
      -print_final_stats=1 .)
done
