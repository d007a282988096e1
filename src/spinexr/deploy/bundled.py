"""The trained models that ship inside the package, with their model cards.

``spinexr predict film.jpg``, ``spinexr serve`` and the page use them when no model file is given.
They live in ``spinexr/deploy/bundled/`` as one bundle (:mod:`spinexr.deploy.bundle`: ``bundle.json``
names the pair and the decision rule that joins them): ordinary spinexr model files whose
floating-point weights are stored in float16 (half the size; they are cast back to float32 on loading,
so every runtime path is unchanged), each beside a ``<name>.md`` model card. :func:`pack` writes them
from a trained model file; ``scripts/bundle_models.py`` is the documented way to rebuild them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from spinexr.errors import WeightsError
from spinexr.models.files import KINDS as MODEL_FILE_KINDS
from spinexr.models.files import int8_weights, model_kind, raw_metadata, write_model_file

BUNDLE_DIR = Path(__file__).resolve().parent / "bundled"
# The file each kind ships as, and how its weights are stored (the registry of model file kinds says).
KINDS = {k.name: k.bundle_file for k in MODEL_FILE_KINDS.values()}
WEIGHTS = {k.name: k.shipped_weights for k in MODEL_FILE_KINDS.values()}


@dataclass(frozen=True)
class BundledModel:
    """A model file that ships with spinexr.

    Args:
        name: its name (``classifier``, ``landmarks``, ``refiner``).
        kind: its kind of model file.
        path: the file.
        card: its model card, or None.
        size_bytes: the file's size.
        meta: its metadata.
    """

    name: str
    kind: str  # classifier, landmarks or refiner
    path: Path
    card: Path | None
    size_bytes: int
    meta: dict[str, Any]

    def describe(self) -> str:
        """One line: what the model is, what it takes, how it was measured."""
        m = self.meta
        dc = m.get("data_config", {})
        if self.kind == "classifier":
            what = f"{m.get('architecture')} + {m.get('attention')} attention, {dc.get('input_size')} px {dc.get('resize')}"
        elif self.kind == "refiner":
            what = f"{m.get('encoder')} vertebra refiner, {m.get('crop')} px crops of the film at {m.get('film_height')} px"
        else:
            size = f"{dc.get('input_size')}x{dc.get('input_width')} px"
            what = f"{m.get('encoder')} heatmaps ({m.get('encoding', 'corners')}), {size}"
        head = (m.get("bundled") or {}).get("headline", "")
        size = f"{self.size_bytes / 2**20:5.1f} MB"
        return f"{self.name:<11} {self.kind:<10} {size}  {what}" + (f"  {head}" if head else "")


def bundled_models(root: Path | None = None) -> list[BundledModel]:
    """Every bundled model file present in this installation."""

    root = root or BUNDLE_DIR
    out = []
    for name, fname in KINDS.items():
        p = root / fname
        if p.is_file():
            card = p.with_suffix(".md")
            out.append(BundledModel(name, model_kind(p), p, card if card.is_file() else None, p.stat().st_size,
                                    raw_metadata(p)))
    return out


def bundled_bundle_dir(root: Path | None = None) -> Path:
    """The folder of the bundle that ships with spinexr (``bundle.json`` and both model files), or a
    WeightsError saying what to do when this installation carries none."""
    root = root or BUNDLE_DIR
    if not (root / "bundle.json").is_file():
        raise WeightsError(f"this spinexr installation carries no bundled models ({root / 'bundle.json'} is missing); "
                           "pass a bundle or a model file, train one (`spinexr train`, `spinexr landmarks train`), "
                           "or reinstall spinexr from a full checkout")
    return root


def bundled_path(kind: str, root: Path | None = None) -> Path:
    """The bundled model file of ``kind`` (classifier or landmarks), or a WeightsError saying what to do."""
    p = (root or BUNDLE_DIR) / KINDS[kind]
    if not p.is_file():
        raise WeightsError(f"this spinexr installation carries no bundled {kind} model ({p} is missing); pass a "
                           "model file, train one (`spinexr train`, `spinexr landmarks train`), or reinstall spinexr "
                           "from a full checkout")
    return p


def pack(model_path: str | Path, kind: str, card: str, headline: str = "", root: Path | None = None) -> Path:
    """Write ``model_path`` as the bundled model of ``kind``: float weights in float16 (the OOD
    statistics stay float32; a refiner's weights in int8, :data:`WEIGHTS`), the metadata kept and
    marked as bundled, and the model card beside it.

    Args:
        model_path: the trained model file.
        kind: which bundled model it becomes (:data:`KINDS`).
        card: the model card's Markdown.
        headline: the one-line summary ``spinexr models`` prints.
        root: the bundled folder (None: the package's).

    Returns:
        the packed file.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    src = Path(model_path)
    meta = raw_metadata(src)
    if not meta:
        raise WeightsError(f"{src}: a safetensors file without spinexr metadata; bundle a spinexr model file")
    meta["bundled"] = {"source_file": src.name, "weights_dtype": WEIGHTS[kind], "headline": headline}
    state = load_file(str(src))
    if WEIGHTS[kind] == "int8":
        half = int8_weights(state)
    else:
        half = {k: (v.half() if v.is_floating_point() and not k.startswith("ood.") else v).contiguous()
                for k, v in state.items()}
    root = root or BUNDLE_DIR
    dest = root / KINDS[kind]
    root.mkdir(parents=True, exist_ok=True)
    write_model_file(half, meta, dest, sidecar=False)
    dest.chmod(0o644)  # package data: readable by every user of an installation
    dest.with_suffix(".md").write_text(card)
    return dest

