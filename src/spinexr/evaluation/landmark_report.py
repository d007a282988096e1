"""The landmark CV report: SMAPE and per-angle MAE with bootstrap CIs, predicted against true angles,
a Bland-Altman plot of the largest angle, the landmark error distribution, and the best and worst
films with their measurement drawn on them. Self-contained ``report.html`` plus ``summary.md``."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from spinexr.evaluation.report import CSS, _img_tag, _md_table, _plt, _save, _table, plot_gallery

ANGLES = ("pt", "mt", "tl")


def plot_scatter(true: np.ndarray, pred: np.ndarray, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    cols = [(true[:, j], pred[:, j], n.upper()) for j, n in enumerate(ANGLES)]
    cols.append((true.max(axis=1), pred.max(axis=1), "largest"))
    for ax, (t, p, name) in zip(axes, cols):
        hi = float(max(t.max(), p.max(), 10.0)) * 1.05
        ax.scatter(t, p, s=12, alpha=0.7, label=f"{len(t)} films, MAE {np.abs(p - t).mean():.1f}°")
        ax.plot([0, hi], [0, hi], "k:", lw=1, label="identity")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel(f"true {name} angle (°)")
        ax.set_ylabel(f"predicted {name} angle (°)")
        ax.set_title(f"{name}: predicted against true")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def plot_bland_altman(true: np.ndarray, pred: np.ndarray, path: Path) -> Path:
    plt = _plt()
    t, p = true.max(axis=1), pred.max(axis=1)
    mean, diff = (t + p) / 2, p - t
    bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(mean, diff, s=12, alpha=0.7, label=f"{len(t)} films")
    ax.axhline(bias, color="C3", label=f"bias {bias:+.2f}°")
    for s in (-1.96, 1.96):
        ax.axhline(bias + s * sd, color="C3", ls="--", lw=1)
    ax.plot([], [], "C3--", lw=1, label=f"95% limits of agreement ±{1.96 * sd:.1f}°")
    ax.set_xlabel("mean of predicted and true largest angle (°)")
    ax.set_ylabel("predicted minus true (°)")
    ax.set_title("Bland-Altman: largest Cobb angle")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_landmark_error(err_pct: np.ndarray, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.hist(err_pct, bins=30, color="C0", label=f"{len(err_pct)} films")
    ax.axvline(float(np.median(err_pct)), color="C3", label=f"median {np.median(err_pct):.2f}%")
    ax.set_xlabel("mean corner error per film (% of film height)")
    ax.set_ylabel("films")
    ax.set_title("Landmark error")
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_landmark_report(out: Path, res: dict[str, Any], rows: list[dict[str, Any]],
                          gallery: list[tuple[np.ndarray, str]]) -> Path:
    """``rows``: one per held-out film (true_*/pred_* angles, landmark_error_pct_height);
    ``gallery``: (overlay RGB, caption) of the best and worst films."""
    plots = out / "plots"
    true = np.array([[r[f"true_{a}"] for a in ANGLES] for r in rows])
    pred = np.array([[r[f"pred_{a}"] for a in ANGLES] for r in rows])
    err = np.array([r["landmark_error_pct_height"] for r in rows])
    figs = [("Predicted against true angles", plot_scatter(true, pred, plots / "angles_scatter.png")),
            ("Bland-Altman plot of the largest angle", plot_bland_altman(true, pred, plots / "bland_altman.png")),
            ("Landmark error per film, as a share of the film height", plot_landmark_error(err, plots / "landmark_error.png"))]
    if gallery:
        figs.append(("The best and the worst held-out films: predicted corners, end-vertebra endplates and angles",
                     plot_gallery(gallery, plots / "landmark_gallery.png", "Best and worst films by SMAPE", cols=4)))
    p = res["pooled"]

    def ci(k: str) -> str:
        lo, hi = p[f"{k}_ci95"]
        return f"[{lo:.2f}, {hi:.2f}]"

    header = ["metric", "value", "95% CI"]
    table = [["SMAPE (%)", f"{p['smape']:.2f}", ci("smape")],
             ["MAE largest angle (°)", f"{p['mae_largest']:.2f}", ci("mae_largest")],
             *[[f"MAE {a.upper()} (°)", f"{p[f'mae_{a}']:.2f}", ci(f"mae_{a}")] for a in ANGLES],
             ["landmark error, mean % of film height", f"{p['landmark_error_pct_height']['mean']:.2f}", ""],
             ["predicted spines refused as implausible", str(res["implausible_predictions"]), ""]]
    c = res.get("pooled_corners_only")
    if c:  # the same corners read by the definition alone, beside the model's reading
        lo, hi = c["smape_ci95"]
        table += [["SMAPE (%), corners alone (centreline weight 0)", f"{c['smape']:.2f}", f"[{lo:.2f}, {hi:.2f}]"],
                  ["MAE largest angle (°), corners alone", f"{c['mae_largest']:.2f}", ""]]
    how = f"{len(res['folds'])}-fold case-grouped CV" if len(res["folds"]) > 1 else "one case-grouped held-out split"
    intro = (f"{p['n']} held-out films of <code>{html.escape(res['source'])}</code> ({how}); "
             f"{res['labels_implausible']} films whose labelled corners fail the plausibility check were left out of "
             "training. SMAPE: 100 x mean over films of sum|pred - true| / sum(pred + true) over the three angles; "
             "CIs are 95% percentile bootstrap intervals over films. Angles are read with centreline weight "
             f"{res['settings'].get('centreline_weight', 0.0):g} (the share of each vertebra's tilt taken from the spine's "
             "centreline rather than its own corners).")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>spinexr landmarks</title><style>{CSS}</style>"
            f"</head><body><h1>spinexr landmark CV</h1><p>{intro}</p>{_table(header, table)}<h2>Plots</h2>"
            + "".join(_img_tag(fp, t) for t, fp in figs) + "</body></html>")
    report = out / "report.html"
    report.write_text(page)
    (out / "summary.md").write_text(f"# spinexr landmark CV\n\n{p['n']} held-out films ({how}).\n\n"
                                    + _md_table(header, table) + "\n")
    return report
