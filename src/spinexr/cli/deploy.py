"""``spinexr predict``, ``explain``, ``export``, ``models`` and ``bundle``: a pipeline on films, and the
files that make one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image

from spinexr.cli._common import guard_output, say
from spinexr.cli._parser import LOCAL_RAY
from spinexr.data.imread import list_images, read_image
from spinexr.data.landmarks import load_landmark_source
from spinexr.data.manifest import from_csv
from spinexr.deploy.bundle import fit_rule as fit_bundle_rule
from spinexr.deploy.bundle import is_bundle, load_bundle, write_bundle
from spinexr.deploy.bundled import bundled_bundle_dir, bundled_models
from spinexr.deploy.document import summary_line
from spinexr.deploy.export import EXPORTERS, export_landmark_onnx, export_onnx, quantize_int8
from spinexr.deploy.measure import SpineMeasurer
from spinexr.errors import SpinexrError
from spinexr.explain import overlay
from spinexr.geometry.curves import find_curves, pattern
from spinexr.models.files import load_landmark_model, model_kind, read_metadata
from spinexr.outputs import Sink, output_kinds
from spinexr.outputs.images import HeatmapSink
from spinexr.outputs.results import ResultFile
from spinexr.pipeline import MODEL_SUFFIXES, Pipeline, PipelineSpec
from spinexr.pipeline.driver import run_films
from spinexr.pipeline.executors import InProcess, Jobs
from spinexr.pipeline.source import expand_paths


def split_source(items: list[str]) -> tuple[str | None, list[str]]:
    """(the bundle or classifier file the items start with, or None for the bundled models; the rest)."""
    if items and (is_bundle(items[0]) or Path(items[0]).suffix.lower() in MODEL_SUFFIXES):
        return items[0], list(items[1:])
    return None, list(items)


def load_pipeline(args: argparse.Namespace, source: str | None) -> Pipeline:
    return Pipeline.load(PipelineSpec.from_args(args, source))


def _sinks(args: argparse.Namespace, paths: list[Path]) -> list[Sink]:
    """The outputs the flags ask for, each guarded and checked writable before any model loads; the result
    file last, so the other outputs of a film exist before the film counts as done."""
    force = args.force or args.resume
    sinks: list[Sink] = []
    for kind in output_kinds():
        value = getattr(args, kind.dest, None)
        if value:
            dest = guard_output(value, force=force, folder=kind.folder, inputs=paths, what=kind.flag.lstrip("-"))
            sinks.append(kind.make(dest, args))
    if args.explain and not any(isinstance(s, HeatmapSink) for s in sinks):
        raise SpinexrError("--explain needs --heatmaps DIR to write the overlays into")
    if args.out:  # with --resume the output is continued, never replaced
        sinks.append(ResultFile(guard_output(args.out, force=force, inputs=paths), resume=args.resume))
    return sinks


def _executor(args: argparse.Namespace) -> Any:
    if args.ray is not None:
        from spinexr.pipeline.ray import RayCluster

        if args.jobs != 1:
            raise SpinexrError("--jobs is for one machine; on Ray, --ray-cpus-per-actor sets each actor's share")
        return RayCluster(address=None if args.ray == LOCAL_RAY else args.ray, cpus_per_actor=args.ray_cpus_per_actor,
                          batch_size=args.batch_size, progress=not args.quiet)
    if args.jobs != 1:
        return Jobs(jobs=args.jobs, batch_size=args.batch_size)
    return InProcess(batch_size=args.batch_size, workers=args.workers)


def predict(args: argparse.Namespace) -> int:
    source, items = split_source(args.items)
    films = expand_paths(items, recursive=args.recursive)
    if not films.paths:
        raise SpinexrError("no files to predict: give image files or folders (with --recursive for sub-folders)"
                           + (f"; {films.line()}" if films.line() else ""))
    if args.resume and not args.out:
        raise SpinexrError("--resume continues an --out file: give the output the killed run was writing")
    if args.ray is not None and not args.out:
        raise SpinexrError("--ray writes its results to a file: give --out preds.csv (or .jsonl, .json)")
    executor = _executor(args)
    if hasattr(executor, "prepare"):  # a Ray cluster is reached before anything is written or loaded
        executor.prepare()
    sinks = _sinks(args, films.paths)  # every output checked before the models load
    pipeline = load_pipeline(args, source)
    res = run_films(pipeline, films.paths, sinks, executor, progress=not args.quiet,
                    on_batch=None if args.out else lambda docs: say(*(summary_line(d) for d in docs)))
    if args.out:
        say(f"wrote {args.out}")
    say(*res.lines, err=True)
    if films.line():
        say(films.line(), err=True)  # type: ignore[arg-type]
    say(res.tally.line(), err=True)
    return 0 if res.tally.ok or res.tally.not_analysed else 1


def _measurement_line(m: Any) -> str:
    if m.result is None:
        return f"no Cobb angle: the predicted spine is implausible ({'; '.join(m.refused)})"
    r = m.result
    curves = find_curves(m.landmarks, r.centreline_weight)
    each = "; ".join(f"{c.name} {c.angle:.1f}° {c.upper_end}-{c.lower_end}, apex {c.apex}" for c in curves)
    return f"Cobb: largest {r.largest:.1f}° ({r.band}); {pattern(curves)}{': ' + each if each else ''}"


def explain(args: argparse.Namespace) -> int:
    source, rest = split_source(args.items)
    if len(rest) != 1:
        raise SpinexrError("explain takes [BUNDLE|MODEL] IMAGE: one bundle or model file (optional) and one image")
    image = rest[0]
    out = guard_output(args.out, force=args.force, inputs=[image])
    if source is None and args.landmarks is None:
        args.no_landmarks = True  # the bundled classifier alone, unless --landmarks asks for the measurement
    pipeline = load_pipeline(args, source)
    img, _ = read_image(image)
    p = pipeline.predictor.predict_image(img)
    target = pipeline.labels.index(args.target) if args.target else None
    heat, t = pipeline.explain(img, args.method, target)
    Image.fromarray(overlay(img, heat)).save(out)
    say(f"{image}: {p.label} ({p.probabilities[p.label]:.3f}); {args.method} map for {pipeline.labels[t]} -> {out}")
    if pipeline.measurer is not None:
        dest = guard_output(out.with_name(out.stem + "_cobb" + out.suffix), force=args.force, inputs=[image])
        m = pipeline.measure(img)
        Image.fromarray(pipeline.overlay(img, m)).save(dest)
        say(f"{_measurement_line(m)} -> {dest}")
    return 0


def _parity_images(folder: str | None, meta: dict, count: int) -> list[Path]:
    src = folder or meta.get("training_data", {}).get("source")
    if not src:
        raise SpinexrError("give --parity-data DIR: a folder of radiographs for the parity check")
    p = Path(src)
    if p.suffix.lower() == ".csv":
        files = [r.path for r in from_csv(p).records]
    elif p.is_dir():
        files = list_images(p)
    else:
        raise SpinexrError(f"{p}: not found; give --parity-data DIR with radiographs")
    if not files:
        raise SpinexrError(f"{p}: holds no images for the parity check")
    step = max(1, len(files) // count)
    return files[::step][:count]


def _export_landmarks(args: argparse.Namespace, out: Path) -> int:
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
    say(f"wrote {out}: checker {rep['checker']}; parity on {rep.get('parity_images', 0)} films: "
        f"corners within {rep.get('max_abs_px_diff', float('nan')):.2e} input pixels")
    return 0


def export(args: argparse.Namespace) -> int:
    out = guard_output(args.onnx, force=args.force, inputs=[args.model])
    kind = model_kind(args.model)
    if kind == "landmarks":
        return _export_landmarks(args, out)
    if kind == "refiner":  # its crop reading, checked on random crops (the crops are cut in PyTorch)
        rep = EXPORTERS[kind].export(args.model, out, opset=args.opset)
        say(f"wrote {out}: checker {rep['checker']}; corners within {rep['max_abs_px_diff']:.2e} crop pixels "
            "of PyTorch on random crops")
        return 0
    meta = read_metadata(args.model)
    rep = export_onnx(args.model, out, opset=args.opset, parity_images=_parity_images(args.parity_data, meta,
                                                                                       args.parity_count))
    say(f"wrote {out}: checker {rep['checker']}; parity on {rep.get('parity_images', 0)} images: "
        f"max |dp| = {rep.get('max_abs_prob_diff', float('nan')):.2e}")
    if args.int8:
        q = guard_output(args.int8, force=args.force, inputs=[args.model, out])
        calib = _parity_images(args.calibration_data or args.parity_data, meta, args.calibration_count)
        quantize_int8(out, q, calib)
        say(f"wrote {q} (INT8, calibrated on {len(calib)} images)")
    return 0


def models(args: argparse.Namespace) -> int:
    found = bundled_models()
    if args.card:
        hit = [m for m in found if m.name == args.card]
        if not hit:
            raise SpinexrError(f"no bundled model named {args.card!r}; bundled: {', '.join(m.name for m in found) or 'none'}")
        if hit[0].card is None:
            raise SpinexrError(f"the bundled {args.card} model has no model card in this installation")
        say(hit[0].card.read_text())
        return 0
    if args.json:
        say(json.dumps([{"name": m.name, "kind": m.kind, "path": str(m.path), "card": str(m.card) if m.card else None,
                         "size_bytes": m.size_bytes, "meta": m.meta} for m in found], indent=2))
        return 0
    if not found:
        say("no bundled models in this installation; train one with `spinexr train` / `spinexr landmarks train`")
        return 0
    for m in found:
        say(m.describe(), f"{'':11} {m.path}" + (f"\n{'':11} card: spinexr models --card {m.name}" if m.card else ""))
    say(f"bundle: {bundled_bundle_dir()} (`spinexr bundle show`)",
        "research use only: these models are not a diagnosis; read each card's known failure modes.")
    return 0


def bundle_create(args: argparse.Namespace) -> int:
    out = guard_output(args.out, force=args.force, folder=True, inputs=[args.classifier, args.landmarks or args.classifier],
                       what="bundle folder")
    rule = None
    if args.fit_on:
        if not args.landmarks:
            raise SpinexrError("--fit-on fits the rule that joins a landmark model to the classifier: give --landmarks too")
        rule = fit_bundle_rule(SpineMeasurer(args.landmarks, device=args.device, refiner=args.refiner), args.fit_on,
                               max_rate=args.max_rate, progress=not args.quiet)
    b = write_bundle(out, args.classifier, args.landmarks, rule, name=args.name or out.resolve().name,
                     description=args.description, refiner=args.refiner)
    say(*_bundle_lines(b))
    return 0


def _bundle_lines(b: Any) -> list[str]:
    m = b.manifest
    lines = [f"bundle {b.name} ({b.root}), digest {b.digest[:16]}",
             f"  classifier: {m['classifier']['file']} ({m['classifier'].get('architecture')})"]
    if m.get("landmarks"):
        rule = m["rule"]["decision"]
        lines += [f"  landmarks:  {m['landmarks']['file']} ({m['landmarks'].get('encoder')})"
                  + (f", refined by {m['refiner']['file']}" if m.get("refiner") else ""),
                  f"  rule v{m['rule']['version']}: curve line {rule['curve_deg']:g}°, doubted views "
                  f"{rule['doubted_view_deg']:g}°; view check {'yes' if m['rule'].get('view_check') else 'none'}"
                  + (f"; fitted on {rule['fitted_on']}" if rule.get("fitted_on") else "")]
    else:
        lines.append("  no landmark model: predictions carry the classifier's label alone")
    return lines


def bundle_show(args: argparse.Namespace) -> int:
    b = load_bundle(args.bundle or bundled_bundle_dir())
    say(*_bundle_lines(b))
    return 0
