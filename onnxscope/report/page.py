"""The HTML page of a report: the exactness table first, then the sections, with every figure
embedded as a data URI; `assemble` returns the report's files (index.html, the PNGs,
report.json)."""

from __future__ import annotations

import base64
import html
import json

import numpy as np

TOLERANCE = 1e-5
MARKER = "report.json"  # the report's index: lists its files (onnxscope.files.outputs)


def assemble(report, errors) -> dict[str, bytes]:
    """The files of `report` ({name: bytes}): index.html, its figures as PNG files and
    report.json. `errors`: the interpretation's Verification (each check against max(tol, its
    noise floor))."""
    exact = [(k, v, errors.passed(k)) for k, v in errors.items()]
    if not errors.adjoint_checked:
        exact.append(("adjoint", None, None))
    cells = "".join(
        f"<tr><td>{k}</td><td class=num data-value='{v!r}'>{v:.3e}</td>"
        f"<td class=num>{errors.noise[k]:.1e}</td>"
        f"<td class={'pass' if ok else 'fail'}>{'pass' if ok else 'FAIL'}</td></tr>"
        if v is not None
        else f"<tr><td>{k}</td><td>—</td><td>—</td><td>not checked: no adjoint graph</td></tr>"
        for k, v, ok in exact
    )
    verdict = errors.ok
    head = (
        f"<table id=exactness><tr><th>identity</th><th>relative error</th>"
        f"<th>float noise floor</th><th>≤ max({TOLERANCE:g}, 8 × floor)</th></tr>{cells}"
        "</table>"
        "<p>F(x) = A_x x + c_x (reconstruction, relative to ‖F(x)‖; conditioning "
        f"(‖A_x x‖ + ‖c_x‖)/‖F(x)‖ = {errors.conditioning:.3g}), A_x linear (linearity), "
        "⟨A z, w⟩ = ⟨z, A_xᵀ w⟩ (adjoint). The noise floor is how far the same map moves "
        "when its argument is rounded another way.</p>"
    )
    body = "".join(
        f"<h2>{html.escape(t)}</h2>\n{b}\n"
        for t, b in [
            (f"Exactness: {'all pass' if verdict else 'FAILED'}", head),
            *report.sections,
            ("Glossary", GLOSSARY),
        ]
    )
    for fig in report.figures:
        data = base64.b64encode(fig.png).decode("ascii")
        body = body.replace(
            f"@@figure:{fig.file}@@",
            f"<figure><img src='data:image/png;base64,{data}' alt='{fig.file}'>"
            f"<figcaption>{html.escape(fig.caption)} ({fig.file})</figcaption></figure>",
        )
    page = PAGE.format(body=body)
    report.numbers["exactness"] = {**errors.as_dict(), "tolerance": TOLERANCE, "pass": verdict}
    report.numbers["figures"] = [f.file for f in report.figures]
    report.numbers["onnxscope_report"] = 1
    files = {f.file: f.png for f in report.figures}
    files["index.html"] = page.encode("utf-8")
    files[MARKER] = json.dumps(report.numbers, indent=1, default=_jsonable).encode("utf-8")
    return files


GLOSSARY = """<dl id=glossary>
<dt>A<sub>x</sub>, c<sub>x</sub></dt><dd>Freeze every unit's decision at the input x (which ReLU
passes, which max wins, each gate's value) and the model is an affine map of a new input z:
F̂<sub>x</sub>(z) = A<sub>x</sub> z + c<sub>x</sub>, equal to F(x) at z = x. A<sub>x</sub> is the
linear part, c<sub>x</sub> = F̂<sub>x</sub>(0) the bias image: what the biases and the units'
intercepts produce with no input at all.</dd>
<dt>votes</dt><dd>x ⊙ A<sub>x</sub><sup>T</sup>e<sub>k</sub>: each input pixel's contribution to
output k. Σ votes + c<sub>x</sub>[k] = F(x)[k] exactly; the bias share |c|/(|Σ votes| + |c|) says
how much of the output the input does not explain.</dd>
<dt>row</dt><dd>A<sub>x</sub><sup>T</sup>e<sub>i</sub>, input-shaped: what output element i looks
at (its weights over the input).</dd>
<dt>column</dt><dd>A<sub>x</sub>e<sub>j</sub>, output-shaped: where input element j goes (what a
unit change of that pixel does to the output).</dd>
<dt>singular vectors</dt><dd>v<sub>i</sub> (input) and u<sub>i</sub> (output) with
A<sub>x</sub>v<sub>i</sub> = σ<sub>i</sub>u<sub>i</sub>: the input patterns the frozen map
amplifies most, and what they become.</dd>
</dl>"""

PAGE = """<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>onnxscope report</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; }}
td.num {{ font-family: monospace; }} .pass {{ color: #060; }} .fail {{ color: #b00; }}
img {{ max-width: 100%; }} figcaption {{ font-size: 90%; color: #444; }}
p.finding {{ font-size: 105%; border-left: 4px solid #c60; padding-left: 8px; }}
dt {{ font-weight: bold; margin-top: 0.4em; }}
</style></head><body>
<h1>onnxscope report: F̂<sub>x</sub>(z) = A<sub>x</sub> z + c<sub>x</sub></h1>
{body}
</body></html>
"""


def _jsonable(value):
    return value.tolist() if isinstance(value, np.ndarray) else str(value)
