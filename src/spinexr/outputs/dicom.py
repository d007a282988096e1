"""``predict --dicom-out DIR``: each DICOM film's TID 1500 SR and presentation state, in its own study.

The datasets are made from the film's prediction document by :mod:`spinexr.deploy.dicom`; this sink
writes them to ``DIR/<StudyInstanceUID>/SR_<SOPInstanceUID>.dcm`` and ``PR_<SOPInstanceUID>.dcm``, numbered
1, 2, ... within the study's output series (a film reported again keeps its number). It runs
in the driver, before the result file in the sink list, so a resumed run never skips a film whose report
is missing; it reads each source's header from its path, so it works with every executor.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pydicom

from spinexr.data.imread import is_dicom_file
from spinexr.deploy import dicom
from spinexr.deploy.dicom import NOT_DICOM, read_header, require_highdicom
from spinexr.errors import SpinexrError
from spinexr.outputs._base import Sink, writable_folder, write_failed

log = logging.getLogger(__name__)


class DicomSink(Sink):
    """The SR and presentation state of each DICOM film (see the module). Counts what it wrote and skipped.

    Args:
        folder: where the studies' folders go (made if missing; checked writable before the run).
    """

    def __init__(self, folder: Path) -> None:
        require_highdicom()
        self.folder = writable_folder(Path(folder), "DICOM output folder")
        self.written = 0
        self.skipped: dict[str, int] = {}

    @classmethod
    def from_flag(cls, value: Path, _args: argparse.Namespace) -> DicomSink:
        return cls(value)

    def _skip(self, path: str, reason: str) -> None:
        log.warning("%s: no DICOM output: %s", path, reason)
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def write(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            self.write_one(doc)

    def write_one(self, doc: dict[str, Any]) -> list[Path]:
        """The SR and presentation state of one document (none for a failed film or a non-DICOM file)."""
        path = str(doc.get("path"))
        if doc.get("status") == "not_analysed":  # no finding leaves for a film outside the intended use
            self._skip(path, "not analysed (outside the intended use; the reason is in its document)")
            return []
        if doc.get("status") != "ok":
            return []  # the error is in its document
        if not is_dicom_file(path):
            self._skip(path, NOT_DICOM)
            return []
        try:
            source = read_header(path)
            res = dicom.dicom_results(doc, source, self._number(source))
        except SpinexrError as e:
            self._skip(path, str(e).removeprefix(f"{path}: "))
            return []
        except Exception as e:  # noqa: BLE001 - one film's header the writers cannot take must not stop the batch
            self._skip(path, f"the report could not be made from this film's header ({type(e).__name__}: {e})")
            return []
        for note in res.notes:
            log.info("%s: %s", path, note)
        study = self.folder / str(source.StudyInstanceUID)
        out = []
        try:
            study.mkdir(exist_ok=True)
            for kind, ds in (("SR", res.sr), ("PR", res.pr)):
                if ds is None:
                    continue
                dest = study / f"{kind}_{source.SOPInstanceUID}.dcm"
                tmp = dest.with_name(dest.name + ".tmp")
                try:
                    ds.save_as(tmp, enforce_file_format=True)
                    tmp.replace(dest)
                finally:
                    tmp.unlink(missing_ok=True)
                out.append(dest)
        except OSError as e:
            raise write_failed(study, e) from None
        self.written += 1
        return out

    def _number(self, source: Any) -> int:
        """The report's Instance Number in its study's output series: the one it had if it was written
        before, else one more than the reports there."""
        study = self.folder / str(source.StudyInstanceUID)
        mine = study / f"SR_{source.SOPInstanceUID}.dcm"
        if mine.is_file():
            try:
                return int(pydicom.dcmread(mine, stop_before_pixels=True).InstanceNumber)
            except Exception:  # noqa: BLE001 - a damaged earlier report is written again with a new number
                pass
        return 1 + sum(1 for p in study.glob("SR_*.dcm") if p != mine) if study.is_dir() else 1

    def close(self) -> str:
        parts = [f"DICOM: {self.written} films reported to {self.folder}"]
        parts += [f"{n} skipped ({reason})" for reason, n in self.skipped.items()]
        return "; ".join(parts)


__all__ = ["DicomSink"]
