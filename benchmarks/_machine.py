"""Describe the machine a benchmark ran on (CPU, GPU, library versions): the library's provenance
(:mod:`spinexr.evaluation.provenance`), with this repository as the checkout, and where results go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spinexr.evaluation import provenance
from spinexr.evaluation.provenance import machine_info

ROOT = Path(__file__).resolve().parents[1]


def code_version(root: str | Path | None = None) -> dict[str, Any] | None:
    """The checkout a benchmark ran from (default this repository)."""
    return provenance.code_version(root if root is not None else ROOT)


def header(name: str, argv: list[str] | None) -> dict[str, Any]:
    """The fields every result file starts with: benchmark, command, date, machine, checkout (the git commit)."""
    return provenance.header(name, argv, ROOT)


def write_result(filename: str, payload: dict[str, Any]) -> None:
    """Write ``benchmarks/results/<filename>`` and say where."""
    import json
    from pathlib import Path

    dest = Path(__file__).resolve().parent / "results" / filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {dest}")


__all__ = ["code_version", "header", "machine_info", "write_result"]
