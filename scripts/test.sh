#!/usr/bin/env bash
# Set up, lint (ruff), type-check (mypy, scripts/typecheck.py), then run the whole test suite on
# both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python scripts/typecheck.py
exec .venv/bin/python -m pytest -n 2 "$@"
