"""Render the results pages of the documentation (docs/results.md, docs/what-we-tried.md) from benchmarks/results/*.json.

    python benchmarks/make_results_md.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str) -> dict | None:
    p = HERE / "results" / name
    return json.loads(p.read_text()) if p.is_file() else None


def _first(*names: str) -> tuple[str | None, dict | None]:
    """The first of ``names`` that has a results file, read once: ``(name, its JSON)``, or ``(None, None)``."""
    for n in names:
        d = _load(n)
        if d is not None:
            return n, d
    return None, None


def _machine(d: dict) -> str:
    m = d["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    code = d.get("checkout")
    at = "" if not code else f", code at {code['commit'][:10]}" + (" with local changes" if code["modified"] else "")
    return f"{m['cpu']} ({m['cpu_count']} cores{gpu}), torch {m['torch']}{at}"


def kauh_section(d: dict) -> list[str]:
    s = d["settings"]
    out = [f"## KAUH cross-validation ({d['benchmark']})", "",
           f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Wall time: {d['wall_seconds'] / 60:.1f} min.", "",
           f"Settings: {s['folds']}-fold stratified group CV, {s['epochs']} epochs, image size {s['image_size']}, "
           f"attention {s['attention']}, batch {s['batch_size']}, lr {s['lr']}, weights {s['weights']}.", "",
           "| model | accuracy % (mean ± sd over folds) | 95% CI (pooled OOF) | macro-F1 (mean ± sd) | ROC-AUC | ECE |",
           "|---|---|---|---|---|---|"]
    for m, r in d["results"].items():
        ci = r["ci95"]["accuracy"]
        auc = r.get("auc_macro_mean")
        out.append(f"| {m} | {r['accuracy_mean'] * 100:.1f} ± {r['accuracy_std'] * 100:.1f} | "
                   f"[{ci[0] * 100:.1f}, {ci[1] * 100:.1f}] | {r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f} | "
                   f"{auc:.3f} | {r['ece_pooled']:.3f} |" if auc is not None else "")
    sc = d.get("shortcut_baseline") or {}
    if sc.get("accuracy") is not None:
        out += ["", f"Shortcut baseline (width, height, aspect only): {sc['accuracy'] * 100:.1f}% against a "
                    f"majority rate of {sc['majority_rate'] * 100:.1f}%."]
    lk = d.get("leaky")
    if lk:
        out += ["", f"Leaky protocol (oversample, then split 80/10/10): {lk['test_leak_fraction'] * 100:.0f}% of the "
                    "test rows are copies of training images; its accuracies are "
                    + ", ".join(f"{m} {v * 100:.1f}%" for m, v in lk["accuracy"].items()) + "."]
    return out + [""]


def classifier_recipe_section(d: dict) -> list[str]:
    """A classifier recipe's KAUH CV (``benchmarks/kauh_classifier.py``): alone, through the decision, the
    targets beside each figure."""
    from kauh_classifier import decision_pooled

    c, dec, t, r = d["classifier"], d["decision"], d["targets"], d["recipe"]
    cv, tr = r["cv"], r["train"]
    pooled = dec.get("pooled") or decision_pooled(dec["folds"])
    ci, dci = c["ci95"], pooled["ci95"]

    def mark(ok: bool) -> str:
        return "met" if ok else "not met"

    recall = dec["recall"]
    framing = [v["rate"] for v in (dec.get("framing_stress") or {}).values()]
    out = [f"## The classifier recipe `{Path(r['file']).stem}`: KAUH CV, alone and through the decision", "",
           f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Training time: {d['train_seconds'] / 3600:.1f} h "
           f"on {d['machine'].get('cpu_count')} cores (every epoch of every fold).", "",
           f"Recipe: {', '.join(r['models'])} from scratch (weights {r['weights']}), {cv['image_size']} px "
           f"({cv['resize']} resize), attention {cv['attention']}, {tr['epochs']} epochs {tr['schedule']} "
           f"(warm-up {tr['warmup_epochs']}), EMA {tr['ema_decay']}, label smoothing {tr['label_smoothing']}, "
           f"mixup {tr['mixup_alpha']}, batch {tr['batch_size']}, lr {tr['lr']}; {cv['folds']} folds, the folds and "
           f"seeds of `benchmarks/kauh_cv.py`; the decision with the {dec['landmarks']} landmark stages.", "",
           "| figure | value | 95% CI | target |", "|---|---|---|---|",
           f"| classifier accuracy (mean ± sd over folds) | {c['accuracy_mean'] * 100:.1f} ± {c['accuracy_std'] * 100:.1f}% "
           f"| [{ci['accuracy'][0] * 100:.1f}, {ci['accuracy'][1] * 100:.1f}] (pooled) | ≥ "
           f"{t['classifier_accuracy_mean'] * 100:.0f}%: {mark(c['accuracy_mean'] >= t['classifier_accuracy_mean'])} |",
           f"| through the decision (mean over folds) | {dec['accuracy_mean'] * 100:.1f}% | "
           f"[{dci[0] * 100:.1f}, {dci[1] * 100:.1f}] (pooled {pooled['correct']}/{pooled['n']}, Wilson) | ≥ "
           f"{t['decision_accuracy_mean'] * 100:.0f}%: {mark(dec['accuracy_mean'] >= t['decision_accuracy_mean'])} |",
           "| recall through the decision | " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in recall.items()) +
           f" | | each ≥ {t['decision_recall_each_class'] * 100:.0f}%: "
           f"{mark(min(recall.values()) >= t['decision_recall_each_class'])} |",
           f"| macro-F1 (pooled) | {c['pooled']['macro_f1']:.3f} | [{ci['macro_f1'][0]:.3f}, {ci['macro_f1'][1]:.3f}] | "
           f"≥ {t['macro_f1']}: {mark(c['pooled']['macro_f1'] >= t['macro_f1'])} |",
           f"| ECE after temperature scaling (pooled) | {c['pooled']['ece']:.3f} | [{ci['ece'][0]:.3f}, {ci['ece'][1]:.3f}] "
           f"| ≤ {t['ece_after_temperature']}: {mark(c['pooled']['ece'] <= t['ece_after_temperature'])} |",
           f"| labels the decision changed | {dec['changed']} ({dec['changed_to_right']} to right, "
           f"{dec['changed_to_wrong']} to wrong) | | |"]
    if framing:
        out.append(f"| framing stress test, largest change each way | {max(framing) * 100:.1f}% | | ≤ "
                   f"{t['framing_changed_each_direction_max'] * 100:.0f}%: "
                   f"{mark(max(framing) <= t['framing_changed_each_direction_max'])} |")
    if d.get("leaky"):
        lk = d["leaky"]
        out += ["", f"The leaky protocol beside it (oversample, then split: {lk['test_leak_fraction'] * 100:.0f}% of "
                    "the test rows are copies of training films): "
                + ", ".join(f"{m} {v * 100:.1f}%" for m, v in lk["accuracy"].items()) + "."]
    return out + [""]


def augment_section(d: dict, title: str = "Which augmentation transfers: KAUH CV arms side by side") -> list[str]:
    s, t = d["settings"], d["targets"]
    out = [f"## {title}", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Training time per arm: "
           + ", ".join(f"{arm} {r.get('train_seconds', r['wall_seconds']) / 60:.0f} min" for arm, r in d["arms"].items())
           + f". {s['model']}, "
           f"{s['image_size']} px, {s['folds']}-fold case-grouped CV, {s['epochs']} epochs, seed {s['seed']}, "
           f"{s['weights']}; the arms share folds and seeds and differ only in augmentation (or input contract: resize).", "",
           "| arm | augmentation | KAUH accuracy % (mean ± sd) | 95% CI (pooled) | macro-F1 | framing: AP Scoliosis cut to "
           "strips changed | framing: Normal strips widened changed | AASCE >= 25° called Scoliosis (fold 0, dev.) | "
           "AASCE Spearman P(Scoliosis) (dev.) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for arm, r in d["arms"].items():
        ci = r["ci95"]["accuracy"]
        fs = r.get("framing_stress") or {}
        sa, nb = fs.get("scoliosis_ap_to_strip") or {}, fs.get("normal_strip_to_full") or {}
        ax = r.get("aasce_fold0_development") or {}
        aug = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                        for k, v in r["augmentation"].items()) or "default"
        out.append(f"| {arm} | {aug} | {r['accuracy_mean'] * 100:.1f} ± {r['accuracy_std'] * 100:.1f} | "
                   f"[{ci[0] * 100:.1f}, {ci[1] * 100:.1f}] | {r['macro_f1_mean']:.3f} | "
                   f"{sa.get('changed', 'n/a')} of {sa.get('n', 'n/a')} ({_pc(sa.get('rate'))}) | "
                   f"{nb.get('changed', 'n/a')} of {nb.get('n', 'n/a')} ({_pc(nb.get('rate'))}) | "
                   f"{_pc(ax.get('called_scoliosis_ge25'))} | {_rho(ax.get('spearman_p_scoliosis'))} |")
        dec = r.get("decision")
        if dec:  # the same folds through the decision that answers to the measured curve (cv --landmarks)
            fd = dec.get("framing") or {}
            da, db = fd.get("scoliosis_ap_to_strip") or {}, fd.get("normal_strip_to_full") or {}
            out.append(f"| {arm} + measured curve | decision rule, line per fold "
                       f"{min(dec['curve_deg']):g}-{max(dec['curve_deg']):g}° | "
                       f"{dec['accuracy_with_rule_mean'] * 100:.1f} (classifier {dec['accuracy_mean'] * 100:.1f}) | | | "
                       f"{da.get('changed', 'n/a')} of {da.get('n', 'n/a')} ({_pc(da.get('rate'))}) | "
                       f"{db.get('changed', 'n/a')} of {db.get('n', 'n/a')} ({_pc(db.get('rate'))}) | | |")
    out += ["", f"Targets: at most {t['framing_changed_each_direction_max']:.0%} of predictions change in each framing "
                f"direction; KAUH accuracy not lower than the baseline arm by more than "
                f"{t['accuracy_drop_max_points']:g} point.", ""]
    if any(r.get("decision") for r in d["arms"].values()):
        lm = s.get("landmarks")
        out += [f"A '+ measured curve' row is the same arm's out-of-fold calls and framing films run through the "
                f"decision that answers to the measured curve (`cv --landmarks {lm}`): each film, and each cut or "
                "widened film, measured by the landmark model; each fold's curve line and view check fitted on its "
                "training side only. Its accuracy is the mean over folds.", ""]
    return out


def window_invariance_section(d: dict) -> list[str]:
    out = ["## Same pixels when only the framing changes? The input contracts side by side", "",
           f"Command: `{d['command']}`", "", f"Machine: {_machine(d)}. Date: {d['date']}. Input {d['size']} px; "
           "the framing stress test's films and transforms; no model runs.", "",
           "| resize | Normal strips widened: identical | within 1 grey level | AP Scoliosis cut to strips: identical | "
           "within 1 grey level |", "|---|---|---|---|---|"]
    for m, r in d["modes"].items():
        n, sc = r["normal_strip_to_full"], r["scoliosis_ap_to_strip"]
        out.append(f"| {m} | {n['identical']} of {n['n']} | {n['under_1_grey_level']} of {n['n']} | "
                   f"{sc['identical']} of {sc['n']} | {sc['under_1_grey_level']} of {sc['n']} |")
    return out + ["", "Within 1 grey level: the mean absolute difference of the two uint8 inputs is under 1.", ""]


def throughput_section(d: dict) -> list[str]:
    out = ["## Training throughput", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}; device {d['device']}. Date: {d['date']}.", "",
           "| model | size | batch | loop img/s | ceiling img/s | loop / ceiling | peak GPU GiB |",
           "|---|---|---|---|---|---|---|"]
    for m, r in d["results"].items():
        peak = r.get("peak_gpu_gib_loop")
        out.append(f"| {m} | {r['image_size']} | {r['batch_size']} | {r['loop_images_per_s']:.1f} | "
                   f"{r['ceiling_images_per_s']:.1f} | {r['ratio']:.2f} | {'' if peak is None else f'{peak:.1f}'} |")
    return out + [""]


def inference_section(d: dict, brief: bool = False) -> list[str]:
    """The latency tables; ``brief`` (an earlier run) leaves out INT8-on-KAUH and the service."""
    flags = ", ".join(k for k, v in d["cpu_flags"].items() if v) or "none of the listed"
    out = [f"## CPU inference ({d['date'][:16].replace('T', ' ')} UTC)", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}; CPU flags: {flags}. {d['threads']} threads, batch 1. Date: {d['date']}.", "",
           *(["The backends take turns image by image on the same images, so background load hits them alike.", ""]
             if any("ort_speedup_best" in r for r in d["results"].values()) else
             ["Each backend timed on all images in a row, one after the other (an earlier version of the script).", ""]),
           "| model | size | eager p50 / p95 ms | onnxruntime FP32 p50 / p95 ms | ORT speed-up (p50; paired median; best) | "
           "INT8 p50 / p95 ms | INT8 / FP32 | INT8 / eager | INT8-FP32 label agreement |",
           "|---|---|---|---|---|---|---|---|---|"]
    for m, r in d["results"].items():
        e, f, q = r["eager"], r["onnxruntime_fp32"], r["onnxruntime_int8"]
        paired = (f"; {r['ort_speedup_paired_median']:.2f}x; best {r['ort_speedup_best']:.2f}x"
                  if "ort_speedup_best" in r else "")
        over_eager = f"{e['p50_ms'] / q['p50_ms']:.2f}x"
        out.append(f"| {m} | {r['image_size']} | {e['p50_ms']:.1f} / {e['p95_ms']:.1f} | {f['p50_ms']:.1f} / "
                   f"{f['p95_ms']:.1f} | {r['ort_speedup_p50']:.2f}x{paired} | {q['p50_ms']:.1f} / {q['p95_ms']:.1f} | "
                   f"{r['int8_speedup_over_fp32_p50']:.2f}x | {over_eager} | {r['int8_fp32_label_agreement'] * 100:.0f}% |")
    if all("rounds" in r for r in d["results"].values()):
        out += ["", f"The table shows the median of {len(next(iter(d['results'].values()))['rounds'])} rounds (by "
                    "ORT speed-up); the backbones took turns round by round. Every round, as eager / ORT FP32 p50 "
                    "speed-up at the SGEMM rate (GFLOP/s) measured with it:", ""]
        for m, r in d["results"].items():
            out.append(f"- {m}: " + ", ".join(f"{x['ort_speedup_p50']:.2f}x ({x['sgemm_torch_gflops']:.0f})"
                                                for x in r["rounds"]))
    if all("roofline" in r for r in d["results"].values()):
        out += ["", f"Against this CPU's FP32 peak: a {d.get('sgemm_n', 2048)}^3 SGEMM in PyTorch and in onnxruntime "
                    "(same threads), "
                    + ("timed in turn with the models:" if "sgemm_n" in d else "timed once before the models:"), "",
                "| model | forward GFLOP | SGEMM p50 GFLOP/s (torch / ORT) | eager GFLOP/s at p50 (of peak) | "
                "onnxruntime FP32 GFLOP/s at p50 (of peak) | ORT rate a 2x speed-up needs (of peak) | "
                "at best times: eager / ORT (of best SGEMM) |",
                "|---|---|---|---|---|---|---|"]
        for m, r in d["results"].items():
            rf, pk = r["roofline"], r.get("sgemm_peak_same_run") or d["sgemm_peak"]
            best = (f"{rf['best_eager_fraction_of_best_peak']:.0%} / {rf['best_onnxruntime_fraction_of_best_peak']:.0%}"
                    if "best_eager_fraction_of_best_peak" in rf else "(not recorded)")
            out.append(f"| {m} | {rf['forward_gflop']:.1f} | {pk['torch_gflops']:.0f} / {pk['onnxruntime_gflops']:.0f} | "
                       f"{rf['eager_gflops']:.0f} ({rf['eager_fraction_of_peak']:.0%}) | "
                       f"{rf['onnxruntime_fp32_gflops']:.0f} ({rf['onnxruntime_fraction_of_peak']:.0%}) | "
                       f"{2 * rf['eager_gflops']:.0f} ({2 * rf['eager_gflops'] / pk['onnxruntime_gflops']:.0%}) | "
                       f"{best} |")
    if brief:
        return out + [""]
    k = d.get("kauh_int8")
    if k:
        out += ["", "INT8 on KAUH (the fold-0 model of each backbone from the CV run, on its own held-out fold):", "",
                "| model | size | test images | FP32 accuracy | INT8 accuracy | drop (points) | INT8 / FP32 speed-up |",
                "|---|---|---|---|---|---|---|"]
        for m, r in k.items():
            out.append(f"| {m} | {r['image_size']} | {r['n_test']} | {r['fp32_accuracy'] * 100:.1f}% | "
                       f"{r['int8_accuracy'] * 100:.1f}% | {r['accuracy_drop_points']:.1f} | {r['int8_speedup_p50']:.2f}x |")
    sv = d.get("service")
    if sv and "max_batch_8" in sv:
        out += ["", f"Service ({sv['model']}, `spinexr serve` in its own process on loopback, the load generator "
                    f"on the same {d['machine']['cpu_count']} cores). 'Bare batch-1' is the model alone on one "
                    "prepared image, timed just before each service run; 'bare, same load' is the model behind the "
                    "same micro-batcher driven in-process by the same number of callers.", "",
                "| --max-batch | concurrency | requests | errors | p50 ms | p95 ms | req/s | bare batch-1 p95 ms | "
                "p95 / bare batch-1 p95 | bare same-load p95 ms | p95 / bare same-load p95 |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for mb in (1, 8):
            srv = sv[f"max_batch_{mb}"]
            for c in (1, 8):
                r = srv[f"concurrency_{c}"]
                bare = srv["bare_model_same_load"] if c == 8 else None
                out.append(f"| {mb} | {c} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                           f"{r['requests_per_s']:.1f} | {srv['bare_model_batch1']['p95_ms']:.1f} | "
                           f"{r['p95_over_bare_batch1_p95']:.2f} | "
                           + (f"{bare['p95_ms']:.1f} | {r['p95_over_bare_same_load_p95']:.2f} |" if bare else "| |"))
    return out + [""]


def faithfulness_section(d: dict) -> list[str]:
    out = ["## Explanation faithfulness", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Models: fold 0 of `{d['run']}`, on their own held-out "
           "images. ROAD: higher is more faithful, about 0 is chance; deletion AUC: lower is more faithful. Each "
           "map is paired with a smooth random map (noise on the CAM grid) for the same image and class.", "",
           "| model | size | images | method | ROAD | random ROAD | beats random | deletion AUC | random deletion AUC | "
           "blank maps |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in d["results"].items():
        for meth, f in r["methods"].items():
            out.append(f"| {m} | {r['image_size']} | {r['n_images']} | {meth} | {f['road']:.3f} | {f['random_road']:.3f} | "
                       f"{f['road_wins']:.0%} | {f['deletion_auc']:.3f} | {f['random_deletion_auc']:.3f} | "
                       f"{f.get('constant_maps', 0)} |")
    return out + [""]


def fuzz_section(d: dict) -> list[str]:
    out = ["## Read boundary: seeded mutation fuzz", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. {d['cases']} mutated files (byte flips, truncations, "
           f"insertions, copies) over {len(d['seeds'])} seeds (KAUH films and synthetic films as JPEG, PNG and TIFF; "
           "pydicom's DICOM test files). Wall time: " + f"{d['wall_seconds'] / 60:.1f} min.", "",
           "| seed format | " + " | ".join(sorted({k for v in d["by_format"].values() for k in v})) + " |",
           "|---|" + "---|" * len({k for v in d["by_format"].values() for k in v})]
    kinds = sorted({k for v in d["by_format"].values() for k in v})
    for fmt, v in sorted(d["by_format"].items()):
        out.append(f"| {fmt} | " + " | ".join(str(v.get(k, 0)) for k in kinds) + " |")
    out += ["", f"Exceptions that escaped `read_image`: **{d['unhandled']}**.", ""]
    return out


def ood_corpus_section(d: dict) -> list[str]:
    c, k = d["corpus"], d["kauh_held_out"]
    return ["## OOD flags on pydicom's corpus and on held-out KAUH films", "", f"Command: `{d['command']}`", "",
            f"Machine: {_machine(d)}. Date: {d['date']}. Model: `{d['model']}` ({d['architecture']} at "
            f"{d['input_size']} px; threshold {d['threshold']:.1f}, the {d['threshold_percentile']:.0f}th percentile of "
            "its training scores).", "",
            "| films | n | flagged by the feature score | flagged with the DICOM file checks |", "|---|---|---|---|",
            f"| pydicom corpus, readable (CT, MR, NM, US, SEG, colour captures) | {c['readable_files']} | "
            f"{c['flag_rate_features_only']:.0%} | {c['flag_rate_with_file_checks']:.0%} |",
            f"| KAUH held-out test films | {k['n']} | {k['flag_rate_features_only']:.1%} | {k['flag_rate']:.1%} |", ""]


def aasce_section(d: dict) -> list[str]:
    p = d["pooled"]
    st = d["settings"]
    size = f"{st['input_height']}x{st['input_width']}"
    variant = f", {st['strip_p']:.0%} of training films reframed as strips" if st.get("strip_p") else ""
    if st.get("angle_weight"):
        variant += f", vertebra midline term in the loss, weight {st['angle_weight']:g}"
    if st.get("seed"):
        variant += f", seed {st['seed']}: its own case split"
    out = [f"## Cobb angles on AASCE / SpineWeb 16 ({d['protocol']}, {size}{variant})", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Wall time: {d['wall_seconds'] / 60:.1f} min "
           f"(training capped at {d.get('minutes_per_fold_cap') or 'no'} minutes a fold). Model: "
           f"{st['encoder']} encoder + FPN heatmaps at {size}, from scratch; the deployed predictor averages the "
           f"film's mirror image and zooms {st.get('tta_scales', '1')}.", "",
           "| angles read by | held-out films | SMAPE % | MAE largest ° | MAE PT ° | MAE MT ° | MAE TL/L ° | "
           "landmark error (% height) | refused as implausible |", "|---|---|---|---|---|---|---|---|---|"]
    w = st.get("centreline_weight", 0.0)
    rows = [(f"corners + centreline (weight {w:g})" if w else "corners alone (the definition)", p)]
    if d.get("pooled_corners_only"):
        rows.append(("the same corners alone (the definition)", d["pooled_corners_only"]))
    for name, q in rows:
        out.append(f"| {name} | {q['n']} | {q['smape']:.2f} [{q['smape_ci95'][0]:.2f}, {q['smape_ci95'][1]:.2f}] | "
                   f"{q['mae_largest']:.2f} [{q['mae_largest_ci95'][0]:.2f}, {q['mae_largest_ci95'][1]:.2f}] | "
                   f"{q['mae_pt']:.2f} | {q['mae_mt']:.2f} | {q['mae_tl']:.2f} | "
                   f"{q['landmark_error_pct_height']['mean']:.2f} | {d['implausible_predictions']} |")
    out.append("")
    for f in d["folds"]:
        line = (f"Fold {f['fold']}: {f['epochs_run']} epochs in {f['train_seconds'] / 60:.1f} min (stopped by "
                f"{f['stopped_by']}; best epoch {f['best_epoch']}), {f['n_train']} training films.")
        if f.get("trained_by"):
            tb = f["trained_by"]
            line += (f" Trained by `{tb['command']}` ({tb['date']}, {tb['machine']}); this run measured that model "
                     f"(`{f['reused_model']}`) again with this run's zooms and angle reading, nothing retrained (the "
                     f"training run's SMAPE: {tb['smape_before']:.2f}% with zooms {tb['tta_scales_before']}, corners "
                     "alone), so the wall time above is the measurement's.")
        out.append(line)
    k = d.get("kauh_cross_check")
    if k:
        out += ["", f"KAUH cross-check (no landmarks there): the predicted largest angle separates "
                f"{k['n_scoliosis']} Scoliosis films from {k['n_normal']} Normal films with ROC-AUC "
                f"**{k['auc_largest_angle']:.3f}** (median {k['median_angle_scoliosis']:.1f}° against "
                f"{k['median_angle_normal']:.1f}°; {k['implausible_predictions']} spines refused)."]
    t = d["targets"]
    out += ["", f"Targets: CPU reduced SMAPE <= {t['cpu_reduced']['smape']:.0f}% and largest-angle MAE <= "
            f"{t['cpu_reduced']['mae_largest']:.0f}°; GPU full recipe SMAPE <= {t['gpu_full']['smape']:.0f}% and MAE <= "
            f"{t['gpu_full']['mae_largest']:.0f}°.", ""]
    return out


def angle_reading_section(d: dict) -> list[str]:
    excl = (f"; held-out films of the {d['excluded_cases']} cases `{d['excluded_run']}` held out are left out, so "
            "these films played no part in choosing the weight" if d.get("excluded_run") else "")
    out = [f"## Reading Cobb angles off predicted corners: the centreline weight ({d['input']}, seed {d['seed']})", "",
           f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Landmark run `{d['landmark_run']}` (its fold model and "
           f"test-time zooms {d.get('tta_scales')}){excl}. Curve line: the smallest angle at most 2% of the "
           f"{d['n_kauh_normal']} KAUH Normal films reach, as the decision fits it; KAUH AUC: largest angle, "
           f"{d['n_kauh_scoliosis']} Scoliosis against those Normal films.", "",
           "| centreline weight | validation films: MAE largest ° | held-out films: SMAPE % | MAE largest ° | "
           "mean error, largest >= 25° | KAUH curve line ° | held-out films >= 25° at or over the line | KAUH AUC |",
           "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        t, v = r["test"], r["validation"]
        mark = " (the model file's)" if r["centreline_weight"] == d.get("model_centreline_weight") else ""
        out.append(f"| {r['centreline_weight']:g}{mark} | {v['mae_largest']:.2f} ({v['n']} films) | {t['smape']:.2f} | "
                   f"{t['mae_largest']:.2f} | {t['mean_error_largest_ge25']:+.1f}° | {r['kauh_curve_line']:.1f} | "
                   f"{t['ge25_at_or_over_line']:.1%} of {t['n_ge25']} | {r['kauh_auc']:.3f} |")
    return out + [""]


def landmark_framing_section(d: dict) -> list[str]:
    out = ["## Does the landmark model measure the same spine when only the framing changes?", "",
           f"Command: `{d['command']}`", "", f"Machine: {_machine(d)}. Date: {d['date']}.", "",
           "AASCE films the models did not train on, as they are, cut to a strip a quarter as wide as tall around the "
           "spine (every true corner inside), and that strip widened again by mirroring its edges; KAUH Normal strips "
           "widened the same way and KAUH full-AP Scoliosis films cut to strips (the framing stress test's transforms).",
           "", "| landmark model | AASCE SMAPE % as is / strip / strip widened | AASCE MAE largest ° as is / strip / "
           "widened | KAUH Normal strips: median angle as is / widened, median change | KAUH Normal at or over 20°: "
           "as is / widened | KAUH Scoliosis AP: median angle as is / strip, median change |",
           "|---|---|---|---|---|---|"]
    for m, r in d["models"].items():
        a, n, sc = r["aasce_held_out"], r["kauh_normal_strips"], r["kauh_scoliosis_ap"]
        f = ("as is", "strip", "strip widened")
        out.append(f"| `{m}` | {' / '.join(format(a[k]['smape'], '.1f') for k in f)} | "
                   f"{' / '.join(format(a[k]['mae_largest'], '.1f') for k in f)} | "
                   f"{n['median_angle']['as is']:.1f} / {n['median_angle']['widened']:.1f}, {n['median_abs_change']:.1f} | "
                   f"{n['at_or_over']['20']['as is']:.0%} / {n['at_or_over']['20']['widened']:.0%} | "
                   f"{sc['median_angle']['as is']:.1f} / {sc['median_angle']['strip']:.1f}, {sc['median_abs_change']:.1f} |")
    return out + [""]


def angle_correction_section(d: dict) -> list[str]:
    two = d.get("refiner")
    stages = f", the two stages (refiner `{two}`)" if two else ""
    kauh = "kauh_curve_deg" in next(iter(d["rows"].values()))
    out = [f"## Reading corrections on a finished landmark run ({d['landmark_run']}{stages})", "",
           f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Held-out films of the run, angles read with centreline weight "
           f"{d['centreline_weight']:g}; the recalibration"
           + (" and the gains" if any("gain" in r for r in d["rows"].values()) else "")
           + f" fitted on its {d['n_validation']} validation films, the shape prior on its {d['n_training_shapes']} "
           "training films' labels."
           + (f" The curve line: fitted on the {d['n_kauh_normal']} KAUH Normal films read the same way." if kauh else ""),
           "", "| reading | SMAPE % | largest-angle MAE ° | within 5° | mean error on curves >= 40° |"
           + (" KAUH curve line |" if kauh else ""), "|---|---|---|---|---|" + ("---|" if kauh else "")]
    for name, r in d["rows"].items():
        bias = "n/a" if r["mean_error_ge40"] is None else f"{r['mean_error_ge40']:+.1f}° ({r['n_ge40']} films)"
        shown = f"{name} (g = {r['gain']:.3f})" if "gain" in r else name
        out.append(f"| {shown} | {r['smape']:.2f} | {r['mae_largest']:.2f} | {r['within_5deg']:.0%} | {bias} |"
                   + (f" {r['kauh_curve_deg']:.1f}° |" if kauh else ""))
    return out + [""]


def _tol_row(name: str, r: dict) -> str:
    bias = "n/a" if r["mean_error_ge40"] is None else f"{r['mean_error_ge40']:+.1f}° ({r['n_ge40']} films)"
    return f"| {name} | {r['smape']:.2f} | {r['mae_largest']:.2f} | {r['within_5deg']:.0%} | {bias} |"


TOL_HEAD = ["| reading | SMAPE % | largest-angle MAE ° | within 5° | mean error on curves >= 40° |", "|---|---|---|---|---|"]


def refine_section(d: dict) -> list[str]:
    t = d["training"]
    out = [f"## Vertebra refiner (second landmark stage) on {d['landmark_run']}", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. The refiner trained on the landmark run's own training cases "
           f"({d['n_fit']} films, {d['n_val']} more choosing the epoch) for {t['train_seconds'] / 60:.0f} minutes "
           f"(stopped by {t['stopped_by']}, best epoch {t['best_epoch']}); its {d['n_test']} held-out films measured "
           f"from the first stage's corners (crops of {d['refiner_settings']['crop']} px from the film at "
           f"{d['refiner_settings']['film_height']} px; training crops turned by {d['refiner_settings']['jitter_deg']:g}° "
           f"and shifted by {d['refiner_settings']['jitter_centre']:g} of the half side, standard deviations). "
           "Targets: SMAPE <= 11%, MAE <= 4.5°, >= 75% within 5°, "
           "bias within ±2° on curves of 40° or more.", "", *TOL_HEAD]
    for stage, readings in d["results"].items():
        for reading, r in readings.items():
            out.append(_tol_row(f"{stage}, {reading}", r))
    return out + [""]


def int8_section(d: dict) -> list[str]:
    r = d["results"]
    ch = r["largest_abs_change_deg"]
    what = "the whole graph" if r.get("decoder", "int8") == "int8" else "the encoder (decoder kept in FP32)"
    if r.get("stage") == "refiner":
        what = f"the vertebra refiner's crop reading, {what}, the first stage unchanged"
    elif r.get("second_stage"):
        what += ", measured through both stages (the refiner unchanged)"
    return [f"## The INT8 landmark graph: {what}", "", f"Command: `{d['command']}`", "",
            f"Machine: {_machine(d)}. Date: {d['date']}. {r['n_films']} held-out AASCE films of {d['landmark_run']}, "
            f"calibrated on {r['calibration_films']} of its training films. Rule: {r['rule']}.", "",
            "| graph | SMAPE % | ms per film (landmarks and angles, batch 1) |", "|---|---|---|",
            f"| FP32 | {r['smape_fp32']:.2f} | {r['ms_per_film_fp32']:.0f} |",
            f"| INT8 | {r['smape_int8']:.2f} | {r['ms_per_film_int8']:.0f} |", "",
            f"The largest angle moved by less than 0.5° on {r['share_largest_within_0_5deg']:.0%} of films (median "
            f"{ch['median']:.2f}°, 95th percentile {ch['p95']:.2f}°, at most {ch['max']:.2f}°).", ""]


def refine_final_section(d: dict) -> list[str]:
    t = d["training"]
    return ["## The vertebra refiner trained on every film", "",
            f"Command: `{d['command']}`", "", f"Machine: {d['machine'] if isinstance(d['machine'], str) else _machine(d)}. "
            f"Date: {d['date']}. {d['n_train']} films fit, "
            f"{d['n_val']} (a tenth of the cases) chose the epoch; {d['labels_implausible_left_out']} films with "
            f"implausible labels left out. {t['train_seconds'] / 60:.0f} minutes, {d['epochs_run']} epochs (best "
            f"{t['best_epoch']}, stopped by {t['stopped_by']}); validation corner error "
            f"{t['best_val_error']:.4f} of the film height (from jittered true frames). Nothing is held out: its "
            "accuracy is the two case splits' above.", ""]


def refine_variants_section(d: dict) -> list[str]:
    out = [f"## The refiner as deployed: test-time augmentation of each stage ({d['landmark_run']})", "",
           f"Command: `{d['command']}`", "", f"Machine: {_machine(d)}. Date: {d['date']}. {d['n_test']} held-out films "
           "through `SpineMeasurer` with the refiner, angles read by the corners alone. The milliseconds are the "
           "measurement alone (decoding excluded) and were taken while another job shared the cores: compare them "
           "with each other only.", "", "| variant | SMAPE % | largest-angle MAE ° | within 5° | mean error on curves "
           ">= 40° | ms per film |", "|---|---|---|---|---|---|"]
    for name, r in d["results"].items():
        out.append(_tol_row(name, r)[:-1] + f" {r['ms_per_film']:.0f} |")
    return out + [""]


def refine_passes_section(d: dict) -> list[str]:
    out = [f"## How many refiner passes: chosen on validation films ({d['landmark_run']})", "",
           f"Command: `{d['command']}`", "", f"Machine: {_machine(d)}. Date: {d['date']}. Rule, fixed before looking: "
           f"the {d['rule']}. {d['n_validation']} validation films (a tenth of the training cases, which chose the "
           f"refiner's epoch) choose; the {d['n_held_out']} held-out films are shown for the record. Chosen: "
           f"**{d['chosen_passes']} pass{'es' if d['chosen_passes'] > 1 else ''}**.", "", *TOL_HEAD]
    for part, rows in d["results"].items():
        for passes, r in rows.items():
            out.append(_tol_row(f"{part.replace('_', ' ')}, {passes} pass{'es' if passes != '1' else ''}", r))
    return out + [""]


def refine_budget_section(d: dict) -> list[str]:
    """Nine readings of the two stages, chosen on validation films within today's arithmetic."""
    def show(k: str) -> str:  # "views | passes": the bar would split a table cell
        return k.replace(" | ", "; ")

    out = ["## Two refiner passes within the same arithmetic: the readings of both stages, chosen on validation films",
           "", f"Command: `{d['command']}`", "", f"Machine: {_machine(d)}. Date: {d['date']}. Rule, fixed before "
           f"looking: the {d['rule']} ({show(d['today'])}, the reading it replaces). A reading is the first stage's "
           "test-time views (zooms 1, 0.85 and 1.1 with the mirror image: 6; the mirror image: 2; the film alone: 1), "
           "then the refiner's passes and where it reads the mirror images. GFLOPs are counted (forward FLOPs of the "
           "views and crops), not timed. Chosen: **" + show(d["chosen"]) + "**.", "",
           "| reading | GFLOPs a film | validation SMAPE % (mean of the splits) | within budget |", "|---|---|---|---|"]
    for k, g in d["gflops_per_film"].items():
        name = f"**{show(k)}**" if k == d["chosen"] else show(k)
        out.append(f"| {name} | {g:.1f} | {d['mean_validation_smape'][k]:.2f} | {'yes' if k in d['within_budget'] else 'no'} |")
    out.append("")
    for sp in d["splits"]:
        out += [f"{sp['landmark_run']} with `{sp['refiner']}`: {sp['n_validation']} validation films (which chose the "
                f"refiner's epoch and never trained either stage), {sp['n_held_out']} held-out films.", "",
                "| films | reading | SMAPE % | largest-angle MAE ° | within 5° | mean error on curves >= 40° |",
                "|---|---|---|---|---|---|"]
        for part in ("validation", "held_out"):
            for k, r in sp[part].items():
                row = _tol_row(f"**{show(k)}**" if k == d["chosen"] else show(k), r)
                out.append(f"| {part.replace('_', ' ')} " + row)
        out.append("")
    return out


def refine_guard_section(d: dict) -> list[str]:
    """A limit on how far a second refiner pass may turn a vertebra: AASCE validation and held-out films and
    the curve line on KAUH Normal films, per split, reading and limit."""
    def show(k: str) -> str:
        return k.replace(" | ", "; ")

    chosen = "; ".join(f"{show(k)}: **{v}°**" if v != "none" else f"{show(k)}: no limit" for k, v in d["chosen"].items())
    out = ["## A limit on how far a second refiner pass may turn a vertebra", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Each film is measured once with both passes kept; a limit keeps "
           "a vertebra at the first pass's corners where the second turned it further (the refiner with that limit "
           "gives the same corners: checked on films). Rule, fixed before looking: " + d["rule"] + f". Chosen: {chosen}. "
           "Columns: vertebrae kept back on the validation / held-out / KAUH films; validation SMAPE; the held-out "
           "films' SMAPE, largest-angle MAE, share within 5° and mean error on curves of 40° or more; the curve line "
           "fitted on the 71 KAUH Normal films (another hospital), the refusals and the three largest angles there. "
           "The first pass with its mirror images is the one-pass reading.", "",
           "| split | reading | limit ° | kept back | val. SMAPE % | held-out SMAPE % | MAE ° | within 5° | "
           "bias >= 40° | KAUH line ° | refused | KAUH largest ° |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(label: str, reading: str, limit: str, held: str, v: dict, h: dict, k: dict) -> str:
        bias = "n/a" if h["mean_error_ge40"] is None else f"{h['mean_error_ge40']:+.1f}"
        return (f"| {label} | {reading} | {limit} | {held} | {v['smape']:.2f} | {h['smape']:.2f} | "
                f"{h['mae_largest']:.2f} | {h['within_5deg']:.0%} | {bias} | {k['curve_deg']:.1f} | {k['refused']} | "
                f"{', '.join(f'{x:.1f}' for x in k['largest_five'][:3])} |")

    for sp in d["splits"]:
        label = Path(sp["landmark_run"]).name.rsplit("_", 1)[-1]
        for reading, res in sp["readings"].items():
            if "one_pass" in res:
                one = res["one_pass"]
                out.append(row(label, "zooms+mirror; 1 pass, mirrors", "", "", one["validation"], one["held_out"],
                               res["one_pass_kauh"]))
            for lim, r in res["limits"].items():
                kb = r["vertebrae_held"]
                name = f"**{lim}**" if lim == d["chosen"][reading] else lim
                out.append(row(label, show(reading), name, f"{kb['validation']} / {kb['held_out']} / {kb['kauh_normal']}",
                               r["validation"], r["held_out"], r["kauh_normal"]))
    return out + [""]


def decision_diff_section(d: dict) -> list[str]:
    """Which KAUH films the decision calls differently under each landmark model (or refiner)."""
    names = list(d["measurers"])
    out = ["## Which KAUH films each landmark model's measurement decides differently", "", f"Command: `{d['command']}`",
           "", f"Machine: {_machine(d)}. Date: {d['date']}. The CV run `{d['cv_run']}`'s out-of-fold classifier calls "
           f"({d['n_films']} films, repeat 0; the classifier alone {d['accuracy_classifier']:.1%}); each landmark model "
           "(with its refiner where named) measures every film, and per fold the rule is fitted on the other folds, "
           "as the KAUH CV does.", "",
           "| measurer | files | curve line per fold ° | accuracy with the rule (mean of folds) | changed to right | "
           "changed to wrong |", "|---|---|---|---|---|---|"]
    for n, r in d["measurers"].items():
        files = f"`{r['landmarks']}`" + (f" + `{r['refiner']}`" if r["refiner"] else "")
        out.append(f"| {n} | {files} | {', '.join(f'{x:g}' for x in r['curve_deg'].values())} | "
                   f"{r['accuracy_with_rule_fold_mean']:.1%} | {r['changed_to_right']} | {r['changed_to_wrong']} |")
    if len(names) < 2:  # one measurer: nothing to set side by side
        return out + [""]
    out += ["", f"The {len(d['films'])} films decided differently (decision, largest angle, view, and the full-spine "
            "probability where recorded):", "",
            "| film | truth | classifier | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    def cell(r: dict) -> str:
        angle = "refused" if r["largest_deg"] is None else f"{r['largest_deg']:.1f}°"
        p = r.get("full_spine_probability")
        return f"{r['decision']} ({angle}, {r['view'] or 'no check'}" + ("" if p is None else f", p {p:.2f}") + ")"

    for f in d["films"]:
        cells = [cell(f[n]) for n in names]
        out.append(f"| {f['film']} | {f['truth']} | {f['classifier']} | " + " | ".join(cells) + " |")
    return out + [""]


def view_check_section(d: dict) -> list[str]:
    """The view check read from the refined corners, the first stage's, or both (benchmarks/view_check.py)."""
    out = ["## The view check: which corners it reads", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Every KAUH film ({d['n_films']}) measured by `{d['landmarks']}`"
           + (f" + `{d['refiner']}`" if d.get("refiner") else "") + f"; on the KAUH CV's case-grouped folds ({d['folds']}, "
           f"seed {d['seed']}) the check is fitted on the other folds, its line keeping {d['keep_lumbar_out']:.0%} of "
           "their lumbar (Spondylolisthesis) films out, and judges the fold's films.", "",
           "| features | what they read | out-of-fold AUC | lumbar films judged full-spine AP | full-spine films judged "
           "lumbar |" + (" held-out AASCE films judged full-spine AP |" if "aasce" in d else ""),
           "|---|---|---|---|---|" + ("---|" if "aasce" in d else "")]
    what = {"refined": "the five features of the refined corners (the check before it read both stages)",
            "first": "the five features of the whole-spine model's corners",
            "both": "the first stage's five and the refined vertebrae's proportions and growth (the check now)"}
    for src, r in d["kauh_cv"].items():
        row = (f"| {src} | {what.get(src, d['sources'][src])} | {r['auc']:.3f} | {r['lumbar_judged_full_spine']:.1%} | "
               f"{r['full_spine_judged_lumbar']:.1%} |")
        if "aasce" in d:
            row += f" {d['aasce'][src]['judged_full_spine']:.1%} |"
        out.append(row)
    if "aasce" in d:
        a = d["aasce"]
        out += ["", f"AASCE: the {a['n_films']} held-out films of `{a['landmark_run']}` (all full-spine AP), measured by "
                f"its fold model" + (f" and `{a['refiner']}`" if a.get("refiner") else "") + ", judged by a check fitted "
                "on every KAUH film measured by the same models."]
    return out + [""]


def predict_speed_section(d: dict) -> list[str]:
    codes = d.get("code") or {"this": "the checkout of its date"}
    out = ["## Milliseconds a film of `predict` over a folder, per bundle and backend", "", f"Command: `{d['command']}`",
           "", f"Machine: {_machine(d)}. Date: {d['date']}. {d['films']} films, the whole command timed (start-up, "
           f"decoding, the classifier, both landmark stages and the angles) over the films; the configurations take "
           f"turns, {d['rounds']} rounds. Budget: {d['target_ms']:.0f} ms a film on 2 cores. Bundles: "
           + ", ".join(f"{k} `{v}`" for k, v in d["bundles"].items()) + ". Code: "
           + ", ".join(f"{k} ({v})" for k, v in codes.items()) + ".", "",
           "| code | bundle | backend | ms a film (median) | each round |", "|---|---|---|---|---|"]
    for key, ms in d["median_ms_per_film"].items():
        code, name, be = key.split(" ") if key.count(" ") == 2 else ("this", *key.rsplit(" ", 1))
        each = ", ".join(f"{x['ms_per_film']:.0f}" for x in d["results"] if x.get("code", "this") == code
                         and x["bundle"] == name and x["backend"] == be)
        out.append(f"| {code} | {name} | {be} | {ms:.0f} | {each} |")
    return out + [""]


def refine_curve_line_section(d: dict) -> list[str]:
    out = ["## What each reading of the two stages does to the curve line (films of another hospital)", "",
           f"Command: `{d['command']}`", "", f"Machine: {_machine(d)}. Date: {d['date']}. {d['films']}, which no "
           f"landmark model saw, measured by each split's fold model and the refiner named first in the command (the "
           f"earlier refiner, in one pass, where the row says so); the line is the smallest angle at "
           f"most {d['max_rate']:.0%} of them reach (`fit_curve_deg`, as the decision fits it). A reading that "
           "measures a few of them far too high raises the line, and curves of 25° or more then stand as Normal.", "",
           "| split | reading | curve line ° | refused | five largest angles ° | median ° |", "|---|---|---|---|---|---|"]
    for sp in d["splits"]:
        label = Path(sp["landmark_run"]).name.rsplit("_", 1)[-1]
        rows = dict(sp["readings"])
        if sp.get("old_refiner"):
            rows = {"first recipe's refiner: zooms+mirror | 1 pass, mirrors": sp["old_refiner"], **rows}
        for k, r in rows.items():
            out.append(f"| {label} | {k.replace(' | ', '; ')} | {r['curve_deg']:.1f} | {r['refused']} | "
                       f"{', '.join(f'{x:.1f}' for x in r['largest_five'])} | {r['median']:.1f} |")
    return out + [""]


def refiner_weights_section(d: dict) -> list[str]:
    g = d["gate"]
    out = [f"## How the refiner's weights are stored ({d['landmark_run']})", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. {d['n_test']} held-out films through the deployed measurer. "
           f"Gate against float32: SMAPE within {g['smape_points']} points and the largest angle within "
           f"{g['largest_deg']}° on {g['share']:.0%} of films.", "",
           "| weights | file MB | SMAPE % | largest angle within 0.5° of float32 | corners differ by up to (px) | gate |",
           "|---|---|---|---|---|---|"]
    for name, r in d["results"].items():
        out.append(f"| {name} | {r['file_mb']:.1f} | {r['smape']:.2f} | {r['largest_within_0_5deg_of_float32']:.0%} | "
                   f"{r['max_corner_diff_px']:.2f} | {'passed' if r['passes_gate'] else 'failed'} |")
    return out + [""]


def archive_section(d: dict) -> list[str]:
    out = ["## Archive throughput", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Each mode in a fresh process (start-up included), taking turns "
           "per archive size; the archive is the shared KAUH and AASCE films linked under new names. Peak memory is "
           "the whole process tree's (Ray's own processes included). The machine is shared, and its speed moves from one "
           "run to the next (the code and the bundle also changed between some runs on this page): compare the ratios "
           "within a run. The rates, and the arithmetic for a million films, are this run's own.", "",
           "| films | mode | films/s | × today's path | peak memory MB |", "|---|---|---|---|---|"]
    rounds = d.get("repeat", 1)
    if rounds > 1:
        out[-4] += f" The modes took turns {rounds} times; each ratio is against today's path of the same round."
        out[-2:] = ["| films | round | mode | films/s | × today's path (same round) | peak memory MB |",
                    "|---|---|---|---|---|---|"]
    valid = []
    for r in d["results"]:
        if r.get("rows") is not None and r["rows"] != r["films"]:  # a mode that lost films: its rate means nothing
            out.append(f"| {r['films']} | {r['mode']} | invalid: wrote {r['rows']} rows for {r['films']} films (the "
                       "Ray path then kept one row for all names of one file; fixed since) | | |")
            continue
        valid.append(r)
        x = "" if r.get("speedup_vs_today") is None else f"{r['speedup_vs_today']:.2f}"
        rnd = f" {r['round'] + 1} |" if rounds > 1 else ""
        out.append(f"| {r['films']} |{rnd} {r['mode']} | {r['films_per_second']:.2f} | {x} | {r['peak_rss_mb']:.0f} |")
    if d.get("median_speedup_vs_today") and rounds > 1:
        out += ["", "Median over the rounds, × today's path: " + "; ".join(
            f"{k.split()[1]} ({k.split()[0]} films) {v:.2f}" for k, v in d["median_speedup_vs_today"].items()
            if not k.endswith(" today")) + "."]
    cores = d["machine"]["cpu_count"] or 1
    best = max((r for r in valid if r["mode"].split("-")[0] in ("ray", "onnx")), key=lambda r: r["films_per_second"],
               default=None)
    if best is not None:
        per_core = best["films_per_second"] / cores
        hours = 1e6 / per_core / 3600
        out += ["", f"**A million films.** The best rate here ({best['mode']}, {best['films']} films) is "
                f"{best['films_per_second']:.2f} films/s on {cores} cores, {per_core:.2f} films/s per core. A million "
                f"films then take {hours:,.0f} core-hours: {hours / 64:,.1f} hours on a 64-core machine, or "
                f"{hours / 256:,.1f} hours on a Ray cluster of four such nodes, if the rate per core holds (actors "
                "scale by cores; the shared file system must then deliver "
                f"{per_core * 256:,.0f} films/s, about {per_core * 256 * 2:,.0f} MB/s of 2 MB films). The output, "
                "about 3 kB a film in CSV, is about 3 GB.", ""]
    return out + [""]


def _pc(v: float | None, ci: list | None = None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1%}" + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")


def _rho(s: dict | None) -> str:
    return "n/a" if not s else f"{s['rho']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"


def _missed_lines(ms: dict | None, ge: dict) -> list[str]:
    """The AASCE films of 25° or more that the rule did not call Scoliosis, film by film."""
    out: list[str] = []
    if not ms:
        return out
    out += ["", f"Films of 25° or more measured out of fold and not called Scoliosis with the rule: {ms['n']} of "
            f"{ge['n']}: {ms['normal_call_under_line']} Normal calls measured under the line, "
            + (f"{ms['normal_call_doubted_view_under_bar']} Normal calls over it on a view the check doubted "
               "(under the rule's bar there), " if "normal_call_doubted_view_under_bar" in ms else "")
            + f"{ms['spondylolisthesis_call']} Spondylolisthesis calls, {ms['other']} other."
            + (f" {ms['flagged_check_the_film']} of them keep their label with the measured curve shown beside it, "
               f"flagged 'check the film' (decision rule v{ms.get('rule_version', 4)})." if "flagged_check_the_film" in ms
               else "")]
    if ms.get("films"):
        def _deg(x: float | None) -> str:
            return "refused" if x is None else f"{x:.1f}°"

        out += ["", "| film | true largest | measured largest | classifier | decision | full-spine probability |",
                "|---|---|---|---|---|---|"]
        for f in ms["films"]:
            fp = f["full_spine_probability"]
            out.append(f"| {f['film']} | {f['true_largest']:.1f}° | {_deg(f['measured_largest'])} | "
                       f"{f['classifier']} | {f['decision']} | {'' if fp is None else f'{fp:.2f}'} |")
    return out


def _view_lines(k: dict, o: dict) -> list[str]:
    """The view check, the heatmap-confidence probe and the framing stress test on KAUH's held-out films."""
    out: list[str] = []
    vc = k.get("view_check")
    if vc:
        out += ["", "The view check (a logistic model on the shape of the measured spine: "
                + ", ".join(vc["features"]) + f"; its line keeps {vc['keep_lumbar_out']:.0%} of KAUH's lumbar films out) "
                f"judged full-spine AP, {vc['held_out_protocol']}: "
                + ", ".join(f"{c} {x:.0%}" for c, x in vc["held_out_full_spine_rate"].items())
                + (f"; fitted on all KAUH films, {o['view_full_spine_rate']:.0%} of the AASCE films measured out of fold."
                   if o.get("view_full_spine_rate") is not None else ".")]
    v = k.get("view_by_confidence")
    if v:
        out += ["", "Can the landmark model's heatmap confidence tell a lumbar view? Median confidence: "
                + ", ".join(f"{c} {x:.3f}" for c, x in v["confidence_median"].items())
                + f". A line at {v['line_keeping_90pct_of_lumbar_out']:.3f} keeps 90% of KAUH's Spondylolisthesis "
                f"(lumbar) films out, and also {1 - v['kauh_full_ap_over_line']:.0%} of KAUH's full-spine films and "
                f"{1 - v['aasce_over_line']:.0%} of the AASCE films: not a usable view signal."]
    f = k.get("framing_stress_held_out")
    if f:
        sa, nb = f["scoliosis_ap_to_strip"], f["normal_strip_to_full"]
        out += ["", f"Framing stress test on the held-out KAUH films: {sa['changed']} of {sa['n']} full-AP Scoliosis films "
                f"cut to strips changed class ({sa['changed'] / max(sa['n'], 1):.0%}); {nb['changed']} of {nb['n']} Normal "
                f"strips widened to full-film proportions (mirrored edges) changed ({nb['changed'] / max(nb['n'], 1):.0%})."]
    return out


def _reading_sentence(d: dict) -> str:
    r = d.get("reading") or {}
    if not any(r.values()):
        return ""
    views = (f"test-time zooms {r['tta_scales']} with the mirror image" if r.get("tta_scales") not in (None, "1")
             else "the film and its mirror image" if r.get("tta_scales") == "1" else "its file's test-time views")
    passes = r.get("passes") or "its file's"
    return (f"Read as the bundle reads them: the first stage measures each film again with {views}, the refiner in "
            f"{passes} passes{', the mirror images on the last' if r.get('mirror_last') else ''}. ")


def external_section(d: dict) -> list[str]:
    k, a = d["kauh"], d["aasce"]
    o = a["oof_films"]
    allf = a["classifier_all_films"]
    ge = o["called_scoliosis_ge25"]
    cm = d.get("classifier_meta") or {}
    title = (f"## A KAUH classifier on AASCE films, with the curve measured by the two stages (fold models of "
             f"{Path(d['landmark_run']).name}, refiner `{d['refiner']}`)"
             if d.get("refiner") else "## A KAUH classifier on AASCE films, alone and with the measured curve")
    out = [title, "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Classifier: `{d['classifier']}` ({cm.get('architecture')}, "
           f"{(cm.get('data_config') or {}).get('input_size')} px, trained on KAUH only). Landmark evidence: "
           f"`{d['landmark_run']}`, each AASCE film measured by the fold model that did not train on it "
           f"({a['n_out_of_fold_measured']} of {a['n']} films; angles read with centreline weight "
           f"{d.get('centreline_weight', 0.0):g}). Curve line **{k['curve_deg']:.1f}°**, fitted on KAUH "
           f"Normal films (at most {k['max_override']:.0%} of them reach it). {_reading_sentence(d)}"
           f"{d.get('note', '')}", "",
           "| films | what decides | called Scoliosis, largest Cobb >= 25° | Spearman with the true largest angle |",
           "|---|---|---|---|",
           f"| all {a['n']} AASCE films | classifier | {_pc(allf['angles']['called_scoliosis_ge25'])} | P(Scoliosis): "
           f"{_rho(allf['angles']['spearman_p_scoliosis'])} |",
           f"| {o['classifier']['n']} measured out of fold | classifier | {_pc(ge['classifier'])} of {ge['n']} | P(Scoliosis): "
           f"{_rho(o['classifier']['angles']['spearman_p_scoliosis'])} |",
           f"| {o['classifier']['n']} measured out of fold | classifier + measured curve | {_pc(ge['with_rule'])} of {ge['n']} | "
           f"measured angle: {_rho(o['classifier']['angles'].get('spearman_measured_angle'))} |", "",
           "Called Scoliosis by true Cobb band (classifier alone, all AASCE films):", "",
           "| band | films | called Scoliosis |", "|---|---|---|"]
    out += [f"| {b['band']} ({b['range']}) | {b['n']} | {_pc(b['called_scoliosis'], b['ci95'])} |"
            for b in allf["angles"]["by_band"]]
    h = k["held_out"]
    out += ["", f"KAUH, {h['protocol']}: accuracy {_pc(h['classifier']['accuracy'], h['classifier']['ci95'])} alone, "
            f"{_pc(h['with_rule']['accuracy'], h['with_rule']['ci95'])} with the curve rule "
            f"({h['classifier']['n']} films). Angle used as evidence on held-out films: "
            + ", ".join(f"{c} {v:.0%}" for c, v in k["angle_used_held_out"].items())
            + "; plausible spine on all KAUH films: " + ", ".join(f"{c} {v:.0%}" for c, v in k["plausible_spine"].items())
            + "."]
    for run, c in (k.get("cv_rule") or {}).items():
        lines_ = [fo["curve_deg"] for fo in c["folds"]]
        out += ["", f"KAUH {len(c['folds'])}-fold CV `{run}` ({c['model']}, {c['n']} films, out-of-fold calls): accuracy "
                f"{c['accuracy_mean']:.1%} alone, **{c['accuracy_with_rule_mean']:.1%} with the curve rule** (mean over "
                f"folds; each fold's line fitted on the other folds' Normal films: {min(lines_):.1f}-{max(lines_):.1f}°); "
                f"the rule changed {c['changed']} decisions, {c['changed_to_right']} to the right class and "
                f"{c['changed_to_wrong']} to a wrong one."]
        if c.get("view_full_spine_rate"):
            out[-1] += (" The view check, fitted out of fold too, judged full-spine AP: "
                        + ", ".join(f"{cl} {x:.0%}" for cl, x in c["view_full_spine_rate"].items()) + " of the held-out films.")
    out += _missed_lines(o.get("missed_ge25"), ge)
    out += _view_lines(k, o)
    t = d["targets"]
    out += ["", f"Targets: >= {t['called_scoliosis_ge25']:.0%} of films >= 25° called Scoliosis; Spearman >= "
            f"{t['spearman_evidence']}; KAUH accuracy not lower by more than {t['kauh_accuracy_drop_max']:.0%}.", ""]
    return out


def bundled_section(d: dict) -> list[str]:
    c, lm = d["classifier"], d["landmarks"]
    return ["## Bundled models", "", f"Command: `{d['command']}`", "", f"Machine: {_machine(d)}. Date: {d['date']}.", "",
            "| model | file MB (float16) | float16 vs float32 on KAUH films | ms per film (2 cores, PyTorch) |",
            "|---|---|---|---|",
            f"| classifier | {c['file_mb']:.1f} | max probability difference {c['max_prob_diff_fp16']:.1e} | "
            f"{c['ms_per_film']:.0f} |",
            f"| landmarks | {lm['file_mb']:.1f} | max corner difference {lm['max_corner_diff_px_fp16']:.2f} px | "
            f"{lm['ms_per_film']:.0f} |", "",
            f"Decision rule: on a film the view check finds to be a full-spine AP view, a Normal or Spondylolisthesis "
            f"call measured at **{d['curve_deg']:.1f}°** or more becomes Scoliosis"
            + (f"; on a view it doubts, a Normal call measured at **{max(d['curve_deg'], d['doubted_view_deg']):g}°** "
               "or more." if d.get("doubted_view_deg") else "."),
            *([f"The classifier's float16 check is from {c['kept_from']} (its weights were kept)."] if c.get("kept_from")
              else []),
            *([f"The landmark model's weights are those of {lm['weights_kept_from']} (only its metadata changed: "
               "test-time zooms, angle reading, curve line, view check); its float16 check is from then."]
              if lm.get("weights_kept_from") else []), ""]


def landmark_inference_section(d: dict) -> list[str]:
    lm = d["landmarks"]
    return ["## Landmarks + Cobb angles: CPU latency per film", "", f"Command: `{d['command']}`", "",
            f"Machine: {_machine(d)}. Date: {d['date']}. Model `{lm['model']}` ({lm['encoder']} at {lm['input']}), "
            f"{lm['films']} AASCE films, {lm['threads']} threads; ONNX corners within {lm['onnx_parity_px']:.1e} "
            "input pixels of PyTorch.", "",
            "| step | p50 ms | p95 ms |", "|---|---|---|",
            f"| decode the file | {lm['decode']['p50_ms']:.0f} | {lm['decode']['p95_ms']:.0f} |",
            f"| fit + model + angles, PyTorch eager | {lm['eager']['p50_ms']:.0f} | {lm['eager']['p95_ms']:.0f} |",
            f"| fit + model + angles, onnxruntime FP32 | {lm['onnxruntime']['p50_ms']:.0f} | "
            f"{lm['onnxruntime']['p95_ms']:.0f} |", "",
            f"With onnxruntime, a film takes {lm['total_onnxruntime_p50_ms']:.0f} ms at the median including its "
            f"decoding (target: {lm['target_ms']} ms).", ""]


# Measurements of settings that were tried and not adopted: they go on the "what we tried" page.
NOT_ADOPTED = {
    "aasce_cobb_cv_cpu_reduced_384.json": "A larger landmark input (384x192): corners a little better, angles worse.",
    "aasce_cobb_cv_cpu_reduced_midline.json": "A vertebra midline term in the landmark loss: slower learning, worse angles.",
    "aasce_cobb_cv_cpu_reduced_strip.json": "Landmark training with 30% of films reframed as strips: not adopted.",
    "kauh_augment_cpu_reduced.json": "Augmentation arms for the framing shortcut (framing augmentation was used until "
                                     "the window contract replaced it).",
    "kauh_augment_cpu_reduced_contract.json": "The strip input contract: replaced by the window contract.",
    "landmark_framing.json": "A landmark model trained on strips as well: it did not measure framings more alike.",
    "angle_correction_seed1.json": "Corrections of the reading (a linear recalibration, a shape prior): neither took "
                                   "the bias off large curves.",
    "angle_correction_seed0_e26.json": "A gain on the refined tilts, calibrated on the split's 32 validation films "
    "(g = 1.016; by calibration, the candidate named before any two-stage film was measured): it took the bias on "
    "curves of 40 degrees or more from -1.3 to -0.4 degrees, but SMAPE rose (10.53 -> 10.60%), the largest-angle "
    "MAE too (3.50 -> 3.53 degrees) and fewer films came within 5 degrees (81 -> 78%); the two stages as read already "
    "meet the four targets on this split. The gain stays a setting of the refiner file (`tilt_gain`, 1 in the "
    "bundle). Not run on seed 1.",
    "external_aasce_seed0_e26_two_passes.json": "Two refiner passes with the refiner trained as the bundled one "
    "(seed-0 fold models), which that split's validation films choose (SMAPE 9.31% against 9.62% for one): the "
    "held-out films measure better (9.81%, 3.05 degrees, 85% within 5 degrees), but the curve line on KAUH Normal "
    "films rose from 22.5 to 26.5 degrees and 5 films were refused, so 95.5% of the 66 films of 25 degrees or more "
    "were called Scoliosis (one pass: 98.5%; the target is 97%). The bundle keeps one pass.",
    "landmark_int8_all.json": "The INT8 landmark graph: SMAPE held, but the largest angle moved by 0.5 degrees or "
                              "more on 11% of films (the rule allows 5%).",
    "landmark_int8.json": "The INT8 landmark encoder with the decoder kept in FP32: the same, 10% of films moved.",
    "landmark_int8_seed1_two_stage.json": "The INT8 landmark encoder again, now that the vertebra refiner reads the "
    "angles' corners: the refiner does not absorb the change, it follows it (its crops are cut around the first "
    "stage's corners): SMAPE rose 0.26 points and the largest angle moved by 0.5 degrees or more on 22% of films; "
    "the first stage alone got 33 ms a film faster.",
    "aasce_refine_seed0_jit10.json": "The vertebra refiner trained with its crops turned by 10 degrees (standard "
    "deviation) instead of 6, so that it learns to mend larger tilts: it took the bias off large curves (seed 0: -2.1 "
    "-> -0.4 degrees; seed 1: -1.2 -> +0.5) but, read in one pass as the validation films choose, SMAPE rose on "
    "seed 0 (11.07 -> 11.55%) and the share within 5 degrees fell below 75% on seed 1 (77 -> 74%). In two passes "
    "it meets the four targets on both splits, as the 6-degree refiner does; the validation films choose one pass "
    "for both (see below).",
    "aasce_refine_seed1_jit10.json": "The same recipe on the seed-1 split.",
    "refine_passes_seed0_jit10.json": "Passes for the 10-degree refiner, seed 0: the validation films choose one pass; "
    "on the held-out films two passes measure better (SMAPE 9.79%, MAE 2.98 degrees, 85% within 5 degrees, +0.1 "
    "degrees on curves of 40 or more).",
    "refine_passes_seed1_jit10.json": "Passes for the 10-degree refiner, seed 1: the validation films choose one pass; "
    "on the held-out films two passes measure 9.56%, 3.58 degrees, 77%, +1.6 degrees.",
    "refine_passes_seed0_e56.json": "Passes for the longer-trained refiner, seed 0, with the first stage's six "
    "views: the validation films choose two passes (SMAPE 9.43% against 10.07% for one); on the held-out films two "
    "passes measure 9.22%, 2.86 degrees, 82% within 5 degrees, -0.9 degrees on curves of 40 or more. Not adopted: "
    "with six first-stage views a second pass costs half as much arithmetic again (70.0 against 46.5 GFLOPs a film), "
    "and on a few films of another hospital it runs away, which lifts the decision's curve line (on 71 KAUH Normal "
    "films, seed 0: 26.0 -> 32.0 degrees; seed 1: 22.5 -> 34.0; see the results page).",
    "refine_passes_seed1_e56.json": "The same on the seed-1 split: the validation films choose two passes (7.99% "
    "against 8.47%); on the held-out films two passes measure 8.60%, 3.38 degrees, 79%, +0.5 degrees.",
    "aasce_refine_seed0_e56.json": "Longer refiner training (the shipped recipe, its cosine schedule over 56 epochs "
    "instead of the 28 that 30 minutes allowed; early stopping ended it at epoch 46, best epoch 34): validation error "
    "6.62 against 6.87 (x 1000 of the crop). In one pass the held-out seed-0 films measure as before (SMAPE 11.10%, "
    "MAE 3.77 degrees, 77% within 5 degrees) with less bias on large curves (-1.3 degrees against -2.1). Not adopted "
    "yet: the bundled refiner is being trained again with it, and on the seed-0 fold models the external check falls "
    "to 92.4% (below). (Its training time includes about 20 minutes paused for timing runs.)",
    "aasce_refine_seed1_e56.json": "The longer refiner training on the seed-1 split (early stopping at epoch 47, best "
    "35; validation error 6.03 against 6.22): one pass measures SMAPE 8.49%, 3.35 degrees, 78% within 5 degrees, "
    "-1.4 degrees on curves of 40 or more. Not adopted yet (see seed 0).",
    "external_aasce_seed1_one_pass.json": "The external check with the longer-trained refiner in one pass (seed-1 fold "
    "models): 100% of the 67 films of 25 degrees or more called Scoliosis (the first recipe: 97.0%), curve line 22.5 "
    "degrees (25.0), Spearman of the measured angle 0.96 (0.94). Not adopted yet: on the seed-0 fold models, next.",
    "external_aasce_seed0_one_pass.json": "The same on the seed-0 fold models: the curve line rose to 26.0 degrees and "
    "92.4% of the 66 films of 25 degrees or more were called Scoliosis (three measured at 24-25 degrees stood as "
    "Normal), below the 97% target; Spearman 0.96.",
    "refine_budget_e56.json": "Two refiner passes within the same arithmetic, the first stage reading the film and its "
    "mirror image without its zooms: the rule fixed before looking chose it on the validation films, and on the "
    "held-out films it meets all four accuracy targets on both splits (seed 0: SMAPE 10.05%, MAE 2.97 degrees, 84% "
    "within 5 degrees, -0.9 degrees on curves of 40 or more; seed 1: 9.57%, 3.35, 77%, +0.4). Not adopted: on other "
    "hospitals' films the second pass runs away on a few, which the decision pays for (the curve line and the "
    "external check below).",
    "external_aasce_seed1_e56.json": "The external check with that reading (seed-1 fold models, the film and its "
    "mirror, two passes with the mirror on the last): the measured angle's Spearman rose to 0.95, but the curve line "
    "fitted on KAUH Normal films rose from 25.0 to 29.0 degrees and 8 of the 87 measured films were refused, so only "
    "83.6% of the films of 25 degrees or more were called Scoliosis (the target is 97%).",
    "external_aasce_seed1_e56_zooms.json": "The same with the first stage's six views and two passes (mirror on the "
    "last): 2 films refused, but the curve line rose to 33.5 degrees: 85.1% called Scoliosis.",
    "refine_guard_first.json": "A limit on how far the second refiner pass may turn a vertebra, with the shipped "
    "recipe's refiners. Looser limits keep most of the second pass's gain and bring the curve line on KAUH Normal "
    "films back to one pass's, but the rule fixed before looking (the tightest limit the validation films say costs "
    "nothing) chose the tightest ones, which give the gain back: on the held-out films the chosen limit measures "
    "about as one pass does (see the rows in bold).",
    "refine_guard_e56.json": "The same limit with the longer-trained refiners. For six first-stage views and two "
    "passes the rule chose a limit (in bold) that keeps all four accuracy targets on both held-out splits and stops "
    "the worst runaway on KAUH Normal films, but on the seed-0 fold models the curve line stays above one pass's; "
    "for the mirror-only reading the limit does not stop it. The external checks below decide: not adopted.",
    "external_aasce_seed0_e56_guard.json": "The external check with six first-stage views, two passes and the chosen "
    "limit (seed-0 fold models, longer-trained refiner): the measured angle ranks the films better than ever, but "
    "with the curve line where the KAUH Normal films put it, fewer than 97% of the films of 25 degrees or more are "
    "called Scoliosis.",
    "external_aasce_seed1_e56_guard.json": "The same on the seed-1 fold models: below 97% as well.",
    "landmark_int8_seed1_refiner.json": "The INT8 vertebra refiner (its encoder; the first stage FP32), calibrated on "
    "the crops it is given on training films: SMAPE held (+0.09 points) and the two stages got about a quarter "
    "faster, but the largest angle moved by 0.5 degrees or more on 25% of films (the rule allows 5%).",
}
DOCS = HERE.parent / "docs"


def structure_section(before: dict, now: dict) -> list[str]:
    """The shape of the codebase before and after the pipeline work, from benchmarks/code_structure.py."""
    rows = (("import cycles", "n_cycles"), ("upward imports (by the declared layers)", "n_upward_imports"),
            ("functions of 80 lines or more", "n_functions_80_lines_or_more"),
            ("imports inside functions (of spinexr's own)", "imports_inside_functions"), ("README lines", "readme_lines"))
    out = ["## The shape of the codebase", "", f"Commands: `{before['command']}` (commit {before['commit'][:10]}) and "
           f"`{now['command']}` (commit {now['commit'][:10]}). Layers, top first: "
           + " > ".join(" | ".join(layer) for layer in now["layers"]) + ".", "",
           "| count | before | now |", "|---|---|---|"]
    for name, key in rows:
        extra = (f" ({before['own_imports_inside_functions']})", f" ({now['own_imports_inside_functions']})") \
            if key == "imports_inside_functions" else ("", "")
        out.append(f"| {name} | {before[key]}{extra[0]} | {now[key]}{extra[1]} |")
    return out + [""]


def _refine_any_section(d: dict) -> list[str]:
    return refine_final_section(d) if d.get("final") else refine_section(d)


# The external checks the pages render, in this order: the first, then each split's under each later measurement.
EXTERNAL_ADOPTED = ("external_aasce.json", *(f"external_aasce_{split}_{tag}.json"
                                             for tag in ("refined", "e26", "e26_two_stage_view", "e26_spond_line")
                                             for split in ("seed0", "seed1")))


def _adopted_sections() -> list[str]:
    lines: list[str] = []
    for f in sorted((HERE / "results").glob("kauh_cv_*.json")):
        lines += kauh_section(json.loads(f.read_text()))
    for f in sorted((HERE / "results").glob("kauh_classifier_*.json")):
        lines += classifier_recipe_section(json.loads(f.read_text()))
    titles = {"_window": "The window input contract: KAUH CV on the same folds and seeds",
              "_window_lmseed1_rule3": "The window input contract through the decision with the second landmark "
                                       "model (seed 1, bundled): same folds and seeds",
              "_refactor_window_check": "The window input contract trained again from scratch on the pipeline code "
                                        "(decision rule v4, the bundled float16 seed-1 landmark model): same folds "
                                        "and seeds",
              "_refiner_window": "The window input contract through the decision with the bundled landmark model "
                                 "and vertebra refiner (the folds above, resumed; compare with the run just above)",
              "_refiner_e56_window": "The window input contract through the decision with the bundled landmark model "
                                     "and the longer-trained vertebra refiner (the same folds, resumed)"}
    for f in sorted((HERE / "results").glob("kauh_augment_*.json")):
        if f.name not in NOT_ADOPTED:
            ends = sorted((end for end in titles if f.stem.endswith(end)), key=len)[-1:]  # the longest suffix
            lines += augment_section(json.loads(f.read_text()), *[titles[end] for end in ends])
    d = _load("window_invariance.json")
    if d:
        lines += window_invariance_section(d)
    for f in sorted((HERE / "results").glob("train_throughput_*.json")):
        lines += throughput_section(json.loads(f.read_text()))
    # the newest run first, then earlier runs kept for comparison (this machine's speed changes with its neighbours)
    runs = [json.loads(f.read_text()) for f in sorted((HERE / "results").glob("cpu_inference*.json"))
            if "landmarks" not in f.name]
    for i, d in enumerate(sorted(runs, key=lambda d: d["date"], reverse=True)):
        lines += inference_section(d, brief=i > 0)
    for name, section in (("faithfulness_kauh.json", faithfulness_section), ("fuzz_read.json", fuzz_section),
                          ("dicom_corpus.json", dicom_corpus_section)):
        d = _load(name)
        if d:
            lines += section(d)
    # (results files, renderer, whether files on NOT_ADOPTED are left for the "what we tried" page)
    for pattern, section, adopted_only in (
            ("ood_corpus*.json", ood_corpus_section, False), ("aasce_cobb_cv_*.json", aasce_section, True),
            ("angle_reading*.json", angle_reading_section, False), ("aasce_refine_*.json", _refine_any_section, True),
            ("refine_variants_*.json", refine_variants_section, False),
            ("refine_passes_*.json", refine_passes_section, True), ("refine_budget_*.json", refine_budget_section, True),
            ("refine_curve_line_*.json", refine_curve_line_section, False),
            ("refine_guard_*.json", refine_guard_section, True),
            ("decision_diff_*.json", decision_diff_section, False),
            ("view_check_*.json", view_check_section, False),
            ("predict_speed*.json", predict_speed_section, False),
            ("refiner_weights_*.json", refiner_weights_section, False)):
        for f in sorted((HERE / "results").glob(pattern)):
            if not (adopted_only and f.name in NOT_ADOPTED):
                lines += section(json.loads(f.read_text()))
    for f in sorted((HERE / "results").glob("archive_predict*.json")):
        lines += archive_section(json.loads(f.read_text()))
    for name, section in (("pacs_roundtrip.json", pacs_section), ("finetune_corrections.json", finetune_section),
                          ("cpu_inference_landmarks.json", landmark_inference_section),
                          *((name, external_section) for name in EXTERNAL_ADOPTED),
                          ("bundled_models.json", bundled_section)):
        d = _load(name)
        if d:
            lines += section(d)
    before, now = _load("code_structure_before.json"), _load("code_structure_now.json")
    if before and now:
        lines += structure_section(before, now)
    return lines


def pacs_section(d: dict) -> list[str]:
    s, tp, lat = d["settings"], d["throughput"], d["latency"]
    return [f"## PACS round trip ({d['benchmark']})", "", f"Command: `{d['command']}`", "",
            f"Machine: {_machine(d)}. Date: {d['date']}. Wall time: {d['wall_seconds'] / 60:.1f} min.", "",
            f"`spinexr pacs watch` against a local Orthanc (DICOMweb plugin), the bundled models, {s['studies']} "
            f"synthetic one-film DX studies (scale {s['scale']}); each film retrieved (WADO-RS), predicted and its SR "
            "and presentation state stored back (STOW-RS).", "",
            "| run | figure |", "|---|---|",
            f"| `--once` over {tp['studies']} stored studies, whole command (start-up included) | "
            f"{tp['studies_per_min_wall']:.1f} studies/min ({tp['wall_s']:.0f} s) |",
            f"| the same, first study seen to last report stored | {tp['studies_per_min_work']:.1f} studies/min |",
            f"| polling every {lat['poll_interval_s']:.0f} s, studies arriving at {lat['arrival_rate_per_min']:.0f}/min: "
            f"wait from arrival to SR stored | median {lat['wait_median_s']:.1f} s, p95 {lat['wait_p95_s']:.1f} s, "
            f"max {lat['wait_max_s']:.1f} s ({lat['reported']} of {lat['studies']} reported) |",
            *_dimse_rows(d.get("dimse")), ""]


def _dimse_rows(dm: dict | None) -> list[str]:
    """``spinexr pacs listen`` rows: Orthanc C-STOREs the films to spinexr, spinexr C-STOREs the reports back."""
    if not dm:
        return []
    tp, lat = dm["throughput"], dm["latency"]
    return [f"| DIMSE (`pacs listen`): {tp['studies']} films sent at once by Orthanc, first sent to last report "
            f"stored | {tp['studies_per_min_work']:.1f} studies/min |",
            f"| DIMSE: each film sent as it arrives, at {lat['arrival_rate_per_min']:.0f}/min: wait from arrival to "
            f"SR stored | median {lat['wait_median_s']:.1f} s, p95 {lat['wait_p95_s']:.1f} s, max "
            f"{lat['wait_max_s']:.1f} s ({lat['reported']} of {lat['studies']} reported) |"]


def dicom_corpus_section(d: dict) -> list[str]:
    t = d["totals"]
    by = {}
    for c in d["cases"]:
        by[(c["expect"], c["status"])] = by.get((c["expect"], c["status"]), 0) + 1
    rows = [f"| {e} | {s} | {n} |" for (e, s), n in sorted(by.items())]
    return [f"## DICOM corpus through `predict --dicom-out` ({d['benchmark']})", "", f"Command: `{d['command']}`", "",
            f"Machine: {_machine(d)}. Date: {d['date']}.", "",
            f"{t['films']} DICOM files: synthetic DX/CR films in nine character sets, MONOCHROME1, JPEG baseline, "
            "JPEG 2000, RLE, two frames, films missing Patient Orientation, Imager Pixel Spacing, Study Date or "
            "Patient's Name, CT, MR, NM, XA, an RGB secondary capture, a DX for processing, a chest film, a file "
            "without an image, and real radiographs written as DX.", "",
            "| figure | count |", "|---|---|",
            f"| crashes (exit code, traceback) | {t['crashes']} |", f"| films unaccounted for | {t['unaccounted']} |",
            f"| films with another outcome than expected | {t['wrong_outcome']} |",
            f"| dciodvfy errors over every SR and presentation state | {t['dciodvfy_errors']} |",
            f"| labels or angles for a film outside the intended use | {t['findings_outside_intended_use']} |",
            f"| reports written for a film outside the intended use | {t['reports_outside_intended_use']} |",
            f"| real films the detector flagged (not analysed) | {t['real_films_flagged_out_of_distribution']} |",
            *_ohif_rows(d.get("ohif") or {}), "",
            "| expected | outcome | films |", "|---|---|---|", *rows, ""]


def _ohif_rows(o: dict) -> list[str]:
    """OHIF's reader (@cornerstonejs/adapters) on every SR of the corpus, when the run had Node."""
    if "reports" not in o:
        return []
    return [f"| SRs OHIF's reader (dcmjs + @cornerstonejs/adapters) could not read | {len(o['unreadable'])} of "
            f"{o['reports']} |",
            f"| curves hydrated as OHIF Cobb angle annotations, labelled by region and side | {o['curves_hydrated']} of "
            f"{o['curves_expected']} |",
            f"| largest offset of a hydrated point from the document's lines | {o['max_point_offset_px']:.3f} px |",
            f"| largest difference of a hydrated angle from the document's (stored; drawn by its four points) | "
            f"{o['max_angle_error_deg']:.3f}°; {o['max_drawn_angle_error_deg']:.3f}° |"]


def finetune_section(d: dict) -> list[str]:
    st = d["settings"]
    out = [f"## Learning from corrections ({d['benchmark']})", "", f"Command: `{d['command']}`", "",
           f"Machine: {_machine(d)}. Date: {d['date']}. Wall time: {d['wall_seconds'] / 60:.1f} min.", "",
           f"Parent `{st['parent']}` (the landmark model of a case split's training side, which never saw the "
           f"{st['held_out_films']} held-out films), second stage `{st['refiner']}`. The held-out cases are "
           "shuffled; the first films up to 50 stand in for a person's corrections (their true corners), the rest "
           f"of the split is measured, the same films for every count. Fine-tuned with {st['fine_tune']}. "
           "Each repeat is another shuffle.", "",
           "| repeat | corrections | evaluation films | SMAPE, two stages | largest angle within 5° | largest-angle MAE | "
           "SMAPE, landmark model alone | corner error (% height) | fine-tune time |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in d["repeats"]:
        for row in r["rows"]:
            a, w = row["alone"], row["with_refiner"]
            out.append(f"| {r['seed']} | {row['corrections']} | {w['n']} | {w['smape']:.2f}% | {w['within_5deg']:.0%} | "
                       f"{w['mae_largest']:.2f}° | {a['smape']:.2f}% | {w['corner_error_pct_height']:.2f} | "
                       f"{row['train_seconds']:.0f} s |")
    return out + [""]


def _tried_sections() -> list[str]:
    lines: list[str] = []
    renderers = {"aasce_cobb_cv": aasce_section, "landmark_int8": int8_section, "kauh_augment": augment_section,
                 "landmark_framing": landmark_framing_section,
                 "angle_correction": angle_correction_section, "aasce_refine": refine_section,
                 "refine_passes": refine_passes_section, "external_aasce": external_section,
                 "refine_budget": refine_budget_section, "refine_guard": refine_guard_section}
    titles = {"kauh_augment_cpu_reduced_contract.json": "The strip input contract: KAUH CV on the same folds and seeds"}
    for name, why in NOT_ADOPTED.items():
        d = _load(name)
        if d is None:
            continue
        render = next(fn for prefix, fn in renderers.items() if name.startswith(prefix))
        if render is refine_section and d.get("final"):
            render = refine_final_section
        sec = render(d, titles[name]) if name in titles else render(d)
        lines += sec[:2] + [f"**Not adopted.** {why}", ""] + sec[2:]
    return lines


def _external_headline(d: dict) -> tuple[dict, float]:
    """An external check's films of 25 degrees or more called Scoliosis, and the measured angle's Spearman."""
    o = d["aasce"]["oof_films"]
    return o["called_scoliosis_ge25"], o["classifier"]["angles"]["spearman_measured_angle"]["rho"]


def headline_table() -> list[str]:
    """The README's table of headline figures, each with the JSON it comes from."""
    rows = ["| what | figure | from |", "|---|---|---|"]
    d = _load("kauh_cv_cpu_reduced.json")
    if d:
        r = d["results"]
        st = d["settings"]
        rows.append(f"| KAUH {st['folds']}-fold CV, from scratch on a CPU ({st['image_size']} px, {st['epochs']} epochs) | "
                    + ", ".join(
            f"{m} {r[m]['accuracy_mean']:.1%} ± {r[m]['accuracy_std']:.1%}" for m in ("xception", "densenet121", "inception_v3"))
            + " | `kauh_cv_cpu_reduced.json` |")
    d = _load("kauh_augment_cpu_reduced_window_lmseed1_rule3.json")
    if d:
        w = d["arms"]["window-contract"]
        fr = w["decision"]["framing"]
        rows.append(f"| bundled recipe, KAUH 5-fold CV: classifier, then with the decision | {w['accuracy_mean']:.1%} -> "
                    f"{w['decision']['accuracy_with_rule_mean']:.1%}; framing changes {fr['scoliosis_ap_to_strip']['rate']:.1%}"
                    f" and {fr['normal_strip_to_full']['rate']:.1%} | `{'kauh_augment_cpu_reduced_window_lmseed1_rule3.json'}` |")
    for name, label in (("aasce_cobb_cv_cpu_reduced.json", "seed-0"), ("aasce_cobb_cv_cpu_reduced_seed1.json", "seed-1")):
        d = _load(name)
        if d:
            p = d["pooled"]
            rows.append(f"| Cobb angles on held-out AASCE films ({label} case split, {p['n']} films) | SMAPE {p['smape']:.1f}%, "
                        f"largest-angle MAE {p['mae_largest']:.1f}° | `{name}` |")
    final = _load("aasce_refine_final.json") or {}
    for split, label in (("seed0", "seed-0"), ("seed1", "seed-1")):
        # The split's refiner trained as the bundled one was (26 epochs, no time budget) where it has been run,
        # else the earlier split refiner of the same recipe on a 30-minute budget.
        name, d = _first(f"aasce_refine_{split}_e26.json", f"aasce_refine_{split}.json")
        if d:
            r = d["results"]["refined, 1 pass"]["corners alone"]
            bias = "" if r["mean_error_ge40"] is None else f", {r['mean_error_ge40']:+.1f}° on curves of 40° or more"
            t = d["training"]
            how = (f"trained as the bundled one, {len(d['history'])} epochs"
                   if t["stopped_by"] == "epochs" and len(d["history"]) == final.get("epochs_run")
                   else f"{len(d['history'])} epochs, stopped by {t['stopped_by']}")
            rows.append(f"| the same with the vertebra refiner (the bundled second stage; {label} split, "
                        f"{r['n']} films; refiner {how}) | SMAPE {r['smape']:.1f}%, largest-angle MAE {r['mae_largest']:.1f}°, "
                        f"{r['within_5deg']:.0%} within 5°{bias} | `{name}` |")
    d = _load("external_aasce.json")
    if d:
        ge, rho = _external_headline(d)
        rows.append(f"| AASCE films of 25° or more called Scoliosis (a KAUH classifier; development figure) | alone "
                    f"{ge['classifier']:.1%}, with the measured curve {ge['with_rule']:.1%} of {ge['n']}; Spearman of the "
                    f"measured angle {rho:.2f} | `external_aasce.json` |")
    for split, label in (("seed0", "seed-0"), ("seed1", "seed-1")):
        name, d = _first(f"external_aasce_{split}_e26_spond_line.json", f"external_aasce_{split}_e26_two_stage_view.json",
                         f"external_aasce_{split}_e26.json",
                         f"external_aasce_{split}_refined.json")
        if d:
            ge, rho = _external_headline(d)
            rows.append(f"| the same, the curve measured by the two stages ({label} fold "
                        f"models) | with the measured curve {ge['with_rule']:.1%} of {ge['n']}; Spearman of the "
                        f"measured angle {rho:.2f} | `{name}` |")
    name, d = _first("kauh_augment_spond_line_window.json", "kauh_augment_two_stage_view_window.json",
                     "kauh_augment_refiner_window_repeat.json",
                     "kauh_augment_refiner_e56_window.json",
                     "kauh_augment_refiner_window.json")
    if d:
        w = d["arms"]["window-contract"]
        fr = w["decision"]["framing"]
        rows.append(f"| the bundled models now (two-stage measurement), KAUH 5-fold CV through the decision | "
                    f"{w['accuracy_mean']:.1%} -> {w['decision']['accuracy_with_rule_mean']:.1%}; framing changes "
                    f"{fr['scoliosis_ap_to_strip']['rate']:.1%} and {fr['normal_strip_to_full']['rate']:.1%} | "
                    f"`{name}` |")
    # The same out-of-fold calls decided with each landmark model's measurements (decision_diff.py), per rule.
    for dname, what in (("decision_diff_kauh_two_stage_view.json", "decided with the landmark model bundled before the "
                         "refiner (seed1-fold) and with the bundled two stages (rule v4)"),
                        ("decision_diff_kauh_spond_line.json", "the bundled two stages with rule v5 (a "
                         "Spondylolisthesis call overruled only above the view check's second line)")):
        dd = _load(dname)
        if dd:
            named = len(dd["measurers"]) > 1
            cells = "; ".join(("" if not named else f"{n} ") + f"{r['accuracy_with_rule_fold_mean']:.1%} "
                              f"({r['changed_to_right']} to right, {r['changed_to_wrong']} to wrong)"
                              for n, r in dd["measurers"].items())
            rows.append(f"| the same out-of-fold calls, {what} | {cells} | `{dname}` |")
    return rows + _deployment_rows()


def _deployment_rows() -> list[str]:
    """The headline rows about running the bundled models: throughput, the PACS round trip, latency."""
    rows = []
    name = next(n for n in ("archive_predict_folded_repeat.json", "archive_predict_jobs_repeat.json", "archive_predict_jobs.json",
                            "archive_predict_refiner.json") if _load(n) or n.endswith("refiner.json"))
    d = _load(name)
    if d:
        fps = {r["mode"]: r["films_per_second"] for r in d["results"]}
        figures = [f"{label} {1000 / fps[m]:.0f} ms a film" for m, label in
                   (("stream", "PyTorch"), ("onnx", "ONNX Runtime"), ("onnx-j2", "ONNX Runtime `--jobs 2`")) if m in fps]
        medians = d.get("median_speedup_vs_today") or {}
        if "500 onnx-j2" in medians and d.get("repeat", 1) > 1:
            figures.append(f"`--jobs 2` {medians['500 onnx-j2']:.2f}x the film-at-a-time path's films/s (median of "
                           f"{d['repeat']} rounds taking turns)")
        elif "today" in fps and "onnx-j2" in fps:
            figures.append(f"`--jobs 2` {fps['onnx-j2'] / fps['today']:.2f}x the film-at-a-time path's films/s")
        rows.append(f"| `predict` over 500 films with the bundled models, 2 CPU cores (with decoding and start-up) | "
                    f"{', '.join(figures)} | `{name}` |")
    d = _load("pacs_roundtrip.json")
    if d:
        tp, lat = d["throughput"], d["latency"]
        rows.append(f"| PACS round trip through a local Orthanc ({tp['studies']} one-film DX studies, bundled models, "
                    f"2 CPU cores) | {tp['studies_per_min_wall']:.0f} studies/min; arrival to SR stored, polling: median "
                    f"{lat['wait_median_s']:.1f} s, p95 {lat['wait_p95_s']:.1f} s | `pacs_roundtrip.json` |")
    d = _load("cpu_inference_landmarks.json")
    if d:
        lm = d["landmarks"]
        rows.append(f"| landmarks and angles per film, 2 CPU cores (onnxruntime, with decoding) | "
                    f"{lm['total_onnxruntime_p50_ms']:.0f} ms | `cpu_inference_landmarks.json` |")
    return rows


def _write_readme_table(rows: list[str]) -> None:
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    start, end = "<!-- headline:start -->", "<!-- headline:end -->"
    if start in text and end in text:
        a, b = text.index(start) + len(start), text.index(end)
        readme.write_text(text[:a] + "\n" + "\n".join(rows) + "\n" + text[b:])
        print(f"wrote the headline table into {readme}")


def main() -> int:
    gen = "Generated by `python benchmarks/make_results_md.py` from `benchmarks/results/*.json`; never edited by hand."
    pages = {"results.md": ["# Results", "", gen, "", "What the project measured and adopted. Settings that were "
                            "measured and not adopted are on [what we tried](what-we-tried.md).", "",
                            *_adopted_sections()],
             "what-we-tried.md": ["# What we tried", "", gen, "", "Each experiment here was measured side by side with "
                                  "what the project ships, and not adopted; the reason leads each section.", "",
                                  *_tried_sections()]}
    for name, lines in pages.items():
        (DOCS / name).write_text("\n".join(lines))
        print(f"wrote {DOCS / name}")
    _write_readme_table(headline_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
