#!/usr/bin/env bash
# The main job on the embedded default model: set up, then lower ResNet-50 to the layer IR and
# print its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/arasc ir "${1:-resnet50}" --summary
