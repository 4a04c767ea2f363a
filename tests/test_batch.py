"""`onnxscope batch`: a dataset in, one row per input out, resumable, failures kept as rows.

Run through the real command line (onnxscope.cli.main, and a subprocess for the interrupted run)
on the bundled tinynet.onnx (batch fixed at 1) and a free-batch classifier; the rows are checked
against the Python API's readings of the same inputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import onnxscope
from onnxscope.cli import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
Image = pytest.importorskip("PIL.Image")

TINYNET = os.path.join(os.path.dirname(__file__), "..", "samples", "00_default", "tinynet.onnx")


def _images(folder, count, size=(64, 64), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i:03d}.png")
    return folder


def _table(out) -> list[dict]:
    return pq.read_table(os.path.join(out, "results.parquet")).to_pylist()


def test_rows_equal_the_python_api_and_failures_are_rows(tmp_path, capsys):
    data = _images(tmp_path / "data", 5)
    (data / "broken.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(data / "small.png")
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            TINYNET,
            str(data),
            "-o",
            str(out),
            "--batch-size",
            "4",
            "--no-resize",
            "--reports",
            "0",
            "--no-page",
            "--class",
            "top",
            "--class",
            "3",
        ]
    )
    assert code == 1  # two inputs failed
    rows = {os.path.basename(r["path"]): r for r in _table(out)}
    assert len(rows) == 7
    assert "as an image" in rows["broken.png"]["error"]
    assert "40×30" in rows["small.png"]["error"] and "64×64" in rows["small.png"]["error"]
    scope = onnxscope.LinearScope(TINYNET)
    from onnxscope.report.images import load_image

    for i in range(5):
        row = rows[f"im{i:03d}.png"]
        assert row["error"] is None and row["verified"]
        x, _ = load_image(str(data / f"im{i:03d}.png"), [1, 3, 64, 64])
        it = scope.interpret(x)
        assert row["prediction"] == int(np.argmax(it.output))
        np.testing.assert_allclose(row["output"], it.output.ravel(), rtol=1e-6, atol=1e-7)
        for suffix, target in (("top", "top"), ("3", 3)):
            share = it.bias_share(target)
            assert row[f"class_{suffix}"] == (row["prediction"] if target == "top" else 3)
            for column, key in (("votes_sum", "votes"), ("bias", "bias"), ("bias_share", "share")):
                assert row[f"{column}_{suffix}"] == pytest.approx(share[key], rel=1e-6, abs=1e-7)
        assert row["reconstruction"] < 1e-5 and row["adjoint"] < 1e-5
    printed = capsys.readouterr().out
    assert "7 input(s)" in printed and "2 failed" in printed


def _free_batch_classifier(path):
    from helpers import make_model

    rng = np.random.default_rng(0)
    inits = {
        "W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "G": rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32),
    }
    nodes = ["u = Conv (x, W)", "r = Relu(u)", "f = Flatten(r)", "y = Gemm<transB=1>(f, G)"]
    import onnx

    onnx.save(make_model(nodes, inputs={"x": ("N", 3, 8, 8)}, inits=inits), path)
    return str(path)


def test_npy_stack_and_table_inputs_with_saved_votes(tmp_path):
    model = _free_batch_classifier(tmp_path / "m.onnx")
    stack = np.random.default_rng(1).standard_normal((6, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "stack.npy", stack)
    out = tmp_path / "out"
    assert (
        main(
            [
                "batch",
                model,
                str(tmp_path / "stack.npy"),
                "-o",
                str(out),
                "--save",
                "votes",
                "--labels",
                "a,b,c,d,e",
                "--batch-size",
                "4",
                "--no-page",
            ]
        )
        == 0
    )
    rows = _table(out)
    assert [r["path"] for r in rows] == [f"{tmp_path / 'stack.npy'}[{i}]" for i in range(6)]
    it = onnxscope.LinearScope(model).interpret(stack)  # the whole stack as one batch
    votes = it.votes("top")
    for i, row in enumerate(rows):
        assert row["label"] == "abcde"[row["prediction"]]
        saved = np.load(out / row["votes_file"])
        assert saved.shape == (1, 3, 8, 8)
        np.testing.assert_allclose(saved[0], votes[i], rtol=1e-5, atol=1e-6)
    listed = json.loads((out / "batch.json").read_text())["onnxscope_output"]["files"]
    assert all(r["votes_file"] in listed for r in rows)

    # a CSV table of paths: relative paths from the table's folder, its columns carried along
    _images(tmp_path / "imgs", 3, size=(8, 8))
    (tmp_path / "list.csv").write_text("file,group\nimgs/im000.png,x\nimgs/im002.png,y\n")
    out2 = tmp_path / "out2"
    assert (
        main(
            [
                "batch",
                model,
                str(tmp_path / "list.csv"),
                "-o",
                str(out2),
                "--path-column",
                "file",
                "--no-page",
            ]
        )
        == 0
    )
    rows = _table(out2)
    assert [(r["path"], r["group"]) for r in rows] == [
        ("imgs/im000.png", "x"),
        ("imgs/im002.png", "y"),
    ]


def test_interrupted_run_is_resumed_and_finishes_the_rest_only(tmp_path):
    data = _images(tmp_path / "data", 24)
    out = tmp_path / "out"
    # a run that writes its table after every batch, killed once some batches are in
    script = (
        "import sys; import onnxscope.batch.folder as f; f.FLUSH_SECONDS = 0.0; "
        "from onnxscope.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["batch", TINYNET, str(data), "-o", str(out), "--batch-size", "2", "--no-page"]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            index = out / "batch.json"
            if index.exists():
                try:
                    done = json.loads(index.read_text()).get("rows", 0)
                except ValueError:
                    done = 0
            if done >= 6:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert 6 <= done < 24, f"the run was not caught halfway ({done} rows)"
    first = {r["path"]: r for r in _table(out)}  # readable after the kill
    assert 6 <= len(first) < 24
    result = subprocess.run(
        [sys.executable, "-m", "onnxscope", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert f"{24 - len(first)} interpreted now" in result.stdout
    assert f"{len(first)} done before" in result.stdout
    rows = _table(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in data.glob("*.png"))
    for row in rows:  # the rows of the first run kept as they were
        if row["path"] in first:
            assert row["bias_share"] == first[row["path"]]["bias_share"]


def test_other_settings_or_a_foreign_folder_are_refused(tmp_path, capsys):
    data = _images(tmp_path / "data", 2)
    out = tmp_path / "out"
    assert main(["batch", TINYNET, str(data), "-o", str(out), "--no-page"]) == 0
    assert main(["batch", TINYNET, str(data), "-o", str(out), "--no-page", "--class", "3"]) == 2
    assert "other settings (targets differ)" in capsys.readouterr().err
    assert (
        main(
            ["batch", TINYNET, str(data), "-o", str(out), "--no-page", "--class", "3", "--restart"]
        )
        == 0
    )
    assert "class_output" in _table(out)[0] and _table(out)[0]["class"] == 3
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["batch", TINYNET, str(data), "-o", str(mine), "--no-page"]) == 2
    assert (mine / "notes.txt").read_text() == "keep me" and len(os.listdir(mine)) == 1


def test_progress_lines_off_a_terminal():
    import io

    from onnxscope.batch.run import Progress

    stream = io.StringIO()
    bar = Progress(10, terminal=False, stream=stream)
    bar.LINE_SECONDS = 0.0
    bar.advance(4, 1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("batch: 4/10 inputs, 1 failed") and "ETA" in lines[0]


def test_ray_engine_gives_the_same_table(tmp_path):
    pytest.importorskip("ray")
    data = _images(tmp_path / "data", 5)
    (data / "broken.png").write_bytes(b"no image")
    tables = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        code = main(
            [
                "batch",
                TINYNET,
                str(data),
                "-o",
                str(out),
                "--engine",
                engine,
                "--batch-size",
                "2",
                "--no-page",
                "--workers",
                "2",
            ]
        )
        assert code == 1
        tables[engine] = _table(out)
    local, ray_rows = tables["local"], tables["ray"]
    assert [r["path"] for r in local] == [r["path"] for r in ray_rows]
    for a, b in zip(local, ray_rows):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
            elif key != "output":
                assert b[key] == value, key
