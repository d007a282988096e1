"""Where a run's predictions go: each output is a sink behind one protocol (:mod:`spinexr.outputs._base`).

- :mod:`~spinexr.outputs.results`: the result file (CSV, JSON, JSON Lines), streamed and resumable;
- :mod:`~spinexr.outputs.dicom`: a TID 1500 SR and a presentation state per DICOM film;
- :mod:`~spinexr.outputs.images`: the measurement drawn on each film, and the classifier's heatmaps.

The outputs ``predict`` offers as flags are registered here, one line each (the result file is ``--out``).
"""

from spinexr.outputs._base import OUTPUTS, OutputKind, RunInfo, Sink, output_kinds, register_output

register_output(OutputKind("--overlays", "folder for the measurement drawn on each film (needs a landmark model)",
                           "spinexr.outputs.images:OverlaySink"))
register_output(OutputKind("--heatmaps", "folder for the classifier's map over each film (--explain picks the "
                           "method; default gradcam)", "spinexr.outputs.images:HeatmapSink"))
register_output(OutputKind("--dicom-out", "for DICOM films: a TID 1500 SR and a presentation state each, in the "
                           "film's study (DIR/<StudyInstanceUID>/SR_*.dcm, PR_*.dcm); other files are skipped with a "
                           "reason", "spinexr.outputs.dicom:DicomSink"))

__all__ = ["OUTPUTS", "OutputKind", "RunInfo", "Sink", "output_kinds", "register_output"]
