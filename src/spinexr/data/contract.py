"""The data contract of a model: what a decoded radiograph must become before the model sees it.

A :class:`DataConfig` (input size, mean, std, resize mode, channels) is attached to every registry
entry and carried in every model file, in the spirit of timm's ``pretrained_cfg``. Two functions
apply it, and nothing else in spinexr resizes or normalises a film:

- :func:`fit_to_square` turns a decoded [0, 1] film into the model's uint8 square (``to_input``);
- :meth:`DataConfig.normalize` maps [0, 1] tensors to the network's scale (training batches and the
  deployed graph alike).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from spinexr.config import RESIZE_MODES, SPINE_CENTRED_MODES
from spinexr.data.framing import STRIP_ASPECT, spine_window, strip_box
from spinexr.errors import SpinexrError, WeightsError

# ``strip``: a film wider than a strip (height / width below STRIP_ASPECT, KAUH's Normal strips) is
# first cut to a strip around the spine (spinexr.data.framing.strip_box), then letterboxed, so every
# film reaches the model framed as a strip, whatever the hospital cropped.
# ``window``: every film becomes a window of a strip's proportions centred on the spine, cut from a wider
# film and widened, where the film is narrower, by mirroring its edges (spinexr.data.framing.spine_window),
# then letterboxed: a strip and the same strip widened reach the model as the same pixels.
# The ImageNet mean and std of the three colour channels, averaged for one gray channel.
GRAY_MEAN = 0.449
GRAY_STD = 0.226


@dataclass(frozen=True)
class DataConfig:
    """Input size (square side), normalisation, resize mode and channels of a model.

    Args:
        input_size: the input's height (and width, unless ``input_width``).
        mean: the normalisation mean.
        std: the normalisation standard deviation.
        resize: how a film is fitted (see :func:`fit_to_box`).
        in_chans: input channels.
        input_width: the input's width, for a tall input.
    """

    input_size: int  # the input's height; its width too, unless input_width is set
    mean: float = GRAY_MEAN
    std: float = GRAY_STD
    resize: str = "letterbox"
    in_chans: int = 1
    input_width: int | None = None  # a tall input (landmark models: 512 x 256) keeps tall films' aspect

    @property
    def height(self) -> int:
        return self.input_size

    @property
    def width(self) -> int:
        return self.input_width or self.input_size

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise SpinexrError(f"unknown resize mode {self.resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        if self.input_size < 16 or self.std <= 0:
            raise SpinexrError(f"invalid data contract {self}: input_size >= 16 and std > 0 are needed")

    def with_(self, **changes: Any) -> DataConfig:
        """A copy with some fields replaced (None values keep the current one)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> DataConfig:
        """The contract stored in a model file's metadata (``data_config``, or the flat keys of format 1)."""
        d = meta.get("data_config") or {k: meta[k] for k in ("input_size", "mean", "std", "resize", "in_chans")
                                          if k in meta}
        try:
            return cls(input_size=int(d["input_size"]), mean=float(d.get("mean", GRAY_MEAN)),
                       std=float(d.get("std", GRAY_STD)), resize=str(d.get("resize", "letterbox")),
                       in_chans=int(d.get("in_chans", 1)),
                       input_width=int(d["input_width"]) if d.get("input_width") else None)
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"the model file's data contract is incomplete or malformed ({e})") from e

    def normalize(self, x: Any) -> Any:
        """[0, 1] tensor or array -> the network's input scale. The only place spinexr normalises."""
        return (x - self.mean) / self.std

    def to_input(self, img: np.ndarray) -> tuple[np.ndarray, Placement]:
        """A decoded film (float [0, 1], H x W) -> the model's uint8 input and where the film lies in it."""
        return fit_to_box(img, self.height, self.width, self.resize)


@dataclass(frozen=True)
class Placement:
    """Where the original image lies inside the model input (to undo a letterbox).

    Args:
        width: the input's width.
        height: the input's height.
        scale_x: input pixels a film pixel, across.
        scale_y: input pixels a film pixel, down.
        offset_x: where the film's left edge lies in the input.
        offset_y: where its top edge lies.
        orig_w: the film's width.
        orig_h: the film's height.
    """

    width: int
    height: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    orig_w: int
    orig_h: int

    def points_to_input(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) pixel positions (x, y) in the original film -> in the model input."""
        p = np.asarray(pts, dtype=np.float64)
        return np.stack([p[..., 0] * self.scale_x + self.offset_x, p[..., 1] * self.scale_y + self.offset_y], axis=-1)

    def points_to_original(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) pixel positions (x, y) in the model input -> in the original film."""
        p = np.asarray(pts, dtype=np.float64)
        return np.stack([(p[..., 0] - self.offset_x) / self.scale_x, (p[..., 1] - self.offset_y) / self.scale_y], axis=-1)

    def to_original(self, heat: np.ndarray) -> np.ndarray:
        """Map a map over the model input (any resolution) onto the original image's (orig_h x orig_w)
        frame. Parts of the film the model never saw (cut off by the ``crop`` or ``strip`` modes) are 0."""
        hm = Image.fromarray(heat.astype(np.float32), mode="F").resize((self.width, self.height),
                                                                       Image.Resampling.BILINEAR)
        # The input-space box covered by the image, clipped to the input.
        x0, y0 = self.offset_x, self.offset_y
        x1, y1 = x0 + self.orig_w * self.scale_x, y0 + self.orig_h * self.scale_y
        bx0, by0, bx1, by1 = max(0.0, x0), max(0.0, y0), min(float(self.width), x1), min(float(self.height), y1)
        out = np.zeros((self.orig_h, self.orig_w), np.float32)
        # ... and where that box lies in the original film.
        fx0, fy0 = int(round((bx0 - x0) / self.scale_x)), int(round((by0 - y0) / self.scale_y))
        fx1, fy1 = int(round((bx1 - x0) / self.scale_x)), int(round((by1 - y0) / self.scale_y))
        fx1, fy1 = min(max(fx1, fx0 + 1), self.orig_w), min(max(fy1, fy0 + 1), self.orig_h)
        crop = hm.crop(tuple(int(round(v)) for v in (bx0, by0, bx1, by1)))
        out[fy0:fy1, fx0:fx1] = np.asarray(crop.resize((fx1 - fx0, fy1 - fy0), Image.Resampling.BILINEAR),
                                           dtype=np.float32)
        return out


def fit_to_square(img: np.ndarray, size: int, mode: str = "letterbox") -> tuple[np.ndarray, Placement]:
    """:func:`fit_to_box` into a ``size`` x ``size`` square.

    Args:
        img: the decoded film, float in [0, 1].
        size: the square's side.
        mode: the resize mode (see :func:`fit_to_box`).
    """
    return fit_to_box(img, size, size, mode)


def fit_to_box(img: np.ndarray, height: int, width: int, mode: str = "letterbox") -> tuple[np.ndarray, Placement]:
    """Resize a float [0,1] H x W image into a ``height`` x ``width`` uint8 input. The only place spinexr
    resizes a film for a model.

    ``letterbox`` keeps the aspect and pads with black; ``stretch`` ignores the aspect; ``crop``
    fills the box and centre-crops the overhanging side; ``strip`` cuts a film wider than a strip
    (:data:`~spinexr.data.framing.STRIP_ASPECT`) to :func:`~spinexr.data.framing.strip_crop`'s strip
    around the spine's column (the brightest vertical band of its middle 60%), then letterboxes;
    ``window`` does the same to every film, widening a narrower one to the strip's proportions by
    mirroring its edges (:func:`~spinexr.data.framing.spine_window`), so the framing a hospital chose
    around the spine does not reach the model.

    Args:
        img: the decoded film, float in [0, 1], H x W.
        height: the model input's height.
        width: its width.
        mode: ``letterbox``, ``stretch``, ``crop``, ``strip`` or ``window``.

    Returns:
        the uint8 input and its :class:`Placement` (maps points between the film and the input).
    """
    if mode not in RESIZE_MODES:
        raise SpinexrError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    if mode in SPINE_CENTRED_MODES:  # a strip around the spine, letterboxed; placed back onto the whole film
        if mode == "strip":
            x0, cw = strip_box(img, STRIP_ASPECT)
            part = img[:, x0:x0 + cw]
        else:
            part, x0 = spine_window(img, STRIP_ASPECT)
        x8, pl = fit_to_box(part, height, width, "letterbox")
        return x8, replace(pl, offset_x=pl.offset_x - x0 * pl.scale_x, orig_w=img.shape[1])
    h, w = img.shape
    im = Image.fromarray(img.astype(np.float32), mode="F")
    if mode == "stretch":
        out = np.asarray(im.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0))
        pl = Placement(width, height, width / w, height / h, 0.0, 0.0, w, h)
    else:
        s = min(height / h, width / w) if mode == "letterbox" else max(height / h, width / w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        small = np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0))
        canvas = np.zeros((height, width), np.float32)
        ox, oy = (width - nw) // 2, (height - nh) // 2
        # Paste with clipping (negative offsets in crop mode).
        sx0, sy0 = max(0, -ox), max(0, -oy)
        dx0, dy0 = max(0, ox), max(0, oy)
        cw, ch = min(nw - sx0, width - dx0), min(nh - sy0, height - dy0)
        canvas[dy0:dy0 + ch, dx0:dx0 + cw] = small[sy0:sy0 + ch, sx0:sx0 + cw]
        out = canvas
        pl = Placement(width, height, nw / w, nh / h, float(ox), float(oy), w, h)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), pl

