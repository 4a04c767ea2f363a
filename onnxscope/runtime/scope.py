"""The user-facing API: `LinearScope` (one model) and `Interpretation` (one input x)."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import InputError, OnnxscopeError
from ..graph.controlflow import fold_static_control_flow
from ..graph.model import AnalyzedModel, load_light
from ..graph.recurrent import unroll_recurrent
from ..rewrite.analysis import default_wrt
from ..rewrite.artifacts import Artifacts
from ..rewrite.driver import rewrite
from .sessions import (
    available_memory,
    make_session,
    require_ort,
    resolve_providers,
    session_options,
)
from .targets import (
    one_hots,
    per_sample_values,
    resolve_positions,
    resolve_targets,
    sample_count,
)
from .verify import sample_leak

# probe_batch="auto": as many probes per run as fit in this share of the free memory, up to a cap
# past which a bigger batch stopped paying off (bench/suite.py: per-probe time at batch 16 and 64
# is the same on a 2-core CPU; a GPU keeps gaining up to 64).
MEMORY_SHARE = 0.25
# the coupling between samples past which per-sample readings are refused (float32 rounding of an
# exactly block-diagonal map stays below 1e-6 relative)
SAMPLE_LEAK_TOL = 1e-4
PROBE_CAP = {"cpu": 16, "cuda": 64}


class _Sessions:
    """The ONNX Runtime sessions for one input shape, each made on first use and then reused
    (a CUDA session holds its own cuBLAS and cuDNN handles: make only those that are needed)."""

    def __init__(self, artifacts: Artifacts, providers: list, threads: int | None = None):
        weights = artifacts.weights

        def make(model, optimize: bool = True):
            options = functools.partial(session_options, optimize, threads=threads)
            if weights is None:
                return make_session(model.SerializeToString(), options(), providers)
            # the graphs' large weights from the one store, never serialized (weights.py)
            return weights.session(model, options, providers)

        self.artifacts = artifacts
        self.mask = make(artifacts.mask)
        self.mask_outputs = [o.name for o in self.mask.get_outputs()]
        self._make, self._bias_layers, self._expected, self._jittered = make, None, None, None
        self._affine: dict[bool, tuple] = {}
        self.device = "cuda" if "CUDAExecutionProvider" in self.mask.get_providers() else "cpu"
        self.probe_bytes = _probe_bytes(artifacts)
        self.fixed_shapes = self.device == "cuda"  # pad short probe batches (see _batched)
        self.sample_leak: float | None = None  # Interpretation._require_independent_samples

    @functools.cached_property
    def linear(self):
        return self._make(self.artifacts.linear)

    @functools.cached_property
    def bias(self):
        return self._make(self.artifacts.bias)

    @functools.cached_property
    def adjoint(self):
        return None if self.artifacts.adjoint is None else self._make(self.artifacts.adjoint)

    def jittered(self, model: AnalyzedModel):
        """The mask graph with its intermediate tensors jittered (verify's noise floor), run
        without graph optimizations: the model's own arithmetic, and no fusion to disturb."""
        if self._jittered is None:
            from .verify import jittered_model

            graph = jittered_model(self.artifacts.mask, model)
            self._jittered = self._make(graph, optimize=False)
        return self._jittered

    def affine(self, model: AnalyzedModel, jittered: bool):
        """(session, probe input) of the affine map A_x z + c_x in one graph (the bias graph fed
        z), its values of the model's tensors jittered or not (verify's noise floor of the
        reconstruction), run without graph optimizations."""
        if jittered not in self._affine:
            from .verify import affine_map, jittered_affine

            a = self.artifacts
            graph, probe = affine_map(a.bias, a.bias_values, a.manifest["wrt"])
            if jittered:
                graph = jittered_affine(graph, a.bias_values, a.manifest["wrt"], model)
            self._affine[jittered] = (self._make(graph, optimize=False), probe)
        return self._affine[jittered]

    def expected_shapes(self, model: AnalyzedModel) -> list[tuple[str, list[int]]]:
        """(mask graph output, static shape) for every model output and mask of the rewrite
        (`model` is the analysis it was built from), computed once."""
        if self._expected is None:
            expected = {n: tuple(model.shape(n)) for n in model.outputs}
            for unit in self.artifacts.manifest["units"]:
                for mask in unit["masks"].values():
                    expected[mask["output"]] = tuple(mask["shape"])
            self._expected = [
                (n, list(shape))
                for n, shape in expected.items()
                if n in self.mask_outputs and all(isinstance(d, int) for d in shape)
            ]
        return self._expected

    def bias_layers(self):
        """(session, imports, node labels) of the bias-by-layer graph, built on first use."""
        if self._bias_layers is None:
            model, imports, labels = self.artifacts.bias_layers()
            self._bias_layers = (self._make(model), imports, labels)
        return self._bias_layers


class LinearScope:
    """Interpret an ONNX model through its linear interpreter A_x and bias image c_x.

    >>> scope = LinearScope("model.onnx")  # wrt=None: interpret the first float input
    >>> it = scope.interpret(x)                     # one run of the mask graph
    >>> it.apply(z), it.bias, it.verify()           # A_x z, c_x, exactness checks
    """

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        wrt: str | None = None,
        providers: list[str] | str | None = None,
        probe_batch: int | str = "auto",
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        batch_axis: int | str | None = "auto",
        logits: bool = False,
        mode: str = "secant",
    ):
        """`providers`: "cpu", "cuda" or an ONNX Runtime provider list (default
        $ONNXSCOPE_DEVICE, else the CPU). `probe_batch`: probes per run of the linear and adjoint
        graphs, or "auto" (from the free memory and the model's activation size). `threads`:
        ONNX Runtime intra-op threads (default: one per core). `labels`: class names of the
        output, so that targets may be named. `batch_axis`: "auto" (axis 0 of the interpreted
        input is the batch axis where the model declares it free or 1 and every output carries
        it), 0 (axis 0 whatever its declared size), or None (x is always one input). `logits`:
        read each output computed by a Softmax or LogSoftmax through the logits under it (the
        outputs renamed NAME_logits; `cut` lists the outputs cut), as the paper reads votes.
        `mode`: "secant" (the paper's interpreter: each smooth unit frozen by its secant through
        f(0), one operand of each product frozen) or "tangent" (each smooth node replaced by its
        tangent plane at x, products by the product rule: A_x is the Jacobian of F at x)."""
        from ..rewrite.analysis import MODES

        require_ort()
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
        self._mode = mode  # (read-only: the cached artifacts were built in it)
        if not isinstance(model, (str, os.PathLike, onnx.ModelProto)):
            raise InputError(
                f"LinearScope takes a model file path or an onnx.ModelProto, not "
                f"{type(model).__name__}."
            )
        if probe_batch != "auto" and not (_is_int(probe_batch) and probe_batch > 0):
            raise InputError(
                f"probe_batch must be a positive integer or 'auto', not {probe_batch!r}."
            )
        self.cut: list[str] = []
        if logits:
            from ..graph.model import softmax_outputs_to_logits

            model, self.cut = softmax_outputs_to_logits(model)
            if not self.cut:
                warnings.warn(
                    "logits=True: the model has no output computed by a Softmax or LogSoftmax; "
                    "its outputs are read as they are.",
                    stacklevel=2,
                )
        # a model with large weights comes as its light model (stubs in their place), the
        # weights held once by the store this scope keeps (onnxscope.graph.weights)
        self.model, self._weights = load_light(model)
        self.wrt = default_wrt(self.model, wrt)
        self.providers = resolve_providers(providers)
        self.probe_batch = probe_batch
        self.threads = threads
        if batch_axis not in ("auto", 0, None) or isinstance(batch_axis, bool):
            raise InputError(f"batch_axis must be 'auto', 0 or None, not {batch_axis!r}.")
        self.batch_axis = batch_axis
        self.labels = _labels(labels)
        self._cache: dict[tuple, tuple[AnalyzedModel, _Sessions]] = {}

    @property
    def mode(self) -> str:
        """How the scope linearizes: "secant" or "tangent" (A_x the Jacobian of F at x)."""
        return self._mode

    @functools.cached_property
    def _input_specs(self) -> dict[str, tuple]:
        from ..graph.model import graph_inputs, input_spec

        return {vi.name: input_spec(vi) for vi in graph_inputs(self.model)}

    def analyze(self, input_shapes: Mapping[str, Sequence[int]]) -> AnalyzedModel:
        """The model's static facts at these input shapes (no rewriting)."""
        from ..graph.model import resolve_input_shapes

        shapes = resolve_input_shapes(self.model, {k: tuple(v) for k, v in input_shapes.items()})
        return self._analyzed(shapes)

    def _analyzed(self, shapes, feeds=None) -> AnalyzedModel:
        """The analysis at these shapes: the model run once first, so that a model ONNX Runtime
        cannot run is said in ONNX Runtime's words before any rule is asked, then the control
        flow that the shapes decide expanded (Ifs folded, Loops and Scans unrolled:
        graph/controlflow.py)."""
        from ..errors import ModelError

        analyzed = AnalyzedModel(self.model, shapes, feeds)
        try:
            analyzed.info  # noqa: B018  (the run: its ModelError names ONNX Runtime's message)
        except ModelError:
            # an op that is not ONNX's (a custom op ONNX Runtime cannot run either) is named by
            # the analysis, node by node, as any unsupported op is; else ONNX Runtime's words
            if all(onnx.defs.has(n.op_type, n.domain) for n in analyzed.nodes):
                raise
            return analyzed
        return unroll_recurrent(fold_static_control_flow(analyzed))  # (graph/recurrent.py)

    def artifacts(self, input_shapes: Mapping[str, Sequence[int]]) -> Artifacts:
        return self._prepare(input_shapes)[1].artifacts

    def _prepare(self, input_shapes, feeds=None, rebuild: bool = False):
        """The analysis and sessions for these input shapes (cached). With `feeds`, the analysis
        run uses the real input values, which matters where an input carries sizes or scales."""
        from ..graph.model import resolve_input_shapes

        given = tuple(sorted((k, tuple(v)) for k, v in input_shapes.items()))
        if not rebuild and given in self._cache:  # every input given, as interpret() does
            return self._cache[given]
        shapes = resolve_input_shapes(self.model, dict(given))
        key = tuple(sorted(shapes.items()))
        if rebuild or key not in self._cache:
            analyzed = self._analyzed(shapes, feeds)
            artifacts = rewrite(analyzed, self.wrt, self.mode)
            sessions = _Sessions(artifacts, self.providers, self.threads)
            self._cache[key] = (analyzed, sessions)
        return self._cache[key]

    def batch_for(self, sessions: _Sessions) -> int:
        """Probes per run: probe_batch, or for "auto" as many as fit in MEMORY_SHARE of the free
        memory, counting every tensor of the linear path once per probe (no reuse assumed)."""
        if self.probe_batch != "auto":
            return self.probe_batch
        fit = int(MEMORY_SHARE * available_memory(sessions.device)) // max(sessions.probe_bytes, 1)
        return max(1, min(PROBE_CAP[sessions.device], fit))

    def interpret(self, x: np.ndarray, /, **other_inputs: np.ndarray) -> Interpretation:
        """Run the mask graph at x and return the interpretation of the model at that point."""
        if self.wrt in other_inputs:
            raise InputError(
                f"'{self.wrt}' is the interpreted input: pass it as the first argument."
            )
        inputs = {self.wrt: x, **other_inputs}
        feeds = {}
        specs = self._input_specs
        missing = [n for n in specs if n not in inputs]
        if missing:
            raise InputError(f"Missing value(s) for model input(s) {missing}.")
        for name, value in inputs.items():
            if name not in specs:
                raise InputError(f"Unknown input '{name}'; the model's inputs are {list(specs)}.")
            feeds[name] = _check_array(name, value, specs[name][1])
        if feeds[self.wrt].size == 0:
            raise InputError(f"Input '{self.wrt}' has no elements (shape {feeds[self.wrt].shape}).")
        if self._exported_at_batch_1(feeds[self.wrt].shape):
            return SampleLoop(self, feeds)
        shapes = {k: v.shape for k, v in feeds.items()}
        analyzed, sessions = self._prepare(shapes, feeds)
        it = MaskRun(self, analyzed, sessions, feeds)
        if not it.shapes_match_analysis():  # another input's values changed the graph's shapes
            analyzed, sessions = self._prepare(shapes, feeds, rebuild=True)
            it = MaskRun(self, analyzed, sessions, feeds)
        return it

    def _declared_batch(self) -> int | str | None:
        """Axis 0 of the interpreted input as the model declares it: its size, 'free', or None
        (rank below 2, or batch_axis=None: no sample axis)."""
        dims = self._input_specs[self.wrt][0]
        if self.batch_axis is None or len(dims) < 2:
            return None
        return dims[0] if isinstance(dims[0], int) and dims[0] > 0 else "free"

    def _exported_at_batch_1(self, x_shape) -> bool:
        """A batch of several samples for a model whose batch axis is fixed at 1."""
        rank = len(self._input_specs[self.wrt][0])
        return self._declared_batch() == 1 and len(x_shape) == rank and x_shape[0] > 1

    def samples_of(self, x_shape, outputs: Mapping[str, np.ndarray]) -> int | None:
        """N when axis 0 of x (shape `x_shape`) is a batch of N samples: declared free or 1 by
        the model (any size with batch_axis=0) and every output of that length on its axis 0.
        Else None: x is one input and readings index whole tensors."""
        declared = self._declared_batch()
        if declared is None or (self.batch_axis == "auto" and declared not in ("free", 1)):
            return None
        n = x_shape[0]
        if all(v.ndim >= 1 and v.shape[0] == n for v in outputs.values()):
            return n
        return None


def _check_array(name: str, value, dtype: np.dtype) -> np.ndarray:
    """The value as a C-ordered array of the model's dtype, copied (an interpretation must not
    change when the caller reuses its buffer) and read-only. Real numbers are cast to a float
    input's dtype; complex values, strings, objects and NaN/Inf are refused."""
    try:
        array = np.array(value, copy=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"Input '{name}' is not an array of numbers ({exc}).") from None
    kind = array.dtype.kind
    if array.dtype != dtype:
        if not (np.issubdtype(dtype, np.floating) and kind in "iuf"):
            what = "complex" if kind == "c" else str(array.dtype)
            raise InputError(
                f"Input '{name}' has dtype {what}; the model expects {dtype}"
                + (" (real values only)." if kind == "c" else ".")
            )
        array = array.astype(dtype)
    if not _finite(array):
        raise InputError(f"Input '{name}' contains NaN or infinite values.")
    array = np.require(array, requirements="C")  # keeps 0-d arrays 0-d
    array.flags.writeable = False
    return array


def _finite(array: np.ndarray) -> bool:
    # min and max are NaN when any element is (and infinite when one is): no boolean temporary
    if not (np.issubdtype(array.dtype, np.floating) and array.size):
        return True
    return bool(np.isfinite(array.min()) and np.isfinite(array.max()))


def _check_finite(what: str, array: np.ndarray) -> None:
    if not _finite(array):
        raise InputError(f"The {what} contains NaN or infinite values.")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class Interpretation:
    """The affine map F̂_x(z) = A_x z + c_x frozen at an input x: the readings.

    `samples`: N when x is a batch of N samples along axis 0 (the model's batch axis, carried to
    every output), else None (the whole of x is one input). With samples, every reading is per
    sample (onnxscope.runtime.targets): votes(k) reads element k of each sample's output, never a
    flat index over the batch, and A_x being block-diagonal over the samples, N targets cost one
    probe. `MaskRun` is one run of the mask graph; `SampleLoop` interprets a model exported at
    batch 1 one sample at a time behind the same readings.
    """

    scope: LinearScope
    x: np.ndarray
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    output_names: list[str]
    samples: int | None

    # -- results at x --------------------------------------------------------------------------
    @property
    def output(self) -> np.ndarray:
        """F(x) for a single-output model."""
        return self._single(self.outputs)

    @property
    def bias(self) -> np.ndarray:
        return self._single(self.biases)

    def apply(self, z: np.ndarray):
        """A_x z: an array for a single-output model, else a dict by output name."""
        return self._single(self.apply_all(z), allow_dict=True)

    def apply_T(self, w) -> np.ndarray:
        """A_x^T w: input-shaped; w shaped like the output with any leading dims."""
        return self.apply_T_all(w)

    # -- readings ------------------------------------------------------------------------------
    def rows(self, idx, output: str | None = None) -> np.ndarray:
        """A_x^T e_i for output positions i (flat indices, or tuples of coordinates such as
        (c, y, x); per sample, onnxscope.runtime.targets): what each output element looks at, a
        stack [K, *x]."""
        name = self._output_name(output)
        shape = self.outputs[name].shape
        where = resolve_positions(idx, self.samples, shape, "Row")
        self._require_independent_samples()
        probes = one_hots(where, shape, self.samples, self.outputs[name].dtype)
        return self.apply_T_all({name: probes})

    def columns(self, idx) -> np.ndarray | dict[str, np.ndarray]:
        """A_x e_j for input positions j (flat, or tuples of coordinates; per sample): a stack
        [K, *output] per output."""
        where = resolve_positions(idx, self.samples, self.x.shape, "Column")
        self._require_independent_samples()
        return self.apply(one_hots(where, self.x.shape, self.samples, self.x.dtype))

    def votes(self, target, output: str | None = None) -> np.ndarray:
        """Pixel-wise votes x ⊙ A_x^T e_k for output element k (a class of a classifier), shaped
        like x: each sample's part holds its own target's votes (targets: an int, one per sample,
        'top', a label; onnxscope.runtime.targets). votes(k)[n].sum() + bias[n, k] equals
        output[n, k]. One adjoint probe answers a target per sample."""
        _, stack, _, votes = self._vote_maps(target, output, "votes")
        return votes.reshape((*stack, *self.x.shape))

    def bias_share(self, target, output: str | None = None) -> dict:
        """How much of output k comes from the bias: |c_k| / (|Σ votes| + |c_k|), with the parts
        ('share', 'votes', 'bias', 'output'): numbers for one target at one sample, else arrays
        shaped like the targets (one per sample)."""
        return self.vote_split(target, output, "bias_share").parts()

    def vote_split(self, target, output: str | None = None, what: str = "vote_split"):
        """`votes` and `bias_share` from the same probe: a VoteSplit with the vote maps, the
        targets read, and each target's output = Σ votes + bias with the bias share."""
        name = self._output_name(output)
        indices, stack, scalar, votes = self._vote_maps(target, name, what)
        n = sample_count(self.samples)
        pick = lambda v: per_sample_values(v, indices, self.samples).astype(np.float64)  # noqa: E731
        sums = votes.reshape(len(indices), n, -1).sum(axis=2, dtype=np.float64)
        return VoteSplit(
            votes=votes.reshape((*stack, *self.x.shape)),
            classes=indices.reshape((*stack, n)),
            sums=sums.reshape((*stack, n)),
            bias=pick(self.biases[name]).reshape((*stack, n)),
            output=pick(self.outputs[name]).reshape((*stack, n)),
            scalar=scalar,
        )

    def _vote_maps(self, target, output, what):
        """(indices [P, N], stack shape, scalar, votes [P, *x]) of the targets: x ⊙ A_xᵀ of
        their one-hots, one probe per target of every sample."""
        name = self._output_name(output)
        self._require_independent_samples()
        indices, stack, scalar = resolve_targets(
            target, self.samples, self.outputs[name], self.scope.labels, what
        )
        probes = one_hots(indices, self.outputs[name].shape, self.samples, self.outputs[name].dtype)
        return indices, stack, scalar, self.x * self.apply_T_all({name: probes})

    def as_linear_operator(self, output: str | None = None, input_region=None, output_region=None):
        """A_x as a scipy.sparse.linalg.LinearOperator (matvec: linear graph, rmatvec: adjoint),
        optionally restricted to crops (tuples of slices) of the input and the output."""
        from .spectrum import linear_operator

        return linear_operator(self, output, input_region, output_region)

    def svd(self, k: int, output: str | None = None, *, input_region=None, output_region=None):
        """Top-k singular triplets of A_x, or of its restriction to an input region and an
        output region (each a tuple of slices/ints over the tensor's leading axes): an SVD
        (U [k, *output region], s [k], Vt [k, *input region]), largest first. Assembled from
        rows or columns where the smaller side is small, matrix-free ARPACK past that
        (onnxscope.runtime.spectrum)."""
        from .spectrum import svd

        if not _is_int(k) or k < 1:
            raise InputError(f"svd(k): k must be a positive integer, not {k!r}.")
        if isinstance(output, (tuple, dict)):
            raise InputError(
                "svd(k, output): the second argument names the output; give crops as "
                "input_region= and output_region=."
            )
        name = self._output_name(output)
        return svd(self, int(k), name, input_region, output_region)

    def verify(self, seed: int = 0, tol: float | None = None, noise: str = "always"):
        """The exactness checks at x (reconstruction, linearity, adjoint), each with the float
        noise floor measured in the same run: a `Verification`, a mapping from check to its
        relative error, with `.ok`, `.noise`, `.conditioning` and `.passed(name)`; with samples,
        `.per_sample` holds one Verification per sample and `.ok` needs every one.
        noise="needed" measures the reconstruction's noise floor only where its error exceeds
        tol (the same verdicts, in a fraction of the time; the floor is NaN elsewhere). The
        measures are explained in onnxscope/runtime/verify.py and the README."""
        from .verify import DEFAULT_TOL, verify

        if not _is_int(seed) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, not {seed!r}.")
        if noise not in ("always", "needed"):
            raise InputError(f"noise must be 'always' or 'needed', not {noise!r}.")
        return verify(self, seed, DEFAULT_TOL if tol is None else tol, noise)

    # -- plumbing ------------------------------------------------------------------------------
    def _require_independent_samples(self) -> None:
        """Per-sample readings take one probe for all samples, which is exact only where no
        sample's output reads another sample (A_x block-diagonal over axis 0): checked once per
        input shape, and a model that mixes its samples is refused here."""
        if not self.samples or self.samples < 2:
            return
        leak = self._sample_leak()
        if leak > SAMPLE_LEAK_TOL:
            raise InputError(
                f"The model mixes the samples of its batch axis (a sample's output depends on "
                f"other samples: relative leak {leak:.2g}), so readings cannot be per sample. "
                "Interpret one sample at a time, or use LinearScope(..., batch_axis=None) to "
                "read the batch as one input."
            )

    def _sample_leak(self) -> float:
        """How much A_x couples different samples (0 when it is block-diagonal)."""
        return 0.0

    def _cotangents(self, w) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
        """w (an array for a single output, or a dict by output name with the same leading dims;
        missing outputs count as zero) as (leading dims, {output: [count, *output]})."""
        if not isinstance(w, Mapping):
            if len(self.output_names) != 1:
                raise InputError("The model has several outputs: pass w as a dict by output name.")
            w = {self.output_names[0]: w}
        unknown = set(w) - set(self.output_names)
        if unknown:
            raise InputError(f"Unknown output(s) {sorted(unknown)}; outputs: {self.output_names}.")
        arrays = {n: np.asarray(v, dtype=self.outputs[n].dtype) for n, v in w.items()}
        leads = {_leading(v.shape, self.outputs[n].shape, "cotangent") for n, v in arrays.items()}
        if len(leads) != 1:
            raise InputError(f"All cotangents must have the same leading dims; got {leads}.")
        lead = leads.pop()
        count = int(np.prod(lead))
        flat = {
            n: arrays[n].reshape(count, *self.outputs[n].shape)
            if n in arrays
            else np.zeros((count, *self.outputs[n].shape), self.outputs[n].dtype)
            for n in self.output_names
        }
        for value in flat.values():
            _check_finite("cotangent w", value)
        return lead, flat

    def _output_name(self, output: str | None) -> str:
        """`output` checked against the model's outputs; the only one when None."""
        if output is None:
            return self._single_name()
        if output not in self.outputs and output in self.scope.cut:  # logits=True renamed it
            output = f"{output}_logits"
        if output not in self.outputs:
            raise InputError(
                f"Unknown output {output!r}; the model's outputs are {self.output_names}."
            )
        return output

    def _single_name(self) -> str:
        if len(self.output_names) != 1:
            raise InputError(f"The model has several outputs {self.output_names}; name one.")
        return self.output_names[0]

    def _single(self, values: dict, allow_dict: bool = False):
        if len(values) == 1:
            return next(iter(values.values()))
        if allow_dict:
            return values
        raise InputError(
            f"The model has {len(values)} outputs ({list(values)}); use the dict form "
            "(it.outputs, it.biases, it.apply_all)."
        )


@dataclass(frozen=True)
class VoteSplit:
    """Each target's output split into its pixel-wise votes and its bias (Interpretation.
    vote_split): `votes` the maps (x-shaped, or [K, *x] for K targets per sample); `classes`,
    `sums` (Σ votes), `bias` and `output` one value per sample ([N], or [K, N]); output = sums +
    bias. `scalar`: one target at one sample (`parts()` gives plain numbers)."""

    votes: np.ndarray
    classes: np.ndarray
    sums: np.ndarray
    bias: np.ndarray
    output: np.ndarray
    scalar: bool

    @property
    def share(self) -> np.ndarray:
        """|bias| / (|Σ votes| + |bias|) per sample (0 where both are 0)."""
        total = np.abs(self.sums) + np.abs(self.bias)
        return np.divide(np.abs(self.bias), total, out=np.zeros_like(total), where=total > 0)

    def parts(self) -> dict:
        """{'share', 'votes', 'bias', 'output'}: numbers for one target at one sample, else
        arrays [N] (or [K, N])."""
        parts = {"share": self.share, "votes": self.sums, "bias": self.bias, "output": self.output}
        return {k: float(v.ravel()[0]) if self.scalar else v for k, v in parts.items()}


class MaskRun(Interpretation):
    """The interpretation from one run of the mask graph at x.

    Masks stay as runtime values (OrtValues, on the device for CUDA) and are bound to the linear
    graph for every batch of probes.
    """

    def __init__(self, scope: LinearScope, model: AnalyzedModel, sessions: _Sessions, feeds):
        self.scope, self.model, self._s = scope, model, sessions
        self.x = feeds[scope.wrt]
        self.inputs = feeds
        self.output_names = list(model.outputs)
        # One run of the mask graph: F(x) comes back to the host, the masks stay where the
        # session ran (device memory under CUDA) and are bound from there to every probe batch.
        binding = sessions.mask.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in sessions.mask_outputs:
            binding.bind_output(name, "cpu" if name in self.output_names else sessions.device)
        sessions.mask.run_with_iobinding(binding)
        self._mask_values = dict(zip(sessions.mask_outputs, binding.get_outputs()))
        self.outputs = {n: _read_only(self._mask_values[n].numpy()) for n in self.output_names}
        self.samples = scope.samples_of(self.x.shape, self.outputs)
        self._bias = None
        for name, value in self.outputs.items():
            # min is NaN when any element is: no boolean temporary on every interpret()
            if np.issubdtype(value.dtype, np.floating) and value.size and np.isnan(value.min()):
                raise OnnxscopeError(
                    f"The model's output '{name}' is NaN at this input: there is nothing exact "
                    f"to interpret.{_nonfinite_weights(scope.model)}"
                )

    @functools.cached_property
    def batch(self) -> int:
        """Probes per run of the linear and adjoint graphs (LinearScope.batch_for)."""
        return self.scope.batch_for(self._s)

    def _sample_leak(self) -> float:
        """The largest per-sample gap of ⟨A z, w⟩ = ⟨z, Aᵀw⟩ for random z, w (it is zero for
        every sample only if A_x is block-diagonal), or where there is no adjoint, the part
        of A z₀ outside sample 0 for z₀ nonzero in sample 0 only; once per input shape."""
        if self._s.sample_leak is None:
            self._s.sample_leak = sample_leak(self)
        return self._s.sample_leak

    def shapes_match_analysis(self) -> bool:
        """Whether the mask graph's outputs have the shapes the rewrite was built for."""
        return all(
            self._mask_values[name].shape() == shape
            for name, shape in self._s.expected_shapes(self.model)
        )

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Every frozen decision and frozen value, by mask graph output name (the manifest's
        units say which node each belongs to)."""
        outputs = set(self.output_names)
        # (numpy() copies a mask from the device when it lives there)
        return {n: self._mask_values[n].numpy() for n in self._s.mask_outputs if n not in outputs}

    @property
    def biases(self) -> dict[str, np.ndarray]:
        """c_x for every output: the affine twin evaluated at z = 0."""
        if self._bias is None:
            values = self._run(self._s.bias, self._s.artifacts.bias_imports, {})
            self._bias = {n: _read_only(v[0]) for n, v in values.items()}
        return self._bias

    # -- the linear map ------------------------------------------------------------------------
    def apply_all(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """A_x z for every output; z is shaped like x with any leading dims."""
        z = np.asarray(z, dtype=self.x.dtype)
        lead = _leading(z.shape, self.x.shape, "probe")
        flat = z.reshape(-1, *self.x.shape)
        _check_finite("probe z", flat)
        out = self._batched(
            self._s.linear, self._s.artifacts.linear_imports, {self._s.artifacts.probe: flat}
        )
        for name in self.output_names:
            self._check_result(f"A_x z (output '{name}')", out[name])
        return {n: out[n].reshape((*lead, *self.outputs[n].shape)) for n in self.output_names}

    def apply_T_all(self, w) -> np.ndarray:
        """A_x^T w, shaped like x with w's leading dims; w is an array (single output) or a dict
        of output-shaped arrays with the same leading dims (missing outputs count as zero)."""
        arts = self._s.artifacts
        if self._s.adjoint is None:
            raise OnnxscopeError(f"No adjoint graph for this model: {arts.adjoint_error}")
        lead, flat = self._cotangents(w)
        feeds = {arts.adjoint_probes[n]: v for n, v in flat.items()}
        out = self._batched(self._s.adjoint, arts.adjoint_imports, feeds)[self.scope.wrt]
        self._check_result("A_x^T w", out)
        return out.reshape((*lead, *self.x.shape))

    def bias_by_layer(self, output: str | None = None) -> dict[str, np.ndarray]:
        """c_x split by the node whose bias or intercept it comes from (nodes adding nothing are
        left out); the parts sum to c_x. Keys are node names, values output-shaped."""
        name = self._output_name(output)
        model, imports, labels = self._s.bias_layers()
        eye = np.eye(len(labels), dtype=self.x.dtype)
        shares = self._batched(model, imports, {self._s.artifacts.selector: eye})[name]
        return {label: share for label, share in zip(labels, shares) if np.any(share)}

    def adjoint_unavailable(self) -> str | None:
        """Why this model has no adjoint graph, or None when it has one."""
        if self._s.adjoint is None:
            return self._s.artifacts.adjoint_error or "no adjoint graph"
        return None

    def jittered_outputs(self, x: np.ndarray) -> list[dict[str, np.ndarray]]:
        """F at another value of the interpreted input (the other inputs as given), with every
        intermediate tensor rounded another way (`verify.jittered_model`), once per draw of
        `verify.JITTERS`: a measure of the model's own float noise. This interpretation is
        left as it is."""
        from .verify import FREQUENCY, JITTERS

        feeds = {**self.inputs, self.scope.wrt: np.asarray(x, self.x.dtype, order="C")}
        session = self._s.jittered(self.model)
        draws = [{**feeds, FREQUENCY: np.asarray(f, np.float64)} for f in JITTERS]
        return [dict(zip(self.output_names, session.run(self.output_names, d))) for d in draws]

    def affine_outputs(self, z: np.ndarray, jittered: bool = False):
        """A_x z + c_x for one z shaped like x, evaluated in one graph (the bias graph fed z).
        `jittered`: a list, one per draw of `verify.JITTERS`, with its value of each of the
        model's tensors rounded another way (`verify.jittered_affine`): the model's own float
        noise carried by the frozen map."""
        from .verify import FREQUENCY, JITTERS

        session, probe = self._s.affine(self.model, jittered)
        feeds = {probe: np.ascontiguousarray(np.asarray(z, dtype=self.x.dtype)[None])}
        draws = [{FREQUENCY: np.asarray(f, np.float64)} for f in JITTERS] if jittered else [{}]
        outputs = []
        for draw in draws:
            values = self._run(session, self._s.artifacts.bias_imports, {**feeds, **draw})
            outputs.append({n: values[n][0] for n in self.output_names})
        return outputs if jittered else outputs[0]

    # -- plumbing ------------------------------------------------------------------------------
    def _batched(self, session, imports, stacked: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `session` on probes stacked along axis 0, self.batch at a time. Under CUDA a short
        last batch is padded with zero probes: ONNX Runtime's CUDA provider re-plans a session
        whenever an input shape changes (about 70 ms for ResNet-18 on an H200, 50x the run), so
        every run there keeps the one shape."""
        count = len(next(iter(stacked.values())))
        pad = self._s.fixed_shapes
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, max(count, 1), self.batch):
            feeds = {}
            for name, value in stacked.items():
                chunk = value[start : start + self.batch]
                if pad and len(chunk) < self.batch:
                    zeros = np.zeros((self.batch - len(chunk), *chunk.shape[1:]), chunk.dtype)
                    chunk = np.concatenate([chunk, zeros])
                feeds[name] = np.ascontiguousarray(chunk)
            valid = min(self.batch, max(count - start, 0))
            for name, value in self._run(session, imports, feeds).items():
                parts.setdefault(name, []).append(value[:valid] if pad else value)
        return {name: np.concatenate(values) for name, values in parts.items()}

    def _run(self, session, imports: dict[str, str], extra: dict[str, np.ndarray]):
        binding = session.io_binding()
        for name, value in extra.items():
            binding.bind_cpu_input(name, value)
        for lin_name, mask_name in imports.items():
            binding.bind_ortvalue_input(lin_name, self._mask_values[mask_name])
        names = [o.name for o in session.get_outputs()]
        for name in names:
            binding.bind_output(name, self._s.device)
        session.run_with_iobinding(binding)
        # the model's outputs (the adjoint's: the interpreted input); a graph's other outputs
        # are tensors kept as outputs only so that ONNX Runtime reuses no buffer for them
        wanted = {*self.output_names, self.scope.wrt}
        values = zip(names, binding.copy_outputs_to_cpu())
        return {name: value for name, value in values if name in wanted}

    def _check_result(self, what: str, value: np.ndarray) -> None:
        """A reading of finite probes is finite unless the model's weights are not."""
        if _finite(value):
            return
        raise OnnxscopeError(
            f"{what} is not finite although the probes are: the model computes with infinite "
            f"or NaN values on the input's path.{_nonfinite_weights(self.scope.model)}"
        )


class SampleLoop(Interpretation):
    """A batch of N samples for a model exported with its batch axis fixed at 1: one MaskRun per
    sample behind the readings of one batch (probes are split by sample, results joined along
    axis 0), so the API is the same as for a model with a free batch axis. The model itself is
    never changed: freeing a fixed batch axis is not provably safe in general (a Reshape to
    [1, -1] would merge the samples)."""

    def __init__(self, scope: LinearScope, feeds: dict[str, np.ndarray]):
        self.scope, self.inputs = scope, feeds
        n = feeds[scope.wrt].shape[0]
        parts = []
        for k in range(n):
            part = {name: self._sample(name, value, k, n) for name, value in feeds.items()}
            x = part.pop(scope.wrt)
            parts.append(scope.interpret(x, **part))
        if any(p.samples != 1 for p in parts):
            raise InputError(
                f"Input '{scope.wrt}' is declared with batch 1, but the model's outputs do not "
                "keep that batch axis: a batch of several inputs cannot be read per sample. "
                "Interpret one input at a time."
            )
        self.parts = parts
        self.model, self.samples = parts[0].model, n
        self.output_names = parts[0].output_names
        self.x = _read_only(np.concatenate([p.x for p in parts]))
        self.outputs = self._joined([p.outputs for p in parts])
        self._bias = None

    def _sample(self, name: str, value: np.ndarray, k: int, n: int) -> np.ndarray:
        """Sample k of an input that has the batch axis (declared 1, given n), else all of it."""
        dims = self.scope._input_specs[name][0]
        if dims and dims[0] == 1 and value.ndim == len(dims) and value.shape[0] == n:
            return value[k : k + 1]
        return value

    @staticmethod
    def _joined(parts: list[dict[str, np.ndarray]], axis: int = 0) -> dict[str, np.ndarray]:
        return {n: np.concatenate([p[n] for p in parts], axis=axis) for n in parts[0]}

    @functools.cached_property
    def batch(self) -> int:
        return self.parts[0].batch

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Each mask of the samples joined along its axis 0 (a mask without the batch axis is
        stacked)."""
        found = [p.masks for p in self.parts]
        return {
            name: np.concatenate([m[name] for m in found])
            if found[0][name].ndim and found[0][name].shape[0] == 1
            else np.stack([m[name] for m in found])
            for name in found[0]
        }

    @property
    def biases(self) -> dict[str, np.ndarray]:
        if self._bias is None:
            self._bias = {
                n: _read_only(v) for n, v in self._joined([p.biases for p in self.parts]).items()
            }
        return self._bias

    def apply_all(self, z: np.ndarray) -> dict[str, np.ndarray]:
        z = np.asarray(z, dtype=self.x.dtype)
        lead = _leading(z.shape, self.x.shape, "probe")
        flat = z.reshape(-1, *self.x.shape)
        out = self._joined([p.apply_all(flat[:, k : k + 1]) for k, p in enumerate(self.parts)], 1)
        return {n: v.reshape((*lead, *self.outputs[n].shape)) for n, v in out.items()}

    def apply_T_all(self, w) -> np.ndarray:
        lead, flat = self._cotangents(w)
        out = [
            p.apply_T_all({n: v[:, k : k + 1] for n, v in flat.items()})
            for k, p in enumerate(self.parts)
        ]
        return np.concatenate(out, axis=1).reshape((*lead, *self.x.shape))

    def bias_by_layer(self, output: str | None = None) -> dict[str, np.ndarray]:
        name = self._output_name(output)
        found = [p.bias_by_layer(name) for p in self.parts]
        labels = list(dict.fromkeys(label for f in found for label in f))
        zero = np.zeros_like(self.parts[0].outputs[name])
        return {label: np.concatenate([f.get(label, zero) for f in found]) for label in labels}

    def adjoint_unavailable(self) -> str | None:
        return self.parts[0].adjoint_unavailable()

    def jittered_outputs(self, x: np.ndarray) -> list[dict[str, np.ndarray]]:
        draws = [p.jittered_outputs(x[k : k + 1]) for k, p in enumerate(self.parts)]
        return [self._joined(list(d)) for d in zip(*draws)]

    def affine_outputs(self, z: np.ndarray, jittered: bool = False):
        found = [p.affine_outputs(z[k : k + 1], jittered) for k, p in enumerate(self.parts)]
        if not jittered:
            return self._joined(found)
        return [self._joined(list(d)) for d in zip(*found)]


def _labels(labels) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str) or not all(isinstance(t, str) for t in labels):
        raise InputError("labels must be a sequence of class names (strings).")
    if len(set(labels)) != len(labels):
        raise InputError("labels must be distinct.")
    return tuple(labels)


def _probe_bytes(artifacts: Artifacts) -> int:
    """Bytes that one probe adds to a run of the linear graph if no buffer were reused: every
    tensor on the linear path of the model, at its static shape."""
    walk = artifacts.walk
    if walk is None:
        return 0
    model, total = walk.model, 0
    for name in walk.analysis.lin:
        if name in model.info:  # (tensors without static facts: sequences, maps)
            total += int(np.prod(model.shape(name))) * model.dtype(name).itemsize
    return total


def _leading(shape, x_shape, what) -> tuple[int, ...]:
    n = len(x_shape)
    if len(shape) < n or tuple(shape[len(shape) - n :]) != tuple(x_shape):
        raise InputError(
            f"A {what} must be shaped like x {tuple(x_shape)} with leading batch dims; "
            f"got {tuple(shape)}."
        )
    return tuple(shape[: len(shape) - n])


def _read_only(array) -> np.ndarray:
    array = np.asarray(array)  # v[0] of a [K] result is a numpy scalar: keep it 0-d
    array.flags.writeable = False
    return array


def _nonfinite_weights(model: onnx.ModelProto) -> str:
    """' Initializer(s) ... hold NaN or infinite values.' for the weights that do, else ''."""
    from ..graph.weights import weights_for

    store, bad = weights_for(model), []
    for init in model.graph.initializer:
        try:
            value = store.value(init)  # the store's arrays for its stubs
        except Exception:  # external data not loaded, exotic types: nothing to say
            continue
        if not _finite(value):
            bad.append(init.name)
    return f" Initializer(s) {bad} hold NaN or infinite values." if bad else ""
