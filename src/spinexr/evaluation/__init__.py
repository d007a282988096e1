"""Measuring models: cross-validation, one-split training, external evaluation, metrics, reports."""
