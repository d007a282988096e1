"""Spine geometry on AP films: vertebra landmarks in, Cobb angles, end vertebrae, apex and severity out."""
