"""`onnxscope serve`: its subparser and command (being written)."""


def add_parser(sub) -> None:
    pass
