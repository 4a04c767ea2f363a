"""Serving the interpretation: the plain model and its reading graphs over the Open Inference
Protocol (`onnxscope serve`: REST and gRPC), and as a Triton model repository
(`onnxscope triton`). Needs the `serve` extra."""
