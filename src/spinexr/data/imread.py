"""Read radiographs (JPEG, PNG, TIFF, DICOM) into float32 grayscale arrays in [0, 1].

:func:`read_image` is the one read boundary of spinexr: whatever a decoder raises for one file (an
exception we expected or not) leaves it as an :class:`~spinexr.errors.ImageReadError` for that file,
with a kind and a reason a user can act on, so a batch can report it and go on. Every caller (data
check, dataset loading, predict, explain, serve) reads through it, and nothing else catches broadly.
What pydicom and Pillow log or warn while reading a file is captured and handed back with that
file's result (``ImageMeta.warnings`` or ``ImageReadError.notes``) instead of reaching the terminal.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from spinexr.errors import ImageReadError, ReadErrorKind

# KAUH's largest image is 2972 x 4999 = 14.9 Mpx; full-length spine films reach ~ 40 Mpx.
# The pixel limit (a decompression-bomb guard): files read from disk, and uploads to the service.
DEFAULT_MAX_PIXELS = 100_000_000
UPLOAD_MAX_PIXELS = 60_000_000
DEFAULT_MIN_SIDE = 16

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
DICOM_EXTENSIONS = (".dcm", ".dicom")

# A truncated file must be an error, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

DICOM_CODEC_HINT = (
    "install the dicom-codecs extra: pip install 'spinexr[dicom-codecs]' (pylibjpeg-libjpeg decodes JPEG "
    "lossless, 12-bit JPEG and JPEG-LS; pylibjpeg-openjpeg decodes JPEG 2000), or convert the file to an "
    "uncompressed transfer syntax"
)
K = ReadErrorKind


@dataclass
class ImageMeta:
    """What was learned about a file while reading it.

    Args:
        path: the file.
        format: the decoder's format name (``DICOM``, ``PNG``, ...).
        width: the film's width in pixels.
        height: its height.
        bit_depth: bits a sample as stored.
        mode: the decoder's pixel mode.
        photometric: DICOM Photometric Interpretation, where given.
        pixel_spacing: millimetres a pixel (row, column), where given.
        n_frames: frames in the file (the first is read).
        extra: further header facts.
        modality: DICOM Modality (CR, DX, CT, ...).
        warnings: what the decoders logged or warned for this file.
    """

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
    modality: str | None = None  # DICOM (0008,0060), e.g. CR, DX, CT, MR
    warnings: list[str] = field(default_factory=list)  # what the decoders logged or warned for this file

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["pixel_spacing"] is not None:
            d["pixel_spacing"] = list(d["pixel_spacing"])
        return d


def file_digest(path: str | Path) -> str | None:
    """SHA-256 of a file's bytes (hex), or None where it cannot be opened."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def is_dicom_file(path: str | Path) -> bool:
    """True when the file has the DICOM preamble magic or a DICOM extension."""
    p = Path(path)
    return p.suffix.lower() in DICOM_EXTENSIONS or _has_dicm_magic(p)


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
        ``(image, meta)``: a float32 ``H x W`` array in [0, 1] (0 = black) and an :class:`ImageMeta`
        whose ``warnings`` hold what the decoding libraries said about this file.

    Raises:
        ImageReadError: for any failure, with a :class:`~spinexr.errors.ReadErrorKind`: the file is
            missing, empty, not an image, a DICOM without an image or in a compression that cannot be
            decoded, truncated or corrupt, too large, too small, or constant. Nothing else escapes.
    """
    path = Path(path)
    notes: list[str] = []
    error: ImageReadError | None = None
    with _quiet_libraries(notes):
        try:
            img, meta = _read_any(path, max_pixels, min_side)
        except ImageReadError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - the read boundary: any decoder failure is this file's error
            error = ImageReadError(path, f"cannot decode image ({_describe(e)})", K.CORRUPT)
            error.__cause__ = e
    if error is not None:
        error.notes = notes
        raise error
    meta.warnings = notes
    return img, meta


def _read_any(path: Path, max_pixels: int, min_side: int) -> tuple[np.ndarray, ImageMeta]:
    if not path.exists():
        if path.is_symlink():  # a link that goes nowhere is not a missing file: say which it is
            try:
                os.stat(path)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise ImageReadError(path, "a symbolic link that loops (it leads back to itself)", K.NOT_FOUND) from None
            raise ImageReadError(path, f"a symbolic link to a file that does not exist ({os.readlink(path)})", K.NOT_FOUND)
        raise ImageReadError(path, "file not found", K.NOT_FOUND)
    if not path.is_file():
        raise ImageReadError(path, "not a regular file", K.NOT_FOUND)
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)", K.EMPTY)
    if is_dicom_file(path):
        img, meta = _read_dicom(path, max_pixels)
    else:
        img, meta = _read_pillow(path, max_pixels)
    _validate(path, img, min_side)
    return img, meta


def _describe(e: BaseException, limit: int = 240) -> str:
    """An exception as one short line: its type and first line of message."""
    msg = (str(e).strip().splitlines() or [""])[0]
    msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


# Loggers of the decoding libraries whose records are folded into the file's result while reading.
_LIBRARY_LOGGERS = ("pydicom", "PIL")
# warnings.catch_warnings and logger.propagate are process-wide, so reads that capture them take turns.
_CAPTURE_LOCK = threading.Lock()


class _NoteHandler(logging.Handler):
    def __init__(self, notes: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        # The message only: a library's traceback (exc_info) would bury the file's one-line reason.
        self.notes.append(f"{record.name}: {record.getMessage()}")


@contextmanager
def _quiet_libraries(notes: list[str]) -> Iterator[None]:
    """Capture pydicom's and Pillow's log records and every warning raised while reading one file into
    ``notes`` (deduplicated, shortened) instead of printing them."""
    handler = _NoteHandler(notes)
    with _CAPTURE_LOCK:
        loggers = [logging.getLogger(n) for n in _LIBRARY_LOGGERS]
        saved = [(lg, lg.propagate) for lg in loggers]
        for lg in loggers:
            lg.addHandler(handler)
            lg.propagate = False
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # Our own pixel limit is checked before decoding; Pillow's warning about it is noise.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
            notes.extend(str(w.message) for w in caught)
        finally:
            for lg, prop in saved:
                lg.removeHandler(handler)
                lg.propagate = prop
    seen: set[str] = set()
    clean = []
    for n in notes:
        n = n.split(" Please see <http")[0].strip()
        n = n if len(n) <= 300 else n[:299] + "…"
        head, sep, rest = n.partition(": ")
        key = rest if sep and head.split(".")[0] in _LIBRARY_LOGGERS else n
        if n and key not in seen:  # pydicom both logs and warns the same text
            seen.add(key)
            clean.append(n)
    notes[:] = clean


def _validate(path: Path, img: np.ndarray, min_side: int) -> None:
    h, w = img.shape
    if h < min_side or w < min_side:
        raise ImageReadError(
            path, f"image is only {w}x{h} pixels; at least {min_side}x{min_side} is needed", K.TOO_SMALL
        )
    if not np.isfinite(img).all():
        raise ImageReadError(path, "image contains NaN or infinite values", K.CONSTANT)
    if float(img.max()) - float(img.min()) < 1e-6:
        raise ImageReadError(path, "image is constant (every pixel has the same value)", K.CONSTANT)


def _check_pixels(path: Path, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageReadError(
            path,
            f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(possible decompression bomb); raise --max-pixels if the file is genuine", K.TOO_LARGE,
        )


def _read_pillow(path: Path, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    try:
        # The file is closed on every way out, a refused or broken one included (left to the garbage
        # collector, its ResourceWarning would land in whichever file is read next).
        with Image.open(path) as src:
            fmt = src.format or "unknown"
            w, h = src.size
            _check_pixels(path, w, h, max_pixels)
            n_frames = getattr(src, "n_frames", 1)
            src.load()
            im = ImageOps.exif_transpose(src)
            arr, depth = _pil_to_gray(im)
            mode = im.mode
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (JPEG, PNG, TIFF, BMP or DICOM)", K.FORMAT) from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"decompression bomb refused: {e}", K.TOO_LARGE) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            msg = f"file is truncated or corrupt ({msg}); re-export or re-copy it"
        else:
            msg = f"cannot decode {fmt if 'fmt' in locals() else 'image'} ({_describe(e)})"
        raise ImageReadError(path, msg, K.CORRUPT) from e
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


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
        # Touch the elements we use now, so a malformed value fails here, as a header problem.
        has_pixels = "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on malformed headers
        kind = K.CORRUPT if _has_dicm_magic(path) else K.FORMAT
        raise ImageReadError(path, f"not a readable DICOM file ({_describe(e)})", kind) from e
    if not has_pixels and not _has_dicm_magic(path) and "SOPClassUID" not in ds:
        raise ImageReadError(path, "not a DICOM file: it has a DICOM name but no DICOM preamble, elements or image",
                             K.FORMAT)
    if not has_pixels:
        raise ImageReadError(
            path, "DICOM has no pixel data (a structured report or presentation state?)", K.NO_PIXELS
        )
    if rows == 0 or cols == 0:
        raise ImageReadError(path, "DICOM has no Rows/Columns", K.CORRUPT)
    _check_pixels(path, cols, rows, max_pixels)
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    ts_name = getattr(tsyntax, "name", None) or str(tsyntax or "unknown transfer syntax")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    where = f"transfer syntax '{ts_name}', photometric interpretation {photometric}"
    _check_decodable(path, tsyntax, where)
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - pydicom's decoders and plugins raise anything
        # pydicom lists each plugin's failure on its own line: keep them all, on one line.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        msg = f"{type(e).__name__}: " + " ".join(lines) if lines else type(e).__name__
        msg = msg if len(msg) <= 400 else msg[:399] + "…"
        missing_extra = _lacks_codecs(tsyntax)
        if missing_extra and ("does not support" in msg or "not supported" in msg or "No plugin" in msg):
            raise ImageReadError(path, f"cannot decode DICOM with {where} ({msg}); {DICOM_CODEC_HINT}",
                                 K.CODEC) from e
        raise ImageReadError(path, f"DICOM pixel data is corrupt or truncated ({where}: {msg})", K.CORRUPT) from e
    try:
        img, n_frames, spp = _dicom_to_gray(path, ds, arr, photometric)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed LUT / window values reach numpy as anything
        raise ImageReadError(path, f"DICOM pixel values cannot be mapped to gray ({where}: {_describe(e)})",
                             K.CORRUPT) from e
    try:
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        pixel_spacing = (float(spacing[0]), float(spacing[1])) if spacing else None
    except (TypeError, ValueError, IndexError):
        pixel_spacing = None  # a malformed spacing is not a reason to refuse the image
    meta = ImageMeta(
        path=str(path), format="DICOM", width=int(img.shape[1]), height=int(img.shape[0]),
        bit_depth=int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
        mode=photometric, photometric=photometric, pixel_spacing=pixel_spacing, n_frames=n_frames,
        extra={"transfer_syntax": str(tsyntax) if tsyntax else None, "samples_per_pixel": spp,
               **_header_facts(ds)},
        modality=str(ds.get("Modality", "") or "") or None,
    )
    return img.astype(np.float32), meta


def _header_facts(ds: Any) -> dict[str, str]:
    """What a DICOM header says about the film's use (the intended-use check reads them)."""
    out = {}
    for key, kw in (("sop_class", "SOPClassUID"), ("presentation_intent", "PresentationIntentType"),
                    ("body_part", "BodyPartExamined"), ("view_position", "ViewPosition"),
                    ("patient_orientation", "PatientOrientation")):
        try:
            raw = ds.get(kw, "") or ""
            value = "\\".join(str(v) for v in raw) if not isinstance(raw, str) else raw.strip()
        except Exception:  # noqa: BLE001 - a malformed value is as good as an absent one here
            value = ""
        if value:
            out[key] = value
    return out


def _lacks_codecs(tsyntax: Any) -> bool:
    """True when the dicom-codecs extra (pylibjpeg) is not installed and the syntax is compressed."""
    if tsyntax is None or not getattr(tsyntax, "is_compressed", False):
        return False
    try:
        from pydicom.pixels import get_decoder

        return "pylibjpeg" not in get_decoder(tsyntax).available_plugins
    except Exception:  # noqa: BLE001 - an unknown syntax has no decoder at all
        return True


def _check_decodable(path: Path, tsyntax: Any, where: str) -> None:
    """Refuse a compressed syntax that no installed plugin decodes, naming the extra that would."""
    if tsyntax is None or not getattr(tsyntax, "is_compressed", False):
        return
    from pydicom.pixels import get_decoder

    try:
        dec = get_decoder(tsyntax)
    except NotImplementedError:
        raise ImageReadError(path, f"DICOM with {where}: no decoder exists for this compression in pydicom; "
                             "convert the file to an uncompressed transfer syntax", K.CODEC) from None
    if not dec.is_available:
        raise ImageReadError(path, f"cannot decode DICOM with {where}: no decoder installed; {DICOM_CODEC_HINT}",
                             K.CODEC)


def _dicom_to_gray(path: Path, ds: Any, arr: np.ndarray, photometric: str) -> tuple[np.ndarray, int, int]:
    """(gray image in [0, 1], frames, samples per pixel) from a decoded pixel array."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames > 1:
        warnings.warn(f"{n_frames} frames; using the first", stacklevel=2)
        arr = arr[0]
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        spp = 3
    if spp > 1 or arr.ndim == 3:
        # pydicom 3 returns RGB already: YBR_FULL(_422) are converted by default, and the JPEG 2000
        # decoders undo YBR_RCT / YBR_ICT themselves (converting again would double the transform).
        rgb = arr[..., :3].astype(np.float64)
        return _minmax(rgb @ np.array([0.299, 0.587, 0.114])), n_frames, spp
    img = _dicom_gray(ds, arr)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return img, n_frames, spp


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
