"""Never lose a user's file (issue 11, items 7-10) and clear CLI errors (item 11): output sets
published all or nothing (onnxscope/files/outputs.py), inputs never written, symbolic links refused,
files a user added kept, kill -9 at any moment leaving the old set or the new one."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from helpers import make_model
from test_cli import assert_one_paragraph_error, run_cli

from onnxscope import cli
from onnxscope.files import outputs
from onnxscope.files.outputs import MARK, STAGING, publish_folder

RNG = np.random.default_rng(11)
REWRITE_FILES = ["adjoint.onnx", "bias.onnx", "linear.onnx", "manifest.json", "mask.onnx"]
REWRITE_FILES = sorted([*REWRITE_FILES, "scope.onnx", "votes.onnx", "rows.onnx", "columns.onnx"])


def _w(*shape):
    return (RNG.standard_normal(shape) * 0.5).astype(np.float32)


def _relu_net(seed: int) -> onnx.ModelProto:
    w = (np.random.default_rng(seed).standard_normal((3, 2, 3, 3)) * 0.5).astype(np.float32)
    return make_model(
        ["u = Conv <pads=[1,1,1,1]> (x, W)", "y = Relu(u)"],
        inputs={"x": (1, 2, 6, 6)},
        inits={"W": w},
    )


def _classifier(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    return make_model(
        [
            "u = Conv <pads=[1,1,1,1]> (x, W1, B1)",
            "h = Relu(u)",
            "g = GlobalAveragePool(h)",
            "f = Flatten(g)",
            "y = Gemm <transB=1> (f, W2, B2)",
        ],
        inputs={"x": (1, 3, 8, 8)},
        inits={"W1": w(4, 3, 3, 3), "B1": w(4), "W2": w(3, 4), "B2": w(3)},
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Model files (two ReLU nets, a free-size net, two classifiers) and an input beside them."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = {}
    models = {
        "a": _relu_net(1),
        "b": _relu_net(2),
        "free": make_model(["y = Relu(x)"], inputs={"x": ((1, "C"), np.float32)}),
        "cls_a": _classifier(3),
        "cls_b": _classifier(4),
    }
    for name, model in models.items():
        paths[name] = str(folder / f"{name}.onnx")
        onnx.save(model, paths[name])
    paths["x"] = str(folder / "x.npy")
    np.save(paths["x"], RNG.standard_normal((1, 2, 6, 6)).astype(np.float32))
    paths["image"] = str(folder / "image.npy")
    np.save(paths["image"], RNG.standard_normal((1, 3, 8, 8)).astype(np.float32))
    return paths


def main(capsys, *argv) -> tuple[int, str, str]:
    """`onnxscope ARGV` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(result, *needles) -> None:
    code, out, err = result
    assert code == 2, out + err
    # notices (a random input was used, ...) may come first, each on its own line
    err = "\n".join(
        line for line in err.strip().splitlines() if not line.startswith("onnxscope: notice:")
    )
    assert err.startswith("onnxscope: error:"), err
    assert "\n" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, err


def tree(folder) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`, links as 'link -> target'."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[rel] = "link -> " + os.readlink(path)
            else:
                found[rel] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def contents(folder) -> dict[str, bytes]:
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def leftovers(parent) -> list[str]:
    return sorted(e for e in os.listdir(parent) if ".onnxscope-" in e)


# -- item 7: a report replaces only an earlier report, listed in its report.json -----------------


def test_report_refuses_a_folder_that_merely_holds_a_report_json(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for name, text in [
        ("coverage", '{"meta": {"version": "7.4"}, "files": {}}'),  # coverage json
        ("pytest", '{"created": 1, "exitcode": 0, "tests": []}'),  # pytest-json-report
        ("forged", json.dumps({MARK: {"kind": "rewrite", "files": ["report.json"]}})),
    ]:
        folder = tmp_path / name
        (folder / "htmlcov").mkdir(parents=True)
        (folder / "report.json").write_text(text)
        (folder / "htmlcov" / "index.html").write_text("<html>coverage</html>")
        (folder / "notes.txt").write_text("mine")
        before = tree(folder)
        result = main(capsys, "report", files["cls_a"], files["image"], "-o", folder)
        assert_error(result, "holds no earlier report", "'htmlcov'", "'notes.txt'")
        assert tree(folder) == before
    assert leftovers(tmp_path) == []


def test_report_keeps_files_a_user_added_to_an_earlier_report(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert main(capsys, "report", files["cls_a"], files["image"], "-o", out)[0] == 0
    listed = json.loads((out / "report.json").read_text())[MARK]
    assert listed["kind"] == "report" and listed["files"] == sorted(os.listdir(out))
    (out / "my_notes.md").write_text("what I saw")
    before = tree(out)
    result = main(capsys, "report", files["cls_b"], files["image"], "-o", out)
    assert_error(result, "'my_notes.md'", "Nothing was changed")
    assert tree(out) == before
    (out / "my_notes.md").unlink()
    os.unlink(out / "masks.png")  # a file of ours gone: still an earlier report
    assert main(capsys, "report", files["cls_b"], files["image"], "-o", out)[0] == 0
    assert "masks.png" in os.listdir(out)


def test_a_report_of_an_older_onnxscope_is_replaced(files, tmp_path, capsys):
    """report.json before issue 11 listed only its figures: such a folder is still ours."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.html").write_text("<html>old</html>")
    (out / "votes_y.png").write_bytes(b"png")
    (out / "report.json").write_text(
        json.dumps({"onnxscope_report": 1, "figures": ["votes_y.png"]})
    )
    assert main(capsys, "report", files["cls_a"], files["image"], "-o", out)[0] == 0
    assert MARK in json.loads((out / "report.json").read_text())
    (out / "old.png").write_bytes(b"png")  # not listed in an old report.json either
    assert_error(main(capsys, "report", files["cls_a"], files["image"], "-o", out), "'old.png'")


# -- item 8: outputs never overwrite inputs ------------------------------------------------------


def test_rows_and_votes_never_overwrite_the_model_or_an_input(files, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(files["a"], model)
    x = tmp_path / "in.npy"
    shutil.copy(files["x"], x)
    os.link(x, tmp_path / "hard.npy")
    before = tree(tmp_path)
    given = ["--input", f"x={x}"]
    for argv in [
        ["rows", model, "--index", "0", "-o", model],
        ["votes", model, *given, "-o", x],
        ["votes", model, *given, "-o", tmp_path / "in"],  # numpy's .npy makes it in.npy
        ["rows", model, *given, "--index", "1", "-o", tmp_path / "hard.npy"],  # a hard link
    ]:
        assert_error(main(capsys, *argv), "would overwrite the")
        assert tree(tmp_path) == before
    assert_error(main(capsys, "rewrite", model, "-o", model), "overwrite the input model")
    assert_error(main(capsys, "rewrite", model, "-o", tmp_path), "overwrite the input model")
    assert tree(tmp_path) == before


def test_the_npy_suffix_is_added_and_said(files, tmp_path, capsys):
    code, out, err = main(capsys, "votes", files["a"], "-o", tmp_path / "votes")
    assert code == 0, err
    assert os.listdir(tmp_path) == ["votes.npy"]
    assert f"{tmp_path / 'votes.npy'} (.npy appended" in out
    assert np.load(tmp_path / "votes.npy").shape == (1, 1, 2, 6, 6)
    os.chmod(tmp_path / "votes.npy", 0o640)
    code, out, err = main(capsys, "rows", files["a"], "--index", "3", "-o", tmp_path / "votes.npy")
    assert code == 0 and "appended" not in out, err
    assert (
        os.stat(tmp_path / "votes.npy").st_mode & 0o777 == 0o640
    )  # a replaced file keeps its mode
    assert os.listdir(tmp_path) == ["votes.npy"]  # no temporary file left


# -- item 9: symbolic links, files created during the run, leftovers of killed runs -------------


def test_symbolic_links_are_compared_resolved_and_never_written_through(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.copy(files["cls_a"], victim / "model.onnx")
    os.symlink(victim, tmp_path / "alias")
    before = tree(tmp_path)
    alias_model = tmp_path / "alias" / "model.onnx"
    result = main(capsys, "report", alias_model, files["image"], "-o", victim)
    assert_error(result, "inside the output folder")
    assert_error(main(capsys, "rewrite", alias_model, "-o", victim), "inside the output folder")
    assert tree(tmp_path) == before
    # -o a link to a folder (here: to an earlier report): refused, link and target left alone
    report = tmp_path / "report"
    assert main(capsys, "report", files["cls_a"], files["image"], "-o", report)[0] == 0
    os.symlink(report, tmp_path / "link")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    before = tree(tmp_path)
    for out in ("link", "dangling"):
        result = main(capsys, "report", files["cls_b"], files["image"], "-o", tmp_path / out)
        assert_error(result, "is a symbolic link")
        assert_error(main(capsys, "rewrite", files["a"], "-o", tmp_path / out), "symbolic link")
        result = main(capsys, "rows", files["a"], "--index", "0", "-o", tmp_path / out)
        assert_error(result, "is a symbolic link")
    assert_error(main(capsys, "votes", files["a"], "-o", tmp_path / "dangling"), "does not exist")
    assert tree(tmp_path) == before and not os.path.exists(tmp_path / "nowhere")


def test_a_file_created_in_the_folder_during_the_run_is_kept(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(capsys, "rewrite", files["a"], "-o", out)[0] == 0
    earlier = contents(out)
    real_stage, real_exchange = outputs._stage, outputs._exchange

    def user_writes_while_staging(*args):  # while the graphs are written
        real_stage(*args)
        (out / "notes.txt").write_text("mine")

    monkeypatch.setattr(outputs, "_stage", user_writes_while_staging)
    assert_error(main(capsys, "rewrite", files["b"], "-o", out), "'notes.txt'")
    assert contents(out) == {**earlier, "notes.txt": b"mine"}
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(outputs, "_stage", real_stage)
    (out / "notes.txt").unlink()

    def user_writes_after_the_last_check(a, b):  # the narrowest window: undone after the swap
        if not (out / "late.txt").exists():
            (out / "late.txt").write_text("late")
        return real_exchange(a, b)

    monkeypatch.setattr(outputs, "_exchange", user_writes_after_the_last_check)
    assert_error(main(capsys, "rewrite", files["b"], "-o", out), "'late.txt'")
    assert contents(out) == {**earlier, "late.txt": b"late"}
    assert leftovers(tmp_path) == []


def test_leftovers_of_killed_runs_are_removed_only_if_ours(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(capsys, "rewrite", files["a"], "-o", out)[0] == 0
    earlier = contents(out)
    dead = tmp_path / ".out.onnxscope-tmp-dead0001"  # a killed run's staging folder
    dead.mkdir()
    (dead / STAGING).write_text("onnxscope staging folder")
    (dead / "mask.onnx").write_bytes(b"half")
    swapped = tmp_path / ".out.onnxscope-tmp-old00001"  # the set a killed run swapped out
    shutil.copytree(out, swapped)
    (tmp_path / ".out.onnxscope-tmp-file0001").write_bytes(b"half a file")
    live = tmp_path / ".out.onnxscope-tmp-live0001"  # a concurrent run, still staging
    live.mkdir()
    (live / STAGING).write_text("onnxscope staging folder")
    user = tmp_path / ".out.onnxscope-tmp-user0001"  # named like ours, but not ours
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (user / "manifest.json").write_text("{}")
    other = tmp_path / ".other.onnxscope-tmp-0001"  # another output's
    other.mkdir()
    (other / STAGING).write_text("x")
    with open(live / STAGING) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert main(capsys, "rewrite", files["b"], "-o", out)[0] == 0
    assert contents(out) != earlier
    assert leftovers(tmp_path) == [other.name, live.name, user.name]
    assert (user / "notes.txt").read_text() == "mine"


def test_a_set_moved_aside_is_put_back_where_folders_cannot_be_exchanged(tmp_path, monkeypatch):
    """Without renameat2 a swap is two renames; a run killed between them leaves the earlier
    set at .NAME.onnxscope-old-*, which the next run puts back before anything else."""
    out = tmp_path / "out"
    publish_folder(out, {"a": b"1", "i.json": {}}, kind="t", index="i.json")
    earlier = contents(out)
    os.rename(out, tmp_path / ".out.onnxscope-old-123456")
    outputs.check_folder(out, kind="t", index="i.json")
    assert contents(out) == earlier and leftovers(tmp_path) == []
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    publish_folder(out, {"b": b"2", "i.json": {}}, kind="t", index="i.json")
    assert sorted(os.listdir(out)) == ["b", "i.json"] and leftovers(tmp_path) == []


# -- item 10: a rewrite is one set ---------------------------------------------------------------


def test_rewrite_replaces_the_whole_set_and_nothing_else(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(capsys, "rewrite", files["a"], "-o", out)[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[MARK] == {"kind": "rewrite", "files": REWRITE_FILES}
    # an earlier set with a file the new one lacks (as adjoint.onnx when an op had no adjoint)
    manifest[MARK]["files"].append("extra.onnx")
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "extra.onnx").write_bytes(b"stale")
    assert main(capsys, "rewrite", files["b"], "-o", out)[0] == 0
    assert sorted(os.listdir(out)) == REWRITE_FILES  # the stale file did not survive
    # a user's manifest.json (not onnxscope's): refused, untouched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"name": "my package"}')
    assert_error(main(capsys, "rewrite", files["a"], "-o", mine), "'manifest.json'")
    assert os.listdir(mine) == ["manifest.json"]
    # an older onnxscope's rewrite (manifest without the list, no reading graphs but
    # scope.onnx) is still ours
    del manifest[MARK]
    for name in ("votes.onnx", "rows.onnx", "columns.onnx"):
        os.remove(out / name)
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(capsys, "rewrite", files["a"], "-o", out)[0] == 0
    assert sorted(os.listdir(out)) == REWRITE_FILES and leftovers(tmp_path) == []


def test_concurrent_rewrites_to_one_folder_end_with_one_complete_set(files, tmp_path):
    refs = {}
    for name in ("a", "b"):
        assert run_cli("rewrite", files[name], "-o", str(tmp_path / f"ref_{name}")).returncode == 0
        refs[name] = contents(tmp_path / f"ref_{name}")
    out = tmp_path / "out"
    for _ in range(1):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "onnxscope", "rewrite", files[n], "-o", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in ("a", "b")
        ]
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()
        assert contents(out) in (refs["a"], refs["b"])
        assert leftovers(tmp_path) == []


def _set(tag: str, names) -> dict:
    files = {n: f"{tag}:{n}".encode() * 100 for n in names}
    files["index.json"] = {"tag": tag}
    return files


def test_concurrent_publishers_never_mix_sets(tmp_path):
    """Four processes publishing different sets to one folder at once, ten times over."""
    out = tmp_path / "out"
    sets = {t: _set(t, [f"{t}{i}" for i in range(4)] + ["shared"]) for t in "abcd"}
    refs = {}
    for tag, files in sets.items():
        publish_folder(tmp_path / f"ref_{tag}", files, kind="t", index="index.json")
        refs[tag] = contents(tmp_path / f"ref_{tag}")
        shutil.rmtree(tmp_path / f"ref_{tag}")
    for _ in range(10):
        pids = []
        for tag in "abcd":
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    publish_folder(out, sets[tag], kind="t", index="index.json")
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        assert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)
        assert contents(out) in refs.values()
        assert leftovers(tmp_path) == []


class _Crash:
    """`os` for onnxscope.files.outputs, dying (like kill -9: no cleanup) at its `at`-th call that
    changes files."""

    CALLS = {"rename", "replace", "unlink", "rmdir", "mkdir", "makedirs", "write", "fsync"}
    CALLS |= {"chmod", "open", "close"}

    def __init__(self, at: int):
        self.at, self.count = at, 0

    def tick(self):
        self.count += 1
        if self.count == self.at:
            os._exit(0)

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.CALLS:
            return real

        def call(*args, **kwargs):
            self.tick()
            return real(*args, **kwargs)

        return call


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_publish_killed_at_every_step_leaves_the_old_set_or_the_new(
    tmp_path, exchange, monkeypatch
):
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # a killed process loses no page cache
    out, sibling = tmp_path / "out", tmp_path / "sibling.txt"
    sibling.write_text("not yours")
    old = _set("old", ["a", "stale"])
    new = _set("new", ["a", "b"])
    refs = {}
    for tag, files in (("old", old), ("new", new)):
        publish_folder(tmp_path / tag, files, kind="t", index="index.json")
        refs[tag] = contents(tmp_path / tag)
        shutil.rmtree(tmp_path / tag)
    seen, step = set(), 0
    while True:
        step += 1
        publish_folder(out, old, kind="t", index="index.json")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 2
            try:
                crash = _Crash(step)
                outputs.os = crash
                real = outputs._exchange
                outputs._exchange = lambda a, b, c=crash, r=real: (c.tick(), exchange and r(a, b))[
                    1
                ]
                publish_folder(out, new, kind="t", index="index.json")
                code = 1
            finally:
                os._exit(code)
        status = os.waitpid(pid, 0)[1]
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 1), status
        if not exchange:  # a later run first puts back a set moved aside
            outputs.check_folder(out, kind="t", index="index.json")
        found = contents(out)
        assert found in (refs["old"], refs["new"]), (step, sorted(found))
        assert sibling.read_text() == "not yours"
        seen.add("old" if found == refs["old"] else "new")
        publish_folder(out, new, kind="t", index="index.json")  # the next run cleans up
        assert contents(out) == refs["new"] and leftovers(tmp_path) == []
        if os.WEXITSTATUS(status) == 1:  # the child finished: every step was tried
            break
    assert seen == {"old", "new"} and step > 15


# -- kill -9 of the real commands ----------------------------------------------------------------


def _kill_during_publish(argv, parent, name, rng, window: float) -> str:
    """Run `onnxscope ARGV`; kill -9 it at a random moment within `window` seconds after its
    staging folder appears (one time in five: at a random moment before). Returns when it was
    killed ('publishing', 'early' or 'finished': not killed)."""
    prefix = f".{name}.onnxscope-tmp-"
    left = set(os.listdir(parent))  # a killed run's staging folder is not this run's
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxscope", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    early = rng.random() < 0.2
    start = time.monotonic()
    when = "finished"
    while proc.poll() is None:
        if early and time.monotonic() - start > rng.uniform(0.2, 1.0):
            when = "early"
        elif not early and any(e.startswith(prefix) for e in set(os.listdir(parent)) - left):
            time.sleep(rng.uniform(0, window))
            when = "publishing"
        else:
            time.sleep(0.0005)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        break
    proc.wait(timeout=60)
    return when if proc.returncode == -signal.SIGKILL else "finished"


def _kill_test(argv_for, work, kills: int, window: float) -> dict:
    """Kill -9 `onnxscope` publishing work/out, alternating between two sets a and b
    (`argv_for(tag, out)`); after each kill, out holds one complete set and nothing outside it
    changed (the inputs in `work` and a sibling file, by hash)."""
    out = work / "out"
    (work / "sibling.txt").write_text("a user's file beside the output folder")

    def outside():
        return {k: v for k, v in tree(work).items() if not k.startswith(("out/", ".out."))}

    guarded = outside()
    refs = {}
    for tag, folder in (("a", out), ("b", work.parent / "ref_b")):
        proc = run_cli(*map(str, argv_for(tag, folder)))
        assert proc.returncode == 0, proc.stderr
        refs[tag] = contents(folder)
    assert refs["a"] != refs["b"]
    rng = random.Random(1109)
    current, counts = "a", {}
    for _ in range(kills):
        target = "b" if current == "a" else "a"
        when = _kill_during_publish(argv_for(target, out), work, "out", rng, window)
        found = contents(out)
        assert found in (refs["a"], refs["b"]), f"mixed set after a kill {when}: {sorted(found)}"
        state = "new" if found == refs[target] else "old"
        counts[f"{when}/{state}"] = counts.get(f"{when}/{state}", 0) + 1
        current = target if state == "new" else current
        if when == "publishing":  # straddle the swap: kills land on both sides of it
            window *= 0.7 if state == "new" else 1.5
        assert outside() == guarded
        assert all(e.startswith(".out.onnxscope-") for e in leftovers(work))
    proc = run_cli(*map(str, argv_for("b" if current == "a" else "a", out)))
    assert proc.returncode == 0, proc.stderr
    assert leftovers(work) == [] and outside() == guarded
    print(f"kill -9 of `onnxscope {argv_for('a', out)[0]}` ({kills} kills): {counts}")
    return counts


def test_kill_9_of_rewrite_leaves_the_old_set_or_the_new(files, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for tag in ("a", "b"):
        shutil.copy(files[tag], work / f"{tag}.onnx")
    counts = _kill_test(lambda t, out: ["rewrite", work / f"{t}.onnx", "-o", out], work, 10, 0.05)
    assert counts.get("publishing/old", 0) + counts.get("publishing/new", 0) >= 5


def test_kill_9_of_report_leaves_the_old_set_or_the_new(files, tmp_path):
    pytest.importorskip("matplotlib")
    work = tmp_path / "work"
    work.mkdir()
    for tag in ("a", "b"):
        shutil.copy(files[f"cls_{tag}"], work / f"{tag}.onnx")
    shutil.copy(files["image"], work / "image.npy")

    def argv_for(tag, out):
        return ["report", work / f"{tag}.onnx", work / "image.npy", "-o", out]

    counts = _kill_test(argv_for, work, 6, 0.05)
    assert counts.get("publishing/old", 0) + counts.get("publishing/new", 0) >= 3


# -- item 11: clear one-paragraph errors ---------------------------------------------------------


def test_output_paths_that_cannot_be_written(files, tmp_path, capsys):
    model = files["a"]
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    rows = ["rows", model, "--index", "0", "-o"]
    assert_error(main(capsys, *rows, tmp_path / "a_folder"), "is a folder")
    assert_error(main(capsys, *rows, tmp_path / "a_file" / "r.npy"), "is a file, not a folder")
    assert_error(main(capsys, "rewrite", model, "-o", tmp_path / "a_file"), "not a folder")
    assert_error(main(capsys, "rewrite", model, "-o", tmp_path / "a_file" / "o"), "not a folder")
    assert_error(main(capsys, *rows, "/dev/null"), "not a regular file")
    # missing parent folders are created, as by mkdir -p
    assert main(capsys, *rows, tmp_path / "new" / "deeper" / "r.npy")[0] == 0
    assert main(capsys, "rewrite", model, "-o", tmp_path / "new2" / "deeper" / "o")[0] == 0
    # a folder that cannot be written
    if os.geteuid() == 0:  # root writes in 0555 folders: use a filesystem nobody writes in
        ro = "/proc"
    else:
        ro = str(tmp_path / "ro")
        os.mkdir(ro, 0o555)
    assert_error(main(capsys, *rows, os.path.join(ro, "r.npy")), f"'{ro}")
    assert_error(main(capsys, "rewrite", model, "-o", os.path.join(ro, "o")), f"'{ro}")
    assert not os.path.exists(os.path.join(ro, "r.npy"))


def test_bad_arguments(files, tmp_path, capsys):
    free = files["free"]
    for shape, needle in [
        ("x=1x-3", "between 1 and 2147483647"),
        ("x=1x0", "between 1 and 2147483647"),
        ("x=1x99999999999", "between 1 and 2147483647"),
        ("x=1x100000x100000", "at most 2147483647 elements"),
    ]:
        assert_error(main(capsys, "verify", free, "--input-shape", shape), needle)
    assert_error(main(capsys, "verify", free, "--seed", "-1"), "0 or more")
    assert_error(main(capsys, "inspect", free, "--input-shape", "oops"), "NAME=1x3x224x224")
    assert main(capsys, "verify", free, "--input-shape", "x=1x7", "--seed", "5")[0] == 0


def test_npz_inputs(files, tmp_path, capsys):
    x = np.load(files["x"])
    np.savez(tmp_path / "one.npz", x=x)
    np.savez(tmp_path / "two.npz", x=x, y=x)
    out = tmp_path / "r.npy"
    rows = ["rows", files["a"], "--index", "5", "-o", out]
    assert main(capsys, *rows, "--input", f"x={tmp_path / 'one.npz'}")[0] == 0
    from_npz = np.load(out)
    assert main(capsys, *rows, "--input", f"x={files['x']}")[0] == 0
    np.testing.assert_array_equal(from_npz, np.load(out))
    result = main(capsys, *rows, "--input", f"x={tmp_path / 'two.npz'}")
    assert_error(result, "2 arrays ['x', 'y']", "exactly one array")


def test_onnx_runtime_log_lines_do_not_reach_stderr(tmp_path):
    path = tmp_path / "reshape.onnx"
    model = make_model(
        ["y = Reshape(x, s)", "z = Relu(y)"],
        inputs={"x": ((1, "C"), np.float32)},
        inits={"s": np.array([1, 4], np.int64)},
        outputs=[("z", (1, 4))],
    )
    onnx.save(model, path)
    proc = run_cli("verify", str(path), "--input-shape", "x=1x5")
    assert_one_paragraph_error(proc, "cannot run this model")
