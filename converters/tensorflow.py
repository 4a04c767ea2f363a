"""Keras 3 / TensorFlow / TFLite -> ONNX through tf2onnx (the `[tf]` extra).

Every source is converted at a fixed input shape (a `None` batch becomes 1; other unknown sizes
need `input_shape`). Keras models, `.keras`/`.h5` files and SavedModel directories are traced as a
`tf.function` with that input signature, frozen and handed to tf2onnx as a GraphDef with every
nested function call inlined (tf2onnx's Keras-specific paths are fragile with Keras 3); TFLite
flatbuffers go through `from_tflite`.

Layout: TensorFlow images are NHWC. With `nchw=True` every rank-4 input and output of the ONNX
model is NCHW instead (tf2onnx's `inputs_as_nchw`, which lets its optimizer cancel the transposes
it would otherwise put around each convolution; for outputs, its `outputs_as_nchw` on TFLite, and
an appended Transpose that canonicalization cancels against tf2onnx's last one elsewhere), so a
user can hand images in PyTorch's layout. The layout of each rank-4 input and output is recorded
in the model's metadata (`onnxscope.layout`, JSON {name: "NCHW"|"NHWC"}); `layouts(model)` reads
it back.

A single input is named `x` and a single output `y` (several outputs: `y0`, `y1`, ... where
tf2onnx leaves only `Identity:0`-style names); the result is canonicalized
(onnxscope.rewrite.canonicalize) and checked, and the file is written atomically.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings

import numpy as np
import onnx

from .common import LAYOUT_KEY, ConversionError, Converted, finish, layouts, line

__all__ = ["from_keras", "from_keras_file", "from_saved_model", "from_tflite", "keras_to_tflite"]
__all__ += ["layouts"]
__all__ += ["ConversionError", "Converted", "LAYOUT_KEY", "DEFAULT_OPSET", "HANDLERS"]

DEFAULT_OPSET = 17  # as converters.pytorch; tf2onnx 1.17 writes opsets up to 18


def _tf():
    """Import tensorflow and tf2onnx quietly, or say which extra is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _quiet():
            import tensorflow as tf
            import tf2onnx
    except ImportError as exc:
        raise ConversionError(
            f"Converting TensorFlow/Keras/TFLite models needs tensorflow-cpu and tf2onnx ({exc}); "
            "install them with `pip install 'onnxscope[tf]'`."
        ) from None
    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # we report failures ourselves
    return tf, tf2onnx


@contextlib.contextmanager
def _quiet():
    """TensorFlow's C++ side (oneDNN, XNNPACK notes), tf2onnx and TFLite print progress and
    deprecation notes; keep the caller's output clean. Failures still raise, and are reported."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# -- sources ----------------------------------------------------------------------------------
def from_keras(
    model,
    path,
    *,
    input_shape=None,
    nchw=False,
    opset=DEFAULT_OPSET,
    free_batch=False,
    **tf2onnx_kw,
):
    """Convert a Keras 3 model object. `input_shape`: one shape (or {name: shape}) in the model's
    own layout, batch included, where the model leaves sizes open. `free_batch`: keep a None
    batch free in the ONNX model (for batches of inputs) instead of fixing it at 1."""
    tf, _ = _tf()
    try:
        specs = [(t.name, tuple(t.shape), t.dtype) for t in model.inputs]
    except (AttributeError, ValueError):  # a subclassed model declares no inputs
        if input_shape is None:
            raise ConversionError(
                "This Keras model declares no inputs (a subclassed model): give input_shape, "
                "batch included, in the model's own layout."
            ) from None
        specs = [("x", tuple(input_shape), "float32")]
    signature = _signature(tf, specs, input_shape, free_batch)
    single = len(signature) == 1

    @tf.function(input_signature=signature)
    def call(*args):
        return model(args[0] if single else list(args), training=False)

    return _from_function(call, signature, path, nchw, opset, tf2onnx_kw)


def from_keras_file(source, path, **kw):
    """Convert a `.keras` or legacy `.h5`/`.hdf5` file (loaded with `compile=False`)."""
    _tf()
    import keras

    try:
        with _quiet():
            model = keras.models.load_model(os.fspath(source), compile=False)
    except Exception as exc:  # noqa: BLE001 - any loader failure is the user's file
        raise ConversionError(
            f"Keras could not load '{source}' ({type(exc).__name__}: {line(exc)}). A model with "
            "custom layers needs them registered (keras.saving.register_keras_serializable) "
            "before conversion; load it yourself and call converters.tensorflow.from_keras."
        ) from None
    return from_keras(model, path, **kw)


def from_saved_model(
    directory,
    path,
    *,
    signature="serving_default",
    input_shape=None,
    nchw=False,
    opset=DEFAULT_OPSET,
    free_batch=False,
    **tf2onnx_kw,
):
    """Convert a SavedModel directory (`model.export()`, `tf.saved_model.save`) through one of its
    signatures, traced at a fixed input shape (a free batch with `free_batch`)."""
    tf, _ = _tf()
    try:
        loaded = tf.saved_model.load(os.fspath(directory))
        fn = loaded.signatures[signature]
    except KeyError:
        raise ConversionError(
            f"SavedModel '{directory}' has no signature '{signature}'; it has "
            f"{sorted(loaded.signatures)}."
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"Could not load SavedModel '{directory}': {line(exc)}") from None
    kwargs = fn.structured_input_signature[1]
    names = sorted(kwargs)
    specs = [(n, tuple(kwargs[n].shape), kwargs[n].dtype) for n in names]
    sig = _signature(tf, specs, input_shape, free_batch)

    @tf.function(input_signature=sig)
    def call(*args):
        return fn(**dict(zip(names, args)))

    return _from_function(call, sig, path, nchw, opset, tf2onnx_kw)


def from_tflite(source, path, *, nchw=False, opset=DEFAULT_OPSET, **tf2onnx_kw):
    """Convert a TFLite flatbuffer (float models; its shapes are already fixed)."""
    tf, tf2onnx = _tf()
    source = os.fspath(source)
    try:
        with _quiet():
            interp = tf.lite.Interpreter(model_path=source)
            ins, outs = interp.get_input_details(), interp.get_output_details()
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"'{source}' is not a readable TFLite model: {line(exc)}") from None
    as_nchw = [d["name"] for d in ins if len(d["shape"]) == 4] if nchw else None
    out_nchw = [d["name"] for d in outs if len(d["shape"]) == 4] if nchw else None
    with open(source, "rb") as f:
        flat = f.read()
    dense = _densified(tf, flat)
    with tempfile.TemporaryDirectory(prefix="onnxscope-tflite-") as tmp:
        if dense is not None:  # tf2onnx reads the copy with its sparse weights stored dense
            source = os.path.join(tmp, "dense.tflite")
            with open(source, "wb") as f:
                f.write(dense)
        proto, _ = _run(
            tf2onnx.convert.from_tflite,
            source,
            opset=opset,
            inputs_as_nchw=as_nchw,
            outputs_as_nchw=out_nchw,
            **tf2onnx_kw,
        )
    # an open batch (-1 in the signature) becomes the size the flatbuffer was built at (1);
    # tf2onnx ignores shape_override for TFLite, so set the ONNX input's dims directly
    sizes = {d["name"]: d["shape"] for d in ins}
    for vi in proto.graph.input:
        for dim, size in zip(
            vi.type.tensor_type.shape.dim, _in_onnx_order(sizes[vi.name], vi, as_nchw)
        ):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.dim_value = int(size)
    return _finish(proto, path, set(as_nchw or ()) | set(out_nchw or ()))


def _densified(tf, flat: bytes) -> bytes | None:
    """The flatbuffer with its sparse weights stored dense (converters.tflite_sparsity), checked
    to give TFLite's outputs on a random input; None when it has no sparse tensor."""
    from .tflite_sparsity import densified

    found = densified(flat)
    if found is None:
        return None
    dense, names = found
    outputs = []
    with _quiet():
        for content in (flat, dense):
            interp = tf.lite.Interpreter(model_content=content)
            interp.allocate_tensors()
            rng = np.random.default_rng(0)
            for d in interp.get_input_details():
                interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
            interp.invoke()
            outputs.append([interp.get_tensor(d["index"]) for d in interp.get_output_details()])
    for sparse_out, dense_out in zip(*outputs):
        scale = float(np.abs(sparse_out).max()) or 1.0
        if not np.allclose(dense_out, sparse_out, rtol=1e-6, atol=1e-6 * scale):
            raise ConversionError(
                f"This TFLite model holds sparse weights ({', '.join(names)}); written dense they "
                "do not reproduce TFLite's outputs, so the model is not converted. Convert the "
                "source again without tf.lite.Optimize.EXPERIMENTAL_SPARSITY."
            )
    return dense


def _in_onnx_order(nhwc, vi, as_nchw):
    """The TFLite (NHWC) sizes in the order of the ONNX input."""
    return [nhwc[k] for k in (0, 3, 1, 2)] if as_nchw and vi.name in as_nchw else list(nhwc)


# -- translations tf2onnx lacks (its custom-op handler mechanism) -------------------------------
def _erfc(ctx, node, name, args):
    """Erfc(u) -> 1 − Erf(u) (ONNX has no Erfc; Keras 3's exact GELU is 0.5·x·erfc(−x/√2)).
    Where erfc(u) < 2e-8 (u ≳ 4, GELU at x ≲ −5.6) 1 − erf(u) rounds to 0 in float32: GELU's
    output there moves by < 1e-7 absolute from TensorFlow's. The ONNX model is then interpreted
    exactly as written."""
    import numpy as np
    from tf2onnx import utils

    node.type = "Erf"
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{name}/one"), np.array(1, dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], inputs=[one.output[0], node.output[0]])


HANDLERS = {"Erfc": (_erfc, [])}


def _handlers(tf2onnx_kw: dict) -> dict:
    """tf2onnx keyword arguments with our handlers added (the caller's take precedence)."""
    given = tf2onnx_kw.get("custom_op_handlers") or {}
    return {**tf2onnx_kw, "custom_op_handlers": {**HANDLERS, **given}}


def keras_to_tflite(model, path) -> str:
    """Write a Keras model as a float TFLite flatbuffer (TFLiteConverter, default options)."""
    tf, _ = _tf()
    with _quiet():
        flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with open(path, "wb") as f:
        f.write(flat)
    return os.fspath(path)


# -- shared steps -----------------------------------------------------------------------------
def _signature(tf, specs, input_shape, free_batch=False):
    """TensorSpecs at fixed shapes: a None batch is 1 (kept None with `free_batch`), other None
    sizes come from input_shape."""
    if isinstance(input_shape, dict) and len(specs) == len(input_shape) == 1:
        input_shape = next(iter(input_shape.values()))  # one input: its name does not matter
    if input_shape is not None and not isinstance(input_shape, dict):
        input_shape = {specs[0][0]: input_shape} if len(specs) == 1 else None
        if input_shape is None:
            raise ConversionError("The model has several inputs: give input_shape as a dict.")
    out = []
    for i, (name, shape, dtype) in enumerate(specs):
        given = (input_shape or {}).get(name)
        fixed = (
            tuple(given)
            if given is not None
            else tuple(1 if d is None and k == 0 else d for k, d in enumerate(shape))
        )
        if free_batch and fixed:
            fixed = (None, *fixed[1:])
        if any(d is None for d in fixed[1 if free_batch else 0 :]) or (
            given is not None and len(given) != len(shape)
        ):
            raise ConversionError(
                f"Input '{name}' has shape {_dims(shape)}: give its full shape (batch included, "
                "in the model's own layout), e.g. --input-shape "
                f"{name}={'x'.join(str(d or 64) for d in (1, *shape[1:]))}."
            )
        out.append(tf.TensorSpec(fixed, dtype, name="x" if len(specs) == 1 else _clean(name, i)))
    return out


def _from_function(call, signature, path, nchw, opset, tf2onnx_kw):
    tf, _ = _tf()
    as_nchw = [s.name for s in signature if s.shape.rank == 4] if nchw else None
    proto, _ = _run(
        _function_to_onnx,
        call.get_concrete_function(),
        opset=opset,
        inputs_as_nchw=as_nchw,
        **tf2onnx_kw,
    )
    # outputs_as_nchw needs the output names tf2onnx picks: transpose rank-4 outputs here instead
    # (tf2onnx's outputs follow the flattened structure of the traced function's outputs)
    traced = tf.nest.flatten(call.get_concrete_function().structured_outputs)
    outs = [o.name for o, t in zip(proto.graph.output, traced) if t.shape.rank == 4] if nchw else []
    if outs:
        proto = _outputs_to_nchw(proto, outs)
    return _finish(proto, path, set(as_nchw or ()) | set(outs))


def _function_to_onnx(concrete, **kw):
    """tf2onnx's `from_function`, with two of its failures on Keras 3 models mended:

    - Only the traced signature's arguments are graph inputs. A constant a layer holds as an eager
      tensor (the Normalization layer of keras.applications' EfficientNet and ConvNeXt) is a
      captured input of the concrete function; tf2onnx lists every non-resource input, so it
      became an ONNX graph input that nothing feeds. Freezing turns it into a constant.
    - Nested functions are inlined. Keras compiles grouped convolutions (ConvNeXt's depthwise
      convolutions are Conv2D with groups = channels) in a `tf.function(jit_compile=True)`,
      whose `_XlaMustCompile`/`_noinline` marks keep TensorFlow from inlining the call, which
      then reaches tf2onnx as a StatefulPartitionedCall it cannot translate. The marks only ask
      XLA to compile the body; without them grappler's function optimizer (run by tf2onnx's
      `from_graph_def`) inlines every call, and the body's ops are translated as any others."""
    tf, tf2onnx = _tf()
    from tf2onnx import tf_loader

    arguments = len(concrete.inputs) - len(concrete.captured_inputs)  # captures come last
    inputs = [t.name for t in concrete.inputs[:arguments]]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    renames = tf2onnx.convert.tensor_names_from_structed(concrete, inputs, outputs)
    with tf.device("/cpu:0"):
        graph_def = tf_loader.from_function(concrete, inputs, outputs)
    _allow_inlining(graph_def)
    return tf2onnx.convert.from_graph_def(
        graph_def,
        name=concrete.name,
        input_names=inputs,
        output_names=outputs,
        tensors_to_rename=renames,
        **kw,
    )


NO_INLINE_MARKS = ("_XlaMustCompile", "_noinline")


def _allow_inlining(graph_def) -> None:
    """Drop the marks that keep a function call from being inlined, on the call nodes and on the
    functions of the graph's library (nested calls included)."""
    functions = graph_def.library.function
    for node in [*graph_def.node, *(n for f in functions for n in f.node_def)]:
        for mark in NO_INLINE_MARKS:
            node.attr.pop(mark, None)
    for function in functions:
        for mark in NO_INLINE_MARKS:
            function.attr.pop(mark, None)


def _outputs_to_nchw(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Append Transpose(0, 3, 1, 2) to each named NHWC output (merge_transposes then cancels it
    against the NCHW->NHWC transpose that tf2onnx put before the output)."""
    from onnx import helper

    for out in proto.graph.output:
        if out.name not in names:
            continue
        inner = out.name + "/nhwc"
        for n in proto.graph.node:
            n.output[:] = [inner if o == out.name else o for o in n.output]
            n.input[:] = [inner if i == out.name else i for i in n.input]
        proto.graph.node.append(
            helper.make_node("Transpose", [inner], [out.name], perm=[0, 3, 1, 2])
        )
        dims = out.type.tensor_type.shape.dim
        order = [dims[k].SerializeToString() for k in (0, 3, 1, 2)]
        for d, data in zip(dims, order):
            d.ParseFromString(data)
    return proto


def _run(convert, *args, **kw):
    """Run a tf2onnx conversion quietly, with our op handlers added to the caller's; any failure
    becomes a ConversionError naming its cause."""
    try:
        with _quiet():
            return convert(*args, **_handlers(kw))
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
        raise ConversionError(f"tf2onnx could not convert the model: {line(exc)}") from None


def _finish(proto, path, nchw_names) -> Converted:
    """Refuse untranslated ops, name a single input x and output y, record the layout of each
    rank-4 input and output, then canonicalize, check and write (common.finish)."""
    _refuse_unknown_ops(proto)
    _one_bias_per_conv(proto)
    renames = _rename_io(proto)
    nchw_names = {renames.get(n, n) for n in nchw_names}
    found = {
        vi.name: "NCHW" if vi.name in nchw_names else "NHWC"
        for vi in [*proto.graph.input, *proto.graph.output]
        if len(vi.type.tensor_type.shape.dim) == 4
    }
    return finish(proto, path, found)


def _one_bias_per_conv(proto: onnx.ModelProto) -> None:
    """tf2onnx fuses BiasAdd(BiasAdd(Conv2D, b1), b2) (Keras 3's ResNetV2 at small inputs, where
    grappler turns an Add into a second BiasAdd) into a Conv with a fourth input, which ONNX's
    Conv does not take (its conv2d_with_add rewriter appends the outer bias). The Conv then
    takes one bias, Sum(b1, b2, ...): the same sum, only the order of its float additions
    changed."""
    from onnx import helper

    nodes = []
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 3:
            total = node.name + "/bias_sum"
            nodes.append(helper.make_node("Sum", list(node.input[2:]), [total], total))
            node.input[:] = [*node.input[:2], total]
        nodes.append(node)
    if len(nodes) > len(proto.graph.node):
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)


def _refuse_unknown_ops(proto: onnx.ModelProto) -> None:
    """tf2onnx leaves a TensorFlow op it cannot translate in the graph under its TF name; name
    each such op and say how to supply a replacement."""
    custom = {o.domain for o in proto.opset_import} - {"", "ai.onnx", "ai.onnx.ml"}
    unknown = {}
    for n in proto.graph.node:
        if n.domain in custom:
            unknown.setdefault(n.op_type, n.name)
            continue
        try:
            onnx.defs.get_schema(n.op_type, max_inclusive_version=99, domain=n.domain)
        except onnx.defs.SchemaError:
            unknown.setdefault(n.op_type, n.name)
    calls = sorted(name for op, name in unknown.items() if op.endswith("PartitionedCall"))
    if calls:
        raise ConversionError(
            f"A nested TensorFlow function call (node '{calls[0]}') was left after inlining "
            "every call that TensorFlow allows to be inlined, and tf2onnx cannot translate a "
            "call. Write that part of the model without a nested tf.function (or with one "
            "TensorFlow inlines) and convert again."
        )
    if unknown:
        ops = ", ".join(f"'{op}' (node '{name}')" for op, name in sorted(unknown.items()))
        raise ConversionError(
            f"tf2onnx has no ONNX translation for {ops}. Rewrite that part of the model with "
            "standard TensorFlow ops, or supply a replacement through tf2onnx's custom-op mapping: "
            "pass custom_op_handlers={'OP': (handler, [])} to the converters.tensorflow function, "
            "where handler(ctx, node, name, args) rewrites the node into ONNX ops (tf2onnx's "
            "documented custom-op handler). An op left in a custom domain cannot be interpreted "
            "by onnxscope."
        )


def _rename_io(proto: onnx.ModelProto) -> dict[str, str]:
    """A single graph input is called x and a single graph output y; several outputs that carry
    only tf.function's names (Identity:0, Identity_1:0, ...) are called y0, y1, ..."""
    g = proto.graph
    renames = {}
    if len(g.input) == 1 and g.input[0].name != "x":
        renames[g.input[0].name] = "x"
    if len(g.output) == 1 and g.output[0].name != "y":
        renames[g.output[0].name] = "y"
    elif len(g.output) > 1 and all(o.name.startswith("Identity") for o in g.output):
        renames.update({o.name: f"y{i}" for i, o in enumerate(g.output)})
    for vi in [*g.input, *g.output, *g.value_info]:
        vi.name = renames.get(vi.name, vi.name)
    for n in g.node:
        n.input[:] = [renames.get(i, i) for i in n.input]
        n.output[:] = [renames.get(o, o) for o in n.output]
    return renames


def _clean(name: str, i: int) -> str:
    text = "".join(c if c.isalnum() or c == "_" else "_" for c in name.split(":")[0])
    return text or f"input_{i}"


def _dims(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
