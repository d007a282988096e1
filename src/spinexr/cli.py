"""The ``spinexr`` console command: one entry point, many verbs.

Each verb is a small function that parses nothing itself and calls library code; user mistakes
surface as :class:`~spinexr.errors.SpinexrError` and are printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from spinexr import __version__
from spinexr.errors import SpinexrError

log = logging.getLogger("spinexr")

Handler = Callable[[argparse.Namespace], int]


def _cmd_data_check(args: argparse.Namespace) -> int:
    from spinexr.data.check import check_dataset, format_result

    res = check_dataset(args.source, args.out, max_pixels=args.max_pixels,
                        near_dup_threshold=args.near_dup_threshold, progress=not args.json)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print(format_result(res))
    return 0 if sum(res.counts.values()) else 1


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from spinexr.data.synth import synthesize

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise SpinexrError(f"{out}: folder exists and is not empty; choose another folder or pass --force")
    csv_path = synthesize(out, n=args.n, seed=args.seed, scale=args.scale, fmt=args.format, progress=True)
    print(f"wrote {args.n} synthetic radiographs to {out} (labels: {csv_path})")
    if args.contact_sheet:
        import csv

        from spinexr.data.synth import contact_sheet

        rows = list(csv.DictReader(open(csv_path)))
        caps = [f"{r['label'][:6]} {r['view']} "
                + (f"Cobb {float(r['cobb_deg']):.0f}" if r["cobb_deg"] else "")
                + (f"slip {float(r['slip_pct']):.0f}%" if r["slip_pct"] else "") for r in rows]
        sheet = contact_sheet([out / r["path"] for r in rows], args.contact_sheet, captions=caps)
        print(f"contact sheet: {sheet}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check, synthesise or fetch datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{check,synth}")
    c = dsub.add_parser("check", help="counts, unreadable files, duplicates, size shortcut; writes a manifest")
    c.add_argument("source", help="a folder with one sub-folder per class, or a CSV manifest")
    c.add_argument("--out", default="spinexr-check", help="where manifest.csv and data_report.json go")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--max-pixels", type=int, default=100_000_000, help="refuse larger images")
    c.add_argument("--near-dup-threshold", type=float, default=0.97,
                   help="thumbnail correlation above which two images are near-duplicates")
    c.set_defaults(func=_cmd_data_check)
    s = dsub.add_parser("synth", help="synthetic spine radiographs with known labels and severities")
    s.add_argument("out", help="output folder (class folders plus labels.csv)")
    s.add_argument("--n", type=int, default=60, help="number of images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=float, default=1.0, help="image size factor (1.0: ~1000 px tall AP)")
    s.add_argument("--format", choices=["jpg", "png"], default="jpg")
    s.add_argument("--force", action="store_true", help="write into a non-empty folder")
    s.add_argument("--contact-sheet", metavar="PNG", help="also tile every image into this PNG")
    s.set_defaults(func=_cmd_data_synth)


def _cmd_demo(args: argparse.Namespace) -> int:
    from spinexr.demo import run_demo

    run_demo(Path(args.out), seed=args.seed, epochs=args.epochs, n=args.n)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole path on synthetic data, offline, on a CPU")
    p.add_argument("--out", default="demo", help="demo folder (data, check and run)")
    p.add_argument("--n", type=int, default=90, help="number of synthetic images")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_add_data, _add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spinexr", description="Spine radiograph classification: Normal, Scoliosis, Spondylolisthesis."
    )
    parser.add_argument("--version", action="version", version=f"spinexr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for reg in REGISTRARS:
        reg(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SpinexrError as e:
        print(f"spinexr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spinexr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
