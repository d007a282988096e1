"""``spinexr export``: ONNX (dynamic batch) with a checker run and a PyTorch/onnxruntime parity check,
and an optional INT8 model by onnxruntime static quantization calibrated on real images.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinexr.data.imread import file_digest, read_image
from spinexr.deploy.predictor import Predictor
from spinexr.errors import SpinexrError
from spinexr.models.files import load_landmark_model, load_refiner_model, model_kind, onnx_session

log = logging.getLogger(__name__)

PARITY_TOL = 1e-4


def _need(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SpinexrError(f"export needs {module}: pip install 'spinexr[export]'") from e


def export_onnx(model_path: str | Path, out: str | Path, opset: int = 17, parity_images: list[Path] | None = None,
                tol: float = PARITY_TOL) -> dict[str, Any]:
    """Export ``model_path`` to ``out``; checks the graph and, given images, output parity.

    Raises :class:`SpinexrError` when parity is worse than ``tol`` (max abs difference of the
    calibrated probabilities).

    Args:
        model_path: a classifier model file.
        out: the ``.onnx`` file to write (never the model file itself).
        opset: the ONNX opset.
        parity_images: films run through both (None: no parity check).
        tol: the largest difference of a calibrated probability allowed.

    Returns:
        the checker's verdict and the parity figures.
    """

    onnx = _need("onnx")
    out = Path(out)
    if out.resolve() == Path(model_path).resolve():
        raise SpinexrError("the ONNX output would overwrite the model file; choose another --onnx path")
    pred = Predictor(model_path, backend="torch")
    module = pred.module  # the one predictor: contract, network, flip TTA, temperature, OOD score
    assert module is not None
    module.eval()
    s = pred.size
    dummy = torch.rand(2, pred.contract.in_chans, s, s)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    _torch_export(module, dummy, tmp, opset)
    m = onnx.load(str(tmp))
    meta = {**pred.meta, "onnx_opset": int(m.opset_import[0].version)}
    entry = m.metadata_props.add()
    entry.key, entry.value = "spinexr", json.dumps(meta)
    onnx.checker.check_model(m)
    onnx.save(m, str(tmp))
    tmp.replace(out)
    report: dict[str, Any] = {"onnx": str(out), "opset": meta["onnx_opset"], "checker": "passed"}
    if parity_images:
        report.update(parity(pred, out, parity_images, tol))
    return report


# Which of torch's ONNX exporters writes spinexr's exports: "dynamo" (torch.export, opset 18+) or
# "torchscript" (the tracing exporter, deprecated by torch). benchmarks/onnx_exporters.py measured both
# on the bundled models: the same parity with PyTorch and the same onnxruntime latency, graphs half the
# nodes with torch.export, exports 2-7x faster with TorchScript; torch.export is kept (exports are made
# once a model file and cached by digest), TorchScript is its fallback.
EXPORTER = "dynamo"
EXPORTER_NAMES = ("dynamo", "torchscript")


def exporter_name() -> str:
    """The exporter in use (:data:`EXPORTER`)."""
    if EXPORTER not in EXPORTER_NAMES:
        raise SpinexrError(f"unknown ONNX exporter {EXPORTER!r}: choose one of {', '.join(EXPORTER_NAMES)}")
    return EXPORTER


def _torch_export(module: torch.nn.Module, dummy: torch.Tensor, path: Path, opset: int,
                  outputs: tuple[str, ...] = ("logits", "probs", "ood_score"), input_name: str = "image") -> None:
    """Export with :func:`exporter_name`'s exporter (dynamic batch); the torch.export-based one falls back
    to the TorchScript one if it fails."""
    names = {"input_names": [input_name], "output_names": list(outputs)}
    if exporter_name() == "dynamo":
        try:
            torch.onnx.export(module, (dummy,), str(path), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                              opset_version=max(opset, 18), dynamo=True, external_data=False, verbose=False, **names)
            return
        except Exception as e:  # noqa: BLE001 - any exporter failure falls back to the older exporter
            log.warning("torch.export-based ONNX export failed (%s); using the TorchScript exporter", e)
    axes = {k: {0: "batch"} for k in (input_name, *outputs)}
    torch.onnx.export(module, (dummy,), str(path), dynamic_axes=axes,
                      opset_version=opset, dynamo=False, do_constant_folding=True, **names)


def _inputs(pred: Any, images: list[Path]) -> np.ndarray:
    xs = []
    for p in images:
        img, _ = read_image(p)
        xs.append(pred.prepare(img)[0])
    return np.concatenate(xs)


def parity(pred: Any, onnx_path: Path, images: list[Path], tol: float = PARITY_TOL) -> dict[str, Any]:
    """Max abs difference between PyTorch and onnxruntime probabilities on real images (one batch)."""

    x = _inputs(pred, images)
    _, p_t, s_t = pred.run(x)
    ort_pred = Predictor(onnx_path, backend="onnx")
    _, p_o, s_o = ort_pred.run(x)
    diff = float(np.abs(p_t - p_o).max())
    rel_ood = float(np.max(np.abs(s_t - s_o) / np.maximum(1.0, np.abs(s_t)))) if pred.ood_threshold is not None else 0.0
    if diff > tol:
        raise SpinexrError(f"ONNX parity failed: max |p_torch - p_onnx| = {diff:.2e} > {tol:.0e} on {len(images)} images")
    return {"parity_images": len(images), "max_abs_prob_diff": diff, "max_rel_ood_diff": rel_ood,
            "same_predictions": bool((p_t.argmax(1) == p_o.argmax(1)).all())}


def quantize_int8(onnx_path: str | Path, out: str | Path, calibration_images: list[Path]) -> dict[str, Any]:
    """Static INT8 quantization (QDQ, per-channel weights) calibrated on ``calibration_images``."""
    pred = Predictor(onnx_path, backend="onnx")
    return _quantize_static(Path(onnx_path), Path(out), _inputs(pred, calibration_images), pred.meta)


# The landmark model's decoder (FPN laterals, the fusing conv and the heatmap head) places corners to a
# fraction of a heatmap cell: keeping it in FP32 keeps the soft-argmax's precision (the encoder is
# most of the work).
LANDMARK_DECODER_NODES = ("net.lateral", "net.fuse", "net.head")


def quantize_landmark_int8(onnx_path: str | Path, out: str | Path, calibration_images: list[Path],
                           keep_fp32: tuple[str, ...] = LANDMARK_DECODER_NODES) -> dict[str, Any]:
    """:func:`quantize_int8` for a landmark model's ONNX export, calibrated on films fitted by its
    contract; the nodes of the modules named in ``keep_fp32`` stay in FP32."""
    from spinexr.data.contract import DataConfig

    _, meta = onnx_session(Path(onnx_path), None)
    c = DataConfig.from_meta(meta)
    x = np.concatenate([c.to_input(read_image(p)[0])[0].astype(np.float32)[None, None] / 255.0
                        for p in calibration_images])
    return _quantize_static(Path(onnx_path), Path(out), x, meta, exclude=_module_nodes(onnx_path, keep_fp32))


def _module_nodes(onnx_path: str | Path, modules: tuple[str, ...]) -> list[str]:
    """The nodes of an export that belong to the named modules. The exporter records each node's module
    path in its ``namespace`` metadata (node names are generic)."""
    onnx = _need("onnx")
    return [n.name for n in onnx.load(str(onnx_path)).graph.node
            if any(k in p.value for p in n.metadata_props if p.key == "namespace" for k in modules)]


def quantize_refiner_int8(onnx_path: str | Path, out: str | Path, crops: np.ndarray,
                          keep_fp32: tuple[str, ...] = LANDMARK_DECODER_NODES, batch: int = 34) -> dict[str, Any]:
    """:func:`quantize_int8` for a vertebra refiner's crop reading (:func:`export_refiner_onnx`),
    calibrated on ``crops`` ((N, 1, S, S) in [0, 1], cut as deployed: around a first stage's corners),
    ``batch`` crops a calibration step; the nodes of the modules named in ``keep_fp32`` stay in FP32."""
    _, meta = onnx_session(Path(onnx_path), None)
    return _quantize_static(Path(onnx_path), Path(out), crops.astype(np.float32), meta,
                            exclude=_module_nodes(onnx_path, keep_fp32), input_name="crops", step=batch)


def _quantize_static(onnx_path: Path, out: Path, x: np.ndarray, meta: dict[str, Any],
                     exclude: list[str] | None = None, input_name: str = "image", step: int = 1) -> dict[str, Any]:
    q = _need("onnxruntime.quantization")

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{input_name: x[i:i + step]} for i in range(0, len(x), step)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    pre = out.with_name(out.stem + ".pre.onnx")
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        src = pre
    except Exception as e:  # pre-processing is an optimisation; quantize the plain graph without it
        log.warning("quantization pre-processing skipped: %s", e)
        src = onnx_path
    q.quantize_static(str(src), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod.MinMax,
                      op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=exclude or [])
    if pre.exists():
        pre.unlink()
    onnx = _need("onnx")
    m = onnx.load(str(out))
    del m.metadata_props[:]
    e = m.metadata_props.add()
    e.key, e.value = "spinexr", json.dumps({**meta, "quantization": "int8-static-qdq", "calibration_images": len(x),
                                            "kept_fp32": len(exclude or [])})
    onnx.save(m, str(out))
    return {"int8_onnx": str(out), "calibration_images": len(x)}


LANDMARK_PARITY_PX = 1e-2  # input pixels
REFINER_EXPORT_FORMAT = 2  # the crops read as they are; see cached_onnx


def cache_dir() -> Path:
    """Where exports made on demand are kept: ``$SPINEXR_CACHE``, else ``~/.cache/spinexr``."""
    return Path(os.environ.get("SPINEXR_CACHE") or Path.home() / ".cache" / "spinexr") / "onnx"


def cached_onnx(model_path: str | Path) -> Path:
    """The ONNX export of a model file (classifier, landmark model or vertebra refiner), made once and kept in
    :func:`cache_dir` under the file's SHA-256, so ``--backend onnx`` needs no export step. Several
    processes exporting at once each write their own file and rename it into place."""
    model_path = Path(model_path)
    digest = file_digest(model_path)
    if digest is None:
        raise SpinexrError(f"{model_path}: model file not found")
    exporter = EXPORTERS[model_kind(model_path)]
    version = f"-x{exporter.version}" if exporter.version > 1 else ""
    version += "" if exporter_name() == "dynamo" else f"-{exporter_name()}"
    out = cache_dir() / f"{model_path.stem}-{digest[:16]}{version}.onnx"
    if out.is_file():
        return out
    log.info("exporting %s to ONNX once (kept in %s)", model_path, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    mine = out.with_name(f"{out.stem}.{os.getpid()}.onnx")
    exporter.export(model_path, mine)
    os.replace(mine, out)
    return out


def export_landmark_onnx(model_path: str | Path, out: str | Path, opset: int = 17,
                         parity_images: list[Path] | None = None, tol: float = LANDMARK_PARITY_PX) -> dict[str, Any]:
    """Export a landmark model file (contract normalisation, network and soft-argmax decoding) to ONNX;
    given films, check that onnxruntime puts every corner within ``tol`` input pixels of PyTorch.

    Args:
        model_path: a landmark model file.
        out: the ``.onnx`` file to write (never the model file itself).
        opset: the ONNX opset.
        parity_images: films run through both (None: no parity check).
        tol: the largest corner difference allowed, in input pixels.

    Returns:
        the checker's verdict and the parity figures.
    """

    onnx = _need("onnx")
    out = Path(out)
    if out.resolve() == Path(model_path).resolve():
        raise SpinexrError("the ONNX output would overwrite the model file; choose another --onnx path")
    pred, meta = load_landmark_model(model_path)
    c = pred.contract
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    _torch_export(pred, torch.rand(2, c.in_chans, c.height, c.width), tmp, opset, outputs=("landmarks", "confidence"))
    m = onnx.load(str(tmp))
    entry = m.metadata_props.add()
    entry.key, entry.value = "spinexr", json.dumps({**meta, "onnx_opset": int(m.opset_import[0].version)})
    onnx.checker.check_model(m)
    onnx.save(m, str(tmp))
    tmp.replace(out)
    report: dict[str, Any] = {"onnx": str(out), "checker": "passed"}
    if parity_images:
        x = np.concatenate([c.to_input(read_image(p)[0])[0].astype(np.float32)[None, None] / 255.0
                            for p in parity_images])
        with torch.no_grad():
            pt_torch = pred(torch.from_numpy(x))[0].numpy()
        sess, _ = onnx_session(out, None)
        pt_ort = sess.run(["landmarks"], {"image": x})[0]
        diff = float(np.abs(pt_torch - pt_ort).max())
        if diff > tol:
            raise SpinexrError(f"landmark ONNX parity failed: corners differ by up to {diff:.2e} input pixels "
                               f"(> {tol:g}) on {len(parity_images)} films")
        report.update({"parity_images": len(parity_images), "max_abs_px_diff": diff})
    return report


REFINER_PARITY_PX = 1e-2  # crop pixels


def export_refiner_onnx(model_path: str | Path, out: str | Path, opset: int = 17,
                        tol: float = REFINER_PARITY_PX) -> dict[str, Any]:
    """Export a vertebra refiner's plain crop reading (:class:`~spinexr.models.refine.CropReader`: crops
    in, corners out, any number of crops) to ONNX; the crops are still cut, and mirrored for the mirror
    reading, by PyTorch (``grid_sample``). A
    parity check on random crops: onnxruntime within ``tol`` crop pixels of PyTorch, or no file."""
    from spinexr.models.refine import CropReader

    onnx = _need("onnx")
    out = Path(out)
    if out.resolve() == Path(model_path).resolve():
        raise SpinexrError("the ONNX output would overwrite the model file; choose another --onnx path")
    ref, meta = load_refiner_model(model_path)
    reader = CropReader(ref).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    _torch_export(reader, torch.rand(17, 1, ref.crop, ref.crop), tmp, opset, outputs=("corners",), input_name="crops")
    m = onnx.load(str(tmp))
    entry = m.metadata_props.add()
    entry.key, entry.value = "spinexr", json.dumps({**meta, "onnx_opset": int(m.opset_import[0].version)})
    onnx.checker.check_model(m)
    onnx.save(m, str(tmp))
    x = torch.Generator().manual_seed(0)
    crops = torch.rand(17, 1, ref.crop, ref.crop, generator=x)
    with torch.no_grad():
        want = reader(crops).numpy()
    sess, _ = onnx_session(tmp, None)
    got = sess.run(["corners"], {"crops": crops.numpy()})[0]
    diff = float(np.abs(want - got).max())
    if diff > tol:
        tmp.unlink()
        raise SpinexrError(f"vertebra refiner ONNX parity failed: corners differ by up to {diff:.2e} crop pixels (> {tol:g})")
    tmp.replace(out)
    return {"onnx": str(out), "checker": "passed", "max_abs_px_diff": diff}


@dataclass(frozen=True)
class Exporter:
    """How one kind of model file (:data:`spinexr.models.files.KINDS`, by name) is exported to ONNX.

    Args:
        export: ``(model file, out.onnx) -> facts``; it checks parity with PyTorch before it returns.
        version: the export's own format: cached exports of an older one are made again.
    """

    export: Callable[..., dict[str, Any]]
    version: int = 1


# Every kind of model file has its exporter here, under the kind's name. A refiner's export holds its
# plain crop reading (the mirror reading is done around it) since export format 2; an export of format 1
# held the mirror reading too and is not reused.
EXPORTERS: dict[str, Exporter] = {
    "classifier": Exporter(export_onnx),
    "landmarks": Exporter(export_landmark_onnx),
    "refiner": Exporter(export_refiner_onnx, version=REFINER_EXPORT_FORMAT),
}
