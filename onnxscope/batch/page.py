"""OUT/index.html of `onnxscope batch`: what a person reads instead of the table.

The page opens with a headline in words (how many inputs, which failed and why, how many verified
exact, how much the model leans on its bias), then the bias share over the dataset (a histogram
per target), the exactness errors over the dataset (log10, against the 1e-5 tolerance), the
`reports` most and least bias-reliant inputs with their vote maps (read from votes/ when the run
saved them, else recomputed for those inputs only), and a table of the rows (the first
TABLE_LIMIT) linking to per-input reports, reports/<name>/ (onnxscope.report.build_report).
Figures are embedded as data URIs and written as PNG files beside the page; every file goes
through BatchFolder.publish, the page last.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math

import numpy as np

from ..errors import OnnxscopeError
from ..report import build_report, figures
from ..report.images import display_image, infer_layout, to_hwc
from ..report.page import TOLERANCE
from .folder import file_name
from .inputs import load_item
from .job import CHECKS, BatchJob, column_names

TABLE_LIMIT = 1000  # rows shown in the page's table (results.parquet has them all)
ERRORS_LISTED = 20  # failed inputs listed in the headline
LEANS = 0.5  # a bias share above this: the output owes more to c_x than to the votes


def write_page(folder, spec, items, reports: int) -> str:
    """Write OUT/index.html for the rows of `folder` (a BatchFolder) made with `spec` (the
    JobSpec), with vote maps and per-input reports of the `reports` most and `reports` least
    bias-reliant inputs among `items` (this run's inputs); returns the page's path."""
    figures.require_matplotlib()
    rows = sorted(folder.rows.values(), key=lambda r: r["path"])
    ok = [r for r in rows if r.get("error") is None]
    columns = column_names(spec.targets)
    shares = {t: _finite(r.get(names[4]) for r in ok) for t, names in columns.items()}
    files: dict[str, bytes] = {}
    sections = [("Summary", _headline(rows, ok, shares, spec))]
    if ok:
        sections.append(("Bias share over the dataset", _share_section(files, shares)))
        sections.append(("Exactness over the dataset", _error_section(files, ok)))
    by_key = {item.key: item for item in items}
    shown = _extremes([r for r in ok if r["path"] in by_key], columns[spec.targets[0]][4], reports)
    links: dict[str, str] = {}
    if shown:
        shown = [(r, by_key[r["path"]], which) for r, which in shown]
        body = _shown_section(folder, spec, shown, files, links)
        sections.append(("The most and least bias-reliant inputs", body))
    sections.append(("Every input", _table(rows, columns, links)))
    body = "".join(f"<h2>{html.escape(t)}</h2>\n{b}\n" for t, b in sections)
    files["index.html"] = PAGE.format(model=html.escape(spec.model), body=body).encode("utf-8")
    folder.publish(files)
    return folder.path("index.html")


# -- the headline and the dataset figures ---------------------------------------------------------


def _headline(rows, ok, shares, spec) -> str:
    failed = [r for r in rows if r.get("error") is not None]
    parts = [f"<p><b>{len(rows)} inputs</b>: {len(ok)} interpreted, {len(failed)} failed.</p>"]
    if failed:
        listed = "".join(
            f"<li><code>{_esc(r['path'])}</code>: {_esc(r['error'])}</li>"
            for r in failed[:ERRORS_LISTED]
        )
        more = len(failed) - ERRORS_LISTED
        listed += f"<li>… and {more} more (in the table below)</li>" if more > 0 else ""
        parts.append(f"<ul class=failed>{listed}</ul>")
    verified = [r.get("verified") for r in ok if r.get("verified") is not None]
    if verified:
        exact = sum(verified)
        missed = len(verified) - exact
        missed = f"; <b class=fail>{missed} did not</b>" if missed else ""
        parts.append(
            f"<p>Exactness: <b>{exact} of {len(verified)}</b> verified exact (reconstruction "
            f"F(x) = A_x x + c_x, linearity and adjoint each within max({TOLERANCE:g}, its noise "
            f"floor)){missed}.</p>"
        )
    elif ok:
        parts.append("<p>Exactness was not checked in this run (verify off).</p>")
    for target, values in shares.items():
        if values:
            parts.append(f"<p>{_bias_sentence(target, values, len(shares) > 1)}</p>")
    return "\n".join(parts)


def _bias_sentence(target, values: list[float], named: bool) -> str:
    """'The model leans on its bias (bias share > 0.5) for 37 of 100 inputs; ...'."""
    leans = sum(v > LEANS for v in values)
    which = f" for target <code>{_esc(target)}</code>" if named else ""
    what = "its prediction" if target == "top" else "the output read"
    return (
        f"Bias{which}: the model leans on its bias (bias share |c_x| / (|Σ votes| + |c_x|) > "
        f"{LEANS:g}) for <b>{leans} of {len(values)}</b> inputs; the median bias share is "
        f"<b>{np.median(values):.3f}</b> (0: {what} is all votes of the pixels, 1: all bias)."
    )


def _share_section(files, shares) -> str:
    fig = figures.Figure(figsize=(4.2 * len(shares) + 0.5, 3.2), layout="constrained")
    axes = fig.subplots(1, len(shares), squeeze=False).flat
    for ax, (target, values) in zip(axes, shares.items()):
        ax.hist(values, bins=np.linspace(0, 1, 21), color="tab:orange", ec="white")
        ax.axvline(LEANS, color="black", ls="--", lw=1, label=f"share = {LEANS:g}")
        if values:
            median = float(np.median(values))
            ax.axvline(median, color="tab:blue", lw=1.5, label=f"median {median:.3f}")
        ax.set_xlim(0, 1)
        ax.set_xlabel("bias share |c_x| / (|Σ votes| + |c_x|)")
        _count_axis(ax)
        ax.set_title(f"target {target}: {len(values)} inputs", fontsize=10)
        ax.legend(fontsize=8)
    caption = "Near 0 the output is made by the pixels' votes; near 1 by the bias c_x alone."
    return _figure(files, "bias_share.png", fig, caption)


def _error_section(files, ok) -> str:
    found = {c: _finite(r.get(c) for r in ok) for c in CHECKS}
    nonzero = [v for values in found.values() for v in values if v > 0]
    if not any(found.values()):
        return "<p>No exactness errors were measured in this run.</p>"
    low = math.floor(math.log10(min(nonzero + [TOLERANCE]))) - 1  # where exact zeros are shown
    high = math.ceil(math.log10(max(nonzero + [TOLERANCE]))) + 0.5
    bins = np.linspace(low - 0.25, high, 41)
    fig = figures.Figure(figsize=(7.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for check, values in found.items():
        if values:
            zeros = sum(v == 0 for v in values)
            note = f", {zeros} exactly 0 (at 1e{low})" if zeros else ""
            logs = np.log10(np.maximum(values, 10.0**low))
            ax.hist(logs, bins, histtype="step", lw=1.6, label=f"{check} ({len(values)}{note})")
    ax.axvline(math.log10(TOLERANCE), color="black", ls="--", label=f"tolerance {TOLERANCE:g}")
    ax.set_xlabel("log10 of the relative error")
    _count_axis(ax)
    ax.set_title("The exactness errors of every interpreted input", fontsize=10)
    ax.legend(fontsize=8)
    caption = (
        "Relative errors of F(x) = A_x x + c_x (reconstruction), of A_x's linearity and of "
        "⟨A z, w⟩ = ⟨z, A_xᵀ w⟩ (adjoint); an input verifies when each is within max(1e-5, "
        "its float noise floor)."
    )
    return _figure(files, "exactness.png", fig, caption)


# -- the inputs shown: vote maps and per-input reports ------------------------------------------


def _extremes(rows, share: str, count: int) -> list[tuple[dict, str]]:
    """(row, 'most' | 'least'): the `count` rows of largest `share`, largest first, then the
    `count` of smallest, smallest first (each row once)."""
    ranked = sorted((r for r in rows if _finite([r.get(share)])), key=lambda r: -r[share])
    most = ranked[: max(count, 0)]
    least = [r for r in ranked[::-1][: max(count, 0)] if r not in most]
    return [(r, "most") for r in most] + [(r, "least") for r in least]


def _shown_section(folder, spec, shown, files, links) -> str:
    """The vote maps of the shown (row, item, which) and their reports (under reports/)."""
    job = BatchJob(dataclasses.replace(spec, save_votes=True, verify=False))
    dims, dtype = job.scope._input_specs[job.scope.wrt]
    missing = [item for row, item, _ in shown if not row.get("votes_file")]
    recomputed = {r["path"]: r.get("votes") for r in job(missing)} if missing else {}
    layout = (spec.conventions.get("layout") or infer_layout(dims)).upper()
    color = spec.conventions.get("color") if spec.conventions.get("color") == "bgr" else "rgb"
    columns = column_names(spec.targets)
    parts = []
    for row, item, which in shown:
        name = file_name(row["path"])
        share = row[columns[spec.targets[0]][4]]
        body = f"<h3>{_esc(row['path'])}: bias share {share:.3f} ({which} bias-reliant)</h3>"
        try:  # read again: a row of an earlier run may have lost its file since
            x, _ = load_item(item, dims, dtype, spec.conventions, spec.resize)
        except (OnnxscopeError, OSError, ValueError) as exc:
            parts.append(f"{body}<p class=fail>Could not read it again: {_esc(exc)}</p>")
            continue
        maps = _votes(folder, row, recomputed)
        if maps is not None and x.ndim == 4:
            fig = _vote_figure(x, maps, row, spec, layout, color)
            caption = f"Votes of {row['path']}: red pixels vote for the class, blue against."
            body += _figure(files, f"votes_{name}.png", fig, caption)
        link = _report(spec, row, item, dims, name, files)
        links[row["path"]] = link
        body += f"<p>{link}</p>"
        parts.append(body)
    return "\n".join(parts)


def _votes(folder, row, recomputed) -> np.ndarray | None:
    """The row's vote maps [targets, *x without batch]: saved in votes/, or recomputed."""
    if row.get("votes_file"):
        return np.load(folder.path(row["votes_file"]), allow_pickle=False)
    return recomputed.get(row["path"])


def _vote_figure(x, maps, row, spec, layout, color):
    picture = display_image(x, layout, color)
    panels, titles, how = [], [], ""
    for target, names, votes in zip(spec.targets, column_names(spec.targets).values(), maps):
        (summed,), _, how = figures.channel_maps(to_hwc(votes, layout).transpose(2, 0, 1), False)
        panels.append(summed)
        k = row[names[0]]
        titles.append(f"{target}: {_label(spec, k)}, share {row[names[4]]:.3f}")
    return figures.vote_maps(picture, panels, titles, how)


def _report(spec, row, item, dims, name, files) -> str:
    """Build the input's report into files (under reports/NAME/); the link to it, as HTML."""
    classes = [row[names[0]] for names in column_names(spec.targets).values()]
    image = item.source
    if item.row is not None:  # a row of a .npy stack, as load_item reads it
        image = np.asarray(np.load(item.source, mmap_mode="r", allow_pickle=False)[item.row])
        image = image[None] if image.ndim == len(dims) - 1 else image
    options = {
        **spec.conventions,
        "wrt": spec.wrt,
        "outputs": [spec.output] if spec.output else None,
        "classes": list(dict.fromkeys(int(k) for k in classes if k is not None)) or None,
        "labels": list(spec.labels) if spec.labels else None,
        "device": spec.device,
        "logits": spec.logits,
        "mode": spec.mode,
        "progress": False,
    }
    try:
        report = build_report(spec.model, image, **options)
    except OnnxscopeError as exc:
        return f"<span class=fail>no report: {_esc(exc)}</span>"
    for file, data in report.items():
        files[f"reports/{name}/{file}"] = data
    return f"<a href='reports/{_esc(name)}/index.html'>report</a>"


# -- the table and the pieces -------------------------------------------------------------------


def _table(rows, columns, links) -> str:
    shares = [(t, names[4]) for t, names in columns.items()]
    head = ["input", "prediction"] + [f"bias share {t}" for t, _ in shares]
    if len(shares) == 1:
        head[2] = "bias share"
    head += [*CHECKS, "verified", "report", "error"]
    cells = []
    for r in rows[:TABLE_LIMIT]:
        prediction = r.get("prediction")
        if prediction is not None and r.get("label") is not None:
            prediction = f"{prediction} ({r['label']})"
        values = [r["path"], prediction] + [r.get(c) for _, c in shares]
        values += [r.get(c) for c in CHECKS]
        verified = {True: "<td class=pass>yes", False: "<td class=fail>NO"}
        line = "".join(f"<td>{_esc(_fmt(v))}</td>" for v in values)
        line += f"{verified.get(r.get('verified'), '<td>')}</td>"
        line += f"<td>{links.get(r['path'], '')}</td>"
        line += f"<td class=fail>{_esc(r.get('error') or '')}</td>"
        cells.append(f"<tr>{line}</tr>")
    note = ""
    if len(rows) > TABLE_LIMIT:
        note = f"<p>The first {TABLE_LIMIT} of {len(rows)} rows; results.parquet has them all.</p>"
    header = "".join(f"<th>{_esc(h)}</th>" for h in head)
    return f"{note}<table id=rows><tr>{header}</tr>{''.join(cells)}</table>"


def _figure(files, name: str, fig, caption: str) -> str:
    """The figure as a PNG file beside the page (into files) and as an embedded <figure>."""
    files[name] = figures.to_png(fig)
    data = base64.b64encode(files[name]).decode("ascii")
    return (
        f"<figure><img src='data:image/png;base64,{data}' alt='{_esc(name)}'>"
        f"<figcaption>{_esc(caption)} ({_esc(name)})</figcaption></figure>"
    )


def _count_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_ylabel("inputs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _label(spec, k) -> str:
    if spec.labels and k is not None and 0 <= k < len(spec.labels):
        return f"{spec.labels[k]} ({k})"
    return f"class {k}"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3e}" if value and abs(value) < 1e-2 else f"{value:.4g}"
    return "" if value is None else str(value)


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


PAGE = """<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>onnxscope batch</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 90%; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
.pass {{ color: #060; }} .fail {{ color: #b00; }}
img {{ max-width: 100%; }} figcaption {{ font-size: 90%; color: #444; }}
</style></head><body>
<h1>onnxscope batch: <code>{model}</code></h1>
{body}
</body></html>
"""
