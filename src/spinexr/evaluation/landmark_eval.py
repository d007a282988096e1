"""``spinexr landmarks evaluate``: a landmark model, or a bundle's whole measurement, on any labelled landmark set.

What is measured is what is deployed: a bundle (or the bundled models, the default) measures with its
:class:`~spinexr.deploy.measure.SpineMeasurer` (whole-spine model, then its vertebra refiner); a landmark
model file measures alone. On each film: the Cobb angles of its predicted corners (read as the model
file says) against the labelled angles (or, where the set has none, the angles of the labelled
corners), and the corner error as a share of the film height. Reported: SMAPE, the MAE of each angle
and of the largest (95% bootstrap intervals), the share of films whose largest angle is within 5
degrees, the mean signed error on curves of 40 degrees or more, and how many spines were refused.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spinexr.data.imread import read_image
from spinexr.data.landmarks import LandmarkSet, load_landmark_source
from spinexr.deploy.bundle import is_bundle, load_bundle
from spinexr.deploy.bundled import bundled_bundle_dir
from spinexr.deploy.measure import SpineMeasurer
from spinexr.errors import ImageReadError, SpinexrError
from spinexr.evaluation.landmark_cv import angle_metrics, tolerance_scores
from spinexr.geometry.cobb import cobb_angles
from spinexr.models.files import model_kind


def measurer_for(model: str | Path | None, device: str = "cpu") -> tuple[SpineMeasurer, str]:
    """The measurer of a bundle (None: the bundled models), or of a landmark model file alone."""
    if model is None or is_bundle(model):
        bundle = load_bundle(bundled_bundle_dir() if model is None else model)
        if bundle.landmarks is None:
            raise SpinexrError(f"{bundle.name}: a classify-only bundle has no landmark model to evaluate")
        return SpineMeasurer(bundle.landmarks, device=device, refiner=bundle.refiner), f"bundle {bundle.name}"
    path = Path(model)
    if path.suffix.lower() != ".safetensors" or model_kind(path) != "landmarks":
        raise SpinexrError(f"{model}: give a bundle folder or a landmark model file (.safetensors)")
    return SpineMeasurer(path, device=device), f"landmark model {path.name}"


def evaluate_landmarks(measurer: SpineMeasurer, source: str | Path | LandmarkSet, progress: bool = True,
                       n_boot: int = 1000) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``measurer`` on every film of the landmark set ``source``: (metrics, one row per film).

    Args:
        measurer: the landmark model (and refiner) to evaluate.
        source: an AASCE-layout folder or a landmark CSV, or its films as already read
            (:func:`~spinexr.data.landmarks.load_landmark_source`).
        progress: show a progress bar.
        n_boot: bootstrap resamples for the intervals.
    """
    t0 = time.perf_counter()
    ds = source if isinstance(source, LandmarkSet) else load_landmark_source(source)
    true, pred, err, refused, rows = [], [], [], [], []
    skipped = dict(ds.skipped)
    for r in tqdm(ds.records, desc="measuring", unit="film", disable=not progress):
        try:
            img, _ = read_image(r.path)
        except ImageReadError as e:
            skipped[str(r.path)] = e.reason
            continue
        m = measurer.measure(img)
        h = img.shape[0]
        p = np.asarray(measurer.angles(m.landmarks, h).angles)
        t = np.asarray(r.angles if r.angles is not None else cobb_angles(r.landmarks, h).angles, dtype=np.float64)
        e = 100 * float(np.linalg.norm(m.landmarks - r.landmarks, axis=-1).mean()) / h
        true.append(t)
        pred.append(p)
        err.append(e)
        refused.append(bool(m.refused))
        rows.append({"path": str(r.path), "group": r.group, "refused": "; ".join(m.refused),
                     **{f"true_{a}": float(v) for a, v in zip(("pt", "mt", "tl"), t)},
                     **{f"pred_{a}": float(v) for a, v in zip(("pt", "mt", "tl"), p)},
                     "landmark_error_pct_height": e})
    if not rows:
        raise SpinexrError(f"{ds.source}: no film could be measured ({len(skipped)} unreadable)")
    t, p = np.array(true), np.array(pred)
    metrics = {**angle_metrics(p, t, np.array(err), n_boot=n_boot), **tolerance_scores(p, t),
               "refused": int(sum(refused)), "skipped": skipped, "source": ds.source,
               "seconds": time.perf_counter() - t0}
    return metrics, rows


def write_evaluation(out: Path, metrics: dict[str, Any], rows: list[dict[str, Any]], what: str) -> None:
    """Write ``metrics.json`` and ``per_film.csv`` into ``out``.

    Args:
        out: the folder (made if missing).
        metrics: what :func:`evaluate_landmarks` measured.
        rows: its rows, one a film.
        what: the model evaluated, as the metrics name it.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"model": what, **metrics}, indent=2, default=float))
    with open(out / "per_film.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def evaluation_lines(metrics: dict[str, Any], what: str) -> list[str]:
    m = metrics
    ge40 = (f"; curves of 40° or more ({m['n_ge40']}) read {m['mean_error_ge40']:+.1f}° on average"
            if m.get("mean_error_ge40") is not None else "")
    return [f"{what} on {m['n']} films of {m['source']}:",
            f"  SMAPE {m['smape']:.2f}% (95% CI {m['smape_ci95'][0]:.2f}-{m['smape_ci95'][1]:.2f}); largest angle "
            f"MAE {m['mae_largest']:.2f}°, within 5° on {m['within_5deg']:.0%} of films{ge40}",
            f"  MAE PT {m['mae_pt']:.2f}°, MT {m['mae_mt']:.2f}°, TL/L {m['mae_tl']:.2f}°; corner error "
            f"{m['landmark_error_pct_height']['mean']:.2f}% of film height (median "
            f"{m['landmark_error_pct_height']['median']:.2f}%); {m['refused']} spine(s) refused as implausible"
            + (f"; {len(m['skipped'])} film(s) unreadable" if m["skipped"] else "")]


__all__ = ["evaluate_landmarks", "evaluation_lines", "measurer_for", "write_evaluation"]
