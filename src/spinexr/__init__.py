"""spinexr: classify spine radiographs as Normal, Scoliosis or Spondylolisthesis."""

__version__ = "0.1.0"

CLASSES: tuple[str, ...] = ("Normal", "Scoliosis", "Spondylolisthesis")

__all__ = ["CLASSES", "__version__"]
