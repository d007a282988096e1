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
    service.serve(args.model, host=args.host, port=args.port, onnx_path=args.onnx, max_upload_mb=args.max_upload_mb,
                  max_pixels=args.max_pixels, threads=args.threads, max_batch=args.max_batch,
                  max_queue=args.max_queue, landmarks=args.landmarks, no_landmarks=args.no_landmarks,
                  corrections=args.corrections, token=args.token or os.environ.get("SPINEXR_SERVE_TOKEN"))
    return 0
