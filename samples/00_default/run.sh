#!/usr/bin/env bash
# The main job on the bundled default model: inspect it, check that its linear interpreter is
# exact at a random input, and write the rewritten graphs to out/00_default/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${ONNXSCOPE:-$root/.venv/bin/onnxscope}"
model="$here/tinynet.onnx"
out="$root/out/00_default"
"$bin" inspect "$model"
echo
"$bin" verify "$model"
echo
"$bin" rewrite "$model" -o "$out"
