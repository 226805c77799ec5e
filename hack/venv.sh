#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install the project
# with the extras asked for (default: everything the tests need).
# Re-running is cheap: pip is skipped when pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-operator,trainer,test}"
venv="${VENV:-.venv}"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/_}"
if [ -f "$stamp" ]; then exit 0; fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
echo "installing carbonaware[$extras] into $venv (first time: torch is large, a few minutes)"
"$venv/bin/python" -m pip install -q -e ".[$extras]"
rm -f "$venv"/.installed-*
touch "$stamp"
