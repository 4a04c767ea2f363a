"""What the tours (samples/01_*, 02_*, 03_*) share: where they write, how a missing subject or
extra is reported, and small writers for pictures, figures and numbers.

A tour writes into one folder (default out/<tour>/): inputs/ (the pictures it feeds), one
onnxscope report per subject (<subject>/index.html, report.json) and extras/ (its own figures and
stats.json). A subject that cannot be fetched or converted, or a missing package, is skipped with
its reason; the tour then exits with SKIPPED after doing the rest.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import subjects  # noqa: E402

SKIPPED = 3  # exit status of a tour that left something out (tests/test_tours.py skips on it)


class Tour:
    def __init__(self, name: str, argv: list[str]):
        if len(argv) > 1 or argv[:1] in (["-h"], ["--help"]):
            print(f"usage: tour.py [OUT_DIR]   (default out/{name})", file=sys.stderr)
            sys.exit(2)
        self.out = os.path.abspath(argv[0] if argv else os.path.join(ROOT, "out", name))
        self.skipped: dict[str, str] = {}
        self.stats: dict = {}
        for sub in ("inputs", "extras"):
            os.makedirs(os.path.join(self.out, sub), exist_ok=True)

    def model(self, name: str) -> str | None:
        """The subject's ONNX path, or None (with the reason recorded) if it is unavailable."""
        from onnxscope.converters.common import ConversionError  # e.g. the [tf] extra missing

        try:
            return subjects.onnx_model(name)
        except (subjects.FetchError, NotImplementedError, ImportError, ConversionError) as exc:
            self.skip(name, f"{type(exc).__name__}: {exc}")
            return None

    def skip(self, what: str, reason: str) -> None:
        self.skipped[what] = reason
        print(f"SKIPPED {what}: {reason}", file=sys.stderr)

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def picture(self, array: np.ndarray, name: str) -> str:
        """Save a uint8 H×W or H×W×3 array as inputs/<name>.png and return its path."""
        from PIL import Image

        path = self.path("inputs", f"{name}.png")
        Image.fromarray(np.asarray(array, np.uint8)).save(path)
        return path

    def report(self, model: str, image: str, name: str, **options) -> str:
        """`onnxscope report` of one subject into <out>/<name>/; prints and returns index.html."""
        from onnxscope.report import write_report

        page = write_report(model, image, self.path(name), **options)
        with open(self.path(name, "report.json")) as f:
            errors = json.load(f)["exactness"]["errors"]
        print(f"{name}: {page}  " + "  ".join(f"{k} {v:.1e}" for k, v in errors.items()))
        return page

    def figure(self, fig, name: str) -> str:
        from onnxscope.report.figures import to_png

        path = self.path("extras", f"{name}.png")
        with open(path, "wb") as f:
            f.write(to_png(fig))
        return path

    def finish(self) -> int:
        self.stats["skipped"] = self.skipped
        with open(self.path("extras", "stats.json"), "w") as f:
            json.dump(self.stats, f, indent=1, default=float)
        print(f"extras: {self.path('extras')}")
        return SKIPPED if self.skipped else 0


def require(*modules: str) -> None:
    """Exit with SKIPPED, naming the extra, if a module the tour needs is missing."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            hint = {"skimage": "scikit-image"}.get(module, "onnxscope[report]")
            print(f"SKIPPED: this tour needs {module} (pip install {hint})", file=sys.stderr)
            sys.exit(SKIPPED)
