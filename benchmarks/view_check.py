"""How well the view check tells KAUH's lumbar films from its full-spine AP films, read from the
whole-spine model's corners (the first stage) or from the refined corners (the second stage).

    python benchmarks/view_check.py --landmarks src/spinexr/deploy/bundled/landmarks.safetensors \\
        --refiner src/spinexr/deploy/bundled/refiner.safetensors --tag bundled

The view check (:mod:`spinexr.geometry.view`) was designed on the whole-spine model's drawing of a
film: squeezed onto five lumbar vertebrae, the 17 boxes it draws grow less from T1 to L5 and are
flatter. A refiner reads each vertebra again at high resolution and places a vertebra-shaped box, so
that difference may fade in the refined corners. Every KAUH film is measured once; on the KAUH CV's
case-grouped folds (5, seed 0: the folds of ``kauh_augment.py``) the check is fitted on the other
folds (Spondylolisthesis films: lumbar views; Normal and Scoliosis films: full-spine AP) with its line
keeping ``--keep-lumbar-out`` of their lumbar films out, and judges the fold's films. Per source of
features: the out-of-fold AUC, the share of lumbar films judged full-spine AP (where the angle would
overrule a Spondylolisthesis call), and the share of full-spine films judged lumbar (where a curve is
only flagged). With ``--aasce-run`` (a landmark CV run; its out-of-fold corners, refined by
``--aasce-refiner``), the held-out AASCE films, all full-spine AP, are judged by a check fitted on
every KAUH film measured by the same fold model: the share passed. Writes
``benchmarks/results/view_check_<tag>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from _machine import header, write_result  # noqa: E402
from spinexr import CLASSES  # noqa: E402
from spinexr.data.dataset import prepare_dataset  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import read_aasce  # noqa: E402
from spinexr.data.splits import group_kfold  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.geometry.view import fit_view_check, spine_view_features, view_features  # noqa: E402

KAUH = Path("../shared/data/kauh-spine-xray")
AASCE = Path("../shared/data/aasce-spine-ap")
SOURCES = ("refined", "first", "both")


def _features(measurer: SpineMeasurer, img: np.ndarray, first: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A film's view features from each source (``first``: the first stage's corners to refine, when
    they come from elsewhere; its confidence is always this measurer's own)."""
    own, conf = measurer.first_stage([img])[0]
    first = own if first is None else first
    refined, _ = measurer.second_stage(img, first)
    h = img.shape[0]
    return {"first": view_features(first, h, conf), "refined": view_features(refined, h, conf),
            "both": spine_view_features(refined, h, conf, first)}


def _auc(p_full: np.ndarray, full: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(full, p_full))


def kauh_cv(feats: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray, folds: int, seed: int,
            keep_lumbar_out: float) -> dict:
    full = labels != CLASSES.index("Spondylolisthesis")
    splits = group_kfold(labels, groups, folds, seed)
    out = {}
    for src, x in feats.items():
        p, judged = np.zeros(len(labels)), np.zeros(len(labels), dtype=bool)
        for tr, te in splits:
            check = fit_view_check(x[tr], full[tr], keep_lumbar_out)
            p[te] = [check.probability(f) for f in x[te]]
            judged[te] = p[te] >= check.line
        out[src] = {"auc": _auc(p, full),
                    "lumbar_judged_full_spine": float(judged[~full].mean()),
                    "full_spine_judged_lumbar": float((~judged[full]).mean()),
                    "by_class_judged_full_spine": {c: float(judged[labels == i].mean()) for i, c in enumerate(CLASSES)}}
        r = out[src]
        print(f"KAUH {src:8s} AUC {r['auc']:.3f}  lumbar passed {r['lumbar_judged_full_spine']:.1%}  "
              f"full-spine kept out {r['full_spine_judged_lumbar']:.1%}", flush=True)
    return out


def aasce_side(run: Path, refiner: str | None, kauh_paths: list, labels: np.ndarray, keep_lumbar_out: float) -> dict:
    """The held-out AASCE films of a landmark CV run, judged by a check fitted on every KAUH film, all
    measured by the run's fold model (and ``refiner``)."""
    measurer = SpineMeasurer(run / "models" / "landmarks.safetensors", refiner=refiner)
    kf = [_features(measurer, read_image(p)[0]) for p in tqdm(kauh_paths, desc="KAUH (fold model)", unit="film")]
    full = labels != CLASSES.index("Spondylolisthesis")
    oof = np.load(run / "oof_landmarks.npz", allow_pickle=False)
    held = {str(Path(p).resolve()): v for p, v in zip(oof["paths"], oof["landmarks"])}
    af = []
    for r in tqdm(read_aasce(AASCE).records, desc="AASCE held out", unit="film"):
        v = held.get(str(Path(r.path).resolve()))
        if v is not None:
            af.append(_features(measurer, read_image(r.path)[0], np.asarray(v).reshape(17, 4, 2)))
    out = {"landmark_run": str(run), "refiner": refiner, "n_films": len(af)}
    for src in SOURCES:
        check = fit_view_check(np.array([f[src] for f in kf]), full, keep_lumbar_out)
        passed = np.array([check.probability(f[src]) >= check.line for f in af])
        out[src] = {"judged_full_spine": float(passed.mean())}
        print(f"AASCE {src:8s} judged full-spine AP {passed.mean():.1%} of {len(af)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landmarks", required=True, help="the landmark model that measures the KAUH films")
    ap.add_argument("--refiner", default=None)
    ap.add_argument("--aasce-run", type=Path, default=None, help="a landmark CV run (its held-out AASCE films)")
    ap.add_argument("--aasce-refiner", default=None, help="the refiner that fold's corners are read with")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-lumbar-out", type=float, default=0.9)
    ap.add_argument("--tag", default="bundled")
    a = ap.parse_args(argv)
    if not KAUH.is_dir():
        print(f"{KAUH} not found: this benchmark needs the KAUH films beside the repository", file=sys.stderr)
        return 2
    head, t0 = header("view_check", argv), time.perf_counter()
    data = prepare_dataset(KAUH, sizes=[64], progress=False)
    measurer = SpineMeasurer(a.landmarks, refiner=a.refiner)
    per = [_features(measurer, read_image(p)[0]) for p in tqdm(data.paths, desc="KAUH", unit="film")]
    feats = {s: np.array([f[s] for f in per]) for s in SOURCES}
    out = {**head, "landmarks": a.landmarks, "refiner": a.refiner, "keep_lumbar_out": a.keep_lumbar_out,
           "folds": a.folds, "seed": a.seed, "n_films": len(data.paths),
           "sources": {"refined": "the five features of the refined corners",
                       "first": "the five features of the whole-spine model's corners",
                       "both": "the first stage's five and the refined vertebrae's proportions and growth "
                               "(spinexr.geometry.view.TWO_STAGE_FEATURES)"},
           "kauh_cv": kauh_cv(feats, data.labels, data.groups, a.folds, a.seed, a.keep_lumbar_out)}
    if a.aasce_run is not None:
        out["aasce"] = aasce_side(a.aasce_run, a.aasce_refiner, data.paths, data.labels, a.keep_lumbar_out)
    out["wall_seconds"] = time.perf_counter() - t0
    write_result(f"view_check_{a.tag}.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
