"""Shared test helpers: small inline ONNX models, plain ONNX Runtime runs, and `check_model`,
the standard set of checks every supported op and model must pass (DESIGN.md section 4).

Models are written node by node in `onnx.parser` syntax, weights come as numpy arrays:

    model = make_model(
        ["u = Conv <pads=[1,1,1,1]> (x, W, B)", "y = Relu(u)"],
        inputs={"x": (1, 3, 8, 8)},
        inits={"W": w, "B": b},
    )
    checked = check_model(model, {"x": x})

Every node is named after its first output, so the manifest's `units[*].node` and the error
messages of `UnsupportedModelError` can be matched against the tensor names in the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
from onnx import helper, numpy_helper

import onnxscope

DEFAULT_OPSET = 17


# -- building models -----------------------------------------------------------------------------


def node(text: str | onnx.NodeProto, name: str | None = None) -> onnx.NodeProto:
    """One node from `onnx.parser` text ('y = Conv <group=2> (x, W)'), named after its output."""
    n = onnx.parser.parse_node(text) if isinstance(text, str) else text
    if name is not None:
        n.name = name
    elif not n.name:
        n.name = next((o for o in n.output if o), n.op_type)
    return n


def _input_vi(name: str, spec) -> onnx.ValueInfoProto:
    if isinstance(spec, onnx.ValueInfoProto):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[1], int):
        shape, dtype = spec
    else:
        shape, dtype = spec, np.float32
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return helper.make_tensor_value_info(name, elem, list(shape) if shape is not None else None)


def make_model(
    nodes: Sequence[str | onnx.NodeProto],
    inputs: Mapping[str, object],
    outputs: Sequence[str | tuple] | None = None,
    inits: Mapping[str, np.ndarray] | None = None,
    opset: int = DEFAULT_OPSET,
    domains: Mapping[str, int] | None = None,
    ir_version: int | None = None,
) -> onnx.ModelProto:
    """An inline ONNX model.

    nodes: `onnx.parser` node lines or NodeProtos, in topological order.
    inputs: {name: shape} (float32) or {name: (shape, dtype)} or {name: ValueInfoProto}.
    outputs: graph output names, or (name, shape) / (name, shape, dtype) to give a type where
        neither shape inference nor ONNX Runtime can (a custom op); default: the last node's
        outputs.
    inits: {name: array} initializers.
    domains: extra operator sets, e.g. {"com.microsoft": 1}.

    Output dtypes and shapes come from ONNX shape inference, else from one ONNX Runtime run on
    random inputs (so `onnx.checker.check_model(full_check=True)` accepts the model).
    """
    nodes = [node(n) for n in nodes]
    if outputs is None:
        outputs = [o for o in nodes[-1].output if o]
    typed = {
        o[0]: _input_vi(o[0], o[1] if len(o) == 2 else (o[1], o[2]))
        for o in outputs
        if isinstance(o, tuple)
    }
    outputs = [o[0] if isinstance(o, tuple) else o for o in outputs]
    inits = dict(inits or {})
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    graph = helper.make_graph(
        nodes,
        "g",
        [_input_vi(n, s) for n, s in inputs.items()],
        [typed.get(o) or onnx.ValueInfoProto(name=o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version or max(8, helper.find_min_ir_version_for(opsets[:1]))
    _fill_output_types(model)
    return model


def _fill_output_types(model: onnx.ModelProto) -> None:
    """Give every graph output a dtype and shape: shape inference first, an ORT run otherwise."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        known = {
            vi.name: vi
            for vi in [*inferred.graph.value_info, *inferred.graph.output]
            if vi.type.tensor_type.elem_type
        }
    except Exception:
        known = {}
    missing = []
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):  # given by the caller
            continue
        vi = known.get(out.name)
        if (
            vi is not None
            and vi.type.tensor_type.HasField("shape")
            and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
        ):
            out.type.CopyFrom(vi.type)
        else:
            missing.append(out)
    if not missing:
        return
    # One ORT run on random data for the rest; leave them as plain float if ORT cannot run it.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for out in probe.graph.output:
        if not out.type.tensor_type.elem_type:
            vi = known.get(out.name)
            out.type.CopyFrom(vi.type if vi is not None else helper.make_tensor_type_proto(1, None))
    try:
        values = run(probe, random_inputs(probe))
    except Exception:
        for out in missing:
            if not out.type.tensor_type.elem_type:
                out.type.CopyFrom(helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, None))
        return
    for out in missing:
        v = np.asarray(values[out.name])
        out.type.CopyFrom(
            helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
        )


def to_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


# -- inputs --------------------------------------------------------------------------------------


def input_specs(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    inits = {t.name for t in model.graph.initializer}
    specs = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim)
        specs[vi.name] = (shape, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)))
    return specs


def away_from_zero(x: np.ndarray, margin: float = 1e-2) -> np.ndarray:
    """Push every |x| < margin out to +-margin (sign kept; exact zeros go to +margin)."""
    x = np.array(x, copy=True)
    small = np.abs(x) < margin
    x[small] = np.where(x[small] < 0, -margin, margin).astype(x.dtype)
    return x


def random_inputs(
    model: onnx.ModelProto, seed: int = 0, margin: float = 0.0
) -> dict[str, np.ndarray]:
    """Standard normal float inputs (nudged `margin` away from 0), zeros for other dtypes."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (shape, dtype) in input_specs(model).items():
        if np.issubdtype(dtype, np.floating):
            x = rng.standard_normal(shape).astype(dtype)
            feeds[name] = away_from_zero(x, margin) if margin else x
        else:
            feeds[name] = np.zeros(shape, dtype)
    return feeds


# -- plain ONNX Runtime --------------------------------------------------------------------------


def session(model: onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], optimize: bool = True) -> dict:
    """A plain ONNX Runtime run of `model`: {output name: array}."""
    sess = session(model, optimize)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


def run_all(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of the original model at `feeds`: inputs, initializers and all node outputs
    (the intermediate tensors are added as graph outputs; optimizations off)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(exposed)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*inferred.graph.value_info, *inferred.graph.output]
        if vi.type.tensor_type.elem_type
    }
    listed = {o.name for o in exposed.graph.output}
    for n in exposed.graph.node:
        for o in n.output:
            if o and o not in listed and o in types:
                exposed.graph.output.append(helper.make_tensor_value_info(o, types[o], None))
                listed.add(o)
    env = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    env.update(feeds)
    env.update(run(exposed, feeds, optimize=False))
    return env


# -- the standard checks -------------------------------------------------------------------------


@dataclass
class Checked:
    """What `check_model` built and measured, for further checks in a test."""

    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    scope: onnxscope.LinearScope
    it: onnxscope.Interpretation
    artifacts: object  # onnxscope.rewrite.artifacts.Artifacts
    errors: dict[str, float]
    reference: dict[str, np.ndarray]  # plain ORT outputs of the original model

    @property
    def wrt(self) -> str:
        return self.scope.wrt

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.inputs.items()}

    @property
    def units(self) -> list[dict]:
        return self.artifacts.manifest["units"]

    def unit(self, node_name: str) -> dict:
        found = [u for u in self.units if u["node"] == node_name]
        assert found, f"no unit for node {node_name!r}; units: {[u['node'] for u in self.units]}"
        return found[0]

    def masks(self) -> dict[str, dict[str, np.ndarray]]:
        """{node: {label: array}} for every unit in the manifest."""
        values = dict(self.it.masks)
        needed = [m["output"] for u in self.units for m in u["masks"].values()]
        if any(n not in values for n in needed):  # a mask only the manifest lists: run the graph
            values.update(run(self.artifacts.mask, self.inputs))
        return {
            u["node"]: {label: values[m["output"]] for label, m in u["masks"].items()}
            for u in self.units
        }

    def mask(self, node_name: str, label: str) -> np.ndarray:
        masks = self.masks()
        assert node_name in masks, f"no unit {node_name!r}; units: {list(masks)}"
        assert label in masks[node_name], f"unit {node_name!r} has masks {list(masks[node_name])}"
        return masks[node_name][label]


def check_artifacts(artifacts) -> None:
    """`onnx.checker.check_model(full_check=True)` on the mask, linear, bias and adjoint graphs."""
    for role in ("mask", "linear", "bias", "adjoint"):
        m = getattr(artifacts, role)
        try:
            onnx.checker.check_model(m, full_check=True)
        except Exception as exc:  # name the artifact in the failure
            # the mask graph keeps the model's own nodes; a deprecated op the model uses
            # (GroupNormalization-18) is the model's choice, and ONNX Runtime runs it
            if role == "mask" and "deprecated" in str(exc):
                continue
            raise AssertionError(f"the {role} graph fails the ONNX checker: {exc}") from exc


def assert_outputs_equal(actual: Mapping, expected: Mapping, rtol: float = 1e-6, what="") -> None:
    assert set(actual) == set(expected), f"{what}outputs {sorted(actual)} != {sorted(expected)}"
    for name, ref in expected.items():
        ref = np.asarray(ref)
        got = np.asarray(actual[name])
        assert got.shape == ref.shape, f"{what}output {name!r}: shape {got.shape} != {ref.shape}"
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        np.testing.assert_allclose(
            got.astype(np.float64),
            ref.astype(np.float64),
            rtol=rtol,
            atol=rtol * max(scale, 1e-30),
            err_msg=f"{what}output {name!r}",
        )


def interpret(
    model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], wrt: str | None = None
) -> Checked:
    """Build the scope and interpret `model` at `inputs`, asserting nothing (see `check_model`)."""
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    scope = onnxscope.LinearScope(model, wrt=wrt)
    others = {k: v for k, v in inputs.items() if k != scope.wrt}
    it = scope.interpret(inputs[scope.wrt], **others)
    artifacts = scope.artifacts({k: v.shape for k, v in inputs.items()})
    return Checked(model, inputs, scope, it, artifacts, {}, run(model, inputs))


def check_model(
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    tol: float = 1e-5,
    wrt: str | None = None,
    out_rtol: float = 1e-6,
) -> Checked:
    """Interpret `model` at `inputs` and assert the checks of DESIGN.md section 4:

    - reconstruction ‖F(x) − (A_x x + c_x)‖/‖F(x)‖, linearity of A_x and the adjoint
      (dot-product) test within tol, or within the noise floor `verify` measures where that is
      larger (`it.verify(tol=tol).passed(...)`);
    - the mask graph's own outputs (`it.outputs`) equal a plain ONNX Runtime run of the model
      (relative to each output's largest magnitude, `out_rtol`);
    - the mask, linear, bias and adjoint graphs pass
      `onnx.checker.check_model(full_check=True)`.
    """
    checked = interpret(model, inputs, wrt)
    errors = checked.errors = checked.it.verify(tol=tol)
    assert "adjoint" in errors, f"no adjoint graph: {checked.artifacts.adjoint_error}"
    for name in ("reconstruction", "linearity", "adjoint"):
        assert errors.passed(name), (
            f"{name} error {errors[name]:.3g} > {errors.bound(name):.3g} (tol {tol}, noise "
            f"floor {errors.noise[name]:.3g})"
        )
    assert_outputs_equal(
        checked.it.outputs, checked.reference, out_rtol, "mask graph vs plain ORT: "
    )
    check_artifacts(checked.artifacts)
    check_readings(checked.it)
    return checked


def check_readings(it: onnxscope.Interpretation, output: str | None = None, rtol=None) -> None:
    """Every reading graph the model has (votes, rows, columns, scope: one ONNX Runtime run
    each) equals the Python API (`votes`, `rows`, `columns`, `apply`, `apply_T`, `bias`) at the
    interpretation's inputs, to `rtol` relative to each result's largest magnitude, reading
    `output` (default: the first). Where the model has no adjoint, votes and rows are absent.
    rtol None: 1e-6, or float16's resolution for a float16 model (the graphs round alike, but
    ONNX Runtime fuses the one-run graphs otherwise than the separate ones)."""
    if rtol is None:
        rtol = 2e-3 if it.x.dtype == np.float16 else 1e-6
    from onnxscope.rewrite.readings import unavailable
    from onnxscope.serve.models import ServedModel

    arts = it.scope.artifacts({k: v.shape for k, v in it.inputs.items()})
    graphs = arts.readings(output)
    out = output or it.output_names[0]
    assert set(graphs) | set(unavailable(arts)) == {"votes", "rows", "columns", "scope"}

    def run(reading: str, **feeds) -> dict[str, np.ndarray]:
        """The reading's outputs by their usual names, fed by their usual names."""
        g = graphs[reading]
        served = ServedModel(reading, g.model, g.inputs, g.outputs, weights=arts.weights)
        got = served.infer({**it.inputs, **{g.names.get(k, k): v for k, v in feeds.items()}})
        models = {n: got[n] for n in it.output_names}
        assert_outputs_equal(models, it.outputs, rtol, f"{reading}.onnx F(x) vs the mask graph: ")
        return {**got, **{usual: got[name] for usual, name in g.names.items() if name in got}}

    def same(got, expected, what: str) -> None:
        assert_outputs_equal({what: got}, {what: expected}, rtol, f"{what} vs the Python API: ")

    n_out, n_x = it.outputs[out].size, it.x.size
    picks = lambda n: np.unique(np.array([0, n // 2, n - 1], np.int64))  # noqa: E731
    if "votes" in graphs:
        k = picks(n_out)
        got = run("votes", classes=k)
        same(got["votes"], np.stack([it.votes(int(i), out) for i in k]), "votes.onnx votes")
        same(got["bias"], it.biases[out].ravel()[k], "votes.onnx bias")
        same(run("rows", indices=k - n_out)["rows"], it.rows(k, out), "rows.onnx rows")
    if "columns" in graphs:
        j = picks(n_x)
        columns = it.columns(j)
        columns = columns[out] if isinstance(columns, dict) else columns
        same(run("columns", indices=j)["columns"], columns, "columns.onnx columns")
    rng = np.random.default_rng(7)
    g, prefix = graphs["scope"], arts.scope_prefixes()
    z = rng.standard_normal((2, *it.x.shape)).astype(it.x.dtype)
    probes = {prefix["linear"] + arts.probe: z}
    adjoint = any(s.name.startswith(prefix["adjoint"]) for s in g.inputs)
    w = {}
    for o in it.output_names if adjoint else ():
        w[o] = rng.standard_normal((2, *it.outputs[o].shape)).astype(it.outputs[o].dtype)
        probes[prefix["adjoint"] + arts.adjoint_probes[o]] = w[o]
    got = run("scope", **probes)
    for o in it.output_names:
        same(got[prefix["linear"] + o], it.apply_all(z)[o], f"scope.onnx linear/{o}")
        same(got[prefix["bias"] + o][0], it.biases[o], f"scope.onnx bias/{o}")
    if adjoint:
        same(got[prefix["adjoint"] + it.scope.wrt], it.apply_T_all(w), "scope.onnx adjoint")
    # the probes omitted: F(x) and c_x alone, A_x z and A_x^T w for no probe (where the model
    # runs on an empty batch: see readings._runs_without_probes)
    if g.probe_default is None:
        assert not any(s.optional for s in g.inputs)
        return
    bare = run("scope")
    assert bare[prefix["linear"] + out].shape == (g.probe_default, *it.outputs[out].shape)
    np.testing.assert_array_equal(bare[prefix["bias"] + out][0], got[prefix["bias"] + out][0])


# -- finite differences --------------------------------------------------------------------------


def as_dict(value, names: Sequence[str]) -> dict[str, np.ndarray]:
    return dict(value) if isinstance(value, dict) else {names[0]: value}


def finite_difference_columns(
    checked: Checked, js: Iterable[int], h: float = 1e-2, require_same_masks: bool = True
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Central differences (F(x + h e_j) − F(x − h e_j)) / 2h for flat input indices j.

    With `require_same_masks`, an index whose ±h steps change any frozen decision (a kink or tie
    crossed) is skipped; returns the indices kept and {output: [len(kept), *out_shape]}.
    """
    x = checked.inputs[checked.wrt]
    others = {k: v for k, v in checked.inputs.items() if k != checked.wrt}
    # the decisions (bool / integer masks); frozen float values move with x anyway
    base = {k: v for k, v in checked.it.masks.items() if not np.issubdtype(v.dtype, np.floating)}
    sess = session(checked.model)
    names = [o.name for o in sess.get_outputs()]
    kept, cols = [], {n: [] for n in names}
    for j in js:
        steps = []
        for sign in (1.0, -1.0):
            xs = x.copy().reshape(-1)
            xs[j] += sign * h
            steps.append(xs.reshape(x.shape))
        if require_same_masks:
            same = True
            for xs in steps:
                masks = checked.scope.interpret(xs, **others).masks
                if any(not np.array_equal(masks[k], base[k]) for k in base):
                    same = False
                    break
            if not same:
                continue
        fp, fm = (dict(zip(names, sess.run(names, {checked.wrt: xs, **others}))) for xs in steps)
        # the step actually taken in float32: (x + h) - (x - h) may differ from 2h by rounding
        span = float(steps[0].reshape(-1)[j]) - float(steps[1].reshape(-1)[j])
        for n in names:
            cols[n].append((fp[n].astype(np.float64) - fm[n].astype(np.float64)) / span)
        kept.append(int(j))
    return kept, {n: np.stack(v) if v else np.zeros((0,)) for n, v in cols.items()}


def assert_columns_match_fd(
    checked: Checked, count: int = 4, h: float = 1e-2, rtol: float = 2e-4, seed: int = 0
) -> list[int]:
    """A_x e_j (`it.columns`) equals the central difference at `count` indices j where no frozen
    decision changes within ±h (for piecewise-linear models A_x is the Jacobian at x).
    Returns the indices checked."""
    x = checked.inputs[checked.wrt]
    names = checked.it.output_names
    order = np.random.default_rng(seed).permutation(x.size)[: 8 * count]
    kept: list[int] = []
    fd_all: dict[str, list] = {n: [] for n in names}
    for start in range(0, len(order), 2 * count):
        js, fd = finite_difference_columns(checked, order[start : start + 2 * count], h)
        take = min(len(js), count - len(kept))
        kept += js[:take]
        for n in names:
            fd_all[n].extend(fd[n][:take])
        if len(kept) >= count:
            break
    assert len(kept) >= min(count, (x.size + 1) // 2), (
        f"only {len(kept)} indices j have no kink or tie within ±{h}"
    )
    cols = as_dict(checked.it.columns(kept), names)
    for n in names:
        fd = np.stack(fd_all[n])
        scale = max(float(np.max(np.abs(fd))), 1.0)
        np.testing.assert_allclose(
            cols[n].astype(np.float64),
            fd,
            rtol=rtol,
            atol=rtol * scale,
            err_msg=f"column vs finite difference, output {n!r}, j={kept}",
        )
    return kept


__all__ = [
    "Checked",
    "assert_columns_match_fd",
    "assert_outputs_equal",
    "away_from_zero",
    "check_artifacts",
    "check_model",
    "finite_difference_columns",
    "interpret",
    "make_model",
    "node",
    "random_inputs",
    "run",
    "run_all",
    "session",
]
