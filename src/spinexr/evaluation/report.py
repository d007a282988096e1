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
from spinexr.evaluation.metrics import PER_CLASS, PER_CLASS_NAMES, ece, reliability
from spinexr.evaluation.results import ModelResult, RunResult

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
    a.set_ylabel("films")
    a.set_title(f"Films per class ({sum(vals)} in all)")
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
        axes[k, 0].set_title(f"{c} ({len(idx)} films)", loc="left", fontsize=10)
    fig.suptitle(f"Up to {per_class} films per class, as the model sees them")
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
    n = sum(1 for h in histories if h)
    a.set_title(f"{title}: loss, {n} run(s) (solid train, dashed validation)", fontsize=9)
    b.set_title(f"{title}: accuracy (solid train, dashed validation)", fontsize=9)
    a.set_ylabel("cross-entropy")
    b.set_ylabel("accuracy")
    a.set_xlabel("epoch")
    b.set_xlabel("epoch")
    if a.get_legend_handles_labels()[0]:
        a.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def confusion_figure(cm: list[list[int]], title: str) -> Any:
    """Counts and row-normalised confusion matrices side by side, full class names on both axes."""
    plt = _plt()
    cm_a = np.asarray(cm, dtype=float)
    norm = cm_a / np.maximum(cm_a.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    n = int(cm_a.sum())
    for ax, mat, fmt, t in ((axes[0], cm_a, "{:.0f}", "counts"), (axes[1], norm, "{:.2f}", "share of each true class")):
        ax.imshow(mat, cmap="Blues", vmin=0)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center",
                        color="white" if mat[i, j] > mat.max() / 2 else "black")
        ax.set_xticks(range(len(CLASSES)), list(CLASSES), rotation=15)
        ax.set_yticks(range(len(CLASSES)), list(CLASSES))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{title}: {t} ({n} films)")
    fig.tight_layout()
    return fig


def plot_confusion(cm: list[list[int]], path: Path, title: str) -> Path:
    return _save(confusion_figure(cm, title), path)


def plot_roc(y: np.ndarray, probs: np.ndarray, path: Path, title: str) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for k, c in enumerate(CLASSES):
        pos = y == k
        if 0 < pos.sum() < len(y):
            fpr, tpr, _ = roc_curve(pos, probs[:, k])
            ax.plot(fpr, tpr, color=COLORS[k],
                    label=f"{c}: AUC {roc_auc_score(pos, probs[:, k]):.3f} ({int(pos.sum())} vs {int((~pos).sum())} films)")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(f"{title}: one-vs-rest ROC, {len(y)} films")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


MIN_BIN = 5  # reliability bins with fewer films than this are drawn hollow and called out


def plot_reliability(y: np.ndarray, probs_by_model: dict[str, np.ndarray], path: Path) -> Path:
    """Reliability curves (marker area by films per bin, hollow under MIN_BIN films), the films per bin,
    and the histogram of top-class confidence."""
    plt = _plt()
    fig, (ax, axn, axh) = plt.subplots(3, 1, figsize=(6, 9), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1, 1.2]})
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    n_models = max(1, len(probs_by_model))
    width = 0.1 / (n_models + 1)
    sparse_any = False
    for i, (m, p) in enumerate(probs_by_model.items()):
        col = COLORS[i % len(COLORS)]
        r = reliability(p, y, bins=10)
        conf, acc, cnt = np.array(r["confidence"]), np.array(r["accuracy"]), np.array(r["count"])
        ok = ~np.isnan(conf)
        ax.plot(conf[ok], acc[ok], "-", color=col, lw=1.2, label=f"{m} (ECE {ece(p, y):.3f})")
        size = 20 + 200 * cnt / max(1.0, cnt.max())
        full, sparse = ok & (cnt >= MIN_BIN), ok & (cnt < MIN_BIN)
        sparse_any |= bool(sparse.any())
        ax.scatter(conf[full], acc[full], s=size[full], color=col, zorder=3)
        ax.scatter(conf[sparse], acc[sparse], s=size[sparse], facecolors="white", edgecolors=col, zorder=3)
        centres = (np.array(r["bin_lower"]) + np.array(r["bin_upper"])) / 2 + (i - (n_models - 1) / 2) * width
        axn.bar(centres, cnt, width=width, color=col)
        axh.hist(p.max(axis=1), bins=20, range=(0, 1), histtype="step", color=col, lw=1.5, label=m)
    if sparse_any:
        ax.scatter([], [], s=40, facecolors="white", edgecolors="gray", label=f"bin with < {MIN_BIN} films")
    ax.set_ylabel("accuracy in the bin")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"Reliability (temperature-scaled), {len(y)} films; marker area = films in the bin", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    axn.axhline(MIN_BIN, color="gray", ls=":", lw=1)
    axn.set_ylabel("films per bin")
    axh.set_ylabel("films")
    axh.set_xlabel("confidence (probability of the top class)")
    axh.set_title("Top-class confidence", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(alt)}</figcaption></figure>')


def _fmt_ms(s: dict[str, float] | None, pct: bool = True) -> str:
    if not s:
        return "n/a"
    return f"{s['mean'] * 100:.1f} ± {s['std'] * 100:.1f}" if pct else f"{s['mean']:.3f} ± {s['std']:.3f}"


def _fmt_ci(ci: list[float] | None, pct: bool = True) -> str:
    if not ci:
        return "n/a"
    return f"[{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if pct else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _n_folds(r: dict[str, Any]) -> int:
    return r.n_folds


def _fmt_point(r: dict[str, Any], key: str, pct: bool = True) -> str:
    """Mean ± sd over folds, or the one value of a single split (a sd over one fold means nothing)."""
    if _n_folds(r) > 1:
        return _fmt_ms(r.summary.get(key), pct)
    v = r.pooled.get(key)
    if v is None:
        return "n/a"
    return f"{v * 100:.1f}" if pct else f"{v:.3f}"


def comparison_rows(run: RunResult) -> list[list[str]]:
    rows = []
    for m, r in run.models.items():
        ci, p = r.ci95, r.pooled
        rows.append([m, _fmt_point(r, "accuracy"), _fmt_ci(ci.get("accuracy")),
                     _fmt_point(r, "macro_f1", False), _fmt_ci(ci.get("macro_f1"), False),
                     _fmt_point(r, "auc_macro", False), _fmt_ci(ci.get("auc_macro"), False),
                     f"{p['ece']:.3f}", _fmt_ci(ci.get("ece"), False)])
    return rows


def comparison_header(run: RunResult) -> list[str]:
    """The model table's header: 'mean ± sd over k folds', or 'one split of N films'."""
    models = list(run.models.values())
    k = max((_n_folds(r) for r in models), default=0)
    how = f"mean ± sd over {k} folds" if k > 1 else f"one split of {models[0].pooled['n'] if models else 0} films"
    return ["model", f"accuracy % ({how})", "95% CI (pooled)", "macro-F1", "95% CI",
            "ROC-AUC (macro)", "95% CI", "ECE", "95% CI"]


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def per_class_table(r: ModelResult) -> tuple[list[str], list[list[tuple[str, str, float | None]]]]:
    """The per-class table of one model: header, then per class a list of (text, metric, value) cells.

    Each rate shows its pooled value and 95% bootstrap CI; with several folds, its mean ± sd over folds
    follows. ``value`` is the number from metrics.json the cell shows (None where undefined).
    """
    cv = _n_folds(r) > 1
    header = ["class", "support"] + [PER_CLASS_NAMES[m] for m in PER_CLASS]
    rows = []
    for c, pc in r.pooled["per_class"].items():
        cis = (r.ci95.get("per_class") or {}).get(c, {})
        cells: list[tuple[str, str, float | None]] = [(c, "class", None), (str(pc["support"]), "support", pc["support"])]
        for m in PER_CLASS:
            v = pc.get(m)
            text = _num(v) + (f" {_fmt_ci(cis.get(m), False)}" if cis.get(m) else "")
            fs = r.summary.get(f"{m}_{c}")
            if cv and fs:
                text += f"; folds {fs['mean']:.3f} ± {fs['std']:.3f}"
            cells.append((text, m, v))
        rows.append(cells)
    return header, rows


def _per_class_html(model: str, r: ModelResult) -> str:
    header, rows = per_class_table(r)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = ""
    for cells in rows:
        tds = []
        for text, metric, v in cells:
            attr = f' data-metric="{metric}"' + ("" if v is None else f' data-value="{float(v)!r}"')
            tds.append(f"<td{attr}>{html.escape(text)}</td>")
        body += "<tr>" + "".join(tds) + "</tr>"
    return (f'<table class="per-class" data-model="{html.escape(model)}"><caption>{html.escape(model)}: '
            f'{r.pooled["n"]} films</caption><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>')


def _per_class_md(model: str, r: ModelResult) -> str:
    header, rows = per_class_table(r)
    return f"### {model} ({r.pooled['n']} films)\n\n" + _md_table(header, [[t for t, _, _ in cells] for cells in rows])


def headline(run: RunResult) -> dict[str, Any] | None:
    """The report's first screen: how accurate, which class is missed most, and the shortcut baseline.

    The ensemble speaks when there is one, else the model with the best pooled accuracy.
    """
    models = run.models
    if not models:
        return None
    name = "ensemble" if "ensemble" in models else max(models, key=lambda m: models[m].pooled["accuracy"])
    r = models[name]
    ext = run.external
    if ext and not ext["complete"] and ext["per_class"]:  # an external set without every class: sensitivity speaks
        worst = min(ext["per_class"], key=lambda c: ext["per_class"][c]["sensitivity"])
        v = ext["per_class"][worst]
        return {"model": name, "n": ext["n"], "accuracy": None, "accuracy_ci": None, "worst_class": worst,
                "worst_recall": v["sensitivity"], "worst_recall_ci": v["sensitivity_ci95"], "worst_support": v["n"],
                "shortcut": None, "beats_shortcut": None, "classes_present": ext["classes_present"]}
    pc = {c: v for c, v in r.pooled["per_class"].items() if v["support"] > 0}
    worst = min(pc, key=lambda c: pc[c]["recall"]) if pc else None
    ci = r.ci95
    sc = run.data.shortcut.get("accuracy")
    acc_lo = (ci.get("accuracy") or [None])[0]
    return {"model": name, "n": r.pooled["n"], "accuracy": r.pooled["accuracy"], "accuracy_ci": ci.get("accuracy"),
            "worst_class": worst, "worst_recall": pc[worst]["recall"] if worst else None,
            "worst_recall_ci": (ci.get("per_class") or {}).get(worst, {}).get("recall") if worst else None,
            "worst_support": pc[worst]["support"] if worst else 0,
            "shortcut": sc, "beats_shortcut": None if sc is None or acc_lo is None else bool(acc_lo > sc)}


def _headline_lines(h: dict[str, Any]) -> list[str]:
    if h["accuracy"] is None:
        return [f"These {h['n']} films hold only {', '.join(h['classes_present'])}: accuracy, macro-F1 and AUC "
                "are not defined here, sensitivity is.",
                f"Lowest sensitivity: {h['worst_class']}, {h['worst_recall']:.1%} of {h['worst_support']} films "
                f"(95% CI {_fmt_ci(h['worst_recall_ci'])} %)."]
    lines = [f"How accurate: {h['model']} is right on {h['accuracy']:.1%} of {h['n']} films "
             f"(95% CI {_fmt_ci(h['accuracy_ci'])} %)."]
    if h["worst_class"]:
        lines.append(f"Missed most: {h['worst_class']}, recall {h['worst_recall']:.1%} of {h['worst_support']} films "
                     f"(95% CI {_fmt_ci(h['worst_recall_ci'])} %).")
    if h["shortcut"] is not None:
        verdict = ("yes: the lower end of the accuracy CI is above it" if h["beats_shortcut"]
                   else "not clearly: the accuracy CI reaches down to it or below")
        lines.append(f"Beats the size/aspect shortcut ({h['shortcut']:.1%})? {verdict}.")
    return lines


def external_tables(ext: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of an external evaluation: sensitivity and confusion rows per present
    class, then, with true angles, the share called Scoliosis per Cobb band."""
    out = []
    rows = [[c, str(v["n"]), *[str(v["called"][k]) for k in v["called"]], f"{v['sensitivity']:.1%}",
             _fmt_ci(v["sensitivity_ci95"])] for c, v in ext["per_class"].items()]
    called = list(next(iter(ext["per_class"].values()))["called"]) if ext["per_class"] else []
    out.append(("Sensitivity of each class present (rows: true class; Wilson 95% CI)",
                ["true class", "films", *[f"called {k}" for k in called], "sensitivity", "95% CI %"], rows))
    ang = ext.get("angles") or {}
    if ang.get("by_band"):
        brows = [[b["band"], b["range"], str(b["n"]), "n/a" if b["called_scoliosis"] is None else f"{b['called_scoliosis']:.1%}",
                  _fmt_ci(b["ci95"])] for b in ang["by_band"]]
        out.append(("Called Scoliosis by true largest Cobb angle", ["band", "range", "films", "called Scoliosis",
                                                                    "95% CI %"], brows))
    return out


def external_lines(ext: dict[str, Any]) -> list[str]:
    """The external evaluation's sentences: AUCs, correlation with the curve, and what was not measured."""
    lines = []
    if ext.get("auc"):
        lines.append("One-vs-rest ROC-AUC among the classes present: "
                     + ", ".join(f"{c} {v:.3f}" for c, v in ext["auc"].items() if v == v) + ".")
    ang = ext.get("angles") or {}
    for key, what in (("spearman_p_scoliosis", "P(Scoliosis)"), ("spearman_measured_angle", "the measured largest angle")):
        s = ang.get(key)
        if s:
            ci = s["ci95"]
            lines.append(f"Spearman correlation of {what} with the true largest Cobb angle: {s['rho']:.2f}"
                         + (f" (95% CI {ci[0]:.2f} to {ci[1]:.2f})" if ci else "") + f", {s['n']} films.")
    if ang.get("auc_lt10_vs_ge25") is not None:
        lines.append(f"Telling films under 10° from films of 25° or more by P(Scoliosis): AUC {ang['auc_lt10_vs_ge25']:.3f}.")
    if ang.get("mae_measured_largest") is not None:
        lines.append(f"Measured largest angle against the truth: mean absolute error {ang['mae_measured_largest']:.1f}°.")
    if "n_with_angle" in ang and ang["n_with_angle"] < ext["n"]:
        lines.append(f"{ext['n'] - ang['n_with_angle']} film(s) have no true angle and count only in the class rows.")
    dec = ext.get("with_decision")
    if dec:
        parts = [f"{c} {v['sensitivity']:.1%}" for c, v in dec["per_class"].items()]
        ge = (dec.get("angles") or {}).get("called_scoliosis_ge25")
        lines.append("With the landmark model, the decision (the label answering to the measured curve, as predict "
                     f"returns it): accuracy {dec['accuracy']:.1%}; sensitivity " + ", ".join(parts)
                     + (f"; films of 25° or more called Scoliosis: {ge:.1%}" if ge is not None else "") + ".")
    lines += [f"Not measured: {t}." for t in ext.get("not_measured", [])]
    return lines


FRAMING_HEADER = ["model", "Scoliosis AP films cut to strips", "changed", "of which to Normal",
                  "Normal strips padded to full width", "changed", "of which to Scoliosis"]


def framing_rows(run: RunResult) -> list[list[str]]:
    """One row per model with a framing stress test: how often reframing changed the prediction (and
    a second row for the decision that answers to the measured curve, where the run has one)."""
    rows = []
    for m, r in run.models.items():
        for name, f in ((m, r.framing), (f"{m} + measured curve", (r.decision or {}).get("framing"))):
            if not f:
                continue
            a, b = f["scoliosis_ap_to_strip"], f["normal_strip_to_full"]
            rows.append([name, str(a["n"]), "n/a" if a["rate"] is None else f"{a['rate']:.1%}",
                         str(a["to"].get("Normal", 0)), str(b["n"]), "n/a" if b["rate"] is None else f"{b['rate']:.1%}",
                         str(b["to"].get("Scoliosis", 0))])
    return rows


DECISION_HEADER = ["model", "accuracy % (classifier)", "accuracy % (with the measured curve)", "decisions changed",
                   "to right", "to wrong", "curve line per fold (°)", "films judged full-spine AP (N / S / Sp)"]


def decision_rows(run: RunResult) -> list[list[str]]:
    """One row per model scored with the decision (``cv --landmarks``): fold-mean accuracy of the
    classifier and of the decision on the same out-of-fold calls, what changed, the lines used."""
    rows = []
    for m, r in run.models.items():
        d = r.decision
        if not d:
            continue
        v = d.get("view_full_spine_rate") or {}
        views = " / ".join(f"{v[c]:.0%}" if c in v else "n/a" for c in CLASSES)
        rows.append([m, f"{d['accuracy_mean'] * 100:.1f}", f"{d['accuracy_with_rule_mean'] * 100:.1f}",
                     str(d["changed"]), str(d["changed_to_right"]), str(d["changed_to_wrong"]),
                     ", ".join(f"{c:g}" for c in d["curve_deg"]), views])
    return rows


DECISION_TEXT = ("What predict and serve run with a landmark model: on a film the landmark model measures as a "
                 "full-spine AP spine, a measured largest Cobb angle at or above the curve line overrules a Normal "
                 "or Spondylolisthesis call (Scoliosis). Every film was measured once by the landmark model, which "
                 "did not train on these films; each fold's curve line (the smallest angle at most 2% of the "
                 "training side's Normal films reach) and view check (fitted on the training side's films: "
                 "Spondylolisthesis films as lumbar views) come from that fold's training side only. Accuracy is "
                 "the mean over folds, on the same out-of-fold classifier calls.")


FRAMING_TEXT = ("KAUH's classes differ in framing (Normal films are narrow strips, most Scoliosis films full AP "
                "views). Each fold's held-out Scoliosis films that are full AP views (height at most 3x the width) "
                "are cut to a strip 1/4 as wide as tall around the spine, and its Normal strips are widened "
                "to full-film proportions (height 2.5x the width) by mirroring their own edges outwards; the spine "
                "stays in the frame, only the framing "
                "changes. A model that reads the spine changes few answers. A '+ measured curve' row runs the same "
                "films through the decision that answers to the curve (cv --landmarks): each cut or widened film is "
                "measured again, as predict would measure it.")


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
caption{text-align:left;font-weight:600;padding:.2em 0}
.glance{background:#eef5ff;border-left:4px solid #4C72B0;padding:.5em 1em}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}"""


def _figures(out: Path, run: RunResult, data: Any, histories: dict[str, list[list[dict[str, float]]]],
             probs: dict[str, np.ndarray], y: np.ndarray) -> tuple[list[tuple[str, Path]], list[list[Any]]]:
    """The report's plots (written under ``out/plots``) with their captions, and the faithfulness table's rows."""
    plots = out / "plots"
    y_all = data.labels
    n_eval = len(y)
    figs: list[tuple[str, Path]] = []
    d = run.data
    figs.append((f"Films per class in the data ({d.n_images} films)",
                 plot_class_distribution(d.counts, plots / "class_distribution.png")))
    size = min(data.tensors)
    figs.append(("Sample films per class, letterboxed as the model sees them",
                 plot_samples(data.tensors[size], y_all, plots / "samples.png")))
    for m, hs in histories.items():
        safe = m.replace(" ", "_").replace("(", "").replace(")", "")
        figs.append((f"Training curves of {m}: loss and accuracy per epoch, {len(hs)} run(s)",
                     plot_curves(hs, plots / f"curves_{safe}.png", m)))
    ext = run.external
    partial = bool(ext) and not ext["complete"]
    for m, p in probs.items():
        cm = run.models[m].pooled["confusion"]
        figs.append((f"Confusion matrix of {m} on {n_eval} films (rows: true class, columns: predicted)",
                     plot_confusion(cm, plots / f"confusion_{m}.png", m)))
        if not partial:  # a ROC curve needs films of both sides
            figs.append((f"One-vs-rest ROC curves of {m} on {n_eval} films",
                         plot_roc(y, p, plots / f"roc_{m}.png", m)))
    if probs:
        figs.append((f"Reliability on {n_eval} films: accuracy against confidence per bin (bins under {MIN_BIN} "
                     "films hollow), films per bin, and the histogram of top-class confidence",
                     plot_reliability(y, probs, plots / "reliability.png")))
    faith_rows = []
    for m, r in run.models.items():
        ex = r.explanations or {}
        if ex.get("gallery"):
            figs.append((f"Grad-CAM gallery of {m}: correct and misclassified held-out films of fold 0",
                         out / ex["gallery"]))
        f = ex.get("faithfulness")
        if f:
            road = [f"{f['road']:.3f}", f"{f['random_road']:.3f}", f"{f['road_wins']:.0%}"] if "road" in f else ["", "", ""]
            n = f"{f['n']}" + (f" ({f['constant_maps']} blank: feature map too coarse)" if f.get("constant_maps") else "")
            faith_rows.append([m, f["method"], *road, f"{f['deletion_auc']:.3f}", f"{f['random_deletion_auc']:.3f}", n])

    return figs, faith_rows


def _html_sections(run: RunResult, title: str, faith_rows: list[list[Any]]) -> tuple[list[str], dict[str, Any]]:
    """The report's HTML sections, and the tables the Markdown summary repeats."""
    d, ext = run.data, run.external
    partial = bool(ext) and not ext["complete"]
    sc = d.shortcut
    head = headline(run)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if head:
        parts.append('<div class="glance"><h2>At a glance</h2><ul>'
                     + "".join(f"<li>{html.escape(line)}</li>" for line in _headline_lines(head)) + "</ul></div>")
    parts.append(f"<p>Data: <code>{html.escape(d.source)}</code> — {d.n_images} images "
                 f"({', '.join(f'{k} {v}' for k, v in d.counts.items())}), {d.n_groups} groups, "
                 f"{d.near_duplicate_pairs} near-duplicate pair(s) kept within one fold.</p>")
    if d.skipped:
        parts.append(f"<p class=warn>{len(d.skipped)} unreadable file(s) skipped: "
                     + html.escape("; ".join(f"{k}: {v}" for k, v in d.skipped.items())) + "</p>")
    if ext:
        parts.append("<h2>External evaluation</h2>" + "".join(
            _table(hd, rs).replace("<table>", f"<table><caption>{html.escape(cap)}</caption>", 1)
            for cap, hd, rs in external_tables(ext))
            + "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in external_lines(ext)) + "</ul>")
    rows = [] if partial else comparison_rows(run)
    header = comparison_header(run)
    single = all(_n_folds(r) <= 1 for r in run.models.values())
    how = ("The point values come from one split." if single else "Accuracy, macro-F1 and AUC are mean ± standard "
           "deviation over folds.")
    if rows:
        parts.append("<h2>Model comparison</h2>" + _table(header, rows))
        parts.append(f"<p>{how} CIs are 95% percentile bootstrap intervals on the pooled held-out predictions. "
                     "Probabilities are temperature-scaled on validation data carved from each training side.</p>")
        parts.append("<h2>Per class</h2><p>Each class against the rest: precision (PPV), recall (sensitivity), "
                     "specificity, NPV, F1 and ROC-AUC on the pooled held-out predictions, with 95% bootstrap CIs"
                     + ("" if single else ", then the mean ± sd over folds") + ". n/a: undefined on these films "
                     "(for example, no film of the class).</p>"
                     + "".join(_per_class_html(m, r) for m, r in run.models.items()))
    drows = decision_rows(run)
    if drows:
        parts.append("<h2>The decision that answers to the curve</h2><p>" + html.escape(DECISION_TEXT) + "</p>"
                     + _table(DECISION_HEADER, drows))
    frows = framing_rows(run)
    if frows:
        parts.append("<h2>Framing stress test</h2><p>" + html.escape(FRAMING_TEXT) + "</p>" + _table(FRAMING_HEADER, frows))
    if sc.get("accuracy") is not None:
        parts.append(f"<h2>Shortcut baseline</h2><p>A classifier that sees only image width, height and aspect "
                     f"scores <b>{sc['accuracy']:.1%}</b> ({sc.get('folds')}-fold CV) against a majority rate of "
                     f"{sc['majority_rate']:.1%}. Models are letterboxed, but a real model should beat this by a "
                     "wide margin, and be checked on data from another source.</p>")
    lk = run.leaky
    if lk:
        lrows = [[m, f"{v['accuracy'] * 100:.1f}", f"{v['macro_f1']:.3f}"] for m, v in lk.models.items()]
        parts.append(f"<h2>Leaky protocol (oversample, then split)</h2><p class=warn>{lk.test_leak_fraction:.0%} of "
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
    for m, r in run.models.items():
        if _n_folds(r) <= 1:
            continue
        for fi, fm in zip(r.folds, r.fold_metrics):
            per_fold.append([m, fi.repeat, fi.fold, f"{fm['accuracy'] * 100:.1f}", f"{fm['macro_f1']:.3f}",
                             fi.best_epoch, fi.epochs_run, f"{fi.temperature:.2f}"])
    if per_fold:
        parts.append("<h2>Per fold</h2>" + _table(["model", "repeat", "fold", "accuracy %", "macro-F1", "best epoch",
                                                     "epochs run", "temperature"], per_fold))
    return parts, {"head": head, "rows": rows, "header": header, "drows": drows, "frows": frows, "sc": sc, "lk": lk}


def _summary_md(run: RunResult, title: str, t: dict[str, Any]) -> str:
    d, ext = run.data, run.external
    head, rows, header, drows, frows, sc, lk = (t[k] for k in ("head", "rows", "header", "drows", "frows", "sc", "lk"))
    md = [f"# {title}", ""]
    if head:
        md += ["## At a glance", "", *[f"- {line}" for line in _headline_lines(head)], ""]
    md += [f"{d.n_images} images from `{d.source}`.", ""]
    if ext:
        md += ["## External evaluation", ""]
        for cap, hd, rs in external_tables(ext):
            md += [f"{cap}:", "", _md_table(hd, rs), ""]
        md += [f"- {line}" for line in external_lines(ext)] + [""]
    if rows:
        md += [_md_table(header, rows), "", "## Per class", ""]
        md += [_per_class_md(m, r) + "\n" for m, r in run.models.items()]
    if drows:
        md += ["## The decision that answers to the curve", "", DECISION_TEXT, "", _md_table(DECISION_HEADER, drows), ""]
    if frows:
        md += ["## Framing stress test", "", FRAMING_TEXT, "", _md_table(FRAMING_HEADER, frows), ""]
    if sc.get("accuracy") is not None:
        md.append(f"Shortcut baseline (size/aspect only): {sc['accuracy']:.1%} vs majority {sc['majority_rate']:.1%}.")
    if lk:
        md.append(f"Leaky protocol: {lk.test_leak_fraction:.0%} of test rows are training copies; "
                  + ", ".join(f"{m} {v['accuracy'] * 100:.1f}%" for m, v in lk.models.items()))
    return "\n".join(md) + "\n"


def write_report(out: Path, run: RunResult, data: Any, histories: dict[str, list[list[dict[str, float]]]],
                 pooled_probs: dict[str, np.ndarray], title: str = "spinexr cross-validation",
                 y_eval: np.ndarray | None = None) -> Path:
    """Write plots/, report.html and summary.md into ``out``; returns the report path.

    ``pooled_probs`` rows correspond to ``y_eval`` (default: every image of ``data``).
    """
    y = data.labels if y_eval is None else np.asarray(y_eval)
    probs = {m: np.asarray(p) for m, p in pooled_probs.items()}
    figs, faith_rows = _figures(out, run, data, histories, probs, y)
    parts, tables = _html_sections(run, title, faith_rows)
    parts.append("<h2>Plots</h2>" + "".join(_img_tag(p, t) for t, p in figs))
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    report = out / "report.html"
    report.write_text(page)
    (out / "summary.md").write_text(_summary_md(run, title, tables))
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
