"""A small helper that appends nodes and constants to an ONNX graph under fresh names."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers; every name it makes is new to the graph being built."""

    def __init__(self, opset: int, taken: Iterable[str] = (), prefix: str = ""):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.prefix = prefix
        self._taken = set(taken)
        self._next: dict[str, int] = {}  # base -> the next suffix worth trying
        self._consts: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        """`prefix + hint`, or with the first suffix _1, _2, ... that no name has taken. Each base
        remembers where its last search ended, so n requests of one base cost O(n) in all, not
        O(n^2) (a 50k-node model asks for 'frozen_product' thousands of times)."""
        base = f"{self.prefix}{hint}" if hint else f"{self.prefix}t"
        i = self._next.get(base, 0)
        name = f"{base}_{i}" if i else base
        while name in self._taken:
            i += 1
            name = f"{base}_{i}"
        self._next[base] = i + 1
        self._taken.add(name)
        return name

    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        hint: str = "",
        outputs: int | Sequence[str] = 1,
        attrs: Iterable[onnx.AttributeProto] = (),
        **kwargs,
    ) -> str | list[str]:
        """Append one node; returns its output name (or names when `outputs` is not 1)."""
        if isinstance(outputs, int):
            names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        else:
            names = list(outputs)
            for n in names:
                self._taken.add(n)
        node = helper.make_node(op_type, list(inputs), names, name=self.fresh(f"{names[0]}/node"))
        # copied attributes first; keyword attributes override them (None removes one)
        node.attribute.extend(a for a in attrs if a.name not in kwargs)
        node.attribute.extend(
            helper.make_attribute(k, v) for k, v in kwargs.items() if v is not None
        )
        self.nodes.append(node)
        return names[0] if len(names) == 1 else names

    def const(self, value, dtype=None, hint: str = "const") -> str:
        """An initializer holding `value`; identical small constants are shared."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 64 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.initializers[name] = numpy_helper.from_array(array, name)
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint=hint)

    def add_initializer(self, tensor: onnx.TensorProto) -> str:
        if tensor.name not in self.initializers:
            self._taken.add(tensor.name)
            self.initializers[tensor.name] = tensor
        return tensor.name

    # -- opset-aware forms ---------------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool, hint="") -> str:
        """Reduce* over `axes`, with axes as attribute or input as the opset requires."""
        axes_as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes_as_input:
            return self.op(op_type, [x, self.ints(axes, "axes")], hint, keepdims=int(keepdims))
        return self.op(op_type, [x], hint, axes=list(axes), keepdims=int(keepdims))

    def equal(self, x: str, y: str, hint="equal") -> str:
        """x == y elementwise; Equal takes floats only from opset 11, so below as not(x > y or
        x < y) (the same for every pair of numbers, NaN aside)."""
        if self.opset >= 11:
            return self.op("Equal", [x, y], hint)
        sides = [self.op("Greater", [x, y]), self.op("Less", [x, y])]
        return self.op("Not", [self.op("Or", sides)], hint)

    def reshape(self, x: str, shape: Sequence[int], hint="") -> str:
        return self.op("Reshape", [x, self.ints(shape)], hint or "reshape")

    def slice(self, x: str, starts, ends, axes, hint="") -> str:
        if self.opset < 10:
            return self.op(
                "Slice", [x], hint or "slice", starts=list(starts), ends=list(ends), axes=list(axes)
            )
        return self.op(
            "Slice", [x, self.ints(starts), self.ints(ends), self.ints(axes)], hint or "slice"
        )
