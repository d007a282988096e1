"""``spinexr predict``: files and folders to CSV/JSON, with optional heatmaps.

A bad file is reported in the ``status``/``reason`` columns and the batch goes on.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from spinexr.data.imread import list_images
from spinexr.deploy.predictor import Prediction, Predictor
from spinexr.errors import SpinexrError
from spinexr.explain import overlay

log = logging.getLogger(__name__)


def expand_paths(paths: list[str | Path], recursive: bool = False) -> list[Path]:
    """Files as given, folders expanded to their images (sub-folders only with ``recursive``)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list_images(p, recursive=recursive)
            if not found:
                log.warning("%s: no image files found%s", p, "" if recursive else " (use --recursive for sub-folders)")
            out.extend(found)
        else:
            out.append(p)  # missing or unreadable files are reported per row, not fatal
    return out


def _heatmap_name(i: int, path: Path, method: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:80]
    return f"{i:05d}_{safe}_{method.replace('+', 'p')}.png"


def predict_paths(predictor: Predictor, paths: list[Path], explain: str | None = None,
                  heatmaps: Path | None = None, progress: bool = True, measurer: Any = None,
                  overlays: Path | None = None) -> list[Prediction]:
    """Predict every path; one :class:`Prediction` per path (``status`` ok or error). With a
    :class:`~spinexr.deploy.measure.SpineMeasurer` each readable film is also measured (Cobb angles),
    and with ``overlays`` the measurement is drawn on the film at its original size."""


    if explain and heatmaps is None:
        raise SpinexrError("--explain needs --heatmaps DIR to write the overlays into")
    if heatmaps is not None:
        heatmaps.mkdir(parents=True, exist_ok=True)
    if overlays is not None:
        if measurer is None:
            raise SpinexrError("--overlays needs --landmarks MODEL to measure the spine with")
        overlays.mkdir(parents=True, exist_ok=True)
    preds: list[Prediction] = []
    for i, p in enumerate(tqdm(paths, desc="predicting", unit="img", disable=not progress)):
        pred, img = predictor.predict_file(p)
        if explain and img is not None and heatmaps is not None:
            try:
                heat, _ = predictor.explain(img, explain)
                dest = heatmaps / _heatmap_name(i, p, explain)
                Image.fromarray(overlay(img, heat)).save(dest)
                pred.heatmap = str(dest)
            except SpinexrError as e:
                pred.reason = f"no heatmap: {e}"
        if measurer is not None and img is not None:
            pred.spine = measurer.measure(img)
            pred.decide(measurer.rule)
            if overlays is not None:
                dest = overlays / _heatmap_name(i, p, "cobb")
                Image.fromarray(measurer.overlay(img, pred.spine)).save(dest)
                pred.overlay = str(dest)
        preds.append(pred)
    return preds


def write_rows(preds: list[Prediction], labels: list[str], out: Path) -> None:
    """Write predictions as CSV or, for a ``.json`` path, JSON (numbers and booleans kept as such)."""
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps([p.to_json() for p in preds], indent=2))
        return
    rows = [p.row(labels) for p in preds]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def summarize(preds: list[Prediction]) -> str:
    ok = [p for p in preds if p.status == "ok"]
    counts: dict[str, int] = {}
    for p in ok:
        counts[p.label] = counts.get(p.label, 0) + 1
    flagged = sum(1 for p in ok if p.ood)
    parts = [f"{len(ok)} predicted ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
             f"{len(preds) - len(ok)} unreadable", f"{flagged} flagged out-of-distribution"]
    return "; ".join(parts)


__all__ = ["Prediction", "Predictor", "expand_paths", "predict_paths", "summarize", "write_rows"]
