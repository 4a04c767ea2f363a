"""The explorer: a page of `onnxscope serve` (/explore/NAME) that reads one served model live at
its current input, every number through the server's reading graphs (NAME.votes, NAME.rows,
NAME.columns, NAME.scope) and the model's mask graph; nothing is computed ahead for fixed
positions.

`Explorer` holds the current input of one model and answers the page's questions as plain
dicts; maps travel as {"shape": [...], "data": base64 of little-endian float32}, which the page
colours itself (sign, percentile clip, overlay opacity: the report's display options).
Routes: routes.py; the page: page.html, explore.js, explore.css (package files)."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np

from ...errors import InputError
from ..models import RequestError, ServedModel

MAX_UPLOAD_BYTES = 8 << 20  # an uploaded image file
MAX_PIXELS = 16_000_000  # decoded pixels of an uploaded image (before it is resized)
MAX_CROP = 32  # largest side of a dragged crop (its singular vectors)
MAX_K = 6  # most singular triplets
TOLERANCE = 1e-5  # the badge: relative reconstruction, linearity and adjoint gaps
READINGS_NEEDED = ("votes", "rows", "columns", "scope")


def encode(array: np.ndarray) -> dict:
    """A map as the page receives it: shape and base64 float32 (little-endian)."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode(entry: dict) -> np.ndarray:
    """The inverse of `encode` (for tests and clients)."""
    data = np.frombuffer(base64.b64decode(entry["data"]), dtype="<f4")
    return data.reshape(entry["shape"])


def decode_upload(body: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Uploaded image bytes as an H×W(×C) array (uint8 for 8-bit images), or a 400 saying why
    not. The pixel count is checked from the header, before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    if not body:
        raise RequestError("The upload is empty: send the bytes of a PNG or JPEG image.")
    try:
        with Image.open(io.BytesIO(body)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise RequestError(
                    f"The image has {width}×{height} pixels; the explorer decodes at most "
                    f"{max_pixels} pixels.",
                    413,
                )
            im.load()
            if im.mode not in ("L", "RGB"):
                im = im.convert("L" if im.mode in ("1", "I;16", "I", "F") else "RGB")
            return np.asarray(im)
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise RequestError(
            "The upload is not an image this server can read (PNG, JPEG, GIF, BMP, WebP...)."
        ) from None


def default_picture(shape_hw: tuple[int, int]) -> np.ndarray:
    """A deterministic picture (uint8 RGB) for models without a bundled image: a disc on a
    gradient, so that rows and columns have edges to show."""
    h, w = shape_hw
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w, 1)
    disc = ((yy - 0.5) ** 2 + (xx - 0.45) ** 2 < 0.08).astype(float)
    rgb = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.25 + 0.6 * disc], axis=-1)
    return (255 * np.clip(rgb, 0, 1)).astype(np.uint8)


class Explorer:
    """One explored model: its served graphs, the image conventions, labels, the current input.

    `plain` is the served plain model (with `artifacts` and `read_output`); `service_models`
    maps a name to every served model. Requests are answered under a lock: the current input
    changes only between whole answers."""

    def __init__(
        self,
        plain: ServedModel,
        served: dict[str, ServedModel],
        *,
        conventions: dict | None = None,
        labels=None,
    ):
        missing = [r for r in READINGS_NEEDED if f"{plain.name}.{r}" not in served]
        if missing or plain.artifacts is None:
            raise InputError(
                f"The explorer of '{plain.name}' needs its readings {list(READINGS_NEEDED)} "
                f"served (missing: {missing}); drop --readings."
            )
        if len(plain.inputs) != 1:
            raise InputError(
                f"The explorer reads one-input models; '{plain.name}' has inputs "
                f"{list(plain.inputs)}."
            )
        self.name, self.plain = plain.name, plain
        self.votes, self.rows, self.columns, self.scope = (
            served[f"{plain.name}.{r}"] for r in READINGS_NEEDED
        )
        arts = plain.artifacts
        self.wrt = arts.manifest["wrt"]
        self.output = plain.read_output
        self.x_spec = plain.inputs[self.wrt]
        self.x_shape = tuple(self.x_spec.shape)
        self.y_shape = tuple(self.votes.outputs[self.output].shape)
        self.conventions_options = dict(conventions or {})
        self.labels = list(labels) if labels else None
        prefixes = arts.scope_prefixes()
        self.linear_probe = prefixes["linear"] + arts.probe
        self.adjoint_probe = prefixes["adjoint"] + arts.adjoint_probes[self.output]
        # every output's adjoint probe is fed (zeros but the read one's): they share K_adjoint
        self.other_adjoint_probes = [
            prefixes["adjoint"] + p for o, p in arts.adjoint_probes.items() if o != self.output
        ]
        self.linear_out = prefixes["linear"] + self.output
        self.bias_out = prefixes["bias"] + self.output
        self.adjoint_out = prefixes["adjoint"] + self.wrt
        outputs = set(arts.manifest["outputs"])
        self.mask_names = [o.name for o in arts.mask.graph.output if o.name not in outputs]
        self._mask_model = ServedModel(
            f"{plain.name}.masks",
            arts.mask,
            list(plain.inputs.values()),
            [],
            weights=arts.weights,
            providers=plain.providers,
            threads=plain.threads,
        )
        self.lock = threading.Lock()
        self.x: np.ndarray | None = None
        self.conventions: dict = {}
        self._at_x: dict = {}  # answers that depend on x only (outputs, bias, masks)

    # -- the input -----------------------------------------------------------------------------
    @property
    def image_output(self) -> bool:
        """Whether the read output is an image (N, C, H, W with H, W > 1), not a vector."""
        s = self.y_shape
        return len(s) == 4 and s[2] > 1 and s[3] > 1

    @property
    def layout(self) -> str:
        from ...report.images import infer_layout

        return self.conventions_options.get("layout") or infer_layout(self.x_shape)

    def set_input(self, picture, source: str) -> None:
        """Make the model input from an image (a path, or an array as `load_image` takes it)
        with the model's conventions, and make it current."""
        from ...report.images import load_image

        try:
            x, conventions = load_image(
                picture, list(self.x_shape), dtype=self.x_spec.dtype, **self.conventions_options
            )
        except InputError as exc:
            raise RequestError(str(exc)) from None
        if tuple(x.shape) != self.x_shape:
            raise RequestError(
                f"The image became an input of shape {list(x.shape)}; the model takes "
                f"{list(self.x_shape)}."
            )
        self.conventions = {**conventions.as_dict(), "source": source}
        self.x = x
        self._at_x = {}

    def _scope_run(self, z=None, w=None) -> dict[str, np.ndarray]:
        feeds = {self.wrt: self.x}
        if z is not None:
            feeds[self.linear_probe] = np.ascontiguousarray(z, self.x.dtype)
        if w is not None:
            feeds[self.adjoint_probe] = np.ascontiguousarray(w, np.float32)
            for name in self.other_adjoint_probes:
                spec = self.scope.inputs[name]
                feeds[name] = np.zeros((len(w), *spec.shape[1:]), spec.dtype)
        return self.scope.infer(feeds)

    def apply_all(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """A_x z for a batch of probes, through the scope graph."""
        z = np.asarray(z).reshape(-1, *self.x_shape)
        return {self.output: self._in_chunks(z, "z", self.linear_out)}

    def apply_T_all(self, w: dict[str, np.ndarray]) -> np.ndarray:
        """A_x^T w for a batch of output probes, through the scope graph's adjoint."""
        w = np.asarray(w[self.output]).reshape(-1, *self.y_shape)
        return self._in_chunks(w, "w", self.adjoint_out)

    def _in_chunks(self, probes: np.ndarray, role: str, answer: str) -> np.ndarray:
        """The scope graph's `answer` for probes fed as `role`, in runs of its max batch."""
        step = self.scope.max_batch
        parts = [
            self._scope_run(**{role: probes[i : i + step]})[answer]
            for i in range(0, len(probes), step)
        ]
        return np.concatenate(parts)

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        return {self.output: self._at("plain")[self.output]}

    def _single_name(self) -> str:
        return self.output

    def _at(self, what: str) -> dict:
        """Answers that depend on the input only, computed once per input."""
        if what not in self._at_x:
            if what == "plain":
                self._at_x[what] = self.plain.infer({self.wrt: self.x})
            elif what == "masks":
                session = self._mask_model.session
                values = session.run(self.mask_names, {self.wrt: self.x})
                self._at_x[what] = dict(zip(self.mask_names, values))
            else:  # A_x x (one probe: [1, *y]) and c_x (shaped as y)
                self._at_x[what] = self._scope_run(z=self.x[None])
        return self._at_x[what]

    # -- the page's questions -----------------------------------------------------------------
    def state(self) -> dict:
        """The model, the conventions, the input and its outputs: what the page draws first."""
        from ...report.images import display_image

        y = self._at("plain")[self.output]
        answer = {
            "name": self.name,
            "input": {"name": self.wrt, "shape": list(self.x_shape), "layout": self.layout},
            "output": {"name": self.output, "shape": list(self.y_shape)},
            "kind": "image" if self.image_output else "vector",
            "conventions": self.conventions,
            "picture": encode(display_image(self.x, self.layout, self.conventions.get("color"))),
            "y": encode(y),
            "layers": [{"name": n, "shape": list(v.shape)} for n, v in self._at("masks").items()],
            "limits": {"upload_bytes": MAX_UPLOAD_BYTES, "pixels": MAX_PIXELS, "crop": MAX_CROP},
        }
        if not self.image_output:
            affine = self._at("affine")
            answer["classes"] = {
                "labels": self._labels(int(np.prod(self.y_shape))),
                "vote_sum": affine[self.linear_out].reshape(-1).tolist(),
                "bias": affine[self.bias_out].reshape(-1).tolist(),
                "output": y.reshape(-1).tolist(),
            }
        return answer

    def _labels(self, count: int) -> list[str]:
        if self.labels and len(self.labels) == count:
            return self.labels
        return [str(i) for i in range(count)]

    def class_votes(self, k: int) -> dict:
        """Votes x ⊙ A_x^T e_k of class k, its Σ votes, bias and bias share (votes graph)."""
        size = int(np.prod(self.y_shape))
        if not 0 <= k < size:
            raise RequestError(f"class must be an index from 0 to {size - 1}; got {k}.")
        got = self.votes.infer({self.wrt: self.x, _index(self.votes): np.array([k], np.int64)})
        votes, bias = got["votes"][0], float(got["bias"][0])
        vote_sum = float(votes.sum(dtype=np.float64))
        total = abs(vote_sum) + abs(bias)
        return {
            "class": k,
            "label": self._labels(size)[k],
            "votes": encode(votes),
            "vote_sum": vote_sum,
            "bias": bias,
            "bias_share": abs(bias) / total if total > 0 else 0.0,
            "output": float(self._at("plain")[self.output].reshape(-1)[k]),
        }

    def _flat(self, shape, position: tuple[int, ...], what: str) -> int:
        """The flat index of (c, y, x) in a batch-1 image tensor of `shape` (its layout)."""
        c, y, x = position
        nhwc = what == "input" and self.layout == "NHWC"
        dims = (shape[3], shape[1], shape[2]) if nhwc else tuple(shape[1:4])
        for value, size, axis in zip((c, y, x), dims, ("c", "y", "x")):
            if not 0 <= value < size:
                raise RequestError(
                    f"{axis}={value} is outside the {what} (size {size} along {axis}); "
                    f"the {what} is {list(shape)}."
                )
        index = (0, y, x, c) if nhwc else (0, c, y, x)
        return int(np.ravel_multi_index(index, shape))

    def row(self, c: int, y: int, x: int) -> dict:
        """Row A_x^T e_i of output pixel (c, y, x): what it looks at (rows graph)."""
        if not self.image_output:
            raise RequestError(f"Rows at (c, y, x) need an image output; '{self.output}' is not.")
        i = self._flat(self.y_shape, (c, y, x), "output")
        got = self.rows.infer({self.wrt: self.x, _index(self.rows): np.array([i], np.int64)})
        return {"at": [c, y, x], "row": encode(got["rows"][0]),
                "value": float(self._at("plain")[self.output].reshape(-1)[i])}  # fmt: skip

    def column(self, c: int, y: int, x: int) -> dict:
        """Column A_x e_j of input pixel (c, y, x): where it goes (columns graph)."""
        if len(self.x_shape) != 4:
            raise RequestError("Columns at (c, y, x) need an image input.")
        j = self._flat(self.x_shape, (c, y, x), "input")
        got = self.columns.infer({self.wrt: self.x, _index(self.columns): np.array([j], np.int64)})
        return {"at": [c, y, x], "column": encode(got["columns"][0])}

    def bias(self) -> dict:
        """c_x, the part of F(x) no input moves (scope graph)."""
        return {"bias": encode(self._at("affine")[self.bias_out].reshape(self.y_shape))}

    def regions(self, y: int, x: int, h: int, w: int):
        """The input and output regions of a crop (both for image outputs)."""
        if not (1 <= h <= MAX_CROP and 1 <= w <= MAX_CROP):
            raise RequestError(f"A crop is 1 to {MAX_CROP} pixels on a side; got {h}×{w}.")
        _, height, width = self._chw(self.x_shape, self.layout)
        if not (0 <= y and 0 <= x and y + h <= height and x + w <= width):
            raise RequestError(f"The crop ({y}, {x}, {h}, {w}) leaves the {height}×{width} input.")
        rows, cols = slice(y, y + h), slice(x, x + w)
        every = slice(None)
        input_region = (every, rows, cols) if self.layout == "NHWC" else (every, every, rows, cols)
        if self.image_output:
            _, oh, ow = self._chw(self.y_shape, "NCHW")
            if y + h > oh or x + w > ow:
                raise RequestError(f"The crop leaves the {oh}×{ow} output.")
            return input_region, (every, every, rows, cols)
        return input_region, None

    @staticmethod
    def _chw(shape, layout: str) -> tuple[int, int, int]:
        return (shape[3], shape[1], shape[2]) if layout == "NHWC" else tuple(shape[1:4])

    def singular(self, y: int, x: int, h: int, w: int, k: int) -> dict:
        """Top-k singular triplets of A_x on a crop (the runtime's svd over this explorer's
        apply_all/apply_T_all, which run the scope graph)."""
        from ...runtime.spectrum import svd

        if not 1 <= k <= MAX_K:
            raise RequestError(f"k must be from 1 to {MAX_K}; got {k}.")
        input_region, output_region = self.regions(y, x, h, w)
        try:
            found = svd(self, k, self.output, input_region, output_region)
        except InputError as exc:
            raise RequestError(str(exc)) from None
        return {"crop": [y, x, h, w], "s": found.s.tolist(), "U": encode(found.U),
                "Vt": encode(found.Vt)}  # fmt: skip

    def verification(self, seed: int = 0) -> dict:
        """The badge: reconstruction ‖F(x) − (A_x x + c_x)‖/‖F(x)‖, linearity of A_x on random
        probes and the adjoint identity ⟨A z, w⟩ = ⟨z, Aᵀ w⟩, all through the scope graph."""
        rng = np.random.default_rng(seed)
        y = self._at("plain")[self.output].astype(np.float64)
        affine = self._at("affine")
        rebuilt = affine[self.linear_out][0] + affine[self.bias_out].reshape(self.y_shape)
        reconstruction = _relative(y - rebuilt, y)
        z = rng.standard_normal((2, *self.x_shape)).astype(self.x.dtype)
        w = rng.standard_normal((1, *self.y_shape)).astype(np.float32)
        a, b = 0.7, -1.3
        az = self.apply_all(np.stack([z[0], z[1], a * z[0] + b * z[1]]))[self.output]
        linearity = _relative(az[2] - (a * az[0] + b * az[1]), az[2])
        atw = self.apply_T_all({self.output: w})[0]
        left = float(np.vdot(az[0].astype(np.float64), w[0].astype(np.float64)))
        right = float(np.vdot(z[0].astype(np.float64), atw.astype(np.float64)))
        adjoint = abs(left - right) / max(abs(left), abs(right), 1e-30)
        numbers = {"reconstruction": reconstruction, "linearity": linearity, "adjoint": adjoint}
        return {**numbers, "tolerance": TOLERANCE, "exact": max(numbers.values()) <= TOLERANCE}

    def masks(self, layer: str, channel: int | None) -> dict:
        """The frozen decisions (or frozen values) of one layer at x: a mask graph output,
        one channel of it, or (channel None) its mean over channels."""
        values = self._at("masks")
        if layer not in values:
            raise RequestError(f"No layer {layer!r}; the layers are {self.mask_names}.", 404)
        mask = np.asarray(values[layer], np.float32)
        squeezed = mask[0] if mask.ndim == 4 else mask
        if squeezed.ndim == 3 and channel is not None:
            if not 0 <= channel < squeezed.shape[0]:
                raise RequestError(f"channel must be from 0 to {squeezed.shape[0] - 1}.")
            shown = squeezed[channel]
        elif squeezed.ndim == 3:
            shown = squeezed.mean(axis=0)
        else:
            shown = squeezed.reshape(1, -1) if squeezed.ndim < 2 else squeezed
        binary = bool(np.isin(mask, (0, 1)).all())
        return {"layer": layer, "shape": list(mask.shape), "map": encode(shown),
                "binary": binary, "on": float(mask.mean()) if binary else None}  # fmt: skip


def _relative(gap: np.ndarray, reference: np.ndarray) -> float:
    scale = float(np.linalg.norm(np.asarray(reference, np.float64)))
    return float(np.linalg.norm(np.asarray(gap, np.float64))) / max(scale, 1e-30)


def _index(reading: ServedModel) -> str:
    """The name of a reading graph's INT64 index input (`classes` or `indices`, or the next free
    name where the model has that one)."""
    (name,) = reading.index_sizes
    return name


def bundled_image() -> str | None:
    """The bundled default image (samples/00_default/face.png beside the package), if there."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "..", "samples", "00_default", "face.png")
    return os.path.normpath(path) if os.path.isfile(path) else None


def make_explorers(
    models: list[ServedModel], image=None, *, conventions=None, labels=None, source=None
) -> dict[str, Explorer]:
    """An Explorer for every plain model among `models`, at `image` (a path or an array; None:
    the bundled default image, else a drawn picture; `source` says what it is on the page), by
    model name."""
    served = {m.name: m for m in models}
    explorers = {}
    for plain in (m for m in models if m.reading is None):
        explorer = Explorer(plain, served, conventions=conventions, labels=labels)
        if image is not None:
            named = f"file {image!r}" if isinstance(image, str) else "an array"
            explorer.set_input(image, source or named)
        elif bundled_image() is not None:
            explorer.set_input(bundled_image(), "the bundled default image (face.png)")
        else:
            hw = explorer.x_shape[1:3] if explorer.layout == "NHWC" else explorer.x_shape[2:4]
            explorer.set_input(default_picture(tuple(hw)), "a drawn default picture")
        explorers[plain.name] = explorer
    return explorers
