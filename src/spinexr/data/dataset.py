"""A dataset as model-ready tensors: decoded once, fitted to each input size by the data contract.

Images are decoded once per process (and optionally cached on disk), fitted to every input size
that is needed by :func:`spinexr.data.contract.fit_to_square` and kept as uint8 tensors, so a k-fold
cross-validation never decodes a JPEG twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from spinexr import CLASSES
from spinexr.data.check import merge_groups, near_duplicate_pairs, shortcut_baseline, thumbnail
from spinexr.data.contract import fit_to_square
from spinexr.data.imread import DEFAULT_MAX_PIXELS, read_image
from spinexr.data.manifest import load_manifest
from spinexr.errors import ImageReadError, SpinexrError

log = logging.getLogger(__name__)

@dataclass
class DataSummary:
    """What every run reports about its data, the size/aspect shortcut baseline included."""

    source: str
    n_images: int
    counts: dict[str, int]
    skipped: dict[str, str]
    n_groups: int
    near_duplicate_pairs: int
    shortcut: dict[str, Any]


@dataclass
class ImageStore:
    """Decoded, resized images of a manifest, as uint8 tensors per input size.

    Attributes:
        paths: the files, in manifest order.
        ok: which files decoded.
        errors: ``{path: reason}`` for those that did not.
        sizes: (width, height) of each decoded original.
        tensors: ``{size: uint8 tensor (N_ok, 1, size, size)}``.
    """

    paths: list[Path]
    ok: np.ndarray
    errors: dict[str, str]
    sizes: list[tuple[int, int]]
    thumbs: np.ndarray
    tensors: dict[int, torch.Tensor]
    mode: str


def _cache_key(paths: list[Path], sizes: Iterable[int], mode: str) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat() if p.exists() else None
        h.update(f"{p.resolve()}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    h.update(f"{sorted(set(sizes))}|{mode}|v1".encode())
    return h.hexdigest()[:24]


def load_images(
    paths: list[Path],
    sizes: Iterable[int],
    mode: str = "letterbox",
    cache_dir: str | Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> ImageStore:
    """Decode every file once and resize it to every size in ``sizes``; bad files are recorded, not fatal.

    With ``cache_dir`` the result is stored as an ``.npz`` keyed on the files' paths, sizes and
    modification times, and reused by later runs.
    """


    sizes = sorted(set(int(s) for s in sizes))
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{_cache_key(paths, sizes, mode)}.npz"
        if cache_file.is_file():
            with np.load(cache_file, allow_pickle=False) as z:
                errors = dict(zip(z["err_paths"].tolist(), z["err_reasons"].tolist()))
                return ImageStore(
                    paths=paths, ok=z["ok"], errors=errors, sizes=[tuple(s) for s in z["sizes"].tolist()],
                    thumbs=z["thumbs"], tensors={s: torch.from_numpy(z[f"x{s}"]) for s in sizes}, mode=mode,
                )
    arrays: dict[int, list[np.ndarray]] = {s: [] for s in sizes}
    ok = np.zeros(len(paths), dtype=bool)
    errors: dict[str, str] = {}
    dims: list[tuple[int, int]] = []
    thumbs: list[np.ndarray] = []
    for i, p in enumerate(tqdm(paths, desc="decoding", unit="img", disable=not progress)):
        try:
            img, meta = read_image(p, max_pixels=max_pixels)
        except ImageReadError as e:
            errors[str(p)] = e.reason
            log.warning("skipping %s", e)
            continue
        ok[i] = True
        dims.append((meta.width, meta.height))
        thumbs.append(thumbnail(img))
        for s in sizes:
            arrays[s].append(fit_to_square(img, s, mode)[0])
    tensors = {s: torch.from_numpy(np.stack(a)[:, None] if a else np.zeros((0, 1, s, s), np.uint8)) for s, a in arrays.items()}
    th = np.stack(thumbs) if thumbs else np.zeros((0, 32 * 64))
    store = ImageStore(paths=paths, ok=ok, errors=errors, sizes=dims, thumbs=th, tensors=tensors, mode=mode)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, ok=ok, sizes=np.array(dims, dtype=np.int64).reshape(-1, 2), thumbs=th,
                 err_paths=np.array(list(errors.keys()), dtype=str), err_reasons=np.array(list(errors.values()), dtype=str),
                 **{f"x{s}": t.numpy() for s, t in tensors.items()})
        tmp.replace(cache_file)
    return store


@dataclass
class PreparedData:
    """A manifest's readable images with labels, split groups and tensors per input size."""

    paths: list[Path]
    labels: np.ndarray
    groups: np.ndarray
    views: list[str]
    tensors: dict[int, torch.Tensor]
    skipped: dict[str, str]
    image_sizes: list[tuple[int, int]]
    near_duplicates: int
    source: str

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == k).sum()) for k, c in enumerate(CLASSES)}

    def summary(self) -> Any:
        """What every run reports about its data (a DataSummary), the size/aspect shortcut baseline included."""
        wh = np.array(self.image_sizes, dtype=float).reshape(-1, 2)
        return DataSummary(source=self.source, n_images=int(len(self.labels)), counts=self.counts(),
                           skipped=self.skipped, n_groups=int(len(np.unique(self.groups))),
                           near_duplicate_pairs=self.near_duplicates,
                           shortcut=shortcut_baseline(wh[:, 0], wh[:, 1], self.labels))


def prepare_dataset(
    source: str | Path,
    sizes: Iterable[int],
    mode: str = "letterbox",
    cache_dir: str | Path | None = None,
    near_dup_threshold: float = 0.97,
    progress: bool = True,
) -> PreparedData:
    """Load a folder or CSV manifest, decode every image once, and merge near-duplicates into groups.

    Unreadable files are skipped and listed in ``skipped``; near-duplicates (thumbnail correlation
    above ``near_dup_threshold``) share a group so they land on one side of every split.

    Args:
        source: a class-folder tree or CSV manifest.
        sizes: the square input sizes to fit every film to.
        mode: how a film is fitted to the square (:data:`~spinexr.config.RESIZE_MODES`).
        cache_dir: keep the decoded tensors here between runs (keyed by the files' contents).
        near_dup_threshold: the thumbnail correlation above which two films share a group.
        progress: show a progress bar.

    Returns:
        the labels, groups, paths and uint8 tensors of every readable film.
    """

    man = load_manifest(source)
    paths = [r.path for r in man.records]
    store = load_images(paths, sizes, mode, cache_dir=cache_dir, progress=progress)
    keep = np.nonzero(store.ok)[0]
    if len(keep) == 0:
        raise SpinexrError(f"{source}: none of the {len(paths)} images could be read")
    recs = [man.records[i] for i in keep]
    pairs = near_duplicate_pairs(store.thumbs, near_dup_threshold)
    groups = merge_groups([r.group for r in recs], [(a, b) for a, b, _ in pairs])
    return PreparedData(
        paths=[r.path for r in recs], labels=np.array([r.label_index for r in recs]), groups=np.array(groups),
        views=[r.view for r in recs], tensors=store.tensors, skipped=store.errors, image_sizes=store.sizes,
        near_duplicates=len(pairs), source=str(source),
    )
