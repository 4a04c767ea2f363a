"""The interface a user meets (issue 15): readings with one meaning each, logits on request, and
one consistent command line. Each misreading the issue found is now right or a clear error."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import onnx
import pytest
from helpers import make_model

import onnxscope
from onnxscope.cli import build_parser, main
from onnxscope.errors import InputError


def _classifier(head: str | None = None, batch=1):
    """Conv-Relu-Flatten-Gemm over a 3x8x8 input, 5 classes, optionally under a Softmax."""
    rng = np.random.default_rng(0)
    inits = {
        "W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "G": 0.1 * rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32),
    }
    nodes = ["u = Conv (x, W)", "r = Relu(u)", "f = Flatten(r)"]
    if head:
        nodes += ["l = Gemm<transB=1>(f, G)", f"y = {head}<axis=1>(l)"]
    else:
        nodes += ["y = Gemm<transB=1>(f, G)"]
    return make_model(nodes, inputs={"x": (batch, 3, 8, 8)}, inits=inits)


def _x(n=1):
    return np.random.default_rng(1).standard_normal((n, 3, 8, 8)).astype(np.float32)


# -- readings with one meaning each ---------------------------------------------------------------
def test_several_targets_give_a_stack():
    it = onnxscope.LinearScope(_classifier()).interpret(_x())
    stack = it.votes([3, 1])  # was: class 3 only
    assert stack.shape == (2, 1, 3, 8, 8)
    np.testing.assert_array_equal(stack[0], it.votes(3))
    np.testing.assert_array_equal(stack[1], it.votes(1))
    shares = it.bias_share([3, 1])  # was: a bare TypeError
    assert shares["share"].shape == (2, 1)
    assert shares["share"][0, 0] == pytest.approx(it.bias_share(3)["share"])


def test_tuples_are_coordinates_in_the_tensor():
    it = onnxscope.LinearScope(_classifier()).interpret(_x())
    # rows([(0, 7)]) was read as the flat indices 0 and 7: now output (n=0, k=7)... out of
    # range for 5 classes, and (0, 3) is class 3 of sample 0
    np.testing.assert_array_equal(it.rows([(0, 3)]), it.rows([3]))
    np.testing.assert_array_equal(it.rows([(3,)]), it.rows([3]))
    with pytest.raises(InputError, match="outside the shape"):
        it.rows([(0, 7)])
    # columns([(0, 0, 4, 5)]) was 4 columns: now the one input position (n, c, y, x)
    one = it.columns([(0, 0, 4, 5)])
    assert one.shape == (1, 1, 5)
    np.testing.assert_array_equal(one, it.columns([4 * 8 + 5]))
    np.testing.assert_array_equal(it.columns([(2, 4, 5)]), it.columns([2 * 64 + 4 * 8 + 5]))
    with pytest.raises(InputError, match=r"leaves out axes of size \(3,\)"):
        it.columns([(4, 5)])  # (y, x) of a 3-channel input: which channel?
    with pytest.raises(InputError, match="coordinates must be integers"):
        it.columns([(0.5, 1, 1)])
    with pytest.raises(InputError, match="mixes tuples"):
        it.columns([(1, 1, 1), [2]])
    mixed = it.columns([(0, 0, 1), 1])  # tuples and flat indices together: the same position
    np.testing.assert_array_equal(mixed[0], mixed[1])


def test_every_bad_target_names_the_argument_and_the_forms():
    it = onnxscope.LinearScope(_classifier()).interpret(_x())
    for bad in (1.5, "cat", True, [[1, 2], [3]], object()):
        with pytest.raises(InputError) as info:
            it.votes(bad)
        assert str(info.value).startswith("votes")


# -- logits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["Softmax", "LogSoftmax"])
def test_logits_read_under_the_softmax(head):
    scope = onnxscope.LinearScope(_classifier(head), logits=True)
    assert scope.cut == ["y"]
    it = scope.interpret(_x())
    assert it.output_names == ["y_logits"]
    plain = onnxscope.LinearScope(_classifier()).interpret(_x())
    np.testing.assert_allclose(it.output, plain.output, rtol=1e-6)
    split = it.bias_share(2, "y")  # the cut output answers to its old name
    assert split["votes"] + split["bias"] == pytest.approx(float(plain.output[0, 2]), rel=1e-5)


def test_logits_on_a_model_without_softmax_warns():
    with pytest.warns(UserWarning, match="no output computed by a Softmax"):
        scope = onnxscope.LinearScope(_classifier(), logits=True)
    assert scope.cut == []


# -- the command line -----------------------------------------------------------------------------
def _subcommands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, sub.choices


def test_help_of_every_subcommand_explains_every_flag(capsys):
    parser, commands = _subcommands()
    for name, sp in commands.items():
        with pytest.raises(SystemExit) as done:
            sp.parse_args(["--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith("usage: onnxscope " + name)
        for action in sp._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"`onnxscope {name} {action.option_strings[0]}` has no help"
    with pytest.raises(SystemExit):
        parser.parse_args(["--version"])
    assert capsys.readouterr().out.startswith("onnxscope ")
    with pytest.raises(SystemExit):
        commands["rewrite"].parse_args(["--help"])
    rewrite_help = " ".join(capsys.readouterr().out.split())
    for file in (
        "mask.onnx",
        "linear.onnx",
        "bias.onnx",
        "adjoint.onnx",
        "votes.onnx",
        "manifest.json",
    ):
        assert file in rewrite_help


def test_every_command_that_writes_a_file_takes_dash_o_and_output():
    _, commands = _subcommands()
    names = ("rows", "columns", "votes", "bias", "svd", "rewrite", "report", "batch", "convert")
    for name in names:
        flags = {f for a in commands[name]._actions for f in a.option_strings}
        assert {"-o", "--output"} <= flags, name


@pytest.fixture
def softmax_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_classifier("Softmax"), path)
    np.save(tmp_path / "x.npy", _x())
    return str(path), str(tmp_path / "x.npy")


@pytest.mark.parametrize(
    "command",
    [
        ["verify"],
        ["rows", "--index", "1"],
        ["columns", "--at", "0,1,1"],
        ["votes", "--class", "2"],
        ["bias"],
        ["svd", "-k", "2", "--crop", "1,1,4,4"],
        ["inspect"],
        ["rewrite"],
    ],
)
def test_logits_on_every_subcommand(softmax_model, tmp_path, capsys, command):
    model, x = softmax_model
    args = [command[0], model, "--logits", *command[1:]]
    if command[0] not in ("inspect", "rewrite"):
        args += ["--input", x]  # FILE alone: the one input
    if command[0] in ("rows", "columns", "votes", "bias", "svd", "rewrite"):
        args += ["-o", str(tmp_path / "out")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "reading the logits of 'y' -> 'y_logits'" in err
    assert "random input" not in err


def test_votes_by_label_on_the_logits_equal_the_api(softmax_model, tmp_path, capsys):
    model, x = softmax_model
    out = tmp_path / "v.npy"
    labels = "a,b,c,d,e"
    assert (
        main(
            [
                "votes",
                model,
                "--logits",
                "--labels",
                labels,
                "--class",
                "c",
                "--input",
                x,
                "-o",
                str(out),
            ]
        )
        == 0
    )
    it = onnxscope.LinearScope(model, logits=True).interpret(np.load(x))
    np.testing.assert_allclose(np.load(out)[0], it.votes(2), rtol=1e-6)


def test_a_random_input_is_said(softmax_model, capsys):
    model, _ = softmax_model
    assert main(["verify", model]) == 0
    err = capsys.readouterr().err
    assert "onnxscope: notice: no --input for 'x': a random input N(0, 1) [1, 3, 8, 8]" in err


def test_an_image_as_input(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    path = tmp_path / "m.onnx"
    onnx.save(_classifier(), path)
    pixels = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "im.png")
    out = tmp_path / "b"
    assert (
        main(
            [
                "bias",
                str(path),
                "--input",
                str(tmp_path / "im.png"),
                "--mean",
                "0.5",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    x = (pixels.astype(np.float32) / 255 - 0.5).transpose(2, 0, 1)[None]
    it = onnxscope.LinearScope(str(path)).interpret(x)
    np.testing.assert_allclose(np.load(f"{out}.npy"), it.bias, rtol=1e-5, atol=1e-6)
    assert "random input" not in capsys.readouterr().err


def test_input_without_a_name_needs_the_interpreted_input_to_exist(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_classifier(), path)
    np.save(tmp_path / "x.npy", _x())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["verify", str(path), "--input", f"z={tmp_path / 'x.npy'}"]) == 2
    assert "Unknown input 'z'" in capsys.readouterr().err


def test_svd_command_crops_the_input_of_a_classifier(softmax_model, tmp_path):
    model, x = softmax_model
    out = tmp_path / "s"
    assert (
        main(
            ["svd", model, "--logits", "--input", x, "-k", "2", "--crop", "2,3,4,4", "-o", str(out)]
        )
        == 0
    )
    saved = np.load(f"{out}.npz")
    assert saved["U"].shape == (2, 1, 5) and saved["Vt"].shape == (2, 1, 3, 4, 4)
    it = onnxscope.LinearScope(model, logits=True).interpret(np.load(x))
    crop = (slice(None), slice(None), slice(2, 6), slice(3, 7))
    rows = it.rows(list(range(5)))[:, 0][(slice(None), *crop[1:])].reshape(5, -1)
    np.testing.assert_allclose(saved["s"], np.linalg.svd(rows, compute_uv=False)[:2], rtol=1e-5)


def test_served_models_read_the_logits(softmax_model):
    from onnxscope.serve.models import load

    model, x = softmax_model
    served = {m.reading or "plain": m for m in load(model, "m", logits=True, output="y")}
    assert list(served["plain"].outputs) == ["y_logits"]
    it = onnxscope.LinearScope(model, logits=True).interpret(np.load(x))
    got = served["votes"].infer({"x": np.load(x), "classes": np.array([2], np.int64)})
    np.testing.assert_allclose(got["votes"][0], it.votes(2), rtol=1e-5, atol=1e-7)


def test_resize_keeps_the_aspect_ratio_and_says_how():
    from onnxscope.report.images import load_image

    picture = np.zeros((300, 451, 3), np.uint8)
    picture[:, 200:251] = 255  # a white bar in the middle
    dims = [1, 3, 96, 96]
    x, conv = load_image(picture, dims)  # crop: covers 96x96 then the centre
    assert x.shape == (1, 3, 96, 96) and "aspect kept" in conv.notes[0] and "crop" in conv.notes[0]
    bar = x[0, 0].mean(axis=0) > 0.5
    assert 15 <= bar.sum() <= 18  # 51 of 451 columns at the scale 96/300: the bar not squeezed
    x, conv = load_image(picture, dims, resize="fit")
    assert "padded" in conv.notes[0] and x[0, :, :10].max() == 0  # black bands above and below
    x, conv = load_image(picture, dims, resize="stretch")
    assert "not kept" in conv.notes[0]
    with pytest.raises(InputError, match="resize must be one of"):
        load_image(picture, dims, resize="zoom")


def test_display_options_of_signed_maps():
    from onnxscope.report.figures import Display

    m = np.array([[-2.0, 1.0], [0.5, 100.0]])
    assert Display("positive").part(m).min() == 0 and Display("negative").part(m).max() == 0
    assert Display("absolute").part(m).min() == 0.5
    assert Display(clip=100).limit(m) == 100.0 and Display(clip=50).limit(m) < 2.0
    for bad in ({"sign": "both"}, {"clip": 20}, {"alpha": 0}):
        with pytest.raises(InputError):
            Display(**bad)


def test_verify_with_input_file_says_the_given_input(softmax_model, capsys):
    model, x = softmax_model
    assert main(["verify", model, "--input", x]) == 0
    out = capsys.readouterr().out
    assert "at the given input" in out and "random" not in out
