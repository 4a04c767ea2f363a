"""Publishing what onnxscope writes without ever losing a user's file.

Two kinds of output:

- an output *set*, a folder of files written together (`rewrite -o DIR`: the graphs and
  manifest.json; `report -o DIR`: index.html, the PNGs and report.json). `publish_folder` writes
  the set into a fresh folder beside DIR (same filesystem), fsyncs it, then puts it in place with
  one rename: onto a missing or empty DIR, or, when DIR holds exactly an earlier onnxscope set of
  the same kind, by atomically exchanging the two folders (Linux renameat2 RENAME_EXCHANGE; two
  renames elsewhere, undone by the next run if killed between them). A reader, or a run killed
  at any point, sees at DIR the complete old set or the complete new one, never a mix.
- a single file (`rows -o`, `votes -o`): `publish_file` writes a temporary file beside it and
  renames it into place.

What counts as "an earlier set": the set's index file (its own manifest) carries the key
`onnxscope_output` = {"kind": ..., "files": [every entry written]}; DIR may be replaced only if
every entry in it is a plain file listed there. A set may hold folders (`onnxscope triton`: one
per model): its files are then listed as '/'-joined paths ("m/1/model.onnx"), and a folder in DIR
is the set's only when a listed path runs through it (only those folders are looked into). A
folder that merely holds a file named like the index is not onnxscope's. Anything else in DIR (a
user's notes, a file added during the run) makes the write refuse, naming the extra entries, with
nothing touched.

Never written to: an input of the command (the model, --input files, the image), compared after
resolving symbolic links (os.path.realpath) and as the same file (hard links); a path whose last
component is a symbolic link (dangling or not), refused rather than followed, so the link and its
target are both left alone. Missing parent folders are created (as `mkdir -p`).

Temporary entries are named `.NAME.onnxscope-tmp-*` beside the output NAME. A run killed midway
can leave one; the next run to the same NAME removes it, but only if it is provably onnxscope's: a
staging folder whose marker file is no longer locked by a live process, a complete onnxscope set,
or an unlocked temporary file. Runs on one parent folder take a lock on it (flock) while they
check, swap and clean up, so concurrent runs to one DIR end with one complete set.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None

MARK = "onnxscope_output"  # the index file's key: {"kind": ..., "files": [...]}
TMP = ".onnxscope-tmp-"  # temporary entries beside NAME: .NAME.onnxscope-tmp-XXXXXXXX
OLD = ".onnxscope-old-"  # an earlier set moved aside where folders cannot be exchanged
STAGING = ".onnxscope-staging"  # marker file inside a staging folder, locked while it is staged
SHOWN = 8  # entries named in an error before "and N more"

Sources = Iterable[tuple[str, object]]  # (what, path): ("input model", "m.onnx")
Legacy = Callable[[dict], "set[str] | None"]  # index of an older onnxscope -> the entries it owns
Content = bytes | Callable[[str], None]  # the bytes, or a function writing the file at a path


class OutputError(InputError):
    """The output path cannot be written as asked; nothing was changed."""


# -- checks ---------------------------------------------------------------------------------------


def check_folder(
    folder, *, kind: str, index: str, sources: Sources = (), legacy: Legacy | None = None
) -> str:
    """Check that the output set `kind` can be published at `folder` and return its absolute
    path: not a symbolic link, not a file, holding nothing but an earlier set of the same kind
    (or nothing), and no source inside it. Raises OutputError; touches nothing except leftovers
    of killed runs (see the module docstring)."""
    shown, parent, name = _target(folder, "folder")
    dest = os.path.join(parent, name)
    _no_source_inside(dest, sources)
    try:
        with _locked(parent) if os.path.isdir(parent) else contextlib.nullcontext():
            if os.path.isdir(parent):
                _sweep(parent, name, kind, index, legacy)
            _check_dest_folder(dest, shown, kind, index, legacy)
    except OSError as exc:
        raise OutputError(f"Cannot use '{shown}' as the output folder: {_reason(exc)}.") from None
    return shown


def check_file(path, *, sources: Sources = (), suffix: str | None = None) -> str:
    """The path `publish_file` will write (with `suffix` appended when missing), after checking
    that it is not a folder, a symbolic link, a special file or one of the sources."""
    given = os.fspath(path)
    named = [given] + ([given + suffix] if suffix and not given.endswith(suffix) else [])
    for path in named:  # as given (`-o MODEL.onnx` is a mistake), then as written
        shown, parent, name = _target(path, "file")
        dest = os.path.join(parent, name)
        st = _lstat(dest)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise OutputError(
                f"'{shown}' is a folder; -o takes the name of the file to write, e.g. "
                f"'{os.path.join(shown, 'out' + (suffix or ''))}'."
            )
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise OutputError(f"'{shown}' exists and is not a regular file; choose another -o.")
        for what, src in _paths(sources):
            real = os.path.realpath(src)
            if real == dest or (st is not None and _same_file(real, dest)):
                raise OutputError(
                    f"Writing '{shown}' would overwrite the {what} '{src}'; choose another -o."
                )
    return shown


# -- publishing ----------------------------------------------------------------------------------


def publish_folder(
    folder,
    files: Mapping[str, Content],
    *,
    kind: str,
    index: str,
    sources: Sources = (),
    legacy: Legacy | None = None,
) -> str:
    """Publish `files` ({name: bytes or writer(path)}) as the output set `kind` at `folder`, all
    or nothing, and return the folder's absolute path. A name is a file name or a '/'-joined
    relative path ("m/1/model.onnx": its folders are created). `files[index]` is the set's index,
    a top-level JSON object (bytes or dict) to which the `onnxscope_output` key is added; writers
    may create further files beside theirs (they join the set). Raises OutputError, changing
    nothing at `folder`, when it is not replaceable (see check_folder) or a write fails."""
    if index not in files:
        raise ValueError(f"the set has no index file '{index}'")
    if "/" in index:
        raise ValueError(f"the index must be a top-level file, not {index!r}")
    for name in files:
        parts = name.split("/")
        if any(p in ("", ".", "..") or os.path.basename(p) != p for p in parts) or (
            parts[0] == STAGING
        ):
            raise ValueError(f"not a plain file name or relative path: {name!r}")
    clash = _folders(files) & set(files)
    if clash:
        raise ValueError(f"{sorted(clash)[0]!r} is both a file and a folder of the set")
    shown = check_folder(folder, kind=kind, index=index, sources=sources, legacy=legacy)
    _, parent, name = _target(shown, "folder")
    _make_parent(parent, shown)
    _, parent, name = _target(shown, "folder")  # the parent now exists: resolve it again
    dest = os.path.join(parent, name)
    staging = marker = None
    try:
        with _locked(parent):
            staging, marker = _new_staging(parent, name)
        _stage(staging, files, kind, index)
        with _locked(parent):
            _sweep(parent, name, kind, index, legacy, skip=staging)
            os.unlink(os.path.join(staging, STAGING))
            _fsync_dir(staging)
            displaced = _swap(staging, dest, shown, kind, index, legacy)
            staging = None  # published: from here on the new set is at `dest`
            _fsync_dir(parent)
            if displaced is not None:
                try:
                    _remove_set(displaced, kind, index, legacy)
                    _fsync_dir(parent)
                except OSError as exc:
                    _notice(f"could not delete the earlier set in '{displaced}': {_reason(exc)}")
    except OSError as exc:
        raise OutputError(
            f"Could not write the output folder '{shown}': {_reason(exc)}. Nothing at "
            f"'{shown}' was changed."
        ) from None
    finally:
        if marker is not None:
            os.close(marker)
        if staging is not None:  # the staged set, never published: only our files are in it
            _remove_staging(staging)
    return shown


def publish_file(path, data: bytes, *, sources: Sources = (), suffix: str | None = None) -> str:
    """Write `data` to `path` (with `suffix` appended when missing) atomically: a temporary file
    beside it, fsynced, renamed into place. Returns the path written; see check_file."""
    shown = check_file(path, sources=sources, suffix=suffix)
    _, parent, name = _target(shown, "file")
    _make_parent(parent, shown)
    _, parent, name = _target(shown, "file")
    dest = os.path.join(parent, name)
    tmp = None
    try:
        with _locked(parent):
            _sweep(parent, name, None, None, None)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}{TMP}", dir=parent)
            _lock(fd)
        try:
            with os.fdopen(os.dup(fd), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                mode = stat.S_IMODE(os.stat(dest).st_mode)  # keep a replaced file's permissions
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
            os.chmod(tmp, mode)
            with _locked(parent):
                check_file(shown, sources=sources)  # again: nothing changed under us
                os.replace(tmp, dest)
                tmp = None
                _fsync_dir(parent)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(
            f"Could not write '{shown}': {_reason(exc)}. Nothing at '{shown}' was changed."
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return shown


def sweep_leftovers(path) -> None:
    """Remove what killed `publish_file` runs left beside the file `path` (its unlocked
    temporary files), as publish_file does before it writes."""
    _, parent, name = _target(path, "file")
    if os.path.isdir(parent):
        with _locked(parent):
            _sweep(parent, name, None, None, None)


@dataclass(frozen=True)
class OutputSet:
    """One kind of output set (`rewrite -o DIR`, `report -o DIR`): its kind, its index file and
    how to read an index from before indexes listed their files; `check` and `publish` are
    check_folder and publish_folder for it."""

    kind: str
    index: str
    legacy: Legacy | None = None

    def check(self, folder, *, sources: Sources = ()) -> str:
        return check_folder(
            folder, kind=self.kind, index=self.index, sources=sources, legacy=self.legacy
        )

    def publish(self, folder, files: Mapping[str, Content], *, sources: Sources = ()) -> str:
        return publish_folder(
            folder, files, kind=self.kind, index=self.index, sources=sources, legacy=self.legacy
        )


# -- the pieces ----------------------------------------------------------------------------------


def _target(path, what: str) -> tuple[str, str, str]:
    """(absolute path as given, real parent folder, last component); refuses symbolic links."""
    shown = os.path.abspath(os.fspath(path))
    name = os.path.basename(shown)
    if not name:
        raise OutputError(f"Cannot write the output {what} at '{shown}'; choose another -o.")
    parent = os.path.realpath(os.path.dirname(shown))
    above = parent
    while not os.path.lexists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise OutputError(
            f"Cannot write '{shown}': '{above}' is a file, not a folder; choose another -o."
        )
    real = os.path.join(parent, name)
    if os.path.islink(real):
        target = os.readlink(real)
        state = "" if os.path.exists(real) else ", which does not exist"
        raise OutputError(
            f"'{shown}' is a symbolic link (to '{target}'{state}); onnxscope does not write "
            f"through or over links: give the output {what}'s real path as -o."
        )
    return shown, parent, name


def _lstat(path: str):
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _paths(sources: Sources):
    for what, src in sources:
        if isinstance(src, (str, os.PathLike)):
            yield what, os.fspath(src)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _no_source_inside(dest: str, sources: Sources) -> None:
    for what, src in _paths(sources):
        real = os.path.realpath(src)
        if real == dest:
            raise OutputError(
                f"The output folder '{dest}' is the {what} '{src}': writing it would overwrite "
                f"the input {what.split()[-1]}; choose another -o."
            )
        if real.startswith(dest + os.sep):
            raise OutputError(
                f"The {what} '{src}' is inside the output folder '{dest}': writing there could "
                f"overwrite the input {what.split()[-1]} or delete it; choose another -o."
            )


def _check_dest_folder(dest: str, shown: str, kind, index, legacy) -> None:
    if not os.path.lexists(dest):
        return
    if not os.path.isdir(dest):
        raise OutputError(f"'{shown}' exists and is not a folder; choose another -o.")
    foreign = _foreign(dest, kind, index, legacy)
    if foreign:
        raise OutputError(
            f"'{shown}' is not empty and holds no earlier {kind} (onnxscope replaces only a folder "
            f"holding nothing but the files its {index} lists, or an empty one): it holds "
            f"{_names(foreign)}. Nothing was changed; choose a new or empty folder, or move "
            "those entries away."
        )


def _foreign(folder: str, kind, index, legacy) -> list[str]:
    """The entries of `folder` (paths, '/'-joined below it) that are not plain files or folders
    of one earlier set `kind` (listed in its index); [] when the folder may be replaced (an
    earlier set, or empty)."""
    return _survey(folder, kind, index, legacy)[2]


def _survey(folder: str, kind, index, legacy) -> tuple[list[str], list[str], list[str]]:
    """(the set's files, its folders, the foreign entries) in `folder`. Reads through one handle
    on the folder, so that a concurrent swap cannot mix two sets' listings, and enters only the
    folders the index's paths run through."""
    fd = os.open(folder, _DIR_FLAGS)
    try:
        obj = None
        if _is_file(index, fd):
            try:
                index_fd = os.open(index, os.O_RDONLY, dir_fd=fd)
                with os.fdopen(index_fd, "rb") as f:
                    obj = json.loads(f.read())
            except (OSError, ValueError):
                obj = None
        ours = _owned(obj, kind, index, legacy)
        files, folders, others = _tree(fd, _folders(ours))
    finally:
        os.close(fd)
    foreign = sorted(others + [f for f in files if f not in ours])
    return [f for f in files if f in ours], folders, foreign


def _owned(obj, kind, index, legacy) -> set[str]:
    """The entries an index object says its set wrote (empty unless it lists itself)."""
    ours: set[str] = set()
    if isinstance(obj, dict):
        mark = obj.get(MARK)
        if isinstance(mark, dict) and mark.get("kind") == kind:
            listed = mark.get("files")
            if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
                ours = set(listed)
        elif MARK not in obj and legacy is not None:
            ours = set(legacy(obj) or ())
    return ours if index in ours else set()


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


def _folders(paths) -> set[str]:
    """The folders that '/'-joined relative paths run through ("a/b/f" -> {"a", "a/b"})."""
    out = set()
    for path in paths:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _tree(fd: int, folders: set[str] | None = None, prefix: str = ""):
    """(files, folders, others) below the folder open as `fd`, as '/'-joined relative paths, never
    following links. Only the folders in `folders` (all when None) are entered; any other folder,
    link or special file is an other."""
    files: list[str] = []
    dirs: list[str] = []
    others: list[str] = []
    for entry in sorted(os.listdir(fd)):
        rel = prefix + entry
        try:
            mode = os.lstat(entry, dir_fd=fd).st_mode
        except OSError:
            others.append(rel)
            continue
        if stat.S_ISREG(mode):
            files.append(rel)
        elif stat.S_ISDIR(mode) and (folders is None or rel in folders):
            dirs.append(rel)
            sub = os.open(entry, _DIR_FLAGS, dir_fd=fd)
            try:
                below = _tree(sub, folders, rel + "/")
            finally:
                os.close(sub)
            for mine, theirs in zip((files, dirs, others), below):
                mine.extend(theirs)
        else:
            others.append(rel)
    return files, dirs, others


def _tree_at(folder: str, folders: set[str] | None = None):
    fd = os.open(folder, _DIR_FLAGS)
    try:
        return _tree(fd, folders)
    finally:
        os.close(fd)


def _is_file(path: str, dir_fd: int | None = None) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _names(entries: list[str]) -> str:
    shown = ", ".join(f"'{e}'" for e in entries[:SHOWN])
    more = f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else ""
    noun = "entry" if len(entries) == 1 else "entries"
    return f"{len(entries)} {noun} onnxscope did not write: {shown}{more}"


def _make_parent(parent: str, shown: str) -> None:
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the folder '{parent}' for '{shown}': {_reason(exc)}."
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write in the folder '{parent}' for '{shown}': permission denied")


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return f"{text} ('{exc.filename}')" if exc.filename else text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(parent: str):
    """Hold an exclusive flock on the folder `parent` (best effort: none where unsupported)."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(parent, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _lock(fd: int) -> None:
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlocked(path: str) -> bool:
    """Whether no live process holds the lock on file `path` (its writer is gone)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _new_staging(parent: str, name: str) -> tuple[str, int]:
    """A fresh staging folder beside `name`, with its marker file created and locked."""
    staging = tempfile.mkdtemp(prefix=f".{name}{TMP}", dir=parent)
    fd = os.open(os.path.join(staging, STAGING), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    _lock(fd)
    os.write(fd, f"onnxscope staging folder for '{name}', pid {os.getpid()}\n".encode())
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    return staging, fd


def _stage(staging: str, files: Mapping[str, Content], kind: str, index: str) -> None:
    for name, content in files.items():
        if name != index:
            path = os.path.join(staging, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write(path, content)
    written, folders, others = _tree_at(staging, _folders(files))
    if others:
        raise ValueError(
            f"the output set may hold files and the folders of its names only; '{others[0]}' "
            "is neither"
        )
    entries = sorted({*written, index} - {STAGING})
    for entry in entries:
        if entry != index:
            _fsync_file(os.path.join(staging, entry))
    for folder in folders:
        _fsync_dir(os.path.join(staging, folder))
    head = files[index]
    obj = dict(head) if isinstance(head, Mapping) else json.loads(head)
    if not isinstance(obj, dict):
        raise ValueError(f"the index '{index}' is not a JSON object")
    obj[MARK] = {"kind": kind, "files": entries}
    _write(os.path.join(staging, index), json.dumps(obj, indent=2).encode("utf-8"))
    _fsync_dir(staging)


def _write(path: str, content: Content) -> None:
    if callable(content):
        content(path)
        _fsync_file(path)
        return
    with open(path, "xb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(staging: str, dest: str, shown: str, kind, index, legacy) -> str | None:
    """Put the staged folder at `dest`; return the path now holding the set it displaced (to be
    deleted) or None. Re-checks `dest` just before, and undoes the swap if what it displaced
    turns out not to be a replaceable set (a file added in the meantime)."""
    for _ in range(8):  # `dest` may change between the check and the rename: look again
        st = _lstat(dest)
        if st is not None:
            _check_dest_folder(dest, shown, kind, index, legacy)
            if stat.S_ISLNK(st.st_mode):
                _target(shown, "folder")  # raises: it became a link
        if st is None or not os.listdir(dest):
            try:  # onto nothing, or onto an empty folder: one atomic rename
                os.rename(staging, dest)
                return None
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    continue
                raise
        if _exchange(staging, dest):  # staging now holds the earlier set
            if _foreign(staging, kind, index, legacy):  # changed just now: put it back
                _exchange(staging, dest)
                continue
            return staging
        old = _aside(dest)  # no atomic exchange here: two renames, undone by _sweep if killed
        os.rename(dest, old)
        try:
            os.rename(staging, dest)
        except OSError:
            os.rename(old, dest)
            raise
        if _foreign(old, kind, index, legacy):
            os.rename(dest, staging)
            os.rename(old, dest)
            continue
        return old
    raise OutputError(f"'{shown}' kept changing while onnxscope tried to replace it; try again.")


def _aside(dest: str) -> str:
    folder, name = os.path.split(dest)
    return os.path.join(folder, f".{name}{OLD}{os.urandom(6).hex()}")


RENAME_EXCHANGE = 2
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "arm64": 276}
_renameat2 = None


def _exchange(a: str, b: str) -> bool:
    """Swap the paths a and b atomically (Linux renameat2); False where the system or the
    filesystem cannot."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "renameat2"):
            _renameat2 = libc.renameat2
        elif platform.machine() in _SYSCALL_RENAMEAT2:
            number = _SYSCALL_RENAMEAT2[platform.machine()]
            _renameat2 = lambda *args: libc.syscall(number, *args)  # noqa: E731
        else:
            _renameat2 = False
    if not _renameat2:
        return False
    at_fdcwd = -100
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), b)


def _remove_set(folder: str, kind, index, legacy) -> None:
    """Delete a displaced earlier set: its listed files only, then the folder if that left it
    empty (else it stays, with a notice: something was added to it meanwhile)."""
    files, folders, foreign = _survey(folder, kind, index, legacy)
    if foreign:
        _notice(f"kept '{folder}': it holds entries onnxscope did not write")
        return
    # the index last: a run killed midway leaves a smaller set that is still provably ours
    for entry in files:
        if entry != index:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, entry))
    _remove_folders(folder, folders)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, index))
    try:
        os.rmdir(folder)
    except OSError:
        _notice(f"kept '{folder}': files were added to it while it was being replaced")


def _remove_staging(folder: str) -> None:
    """Delete a staging folder of this process (only files it wrote are in it)."""
    with contextlib.suppress(OSError):
        files, folders, _ = _tree_at(folder)
        for entry in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))
        _remove_folders(folder, folders)
        os.rmdir(folder)


def _remove_folders(folder: str, folders: list[str]) -> None:
    """Remove the (emptied) folders below `folder`, the deepest first; one that is not empty
    stays."""
    for sub in sorted(folders, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(folder, sub))


def _sweep(parent: str, name: str, kind, index, legacy, skip: str | None = None) -> None:
    """Remove what killed runs left beside `name` (under the parent's lock), only where it is
    provably onnxscope's: an unlocked temporary file, a staging folder whose marker is no longer
    locked, a complete earlier set. An earlier set moved aside (`.NAME.onnxscope-old-*`, where
    folders cannot be exchanged) is put back at `name` if `name` is missing: the run was killed
    between the two renames of its swap."""
    dest = os.path.join(parent, name)
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return
    for entry in entries:
        path = os.path.join(parent, entry)
        aside = entry.startswith(f".{name}{OLD}")
        if not (aside or entry.startswith(f".{name}{TMP}")) or path == skip:
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and not aside:
            if _unlocked(path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        elif stat.S_ISDIR(st.st_mode):
            marker = os.path.join(path, STAGING)
            if os.path.lexists(marker):
                if not aside and _is_file(marker) and _unlocked(marker):
                    _remove_staging(path)
            elif kind is not None and not _foreign(path, kind, index, legacy):
                if aside and not os.path.lexists(dest):
                    try:
                        os.rename(path, dest)
                        continue
                    except OSError:
                        pass
                with contextlib.suppress(OSError):
                    _remove_set(path, kind, index, legacy)


def _notice(text: str) -> None:
    print(f"onnxscope: {text}", file=sys.stderr)
