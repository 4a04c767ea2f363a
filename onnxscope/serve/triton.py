"""`onnxscope triton`: a Triton model repository (being written)."""


def add_parser(sub) -> None:
    pass
