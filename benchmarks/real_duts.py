"""Real-data result of docs/results.md: train on 1000 DUTS-TR images (seed 111), evaluate on 1000 others.

    python benchmarks/real_duts.py --duts ../shared/datasets/DUTS-TR \
        --backbone ../shared/models/dinov2-small-imgfocus --resolution 448 --work /tmp/selfment-duts

Runs ``dvc repro`` in a copy of this repository whose params.yaml differs from the default only in
the data (the evaluation set is a folder of symbolic links to 1000 DUTS-TR pairs outside the training
sample: the first 1000 of the remaining stems in sorted order), the backbone, and the resolution.
Ends with the results table and the per-stage time table of docs/benchmarks.md, where the overhead is
everything but the backbone forward.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from dvc_run import ROOT, project_copy, repro, timing_table

from pipeline.core import datasets
from pipeline.core.params import DatasetSpec


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
    train_spec = {"root": str(a.duts.resolve()), "preset": "DUTS-TR"}
    samples = datasets.resolve(DatasetSpec(**train_spec))
    seed = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["train"]["sample_seed"]
    chosen = {s.stem for s in datasets.sample_subset(samples, a.train_size, seed)}
    held_out = [s for s in samples if s.stem not in chosen][: a.eval_size]
    for sub in ("images", "masks"):
        (work / "duts_eval" / sub).mkdir(parents=True, exist_ok=True)
    for s in held_out:
        for src, sub in ((s.image, "images"), (s.mask, "masks")):
            link = work / "duts_eval" / sub / Path(src).name
            if not link.exists():
                link.symlink_to(Path(src).resolve())
    repo = work / "repo"
    if repo.exists():
        sys.exit(f"{repo} exists: choose a new --work folder")
    project_copy(repo)
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["data"] = {"train": {"dataset": train_spec, "sample_size": a.train_size, "sample_seed": seed},
                 "eval": {"duts_eval": {"root": str(work / "duts_eval"), "images": "images", "masks": "masks"}}}
    p["demo"]["write"] = []  # real data only: no synthetic demo set
    p["backbone"].update(name=str(Path(a.backbone).resolve()), resolution=a.resolution, workers=2)
    p["predict"]["resolutions"] = [a.resolution]
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    total = repro(repo, work / "repro.log")
    table, summary = timing_table(repo, total)
    (work / "timing.json").write_text(json.dumps(summary, indent=1))
    print((repo / "tables/results.md").read_text())
    print(table)


if __name__ == "__main__":
    main()
