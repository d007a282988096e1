"""Datasets: manifests, checks and synthetic radiographs."""
