"""Are the heatmaps faithful? ROAD and deletion AUC for each explanation method of a KAUH CV run.

Takes the fold-0 model of each backbone in a ``spinexr cv`` run folder (``RUN/models``), explains
its own held-out fold-0 images with Grad-CAM, Grad-CAM++ and the attention head, and scores every
map against a smooth random map for the same image and class (see ``spinexr.explain.faithfulness``).

    python benchmarks/faithfulness.py --kauh-run runs/bench_kauh_cv_cpu_reduced2

Writes benchmarks/results/faithfulness_kauh.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from spinexr.data.dataset import prepare_dataset
    from spinexr.data.splits import group_kfold, take_in_turns
    from spinexr.deploy.predictor import Predictor
    from spinexr.explain import METHODS, faithfulness
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kauh-run", required=True, help="a spinexr cv run folder on KAUH")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--images", type=int, default=24, help="fold-0 test images per backbone")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="faithfulness_kauh.json")
    a = ap.parse_args(argv)
    run = Path(a.kauh_run)
    cfg = json.loads((run / "config.json").read_text())
    t0 = time.perf_counter()
    results = {}
    for mf in sorted((run / "models").glob("*.safetensors")):
        pred = Predictor(mf)
        data = prepare_dataset(a.data, [pred.size], pred.contract.resize, progress=False)
        _, te = group_kfold(data.labels, data.groups, cfg["cv"]["folds"], seed=cfg["train"]["seed"])[0]
        # every class in turn, so the sample is not all Scoliosis
        idx = take_in_turns([[int(i) for i in te if data.labels[i] == c] for c in range(int(data.labels.max()) + 1)],
                            a.images)
        xs = data.tensors[pred.size][torch.as_tensor(idx)].float().div(255.0)
        xs = pred.contract.normalize(xs)
        res = {}
        for method in a.methods.split(","):
            res[method] = faithfulness(pred.model, xs, method, steps=10)
            r = res[method]
            print(f"{mf.stem}@{pred.size} {method}: ROAD {r['road']:.3f} vs random {r['random_road']:.3f} "
                  f"(beats random on {r['road_wins']:.0%}), deletion {r['deletion_auc']:.3f} vs random "
                  f"{r['random_deletion_auc']:.3f}", flush=True)
        results[mf.stem] = {"image_size": pred.size, "n_images": len(idx),
                            "classes": np.bincount(data.labels[idx], minlength=3).tolist(), "methods": res}
    out = {**header("faithfulness", argv), "run": str(run), "run_settings": cfg.get("train", {}),
           "wall_seconds": time.perf_counter() - t0, "results": results}
    write_result(a.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
