"""Running the rewritten graphs: ONNX Runtime sessions and providers (sessions), LinearScope and
Interpretation (scope), the exactness checks (verify), singular vectors (spectrum)."""
