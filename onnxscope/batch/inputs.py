"""The inputs of `onnxscope batch`: what INPUTS names, one `Item` per model input, and how one
item becomes the model's input (the image conventions of `report`, onnxscope.report.images).

INPUTS, each of:
- a folder: every image (and .npy) file below it, in sorted order (hidden entries skipped);
- a glob pattern ('photos/*.jpg', '**' for any depth) or a file name;
- a .npy stack: an array [N, ...] whose rows are model inputs without their batch axis, or
  H×W(×C) images; items are named 'stack.npy[i]';
- a .parquet or .csv table with a column of paths (--path-column, default 'path'), relative paths
  taken from the table's folder; its other columns are carried into the results.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
TABLE_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class Item:
    """One input: `key` names it in the results (the path as given, or 'stack.npy[i]'),
    `source` is the file read, `row` the row of a .npy stack, `extra` a table's other columns."""

    key: str
    source: str
    row: int | None = None
    extra: dict = field(default_factory=dict, compare=False)


def enumerate_inputs(specs: list[str], path_column: str = "path") -> list[Item]:
    """Every item that `specs` names, in order, each key once."""
    if not specs:
        raise InputError("batch needs INPUTS: a folder, a glob, a .npy stack or a table.")
    items: list[Item] = []
    for spec in specs:
        items.extend(_items(os.fspath(spec), path_column))
    seen: dict[str, Item] = {}
    for item in items:
        seen.setdefault(item.key, item)
    if not seen:
        raise InputError(f"No inputs found in {specs} (images: {', '.join(IMAGE_SUFFIXES)}, .npy).")
    return list(seen.values())


def _items(spec: str, path_column: str) -> list[Item]:
    if os.path.isdir(spec):
        return [Item(p, p) for p in _files_below(spec)]
    lower = spec.lower()
    if os.path.isfile(spec) and lower.endswith(TABLE_SUFFIXES):
        return _table_items(spec, path_column)
    if os.path.isfile(spec) and lower.endswith(".npy"):
        stack = _npy_stack(spec)
        if stack is not None:
            return [Item(f"{spec}[{i}]", spec, i) for i in range(stack)]
        return [Item(spec, spec)]
    if os.path.isfile(spec):
        return [Item(spec, spec)]
    if glob.has_magic(spec):
        found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not found:
            raise InputError(f"The pattern '{spec}' matches no file.")
        return [Item(p, p) for p in found]
    raise InputError(f"Input '{spec}' is not a file, a folder or a glob pattern that matches.")


def _files_below(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith((*IMAGE_SUFFIXES, ".npy")):
                found.append(os.path.join(root, name))
    return found


def _npy_stack(path: str) -> int | None:
    """N for a .npy of 4 or more dims, or of 3 dims that is not one H×W×C image (a stack of
    gray images or of rank-2 inputs); None for a single image or input."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:  # unreadable: one item, whose row gives the error
        return None
    if array.ndim >= 4 or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        return int(array.shape[0])
    return None


def _table_items(path: str, path_column: str) -> list[Item]:
    import pyarrow.csv
    import pyarrow.parquet

    try:
        if path.lower().endswith(".csv"):
            table = pyarrow.csv.read_csv(path)
        else:
            table = pyarrow.parquet.read_table(path)
    except Exception as exc:
        raise InputError(f"Could not read the table '{path}': {exc}") from None
    if path_column not in table.column_names:
        raise InputError(
            f"The table '{path}' has no column '{path_column}' (its columns: "
            f"{table.column_names}); name the column of paths with --path-column."
        )
    base = os.path.dirname(path)
    rows = table.to_pylist()
    items = []
    for row in rows:
        given = row.pop(path_column)
        if not isinstance(given, str) or not given:
            raise InputError(f"The table '{path}' has an empty or non-text path: {given!r}.")
        source = given if os.path.isabs(given) else os.path.join(base, given)
        items.append(Item(given, source, None, row))
    return items


def load_item(item: Item, model_dims, dtype, conventions: dict, resize: bool = True):
    """(the model input [1, ...] of `item`, notes on how it was made). Raises InputError with a
    message for the results table when the item cannot be fed to the model."""
    from ..report.images import load_image

    source: object = item.source
    if item.row is not None:
        stack = np.load(item.source, mmap_mode="r", allow_pickle=False)
        row = np.asarray(stack[item.row])
        # a row is the input without its batch axis, or an image
        source = row[None] if row.ndim == len(model_dims) - 1 else row
    x, conv = load_image(source, model_dims, dtype=dtype, **conventions)
    if not resize and conv.size != conv.original_size:
        (h, w), (oh, ow) = conv.size, conv.original_size
        raise InputError(f"The image is {oh}×{ow}; the model takes {h}×{w} (--no-resize).")
    return x, "; ".join(conv.notes)
