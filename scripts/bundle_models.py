"""Rebuild the models bundled with spinexr (``src/spinexr/deploy/bundled/``) and their model cards.

    python scripts/bundle_models.py \\
        --classifier runs/kauh_xc96/model.safetensors \\   (or --keep-classifier)
        --landmarks runs/landmarks-final/models/landmarks.safetensors \\
        --landmark-train-log runs/landmarks-final/metrics.json

For each model: float16 weights (``spinexr.deploy.bundled.pack``), checked against the float32 file
on KAUH films (largest probability / corner difference), its CPU latency per film, and a card built
from the committed benchmark JSON (KAUH held-out split, AASCE landmark CV, external AASCE check).
The landmark model also gets the decision rule's curve line, fitted on KAUH Normal films with its
own measurements, and the view check on every KAUH film (``spinexr.deploy.bundle.fit_rule``); the
bundle's manifest (``bundle.json``) is written last. Writes ``benchmarks/results/bundled_models.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from spinexr import CLASSES
from spinexr.config import SPINE_CENTRED_MODES
from spinexr.data.imread import list_images, read_image
from spinexr.deploy.bundle import fit_rule, write_bundle
from spinexr.deploy.bundled import BUNDLE_DIR, pack
from spinexr.deploy.decision import DOUBTED_VIEW_DEG, DecisionRule
from spinexr.deploy.measure import SpineMeasurer
from spinexr.deploy.predictor import Predictor
from spinexr.evaluation.provenance import header
from spinexr.geometry.view import TWO_STAGE_FEATURES
from spinexr.models.files import raw_metadata, read_metadata, write_model_file
from spinexr.models.landmark import parse_scales
from spinexr.models.refine import turn_limit

ROOT = Path(__file__).resolve().parents[1]

def _degrees(text: str) -> float | None:
    """An argparse type for a limit on turning: turn_limit's message on a bad value."""
    try:
        return turn_limit(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


KAUH = ROOT.parent / "shared" / "data" / "kauh-spine-xray"
RESULTS = ROOT / "benchmarks" / "results"
BUNDLE_DESCRIPTION = ("The models that ship with spinexr: a KAUH-trained classifier and an AASCE-trained landmark model "
                      "(with its vertebra refiner where the bundle carries one), joined by the decision rule fitted on "
                      "KAUH films. Research use only.")

KAUH_CITE = ('Fraiwan M, Audat Z, Manasreh T (2022). "A dataset of scoliosis, spondylolisthesis, and normal vertebrae '
             'X-ray images". Mendeley Data, V1, doi:10.17632/xkt857dsxk.1. King Abdullah University Hospital, Jordan.')
AASCE_CITE = ('SpineWeb Dataset 16 (London Health Sciences Center, Canada; the MICCAI 2019 AASCE challenge data). '
              'Wu H, Bailey C, Rasoulinejad P, Li S. "Automatic landmark estimation for adolescent idiopathic scoliosis '
              'assessment using BoostNet". MICCAI 2017.')


def _pct(v: float | None, ci: list[float] | None = None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1%}" + (f" (95% CI {ci[0]:.1%}-{ci[1]:.1%})" if ci else "")


def _latency(fn, imgs, reps: int = 3) -> float:
    fn(imgs[0])
    ts = []
    for _ in range(reps):
        for im in imgs:
            t = time.perf_counter()
            fn(im)
            ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default=None, help="the classifier model file to bundle (float32, its run folder "
                    "beside it for the card)")
    ap.add_argument("--keep-classifier", action="store_true",
                    help="leave the bundled classifier and its card as they are (rebuild only the landmark model)")
    ap.add_argument("--landmarks", default=None, help="the landmark model file to bundle (float32)")
    ap.add_argument("--landmark-train-log", help="the final landmark run's metrics.json (epochs, minutes)")
    ap.add_argument("--landmark-command", default="", help="the command that trained the landmark model")
    ap.add_argument("--classifier-command", default="", help="the command that trained the classifier")
    ap.add_argument("--landmark-cv", default=None,
                    help="the landmark CV result JSON the card cites (default: the final run's own, else "
                         "aasce_cobb_cv_cpu_reduced.json)")
    ap.add_argument("--refiner", default=None, help="a vertebra refiner file to bundle as the landmark model's second "
                    "stage (benchmarks/aasce_refine.py --final); the rule is then fitted on refined measurements")
    ap.add_argument("--refiner-result", default="aasce_refine_final.json",
                    help="the final refiner run's result JSON in benchmarks/results (for its card)")
    ap.add_argument("--refiner-split-tag", default="",
                    help="the suffix of the refiner recipe's split results (aasce_refine_seed0TAG.json)")
    ap.add_argument("--refiner-budget", default=None,
                    help="the refine_budget.py result that chose the shipped reading (for the card)")
    ap.add_argument("--refiner-time-note", default="", help="a sentence on the training time, for the card")
    ap.add_argument("--landmark-tta-scales", default=None,
                    help="the first stage's test-time zooms to ship (e.g. 1: the mirror image alone), in place of the "
                         "landmark file's own; the weights are unchanged (benchmarks/refine_budget.py chooses)")
    ap.add_argument("--refiner-passes", type=int, default=None, choices=(1, 2, 3),
                    help="how many times the shipped refiner reads its crops, in place of its file's own")
    ap.add_argument("--refiner-mirror-last", action="store_true",
                    help="the refiner reads the mirror images on its last pass only")
    ap.add_argument("--refiner-max-turn", type=_degrees, default=None,
                    help="degrees a refiner pass after the first may turn a vertebra (benchmarks/refine_guard.py chooses)")
    ap.add_argument("--refiner-guard", default=None,
                    help="the refine_guard.py result that chose the limit (for the card)")
    ap.add_argument("--refit-rule-only", action="store_true",
                    help="fit the decision rule (curve line and view check) again on KAUH with the bundled landmark "
                         "model and refiner as they measure now, into the bundled landmark file's metadata; its "
                         "weights, its card and the other models untouched")
    ap.add_argument("--refiner-card-only", action="store_true",
                    help="rewrite only the bundled refiner's card (and the headline in its file) from the committed "
                         "JSON, its weights and the other models untouched: for split figures measured after packing")
    return ap


def _write_manifest() -> None:
    """The bundled folder's manifest, written last over the files now in it (their SHA-256 follow)."""
    refiner = BUNDLE_DIR / "refiner.safetensors"
    write_bundle(BUNDLE_DIR, BUNDLE_DIR / "classifier.safetensors", BUNDLE_DIR / "landmarks.safetensors", None,
                 name="spinexr-bundled", description=BUNDLE_DESCRIPTION, refiner=refiner if refiner.is_file() else None)


def _rewrite_meta(path: Path, meta: dict) -> None:
    """A bundled model file written again in place with ``meta``, its tensors as they are."""
    write_model_file(load_file(str(path)), meta, path, sidecar=False)
    path.chmod(0o644)


def refit_rule_only() -> int:
    """The bundled landmark file's rule fitted again (``_landmark_meta_with_rule``) by the bundled models as
    this version of spinexr measures, its tensors written back as they are, and the manifest following."""
    dest = BUNDLE_DIR / "landmarks.safetensors"
    refiner = BUNDLE_DIR / "refiner.safetensors"
    measurer = SpineMeasurer(dest, refiner=refiner if refiner.is_file() else None)
    meta, curve_deg = _landmark_meta_with_rule(str(dest), measurer)
    before = raw_metadata(dest)
    if {k: before.get(k) for k in ("decision", "view_check")} == {k: meta.get(k) for k in ("decision", "view_check")}:
        print(f"{dest}: its rule is already this one; nothing written")
        return 0
    _rewrite_meta(dest, meta)
    _write_manifest()
    print(f"refitted the rule in {dest}: curve line {curve_deg:g}°, view check on "
          f"{len(meta['view_check']['features'])} features ({meta['view_check']['fitted_on']})")
    return 0


def refiner_card_only(a: argparse.Namespace) -> int:
    """The bundled refiner's card written again from the committed JSON (``refiner_card``) and its file's
    headline with it; the tensors are written back as they are, and the manifest (SHA-256) follows."""
    dest = BUNDLE_DIR / "refiner.safetensors"
    if not dest.is_file():
        raise SystemExit(f"{dest}: this bundle carries no refiner, so it has no refiner card to rewrite")
    meta = raw_metadata(dest)
    card, head = refiner_card(a, meta)
    before = (dest.with_suffix(".md").read_text(), meta.get("bundled", {}).get("headline", ""))
    if (card, head) == before:
        print(f"{dest.with_suffix('.md')}: already says this; nothing written")
        return 0
    _rewrite_meta(dest, {**meta, "bundled": {**meta.get("bundled", {}), "headline": head}})
    dest.with_suffix(".md").write_text(card)
    _write_manifest()
    print(f"rewrote {dest.with_suffix('.md')} and the headline in {dest.name}: {head}")
    return 0


def _with_meta(src: str, dest: Path, changes: dict) -> str:
    """``src``'s weights written to ``dest`` (same name) with its metadata changed as ``changes`` say."""
    out = dest / Path(src).name
    write_model_file(load_file(src), {**raw_metadata(src), **changes}, out, sidecar=False)
    return str(out)


def _apply_reading(a: argparse.Namespace, tmp: Path) -> None:
    """The same weights read as ``--landmark-tta-scales`` / ``--refiner-passes`` / ``--refiner-mirror-last`` /
    ``--refiner-max-turn`` say:
    copies in ``tmp`` under the same names, their metadata changed, which everything after measures and ships."""
    if a.landmark_tta_scales is not None:
        a.landmarks = _with_meta(a.landmarks, tmp / "landmarks",
                                 {"tta_scales": list(parse_scales(a.landmark_tta_scales))})
    if a.refiner and (a.refiner_passes is not None or a.refiner_mirror_last or a.refiner_max_turn is not None):
        changes = {"flip_every_pass": not a.refiner_mirror_last, "max_turn": a.refiner_max_turn}
        if a.refiner_passes is not None:
            changes["iterations"] = a.refiner_passes
        a.refiner = _with_meta(a.refiner, tmp / "refiner", changes)


def _landmark_meta_with_rule(landmarks: str, measurer: SpineMeasurer) -> tuple[dict, float]:
    """The landmark file's metadata with the decision rule fitted on every KAUH film by this model's own
    measurements (:func:`spinexr.deploy.bundle.fit_rule`: the curve line on the Normal films, the view
    check on all of them), as the bundle's manifest will carry it."""
    rule = fit_rule(measurer, KAUH, progress=False)
    d = rule["decision"]
    meta = raw_metadata(landmarks)
    meta["decision"] = {"curve_deg": d["curve_deg"], "straight_deg": d["straight_deg"],
                        "doubted_view_deg": d["doubted_view_deg"], "fitted_on": d["fitted_on"],
                        "max_rate": d["max_rate"], "kauh_lumbar_median_deg": d["lumbar_median_deg"]}
    meta["view_check"] = rule["view_check"]
    return meta, float(d["curve_deg"])


def _pack_both(a: argparse.Namespace, meta: dict, curve_deg: float, speed: dict) -> dict:
    """Write the bundled files and cards; returns the classifier's card facts (empty when kept)."""
    clf_facts: dict = {}
    with tempfile.TemporaryDirectory() as d:  # the rule goes into the landmark file's metadata
        lm_src = Path(d) / "landmarks.safetensors"
        write_model_file(load_file(a.landmarks), meta, lm_src, sidecar=False)
        ext = json.loads((RESULTS / "external_aasce.json").read_text()) if (RESULTS / "external_aasce.json").is_file() else None
        lm_log = json.loads(Path(a.landmark_train_log).read_text()) if a.landmark_train_log else {}
        # The measured figures: the landmark CV run the model came from (its result JSON), else the default one.
        cv_path = (Path(a.landmark_cv) if a.landmark_cv else Path(a.landmark_train_log) if lm_log.get("pooled")
                   else RESULTS / "aasce_cobb_cv_cpu_reduced.json")
        cv_file = cv_path.resolve()
        cv_file = cv_file.relative_to(ROOT).as_posix() if cv_file.is_relative_to(ROOT) else str(cv_path)
        if not a.keep_classifier:
            clf_card, clf_head, clf_facts = classifier_card(a, ext, speed)
            pack(a.classifier, "classifier", clf_card, headline=clf_head)
        lm_card, lm_head = landmark_card(a, meta, (json.loads(cv_path.read_text()), cv_file), ext, lm_log, curve_deg,
                                         speed)
        pack(lm_src, "landmarks", lm_card, headline=lm_head)
        if a.refiner:
            rf_card, rf_head = refiner_card(a, raw_metadata(a.refiner))
            pack(a.refiner, "refiner", rf_card, headline=rf_head)
        else:
            for stale in (BUNDLE_DIR / "refiner.safetensors", BUNDLE_DIR / "refiner.md"):
                stale.unlink(missing_ok=True)
    _write_manifest()
    return clf_facts


def _fp16_checks(a: argparse.Namespace, full_c: Predictor, full_lm: SpineMeasurer, imgs: list, clf_facts: dict) -> dict:
    """float16 against float32, and the latency of what ships."""
    half_c = Predictor(BUNDLE_DIR / "classifier.safetensors")
    half_lm = SpineMeasurer(BUNDLE_DIR / "landmarks.safetensors",
                            refiner=BUNDLE_DIR / "refiner.safetensors" if a.refiner else None)
    dpx = max(float(np.abs(full_lm.measure(im).landmarks - half_lm.measure(im).landmarks).max()) for im in imgs)
    earlier = json.loads((RESULTS / "bundled_models.json").read_text()) if (RESULTS / "bundled_models.json").is_file() else {}
    since = f"bundled_models.json of {earlier.get('date')}"
    if a.keep_classifier:  # its float16 check is the earlier run's (against the float32 file it was packed from)
        before = earlier["classifier"]
        clf = {**before, "ms_per_film": _latency(half_c.predict_image, imgs), "kept_from": before.get("kept_from", since)}
    else:
        dp = max(abs(full_c.predict_image(im).probabilities[c] - half_c.predict_image(im).probabilities[c])
                 for im in imgs for c in full_c.labels)
        clf = {"file_mb": (BUNDLE_DIR / "classifier.safetensors").stat().st_size / 2**20,
               "max_prob_diff_fp16": dp, "ms_per_film": _latency(half_c.predict_image, imgs), **clf_facts}
    lm_out = {"file_mb": (BUNDLE_DIR / "landmarks.safetensors").stat().st_size / 2**20,
              "max_corner_diff_px_fp16": dpx, "ms_per_film": _latency(half_lm.measure, imgs)}
    if a.refiner:  # the corner difference above is of both stages as shipped (float16 first stage, int8 refiner)
        lm_out["refiner"] = {"file_mb": (BUNDLE_DIR / "refiner.safetensors").stat().st_size / 2**20,
                             "weights": "int8 (weight-only, per output channel)", "source": a.refiner_source}
        rmeta = raw_metadata(a.refiner)
        lm_out["refiner"].update(passes=rmeta.get("iterations"), mirror_every_pass=rmeta.get("flip_every_pass", True),
                                 max_turn=rmeta.get("max_turn"))
    src_w = load_file(a.landmarks)
    if all(torch.equal(v, v.half().to(v.dtype)) for v in src_w.values() if v.is_floating_point()) and earlier:
        # Weights that were float16 already (a fold model measured again from the bundled float16 file):
        # comparing them with themselves shows nothing, so the float16 check is the earlier one.
        lm_out.update(max_corner_diff_px_fp16=earlier["landmarks"]["max_corner_diff_px_fp16"],
                      weights_kept_from=earlier["landmarks"].get("weights_kept_from", since))
    return {"classifier": clf, "landmarks": lm_out}


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    if a.refit_rule_only:
        return refit_rule_only()
    if a.refiner_card_only:
        return refiner_card_only(a)
    if not a.landmarks:
        ap.error("--landmarks is required (unless --refit-rule-only or --refiner-card-only)")
    if bool(a.classifier) == a.keep_classifier:
        ap.error("give either --classifier FILE or --keep-classifier")
    if a.keep_classifier:
        a.classifier = str(BUNDLE_DIR / "classifier.safetensors")
    if (a.refiner_passes is not None or a.refiner_mirror_last or a.refiner_max_turn is not None) and not a.refiner:
        ap.error("--refiner-passes, --refiner-mirror-last and --refiner-max-turn need --refiner")
    a.refiner_source = a.refiner
    with tempfile.TemporaryDirectory() as tmp:
        _apply_reading(a, Path(tmp))
        return _build(a, argv)


def _build(a: argparse.Namespace, argv: list[str] | None) -> int:
    torch.set_num_threads(2)
    films = [p for c in CLASSES for p in list_images(KAUH / c)[:3]]
    imgs = [read_image(p)[0] for p in films]
    full_lm = SpineMeasurer(a.landmarks, refiner=a.refiner)
    meta, curve_deg = _landmark_meta_with_rule(a.landmarks, full_lm)
    full_c = Predictor(a.classifier)
    speed = {"classifier_ms": _latency(full_c.predict_image, imgs), "landmarks_ms": _latency(full_lm.measure, imgs)}
    clf_facts = _pack_both(a, meta, curve_deg, speed)
    out = {**header("bundled_models", argv, ROOT), "curve_deg": curve_deg, "doubted_view_deg": DOUBTED_VIEW_DEG,
           **_fp16_checks(a, full_c, full_lm, imgs, clf_facts), "kauh_parity_films": len(imgs)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bundled_models.json").write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {RESULTS / 'bundled_models.json'}")
    print(json.dumps({k: out[k] for k in ("curve_deg", "classifier", "landmarks")}, indent=2))
    return 0

# The side-by-side KAUH CV that chose the window contract, both arms through the decision with the
# landmark model bundled beside it.
WINDOW_CV = RESULTS / "kauh_augment_cpu_reduced_window_lmseed1_rule3.json"


def _augmentation_lines(aug: dict, resize: str = "letterbox") -> list[str]:
    """What augmentation and input contract the classifier trained with (its run's ``train.aug``, its
    ``data_config.resize``), and the side-by-side CV that chose them."""
    if not aug:
        return []
    framing = (f"framing: strip crops p={aug.get('strip_p', 0)}, widened strips p={aug.get('widen_p', 0)}"
               if resize not in SPINE_CENTRED_MODES else "no framing augmentation (the input contract makes it moot)")
    out = [f"- Augmentation: rotation ±{aug.get('rotate_deg')}°, zoom ±{aug.get('scale'):.0%}, shift "
           f"±{aug.get('translate'):.0%}, flips, brightness/contrast/gamma {aug.get('brightness')}/{aug.get('contrast')}/"
           f"{aug.get('gamma')}; {framing}."]
    if resize == "window":
        out += ["- Input contract: every film becomes a spine-centred window a quarter as wide as tall (`--resize "
                "window`): cut from a wider film, widened from a narrower one by mirroring its edges, so a strip and "
                "the same strip widened give the same input."]
        if WINDOW_CV.is_file():
            arms = json.loads(WINDOW_CV.read_text())["arms"]
            rows = []
            for name, r in arms.items():
                fs, dec = r["framing_stress"], r.get("decision") or {}
                dfr = dec.get("framing") or {}
                rows.append(f"{name}: accuracy {r['accuracy_mean']:.1%} ({dec.get('accuracy_with_rule_mean', float('nan')):.1%} "
                            f"with the curve rule), framing changes {fs['scoliosis_ap_to_strip']['rate']:.1%} / "
                            f"{fs['normal_strip_to_full']['rate']:.1%}"
                            + (f" ({dfr['scoliosis_ap_to_strip']['rate']:.1%} / {dfr['normal_strip_to_full']['rate']:.1%} "
                               "with the rule)" if dfr else ""))
            out += [f"- Chosen by a side-by-side 5-fold KAUH CV (`benchmarks/results/{WINDOW_CV.name}`, the bundled "
                    "landmark model measuring): " + "; ".join(rows) + "."]
        return out
    path = RESULTS / "kauh_augment_cpu_reduced.json"
    if path.is_file():
        arms = json.loads(path.read_text())["arms"]
        out += ["- Chosen by a side-by-side 5-fold KAUH CV (`benchmarks/results/kauh_augment_cpu_reduced.json`): "
                + "; ".join(f"{name}: accuracy {r['accuracy_mean']:.1%}, framing changes "
                            f"{r['framing_stress']['scoliosis_ap_to_strip']['rate']:.0%} / "
                            f"{r['framing_stress']['normal_strip_to_full']['rate']:.0%}"
                            for name, r in arms.items() if r.get("framing_stress")) + "."]
    return out


def _classifier_measured(held: dict, pooled: dict, ci: dict, ext: dict | None) -> list[str]:
    lines: list[str] = []
    if held:
        lines += [f"- KAUH held-out split ({held['classifier']['n']} films), as deployed: accuracy "
                  f"{_pct(held['classifier']['accuracy'], held['classifier']['ci95'])}; with the curve rule "
                  f"{_pct(held['with_rule']['accuracy'], held['with_rule']['ci95'])}."]
    if pooled:
        lines += [f"- At training time on the same split: accuracy {_pct(pooled['accuracy'], ci.get('accuracy'))}, "
                  f"macro-F1 {pooled['macro_f1']:.3f}, ROC-AUC {pooled['auc_macro']:.3f}, ECE {pooled['ece']:.3f}; recall "
                  + ", ".join(f"{c} {v['recall']:.1%} of {v['support']}" for c, v in pooled["per_class"].items()) + "."]
    if ext:
        o = ext["aasce"]
        allf = o["classifier_all_films"]
        sens = allf["per_class"]["Scoliosis"]
        lines += [f"- External, AASCE / SpineWeb 16 ({o['n']} AP films of scoliosis patients, Canada): "
                  f"{_pct(sens['sensitivity'], sens['sensitivity_ci95'])} called Scoliosis "
                  f"({', '.join(f'{k} {v}' for k, v in sens['called'].items())}); of films with a largest Cobb angle of "
                  f"25° or more, {allf['angles']['called_scoliosis_ge25']:.1%}; Spearman of P(Scoliosis) with the largest "
                  f"angle {allf['angles']['spearman_p_scoliosis']['rho']:.2f}. With the curve rule on the "
                  f"{o['oof_films']['called_scoliosis_ge25']['n']} films of 25° or more measured out of fold: "
                  f"{o['oof_films']['called_scoliosis_ge25']['with_rule']:.1%} called Scoliosis "
                  f"(classifier alone {o['oof_films']['called_scoliosis_ge25']['classifier']:.1%}). "
                  "Table: `benchmarks/results/external_aasce.json`."]
    return lines


def _classifier_failures(ext: dict | None, aug: dict, dc: dict, td: dict) -> list[str]:
    lines: list[str] = []
    fr = ((ext or {}).get("kauh") or {}).get("framing_stress_held_out")
    framing = ""
    if fr:
        a_, b_ = fr["scoliosis_ap_to_strip"], fr["normal_strip_to_full"]
        framing = (f" In the framing stress test, {a_['changed']} of {a_['n']} held-out full-AP Scoliosis films cut to "
                   f"strips change class ({a_['to'].get('Normal', 0)} to Normal) and {b_['changed']} of {b_['n']} Normal "
                   f"strips widened to full-film proportions change class ({b_['to'].get('Scoliosis', 0)} to Scoliosis).")
    framed = aug.get("strip_p", 0) > 0 or aug.get("widen_p", 0) > 0
    alone_ge25 = ext["aasce"]["classifier_all_films"]["angles"]["called_scoliosis_ge25"] if ext else None
    if dc.get("resize") == "window":
        how = ("This model reads every film through a spine-centred window of a strip's proportions, which takes "
               "the film's width away as a cue; where the spine's column is found a few pixels apart (a full film "
               "and a strip cut from it), the input still differs a little.")
    elif framed:
        how = "This model trained with framing augmentation, which takes most of that shortcut away, not all."
    else:
        how = "This model learned much of that."
    lines += ["", "## Known failure modes", "",
              "- KAUH's classes differ in framing (Normal films are narrow strips). " + how
              + f"{framing} On another hospital's films it calls scoliosis less often than on KAUH's, and its "
              "P(Scoliosis) follows the size of the curve only weakly: use the measured angle (bundled landmark model) "
              "as the evidence for a curve.",
              *([f"- Alone (`--no-landmarks`) it called {alone_ge25:.0%} of the AASCE films of 25° or more Scoliosis, "
                 f"with the landmark model {ext['aasce']['oof_films']['called_scoliosis_ge25']['with_rule']:.0%} of "
                 "those measured out of fold: on other hospitals' films, keep the landmark model on."] if ext else []),
              "- Full-spine films called Spondylolisthesis: the decision rule overrides that call only where the "
              "landmark model's view check finds a full-spine AP view and the measured curve reaches the line; the "
              "check lets about 1 in 10 lumbar films through, and those can be overruled wrongly.",
              "- Not for chest films, photos of monitors, paediatric hips or anything that is not a spine radiograph; "
              "the OOD flag catches some of these, not all.",
              f"- Trained on {td.get('n_train')} films from one hospital, from scratch: expect lower accuracy than "
              "published ImageNet figures (96-98% within KAUH)."]
    return lines


def classifier_card(a: argparse.Namespace, ext: dict | None, speed: dict) -> tuple[str, str, dict]:
    meta = read_metadata(a.classifier)
    metrics_path = Path(a.classifier).parent / "metrics.json"
    run = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    r = (run.get("models") or {}).get(meta["architecture"], {})
    pooled, ci = r.get("pooled", {}), r.get("ci95", {})
    cv = json.loads((RESULTS / "kauh_cv_cpu_reduced.json").read_text())["results"]
    held = (ext or {}).get("kauh", {}).get("held_out", {})
    dc, td = meta["data_config"], meta.get("training_data", {})
    aug = run.get("config", {}).get("train", {}).get("aug") or {}
    hist = Path(a.classifier).parent / "history.csv"
    minutes = "n/a minutes"
    if hist.is_file():
        with open(hist, newline="") as f:
            minutes = f"{sum(float(r.get('seconds') or 0) for r in csv.DictReader(f)) / 60:.0f} minutes"
    head = (f"KAUH held-out {held['classifier']['accuracy']:.1%}" if held else
            f"KAUH held-out {pooled.get('accuracy', float('nan')):.1%}")
    lines = [
        f"# spinexr bundled classifier: {meta['architecture']} + {meta['attention']} attention, {dc['input_size']} px",
        "", "**Research use only. Not a medical device, not a diagnosis.** It sorts a spine radiograph into Normal, "
        "Scoliosis or Spondylolisthesis, with an out-of-distribution flag; with the bundled landmark model the label "
        "answers to the measured Cobb angle (see `spinexr.deploy.decision`).", "",
        "## Training data", "",
        f"KAUH spine X-ray set: {sum(td.get('counts', {}).values())} films "
        f"({', '.join(f'{k} {v}' for k, v in td.get('counts', {}).items())}); this model trained on "
        f"{td.get('n_train')} films, stopped early on {td.get('n_val')} and was scored on {td.get('n_test')} held-out "
        "films (a stratified, group-aware split; near-duplicates kept on one side).", "",
        f"Citation: {KAUH_CITE}", "",
        "Licence: see the Mendeley record (doi:10.17632/xkt857dsxk.1); the weights are derived from those films, and no "
        "image ships with spinexr.", "",
        "## How it was trained", "",
        f"- Command: `{a.classifier_command or 'spinexr train --data ../shared/data/kauh-spine-xray --model xception'}`",
        f"- From scratch (no ImageNet weights: none could be downloaded) on a 2-core CPU in {minutes}, best epoch "
        f"{run.get('best_epoch', 'n/a')} of {run.get('config', {}).get('train', {}).get('epochs', 'n/a')}, temperature "
        f"{meta.get('temperature', 1.0):.2f}; stored here as float16 weights. {speed['classifier_ms']:.0f} ms per film "
        "on 2 CPU cores (PyTorch, decoding excluded).",
        "- Why this backbone and size: in the CPU 5-fold CV of the three backbones at 96 px "
        f"(`benchmarks/results/kauh_cv_cpu_reduced.json`) Xception led ({cv['xception']['accuracy_mean']:.1%} vs "
        f"DenseNet121 {cv['densenet121']['accuracy_mean']:.1%}, InceptionV3 {cv['inception_v3']['accuracy_mean']:.1%}); "
        "DenseNet121 is a third the size for about two points less; within the 95 MB shared with the landmark "
        "model and its refiner, Xception fits, and at 96 px it stays fast on a laptop.",
        *_augmentation_lines(aug, dc.get("resize", "letterbox")), "",
        "## Measured", ""]
    lines += _classifier_measured(held, pooled, ci, ext)
    lines += _classifier_failures(ext, aug, dc, td)
    return "\n".join(lines) + "\n", head, {"n_train": td.get("n_train"), "input_size": dc["input_size"]}


def _landmark_measured(cv: dict, ext: dict | None) -> list[str]:
    lines: list[str] = []
    c = cv.get("pooled_corners_only")
    if c:
        lines += [f"- The same predicted corners read by the corners alone (the definition): SMAPE {c['smape']:.1f}%, "
                  f"MAE of the largest angle {c['mae_largest']:.1f}°."]
    k = cv.get("kauh_cross_check")
    if k:
        lines += [f"- KAUH (no landmarks there): the measured largest angle separates Scoliosis from Normal films with "
                  f"ROC-AUC {k['auc_largest_angle']:.3f} (median {k['median_angle_scoliosis']:.1f}° vs "
                  f"{k['median_angle_normal']:.1f}°)."]
    if ext:
        s = ext["aasce"]["oof_films"]["classifier"]["angles"].get("spearman_measured_angle")
        if s:
            lines += [f"- Measured vs true largest angle on held-out AASCE films: Spearman {s['rho']:.2f} "
                      f"(95% CI {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f})."]
        vc = ext["kauh"].get("view_check")
        if vc:
            lines += ["- View check (fitted on the KAUH classifier's training films, applied to its held-out films): "
                      "judged full-spine AP " + ", ".join(f"{c} {x:.0%}" for c, x in vc["held_out_full_spine_rate"].items())
                      + f"; fitted on all KAUH films, {ext['aasce']['oof_films'].get('view_full_spine_rate', 0):.0%} of "
                      "held-out AASCE films."]
    return lines


def landmark_card(a: argparse.Namespace, meta: dict, cv_result: tuple[dict, str], ext: dict | None, lm_log: dict,
                  curve_deg: float, speed: dict) -> tuple[str, str]:
    """The landmark model's card and its one-line headline; ``cv_result``: the landmark CV's JSON and its path."""
    cv, cv_file = cv_result
    p = cv["pooled"]
    dc = meta["data_config"]
    bar = DecisionRule.from_meta(meta).doubted_view_bar
    f0 = (lm_log.get("folds") or [{}])[0]
    head = f"AASCE 80/20 CV: SMAPE {p['smape']:.1f}%, largest-angle MAE {p['mae_largest']:.1f}°"
    lines = [
        f"# spinexr bundled landmark model: {meta['encoder']} + FPN heatmaps, {dc['input_size']}x{dc['input_width']} px",
        "", "**Research use only. Not a medical device, not a diagnosis.** On an AP spine film it places the four "
        "corners of each vertebra T1-L5 and computes the three Cobb angles (PT, MT, TL/L, by the AASCE data's "
        "definition, with each vertebra's tilt read as below), the end vertebrae, the apex and a severity band; an "
        "implausible spine (order broken, overlaps, gaps) is refused instead of measured.", "",
        "## Training data", "",
        f"AASCE / SpineWeb Dataset 16 training part, 466 AP films of adolescent idiopathic scoliosis patients "
        f"(15 films of patients that also occur in the distributed test part removed). {AASCE_CITE}", "",
        "Terms: released for research use with citation; no image of it ships with spinexr.", "",
        "## How it was trained", "",
        f"- Command: `{a.landmark_command or 'spinexr landmarks train --data ../shared/data/aasce-spine-ap --test-fraction 0'}`",
        f"- From scratch on a 2-core CPU: {f0.get('epochs_run', 'n/a')} epochs in "
        f"{(f0.get('train_seconds') or 0) / 60:.0f} minutes on {f0.get('n_train', 'n/a')} films "
        f"({f0.get('n_val', 'n/a')} more, 10% of the training cases, chose the epoch"
        + (f"; {f0['n_test']} films of the other 20% of cases were held out and measured below: this is the "
           "benchmark's own fold model" if f0.get("n_test") else "") + "); test-time augmentation in the graph "
        + _views_text(meta) + "; float16 weights here. "
        f"{speed['landmarks_ms']:.0f} ms per film on 2 CPU cores (PyTorch, landmarks and angles, decoding excluded).",
        f"- Angle reading: {meta.get('centreline_weight', 0.0):g} of each vertebra's tilt is read from the spine's "
        "centreline (a polynomial through the 17 predicted vertebra centres) and the rest from its own corners "
        "(`centreline_weight` in the file; 0 is the dataset's definition, corners alone): a predicted tilt that "
        "disagrees with where the vertebrae sit counts half.",
        f"- Decision rule: on a film the view check finds to be a full-spine AP view, a classifier's Normal or "
        f"Spondylolisthesis call measured at {curve_deg:.1f}° or more becomes Scoliosis (the line fitted on the 71 KAUH "
        "Normal films, which this model never saw: at most 2% of them reach it); a Spondylolisthesis call, the "
        "classifier's own evidence of a lumbar view, only where the check is surer of a full-spine view than its second "
        "line. On a view the check doubts, only a "
        f"Normal call answers to the angle, and only to a curve of {bar:g}° or more "
        "(the usual line between mild and moderate scoliosis): the check errs on other hospitals' full AP films, "
        "and lumbar views measure large angles too.",
        "- View check: a logistic model on the shape of the spine this model draws (vertebra proportions, growth from "
        "T1-T3 to L3-L5, span, heatmap confidence), fitted on "
        + (meta.get("view_check") or {}).get("fitted_on", "KAUH films of known view")
        + " (Normal and Scoliosis films full-spine AP, Spondylolisthesis films lumbar), its line keeping 90% of the "
        "lumbar films out, and its second line, for films called Spondylolisthesis, 99% of them.",
        *(["- Second stage: in the bundle each vertebra's corners are read again by the vertebra refiner "
            "(`spinexr models --card refiner`), and the angles from the refined corners alone; "
            + _second_stage_rule_text(meta) + " The figures below are this first stage's "
            "alone; the refiner's card gives the two stages together."] if a.refiner else []), "",
        "## Measured", "",
        f"- The same recipe in a case-grouped 80/20 split of AASCE ({p['n']} held-out films; "
        f"`{cv_file}`): SMAPE "
        f"{p['smape']:.1f}% (95% CI {p['smape_ci95'][0]:.1f}-{p['smape_ci95'][1]:.1f}), MAE of the largest angle "
        f"{p['mae_largest']:.1f}° (95% CI {p['mae_largest_ci95'][0]:.1f}-{p['mae_largest_ci95'][1]:.1f}), PT "
        f"{p['mae_pt']:.1f}°, MT {p['mae_mt']:.1f}°, TL/L {p['mae_tl']:.1f}°; mean corner error "
        f"{p['landmark_error_pct_height']['mean']:.2f}% of the film height. Published methods with ImageNet weights "
        "and GPUs reach SMAPE 8-11% on this data."]
    lines += _landmark_measured(cv, ext)
    k = cv.get("kauh_cross_check")
    normal_median = (k or {}).get("median_angle_normal")
    lines += ["", "## Known failure modes", "",
              "- Large curves are underestimated (the model regresses towards a straighter spine); small curves read "
              "a few degrees large" + (f" (KAUH Normal films measure {normal_median:.1f}° at the median)"
                                        if normal_median is not None else "") + ".",
              "- It always draws an ordered spine, even on lumbar or lateral views, where the plausibility check "
              "rarely refuses: against a Spondylolisthesis call the angle is only used where the view check finds a "
              "full-spine AP view, and that check, fitted on one hospital's films, lets about 1 in 10 lumbar films "
              f"through and takes some full AP films for lumbar ones. A lumbar film called Normal and measured at "
              f"{bar:g}° or more is called Scoliosis, flagged 'check the film' (KAUH's lumbar films "
              f"measure {meta['decision']['kauh_lumbar_median_deg']:.0f}° at the median; KAUH holds no healthy lumbar "
              "film to say how often that happens). Wherever the angle is not used (a view the check doubts, a lumbar "
              "view), a curve measured at 40° or more is still shown beside the label that stands, flagged 'check the "
              "film' (rule v5).",
              "- Trained on one Canadian hospital's AIS films, cropped neck to pelvis; other framings (whole-body, "
              "chest-only) and adult degenerative spines are outside its data."]
    return "\n".join(lines) + "\n", head


def _split_training(r: dict) -> str:
    """How a split's refiner trained, from its result JSON: as the bundled one, or cut short by a time budget."""
    t, epochs = r.get("training", {}), r.get("refiner_settings", {}).get("epochs")
    if t.get("stopped_by") == "time budget":
        return (f"on a time budget: its schedule cut to what fitted, stopped by time, best epoch {t.get('best_epoch')}; "
                "not yet trained as the bundled one")
    return f"{epochs} epochs with no time budget, as the bundled one (best epoch {t.get('best_epoch')})"


def _second_stage_rule_text(meta: dict) -> str:
    """What the rule in a landmark file bundled with a refiner was fitted on."""
    if len((meta.get("view_check") or {}).get("features", [])) == len(TWO_STAGE_FEATURES):
        return ("the curve line above was fitted on those refined measurements, and the view check reads both stages: "
                "the spine this model draws (the five features above) and the refined vertebrae's proportions and "
                "growth (`spinexr.geometry.view.TWO_STAGE_FEATURES`; the refined corners are vertebra-shaped even on a "
                "lumbar film).")
    return "the curve line and the view check above were fitted on those refined measurements."


def _refined_line(name: str, r: dict) -> str:
    bias = "n/a" if r["mean_error_ge40"] is None else f"{r['mean_error_ge40']:+.1f}°"
    return (f"{name}: SMAPE {r['smape']:.2f}%, largest-angle MAE {r['mae_largest']:.2f}°, "
            f"{r['within_5deg']:.0%} within 5°, mean error on curves of 40° or more {bias} ({r['n_ge40']} films)")


def _cpu_name(result: dict) -> str:
    m = result.get("machine")
    return m if isinstance(m, str) else (m or {}).get("cpu", "CPU")


def _views_text(meta: dict) -> str:
    scales = [float(z) for z in meta.get("tta_scales", [1.0])]
    if scales != [1.0]:
        return f"(mirror image and zooms {', '.join(f'{z:g}' for z in scales)})"
    return ("(the mirror image; the zooms 0.85 and 1.1 it trained with were given up when the refiner's second pass "
            "came in, within the same arithmetic: `benchmarks/results/refine_budget_e56.json`)")


def _reading_text(meta: dict) -> str:
    n, every = int(meta.get("iterations", 1)), bool(meta.get("flip_every_pass", True))
    if n == 1:
        return "its mirror image read too and averaged; one pass"
    limit = meta.get("max_turn")
    held = ("" if limit is None else f"; a pass after the first that would turn a vertebra by more than {limit:g}° "
            "leaves it where the pass before put it")
    if every:
        return (f"{n} passes (each cuts the crops again around the last one's corners), each crop's mirror image read "
                f"too{held}")
    return (f"{n} passes: each cuts the crops again around the last one's corners, and the last also reads each crop's "
            f"mirror image and averages the two{held}")


def _reading_choice_lines(a: argparse.Namespace, budget: dict | None, chosen: str, shipped: dict,
                          splits: dict, suffixes: dict[str, str], shipped_passes: int = 1) -> list[str]:
    """The refiner card's lines on how the shipped reading was chosen: the readings within the arithmetic
    (``--refiner-budget``), the limit on turning (``--refiner-guard``), else the pass count per split."""
    lines: list[str] = []
    if budget:
        within = ", ".join(k.replace(" | ", "; ") for k in budget["within_budget"])
        lines += [f"- The reading shipped, {chosen.replace(' | ', '; ')} (first-stage views; refiner passes), "
                  "chosen by the rule fixed "
                  f"before looking ({budget['rule']}; `{Path(a.refiner_budget).name}`) among {within}, at "
                  f"{budget['gflops_per_film'][chosen]:.1f} GFLOPs a film against "
                  f"{budget['gflops_per_film'][budget['today']]:.1f} "
                  "for the reading it replaced (six first-stage views, one pass). On the held-out films:"]
        lines += [f"  - {s}: " + _refined_line("two stages as shipped", r) + "." for s, r in shipped.items()]
    if a.refiner_guard:  # the limit on turning chosen on the splits' validation films (benchmarks/refine_guard.py)
        guard = json.loads(Path(a.refiner_guard).read_text())
        limits = "; ".join(f"{k.replace(' | ', '; ')}: {v}°" for k, v in guard["chosen"].items())
        lines += [f"- The limit on how far the second pass may turn a vertebra, chosen by the rule fixed before looking "
                  f"({guard['rule']}; `{Path(a.refiner_guard).name}`): {limits}."]
    if not budget:  # the pass count chosen on the splits' validation films (benchmarks/refine_passes.py)
        for s in splits:
            tag = suffixes[s]
            f = RESULTS / f"refine_passes_{s}{tag}.json"
            if f.is_file():
                r = json.loads(f.read_text())
                v = r["results"]["validation"]
                lines += [f"- Passes ({s}, `{f.name}`): chosen on {r['n_validation']} validation films by the lower "
                          f"SMAPE, {v['1']['smape']:.2f}% for one pass against {v['2']['smape']:.2f}% for two: "
                          f"{_passes(r['chosen_passes'])}." + _passes_not_shipped(s, tag, r["chosen_passes"], shipped_passes)]
    return lines


def _passes(n: int) -> str:
    return {1: "one pass", 2: "two passes", 3: "three passes"}.get(int(n), f"{n} passes")


def _passes_not_shipped(split: str, tag: str, chosen: int, shipped: int) -> str:
    """Why the bundle reads another pass count than a split's validation films chose: the external check
    read with the chosen count (``external_aasce_<split><tag>_two_passes.json``), where it was run."""
    if int(chosen) == int(shipped):
        return ""
    f = RESULTS / f"external_aasce_{split}{tag}_{_passes(chosen).split()[0]}_passes.json"
    if not f.is_file():
        return f" The bundle reads {_passes(shipped)}, as chosen for the recipe before this split's refiner was trained."
    two = json.loads(f.read_text())
    same = RESULTS / f"external_aasce_{split}{tag}.json"
    one = json.loads(same.read_text()) if same.is_file() else None
    ge25 = two["aasce"]["oof_films"]["called_scoliosis_ge25"]
    line = (f" The bundle reads {_passes(shipped)}: read with {_passes(chosen)}, the external check (`{f.name}`) called "
            f"{ge25['with_rule']:.1%} of {ge25['n']} films of 25° or more Scoliosis (target 97%), with the curve line on "
            f"KAUH's Normal films at {two['kauh']['curve_deg']:.1f}°")
    if one is not None:
        g1 = one["aasce"]["oof_films"]["called_scoliosis_ge25"]["with_rule"]
        line += f" (with {_passes(shipped)}: {g1:.1%}, line {one['kauh']['curve_deg']:.1f}°, `{same.name}`)"
    return line + "."


def refiner_card(a: argparse.Namespace, meta: dict) -> tuple[str, str]:
    """The refiner's card, from the committed JSON: the two case-grouped splits of its recipe, the reading
    chosen on their validation films (``--refiner-budget``), the int8 weights' check and the final run."""
    # Each split's figures from its refiner trained as --refiner-split-tag says where that was run, else from the
    # untagged one; the card says how each was trained, and that split's passes and int8 check come with it.
    sfx = {s: next(t for t in dict.fromkeys((a.refiner_split_tag, "")) if (RESULTS / f"aasce_refine_{s}{t}.json").is_file()
                   or t == "") for s in ("seed0", "seed1")}
    splits = {s: json.loads((RESULTS / f"aasce_refine_{s}{t}.json").read_text()) for s, t in sfx.items()
              if (RESULTS / f"aasce_refine_{s}{t}.json").is_file()}
    weights = {}
    for s in ("seed0", "seed1"):
        found = [RESULTS / f"refiner_weights_{s}{w}.json" for w in dict.fromkeys((sfx[s], ""))]
        found = [f for f in found if f.is_file()]
        if found:
            weights[s] = {**json.loads(found[0].read_text()), "file": found[0].name}
    budget = json.loads(Path(a.refiner_budget).read_text()) if a.refiner_budget else None
    fin = RESULTS / a.refiner_result
    final = json.loads(fin.read_text()) if fin.is_file() else {}
    if budget:
        chosen = budget["chosen"]
        shipped = {Path(sp["landmark_run"]).name.rsplit("_", 1)[-1]: sp["held_out"][chosen] for sp in budget["splits"]}
    else:
        chosen = "1 pass"
        shipped = {s: r["results"]["refined, 1 pass"]["corners alone"] for s, r in splits.items()}
    head = ("AASCE 80/20 splits, two stages as shipped: "
            + "; ".join(f"{s} SMAPE {r['smape']:.1f}%, MAE {r['mae_largest']:.1f}°" for s, r in shipped.items()))
    minutes = (final.get("train_seconds") or 0) / 60
    lines = [
        f"# spinexr bundled vertebra refiner: {meta['encoder']} heatmaps on {meta['crop']} px crops of each vertebra",
        "", "**Research use only. Not a medical device, not a diagnosis.** The landmark model's second stage: from the "
        "first stage's corners it cuts one crop per vertebra out of the film resized to "
        f"{meta['film_height']} px high ({meta['crop']} px, {2 * meta['span']:g} vertebra spacings wide, turned along the "
        f"spine there) and places that vertebra's four corners again; {_reading_text(meta)}. The Cobb angles are then "
        "read from the refined corners alone (the dataset's definition; `centreline_weight` 0 in the file).", "",
        "## Training data", "",
        f"AASCE / SpineWeb Dataset 16 training part. {AASCE_CITE}", "",
        "Terms: released for research use with citation; no image of it ships with spinexr.", "",
        "## How it was trained", "",
        f"- Command: `{final.get('command', 'python benchmarks/aasce_refine.py --final')}`",
        f"- From scratch on a 2-core CPU ({_cpu_name(final)}): {final.get('epochs_run', 'n/a')} epochs (best "
        f"{final.get('best_epoch', 'n/a')}) in {minutes:.0f} minutes on crops of {final.get('n_train', 'n/a')} films' "
        f"labelled vertebrae, their frames jittered (centre, turn, scale); {final.get('n_val', 'n/a')} films of a tenth "
        f"of the cases chose the epoch; {final.get('labels_implausible_left_out', 0)} films with implausible labels "
        "left out." + (f" {a.refiner_time_note}" if a.refiner_time_note else ""),
        "- Stored as weight-only int8 (one scale per output channel; float16 biases and norms), so that the three "
        "bundled files stay within one wheel.", "",
        "## Measured", ""]
    for s, r in splits.items():
        first = r["results"]["first stage"]["corners alone"]
        lines += [f"- Case-grouped 80/20 split {s} (`benchmarks/results/aasce_refine_{s}{sfx[s]}.json`, {r['n_test']} "
                  "held-out films; the refiner trained with this recipe on the split's own training cases, starting "
                  f"from the first stage's out-of-fold corners, {_split_training(r)}): "
                  + _refined_line("first stage (corners alone)", first)
                  + "; " + _refined_line("refined, one pass", r["results"]["refined, 1 pass"]["corners alone"]) + "."]
    lines += _reading_choice_lines(a, budget, chosen, shipped, splits, sfx, int(meta.get("iterations", 1)))
    for s, r in weights.items():
        q = r["results"]["int8 weights"]
        lines += [f"- int8 weights ({s}, `{r['file']}`, refiner `{r.get('refiner')}`): SMAPE {q['smape_change']:+.2f} "
                  f"points against float32, the largest angle within 0.5° of float32's on "
                  f"{q['largest_within_0_5deg_of_float32']:.0%} of {r['n_test']} films (the gate: 0.3 points and 95%)."]
    lines += ["", "## Known failure modes", "",
              "- It reads each vertebra where the first stage put it: a vertebra the first stage missed by more than "
              "about half a vertebra, or a spine the first stage drew in the wrong place, is not mended.",
              "- It is the larger part of a measurement's arithmetic (17 crops a pass, 34 with the mirror images).",
              "- Trained on one Canadian hospital's AIS films; its corners are only as good as those labels."]
    return "\n".join(lines) + "\n", head


if __name__ == "__main__":
    raise SystemExit(main())
