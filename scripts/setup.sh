#!/usr/bin/env bash
# Create .venv/ at the repo root: the CPU build of torch first (otherwise pip resolves torch to a
# multi-GB CUDA build), then arasc in editable mode with its test, plot, trained, onnx, zoo and sweep extras. Re-running is
# cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=".venv/.setup-$(sha256sum pyproject.toml | cut -c1-16)"
[ -f "$stamp" ] && exit 0
echo "arasc: setting up .venv (the first time takes a few minutes; log in .venv/setup.log)" >&2
[ -x .venv/bin/python ] || "$python" -m venv .venv
if ! {
  .venv/bin/python -m pip install --upgrade pip &&
  .venv/bin/python -m pip install torch==2.13.0 &&
  .venv/bin/python -m pip install -e '.[test,plot,trained,onnx,zoo,sweep]'
} > .venv/setup.log 2>&1; then
  tail -n 30 .venv/setup.log >&2
  echo "arasc: setup failed; full log in .venv/setup.log" >&2
  exit 1
fi
rm -f .venv/.setup-*
touch "$stamp"
