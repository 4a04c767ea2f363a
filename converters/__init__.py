"""Framework front-ends (installed as `onnxscope.converters`): turn framework models into ONNX.

- `pytorch`: `export(module, x, path)` (torch's legacy or dynamo exporter; reports the opset).
- `tensorflow`: Keras 3 models and files, SavedModel folders and TFLite flatbuffers via tf2onnx
  (the `[tf]` extra), with an NCHW option and the layout recorded in the model's metadata.
- `convert`: the `onnxscope convert` command (detects the source kind, writes atomically).
- `common`: the shared last steps (canonicalize, check, write) and `ConversionError`.

TensorFlow and PyTorch are imported only when a conversion needs them.
"""
