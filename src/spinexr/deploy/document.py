"""The prediction document: the one wire format of a prediction, versioned, with a committed JSON Schema.

Every output is made from :meth:`~spinexr.deploy.prediction.Prediction.to_document`: ``predict``'s JSON,
JSON Lines and CSV (:func:`flatten`, the same fields one level deep), the service's ``POST /v1/predict``,
the page and the demo. The schema (``prediction.schema.json`` beside this module, :func:`schema`) is the
contract for programs that read it; a change that removes or renames a field bumps :data:`SCHEMA`.

Top-level fields: ``schema``, ``path``, ``status`` (``ok``, ``error`` or ``not_analysed``: outside the
bundle's intended use), ``error`` (reason and :class:`~spinexr.errors.ReadErrorKind`, or
``outside_intended_use``), ``label`` (the decision), ``probabilities`` (the classifier's, calibrated),
``ood``, ``warnings``, ``image``, ``spine`` (the measurement: Cobb angles, end vertebrae, band, view, the 68
corners), ``decision`` (the classifier's label checked against the measured curve), ``files`` (heatmap and
overlay written beside), ``model`` (which bundle made it) and ``timing_ms``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA = "spinexr-prediction/2"
SCHEMA_FILE = "prediction.schema.json"
# Output formats by file suffix: a JSON array, JSON Lines (one document a line), or CSV (flattened).
OUTPUT_SUFFIXES = (".json", ".jsonl", ".csv")
# Lists of objects a CSV row holds as numbered columns: the curves, largest first, at most three
# (``spine_curves_1_region``, ``spine_curves_1_angle``, ...), so every row has the same columns.
CSV_LISTS = {"spine_curves": 3}


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every prediction document follows."""
    return json.loads(resources.files("spinexr.deploy").joinpath(SCHEMA_FILE).read_text())


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6f}"
    if isinstance(v, list):
        if any(isinstance(x, (list, dict)) for x in v):
            return json.dumps(v, separators=(",", ":"))
        return "; ".join(_cell(x) for x in v)
    return str(v)


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The document one level deep, as CSV cells: nested keys joined by ``_`` (``ood_flag``,
    ``spine_aasce_angles_first_angle``, ``probabilities_Normal``), the curves as numbered columns
    (:data:`CSV_LISTS`), lists of values joined by ``; ``, the corners as compact JSON, numbers to six
    decimals, flags as true/false and nulls as empty cells."""
    out: dict[str, str] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "_"))
        elif key in CSV_LISTS and isinstance(v, list):
            items = sorted(v, key=lambda c: -float(c.get("angle") or 0))[:CSV_LISTS[key]]
            for i, item in enumerate(items, start=1):
                out.update(flatten(item, f"{key}_{i}_"))
        else:
            out[key] = _cell(v)
    return out


def document_columns(labels: list[str]) -> list[str]:
    """The CSV columns of a document, in the schema's order, for a classifier with ``labels``: every
    film's row has the same columns (a streamed CSV fixes its header before the first film)."""
    sch = schema()

    def walk(node: dict[str, Any], prefix: str) -> list[str]:
        if "$ref" in node:
            node = sch["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        alts = [a for a in node.get("oneOf", []) if a.get("type") != "null"]
        if alts:
            return walk(alts[0], prefix)
        if prefix == "probabilities_":
            return [prefix + c for c in labels]
        if prefix[:-1] in CSV_LISTS:
            return [c for i in range(1, CSV_LISTS[prefix[:-1]] + 1) for c in walk(node["items"], f"{prefix}{i}_")]
        if "properties" not in node:
            return [prefix[:-1]]
        return [c for k, v in node["properties"].items() for c in walk(v, f"{prefix}{k}_")]

    return walk(sch, "")


def document_labels(docs: list[dict[str, Any]]) -> list[str]:
    """The class labels the documents' probabilities name (in their order)."""
    for d in docs:
        if d.get("probabilities"):
            return list(d["probabilities"])
    return []


def output_format(path: Path) -> str:
    """``json``, ``jsonl`` or ``csv`` by the output file's suffix (anything else: CSV, as before)."""
    suffix = path.suffix.lower()
    return suffix[1:] if suffix in (".json", ".jsonl") else "csv"


def write_documents(docs: Iterable[dict[str, Any]], out: Path) -> Path:
    """Write documents to ``out`` by its suffix (:func:`output_format`); the file is replaced atomically."""
    docs = list(docs)
    fmt = output_format(out)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        if fmt == "json":
            json.dump(docs, f, indent=2)
        elif fmt == "jsonl":
            for d in docs:
                f.write(json.dumps(d) + "\n")
        else:
            w = csv.DictWriter(f, fieldnames=document_columns(document_labels(docs)), restval="", extrasaction="ignore")
            w.writeheader()
            w.writerows(flatten(d) for d in docs)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(out)
    return out


def summary_line(doc: dict[str, Any]) -> str:
    """One tab-separated line for a terminal: path, label, probabilities, flags, angle, decision note."""
    if doc["status"] == "not_analysed":
        return f"{doc['path']}\tNOT ANALYSED\t{doc['error']['reason']}"
    if doc["status"] != "ok":
        return f"{doc['path']}\tERROR\t[{doc['error']['kind']}] {doc['error']['reason']}"
    parts = [doc["path"], doc["label"], *(f"{c}={v:.6f}" for c, v in doc["probabilities"].items())]
    if doc["ood"]["flag"]:
        parts.append(f"OOD ({'; '.join(doc['ood']['reasons'])})")
    s = doc["spine"]
    if s is not None:
        curves = "; ".join(f"{c['side']} {c['region']} {c['angle']:.1f} {c['upper_end']}-{c['lower_end']}"
                           for c in s["curves"]) or "no curve of 10 or more"
        parts.append(f"Cobb {s['largest']:.1f} ({s['band']}; {curves})" if s["plausible"]
                     else f"Cobb refused: {'; '.join(s['refused'])}")
    d = doc["decision"]
    if d is not None and d["agreement"] in ("overruled", "disagree", "check the film"):
        parts.append(f"{d['agreement'].upper()}: {d['note']}")
    return "\t".join(parts)


__all__ = ["OUTPUT_SUFFIXES", "SCHEMA", "document_columns", "document_labels", "flatten", "output_format", "schema",
           "summary_line", "write_documents"]
