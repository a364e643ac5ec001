"""Real-data result of the README: train on 1000 DUTS-TR images (seed 111), evaluate on 1000 others.

    python benchmarks/real_duts.py --duts ../shared/datasets/DUTS-TR \
        --backbone ../shared/models/dinov2-small-imgfocus --resolution 448 --work /tmp/selfment-duts

Runs the pipeline's own stage commands with a params file derived from params.yaml (nothing else
changes): the evaluation set is a folder of symbolic links to 1000 DUTS-TR pairs outside the training
sample (the first 1000 of the remaining stems in sorted order). Stages resume when re-run. Each stage
records its wall time (``--timing``); the run ends with the per-stage table of the README, where the
overhead is everything but the backbone forward.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import yaml

from pipeline import datasets
from pipeline.params import DatasetSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duts", type=Path, required=True)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--resolution", type=int, default=448)
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--eval-size", type=int, default=1000)
    ap.add_argument("--work", type=Path, required=True)
    a = ap.parse_args()
    work = a.work.resolve()
    p = yaml.safe_load(open("params.yaml"))
    train_spec = {"root": str(a.duts.resolve()), "preset": "DUTS-TR"}
    samples = datasets.resolve(DatasetSpec(**train_spec))
    chosen = {s.stem for s in datasets.sample_subset(samples, a.train_size, p["data"]["train"]["sample_seed"])}
    held_out = [s for s in samples if s.stem not in chosen][: a.eval_size]
    for sub in ("images", "masks"):
        (work / "duts_eval" / sub).mkdir(parents=True, exist_ok=True)
    for s in held_out:
        for src, sub in ((s.image, "images"), (s.mask, "masks")):
            link = work / "duts_eval" / sub / Path(src).name
            if not link.exists():
                link.symlink_to(Path(src).resolve())
    p["data"] = {"train": {"dataset": train_spec, "sample_size": a.train_size, "sample_seed": 111},
                 "eval": {"duts_eval": {"root": str(work / "duts_eval"), "images": "images", "masks": "masks"}}}
    p["backbone"].update(name=a.backbone, resolution=a.resolution, workers=2)
    p["predict"]["resolutions"] = [a.resolution]
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    f, q = str(work / "features"), ["--params", str(params)]
    steps = {
        "extract_train": ["extract", *q, "--split", "train", "--out", f"{f}/train.zarr"],
        "extract_eval": ["extract", *q, "--split", "eval", "--name", "duts_eval", "--out", f"{f}/eval/duts_eval.zarr"],
        "pseudo_masks": ["pseudo-masks", *q, "--features", f"{f}/train.zarr", "--out", f"{work}/pseudo/masks.npz",
            "--metrics", f"{work}/metrics/pseudo_masks.json", "--plot", f"{work}/plots/ipo_convergence.csv"],
        "train": ["train", *q, "--features", f"{f}/train.zarr", "--pseudo", f"{work}/pseudo/masks.npz",
            "--out", f"{work}/models/head.safetensors", "--loss-csv", f"{work}/plots/train_loss.csv"],
        "predict_bipartitions": ["predict", *q, "--maps", "bipartitions", "--features", f"{f}/eval/duts_eval.zarr",
            "--out", f"{work}/predictions/duts_eval"],
        "predict_head": ["predict", *q, "--maps", "head", "--name", "duts_eval", "--features", f"{f}/eval/duts_eval.zarr",
            "--head", f"{work}/models/head.safetensors", "--out", f"{work}/predictions/duts_eval"],
        "evaluate": ["evaluate", *q, "--name", "duts_eval", "--predictions", f"{work}/predictions/duts_eval",
            "--metrics", f"{work}/metrics/eval/duts_eval.json", "--pr", f"{work}/plots/pr/duts_eval"],
        "report": ["report", *q, "--metrics-dir", f"{work}/metrics/eval", "--predictions", f"{work}/predictions",
            "--tables", f"{work}/tables", "--summary", f"{work}/metrics/results.json", "--panels", f"{work}/plots/panels"],
    }
    rows = []
    for name, step in steps.items():
        step += ["--timing", f"{work}/metrics/timing/{name}.json"]
        print("+ selfment", " ".join(step), flush=True)
        t = time.perf_counter()
        subprocess.run(["selfment", *step], check=True)
        wall = time.perf_counter() - t
        rows.append({**json.loads(Path(step[-1]).read_text()), "stage": name, "wall_s": wall})
    table = timing_table(rows)
    (work / "tables").mkdir(exist_ok=True)
    (work / "tables" / "timing.md").write_text(table + "\n")
    print(table)


def timing_table(rows: list[dict]) -> str:
    """Per-stage wall time as the driver saw it (process start to exit), the stage's own start-up and
    backbone forward, and the overhead: everything but the forward, as a share of the whole run."""
    total = sum(r["wall_s"] for r in rows)
    forward = sum(r.get("forward_s", 0.0) for r in rows)
    lines = ["| stage | wall s | start-up s | backbone forward s | share of run |", "|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | {r.get('forward_s', 0.0):.1f} | "
              f"{r['wall_s'] / total:.1%} |" for r in rows]
    lines.append(f"| **all** | **{total:.1f}** | {sum(r['startup_s'] for r in rows):.1f} | {forward:.1f} | "
                 f"overhead **{1 - forward / total:.1%}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
