"""The ``spinexr`` console command: one entry point, many verbs.

The grammar lives in :mod:`spinexr.cli._parser`; each verb family's handlers in their own module
(``data``, ``train``, ``deploy``, ``serve``, ``demo``), imported only when one of its verbs runs, so a
light verb never pays for torch. Handlers parse nothing themselves and call library code; user
mistakes surface as :class:`~spinexr.errors.SpinexrError` and are printed as one line, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from spinexr.cli._parser import build_parser
from spinexr.errors import SpinexrError

# Verbs whose positional items may be split by options (argparse ends a nargs="+" positional at the first one).
ITEM_VERBS = ("predict", "explain")
TRAINING_VERBS = ("train", "cv")


QUIET_LIBRARIES = ("highdicom", "dicomweb_client")


def _run(args: object) -> int:
    module, func = str(args.handler).split(":")  # type: ignore[attr-defined]
    return int(getattr(importlib.import_module(f"spinexr.cli.{module}"), func)(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `predict MODEL --onnx X FILES...`: paths after the options come back unparsed; they belong to the items.
    if extra and getattr(args, "cmd", None) in ITEM_VERBS and not any(e.startswith("-") for e in extra):
        args.items = list(args.items) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # libraries that narrate each step at INFO (highdicom: every module it copies)
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
    distributed = None
    try:
        if args.cmd in TRAINING_VERBS:  # only these verbs need torch.distributed; the others run without it
            distributed = importlib.import_module("spinexr.engine.distributed")
            distributed.init_distributed()  # no-op unless launched by torchrun
        return _run(args)
    except SpinexrError as e:
        print(f"spinexr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spinexr: interrupted", file=sys.stderr)
        return 130
    finally:
        if distributed is not None:
            distributed.shutdown_distributed()


__all__ = ["build_parser", "main"]
