"""Matrix-free views of A_x: a scipy LinearOperator and its top singular triplets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..errors import InputError, OnnxscopeError


def _scipy_linalg():
    try:
        import scipy.sparse.linalg as spla
    except ImportError:  # pragma: no cover - scipy ships with the [linalg] and [dev] extras
        raise OnnxscopeError(
            "This needs scipy: `pip install onnxscope[linalg]` (or `pip install scipy`)."
        ) from None
    return spla


def _crop(shape: Sequence[int], region) -> tuple[slice, ...]:
    """Normalize a crop (a tuple of slices/ints over the leading axes) to full slices."""
    if region is None:
        return tuple(slice(None) for _ in shape)
    region = tuple(region) if isinstance(region, (tuple, list)) else (region,)
    if len(region) > len(shape):
        raise InputError(f"Region {region} has more axes than the tensor's shape {tuple(shape)}.")
    region = (*region, *[slice(None)] * (len(shape) - len(region)))
    return tuple(slice(r, r + 1) if isinstance(r, (int, np.integer)) else r for r in region)


def linear_operator(it, output: str | None = None, input_region=None, output_region=None):
    """A_x (optionally restricted to crops of the input and output) as a LinearOperator whose
    matvec/matmat run the linear graph and rmatvec/rmatmat the adjoint graph, in batches."""
    spla = _scipy_linalg()
    name = output or it._single_name()
    x_shape, y_shape = it.x.shape, it.outputs[name].shape
    cin, cout = _crop(x_shape, input_region), _crop(y_shape, output_region)
    in_sub = np.zeros(x_shape)[cin].shape
    out_sub = np.zeros(y_shape)[cout].shape
    n, m = int(np.prod(in_sub)), int(np.prod(out_sub))

    def matmat(v):
        v = np.asarray(v).reshape(n, -1).T  # one probe per column
        z = np.zeros((len(v), *x_shape), it.x.dtype)
        z[(slice(None), *cin)] = v.reshape(len(v), *in_sub)
        az = it.apply_all(z)[name][(slice(None), *cout)]
        return az.reshape(len(v), m).T.astype(np.float64)

    def rmatmat(u):
        u = np.asarray(u).reshape(m, -1).T
        w = np.zeros((len(u), *y_shape), it.outputs[name].dtype)
        w[(slice(None), *cout)] = u.reshape(len(u), *out_sub)
        atw = it.apply_T_all({name: w})[(slice(None), *cin)]
        return atw.reshape(len(u), n).T.astype(np.float64)

    return spla.LinearOperator(
        (m, n), matvec=matmat, rmatvec=rmatmat, matmat=matmat, rmatmat=rmatmat, dtype=np.float64
    )


# up to this many rows (or columns) the operator is assembled and solved densely, from its smaller
# side: rows (adjoint probes of output one-hots) when the output region is the smaller, columns
# when the input is; past it, ARPACK matrix-free. Never an identity over the larger side.
ASSEMBLE_BELOW = 256


class SVD(NamedTuple):
    """Top singular triplets of A_x (or of a crop), largest first: U [k, *output region]
    (u_i as output images), s [k], Vt [k, *input region] (v_i as input images); A v_i = s_i u_i."""

    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray


def svd(
    it,
    k: int,
    output: str | None = None,
    input_region=None,
    output_region=None,
    assemble_below: int = ASSEMBLE_BELOW,
) -> SVD:
    """Top-k singular triplets of A_x restricted to `input_region` and `output_region` (tuples
    of slices/ints over the leading axes of x and of the output; None: all of it)."""
    op = linear_operator(it, output, input_region, output_region)
    m, n = op.shape
    if not 1 <= k <= min(m, n):
        raise InputError(f"k must be between 1 and {min(m, n)} for this operator; got {k}.")
    if min(m, n) <= assemble_below or k >= min(m, n) - 1:
        # from the smaller side: m rows (A^T e_i) or n columns (A e_j)
        dense = op.rmatmat(np.eye(m)).T if m <= n else op.matmat(np.eye(n))
        u, s, vt = np.linalg.svd(dense, full_matrices=False)
        u, s, vt = u[:, :k], s[:k], vt[:k]
    else:
        u, s, vt = _scipy_linalg().svds(op, k=k, random_state=0)
        order = np.argsort(s)[::-1]
        u, s, vt = u[:, order], s[order], vt[order]
    name = output or it._single_name()
    out_shape = np.zeros(it.outputs[name].shape)[_crop(it.outputs[name].shape, output_region)]
    in_shape = np.zeros(it.x.shape)[_crop(it.x.shape, input_region)]
    return SVD(u.T.reshape(k, *out_shape.shape), s, vt.reshape(k, *in_shape.shape))
