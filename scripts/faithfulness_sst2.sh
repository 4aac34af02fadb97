#!/usr/bin/env bash
# Faithfulness table for the README: minilm-sst2, the first 200 sentences of SST-2 test, every method.
# Usage: scripts/faithfulness_sst2.sh [BUNDLE_DIR]   (exports ../shared/models/minilm-sst2 there if it is missing)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${XAI_ONNX_SHARED:-$here/../shared}"
bundle="${1:-$here/bundles/minilm-sst2}"
[ -f "$bundle/manifest.json" ] || xai-onnx export "$shared/models/minilm-sst2" "$bundle"
mkdir -p "$here/scripts/results"
xai-onnx evaluate "$bundle" --data "$shared/data/sst2/stsa.binary.test" --limit 200 --threads 2 \
  --methods ig,saliency,grad_x_input,occlusion,fd --out "$here/scripts/results/faithfulness_sst2.json"
