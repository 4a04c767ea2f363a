"""What changed between two inputs: the decisions each frozen unit flipped, how far the linear
interpreter moved, each class's votes and bias at both, and the decisions flipped along the
segment between them (the paper's question of how the interpretation changes with the input).

    comparison = onnxscope.compare(scope, x1, x2, steps=8)
    comparison.layers          # per mask of each frozen unit: flips (decisions) or moves (gains)
    comparison.linear_change   # ‖A₁ − A₂‖_F / ‖A₁‖_F, estimated with Gaussian probes
    comparison.classes         # per class read: F, Σ votes and bias at x1 and at x2
    comparison.path            # decisions flipped between consecutive points of x1 + t(x2 − x1)

Decisions are the discrete masks (on/off pieces, MaxPool's winning offsets, selections): a flip
is an element whose decision differs. Gains and frozen operands are floats: they do not flip,
they move, and `largest_move` / `relative_move` say by how much. Piecewise-linear networks are
affine between flips: along the path A_x changes only across a segment with flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

# A float mask element has moved where it changed by more than this share of the mask's scale
MOVE_TOL = 1e-6


@dataclass(frozen=True)
class LayerChange:
    """One mask of one frozen unit between x1 and x2."""

    node: str
    op: str
    kind: str  # unit | selection | gate
    mask: str  # the mask's label in the manifest (piece, window, gain, frozen:<operand>)
    discrete: bool  # a decision (flips) rather than a gain (moves)
    total: int  # elements of the mask
    changed: int  # flipped decisions, or gains that moved (MOVE_TOL)
    largest_move: float  # max |g₂ − g₁| (float masks; 0 for decisions)
    relative_move: float  # ‖g₂ − g₁‖ / ‖g₁‖ (float masks; 0 for decisions)
    spatial: np.ndarray | None = None  # [H, W] changes summed over batch and channels (4-D)

    @property
    def fraction(self) -> float:
        return self.changed / self.total if self.total else 0.0


@dataclass(frozen=True)
class ClassChange:
    """One class (output element) of a vector output at x1 and at x2: F = Σ votes + bias."""

    index: int
    label: str | None
    output: tuple[float, float]
    votes: tuple[float, float]  # Σ votes
    bias: tuple[float, float]


@dataclass(frozen=True)
class PathSegment:
    """Between t0 and t1 on x1 + t (x2 − x1): the decisions that flipped."""

    t0: float
    t1: float
    flips: int
    by_layer: dict[str, int]  # node -> flips


@dataclass
class Comparison:
    mode: str
    output: str
    layers: list[LayerChange]
    linear_change: float  # ‖A₁ − A₂‖_F / ‖A₁‖_F (estimated)
    linear_norm: tuple[float, float]  # ‖A₁‖_F, ‖A₂‖_F (estimated)
    probes: int
    classes: list[ClassChange] = field(default_factory=list)
    rows: dict[str, float] = field(default_factory=dict)  # target -> ‖r₂ − r₁‖ / ‖r₁‖
    path: list[PathSegment] = field(default_factory=list)

    @property
    def flips(self) -> int:
        return sum(layer.changed for layer in self.layers if layer.discrete)

    @property
    def decisions(self) -> int:
        return sum(layer.total for layer in self.layers if layer.discrete)

    def layer_table(self) -> tuple[tuple[str, ...], list[tuple]]:
        """(header, rows): one row per mask, as `diff` prints it and its page shows it."""
        rows = [
            (layer.node, layer.op, layer.mask, layer.changed, layer.total, f"{layer.fraction:.3%}",
             "-" if layer.discrete else f"{layer.largest_move:.3g} ({layer.relative_move:.2%})")
            for layer in self.layers
        ]  # fmt: skip
        return ("node", "op", "mask", "changed", "of", "share", "gain moved: max (relative)"), rows

    def class_table(self) -> tuple[tuple[str, ...], list[tuple]]:
        """(header, rows): each class's F, Σ votes and bias at A and at B."""
        rows = [
            (
                c.label or c.index,
                *(f"{v:.6g}" for pair in (c.output, c.votes, c.bias) for v in pair),
            )
            for c in self.classes
        ]
        return ("class", "F at A", "F at B", "Σ votes A", "Σ votes B", "bias A", "bias B"), rows

    def summary(self) -> dict:
        """The numbers as plain JSON-able values (`onnxscope diff --json`)."""
        return {
            "mode": self.mode,
            "output": self.output,
            "flips": self.flips,
            "decisions": self.decisions,
            "linear_change": self.linear_change,
            "linear_norm": list(self.linear_norm),
            "probes": self.probes,
            "layers": [
                {k: v for k, v in vars(layer).items() if k != "spatial"}
                | {"fraction": layer.fraction}
                for layer in self.layers
            ],
            "classes": [vars(c) for c in self.classes],
            "rows": self.rows,
            "path": [vars(s) for s in self.path],
        }


def compare(
    scope,
    x1: np.ndarray,
    x2: np.ndarray,
    *,
    output: str | None = None,
    classes="top",
    rows: Sequence | None = None,
    probes: int = 8,
    steps: int = 0,
    seed: int = 0,
    **other_inputs: np.ndarray,
) -> Comparison:
    """Compare the interpretations of `scope` (a LinearScope) at x1 and at x2.

    `classes`: for a vector output, "top" (the top class at x1 and at x2), an int, a label or a
    list of them; None for none; read on `output` (default: the first). `rows`: output positions whose rows A_xᵀ e_i are compared (the
    reading grammar of `rows`). `probes`: Gaussian probes for the ‖A₁ − A₂‖ estimate.
    `steps`: points of the segment from x1 to x2 at which decisions are compared (0: none)."""
    x1, x2 = np.asarray(x1), np.asarray(x2)
    if x1.shape != x2.shape:
        raise InputError(f"The two inputs differ in shape: {list(x1.shape)} and {list(x2.shape)}.")
    if not (isinstance(probes, int) and probes > 0):
        raise InputError(f"probes must be a positive integer, not {probes!r}.")
    if not (isinstance(steps, int) and steps >= 0):
        raise InputError(f"steps must be a non-negative integer, not {steps!r}.")
    it1 = scope.interpret(x1, **other_inputs)
    it2 = scope.interpret(x2.astype(it1.x.dtype, copy=False), **other_inputs)
    output = it1._output_name(output or it1.output_names[0])
    units = _units(it1)
    masks1, masks2 = it1.masks, it2.masks
    layers = [_layer_change(u, label, masks1[m], masks2[m]) for u, label, m in units]
    change, norms = _linear_change(it1, it2, output, probes, seed)
    found = Comparison(getattr(scope, "mode", "secant"), output, layers, change, norms, probes)
    if classes is not None and _is_vector(it1.outputs[output], it1.samples):
        found.classes = _class_changes(it1, it2, output, classes)
    for target in rows or ():
        r1, r2 = it1.rows([target], output)[0], it2.rows([target], output)[0]
        found.rows[str(target)] = float(np.linalg.norm(r2 - r1) / max(np.linalg.norm(r1), 1e-30))
    if steps:
        found.path = _path(scope, it1, x2, steps, units, other_inputs)
    return found


def _units(it) -> list[tuple[dict, str, str]]:
    """(unit record, mask label, mask graph output) for every mask of the manifest's units."""
    first = getattr(it, "parts", [it])[0]
    return [
        (unit, label, mask["output"])
        for unit in first._s.artifacts.manifest["units"]
        for label, mask in unit["masks"].items()
    ]


def _layer_change(unit: dict, label: str, m1: np.ndarray, m2: np.ndarray) -> LayerChange:
    discrete = not np.issubdtype(m1.dtype, np.floating)
    if discrete:
        changed_at = m1 != m2
        largest = relative = 0.0
    else:
        a, b = m1.astype(np.float64), m2.astype(np.float64)
        moved = np.abs(b - a)
        scale = max(float(np.abs(a).max(initial=0)), float(np.abs(b).max(initial=0)), 1e-30)
        changed_at = moved > MOVE_TOL * scale
        largest = float(moved.max(initial=0))
        relative = float(np.linalg.norm(moved) / max(np.linalg.norm(a), 1e-30))
    spatial = None
    if changed_at.ndim == 4:  # [N, C, H, W]: where in the map the unit changed its decision
        spatial = changed_at.sum(axis=(0, 1))
    return LayerChange(
        unit["node"], unit["op"], unit["kind"], label, discrete, int(changed_at.size),
        int(changed_at.sum()), largest, relative, spatial,
    )  # fmt: skip


def _linear_change(it1, it2, output: str, probes: int, seed: int):
    """‖A₁ − A₂‖_F / ‖A₁‖_F with E‖M z‖² = ‖M‖_F² for z ~ N(0, I): the same probes for both."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((probes, *it1.x.shape)).astype(it1.x.dtype)
    a1 = it1.apply_all(z)[output].astype(np.float64)
    a2 = it2.apply_all(z)[output].astype(np.float64)
    mean_square = lambda v: float(np.mean(np.sum(v.reshape(probes, -1) ** 2, axis=1)))  # noqa: E731
    n1, n2 = np.sqrt(mean_square(a1)), np.sqrt(mean_square(a2))
    return float(np.sqrt(mean_square(a2 - a1)) / max(n1, 1e-30)), (float(n1), float(n2))


def _is_vector(value: np.ndarray, samples) -> bool:
    """A vector output: one axis of classes (after the batch axis)."""
    return value.ndim - (1 if samples else 0) <= 1 or (value.ndim == 2 and value.shape[0] == 1)


def _class_changes(it1, it2, output: str, classes) -> list[ClassChange]:
    if isinstance(classes, str) and classes == "top":
        picks = [int(np.argmax(it1.outputs[output])), int(np.argmax(it2.outputs[output]))]
    else:
        picks = list(classes) if isinstance(classes, (list, tuple)) else [classes]
    found = []
    for k in dict.fromkeys(picks):
        s1, s2 = it1.vote_split(k, output), it2.vote_split(k, output)
        index = int(np.asarray(s1.classes).reshape(-1)[0])
        labels = it1.scope.labels
        found.append(
            ClassChange(
                index,
                labels[index] if labels and index < len(labels) else None,
                (_one(s1.output), _one(s2.output)),
                (_one(s1.sums), _one(s2.sums)),
                (_one(s1.bias), _one(s2.bias)),
            )
        )
    return found


def _one(value) -> float:
    return float(np.asarray(value).reshape(-1)[0])


def _path(scope, it1, x2, steps: int, units, other_inputs) -> list[PathSegment]:
    """Decisions compared between consecutive points t = i / steps of the segment x1 → x2."""
    x1 = it1.x
    delta = x2.astype(np.float64) - x1.astype(np.float64)
    previous, t0, segments = it1.masks, 0.0, []
    for i in range(1, steps + 1):
        t1 = i / steps
        point = (x1.astype(np.float64) + t1 * delta).astype(x1.dtype)
        masks = scope.interpret(point, **other_inputs).masks
        by_layer: dict[str, int] = {}
        for unit, _, name in units:
            if not np.issubdtype(masks[name].dtype, np.floating):
                flips = int(np.count_nonzero(masks[name] != previous[name]))
                by_layer[unit["node"]] = by_layer.get(unit["node"], 0) + flips
        segments.append(PathSegment(t0, t1, sum(by_layer.values()), by_layer))
        previous, t0 = masks, t1
    return segments


__all__ = ["compare", "Comparison", "LayerChange", "ClassChange", "PathSegment", "MOVE_TOL"]
