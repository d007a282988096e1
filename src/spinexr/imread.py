"""Read radiographs (JPEG, PNG, TIFF, DICOM) into float32 grayscale arrays in [0, 1].

Every failure is an :class:`~spinexr.errors.ImageReadError` naming the file and the reason, so a
batch can report it and go on.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from spinexr.errors import ImageReadError

# KAUH's largest image is 2972 x 4999 = 14.9 Mpx; full-length spine films reach ~ 40 Mpx.
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MIN_SIDE = 16

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
DICOM_EXTENSIONS = (".dcm", ".dicom")

# A truncated file must be an error, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

DICOM_CODEC_HINT = (
    "install a decoder plugin for it: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
    "(or pip install 'spinexr[dicom-codecs]'), or convert the file to an uncompressed transfer syntax"
)


@dataclass
class ImageMeta:
    """What was learned about a file while reading it."""

    path: str
    format: str
    width: int
    height: int
    bit_depth: int
    mode: str
    photometric: str | None = None
    pixel_spacing: tuple[float, float] | None = None
    n_frames: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["pixel_spacing"] is not None:
            d["pixel_spacing"] = list(d["pixel_spacing"])
        return d


def is_dicom_file(path: str | Path) -> bool:
    """True when the file has the DICOM preamble magic or a DICOM extension."""
    p = Path(path)
    if p.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> tuple[np.ndarray, ImageMeta]:
    """Read one radiograph.

    Args:
        path: a JPEG, PNG, TIFF, BMP or DICOM file.
        max_pixels: refuse images with more pixels than this (decompression bombs).
        min_side: refuse images whose width or height is below this.

    Returns:
        ``(image, meta)``: a float32 ``H x W`` array in [0, 1] (0 = black) and an :class:`ImageMeta`.

    Raises:
        ImageReadError: the file is missing, empty, truncated, not an image, too large, too small,
            constant, or a DICOM without pixel data or with a transfer syntax that cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    if is_dicom_file(path):
        img, meta = _read_dicom(path, max_pixels)
    else:
        img, meta = _read_pillow(path, max_pixels)
    _validate(path, img, min_side)
    return img, meta


def _validate(path: Path, img: np.ndarray, min_side: int) -> None:
    h, w = img.shape
    if h < min_side or w < min_side:
        raise ImageReadError(
            path, f"image is only {w}x{h} pixels; at least {min_side}x{min_side} is needed"
        )
    if not np.isfinite(img).all():
        raise ImageReadError(path, "image contains NaN or infinite values")
    if float(img.max()) - float(img.min()) < 1e-6:
        raise ImageReadError(path, "image is constant (every pixel has the same value)")


def _check_pixels(path: Path, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageReadError(
            path,
            f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(possible decompression bomb); raise --max-pixels if the file is genuine",
        )


def _read_pillow(path: Path, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below, before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
            fmt = im.format or "unknown"
            w, h = im.size
            _check_pixels(path, w, h, max_pixels)
            n_frames = getattr(im, "n_frames", 1)
            im.load()
            im = ImageOps.exif_transpose(im)
            arr, depth = _pil_to_gray(im)
            mode = im.mode
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (JPEG, PNG, TIFF, BMP or DICOM)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"decompression bomb refused: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            msg = f"file is truncated or corrupt ({msg}); re-export or re-copy it"
        else:
            msg = f"cannot decode image ({msg})"
        raise ImageReadError(path, msg) from e
    h2, w2 = arr.shape
    meta = ImageMeta(
        path=str(path), format=fmt.upper(), width=w2, height=h2, bit_depth=depth, mode=mode,
        n_frames=n_frames,
    )
    return arr, meta


def _pil_to_gray(im: Image.Image) -> tuple[np.ndarray, int]:
    """Convert any Pillow mode to float32 gray in [0, 1]; returns (array, bit depth)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im, dtype=np.uint16).astype(np.float32)
        return a / 65535.0, 16
    if mode == "I":
        a = np.asarray(im).astype(np.float64)
        hi = a.max()
        depth = 8 if hi <= 255 else 16 if hi <= 65535 else 32
        lo = min(0.0, a.min())
        return ((a - lo) / (2.0**depth - 1 - lo)).clip(0, 1).astype(np.float32), depth
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        return ((a - lo) / max(hi - lo, 1e-12)).astype(np.float32), 32
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # Transparent regions become black, like the collimated border of a film.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, rgba)
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0, 1
    a = np.asarray(im.convert("L"), dtype=np.float32)
    return a / 255.0, 8


def _first(v: Any) -> float:
    try:
        return float(v[0])
    except TypeError:
        return float(v)


def _read_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as e:  # pragma: no cover - pydicom is a core dependency
        raise ImageReadError(path, "reading DICOM needs pydicom: pip install pydicom") from e
    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as e:
        raise ImageReadError(path, f"not a readable DICOM file ({e})") from e
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(
            path, "DICOM has no pixel data (a structured report or presentation state?)"
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows == 0 or cols == 0:
        raise ImageReadError(path, "DICOM has no Rows/Columns")
    _check_pixels(path, cols, rows, max_pixels)
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as e:
        name = getattr(tsyntax, "name", str(tsyntax))
        raise ImageReadError(
            path, f"cannot decode DICOM compressed as '{name}' ({e}); {DICOM_CODEC_HINT}"
        ) from e
    except (ValueError, AttributeError, KeyError, TypeError, EOFError) as e:
        raise ImageReadError(path, f"DICOM pixel data is corrupt or truncated ({e})") from e
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames > 1:
        warnings.warn(f"{path}: {n_frames} frames; using the first", stacklevel=3)
        arr = arr[0]
    if spp > 1 or arr.ndim == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        img = _minmax(arr)
    else:
        img = _dicom_gray(ds, arr)
        if photometric == "MONOCHROME1":
            img = 1.0 - img
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    pixel_spacing = (float(spacing[0]), float(spacing[1])) if spacing else None
    meta = ImageMeta(
        path=str(path), format="DICOM", width=int(img.shape[1]), height=int(img.shape[0]),
        bit_depth=int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
        mode=photometric, photometric=photometric, pixel_spacing=pixel_spacing, n_frames=n_frames,
        extra={"transfer_syntax": str(tsyntax) if tsyntax else None,
               "modality": str(ds.get("Modality", ""))},
    )
    return img.astype(np.float32), meta


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / max(hi - lo, 1e-12)


def _dicom_gray(ds: Any, arr: np.ndarray) -> np.ndarray:
    """Modality LUT (rescale slope/intercept), then VOI (window or LUT), scaled to [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    a = apply_modality_lut(arr, ds).astype(np.float64)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = _first(ds.WindowCenter), max(_first(ds.WindowWidth), 1.0)
        func = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        if func == "SIGMOID":
            return 1.0 / (1.0 + np.exp(-4.0 * (a - c) / w))
        if func == "LINEAR_EXACT":
            return np.clip((a - c) / w + 0.5, 0.0, 1.0)
        # DICOM PS3.3 C.11.2.1.2.1, linear function, mapped onto [0, 1].
        return np.clip((a - (c - 0.5)) / (w - 1.0 if w > 1 else 1.0) + 0.5, 0.0, 1.0)
    if "VOILUTSequence" in ds:
        return _minmax(apply_voi_lut(arr, ds).astype(np.float64))
    return _minmax(a)


def list_images(root: str | Path, recursive: bool = True) -> list[Path]:
    """Image files below ``root`` (by extension, or DICOM files without one), sorted, hidden skipped."""
    root = Path(root)
    out: list[Path] = []
    walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
    for dirpath, dirnames, filenames in walker:
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            p = Path(dirpath) / fn
            ext = p.suffix.lower()
            if ext in IMAGE_EXTENSIONS or (ext == "" and is_dicom_file(p)):
                out.append(p)
    return out
