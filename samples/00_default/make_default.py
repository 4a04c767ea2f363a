"""Regenerates the bundled default subject of the main job (needs the [torch] extra and
scikit-image; see NOTICE for the sources and licences):

    .venv/bin/python samples/00_default/make_default.py

- onet.onnx: MTCNN's output network (ONet) with its pretrained weights, fetched from
  facenet-pytorch's wheel (samples/subjects.py) and exported by samples/mtcnn.py. Input x
  [1, 3, 48, 48], RGB, (pixel - 127.5) / 128 as facenet-pytorch feeds it; outputs prob (face /
  non-face softmax), box (box regression) and landmarks (five points: x of each, then y, as
  fractions of the crop).
- face.png: a 48x48 crop of Eileen Collins' face from skimage's astronaut (NASA, public domain),
  a 112x112 square around the face reduced by area averaging as MTCNN does. ONet gives it face
  probability 0.9998 and puts the five landmarks on the eyes, the nose tip and the mouth corners.
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

CROP = (62, 167, 112)  # top, left, side of the square around the face in astronaut()
SIZE = 48
MEAN, STD = 127.5, 128.0  # facenet-pytorch's normalization: (pixel - 127.5) / 128


def face() -> np.ndarray:
    """The face crop, uint8 [48, 48, 3]."""
    from PIL import Image
    from skimage import data

    top, left, side = CROP
    square = data.astronaut()[top : top + side, left : left + side]
    return np.asarray(Image.fromarray(square).resize((SIZE, SIZE), Image.Resampling.BOX))


def main() -> None:
    import mtcnn  # needs the [torch] extra
    from PIL import Image

    mtcnn.export("onet", os.path.join(HERE, "onet.onnx"))
    Image.fromarray(face()).save(os.path.join(HERE, "face.png"))


if __name__ == "__main__":
    main()
