"""Out-of-distribution scoring: Mahalanobis distance on the model's pooled features.

Fitted at training time on the training images: the pooled features are projected onto their
leading principal components (at most 64), and each class gets a Gaussian with a shared,
Ledoit-Wolf-shrunk covariance (Lee et al., 2018). An image's score is its smallest squared distance
to a class mean; it is flagged when the score exceeds a percentile of the training scores (95th by
default: on KAUH that flags about 4% of held-out spine films and every photo, chest film, blank film
and document among the negative controls, where the 99th percentile missed a quarter of them). The
fitted numbers are plain arrays, stored in the model file and inside the exported ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class OODDetector:
    """Out-of-distribution score: the smallest Mahalanobis distance of a film's features to a class mean.

    Args:
        mean: (C,) feature mean.
        components: (k, C) principal axes.
        class_means: (classes, k) class means on them.
        precision: (k, k) shared precision.
        threshold: the score a film is flagged over.
        percentile: the training scores' percentile the threshold is.
    """

    mean: np.ndarray  # (C,) feature mean
    components: np.ndarray  # (k, C) principal axes
    class_means: np.ndarray  # (n_classes, k)
    precision: np.ndarray  # (k, k)
    threshold: float
    percentile: float

    def score(self, features: np.ndarray) -> np.ndarray:
        """Smallest squared Mahalanobis distance to a class mean, per row."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) @ self.components.T
        d = z[:, None, :] - self.class_means[None, :, :]
        m = np.einsum("nck,kl,ncl->nc", d, self.precision, d)
        return m.min(axis=1)

    def flag(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.score(features)
        return s, s > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "components": self.components.tolist(),
                "class_means": self.class_means.tolist(), "precision": self.precision.tolist(),
                "threshold": float(self.threshold), "percentile": float(self.percentile)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OODDetector:
        return cls(mean=np.asarray(d["mean"]), components=np.asarray(d["components"]),
                   class_means=np.asarray(d["class_means"]), precision=np.asarray(d["precision"]),
                   threshold=float(d["threshold"]), percentile=float(d["percentile"]))


def fit_ood(features: np.ndarray, labels: np.ndarray, percentile: float = 95.0, max_components: int = 64) -> OODDetector:
    """Fit on training features (N, C) and labels; the threshold is the ``percentile`` of training scores.

    Args:
        features: (N, C) training features.
        labels: their classes.
        percentile: the training scores' percentile the threshold is put at.
        max_components: the principal components kept.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    mean = x.mean(axis=0)
    xc = x - mean
    k = int(min(max_components, x.shape[0] - 1, x.shape[1]))
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:k]
    z = xc @ comps.T
    classes = np.unique(labels)
    n_classes = int(labels.max()) + 1
    cm = np.zeros((n_classes, k))
    resid = np.zeros_like(z)
    for c in classes:
        cm[c] = z[labels == c].mean(axis=0)
        resid[labels == c] = z[labels == c] - cm[c]
    for c in set(range(n_classes)) - set(classes.tolist()):
        cm[c] = np.full(k, 1e6)  # a class absent from training can never be the nearest
    cov = LedoitWolf().fit(resid).covariance_
    prec = np.linalg.pinv(cov)
    det = OODDetector(mean, comps, cm, prec, threshold=0.0, percentile=percentile)
    det.threshold = float(np.percentile(det.score(x), percentile))
    return det


# DICOM modalities under which a spine radiograph arrives: computed and digital radiography,
# fluoroscopy, angiography-type X-ray and radiographic imaging. "OT" (other) says nothing about the
# content: such a file is flagged with that reason, since a flag asks a person to look, not to discard.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RF", "XA", "RG"})


def input_checks(meta: Any) -> list[str]:
    """Reasons, from the file itself, why it is not a spine radiograph (empty when there are none).

    The Mahalanobis score sees only what the network makes of the pixels; these checks read what a
    DICOM file says outright (its modality and photometric interpretation), which no feature threshold
    needs to rediscover: a CT slice is flagged because it is a CT. Plain image files carry no such
    record, and colour is no rule for them: KAUH's own films hold coloured measurement lines and phone
    photos of monitors (colourfulness up to 58, where ultrasound captures score 50).
    """

    reasons: list[str] = []
    if getattr(meta, "format", "") == "DICOM":
        mod = (getattr(meta, "modality", None) or "").upper()
        if mod and mod not in RADIOGRAPH_MODALITIES:
            reasons.append(f"DICOM modality {mod} is not a projection radiograph")
        pi = getattr(meta, "photometric", None) or ""
        if pi and not pi.startswith("MONOCHROME"):
            reasons.append(f"a colour DICOM ({pi}); radiographs are stored MONOCHROME1/2")
    return reasons
