"""A pipeline and how it runs over many films.

- :mod:`~spinexr.pipeline.spec`: :class:`PipelineSpec`, what to load and how, one frozen object;
- :mod:`~spinexr.pipeline.runtime`: :class:`Pipeline`, the bundle's classifier, landmark model and rule as one object;
- :mod:`~spinexr.pipeline.source`: the films of a run, expanded from files and folders;
- :mod:`~spinexr.pipeline.executors` and :mod:`~spinexr.pipeline.ray`: where the pipeline runs (here,
  ``--jobs`` processes, a Ray cluster);
- :mod:`~spinexr.pipeline.driver`: the one driver, films through an executor into sinks (:mod:`spinexr.outputs`).
"""

from spinexr.pipeline.runtime import BUNDLED, MODEL_SUFFIXES, Pipeline
from spinexr.pipeline.spec import PipelineSpec

__all__ = ["BUNDLED", "MODEL_SUFFIXES", "Pipeline", "PipelineSpec"]
