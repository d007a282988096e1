"""The command line's grammar: every verb and its flags, and which handler runs it.

This module imports nothing heavy (no torch), so ``spinexr data check`` and ``spinexr --help`` start
fast; each verb names its handler as ``module:function`` in :mod:`spinexr.cli`, imported only when it runs.
"""

from __future__ import annotations

import argparse

from spinexr import CLASSES, __version__
from spinexr.config import BUNDLED, DECODE_WORKERS, EXPLAIN_METHODS, LandmarkConfig, add_setting_flags
from spinexr.data.imread import DEFAULT_MAX_PIXELS, UPLOAD_MAX_PIXELS
from spinexr.outputs import output_kinds

LOCAL_RAY = "local"  # `--ray` without an address: a Ray cluster started on this machine

Sub = argparse._SubParsersAction


def _handler(p: argparse.ArgumentParser, target: str) -> None:
    p.set_defaults(handler=target)


def _add_data(sub: Sub) -> None:
    p = sub.add_parser("data", help="check or synthesise datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{check,synth}")
    c = dsub.add_parser("check", help="counts, unreadable files, duplicates, size shortcut; writes a manifest")
    c.add_argument("source", help="a folder with one sub-folder per class, or a CSV manifest")
    c.add_argument("--out", default="spinexr-check", help="where manifest.csv and data_report.json go")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--force", action="store_true", help="replace manifest.csv/data_report.json in --out")
    c.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    c.add_argument("--near-dup-threshold", type=float, default=0.97,
                   help="thumbnail correlation above which two images are near-duplicates")
    _handler(c, "data:check")
    s = dsub.add_parser("synth", help="synthetic spine radiographs with known labels and severities")
    s.add_argument("out", help="output folder (class folders plus labels.csv)")
    s.add_argument("--n", type=int, default=60, help="number of images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=float, default=1.0, help="image size factor (1.0: ~1000 px tall AP)")
    s.add_argument("--format", choices=["jpg", "png", "dcm"], default="jpg",
                   help="dcm: DX DICOM files, each of its own made-up patient and study")
    s.add_argument("--force", action="store_true", help="write into a non-empty folder")
    s.add_argument("--contact-sheet", metavar="PNG", help="also tile every image into this PNG")
    _handler(s, "data:synth")


def _add_common_train_flags(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--config", help="YAML file of settings; flags override it")
    p.add_argument("--data", help="class-folder tree or CSV manifest")
    p.add_argument("--out", help="run folder (default runs/<verb>-<time>)")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty run folder")
    add_setting_flags(p, verb)  # one flag per setting of CVConfig / TrainConfig, generated from the dataclasses
    p.add_argument("--no-tta", dest="tta_flip", action="store_false", default=None,
                   help="no flip test-time augmentation (same as --no-tta-flip)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train(sub: Sub) -> None:
    p = sub.add_parser("cv", help="k-fold x repeats cross-validation of one or more models, an ensemble, a report")
    _add_common_train_flags(p, "cv")
    p.add_argument("--models", help="comma-separated: xception,inception_v3,densenet121,small")
    _handler(p, "train:cv")
    t = sub.add_parser("train", help="one model, one split; writes a deployable model file")
    _add_common_train_flags(t, "train")
    t.add_argument("--model", dest="models", help="xception, inception_v3, densenet121 or small")
    _handler(t, "train:train")
    e = sub.add_parser("evaluate", help="a trained model file or bundle on another dataset, with the same report")
    e.add_argument("model", help="a classifier model file (.safetensors) or a bundle folder")
    e.add_argument("--data", required=True, help="class-folder tree or CSV manifest (it may hold only some classes)")
    e.add_argument("--angles", help="true Cobb angles: a CSV (path + largest, or pt,mt,tl) or an AASCE-layout folder")
    e.add_argument("--landmarks", help="a landmark model file: also score its measured angle against --angles "
                   "(default: the bundle's, when MODEL is a bundle)")
    e.add_argument("--out", help="run folder")
    e.add_argument("--force", action="store_true")
    e.add_argument("--device", default="auto")
    e.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for the intervals (cv.bootstrap)")
    e.add_argument("--cache-dir")
    e.add_argument("--quiet", action="store_true")
    _handler(e, "train:evaluate")


def _add_source(p: argparse.ArgumentParser, items_help: str) -> None:
    p.add_argument("--landmarks", metavar="LANDMARK_MODEL", nargs="?", const=BUNDLED,
                   help="measure the spine with this landmark model (no file: the bundled one); a bundle brings its own")
    p.add_argument("--no-landmarks", action="store_true", help="classify only, without measuring the spine")
    p.add_argument("--device", default="cpu")
    p.add_argument("items", nargs="+", metavar="[BUNDLE|MODEL] PATH", help=items_help)


def _add_deploy(sub: Sub) -> None:
    p = sub.add_parser("predict", help="files or folders to CSV, JSON or JSON Lines; bad files are reported and "
                                       "the batch goes on")
    _add_source(p, "image files and/or folders, after an optional bundle folder or classifier model file "
                   "(.safetensors or .onnx); without one, the bundled models run (see `spinexr models`)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--out", help="preds.csv, preds.json or preds.jsonl: prediction documents (default: print a line each)")
    p.add_argument("--explain", choices=EXPLAIN_METHODS, help="the method of --heatmaps (default gradcam)")
    for kind in output_kinds():  # every registered output (spinexr.outputs) is a flag here
        p.add_argument(kind.flag, dest=kind.dest, metavar=kind.metavar, help=kind.help)
    p.add_argument("--backend", choices=["torch", "onnx"], help="default: torch, or onnx for an .onnx model")
    p.add_argument("--onnx", help="an ONNX export of the classifier to run on onnxruntime")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file or non-empty folders")
    p.add_argument("--resume", action="store_true", help="continue an --out file a killed run was writing: films "
                   "already in it (same path and content) are skipped")
    p.add_argument("--batch-size", type=int, default=16, help="films per model call (results are written per batch)")
    p.add_argument("--workers", type=int, default=DECODE_WORKERS,
                   help="processes decoding films while the models run (0: decode in the main process)")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes that each run the whole pipeline on their own batches, this machine's CPUs "
                        "shared among them (decoding included; --workers is then unused). On a CPU, --jobs 2 "
                        "--backend onnx is the fastest; each process holds the models (memory x N)")
    p.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                   help="map the pipeline over a Ray cluster (HOST:6379 or ray://HOST:10001; alone: a local one); "
                        "needs --out and spinexr[ray]")
    p.add_argument("--ray-cpus-per-actor", type=int, default=1, help="CPUs (and ONNX Runtime threads) per Ray actor")
    p.add_argument("--quiet", action="store_true")
    _handler(p, "deploy:predict")
    e = sub.add_parser("explain", help="Grad-CAM, Grad-CAM++ or the attention map over one image")
    _add_source(e, "an optional bundle or classifier model file (default: the bundled classifier), then the image")
    e.add_argument("--method", choices=EXPLAIN_METHODS, default="gradcam")
    e.add_argument("--target", choices=CLASSES, help="class to explain")
    e.add_argument("--out", default="explanation.png", help="the map; with a landmark model, OUT_cobb too")
    e.add_argument("--force", action="store_true")
    _handler(e, "deploy:explain")
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
    _handler(x, "deploy:export")
    m = sub.add_parser("models", help="the trained models that ship with spinexr, with their model cards")
    m.add_argument("--card", metavar="NAME", help="print this model's card (classifier or landmarks)")
    m.add_argument("--json", action="store_true", help="machine-readable list")
    _handler(m, "deploy:models")


def _add_bundle(sub: Sub) -> None:
    p = sub.add_parser("bundle", help="make or show a bundle: a classifier, a landmark model and the rule joining them")
    bsub = p.add_subparsers(dest="bundle_cmd", required=True, metavar="{create,show}")
    c = bsub.add_parser("create", help="a bundle folder from your models; the rule fitted on a labelled folder")
    c.add_argument("out", help="the bundle folder to write (new, or empty)")
    c.add_argument("--classifier", required=True, help="a classifier model file (.safetensors)")
    c.add_argument("--landmarks", help="a landmark model file (.safetensors); without one, a classify-only bundle")
    c.add_argument("--refiner", help="a vertebra refiner file (the landmark model's second stage; needs --landmarks)")
    c.add_argument("--fit-on", metavar="DATA", help="a labelled class-folder tree or CSV manifest (Normal, Scoliosis "
                   "and Spondylolisthesis films) to fit the rule's curve line and view check on; without it, the "
                   "rule the landmark model file carries")
    c.add_argument("--name", help="the bundle's name (default: the folder's)")
    c.add_argument("--description", default="")
    c.add_argument("--max-rate", type=float, default=0.02, help="share of Normal films allowed over the curve line")
    c.add_argument("--device", default="cpu")
    c.add_argument("--force", action="store_true", help="write into a non-empty folder")
    c.add_argument("--quiet", action="store_true")
    _handler(c, "deploy:bundle_create")
    s = bsub.add_parser("show", help="a bundle's manifest, checked (files present and unchanged)")
    s.add_argument("bundle", nargs="?", help="a bundle folder (default: the bundled one)")
    _handler(s, "deploy:bundle_show")


def _add_serve(sub: Sub) -> None:
    s = sub.add_parser("serve", help="REST API and browser page (FastAPI + uvicorn)")
    s.add_argument("model", nargs="?", help="a bundle folder or classifier model file (default: the bundled models)")
    s.add_argument("--landmarks", metavar="LANDMARK_MODEL", nargs="?", const=BUNDLED,
                   help="also measure the spine with this landmark model (no file: the bundled one)")
    s.add_argument("--no-landmarks", action="store_true", help="classify only")
    s.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--onnx", help="serve /v1/predict with onnxruntime on this export of the classifier")
    s.add_argument("--max-upload-mb", type=float, default=32.0)
    s.add_argument("--max-pixels", type=int, default=UPLOAD_MAX_PIXELS)
    s.add_argument("--threads", type=int, default=None, help="inference threads")
    s.add_argument("--max-batch", type=int, default=8, help="most concurrent requests run as one model call")
    s.add_argument("--max-queue", type=int, default=32,
                   help="most images waiting for the model; beyond it a request gets 503 with Retry-After")
    s.add_argument("--corrections", metavar="DIR", help="save corners corrected in the page here (landmark CSV "
                                                        "and a JSON record each; new versions, nothing overwritten)")
    s.add_argument("--token", help="saving corrections needs this bearer token (or set SPINEXR_SERVE_TOKEN); "
                                   "required to save when --host is not loopback")
    _handler(s, "serve:serve")


def _add_pacs(sub: Sub) -> None:
    p = sub.add_parser("pacs", help="predict the CR/DX films of a PACS (DICOMweb or DIMSE) and store the reports back")
    psub = p.add_subparsers(dest="pacs_cmd", required=True, metavar="{watch,listen,status}")
    w = psub.add_parser("watch", help="find new CR/DX studies (QIDO-RS), retrieve (WADO-RS), predict, and store "
                                      "each film's SR and presentation state into its study (STOW-RS)")
    w.add_argument("url", help="the server's DICOMweb root, e.g. http://localhost:8042/dicom-web")
    w.add_argument("--model", help="a bundle folder or classifier model file (default: the bundled models)")
    w.add_argument("--state", default="spinexr-pacs.sqlite",
                   help="the file that remembers what was done, so a restart repeats and skips nothing")
    w.add_argument("--once", action="store_true", help="one pass over the server, then stop (default: poll)")
    w.add_argument("--interval", type=float, default=30.0, help="seconds between passes when polling")
    w.add_argument("--since", metavar="YYYYMMDD", help="only studies of this date or later")
    w.add_argument("--full-sweep", type=float, default=24.0, metavar="HOURS",
                   help="hours between passes that ask for every study (from --since on); the passes between ask "
                        "only for studies from the day before the last pass on (default 24)")
    w.add_argument("--modalities", default="CR,DX", help="series modalities read as films")
    w.add_argument("--auth-file", help="a private file with 'user = ...' and 'password = ...', or 'token = ...' "
                                       "(or set SPINEXR_PACS_USER and SPINEXR_PACS_PASSWORD, or SPINEXR_PACS_TOKEN)")
    w.add_argument("--retries", type=int, default=5,
                   help="with --once: tries before giving up on a server that cannot be reached")
    w.add_argument("--work", help="folder for films in flight (default: a temporary one)")
    w.add_argument("--batch-size", type=int, default=8)
    w.add_argument("--device", default="cpu")
    w.add_argument("--backend", choices=["torch", "onnx"], default=None)
    w.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    _handler(w, "pacs:watch")
    n = psub.add_parser("listen", help="a DICOM node: receive films by C-STORE (from a router or a modality), "
                                       "predict, and C-STORE each film's SR and presentation state to a destination")
    n.add_argument("--destination", required=True, metavar="AE@HOST:PORT",
                   help="where the reports go, e.g. ORTHANC@pacs.example.org:4242")
    n.add_argument("--allow", required=True, metavar="AE[,AE...]",
                   help="the calling AE titles accepted (a router's, a modality's); '*' accepts any caller")
    n.add_argument("--ae-title", default="SPINEXR", help="spinexr's AE title (default SPINEXR)")
    n.add_argument("--port", type=int, default=11112, help="the DICOM port to listen on (default 11112)")
    n.add_argument("--bind", default="127.0.0.1", help="the address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    n.add_argument("--model", help="a bundle folder or classifier model file (default: the bundled models)")
    n.add_argument("--state", default="spinexr-pacs.sqlite",
                   help="the file that remembers what was done, so a restart repeats and skips nothing")
    n.add_argument("--inbox", help="where received films wait until reported (default: the state file's name "
                                   "with .inbox); films left there by a killed run are taken up at start")
    n.add_argument("--batch-size", type=int, default=8)
    n.add_argument("--device", default="cpu")
    n.add_argument("--backend", choices=["torch", "onnx"], default=None)
    n.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    _handler(n, "pacs:listen")
    st = psub.add_parser("status", help="what a state file records: studies done, skipped, films reported, failed")
    st.add_argument("--state", default="spinexr-pacs.sqlite")
    st.add_argument("--json", action="store_true", help="every study as JSON")
    _handler(st, "pacs:status")


def _add_demo(sub: Sub) -> None:
    p = sub.add_parser("demo", help="the whole path on synthetic data, offline, on a CPU")
    p.add_argument("--out", default="demo", help="demo folder (data, check and run)")
    p.add_argument("--n", type=int, default=150, help="number of synthetic images")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an earlier demo run in the same folder")
    _handler(p, "demo:demo")


def _add_landmarks(sub: Sub) -> None:
    p = sub.add_parser("landmarks", help="train and cross-validate the vertebra landmark model (Cobb angles)")
    lsub = p.add_subparsers(dest="landmarks_cmd", required=True, metavar="{train,cv,evaluate}")
    for name, text in (("train", "one case-grouped held-out split (--test-fraction); writes the model file"),
                       ("cv", "case-grouped k-fold CV (--folds); writes the fold-0 model file")):
        c = lsub.add_parser(name, help=text)
        if name == "train":
            c.add_argument("--init", metavar="MODEL", help="fine-tune this landmark model file: its weights and "
                           "contract, 10 epochs at a tenth of its learning rate unless set (e.g. on saved "
                           "corrections: --data DIR/latest.csv)")
            c.add_argument("--stage", choices=["landmarks", "refiner"], default="landmarks",
                           help="landmarks: the whole-spine landmark model; refiner: the vertebra refiner, its second "
                                "stage, trained on every film with plausible corners (--encoder, --epochs, --seed, "
                                "--batch-size, --lr, --weight-decay, --warmup-epochs, --patience apply)")
            c.add_argument("--passes", type=int, default=1, help="with --stage refiner: how many times the refiner "
                           "reads its crops when it measures")
        c.add_argument("--config", help="YAML file with a landmarks: section (and data:, out:); flags override it")
        c.add_argument("--data", help="an AASCE folder (images/, labels/) or a landmark CSV")
        c.add_argument("--out", help="run folder (default runs/landmarks-<verb>-<time>)")
        c.add_argument("--force", action="store_true", help="write into an existing, non-empty run folder")
        c.add_argument("--max-minutes", type=float, help="cap on each fold's training time")
        c.add_argument("--quiet", action="store_true")
        add_setting_flags(c, name, [LandmarkConfig])
        _handler(c, "train:landmarks")
    e = lsub.add_parser("evaluate", help="a bundle's measurement (default: the bundled models) or a landmark model "
                                         "file on a labelled landmark set: SMAPE, angle MAEs, within 5 deg")
    e.add_argument("model", nargs="?", help="a bundle folder or a landmark model file (default: the bundled models)")
    e.add_argument("--data", required=True, help="a landmark CSV (path,x1..x68,y1..y68[,pt,mt,tl]) or an AASCE folder "
                   "(labels/ and images/, or the three label CSVs flat beside the image folder)")
    e.add_argument("--out", help="folder for metrics.json and per_film.csv")
    e.add_argument("--device", default="cpu")
    e.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    e.add_argument("--quiet", action="store_true")
    _handler(e, "train:landmarks_evaluate")


REGISTRARS = (_add_data, _add_train, _add_deploy, _add_bundle, _add_serve, _add_pacs, _add_landmarks, _add_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spinexr", description="Spine radiograph classification (Normal, Scoliosis, Spondylolisthesis) and "
                                    "Cobb angles.")
    parser.add_argument("--version", action="version", version=f"spinexr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for reg in REGISTRARS:
        reg(sub)
    return parser
