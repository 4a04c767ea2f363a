"""Dataset subjects for `onnxscope batch`, from scikit-image's bundled data (no download):

    python samples/datasets.py lfw_faces out/datasets/lfw_faces.npy      # 100 faces, 25x25 gray
    python samples/datasets.py lfw_nonfaces out/datasets/lfw_nonfaces.npy
    python samples/datasets.py photos out/datasets/photos                # a folder of PNGs

lfw_subset holds 100 face crops of Labeled Faces in the Wild, then 100 non-faces, each 25x25 gray
in [0, 1]: written as a uint8 stack [100, 25, 25] (`batch` reads each row as an 8-bit gray image).
The photographs are scikit-image's own test images (astronaut, coffee, chelsea...), RGB, at their
own sizes, written as PNG files. Tour 1's bias-share figure over 100 faces is then one command
(samples/01_classification/README.md):

    onnxscope batch FER.onnx out/datasets/lfw_faces.npy -o out/01_classification/batch \
        --logits --color gray --labels angry,disgust,fear,happy,sad,surprise,neutral
"""

from __future__ import annotations

import os
import sys

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def lfw(part: str) -> np.ndarray:
    """lfw_subset's faces (part 'faces', its first 100) or non-faces, as uint8 [100, 25, 25]."""
    from skimage import data

    images = data.lfw_subset()
    images = images[:100] if part == "faces" else images[100:]
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled RGB photographs, by name (uint8 H×W×3)."""
    from skimage import data

    found = {}
    for name in PHOTOS:
        image = getattr(data, name)()  # (bundled with scikit-image: no download)
        found[name] = np.asarray(image, np.uint8)[..., :3]
    return found


def write(what: str, target: str) -> str:
    """Write dataset `what` (lfw_faces, lfw_nonfaces, photos) at `target`; returns it."""
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    if what in ("lfw_faces", "lfw_nonfaces"):
        np.save(target, lfw("faces" if what == "lfw_faces" else "nonfaces"))
        return target if target.endswith(".npy") else target + ".npy"
    if what == "photos":
        from PIL import Image

        os.makedirs(target, exist_ok=True)
        for name, image in photos().items():
            Image.fromarray(image).save(os.path.join(target, f"{name}.png"))
        return target
    raise ValueError(f"unknown dataset '{what}': lfw_faces, lfw_nonfaces or photos")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: datasets.py lfw_faces|lfw_nonfaces|photos TARGET", file=sys.stderr)
        return 2
    print(write(*argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
