#!/usr/bin/env bash
# The main job on the bundled default subject: inspect the model, check that its linear
# interpreter is exact at a random input, write the rewritten graphs to out/00_default/graphs/, then
# interpret the bundled image and write an HTML report (the last line printed is its path).
# MODEL, IMAGE, IMAGE_FLAGS (the image conventions and labels) and OUT_DIR can be overridden, e.g.
#   MODEL=samples/00_default/tinynet.onnx IMAGE_FLAGS= bash samples/00_default/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${ONNXSCOPE:-$root/.venv/bin/onnxscope}"
model="${MODEL:-$here/onet.onnx}"    # MTCNN's ONet (see NOTICE)
image="${IMAGE:-$here/face.png}"     # a 48x48 face crop
# facenet-pytorch feeds ONet RGB pixels as (p - 127.5) / 128; prob is (not face, face), read
# through its logits (--logits: the Softmax is cut, votes + bias = logit)
read -r -a image_flags <<< "${IMAGE_FLAGS---scale 1 --mean 127.5 --std 128 --labels not_face,face --logits}"
out="${OUT_DIR:-$root/out/00_default}"
"$bin" inspect "$model"
echo
"$bin" verify "$model"
echo
"$bin" rewrite "$model" -o "$out/graphs"
echo
echo "Report of $(basename "$model") at $(basename "$image"):"
"$bin" report "$model" "$image" -o "$out/report" "${image_flags[@]}"
