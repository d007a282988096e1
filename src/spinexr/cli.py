"""The ``spinexr`` console command: one entry point, many verbs.

Each verb is a small function that parses nothing itself and calls library code; user mistakes
surface as :class:`~spinexr.errors.SpinexrError` and are printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinexr import __version__
from spinexr.errors import SpinexrError

if TYPE_CHECKING:
    from spinexr.evaluation.results import RunResult

log = logging.getLogger("spinexr")
BUNDLED = "<bundled>"  # --landmarks given without a file


def _cmd_data_check(args: argparse.Namespace) -> int:
    from spinexr.data.check import check_dataset, format_result

    out = Path(args.out)
    for name in ("manifest.csv", "data_report.json"):
        target = out / name
        if target.exists() and target.resolve() == Path(args.source).resolve():
            raise SpinexrError(f"{target}: --out would overwrite the input manifest; choose another --out folder")
        if target.exists() and not args.force:
            raise SpinexrError(f"{target} exists; choose another --out folder or pass --force to replace it")
    res = check_dataset(args.source, args.out, max_pixels=args.max_pixels,
                        near_dup_threshold=args.near_dup_threshold, progress=not args.json)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print(format_result(res))
    return 0 if sum(res.counts.values()) else 1


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from spinexr.data.synth import synthesize

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise SpinexrError(f"{out}: folder exists and is not empty; choose another folder or pass --force")
    csv_path = synthesize(out, n=args.n, seed=args.seed, scale=args.scale, fmt=args.format, progress=True)
    print(f"wrote {args.n} synthetic radiographs to {out} (labels: {csv_path})")
    if args.contact_sheet:
        import csv

        from spinexr.data.synth import contact_sheet

        rows = list(csv.DictReader(open(csv_path)))
        caps = [f"{r['label'][:6]} {r['view']} "
                + (f"Cobb {float(r['cobb_deg']):.0f}" if r["cobb_deg"] else "")
                + (f"slip {float(r['slip_pct']):.0f}%" if r["slip_pct"] else "") for r in rows]
        sheet = contact_sheet([out / r["path"] for r in rows], args.contact_sheet, captions=caps)
        print(f"contact sheet: {sheet}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check or synthesise datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{check,synth}")
    c = dsub.add_parser("check", help="counts, unreadable files, duplicates, size shortcut; writes a manifest")
    c.add_argument("source", help="a folder with one sub-folder per class, or a CSV manifest")
    c.add_argument("--out", default="spinexr-check", help="where manifest.csv and data_report.json go")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--force", action="store_true", help="replace manifest.csv/data_report.json in --out")
    c.add_argument("--max-pixels", type=int, default=100_000_000, help="refuse larger images")
    c.add_argument("--near-dup-threshold", type=float, default=0.97,
                   help="thumbnail correlation above which two images are near-duplicates")
    c.set_defaults(func=_cmd_data_check)
    s = dsub.add_parser("synth", help="synthetic spine radiographs with known labels and severities")
    s.add_argument("out", help="output folder (class folders plus labels.csv)")
    s.add_argument("--n", type=int, default=60, help="number of images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=float, default=1.0, help="image size factor (1.0: ~1000 px tall AP)")
    s.add_argument("--format", choices=["jpg", "png"], default="jpg")
    s.add_argument("--force", action="store_true", help="write into a non-empty folder")
    s.add_argument("--contact-sheet", metavar="PNG", help="also tile every image into this PNG")
    s.set_defaults(func=_cmd_data_synth)


def _run_dir(out: str | None, verb: str, force: bool) -> Path:
    """A fresh run folder; an existing non-empty one is never overwritten without --force."""
    import time

    p = Path(out) if out else Path("runs") / f"{verb}-{time.strftime('%Y%m%d-%H%M%S')}"
    # Under torchrun rank 0 alone writes the folder, and may have made it already: it alone checks.
    if int(os.environ.get("RANK", "0")) == 0 and p.exists() and any(p.iterdir()) and not force:
        raise SpinexrError(f"{p}: run folder exists and is not empty; choose another --out or pass --force")
    return p


def _add_common_train_flags(p: argparse.ArgumentParser, verb: str) -> None:
    from spinexr.config import add_setting_flags

    p.add_argument("--config", help="YAML file of settings; flags override it")
    p.add_argument("--data", help="class-folder tree or CSV manifest")
    p.add_argument("--out", help="run folder (default runs/<verb>-<time>)")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty run folder")
    add_setting_flags(p, verb)  # one flag per setting of CVConfig / TrainConfig, generated from the dataclasses
    p.add_argument("--no-tta", dest="tta_flip", action="store_false", default=None,
                   help="no flip test-time augmentation (same as --no-tta-flip)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _load_resume(run_dir: str, verb: str) -> tuple[dict, Any, Any]:
    """The saved configuration of an interrupted run, to continue it exactly as it was started."""
    from spinexr.config import CVConfig, TrainConfig

    cfg_file = Path(run_dir) / "config.json"
    if not cfg_file.is_file():
        raise SpinexrError(f"{run_dir}: no config.json there; --resume takes the folder of an interrupted run")
    saved = json.loads(cfg_file.read_text())
    if saved.get("verb", verb) != verb:
        raise SpinexrError(f"{run_dir} is a `spinexr {saved.get('verb')}` run; resume it with that command")
    return saved, CVConfig.from_dict(saved["cv"]), TrainConfig.from_dict(saved["train"])


def _cmd_cv(args: argparse.Namespace) -> int:
    from spinexr.config import resolve
    from spinexr.evaluation.cv import run_cv

    if args.resume:
        saved, cv, tr = _load_resume(args.resume, "cv")
        out = Path(args.resume)
        if args.landmarks:  # the decision added to a run: finished folds are rebuilt from their checkpoints
            from dataclasses import replace

            from spinexr.evaluation.cv import landmark_model_path

            landmark_model_path(args.landmarks)  # a wrong path is refused before the run's config changes
            cv = replace(cv, landmarks=args.landmarks)
            saved["cv"]["landmarks"] = args.landmarks
            (out / "config.json").write_text(json.dumps(saved, indent=2))
        res = run_cv(saved["source"], cv, tr, out, progress=not args.quiet, resume=True)
    else:
        top, cv, tr = resolve(args)
        out = _run_dir(top.get("out"), "cv", args.force)
        res = run_cv(top["data"], cv, tr, out, progress=not args.quiet)
    if res is not None:  # rank 0
        _print_summary(out, res)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from spinexr.config import resolve
    from spinexr.evaluation.holdout import run_train

    if args.resume:
        saved, cv, tr = _load_resume(args.resume, "train")
        out = Path(args.resume)
        res = run_train(saved["source"], saved["model"], cv, tr, out, progress=not args.quiet, resume=True)
    else:
        top, cv, tr = resolve(args)
        models = top.get("models") or ["xception"]
        if len(models) != 1:
            raise SpinexrError("train takes one --model; use `spinexr cv` for several")
        out = _run_dir(top.get("out"), "train", args.force)
        res = run_train(top["data"], models[0], cv, tr, out, progress=not args.quiet)
    if res is not None:  # rank 0
        _print_summary(out, res)
        print(f"model file: {res.model_file}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from spinexr.evaluation.external import evaluate_model

    if args.bootstrap < 20:
        raise SpinexrError(f"--bootstrap {args.bootstrap}: at least 20 resamples are needed for a 95% interval")
    out = _run_dir(args.out, "evaluate", args.force)
    res = evaluate_model(args.model, args.data, out, device=args.device, bootstrap=args.bootstrap,
                         cache_dir=args.cache_dir, progress=not args.quiet, angles=args.angles,
                         landmarks=args.landmarks)
    _print_summary(out, res)
    return 0


def _print_summary(out: Path, res: RunResult) -> None:
    from spinexr.evaluation.report import external_lines, headline

    ext = res.external
    for m, r in res.models.items():
        if ext and not ext["complete"]:
            for c, v in ext["per_class"].items():
                lo, hi = v["sensitivity_ci95"]
                print(f"{m:<14} {c}: {v['sensitivity']:.1%} of {v['n']} films called {c} (95% CI {lo:.1%}-{hi:.1%}); "
                      + ", ".join(f"{k} {n}" for k, n in v["called"].items()))
            continue
        ci, pooled = r.ci95, r.pooled
        if r.n_folds > 1:
            acc = r.summary["accuracy"]
            point = f"{acc['mean'] * 100:5.1f} ± {acc['std'] * 100:4.1f} over {r.n_folds} folds"
        else:
            point = f"{pooled['accuracy'] * 100:5.1f} on one split of {pooled['n']} films"
        auc = pooled["auc_macro"]
        print(f"{m:<14} accuracy {point}  95% CI [{ci['accuracy'][0] * 100:.1f}, {ci['accuracy'][1] * 100:.1f}]  "
              f"macro-F1 {pooled['macro_f1']:.3f}  AUC {'n/a' if auc is None else f'{auc:.3f}'}  "
              f"ECE {pooled['ece']:.3f}")
        d = r.decision
        if d:
            fd = d.get("framing") or {}
            framing = "".join(f", {what} {fd[k]['changed']} of {fd[k]['n']} changed" for k, what in
                              (("scoliosis_ap_to_strip", "strip-cut Scoliosis"),
                               ("normal_strip_to_full", "widened Normal")) if fd.get(k, {}).get("n"))
            print(f"{'':<14} with the measured curve: accuracy {d['accuracy_with_rule_mean'] * 100:5.1f} (classifier "
                  f"{d['accuracy_mean'] * 100:.1f}; {d['changed']} decisions changed, {d['changed_to_right']} to the "
                  f"right class){framing}")
    for line in external_lines(ext) if ext else []:
        print(line)
    h = headline(res)
    if h and h["worst_class"] and h["accuracy"] is not None:
        rc = h["worst_recall_ci"]
        print(f"missed most ({h['model']}): {h['worst_class']}, recall {h['worst_recall']:.1%}"
              + (f" (95% CI {rc[0]:.1%}-{rc[1]:.1%})" if rc else ""))
    if res.leaky is not None:
        lk = res.leaky
        print(f"leaky protocol: {lk.test_leak_fraction:.0%} of test rows are training copies; "
              + ", ".join(f"{m} {v['accuracy'] * 100:.1f}%" for m, v in lk.models.items()))
    print(f"report: {out / 'report.html'}")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cv", help="k-fold x repeats cross-validation of one or more models, an ensemble, a report")
    _add_common_train_flags(p, "cv")
    p.add_argument("--models", help="comma-separated: xception,inception_v3,densenet121,small")
    p.set_defaults(func=_cmd_cv)
    t = sub.add_parser("train", help="one model, one split; writes a deployable model file")
    _add_common_train_flags(t, "train")
    t.add_argument("--model", dest="models", help="xception, inception_v3, densenet121 or small")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="a trained model file on another dataset, with the same report")
    e.add_argument("model", help="model .safetensors file")
    e.add_argument("--data", required=True, help="class-folder tree or CSV manifest (it may hold only some classes)")
    e.add_argument("--angles", help="true Cobb angles: a CSV (path + largest, or pt,mt,tl) or an AASCE-layout folder")
    e.add_argument("--landmarks", help="a landmark model file: also score its measured angle against --angles")
    e.add_argument("--out", help="run folder")
    e.add_argument("--force", action="store_true")
    e.add_argument("--device", default="auto")
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--cache-dir")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_cmd_evaluate)


def _refuse_overwrite(path: Path, inputs: list[Path], force: bool) -> None:
    resolved = {p.resolve() for p in inputs if p.exists()}
    if path.resolve() in resolved:
        raise SpinexrError(f"{path}: the output would overwrite an input file; choose another path")
    if path.exists() and not force:
        raise SpinexrError(f"{path}: exists; choose another output path or pass --force")


def _cmd_predict(args: argparse.Namespace) -> int:
    from spinexr.deploy.predict import (
        expand_paths,
        predict_paths,
        summarize,
        write_rows,
    )
    from spinexr.deploy.predictor import Predictor
    model, landmarks, items = _models_for(args, args.items)
    paths = expand_paths(items, recursive=args.recursive)
    if not paths:
        raise SpinexrError("no files to predict: give image files or folders (with --recursive for sub-folders)")
    out = Path(args.out) if args.out else None
    if out is not None:
        _refuse_overwrite(out, paths, args.force)
    if args.heatmaps and Path(args.heatmaps).is_dir() and any(Path(args.heatmaps).iterdir()) and not args.force:
        raise SpinexrError(f"{args.heatmaps}: heatmap folder is not empty; choose a new folder or pass --force")
    if args.overlays and Path(args.overlays).is_dir() and any(Path(args.overlays).iterdir()) and not args.force:
        raise SpinexrError(f"{args.overlays}: overlay folder is not empty; choose a new folder or pass --force")
    pred = Predictor(model, backend=args.backend, device=args.device, onnx_path=args.onnx,
                     max_pixels=args.max_pixels)
    measurer = None
    if landmarks:
        from spinexr.deploy.measure import SpineMeasurer

        measurer = SpineMeasurer(landmarks, device=args.device)
    preds = predict_paths(pred, paths, explain=args.explain, heatmaps=Path(args.heatmaps) if args.heatmaps else None,
                          progress=not args.quiet, measurer=measurer,
                          overlays=Path(args.overlays) if args.overlays else None)
    if out is not None:
        write_rows(preds, pred.labels, out)
        print(f"wrote {out}")
    else:
        for p in preds:
            if p.status == "ok":
                spine = ""
                if p.spine is not None:
                    r = p.spine.result
                    spine = (f"\tCobb {r.largest:.1f} ({r.band}; PT {r.pt.angle:.1f} MT {r.mt.angle:.1f} TL {r.tl.angle:.1f})"
                             if r is not None else f"\tCobb refused: {'; '.join(p.spine.refused)}")
                said = ""
                if p.decision is not None and p.decision.agreement in ("overruled", "disagree"):
                    said = f"\t{p.decision.agreement.upper()}: {p.decision.note}"
                print(f"{p.path}\t{p.label}\t" + "\t".join(f"{c}={v:.6f}" for c, v in p.probabilities.items())
                      + (f"\tOOD ({'; '.join(p.ood_reasons)})" if p.ood else "") + spine + said)
            else:
                print(f"{p.path}\tERROR\t[{p.kind}] {p.reason}")
    print(summarize(preds), file=sys.stderr)
    return 0 if any(p.status == "ok" for p in preds) else 1


MODEL_SUFFIXES = (".safetensors", ".onnx")


def _models_for(args: argparse.Namespace, items: list[str]) -> tuple[str, str | None, list[str]]:
    """(classifier, landmark model or None, the remaining positional items).

    A first positional item that is a model file (``.safetensors`` / ``.onnx``) is the classifier, as
    before; otherwise the bundled classifier runs, and with it the bundled landmark model unless
    ``--no-landmarks``. ``--landmarks`` with no file means the bundled landmark model.
    """
    from spinexr.deploy.bundled import bundled_path

    items = list(items)
    if getattr(args, "model", None):
        model = args.model
    elif items and Path(items[0]).suffix.lower() in MODEL_SUFFIXES:
        model = items.pop(0)
    else:
        model = str(bundled_path("classifier"))
        if args.landmarks is None and not args.no_landmarks:
            try:
                return model, str(bundled_path("landmarks")), items
            except SpinexrError as e:
                log.warning("%s; predicting without Cobb angles", e)
    landmarks = args.landmarks
    if landmarks == BUNDLED:
        landmarks = str(bundled_path("landmarks"))
    return model, (None if args.no_landmarks else landmarks), items


def _cmd_models(args: argparse.Namespace) -> int:
    from spinexr.deploy.bundled import bundled_models

    models = bundled_models()
    if args.card:
        hit = [m for m in models if m.name == args.card]
        if not hit:
            raise SpinexrError(f"no bundled model named {args.card!r}; bundled: {', '.join(m.name for m in models) or 'none'}")
        if hit[0].card is None:
            raise SpinexrError(f"the bundled {args.card} model has no model card in this installation")
        print(hit[0].card.read_text())
        return 0
    if args.json:
        print(json.dumps([{"name": m.name, "kind": m.kind, "path": str(m.path), "card": str(m.card) if m.card else None,
                           "size_bytes": m.size_bytes, "meta": m.meta} for m in models], indent=2))
        return 0
    if not models:
        print("no bundled models in this installation; train one with `spinexr train` / `spinexr landmarks train`")
        return 0
    for m in models:
        print(m.describe())
        print(f"{'':11} {m.path}" + (f"\n{'':11} card: spinexr models --card {m.name}" if m.card else ""))
    print("research use only: these models are not a diagnosis; read each card's known failure modes.")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from PIL import Image

    from spinexr.data.imread import read_image
    from spinexr.deploy.predictor import Predictor
    from spinexr.explain import overlay
    if len(args.items) > 2:
        raise SpinexrError("explain takes [MODEL] IMAGE: one model file (optional) and one image")
    args.no_landmarks = args.landmarks is None
    model, landmarks, rest = _models_for(args, args.items)
    if len(rest) != 1:
        raise SpinexrError("explain takes [MODEL] IMAGE: give the image to explain")
    args.image, args.landmarks = rest[0], landmarks
    out = Path(args.out)
    _refuse_overwrite(out, [Path(args.image)], args.force)
    pred = Predictor(model, device=args.device)
    img, _ = read_image(args.image)
    p = pred.predict_image(img, args.image)
    target = pred.labels.index(args.target) if args.target else None
    heat, t = pred.explain(img, args.method, target)
    Image.fromarray(overlay(img, heat)).save(out)
    print(f"{args.image}: {p.label} ({p.probabilities[p.label]:.3f}); {args.method} map for {pred.labels[t]} -> {out}")
    if args.landmarks:
        from spinexr.deploy.measure import SpineMeasurer

        dest = out.with_name(out.stem + "_cobb" + out.suffix)
        _refuse_overwrite(dest, [Path(args.image)], args.force)
        measurer = SpineMeasurer(args.landmarks, device=args.device)
        m = measurer.measure(img)
        Image.fromarray(measurer.overlay(img, m)).save(dest)
        if m.result is None:
            print(f"no Cobb angle: the predicted spine is implausible ({'; '.join(m.refused)}) -> {dest}")
        else:
            r = m.result
            u, lo, apex = r.pt.levels
            print(f"Cobb: largest {r.largest:.1f}° ({r.band}); PT {r.pt.angle:.1f}° {u}-{lo} apex {apex}, "
                  f"MT {r.mt.angle:.1f}°, TL/L {r.tl.angle:.1f}° -> {dest}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from spinexr.deploy.export import export_onnx, quantize_int8
    from spinexr.deploy.modelfile import model_kind, read_metadata

    out = Path(args.onnx)
    _refuse_overwrite(out, [Path(args.model)], args.force)
    if model_kind(args.model) == "landmarks":
        return _export_landmarks(args, out)
    images = _parity_images(args.parity_data, read_metadata(args.model), args.parity_count)
    rep = export_onnx(args.model, out, opset=args.opset, parity_images=images)
    print(f"wrote {out}: checker {rep['checker']}; parity on {rep.get('parity_images', 0)} images: "
          f"max |dp| = {rep.get('max_abs_prob_diff', float('nan')):.2e}")
    if args.int8:
        q = Path(args.int8)
        _refuse_overwrite(q, [Path(args.model), out], args.force)
        calib = _parity_images(args.calibration_data or args.parity_data, read_metadata(args.model), args.calibration_count)
        quantize_int8(out, q, calib)
        print(f"wrote {q} (INT8, calibrated on {len(calib)} images)")
    return 0


def _export_landmarks(args: argparse.Namespace, out: Path) -> int:
    from spinexr.data.imread import list_images
    from spinexr.deploy.export import export_landmark_onnx
    from spinexr.deploy.modelfile import load_landmark_model
    from spinexr.evaluation.landmark_cv import load_landmark_source

    if args.int8:
        raise SpinexrError("--int8 is for classifier models; a landmark model exports to FP32 ONNX")
    if args.parity_data:
        films = list_images(Path(args.parity_data))
    else:
        src = load_landmark_model(args.model)[1].get("training_data", {}).get("source")
        if not src:
            raise SpinexrError("give --parity-data DIR: a folder of films for the parity check")
        films = [r.path for r in load_landmark_source(src).records]
    step = max(1, len(films) // args.parity_count)
    rep = export_landmark_onnx(args.model, out, opset=args.opset, parity_images=films[::step][:args.parity_count])
    print(f"wrote {out}: checker {rep['checker']}; parity on {rep.get('parity_images', 0)} films: "
          f"corners within {rep.get('max_abs_px_diff', float('nan')):.2e} input pixels")
    return 0


def _parity_images(folder: str | None, meta: dict, count: int) -> list[Path]:
    from spinexr.data.imread import list_images
    src = folder or meta.get("training_data", {}).get("source")
    if not src:
        raise SpinexrError("give --parity-data DIR: a folder of radiographs for the parity check")
    p = Path(src)
    if p.suffix.lower() == ".csv":
        from spinexr.data.manifest import from_csv

        files = [r.path for r in from_csv(p).records]
    elif p.is_dir():
        files = list_images(p)
    else:
        raise SpinexrError(f"{p}: not found; give --parity-data DIR with radiographs")
    if not files:
        raise SpinexrError(f"{p}: holds no images for the parity check")
    step = max(1, len(files) // count)
    return files[::step][:count]


def _cmd_serve(args: argparse.Namespace) -> int:
    from spinexr.serve import serve

    model, landmarks, _ = _models_for(args, [args.model] if args.model else [])
    args.landmarks = landmarks
    serve(model, host=args.host, port=args.port, onnx_path=args.onnx, max_upload_mb=args.max_upload_mb,
          max_pixels=args.max_pixels, threads=args.threads, max_batch=args.max_batch, max_queue=args.max_queue,
          landmarks_path=args.landmarks)
    return 0


def _add_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="files or folders to CSV/JSON; bad files are reported and the batch goes on")
    p.add_argument("items", nargs="+", metavar="[MODEL] PATH",
                   help="image files and/or folders, after an optional model file (.safetensors or .onnx); "
                   "without one, the bundled classifier and landmark model run (see `spinexr models`)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--out", help="preds.csv or preds.json (default: print)")
    p.add_argument("--explain", choices=["gradcam", "gradcam++", "attention"], help="also draw heatmaps")
    p.add_argument("--heatmaps", help="folder for heatmap overlays")
    p.add_argument("--landmarks", metavar="LANDMARK_MODEL", nargs="?", const=BUNDLED,
                   help="also measure the spine (Cobb angles, end vertebrae, band) with this landmark model "
                   "(no file: the bundled one)")
    p.add_argument("--no-landmarks", action="store_true", help="do not measure the spine")
    p.add_argument("--overlays", help="folder for the measurement drawn on each film (needs --landmarks)")
    p.add_argument("--backend", choices=["torch", "onnx"], help="default: torch, or onnx for an .onnx model")
    p.add_argument("--onnx", help="an ONNX export of MODEL to run on onnxruntime")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-pixels", type=int, default=100_000_000)
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_predict)
    e = sub.add_parser("explain", help="Grad-CAM, Grad-CAM++ or the attention map over one image")
    e.add_argument("items", nargs="+", metavar="[MODEL] IMAGE",
                   help="an optional model file (default: the bundled classifier), then the image")
    e.add_argument("--method", choices=["gradcam", "gradcam++", "attention"], default="gradcam")
    e.add_argument("--target", choices=["Normal", "Scoliosis", "Spondylolisthesis"], help="class to explain")
    e.add_argument("--out", default="explanation.png")
    e.add_argument("--landmarks", metavar="LANDMARK_MODEL", nargs="?", const=BUNDLED,
                   help="also measure the spine and draw it beside the map (OUT with a _cobb suffix; no file: "
                   "the bundled landmark model)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--force", action="store_true")
    e.set_defaults(func=_cmd_explain)
    x = sub.add_parser("export", help="ONNX export with a checker run and a parity check on real images")
    x.add_argument("model")
    x.add_argument("--onnx", required=True, help="output .onnx path")
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--parity-data", help="folder or CSV of radiographs (default: the model's training data)")
    x.add_argument("--parity-count", type=int, default=8)
    x.add_argument("--int8", help="also write a statically quantized INT8 model here")
    x.add_argument("--calibration-data", help="images for INT8 calibration (default: --parity-data)")
    x.add_argument("--calibration-count", type=int, default=64)
    x.add_argument("--force", action="store_true")
    x.set_defaults(func=_cmd_export)
    s = sub.add_parser("serve", help="REST API and browser page (FastAPI + uvicorn)")
    s.add_argument("model", nargs="?", help="model .safetensors file (default: the bundled classifier, with the "
                   "bundled landmark model)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--onnx", help="serve /v1/predict with onnxruntime on this export of MODEL")
    s.add_argument("--landmarks", metavar="LANDMARK_MODEL", nargs="?", const=BUNDLED,
                   help="also measure the spine: Cobb angles in /v1/predict, the drawing at /v1/overlay (no file: "
                   "the bundled landmark model)")
    s.add_argument("--no-landmarks", action="store_true", help="classify only")
    m = sub.add_parser("models", help="the trained models that ship with spinexr, with their model cards")
    m.add_argument("--card", metavar="NAME", help="print this model's card (classifier or landmarks)")
    m.add_argument("--json", action="store_true", help="machine-readable list")
    m.set_defaults(func=_cmd_models)
    s.add_argument("--max-upload-mb", type=float, default=32.0)
    s.add_argument("--max-pixels", type=int, default=60_000_000)
    s.add_argument("--threads", type=int, default=None, help="inference threads")
    s.add_argument("--max-batch", type=int, default=8, help="most concurrent requests run as one model call")
    s.add_argument("--max-queue", type=int, default=32,
                   help="most images waiting for the model; beyond it a request gets 503 with Retry-After")
    s.set_defaults(func=_cmd_serve)


def _cmd_demo(args: argparse.Namespace) -> int:
    from spinexr.demo import run_demo

    out = Path(args.out)
    if (out / "cv").exists() and any((out / "cv").iterdir()) and not args.force:
        raise SpinexrError(f"{out / 'cv'} exists; pass --force to run the demo again there, or choose --out")
    if args.force and (out / "cv").exists():
        import shutil

        shutil.rmtree(out / "cv")
    run_demo(out, seed=args.seed, epochs=args.epochs, n=args.n)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole path on synthetic data, offline, on a CPU")
    p.add_argument("--out", default="demo", help="demo folder (data, check and run)")
    p.add_argument("--n", type=int, default=150, help="number of synthetic images")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an earlier demo run in the same folder")
    p.set_defaults(func=_cmd_demo)


def _cmd_landmarks(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from spinexr.config import LandmarkConfig
    from spinexr.evaluation.landmark_cv import run_landmark_cv

    cfg = LandmarkConfig.from_dict({f.name: getattr(args, f.name) for f in fields(LandmarkConfig)
                                    if getattr(args, f.name, None) is not None})
    out = _run_dir(args.out, f"landmarks-{args.landmarks_cmd}", args.force)
    folds = cfg.folds if args.landmarks_cmd == "cv" else 1
    res = run_landmark_cv(args.data, cfg, out, folds=folds, max_minutes_per_fold=args.max_minutes,
                          progress=not args.quiet)
    if "pooled" not in res:
        f0 = res["folds"][0]
        print(f"trained on all {f0['n_train'] + f0['n_val']} films ({f0['epochs_run']} epochs, "
              f"{f0['train_seconds'] / 60:.1f} min); nothing held out to measure")
        print(f"model file: {out / 'models' / 'landmarks.safetensors'}")
        return 0
    p = res["pooled"]
    how = f"{len(res['folds'])}-fold case-grouped CV" if folds > 1 else "one case-grouped held-out split"
    print(f"{how} on {p['n']} films: SMAPE {p['smape']:.2f}% (95% CI {p['smape_ci95'][0]:.2f}-{p['smape_ci95'][1]:.2f}), "
          f"largest-angle MAE {p['mae_largest']:.2f}° (95% CI {p['mae_largest_ci95'][0]:.2f}-{p['mae_largest_ci95'][1]:.2f}), "
          f"landmark error {p['landmark_error_pct_height']['mean']:.2f}% of film height; "
          f"{res['implausible_predictions']} predicted spine(s) refused as implausible")
    print(f"model file: {out / 'models' / 'landmarks.safetensors'}")
    return 0


def _add_landmarks(sub: argparse._SubParsersAction) -> None:
    from spinexr.config import LandmarkConfig, add_setting_flags

    p = sub.add_parser("landmarks", help="train and cross-validate the vertebra landmark model (Cobb angles)")
    lsub = p.add_subparsers(dest="landmarks_cmd", required=True, metavar="{train,cv}")
    for name, text in (("train", "one case-grouped held-out split (--test-fraction); writes the model file"),
                       ("cv", "case-grouped k-fold CV (--folds); writes the fold-0 model file")):
        c = lsub.add_parser(name, help=text)
        c.add_argument("--data", required=True, help="an AASCE folder (images/, labels/) or a landmark CSV")
        c.add_argument("--out", help="run folder (default runs/landmarks-<verb>-<time>)")
        c.add_argument("--force", action="store_true", help="write into an existing, non-empty run folder")
        c.add_argument("--max-minutes", type=float, help="cap on each fold's training time")
        c.add_argument("--quiet", action="store_true")
        add_setting_flags(c, name, [LandmarkConfig])
        c.set_defaults(func=_cmd_landmarks)


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_add_data, _add_train, _add_deploy, _add_landmarks,
                                                                  _add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spinexr", description="Spine radiograph classification: Normal, Scoliosis, Spondylolisthesis."
    )
    parser.add_argument("--version", action="version", version=f"spinexr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for reg in REGISTRARS:
        reg(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `predict MODEL --onnx X FILES...`: argparse ends a nargs="+" positional at the first option, so
    # paths after the options come back unparsed; they belong to the items (anything else is an error).
    if extra and getattr(args, "cmd", None) in ("predict", "explain") and not any(e.startswith("-") for e in extra):
        args.items = list(args.items) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd in ("train", "cv"):
            from spinexr.engine.distributed import init_distributed
            init_distributed()  # no-op unless launched by torchrun
        return int(args.func(args) or 0)
    except SpinexrError as e:
        print(f"spinexr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spinexr: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.cmd in ("train", "cv"):  # only these verbs need torch; the others run without it
            from spinexr.engine.distributed import shutdown_distributed

            shutdown_distributed()


if __name__ == "__main__":
    raise SystemExit(main())
