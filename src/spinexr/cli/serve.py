"""``spinexr serve``: the service over a bundle (default: the bundled models)."""

from __future__ import annotations

import argparse
import os

from spinexr.errors import SpinexrError


def serve(args: argparse.Namespace) -> int:
    try:  # an optional extra: a clear message instead of an ImportError
        from spinexr import serve as service
    except ImportError as e:
        raise SpinexrError("serving needs FastAPI and uvicorn: pip install 'spinexr[serve]'") from e
    from spinexr.pipeline import PipelineSpec

    spec = PipelineSpec.from_args(args, args.model)
    settings = service.ServiceSettings(max_upload_mb=args.max_upload_mb, max_batch=args.max_batch,
                                       max_queue=args.max_queue, corrections=args.corrections,
                                       token=args.token or os.environ.get("SPINEXR_SERVE_TOKEN"))
    service.serve(spec, host=args.host, port=args.port, settings=settings)
    return 0
