"""Reading what a user gives for a model's inputs: `NAME=VALUE` pairs, shapes written 1x3x224x224,
.npy files and numbers, and the feeds made of them (given values, the rest drawn or zeros).

Errors are InputErrors in the short form the CLI shows after its option's name ("expected
NAME=FILE.npy, got 'x'"); the CLI turns them into argparse errors.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

MAX_ELEMENTS = 2**31 - 1  # bound on each size and on the element count of a given shape

Spec = tuple[list, np.dtype]  # an input's (dims, dtype), as graph.model.input_spec gives it


def parse_number(text: str | float) -> float:
    """A float from '0.5', '1/255' or a number."""
    if not isinstance(text, str):
        return float(text)
    num, sep, den = text.partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"Expected a number or a fraction like 1/255, got '{text}'.") from None


def assignment(text: str, form: str = "NAME=VALUE", *, last: bool = False) -> tuple[str, str]:
    """(name, value) from `NAME=VALUE`, split at the first '=' (at the last with `last`); both
    parts must be non-empty. `form` is what the error says was expected."""
    name, sep, value = text.rpartition("=") if last else text.partition("=")
    if not sep or not name or not value:
        raise InputError(f"expected {form}, got '{text}'")
    return name, value


def input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """(name, shape) from `NAME=1x3x224x224` (split at the last '='): every size from 1 to
    MAX_ELEMENTS, and at most MAX_ELEMENTS elements in all."""
    form = "NAME=1x3x224x224"
    name, dims = assignment(text, form, last=True)
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise InputError(f"expected {form}, got '{text}'") from None
    if any(d < 1 for d in shape) or any(d > MAX_ELEMENTS for d in shape):
        raise InputError(f"every size in '{text}' must be between 1 and {MAX_ELEMENTS}")
    count = int(np.prod(shape, dtype=object))
    if count > MAX_ELEMENTS:
        raise InputError(
            f"'{text}' has {count} elements; onnxscope takes inputs of at most {MAX_ELEMENTS} "
            "elements"
        )
    return name, shape


def load_array(path: str, name: str) -> np.ndarray:
    """The value of input `name` from a .npy file, or an .npz archive holding exactly one array."""
    try:
        value = np.load(path, allow_pickle=False)
        if isinstance(value, np.lib.npyio.NpzFile):
            with value:
                names = list(value.files)
                if len(names) != 1:
                    raise InputError(
                        f"'{path}' (for input '{name}') is an .npz archive with {len(names)} "
                        f"arrays {names}; give a .npy file, or an .npz holding exactly one array."
                    )
                value = value[names[0]]
        if not isinstance(value, np.ndarray):
            raise ValueError("not an array")
        return value
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"Could not read '{path}' for input '{name}' as .npy (or .npz with one array): {exc}"
        ) from None


def input_value(value, spec: Spec, name: str) -> np.ndarray:
    """The array for input `name` ({spec}: its dims and dtype) from what was given: a string
    ending in .npy is loaded, a number (or a string like '25/255') fills the input's shape (free
    dims 1), anything else is taken as an array; cast to the input's dtype."""
    dims, dtype = spec
    if isinstance(value, str) and value.lower().endswith(".npy"):
        try:
            array = np.load(value, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"Could not read '{value}' for input '{name}': {exc}") from None
    elif isinstance(value, (str, int, float)):
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in dims]
        array = np.full(shape, parse_number(value))
    else:
        array = np.asarray(value)
    return array.astype(dtype)
