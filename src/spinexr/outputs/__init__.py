"""Where a run's predictions go: each output is a sink behind one protocol (:mod:`spinexr.outputs._base`).

- :mod:`~spinexr.outputs.results`: the result file (CSV, JSON, JSON Lines), streamed and resumable;
- :mod:`~spinexr.outputs.dicom`: a TID 1500 SR and a presentation state per DICOM film;
- :mod:`~spinexr.outputs.images`: the measurement drawn on each film, and the classifier's heatmaps.
"""

from spinexr.outputs._base import OUTPUTS, OutputKind, RunInfo, Sink, output_kinds, register_output

__all__ = ["OUTPUTS", "OutputKind", "RunInfo", "Sink", "output_kinds", "register_output"]
