"""The deployable model files: weights as safetensors, with everything needed to use them in their
metadata, and the registry of the kinds spinexr writes (:data:`KINDS`: classifier, landmark model,
vertebra refiner), each with how it is told apart, checked, loaded, named in a bundle and shipped.

One ``.safetensors`` file carries the weights and a JSON ``spinexr`` metadata entry: labels, the data
contract (``data_config``: input size, normalisation, resize mode, channels), whether the predictor
averages with a mirrored copy (``tta_flip``), the temperature, architecture, attention, version and a
training data summary; the OOD detector's arrays are stored beside the weights. Loading never
unpickles anything. A ``.json`` copy of the metadata is written beside it for people to read.
Format 2 added ``data_config`` and ``tta_flip``; files of format 1 still load, with the flat contract
keys they carry and no flip (what their deployed graph ran).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from spinexr import CLASSES, __version__
from spinexr.data.contract import DataConfig
from spinexr.errors import SpinexrError, WeightsError
from spinexr.geometry.cobb import CORNERS, LEVELS
from spinexr.models import create_model
from spinexr.models.inference import InferenceModule
from spinexr.models.landmark import CODECS, LandmarkNet, LandmarkPredictor, parse_scales
from spinexr.models.ood import OODDetector

FORMAT = "spinexr-model/2"
READABLE_FORMATS = ("spinexr-model/1", FORMAT)


def write_model_file(state: dict[str, torch.Tensor], meta: dict[str, Any], path: str | Path,
                     sidecar: bool = True) -> Path:
    """The one safetensors writer: tensors and the ``spinexr`` metadata to ``path`` atomically (a
    temporary file, then a rename), and with ``sidecar`` a ``.json`` copy of the metadata for people.

    Args:
        state: the tensors.
        meta: the metadata, stored as JSON under ``spinexr``.
        path: the ``.safetensors`` file.
        sidecar: also write ``path`` with a ``.json`` suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"spinexr": json.dumps(meta)})
    tmp.replace(path)
    if sidecar:
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path


def build_metadata(model: nn.Module, *, contract: DataConfig, tta_flip: bool, temperature: float, weights: str,
                   data_summary: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A classifier model file's metadata (format 2): labels, data contract, flip, temperature,
    architecture, version, training data.

    Args:
        model: the trained classifier (its ``arch`` and ``attention_kind`` are recorded).
        contract: the data contract it was trained with.
        tta_flip: whether the predictor averages with a mirrored copy.
        temperature: the calibration temperature.
        weights: the initial weights it was trained from (``imagenet``, ``none``, a file).
        data_summary: what it was trained on.
        extra: further entries.
    """
    meta = {
        "format": FORMAT,
        "labels": list(CLASSES),
        "architecture": getattr(model, "arch", ""),
        "attention": getattr(model, "attention_kind", "none"),
        "data_config": contract.to_dict(),
        "tta_flip": bool(tta_flip),
        "temperature": float(temperature),
        "initial_weights": weights,
        "spinexr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_data": data_summary or {},
    }
    meta.update(extra or {})
    return meta


OOD_KEYS = ("mean", "components", "class_means", "precision")


def save_model(model: nn.Module, meta: dict[str, Any], path: str | Path, ood: Any = None) -> Path:
    """Write ``path`` (.safetensors) and ``path.json``; the write is atomic.

    ``ood`` (an :class:`~spinexr.ood.OODDetector`) is stored as ``ood.*`` tensors beside the weights.

    Args:
        model: the classifier.
        meta: its metadata (:func:`build_metadata`).
        path: the ``.safetensors`` file.
        ood: the detector, or None.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ood is not None:
        for k in OOD_KEYS:
            state[f"ood.{k}"] = torch.as_tensor(getattr(ood, k), dtype=torch.float32).contiguous()
        meta = {**meta, "ood": {"threshold": ood.threshold, "percentile": ood.percentile,
                                "components": int(ood.components.shape[0]), "method": "mahalanobis-pca"}}
    return write_model_file(state, meta, path)


def raw_metadata(path: str | Path, missing: str = "model file not found") -> dict[str, Any]:
    """The ``spinexr`` metadata of a safetensors model file as written (``{}`` when it has none), or a
    WeightsError naming the file: ``missing`` when it does not exist, or why safetensors refused it."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {missing}")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types on a foreign file
        raise WeightsError(f"{path}: not a spinexr model file (safetensors could not read it: {e})") from e
    return json.loads(md["spinexr"]) if "spinexr" in md else {}


def read_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta = raw_metadata(path, "model file not found; train one with `spinexr train` or `spinexr cv`")
    if not meta:
        raise WeightsError(f"{path}: a safetensors file without spinexr metadata; was it saved by spinexr?")
    if meta.get("format") not in READABLE_FORMATS:
        raise WeightsError(f"{path}: unsupported model format {meta.get('format')!r} (this spinexr reads "
                           f"{', '.join(READABLE_FORMATS)}); upgrade spinexr")
    if meta["format"] == "spinexr-model/1":  # format 1: a flat contract and no flip in the deployed graph
        meta.setdefault("tta_flip", False)
    meta["data_config"] = DataConfig.from_meta(meta).to_dict()
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any], Any]:
    """Rebuild the architecture from the metadata and load the weights.

    Returns ``(model in eval mode, metadata, OODDetector or None)``.
    """
    meta = read_metadata(path)
    model = create_model(meta["architecture"], weights="none", attention=meta["attention"],
                         in_chans=meta["data_config"]["in_chans"], num_classes=len(meta["labels"]))
    state = load_file(str(path), device="cpu")
    ood = None
    ood_state = {k[4:]: state.pop(k) for k in list(state) if k.startswith("ood.")}
    if ood_state and "ood" in meta:
        ood = OODDetector(**{k: ood_state[k].double().numpy() for k in OOD_KEYS},
                          threshold=meta["ood"]["threshold"], percentile=meta["ood"]["percentile"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not match {meta['architecture']} "
                           f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    model.to(device).eval()
    return model, meta, ood


def load_inference(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """The model file as the one predictor: ``(InferenceModule in eval mode, metadata)``."""

    model, meta, ood = load_model(path, device)
    module = InferenceModule(model, DataConfig.from_meta(meta), tta_flip=bool(meta.get("tta_flip", False)),
                             temperature=float(meta.get("temperature", 1.0)), ood=ood)
    return module.to(device).eval(), meta


LANDMARK_FORMAT = "spinexr-landmarks/1"


def save_landmark_model(predictor: Any, path: str | Path, cfg: dict[str, Any],
                        data_summary: dict[str, Any] | None = None) -> Path:
    """Write a landmark model file (.safetensors with its contract and codec in the metadata, plus .json).

    Args:
        predictor: the :class:`~spinexr.models.landmark.LandmarkPredictor`.
        path: the ``.safetensors`` file.
        cfg: the settings it was trained with.
        data_summary: what it was trained on.
    """

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": LANDMARK_FORMAT, "encoder": predictor.net.arch, "data_config": predictor.contract.to_dict(),
            "stride": predictor.codec.stride, "encoding": predictor.codec.name, "tta_flip": predictor.tta_flip,
            "tta_scales": list(predictor.tta_scales),
            "centreline_weight": float(cfg.get("centreline_weight", 0.0))}
    return _network_file(predictor.net, meta, cfg, data_summary, path)


def _network_file(net: nn.Module, meta: dict[str, Any], cfg: dict[str, Any], data_summary: dict[str, Any] | None,
                  path: Path) -> Path:
    """A landmark network's file (the landmark model, the refiner): its own ``meta``, then what every such
    file records (the vertebra levels and corners, the settings, version, date and training data)."""
    meta = {**meta, "levels": list(LEVELS), "corners": list(CORNERS), "settings": cfg, "spinexr_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "training_data": data_summary or {}}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return write_model_file(state, meta, path)


def landmark_metadata(path: str | Path) -> dict[str, Any]:
    """A landmark model file's metadata, checked as :func:`load_landmark_model` needs it (no network built)."""
    path = Path(path)
    meta = raw_metadata(path, "landmark model file not found; train one with `spinexr landmarks train`")
    if meta.get("format") != LANDMARK_FORMAT:
        raise WeightsError(f"{path}: not a spinexr landmark model (format {meta.get('format')!r})")
    DataConfig.from_meta(meta)
    encoding = meta.get("encoding", "corners")  # files written before the offsets encoding: corners
    if encoding not in CODECS:
        raise WeightsError(f"{path}: landmark encoding {encoding!r} is not known to spinexr {__version__}; upgrade spinexr")
    return meta


def load_landmark_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """A landmark model file as its predictor: ``(LandmarkPredictor in eval mode, metadata)``."""

    path = Path(path)
    meta = landmark_metadata(path)
    contract = DataConfig.from_meta(meta)
    encoding = meta.get("encoding", "corners")
    net = LandmarkNet(meta["encoder"], in_chans=contract.in_chans, out_channels=CODECS[encoding].channels)
    try:
        missing, unexpected = net.load_state_dict(load_file(str(path), device="cpu"), strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise WeightsError(f"{path}: weights do not match a {meta['encoder']} landmark model ({encoding})") from e
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not match a {meta['encoder']} landmark model")
    try:  # files written before test-time zooms: the film as it is
        scales = parse_scales(meta.get("tta_scales", [1.0]))
    except (SpinexrError, TypeError, ValueError) as e:
        raise WeightsError(f"{path}: malformed test-time zooms in its metadata ({e})") from e
    return LandmarkPredictor(net, contract, encoding, tta_flip=bool(meta.get("tta_flip", False)),
                             tta_scales=scales).to(device).eval(), meta


REFINER_FORMAT = "spinexr-refiner/1"
INT8_SCALE = ".int8_scale"  # the companion of a weight stored in int8: one float scale per output channel


def int8_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight-only int8: every float tensor of two or more dimensions (convolution and linear weights)
    as int8 with one symmetric scale per output channel (``<name>.int8_scale``, float32); the other
    float tensors (biases, norms) in float16. A quarter of float32's size; :func:`dequantized` undoes it."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v.contiguous()
        elif v.dim() >= 2:
            w = v.float()
            scale = w.abs().amax(dim=tuple(range(1, w.dim()))).clamp_min(1e-12) / 127.0
            out[k] = torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))).clamp(-127, 127).to(torch.int8).contiguous()
            out[k + INT8_SCALE] = scale.contiguous()
        else:
            out[k] = v.half().contiguous()
    return out


def dequantized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state written by :func:`int8_weights` as float32 tensors (any other state as it is)."""
    out = {k: v for k, v in state.items() if not k.endswith(INT8_SCALE)}
    for k in list(out):
        scale = state.get(k + INT8_SCALE)
        if scale is not None:
            q = out[k]
            if q.dtype != torch.int8 or scale.shape != q.shape[:1]:
                raise WeightsError(f"weight {k}: int8 scale of shape {tuple(scale.shape)} does not fit {tuple(q.shape)}")
            out[k] = q.float() * scale.float().view(-1, *[1] * (q.dim() - 1))
    return out


def save_refiner_model(refiner: Any, path: str | Path, cfg: dict[str, Any],
                       data_summary: dict[str, Any] | None = None, centreline_weight: float = 0.0,
                       tilt_gain: float = 1.0) -> Path:
    """Write a vertebra refiner file (:mod:`spinexr.models.refine`): weights, crop geometry and how the
    refined corners are read (``centreline_weight``; 0: each vertebra's own corners, the definition;
    ``tilt_gain``: :func:`spinexr.geometry.cobb.widen_tilts` on the refined corners, 1: none).

    Args:
        refiner: the :class:`~spinexr.models.refine.VertebraRefiner`.
        path: the ``.safetensors`` file.
        cfg: the settings it was trained with.
        data_summary: what it was trained on.
        centreline_weight: how its corners' tilts are read.
        tilt_gain: the gain on its tilts.
    """
    meta = {"format": REFINER_FORMAT, "encoder": refiner.net.arch, "crop": refiner.crop, "span": refiner.span,
            "film_height": refiner.film_height, "mean": refiner.mean, "std": refiner.std,
            "tta_flip": refiner.tta_flip, "iterations": refiner.iterations, "flip_every_pass": refiner.flip_every_pass,
            "max_turn": refiner.max_turn,
            "centreline_weight": float(centreline_weight), "tilt_gain": float(tilt_gain)}
    return _network_file(refiner.net, meta, cfg, data_summary, Path(path))


def refiner_metadata(path: str | Path) -> dict[str, Any]:
    """A vertebra refiner file's metadata, checked for its format (no network built)."""
    path = Path(path)
    meta = raw_metadata(path, "vertebra refiner file not found")
    if meta.get("format") != REFINER_FORMAT:
        raise WeightsError(f"{path}: not a spinexr vertebra refiner (format {meta.get('format')!r})")
    return meta


def load_refiner_model(path: str | Path, device: str | torch.device = "cpu",
                       network: bool = True) -> tuple[Any, dict[str, Any]]:
    """A vertebra refiner file as ``(VertebraRefiner in eval mode, metadata)``. With ``network=False``
    only its geometry (crops cut and placed back) is built, for crops read by its ONNX export.

    Args:
        path: the refiner file.
        device: the torch device.
        network: build the network (False: its geometry alone).
    """
    from spinexr.models.refine import VertebraRefiner, turn_limit

    path = Path(path)
    meta = refiner_metadata(path)
    try:
        net, missing, unexpected = None, [], []
        if network:
            net = LandmarkNet(meta["encoder"], out_channels=4)
            missing, unexpected = net.load_state_dict(dequantized(load_file(str(path), device="cpu")), strict=False)
        ref = VertebraRefiner(net, crop=int(meta["crop"]), span=float(meta["span"]),
                              film_height=int(meta["film_height"]), mean=float(meta["mean"]), std=float(meta["std"]),
                              tta_flip=bool(meta["tta_flip"]), iterations=int(meta["iterations"]),
                              # files written before this setting mirrored every pass
                              flip_every_pass=bool(meta.get("flip_every_pass", True)),
                              # files written before this setting had no limit
                              max_turn=turn_limit(meta.get("max_turn")))
    except (KeyError, TypeError, ValueError, RuntimeError, WeightsError) as e:
        raise WeightsError(f"{path}: malformed vertebra refiner ({e}); use the file as spinexr wrote it") from e
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not match a {meta['encoder']} vertebra refiner")
    return ref.to(device).eval(), meta


def onnx_session(path: str | Path, threads: int | None = None) -> tuple[Any, dict[str, Any]]:
    """An onnxruntime session on an exported model file, and the spinexr metadata the export carries.

    Args:
        path: the ``.onnx`` file (made by ``spinexr export``).
        threads: intra-op threads (None: onnxruntime's default).

    Returns:
        the session and the metadata.
    """
    path = Path(path)
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise SpinexrError("the onnx backend needs onnxruntime: pip install 'spinexr[export]'") from e
    if not path.is_file():
        raise SpinexrError(f"{path}: ONNX file not found; export one with `spinexr export MODEL --onnx {path}`")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise SpinexrError(f"{path}: onnxruntime cannot load it ({e})") from e
    md = sess.get_modelmeta().custom_metadata_map
    if "spinexr" not in md:
        raise SpinexrError(f"{path}: an ONNX file without spinexr metadata; export it with `spinexr export`")
    return sess, json.loads(md["spinexr"])


@dataclass(frozen=True)
class ModelFileKind:
    """A kind of model file: how it is told apart, checked, loaded, named in a bundle and shipped.

    Its ONNX exporter is registered beside the other exporters
    (:data:`spinexr.deploy.export.EXPORTERS`, under the same name).

    Args:
        name: ``classifier``, ``landmarks`` or ``refiner`` (the bundle's part and ``spinexr models``' word).
        formats: the metadata ``format`` values of this kind (the first is the one written now).
        metadata: reads and checks a file's metadata without building a network.
        load: ``(path, device) -> (model, metadata)``.
        bundle_file: the file's name in a bundle folder.
        shipped_weights: how the bundled copy stores its weights (``float16``, ``int8``).
    """

    name: str
    formats: tuple[str, ...]
    metadata: Callable[[str | Path], dict[str, Any]]
    load: Callable[..., tuple[Any, dict[str, Any]]]
    bundle_file: str
    shipped_weights: str = "float16"


KINDS: dict[str, ModelFileKind] = {}


def register_model_file(kind: ModelFileKind) -> ModelFileKind:
    """Add a kind of model file to :data:`KINDS` (its exporter goes in ``spinexr.deploy.export.EXPORTERS``)."""
    KINDS[kind.name] = kind
    return kind


register_model_file(ModelFileKind("classifier", READABLE_FORMATS[::-1], read_metadata, load_inference,
                                  "classifier.safetensors"))
register_model_file(ModelFileKind("landmarks", (LANDMARK_FORMAT,), landmark_metadata, load_landmark_model,
                                  "landmarks.safetensors"))
# The refiner's weights ship as weight-only int8 (``benchmarks/refiner_weights.py`` measured what that
# changes), so that the three files stay within a wheel PyPI accepts.
register_model_file(ModelFileKind("refiner", (REFINER_FORMAT,), refiner_metadata, load_refiner_model,
                                  "refiner.safetensors", shipped_weights="int8"))


def file_kind(path: str | Path) -> ModelFileKind:
    """The kind of a spinexr model file, from its metadata's ``format`` (a file of none of them: the
    classifier, whose own check then says what is wrong)."""
    fmt = raw_metadata(path).get("format")
    return next((k for k in KINDS.values() if fmt in k.formats), KINDS["classifier"])


def model_kind(path: str | Path) -> str:
    """``classifier``, ``landmarks`` or ``refiner``, from a spinexr model file's metadata."""
    return file_kind(path).name
