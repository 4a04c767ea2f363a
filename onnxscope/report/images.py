"""Turning an image file into a model input, with every convention stated and recorded.

    x, conventions = load_image("face.png", model_dims=[1, 3, 48, 48])

A pixel p (in the file's units, 0-255 for 8-bit images) becomes (p · scale − mean) / std, laid out
as the model's input (NCHW or NHWC, batch 1). Defaults come from the model's input shape: the
layout from where the 1- or 3-channel axis sits, the colour from the channel count (RGB or gray),
the size from the fixed spatial dims (the image is resized to them; with free dims it keeps its
own size), scale 1/255 for 8-bit files and mean 0, std 1. A `.npy` file whose shape already is
the input's shape is used as it is; any other `.npy` is read as an H×W or H×W×C image.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from ..files.inputs import parse_number

LAYOUTS = ("NCHW", "NHWC")
COLORS = ("rgb", "bgr", "gray")
RESIZES = ("crop", "fit", "stretch")  # aspect kept and centre-cropped; kept and padded; not kept


@dataclass
class Conventions:
    """How the image became the model input (all of it goes into the report)."""

    source: str
    layout: str
    color: str
    size: tuple[int, int]  # (H, W) fed to the model
    original_size: tuple[int, int]  # (H, W) of the file
    scale: float
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def parse_numbers(text: str | float | tuple | list) -> tuple[float, ...]:
    """Per-channel values from '0.485,0.456,0.406' (or one value for every channel)."""
    if isinstance(text, (tuple, list)):
        return tuple(parse_number(t) for t in text)
    return tuple(parse_number(t) for t in str(text).split(","))


def infer_layout(dims) -> str:
    """NCHW or NHWC from a rank-4 input shape: the axis of size 1 or 3 that the other is not."""
    channel_like = lambda d: isinstance(d, int) and d in (1, 3)  # noqa: E731
    if len(dims) == 4 and channel_like(dims[3]) and not channel_like(dims[1]):
        return "NHWC"
    return "NCHW"


def _read(path: str) -> tuple[np.ndarray, bool]:
    """The file as a float32 H×W×C array, and whether it came from an 8-bit image."""
    if not os.path.isfile(path):
        raise InputError(f"Image file '{path}' does not exist or is not a file.")
    if path.lower().endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
            return array, array.dtype == np.uint8
        except Exception as exc:
            raise InputError(f"Could not read '{path}' as .npy: {exc}") from None
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            eight_bit = im.mode in ("L", "RGB", "RGBA", "P", "LA")
            im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA") else im.mode)
            array = np.asarray(im, dtype=np.float32)
    except Exception as exc:
        raise InputError(
            f"Could not read '{path}' as an image ({type(exc).__name__}: {exc})."
        ) from None
    return array, eight_bit


def _to_channels(array: np.ndarray, channels: int, color: str, path: str) -> np.ndarray:
    """H×W×C in the wanted channel count and order (gray ↔ RGB by ITU-R 601 luma)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise InputError(f"'{path}' has shape {array.shape}; expected an H×W or H×W×C image.")
    have = array.shape[2]
    if have == channels == 1 or (have == channels == 3):
        out = array
    elif have == 1 and channels == 3:
        out = np.repeat(array, 3, axis=2)
    elif have == 3 and channels == 1:
        return (array @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
    else:
        raise InputError(
            f"'{path}' has {have} channel(s) but the model's input takes {channels}; "
            "give an image with 1 or 3 channels (or a .npy shaped like the input)."
        )
    return out[:, :, ::-1] if color == "bgr" else out


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an H×W×C float array, channel by channel."""
    from PIL import Image

    h, w = size
    return np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(array[:, :, c], np.float32)).resize(
                    (w, h), Image.Resampling.BICUBIC
                )
            )
            for c in range(array.shape[2])
        ],
        axis=2,
    )


def _fitted(array, original, target, mode: str):
    """The H×W×C array brought to `target` (H, W) as `mode` says, and a note saying how."""
    (h, w), (th, tw) = original, target
    lo, hi = array.min(), array.max()
    shown = f"{h}×{w}"
    if mode == "stretch":
        out = _resize(array, target)
        note = f"resized (bicubic) from {shown}, aspect ratio not kept (--resize stretch)"
    else:
        scale = max(th / h, tw / w) if mode == "crop" else min(th / h, tw / w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        scaled = _resize(array, size) if size != (h, w) else array
        if mode == "crop":
            y0, x0 = (size[0] - th) // 2, (size[1] - tw) // 2
            out = scaled[y0 : y0 + th, x0 : x0 + tw]
            note = (
                f"resized (bicubic, aspect kept) from {shown} to {size[0]}×{size[1]}, then the "
                f"centre {th}×{tw} cropped (--resize crop)"
            )
        else:
            out = np.zeros((th, tw, array.shape[2]), np.float32)
            y0, x0 = (th - size[0]) // 2, (tw - size[1]) // 2
            out[y0 : y0 + size[0], x0 : x0 + size[1]] = scaled
            note = (
                f"resized (bicubic, aspect kept) from {shown} to {size[0]}×{size[1]}, padded "
                f"with black to {th}×{tw} (--resize fit)"
            )
    return np.clip(out, min(lo, 0) if mode == "fit" else lo, hi), note  # no bicubic overshoot


def load_image(
    path: str | os.PathLike | np.ndarray,
    model_dims,
    *,
    layout: str | None = None,
    color: str | None = None,
    size: tuple[int, int] | None = None,
    scale: str | float | None = None,
    mean=None,
    std=None,
    resize: str | None = None,
    dtype=np.float32,
) -> tuple[np.ndarray, Conventions]:
    """The model input (batch 1) made from an image file, and the conventions used.

    path: a PNG/JPEG (anything pillow reads) or .npy file, or an array (taken as a .npy's
    content: the input itself if it has the input's shape, else an H×W(×C) image; uint8 arrays
    get the 8-bit default scale).
    model_dims: the input's dims as the model declares them (ints, names or None for free ones).
    layout 'NCHW'/'NHWC', color 'rgb'/'bgr'/'gray', size (H, W) for free spatial dims, scale
    ('1/255' or a number), mean and std (one value or one per channel): None picks the default.
    resize, where the image's size is not the model's: 'crop' (the default: bicubic with the
    aspect ratio kept, to cover the target, then the centre cropped), 'fit' (aspect kept, inside
    the target, padded with black) or 'stretch' (to the target's size, aspect changed).
    """
    if isinstance(path, np.ndarray):  # an array in memory: like a .npy file
        array, eight_bit, path, raw = path, path.dtype == np.uint8, "(array)", True
    else:
        path = os.fspath(path)
        array, eight_bit = _read(path)
        raw = path.lower().endswith(".npy")
    fixed = lambda d: isinstance(d, int) and d > 0  # noqa: E731
    if raw and array.ndim == len(model_dims):
        if all(not fixed(d) or d == s for d, s in zip(model_dims, array.shape)):
            layout = layout or infer_layout(model_dims)
            hw = tuple(array.shape[1:3] if layout == "NHWC" else array.shape[-2:])
            note = ["the .npy is the model input as it is"]
            return array.astype(dtype), Conventions(
                path, layout, "as given", hw, hw, 1.0, notes=note
            )
    if len(model_dims) != 4:
        raise InputError(
            f"The model's input has shape {list(model_dims)}; images are read only for rank-4 "
            "(NCHW or NHWC) inputs. Give a .npy shaped like the input instead."
        )
    layout = (layout or infer_layout(model_dims)).upper()
    if layout not in LAYOUTS:
        raise InputError(f"Layout must be one of {LAYOUTS}, got '{layout}'.")
    nchw = model_dims if layout == "NCHW" else [model_dims[i] for i in (0, 3, 1, 2)]
    c_dim, h_dim, w_dim = nchw[1:]
    channels = c_dim if fixed(c_dim) else (array.shape[2] if array.ndim == 3 else 1)
    color = (color or ("gray" if channels == 1 else "rgb")).lower()
    if color not in COLORS or (color == "gray") != (channels == 1):
        raise InputError(
            f"Colour '{color}' does not fit an input of {channels} channel(s); use "
            f"{'gray' if channels == 1 else 'rgb or bgr'}."
        )
    array = _to_channels(np.asarray(array, np.float32), channels, color, path)
    original = array.shape[:2]
    notes = []
    if fixed(h_dim) and fixed(w_dim):
        target = (int(h_dim), int(w_dim))
        if size is not None and tuple(size) != target:
            raise InputError(f"The model's input is fixed at {target[0]}×{target[1]}; drop --size.")
    else:
        target = tuple(int(s) for s in size) if size is not None else original
    if target != original:
        mode = resize or "crop"
        if mode not in RESIZES:
            raise InputError(f"resize must be one of {RESIZES}, not {mode!r}.")
        array, note = _fitted(array, original, target, mode)
        notes.append(note)
    scale_value = parse_number(scale) if scale is not None else (1 / 255 if eight_bit else 1.0)
    mean_v = parse_numbers(mean) if mean is not None else (0.0,)
    std_v = parse_numbers(std) if std is not None else (1.0,)
    for name, values in (("mean", mean_v), ("std", std_v)):
        if len(values) not in (1, channels):
            raise InputError(f"--{name} needs 1 or {channels} values, got {len(values)}.")
    if any(s == 0 for s in std_v):
        raise InputError("--std values must be non-zero.")
    x = (array * scale_value - np.array(mean_v, np.float32)) / np.array(std_v, np.float32)
    x = x[None] if layout == "NHWC" else x.transpose(2, 0, 1)[None]
    conv = Conventions(path, layout, color, target, original, scale_value, mean_v, std_v, notes)
    return np.ascontiguousarray(x, dtype=dtype), conv


def to_hwc(array: np.ndarray, layout: str) -> np.ndarray:
    """A rank-4 batch-1 tensor (or rank-3 without batch) as H×W×C."""
    a = array[0] if array.ndim == 4 else array
    return a if layout == "NHWC" else a.transpose(1, 2, 0)


def display_image(x: np.ndarray, layout: str, color: str = "rgb") -> np.ndarray:
    """The model input as an H×W (gray) or H×W×3 (RGB) picture in [0, 1], for overlays: each
    channel's range stretched together (the normalization undone up to an affine map)."""
    a = to_hwc(x, layout).astype(np.float64)
    if a.shape[2] == 3:
        a = a[:, :, ::-1] if color == "bgr" else a
    else:
        a = a.mean(axis=2)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
