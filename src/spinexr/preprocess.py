"""From decoded radiographs to model-ready tensors: letterbox, decode-once cache, GPU augmentation.

Images are decoded once per process (and optionally cached on disk), letterboxed to each input size
that is needed and kept as uint8 tensors, so a k-fold cross-validation never decodes a JPEG twice.
Augmentation works on whole batches of tensors on the training device.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spinexr.errors import ImageReadError, SpinexrError
from spinexr.imread import DEFAULT_MAX_PIXELS, read_image

log = logging.getLogger(__name__)

RESIZE_MODES = ("letterbox", "stretch", "crop")


@dataclass(frozen=True)
class Placement:
    """Where the original image lies inside the square model input (to undo a letterbox)."""

    size: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    orig_w: int
    orig_h: int

    def to_original(self, heat: np.ndarray) -> np.ndarray:
        """Map a (size x size) map back onto the original image's (orig_h x orig_w) frame."""
        hm = Image.fromarray(heat.astype(np.float32), mode="F").resize((self.size, self.size), Image.Resampling.BILINEAR)
        # The input-space box covered by the image (clipped for crop mode).
        x0, y0 = self.offset_x, self.offset_y
        x1, y1 = x0 + self.orig_w * self.scale_x, y0 + self.orig_h * self.scale_y
        box = (max(0.0, x0), max(0.0, y0), min(float(self.size), x1), min(float(self.size), y1))
        crop = hm.crop(tuple(int(round(v)) for v in box))
        # Regions cropped away (crop mode) are unknown: fill by stretching the visible part.
        return np.asarray(crop.resize((self.orig_w, self.orig_h), Image.Resampling.BILINEAR), dtype=np.float32)


def fit_to_square(img: np.ndarray, size: int, mode: str = "letterbox") -> tuple[np.ndarray, Placement]:
    """Resize a float [0,1] H x W image into ``size`` x ``size`` uint8.

    ``letterbox`` keeps the aspect and pads with black; ``stretch`` ignores the aspect; ``crop``
    fills the square and centre-crops the long side.
    """
    if mode not in RESIZE_MODES:
        raise SpinexrError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    h, w = img.shape
    im = Image.fromarray(img.astype(np.float32), mode="F")
    if mode == "stretch":
        out = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))
        pl = Placement(size, size / w, size / h, 0.0, 0.0, w, h)
    else:
        s = size / max(h, w) if mode == "letterbox" else size / min(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        small = np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0))
        canvas = np.zeros((size, size), np.float32)
        ox, oy = (size - nw) // 2, (size - nh) // 2
        # Paste with clipping (negative offsets in crop mode).
        sx0, sy0 = max(0, -ox), max(0, -oy)
        dx0, dy0 = max(0, ox), max(0, oy)
        cw, ch = min(nw - sx0, size - dx0), min(nh - sy0, size - dy0)
        canvas[dy0:dy0 + ch, dx0:dx0 + cw] = small[sy0:sy0 + ch, sx0:sx0 + cw]
        out = canvas
        pl = Placement(size, nw / w, nh / h, float(ox), float(oy), w, h)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), pl


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
    from tqdm.auto import tqdm

    from spinexr.data.check import thumbnail

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
class AugConfig:
    """Radiograph-safe augmentation: small geometry changes and exposure changes."""

    rotate_deg: float = 7.0
    scale: float = 0.10
    translate: float = 0.06
    flip: bool = True
    brightness: float = 0.10
    contrast: float = 0.15
    gamma: float = 0.20


def augment(x: torch.Tensor, cfg: AugConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch (B, 1, H, W) in [0, 1] on its own device."""
    b = x.shape[0]
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, device=dev, generator=gen)

    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180)
    sc = u(1 - cfg.scale, 1 + cfg.scale)
    tx, ty = u(-cfg.translate, cfg.translate) * 2, u(-cfg.translate, cfg.translate) * 2
    flip = torch.where(u(0, 1) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b, device=dev)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - cfg.contrast, 1 + cfg.contrast).view(b, 1, 1, 1) + mean
    x = x + u(-cfg.brightness, cfg.brightness).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** torch.exp(u(-cfg.gamma, cfg.gamma)).view(b, 1, 1, 1)
    return x


def normalize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (x - mean) / std


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
        from spinexr import CLASSES

        return {c: int((self.labels == k).sum()) for k, c in enumerate(CLASSES)}

    def summary(self) -> dict[str, object]:
        """What every run reports about its data, the size/aspect shortcut baseline included."""
        from spinexr.data.check import shortcut_baseline

        wh = np.array(self.image_sizes, dtype=float).reshape(-1, 2)
        return {"source": self.source, "n_images": int(len(self.labels)), "counts": self.counts(),
                "skipped": self.skipped, "n_groups": int(len(np.unique(self.groups))),
                "near_duplicate_pairs": self.near_duplicates,
                "shortcut": shortcut_baseline(wh[:, 0], wh[:, 1], self.labels)}


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
    """
    from spinexr.data.check import merge_groups, near_duplicate_pairs
    from spinexr.data.manifest import load_manifest

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
