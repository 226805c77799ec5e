#!/usr/bin/env bash
# `make test`: lint, unit tests, then the tiers that need services.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python -m pytest tests/unit
