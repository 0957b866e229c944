#!/usr/bin/env bash
# The main job on the embedded default model: set up, then compile ResNet-50 to an .aras
# program, run it on the interpreter-simulator and compare its output with PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/arasc demo "${1:-resnet50}"
