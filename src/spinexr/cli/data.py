"""``spinexr data check`` and ``spinexr data synth`` (no torch: they start fast on any machine)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from spinexr.cli._common import guard_output, say
from spinexr.data.check import check_dataset, format_result
from spinexr.data.synth import contact_sheet, synthesize


def check(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for name in ("manifest.csv", "data_report.json"):
        guard_output(out / name, force=args.force, inputs=[args.source])
    res = check_dataset(args.source, args.out, max_pixels=args.max_pixels,
                        near_dup_threshold=args.near_dup_threshold, progress=not args.json)
    say(json.dumps(res.to_dict(), indent=2) if args.json else format_result(res))
    return 0 if sum(res.counts.values()) else 1


def synth(args: argparse.Namespace) -> int:
    out = guard_output(args.out, force=args.force, folder=True)
    csv_path = synthesize(out, n=args.n, seed=args.seed, scale=args.scale, fmt=args.format, progress=True)
    say(f"wrote {args.n} synthetic radiographs to {out} (labels: {csv_path})")
    if args.contact_sheet:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        caps = [f"{r['label'][:6]} {r['view']} "
                + (f"Cobb {float(r['cobb_deg']):.0f}" if r["cobb_deg"] else "")
                + (f"slip {float(r['slip_pct']):.0f}%" if r["slip_pct"] else "") for r in rows]
        say(f"contact sheet: {contact_sheet([out / r['path'] for r in rows], args.contact_sheet, captions=caps)}")
    return 0
