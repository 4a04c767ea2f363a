"""Framework front-ends (installed as `onnxscope.converters`): turn framework models into ONNX."""
