"""Out-of-distribution flags on pydicom's real-world DICOM corpus against held-out KAUH films.

For a model trained with ``spinexr train`` on KAUH, this scores every readable file of pydicom's
test corpus (CT, MR, NM, ultrasound, segmentation and colour secondary captures: none is a spine
radiograph) and the model's own held-out KAUH test films (the same split ``train`` made), and
reports how often each is flagged: by the feature score alone, and with the file checks
(:func:`spinexr.ood.input_checks`: DICOM modality and photometric interpretation).

    spinexr train --data ../shared/data/kauh-spine-xray --model xception --image-size 96 --epochs 12 \\
        --device cpu --out runs/kauh_xc96
    python benchmarks/ood_corpus.py --run runs/kauh_xc96
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


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import pydicom

    from spinexr.data.dataset import prepare_dataset
    from spinexr.data.splits import holdout
    from spinexr.deploy.predictor import Predictor
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a `spinexr train` run folder on KAUH")
    ap.add_argument("--cache-dir", default="runs/cache")
    ap.add_argument("--out", default="ood_corpus.json")
    a = ap.parse_args(argv)
    run = Path(a.run)
    cfg = json.loads((run / "config.json").read_text())
    pred = Predictor(run / "model.safetensors")
    res = header("ood_corpus", argv)
    t0 = time.perf_counter()

    corpus = Path(pydicom.__file__).parent / "data" / "test_files"
    rows = []
    for p in sorted(corpus.rglob("*.dcm")):
        pr, _ = pred.predict_file(p)
        if pr.status != "ok":
            continue
        rows.append({"file": p.name, "score": pr.ood_score, "feature_flag": bool(pr.ood_score > pred.ood_threshold),
                     "flag": bool(pr.ood), "reasons": pr.ood_reasons})
    n = len(rows)
    by_rule = [r for r in rows if any(not x.startswith("feature score") for x in r["reasons"])]
    only_features = [r for r in rows if r not in by_rule]

    data = prepare_dataset(cfg["source"], [pred.size], pred.contract.resize, cache_dir=a.cache_dir, progress=False)
    test_fraction = cfg["cv"].get("test_fraction", cfg.get("test_fraction"))  # runs before settings held it
    _, te = holdout(data.labels, data.groups, test_fraction, seed=cfg["train"]["seed"])
    kauh = [pred.predict_file(data.paths[i])[0] for i in te]
    k_flag = [bool(p.ood) for p in kauh]
    k_feat = [bool(p.ood_score > pred.ood_threshold) for p in kauh]
    thr = pred.ood_threshold
    res.update({
        "model": str(run / "model.safetensors"), "architecture": pred.name, "input_size": pred.size,
        "threshold": thr, "threshold_percentile": pred.meta["ood"]["percentile"],
        "corpus": {"readable_files": n,
                   "flag_rate_features_only": float(np.mean([r["feature_flag"] for r in rows])),
                   "flag_rate_with_file_checks": float(np.mean([r["flag"] for r in rows])),
                   "flagged_by_file_checks": len(by_rule),
                   "left_to_features": [{"file": r["file"], "score": r["score"], "score_over_threshold": r["score"] / thr,
                                         "flag": r["flag"]} for r in only_features],
                   "min_score_over_threshold_left_to_features": (min(r["score"] for r in only_features) / thr
                                                                  if only_features else None),
                   "files": rows},
        "kauh_held_out": {"n": len(kauh), "flag_rate": float(np.mean(k_flag)),
                          "flag_rate_features_only": float(np.mean(k_feat)),
                          "max_score_over_threshold": float(max(p.ood_score for p in kauh) / thr)},
        "wall_seconds": time.perf_counter() - t0,
    })
    write_result(a.out, res)
    c = res["corpus"]
    print(f"corpus: {n} readable non-spine files; flagged {c['flag_rate_features_only']:.0%} by features alone, "
          f"{c['flag_rate_with_file_checks']:.0%} with the file checks; KAUH held-out {len(kauh)} films flagged "
          f"{res['kauh_held_out']['flag_rate']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
