"""ONNX graphs as onnxscope reads and builds them: loading and the analysis at fixed shapes
(model), the one store of large weights (weights), node building (builder)."""
