"""The run report: PNG plots, a self-contained ``report.html`` (images inlined, opens offline) and
``summary.md``.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from spinexr import CLASSES

COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_class_distribution(counts: dict[str, int], path: Path) -> Path:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    names, vals = list(counts), list(counts.values())
    bars = a.bar(names, vals, color=COLORS[: len(names)])
    a.bar_label(bars)
    a.set_ylabel("images")
    a.set_title("Images per class")
    b.pie(vals, labels=names, autopct="%1.1f%%", colors=COLORS[: len(names)], startangle=90)
    b.set_title("Class share")
    return _save(fig, path)


def plot_samples(x_u8: Any, labels: np.ndarray, path: Path, per_class: int = 5, seed: int = 0) -> Path:
    """Letterboxed model inputs, a row per class (no filenames: they carry the diagnosis)."""
    plt = _plt()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(2.0 * per_class, 2.1 * len(CLASSES)))
    axes = np.atleast_2d(axes)
    for k, c in enumerate(CLASSES):
        idx = np.nonzero(labels == k)[0]
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[k, j]
            ax.axis("off")
            if j < len(pick):
                ax.imshow(np.asarray(x_u8[pick[j], 0]), cmap="gray", vmin=0, vmax=255)
        axes[k, 0].set_title(c, loc="left", fontsize=10)
    fig.suptitle("Sample images per class (as the model sees them)")
    return _save(fig, path)


def plot_curves(histories: list[list[dict[str, float]]], path: Path, title: str) -> Path:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, h in enumerate(histories):
        if not h:
            continue
        ep = [r["epoch"] + 1 for r in h]
        c = COLORS[i % len(COLORS)]
        a.plot(ep, [r["train_loss"] for r in h], color=c, alpha=0.9, label=f"fold {i} train")
        a.plot(ep, [r["val_loss"] for r in h], color=c, ls="--", alpha=0.9, label=f"fold {i} val")
        b.plot(ep, [r["train_acc"] for r in h], color=c, alpha=0.9)
        b.plot(ep, [r["val_acc"] for r in h], color=c, ls="--", alpha=0.9)
    a.set_title(f"{title}: loss (solid train, dashed validation)")
    b.set_title(f"{title}: accuracy")
    a.set_xlabel("epoch")
    b.set_xlabel("epoch")
    a.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_confusion(cm: list[list[int]], path: Path, title: str) -> Path:
    plt = _plt()
    cm_a = np.asarray(cm, dtype=float)
    norm = cm_a / np.maximum(cm_a.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    short = [c[:5] for c in CLASSES]
    for ax, mat, fmt, t in ((axes[0], cm_a, "{:.0f}", "counts"), (axes[1], norm, "{:.2f}", "row-normalised")):
        ax.imshow(mat, cmap="Blues", vmin=0)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center",
                        color="white" if mat[i, j] > mat.max() / 2 else "black")
        ax.set_xticks(range(len(CLASSES)), short)
        ax.set_yticks(range(len(CLASSES)), short)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: {t}")
    return _save(fig, path)


def plot_roc(y: np.ndarray, probs: np.ndarray, path: Path, title: str) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, c in enumerate(CLASSES):
        pos = y == k
        if 0 < pos.sum() < len(y):
            fpr, tpr, _ = roc_curve(pos, probs[:, k])
            ax.plot(fpr, tpr, color=COLORS[k], label=f"{c} (AUC {roc_auc_score(pos, probs[:, k]):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title}: one-vs-rest ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_reliability(y: np.ndarray, probs_by_model: dict[str, np.ndarray], path: Path) -> Path:
    from spinexr.metrics import ece, reliability

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    for i, (m, p) in enumerate(probs_by_model.items()):
        r = reliability(p, y, bins=10)
        conf, acc = np.array(r["confidence"]), np.array(r["accuracy"])
        ok = ~np.isnan(conf)
        ax.plot(conf[ok], acc[ok], "o-", color=COLORS[i % len(COLORS)], label=f"{m} (ECE {ece(p, y):.3f})")
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (temperature-scaled)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _fmt_ms(s: dict[str, float] | None, pct: bool = True) -> str:
    if not s:
        return "n/a"
    return f"{s['mean'] * 100:.1f} ± {s['std'] * 100:.1f}" if pct else f"{s['mean']:.3f} ± {s['std']:.3f}"


def _fmt_ci(ci: list[float] | None, pct: bool = True) -> str:
    if not ci:
        return "n/a"
    return f"[{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if pct else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def comparison_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m, r in results.get("models", {}).items():
        s, ci, p = r["summary"], r["ci95"], r["pooled"]
        rows.append([m, _fmt_ms(s.get("accuracy")), _fmt_ci(ci.get("accuracy")),
                     _fmt_ms(s.get("macro_f1"), False), _fmt_ci(ci.get("macro_f1"), False),
                     _fmt_ms(s.get("auc_macro"), False), _fmt_ci(ci.get("auc_macro"), False),
                     f"{p['ece']:.3f}", _fmt_ci(ci.get("ece"), False)])
    return rows


HEADER = ["model", "accuracy % (mean ± sd over folds)", "95% CI (pooled OOF)", "macro-F1", "95% CI",
          "ROC-AUC (macro)", "95% CI", "ECE", "95% CI"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}figure{display:inline-block;margin:.5em}img{max-width:100%}figcaption{font-size:.8em;color:#555}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}"""


def write_report(out: Path, results: dict[str, Any], data: Any, histories: dict[str, list[list[dict[str, float]]]],
                 pooled_probs: dict[str, list[list[float]]], title: str = "spinexr cross-validation",
                 y_eval: np.ndarray | None = None) -> Path:
    """Write plots/, report.html and summary.md into ``out``; returns the report path.

    ``pooled_probs`` rows correspond to ``y_eval`` (default: every image of ``data``).
    """
    plots = out / "plots"
    y_all = data.labels
    y = y_all if y_eval is None else np.asarray(y_eval)
    figs: list[tuple[str, Path]] = []
    figs.append(("Class distribution", plot_class_distribution(results["counts"], plots / "class_distribution.png")))
    size = min(data.tensors)
    figs.append(("Sample images", plot_samples(data.tensors[size], y_all, plots / "samples.png")))
    for m, hs in histories.items():
        safe = m.replace(" ", "_").replace("(", "").replace(")", "")
        figs.append((f"Training curves: {m}", plot_curves(hs, plots / f"curves_{safe}.png", m)))
    probs = {m: np.asarray(p) for m, p in pooled_probs.items()}
    for m, p in probs.items():
        cm = results["models"][m]["pooled"]["confusion"]
        figs.append((f"Confusion matrix: {m}", plot_confusion(cm, plots / f"confusion_{m}.png", m)))
        figs.append((f"ROC: {m}", plot_roc(y, p, plots / f"roc_{m}.png", m)))
    if probs:
        figs.append(("Reliability diagram", plot_reliability(y, probs, plots / "reliability.png")))
    faith_rows = []
    for m, r in results.get("models", {}).items():
        ex = r.get("explanations") or {}
        if ex.get("gallery"):
            figs.append((f"Grad-CAM gallery: {m}", out / ex["gallery"]))
        f = ex.get("faithfulness")
        if f:
            road = [f"{f['road']:.3f}", f"{f['random_road']:.3f}", f"{f['road_wins']:.0%}"] if "road" in f else ["", "", ""]
            n = f"{f['n']}" + (f" ({f['constant_maps']} blank: feature map too coarse)" if f.get("constant_maps") else "")
            faith_rows.append([m, f["method"], *road, f"{f['deletion_auc']:.3f}", f"{f['random_deletion_auc']:.3f}", n])

    sc = results.get("shortcut", {})
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Data: <code>{html.escape(str(results.get('source', '')))}</code> — {results['n_images']} images "
             f"({', '.join(f'{k} {v}' for k, v in results['counts'].items())}), {results.get('n_groups', '?')} groups, "
             f"{results.get('near_duplicate_pairs', 0)} near-duplicate pair(s) kept within one fold.</p>"]
    if results.get("skipped"):
        parts.append(f"<p class=warn>{len(results['skipped'])} unreadable file(s) skipped: "
                     + html.escape("; ".join(f"{k}: {v}" for k, v in results["skipped"].items())) + "</p>")
    rows = comparison_rows(results)
    if rows:
        parts.append("<h2>Model comparison</h2>" + _table(HEADER, rows))
        parts.append("<p>Accuracy is mean ± standard deviation over folds; CIs are 95% percentile bootstrap "
                     "intervals on the pooled out-of-fold predictions. Probabilities are temperature-scaled on "
                     "validation data carved from each training fold.</p>")
    if sc.get("accuracy") is not None:
        parts.append(f"<h2>Shortcut baseline</h2><p>A classifier that sees only image width, height and aspect "
                     f"scores <b>{sc['accuracy']:.1%}</b> ({sc.get('folds')}-fold CV) against a majority rate of "
                     f"{sc['majority_rate']:.1%}. Models are letterboxed, but a real model should beat this by a "
                     "wide margin, and be checked on data from another source.</p>")
    lk = results.get("leaky")
    if lk:
        lrows = [[m, f"{v['accuracy'] * 100:.1f}", f"{v['macro_f1']:.3f}"] for m, v in lk["models"].items()]
        parts.append(f"<h2>Leaky protocol (oversample, then split)</h2><p class=warn>{lk['test_leak_fraction']:.0%} of "
                     "the test rows are copies of training images under this protocol; its accuracy is inflated and is "
                     "not a measurement.</p>" + _table(["model", "leaky test accuracy %", "macro-F1"], lrows))
    if faith_rows:
        parts.append("<h2>Are the heatmaps faithful?</h2><p>Fold-0 test images, each map paired with a smooth "
                     "random map (noise on the CAM's own grid) for the same image and class. <b>ROAD</b> removes "
                     "pixels by noisy linear imputation from their neighbours, so the image stays a radiograph; its "
                     "score is the probability drop when the most relevant pixels go minus the drop when the least "
                     "relevant go (halved, averaged over 20/50/80% removed): higher is more faithful, about 0 is "
                     "chance. <b>Deletion AUC</b> blacks out the most salient pixels first and integrates the "
                     "probability: lower is more faithful, but black patches resemble letterbox padding, so read it "
                     "second. A map that does not beat its random partner says little about the model.</p>"
                     + _table(["model", "method", "ROAD", "random-map ROAD", "map beats random", "deletion AUC",
                               "random-map deletion AUC", "images"], faith_rows))
    per_fold = []
    for m, r in results.get("models", {}).items():
        for fi, fm in zip(r.get("folds", []), r.get("fold_metrics", [])):
            per_fold.append([m, fi["repeat"], fi["fold"], f"{fm['accuracy'] * 100:.1f}", f"{fm['macro_f1']:.3f}",
                             fi["best_epoch"], fi["epochs_run"], f"{fi['temperature']:.2f}"])
    if per_fold:
        parts.append("<h2>Per fold</h2>" + _table(["model", "repeat", "fold", "accuracy %", "macro-F1", "best epoch",
                                                     "epochs run", "temperature"], per_fold))
    parts.append("<h2>Plots</h2>" + "".join(_img_tag(p, t) for t, p in figs))
    page = f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    report = out / "report.html"
    report.write_text(page)
    md = [f"# {title}", "", f"{results['n_images']} images from `{results.get('source', '')}`.", ""]
    if rows:
        md += [_md_table(HEADER, rows), ""]
    if sc.get("accuracy") is not None:
        md.append(f"Shortcut baseline (size/aspect only): {sc['accuracy']:.1%} vs majority {sc['majority_rate']:.1%}.")
    if lk:
        md.append(f"Leaky protocol: {lk['test_leak_fraction']:.0%} of test rows are training copies; "
                  + ", ".join(f"{m} {v['accuracy'] * 100:.1f}%" for m, v in lk["models"].items()))
    (out / "summary.md").write_text("\n".join(md) + "\n")
    return report


def plot_gallery(items: list[tuple[np.ndarray, str]], path: Path, title: str, cols: int = 4) -> Path:
    """Overlays (RGB arrays) with captions in a grid."""
    plt = _plt()
    rows = max(1, int(np.ceil(len(items) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 4.2 * rows))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (img, cap) in zip(axes, items):
        ax.imshow(img)
        ax.set_title(cap, fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
