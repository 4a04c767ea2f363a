"""The three tours (samples/01_*, 02_*, 03_*): each README's command runs, writes its reports and
extras, every embedded figure decodes, and every report states exact reconstruction and adjoint
errors (≤ 1e-5). A tour whose subject cannot be fetched or converted is checked for what it did
and then skipped with its reasons, or failed under ONNXSCOPE_REQUIRE_SUBJECTS=1 (CI, which reaches
the package registry: there a tour must leave nothing out); a missing extra (matplotlib, pillow,
scikit-image) skips. Subjects already in the local cache are read from it (samples/subjects.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "samples"))
import tourkit  # noqa: E402

TOURS = ["01_classification", "02_restoration", "03_image_to_image"]
EXACT = 1e-5
REQUIRE_SUBJECTS = os.environ.get("ONNXSCOPE_REQUIRE_SUBJECTS") == "1"


def readme_command(tour: str) -> list[str]:
    """The command line that the tour's README gives to run it."""
    with open(os.path.join(ROOT, "samples", tour, "README.md"), encoding="utf-8") as f:
        found = re.findall(r"^\s*(bash samples/\S+/run\.sh)\s*$", f.read(), re.M)
    assert len(found) == 1, f"{tour}/README.md should give one `bash samples/.../run.sh` line"
    return shlex.split(found[0])


def embedded_pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(d) for d in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]


def assert_decodes(png: bytes, what: str) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        assert im.format == "PNG" and min(im.size) > 16, what


def check_report(folder) -> None:
    with open(folder / "index.html", encoding="utf-8") as f:
        page = f.read()
    pngs = embedded_pngs(page)
    assert pngs, f"{folder}: no embedded figures"
    for k, png in enumerate(pngs):
        assert_decodes(png, f"{folder}/index.html figure {k}")
    with open(folder / "report.json") as f:
        errors = json.load(f)["exactness"]["errors"]
    stated = dict(re.findall(r"<td>(\w+)</td><td class=num data-value='([^']+)'>", page))
    for check in ("reconstruction", "adjoint"):
        assert errors[check] <= EXACT, (folder, errors)
        assert float(stated[check]) == pytest.approx(errors[check]), (folder, stated)


@pytest.mark.parametrize("tour", TOURS)
def test_tour(tour, tmp_path):
    for module, extra in (("matplotlib", "report"), ("PIL", "report"), ("skimage", "scikit-image")):
        pytest.importorskip(module, reason=f"the tours need {module} ({extra})")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        [*readme_command(tour), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode in (0, tourkit.SKIPPED), proc.stdout + proc.stderr
    reports = sorted(p.parent for p in tmp_path.glob("*/report.json"))
    for folder in reports:
        check_report(folder)
    extras = sorted((tmp_path / "extras").glob("*.png"))
    for png in extras:
        assert_decodes(png.read_bytes(), str(png))
    stats = tmp_path / "extras" / "stats.json"
    if proc.returncode == 0 or stats.exists():
        with open(stats) as f:
            skipped = json.load(f)["skipped"]
    else:
        skipped = {}
    if proc.returncode == 0:
        assert reports and extras and not skipped, proc.stdout
    else:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or proc.stderr.strip()
        why = f"tour {tour} left out: {reasons}"
        if REQUIRE_SUBJECTS:
            pytest.fail(f"{why} (ONNXSCOPE_REQUIRE_SUBJECTS=1)", pytrace=False)
        pytest.skip(why)


def test_main_job(tmp_path):
    """The README's main job (`bash samples/00_default/run.sh`) on the bundled default: it ends
    with the path of a report whose figures decode and whose stated errors are exact."""
    for module in ("matplotlib", "PIL"):
        pytest.importorskip(module, reason=f"the main job's report needs {module} ([report])")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert "bash samples/00_default/run.sh" in f.read()
    onnxscope_bin = os.path.join(os.path.dirname(sys.executable), "onnxscope")
    env = {**os.environ, "ONNXSCOPE": onnxscope_bin, "OUT_DIR": str(tmp_path / "out")}
    for _ in range(2):  # run again over its own outputs, as a user would: they are replaced
        proc = subprocess.run(
            ["bash", "samples/00_default/run.sh"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.endswith("index.html") and os.path.exists(last), last
    check_report(tmp_path / "out" / "report")
    with open(tmp_path / "out" / "report" / "report.json") as f:
        assert "prob_logits" in json.dumps(json.load(f))  # votes on ONet's logits (--logits)
