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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

TARGET_FORMS = (
    "an int (the same element in every sample), 'top', a class label, a sequence of one int per "
    "sample, or an array [K, samples] for K targets per sample"
)
POSITION_FORMS = (
    "an int or a sequence of ints (the same flat positions in every sample), or an array "
    "[K, samples] of one position per sample"
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


def resolve_positions(idx, samples: int | None, size: int, what: str) -> np.ndarray:
    """[K, N] flat per-sample indices for `rows`/`columns` (`size`: one sample's elements)."""
    n = sample_count(samples)
    array = _integers(idx, what, POSITION_FORMS)
    if array.ndim <= 1:
        array = np.broadcast_to(np.atleast_1d(array)[:, None], (array.size, n))
    elif array.ndim != 2 or array.shape[1] != n:
        raise InputError(
            f"{what}: positions shaped {array.shape} for {n} samples; give {POSITION_FORMS}."
        )
    return _in_range(array, size, what)


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
