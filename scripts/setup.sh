#!/usr/bin/env bash
# Installs what secadero needs on a fresh Debian 12 / Raspberry Pi OS machine:
# the Debian packages (Mosquitto, InfluxDB 1.x, Gammu) when missing, and a
# virtual environment in .venv with the project and its Python packages.
# Safe to run again: it only does what is missing.
#
# --browser also installs Debian's `chromium` (about 370 MB) and `firefox-esr`
# (about 300 MB), which only the web app's tests need (Chromium through Playwright,
# Firefox through WebDriver BiDi: docs/webapp.md); ./run-tests asks for it.
set -euo pipefail
cd "$(dirname "$0")/.."

browser=0
for argument in "$@"; do
  case "$argument" in
    --browser) browser=1 ;;
    *) printf 'setup: unknown option %s (known: --browser)\n' "$argument" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }

# command -> Debian package
declare -A PACKAGES=(
  [mosquitto]=mosquitto
  [mosquitto_pub]=mosquitto-clients
  [influxd]=influxdb
  [gammu-smsd]=gammu-smsd
  [gammu]=gammu
)
if [ "$browser" = 1 ]; then
  PACKAGES[chromium]=chromium
  PACKAGES[firefox-esr]=firefox-esr
fi
missing=()
for command in "${!PACKAGES[@]}"; do
  if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then
    missing+=("${PACKAGES[$command]}")
  fi
done
# Gammu SMSD's SQL service on SQLite (libdbi's driver, no command of its own): the
# modem watcher reads the network registration from its phones table (docs/alerts.md).
if ! compgen -G '/usr/lib/*/dbd/libdbdsqlite3.so' >/dev/null; then
  missing+=(libdbd-sqlite3)
fi
python_ok=1
python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || python_ok=0
if [ "$python_ok" = 0 ]; then
  missing+=(python3 python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" = 0 ]; then
    apt_get=(apt-get)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt_get=(sudo apt-get)
  else
    say "these Debian packages are missing: ${missing[*]}"
    say "installing them needs root. Run once:"
    say "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    say "then run this command again."
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${apt_get[@]}" update -q >/dev/null
  "${apt_get[@]}" install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The project's own Python packages, in .venv, reinstalled when pyproject.toml changes.
if [ ! -x .venv/bin/python ]; then
  say "creating the virtual environment in .venv"
  python3 -m venv .venv
fi
stamp=.venv/.secadero-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  say "installing Python packages into .venv (a minute on a fresh machine)"
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
         && .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]'; } \
         >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    say "installing Python packages failed; the whole log is in $log"
    exit 1
  fi
  echo "$wanted" > "$stamp"
fi
