"""Output sets that hold folders (onnxscope/files/outputs.py, for `onnxscope triton`): the same
guarantees as flat sets (all or nothing, only an earlier set of the kind is replaced, a user's
entry anywhere in it makes the write refuse, leftovers of killed runs removed only if ours)."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from onnxscope.files import outputs
from onnxscope.files.outputs import MARK, STAGING, OutputError, publish_folder

KIND, INDEX = "nested", "index.json"


def publish(folder, files):
    return publish_folder(folder, {**files, INDEX: {}}, kind=KIND, index=INDEX)


def tree(folder) -> dict[str, bytes]:
    """Every file below `folder` by '/'-joined path, and every folder (as None)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        for d in dirs:
            out[os.path.normpath(os.path.join(rel, d))] = None
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.normpath(os.path.join(rel, f))] = fh.read()
    return out


def leftovers(parent) -> list[str]:
    return sorted(e for e in os.listdir(parent) if ".onnxscope-" in e)


def test_a_set_with_folders_is_published_listed_and_replaced_whole(tmp_path):
    out = tmp_path / "repo"
    publish(out, {"a/config": b"1", "a/1/model": b"2", "b/1/model": b"3"})
    assert tree(out) == {
        "a": None,
        "a/1": None,
        "a/config": b"1",
        "a/1/model": b"2",
        "b": None,
        "b/1": None,
        "b/1/model": b"3",
        INDEX: (out / INDEX).read_bytes(),
    }
    listed = json.loads((out / INDEX).read_text())[MARK]
    assert listed == {"kind": KIND, "files": ["a/1/model", "a/config", "b/1/model", INDEX]}
    publish(out, {"a/config": b"4", "c/model": b"5"})  # b/ and a/1/ are not in the new set
    assert sorted(p for p in tree(out) if p != INDEX) == ["a", "a/config", "c", "c/model"]
    assert (out / "a" / "config").read_bytes() == b"4" and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "added",
    ["a/notes.txt", "a/1/notes.txt", "a/extra/", "z/", "notes.txt", "a/link"],
)
def test_a_users_entry_anywhere_in_an_earlier_set_makes_the_write_refuse(tmp_path, added):
    out = tmp_path / "repo"
    publish(out, {"a/config": b"1", "a/1/model": b"2"})
    path = out / added.rstrip("/")
    if added.endswith("/"):
        path.mkdir()
    elif added.endswith("link"):
        path.symlink_to(out / "a" / "config")
    else:
        path.write_text("mine")
    before = tree(out)
    with pytest.raises(OutputError, match=f"'{added.rstrip('/')}'"):
        publish(out, {"b/model": b"3"})
    assert tree(out) == before and leftovers(tmp_path) == []


def test_a_listed_path_that_is_a_folder_or_runs_through_a_file_is_not_ours(tmp_path):
    out = tmp_path / "repo"
    publish(out, {"a/config": b"1", "m": b"2"})
    os.remove(out / "m")
    (out / "m").mkdir()  # listed as a file, now a folder
    with pytest.raises(OutputError, match="'m'"):
        publish(out, {"b": b"3"})
    other = tmp_path / "other"
    publish(other, {"a/config": b"1"})
    os.remove(other / "a" / "config")
    os.rmdir(other / "a")
    (other / "a").write_text("a file where the set had a folder")
    with pytest.raises(OutputError, match="'a'"):
        publish(other, {"b": b"3"})


@pytest.mark.parametrize(
    "name", ["../x", "a/../x", "a//b", "/abs", "a/", "./a", f"{STAGING}/x", "a/b\x00"]
)
def test_names_must_be_plain_relative_paths(tmp_path, name):
    with pytest.raises(ValueError):
        publish(tmp_path / "repo", {name: b"1"})
    assert not (tmp_path / "repo").exists()


def test_a_name_cannot_be_both_a_file_and_a_folder_nor_the_index_nested(tmp_path):
    with pytest.raises(ValueError, match="both a file and a folder"):
        publish(tmp_path / "repo", {"a": b"1", "a/b": b"2"})
    with pytest.raises(ValueError, match="top-level"):
        publish_folder(tmp_path / "repo", {"a/i.json": {}}, kind=KIND, index="a/i.json")
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_the_earlier_set_and_no_leftovers(tmp_path):
    out = tmp_path / "repo"
    publish(out, {"a/config": b"1"})
    before = tree(out)

    def fail(path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device", path)

    with pytest.raises(OutputError, match="No space left"):
        publish(out, {"b/config": b"2", "b/1/weights": fail})
    assert tree(out) == before and leftovers(tmp_path) == []


def test_a_writer_may_add_files_beside_its_own_but_no_other_folder(tmp_path):
    def with_sidecar(path):
        open(path, "wb").close()
        open(os.path.join(os.path.dirname(path), "sidecar"), "wb").close()

    out = tmp_path / "repo"
    publish(out, {"a/1/model": with_sidecar})
    assert "a/1/sidecar" in json.loads((out / INDEX).read_text())[MARK]["files"]

    def makes_a_folder(path):
        open(path, "wb").close()
        os.mkdir(os.path.join(os.path.dirname(path), "extra"))

    with pytest.raises(ValueError, match="a/extra"):
        publish(tmp_path / "other", {"a/model": makes_a_folder})
    assert leftovers(tmp_path) == [] and not (tmp_path / "other").exists()


def test_a_killed_runs_nested_staging_folder_is_swept_only_when_unlocked(tmp_path):
    out = tmp_path / "repo"
    dead = tmp_path / ".repo.onnxscope-tmp-dead0001"
    (dead / "a" / "1").mkdir(parents=True)
    (dead / STAGING).write_text("onnxscope staging folder")
    (dead / "a" / "1" / "model").write_bytes(b"half")
    live = tmp_path / ".repo.onnxscope-tmp-live0001"
    (live / "a").mkdir(parents=True)
    (live / STAGING).write_text("onnxscope staging folder")
    (live / "a" / "model").write_bytes(b"being written")
    with open(live / STAGING) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        publish(out, {"a/config": b"1"})
    assert leftovers(tmp_path) == [live.name]
    assert (live / "a" / "model").read_bytes() == b"being written"


def test_a_displaced_nested_set_is_removed_file_by_file(tmp_path, monkeypatch):
    """Where folders cannot be exchanged the earlier set is moved aside, then removed: its
    listed files, then its folders, the index last."""
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    out = tmp_path / "repo"
    publish(out, {"a/1/model": b"1", "b/config": b"2"})
    publish(out, {"c/config": b"3"})
    assert sorted(p for p in tree(out) if p != INDEX) == ["c", "c/config"]
    assert leftovers(tmp_path) == []
