"""The per-batch callable of `onnxscope batch`: items in, one result row per item out. Every
engine (in-process, a process pool, Ray Data actors) runs this same `BatchJob`; it holds one
LinearScope, made on first use in whatever process runs it.

A row (one per item; the columns of results.parquet):
    path             the item's key (onnxscope.batch.inputs.Item)
    error            why the item failed (None when it did not)
    notes            how the input was made (e.g. 'resized (bicubic) from 300×451')
    prediction       the largest element of the sample's output (flat index), and `label`
    output           the sample's output, flattened (None past OUTPUT_LIMIT elements)
    class, class_output, votes_sum, bias, bias_share
                     for each target: the element read, its value, Σ votes, c_x there and the
                     bias share |c| / (|Σ votes| + |c|); with several targets each column is
                     suffixed by the target as given ('bias_share_top', 'bias_share_3')
    reconstruction, linearity, adjoint, verified
                     the sample's own exactness errors (verify) and whether they pass
    votes            (only with save_votes) the vote maps, [targets, *input without batch axis]
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError, OnnxscopeError
from .inputs import Item, load_item

OUTPUT_LIMIT = 4096  # outputs with more elements per sample are not stored in the table
CHECKS = ("reconstruction", "linearity", "adjoint")


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to interpret items (plain values: it travels to processes)."""

    model: str
    wrt: str | None = None
    output: str | None = None
    targets: tuple = ("top",)
    labels: tuple | None = None
    conventions: dict = field(default_factory=dict)  # layout color size scale mean std
    resize: bool = True
    logits: bool = False
    mode: str = "secant"  # the interpreter: secant, or tangent (A_x the Jacobian)
    device: str = "cpu"
    threads: int | None = None
    verify: bool = True
    save_votes: bool = False
    batch_size: int = 16

    def settings(self) -> dict:
        """What the results depend on (a resumed run must match): all but where it runs."""
        found = asdict(self)
        for key in ("device", "threads", "batch_size", "save_votes"):
            found.pop(key)
        if self.mode == "secant":  # (as the folders written before there was a tangent mode)
            found.pop("mode")
        found["model"] = os.path.abspath(self.model)
        found["targets"], found["labels"] = list(self.targets), self.labels and list(self.labels)
        return found


def column_names(targets) -> dict[str, list[str]]:
    """{target: its five column names}: unsuffixed for a single target."""
    names = {}
    for t in targets:
        suffix = "" if len(targets) == 1 else f"_{t}"
        names[t] = [f"{c}{suffix}" for c in TARGET_COLUMNS]
    return names


TARGET_COLUMNS = ("class", "class_output", "votes_sum", "bias", "bias_share")


def row_schema(targets, votes: str | None = None):
    """The pyarrow schema of the rows (`votes`: 'file' for the saved maps' paths, 'bytes' for
    the maps themselves as .npy bytes, None for neither)."""
    import pyarrow as pa

    fields = [
        ("path", pa.string()),
        ("error", pa.string()),
        ("notes", pa.string()),
        ("prediction", pa.int64()),
        ("label", pa.string()),
        ("output", pa.list_(pa.float64())),
    ]
    for names in column_names(targets).values():
        fields.append((names[0], pa.int64()))
        fields.extend((name, pa.float64()) for name in names[1:])
    fields.extend((check, pa.float64()) for check in CHECKS)
    fields.append(("verified", pa.bool_()))
    if votes == "file":
        fields.append(("votes_file", pa.string()))
    elif votes == "bytes":
        fields.append(("votes", pa.binary()))
    return pa.schema(fields)


class BatchJob:
    """Interpret lists of items: `job(items)` returns their rows, in order."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self._scope = None

    @property
    def scope(self):
        if self._scope is None:
            from ..runtime.scope import LinearScope

            model = self.spec.model
            if self.spec.logits:
                from ..graph.model import softmax_outputs_to_logits

                model, _ = softmax_outputs_to_logits(model)
            self._scope = LinearScope(
                model,
                wrt=self.spec.wrt,
                providers=self.spec.device,
                threads=self.spec.threads,
                labels=self.spec.labels,
                mode=self.spec.mode,
            )
            inputs = self._scope._input_specs
            others = [n for n in inputs if n != self._scope.wrt]
            if others:
                raise InputError(
                    f"batch interprets models with one input; this one also has {others}."
                )
        return self._scope

    def __call__(self, items: list[Item]) -> list[dict]:
        scope = self.scope
        dims, dtype = scope._input_specs[scope.wrt]
        rows: dict[int, dict] = {}
        loaded: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for k, item in enumerate(items):
            rows[k] = {"path": item.key, "error": None, "notes": None}
            try:
                x, notes = load_item(item, dims, dtype, self.spec.conventions, self.spec.resize)
            except (InputError, OSError, ValueError) as exc:
                rows[k]["error"] = str(exc)
                continue
            rows[k]["notes"] = notes or None
            loaded.setdefault(x.shape, []).append((k, x))
        for group in loaded.values():
            for start in range(0, len(group), self.spec.batch_size):
                chunk = group[start : start + self.spec.batch_size]
                self._interpret([k for k, _ in chunk], [x for _, x in chunk], rows)
        return [rows[k] for k in range(len(items))]

    def _interpret(self, keys: list[int], xs: list[np.ndarray], rows: dict) -> None:
        """Fill the rows of one chunk; a chunk that fails is retried sample by sample, so that
        an error lands on the input that caused it."""
        try:
            found = self._readings(np.concatenate(xs))
        except (InputError, OnnxscopeError) as exc:
            if len(xs) == 1:
                rows[keys[0]]["error"] = str(exc)
                return
            for k, x in zip(keys, xs):
                self._interpret([k], [x], rows)
            return
        for k, values in zip(keys, found):
            rows[k].update(values)

    def _readings(self, x: np.ndarray) -> list[dict]:
        """One row's readings per sample of the batch x."""
        scope, spec = self.scope, self.spec
        n = len(x)
        if scope._declared_batch() == "free" and n < spec.batch_size:
            # the last short batch padded with copies of its last sample: one rewrite serves
            # every batch (the samples are independent, so the copies change nothing)
            x = np.concatenate([x, np.repeat(x[-1:], spec.batch_size - n, axis=0)])
        it = scope.interpret(x)
        if it.samples is None or it.samples != len(x):
            raise InputError(
                f"The model's outputs do not keep the batch axis of input '{scope.wrt}' (they "
                f"are shaped {[list(v.shape) for v in it.outputs.values()]}): batch reads one "
                "sample per row and cannot split them."
            )
        name = it._output_name(spec.output)
        out = it.outputs[name].reshape(len(x), -1)
        found = [self._sample_row(out[s]) for s in range(n)]
        columns = column_names(spec.targets)
        maps = []
        for t in spec.targets:
            split = it.vote_split(_target(t), name)
            for s in range(n):
                values = (split.classes, split.output, split.sums, split.bias, split.share)
                for column, v in zip(columns[t], values):
                    found[s][column] = _number(v[s])
            if spec.save_votes:
                maps.append(split.votes[:n])
        if spec.save_votes:
            for s in range(n):
                found[s]["votes"] = np.stack([m[s] for m in maps])
        if spec.verify:
            v = it.verify(noise="needed")  # the same verdicts, the floors only where needed
            for s in range(n):
                part = v.per_sample[s] if v.per_sample else v
                for check in CHECKS:
                    found[s][check] = float(part[check]) if check in part else math.nan
                found[s]["verified"] = bool(part.ok)
        return found

    def _sample_row(self, output: np.ndarray) -> dict:
        row = {"prediction": int(np.argmax(output))}
        if self.spec.labels:
            p = row["prediction"]
            row["label"] = self.spec.labels[p] if p < len(self.spec.labels) else None
        row["output"] = output.astype(np.float64).tolist() if output.size <= OUTPUT_LIMIT else None
        return row


def _target(text):
    """A target as given on the command line: 'top', an int, or a label."""
    if isinstance(text, str) and text.lstrip("-").isdigit():
        return int(text)
    return text


def _number(v):
    v = v.item() if hasattr(v, "item") else v
    return int(v) if isinstance(v, (int, np.integer)) else float(v)
