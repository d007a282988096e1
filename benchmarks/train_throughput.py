"""Training throughput: the real training loop against a synthetic forward+backward ceiling.

For each backbone this measures, at one batch size and input size:

* ``loop``: images/s of spinexr's own training loop (``spinexr.train.fit``: GPU-resident uint8 data,
  on-device augmentation, bf16 autocast and channels_last on CUDA, fused AdamW), from the epochs
  after the first (warm-up);
* ``ceiling``: images/s of a bare loop of forward + backward + optimiser step on random tensors
  already on the device, with the same model, batch size, precision and memory format;
* peak memory (CUDA: ``max_memory_allocated``; CPU: process RSS).

The ratio loop/ceiling is the target (>= 0.85 on a GPU). Run it on the GPU as:

    python benchmarks/train_throughput.py --device cuda --epochs 4

and a reduced CPU version as:

    python benchmarks/train_throughput.py --device cpu --image-size 96 --epochs 2 --steps 6

Writes benchmarks/results/train_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def ceiling(name: str, size: int, batch: int, device, steps: int, attention: str, compile_: bool) -> float:
    """Images/s of a bare forward+backward+step loop on random device tensors."""
    import torch
    import torch.nn.functional as F

    from spinexr.models import create_model
    torch.manual_seed(0)
    model = create_model(name, attention=attention).to(device).train()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    x = torch.randn(batch, 1, size, size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = run(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--models", default="xception,inception_v3,densenet121")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=None, help="default: each model's own")
    ap.add_argument("--epochs", type=int, default=4, help="loop epochs; the first is warm-up")
    ap.add_argument("--steps", type=int, default=30, help="ceiling steps")
    ap.add_argument("--attention", default="mhsa")
    ap.add_argument("--compile", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from spinexr.config import TrainConfig
    from spinexr.data.dataset import prepare_dataset
    from spinexr.data.splits import carve_validation, group_kfold
    from spinexr.engine.distributed import resolve_device
    from spinexr.engine.train import FitOptions, FitSplit, fit
    from spinexr.models import create_model, get_model_entry

    a = _parser().parse_args(argv)
    device = resolve_device(a.device)
    models = a.models.split(",")
    contracts = {m: get_model_entry(m).data_config.with_(input_size=a.image_size) for m in models}
    sizes = {m: c.input_size for m, c in contracts.items()}
    data = prepare_dataset(a.data, set(sizes.values()), progress=False)
    y = data.labels
    tr, _ = group_kfold(y, data.groups, 5, 0)[0]
    fit_idx, val_idx = carve_validation(tr, y, data.groups, 0.15, 0)
    rows = {}
    for m in models:
        s = sizes[m]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)
        model = create_model(m, attention=a.attention)
        cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, device=str(device), patience=10**6,
                          compile=a.compile, tta_flip=False)
        res = fit(model, FitSplit(data.tensors[s], y, fit_idx, val_idx), cfg, contracts[m], FitOptions(progress=False, desc=m))
        hist = res.history[1:] or res.history
        loop = sum(h["train_images"] for h in hist) / sum(h["train_seconds"] for h in hist)
        epoch_wall = float(np.mean([h["seconds"] for h in hist]))
        peak_loop = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ceil = ceiling(m, s, res.batch_size, device, a.steps, a.attention, a.compile)
        peak_ceil = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        rows[m] = {"image_size": s, "batch_size": res.batch_size, "loop_images_per_s": loop,
                   "ceiling_images_per_s": ceil, "ratio": loop / ceil, "epoch_wall_s_incl_validation": epoch_wall,
                   "peak_gpu_gib_loop": peak_loop, "peak_gpu_gib_ceiling": peak_ceil}
        print(f"{m:<13} {s}px bs{res.batch_size}: loop {loop:8.1f} img/s, ceiling {ceil:8.1f} img/s, "
              f"ratio {loop / ceil:.2f}", flush=True)
    out = {**header("train_throughput", argv), "device": str(device), "settings": vars(a), "results": rows,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "target": "loop >= 0.85 x ceiling per backbone on one GPU"}
    write_result(f"train_throughput_{device.type}.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
