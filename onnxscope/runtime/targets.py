"""What a reading is about, per sample: the targets of `votes`/`bias_share` and the positions of
`rows`/`columns`, each resolved to flat indices into one sample's part of a tensor.

An interpretation with a sample axis (`Interpretation.samples` = N) reads sample n's output
element i, never a flat index over the whole batch (which would silently read another sample).
A_x is block-diagonal over the samples, so one probe carrying a one-hot in every sample answers N
targets at once; `verify` checks that block-diagonality (its per-sample adjoint identity).

Targets (votes, bias_share), for N samples:
    k            the same element (class) in every sample              -> x-shaped
    [k_0..k_N-1] one per sample (as Captum's `target=`)                -> x-shaped
    [[...], ...] an array [K, N]: K targets per sample                 -> [K, *x]
    'top'        each sample's largest output                          -> x-shaped
    'label'      a class name, when the scope was given labels
At batch 1 (or without a sample axis) the sample axis may be left out: [k_0, ..., k_K-1] is a
stack of K targets. Positions (rows, columns): k or [k_0, ..., k_K-1] are the same K positions in
every sample, [[...], ...] an array [K, N] one per sample; the result is always a stack [K, ...].

Anywhere a flat index goes, a Python tuple is a position in the tensor's own coordinates, the same
in every sample: (y, x) of a one-channel map, (c, y, x), (n, c, y, x) at batch 1, (k,) of a
vector; a tuple shorter than the tensor's rank names its last axes, and the axes it leaves out
must have size 1 (else it is ambiguous, and refused). A list of tuples is a stack of positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

TARGET_FORMS = (
    "an int (the same element in every sample), a tuple of coordinates, 'top', a class label, a "
    "sequence of one int per sample, or an array [K, samples] for K targets per sample"
)
POSITION_FORMS = (
    "an int or a tuple of coordinates ((y, x), (c, y, x), ...), a list of them (the same "
    "positions in every sample), or an array [K, samples] of one flat position per sample"
)


def sample_count(samples: int | None) -> int:
    """Samples a reading answers at once: N, or 1 where the whole tensor is the one sample."""
    return samples or 1


def one_hots(indices: np.ndarray, shape: Sequence[int], samples: int | None, dtype) -> np.ndarray:
    """[P, *shape] probes, probe p holding a one at indices[p, n] of each sample n's part."""
    n = sample_count(samples)
    size = int(np.prod(shape)) // n
    probes = np.zeros((len(indices), n, size), dtype)
    p, s = np.meshgrid(np.arange(len(indices)), np.arange(n), indexing="ij")
    probes[p, s, indices] = 1
    return probes.reshape(len(indices), *shape)


def per_sample_values(values: np.ndarray, indices: np.ndarray, samples: int | None) -> np.ndarray:
    """[P, N] of values[sample n, flat element indices[p, n]] (values: one tensor with its
    samples along axis 0, or the one sample)."""
    n = sample_count(samples)
    flat = np.asarray(values).reshape(n, -1)
    return flat[np.arange(n)[None, :], indices]


def resolve_targets(target, samples: int | None, outputs: np.ndarray, labels, what: str):
    """(indices [P, N] flat per sample, the result's stack shape, whether the parts come back as
    plain numbers: a single target at one sample) for `votes`/`bias_share`."""
    n = sample_count(samples)
    size = outputs.size // n
    target = _coordinates(target, outputs.shape, samples, what)
    if isinstance(target, str):
        if target == "top":
            top = np.argmax(outputs.reshape(n, size), axis=1)
            return top[None, :].astype(np.int64), (), n == 1
        return _label_index(target, labels, size, what)[None, :].repeat(n, 1), (), n == 1
    if isinstance(target, (list, tuple)) and any(isinstance(t, str) for t in _leaves(target)):
        array = np.vectorize(lambda t: _label_index(t, labels, size, what)[0])(
            np.asarray(target, dtype=object)
        )
    else:
        array = _integers(target, what, TARGET_FORMS)
    if array.ndim == 0:
        indices, stack, scalar = np.full((1, n), int(array)), (), n == 1
    elif array.ndim == 1 and len(array) == n:
        indices, stack, scalar = array[None, :], (), False
    elif array.ndim == 1 and n == 1:  # at batch 1: a stack of targets
        indices, stack, scalar = array[:, None], (len(array),), False
    elif array.ndim >= 2 and array.shape[-1] == n:
        indices, stack, scalar = array.reshape(-1, n), array.shape[:-1], False
    else:
        raise InputError(f"{what}: {np.shape(array)} targets for {n} samples; give {TARGET_FORMS}.")
    return _in_range(indices, size, what), tuple(stack), scalar


def resolve_positions(idx, samples: int | None, shape, what: str) -> np.ndarray:
    """[K, N] flat per-sample indices for `rows`/`columns` into a tensor of `shape` (the whole
    tensor, its samples along axis 0 when `samples`)."""
    size = int(np.prod(shape)) // sample_count(samples)
    n = sample_count(samples)
    array = _integers(_coordinates(idx, shape, samples, what), what, POSITION_FORMS)
    if array.ndim <= 1:
        array = np.broadcast_to(np.atleast_1d(array)[:, None], (array.size, n))
    elif array.ndim != 2 or array.shape[1] != n:
        raise InputError(
            f"{what}: positions shaped {array.shape} for {n} samples; give {POSITION_FORMS}."
        )
    return _in_range(array, size, what)


def _coordinates(value, shape, samples: int | None, what: str):
    """`value` with each tuple (a position in the tensor's coordinates) as its flat index within
    one sample; anything else as it is."""
    if isinstance(value, tuple):
        return _flat_position(value, shape, samples, what)
    if isinstance(value, list) and value and any(isinstance(v, tuple) for v in value):
        if not all(isinstance(v, (tuple, int, np.integer)) for v in value):
            raise InputError(
                f"{what}: {value!r} mixes tuples (coordinates) with lists; give a list of tuples "
                "and flat indices, or an array [K, samples]."
            )
        return [
            _flat_position(v, shape, samples, what) if isinstance(v, tuple) else v for v in value
        ]
    return value


def _flat_position(position: tuple, shape, samples: int | None, what: str) -> int:
    """The flat index within one sample of `position`, coordinates of the sample's last axes."""
    axes = tuple(shape[1:]) if samples else tuple(shape)
    given = position
    if samples == 1 and len(position) == len(axes) + 1:  # (n, c, y, x) at batch 1
        if position[0] not in (0, -1):
            raise InputError(f"{what}: {position} names sample {position[0]}; there is one.")
        position = position[1:]
    if samples and samples > 1 and len(position) == len(axes) + 1:
        raise InputError(
            f"{what}: {position} names a sample; readings of a batch are per sample: give the "
            f"position within a sample {axes}."
        )
    if not position or len(position) > len(axes):
        raise InputError(
            f"{what}: the position {position} has {len(position)} coordinate(s) for a tensor "
            f"of shape {axes}{' per sample' if samples else ''}."
        )
    if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in position):
        raise InputError(f"{what}: coordinates must be integers, got {position!r}.")
    left = axes[: len(axes) - len(position)]
    if any(d != 1 for d in left):
        raise InputError(
            f"{what}: the position {position} leaves out axes of size {left} of the shape "
            f"{axes}; give all {len(axes)} coordinates (or those of the axes larger than 1)."
        )
    named = axes[len(axes) - len(position) :]
    for c, d in zip(position, named):
        if not -d <= c < d:
            raise InputError(f"{what}: the position {given} is outside the shape {tuple(shape)}.")
    return int(np.ravel_multi_index(tuple(int(c) % d for c, d in zip(position, named)), named))


def _leaves(value):
    for item in value:
        if isinstance(item, (list, tuple)):
            yield from _leaves(item)
        else:
            yield item


def _integers(value, what: str, forms: str) -> np.ndarray:
    """The value as an int64 array; floats, booleans and other types are refused."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be integers ({exc}); give {forms}.") from None
    if array.dtype == object:  # Python ints past int64, ragged lists, mixed types
        raise InputError(f"{what} must be integers; got {value!r}. Give {forms}.")
    if array.size and array.dtype.kind not in "iu":
        raise InputError(f"{what} must be integers; got dtype {array.dtype} ({value!r}).")
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be integers, not a boolean.")
    return array.astype(np.int64)


def _in_range(indices: np.ndarray, size: int, what: str) -> np.ndarray:
    """Flat indices in [-size, size) as int64 in [0, size) (negatives count from the end)."""
    if indices.size and not (-size <= indices.min() and indices.max() < size):
        raise InputError(
            f"{what} index out of range for {size} elements per sample (valid: {-size} to "
            f"{size - 1})."
        )
    return np.ascontiguousarray(indices % size if size else indices)


def _label_index(label: str, labels, size: int, what: str) -> np.ndarray:
    if not labels:
        raise InputError(
            f"{what}: '{label}' is a class name, but no labels were given (LinearScope(..., "
            "labels=[...]) or --labels); give a class index."
        )
    if label not in labels:
        raise InputError(f"{what}: unknown label '{label}'; the labels are {list(labels)}.")
    index = list(labels).index(label)
    if index >= size:
        raise InputError(f"{what}: label '{label}' is element {index}, past {size} per sample.")
    return np.asarray([index], np.int64)
