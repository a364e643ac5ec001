"""What `dvc exp run -S ipo.iters=10` costs after a committed baseline (docs/benchmarks.md "An IPO experiment").

    python benchmarks/exp_ipo.py --train ../shared/datasets/DUTS-TR --eval ../shared/datasets/DUTS-TE \
        --backbone ../shared/models/dinov2-small-imgfocus --resolution 448 --work /tmp/selfment-exp

In a fresh copy of this repository (git + DVC): params.yaml's data are 1000 DUTS-TR training images
(``data.train.sample_size``) and the DUTS-TE pairs of ``--eval`` (official layout), the backbone and the
resolution are the arguments'. ``dvc repro`` runs the baseline, which is committed; then
``dvc exp run -S ipo.iters=10`` is timed. Prints (and writes to ``<work>/exp_ipo.json``) the experiment's wall
time, each stage it ran with its share, and DVC's own share (the total minus the stages).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from dvc_run import project_copy, repro


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=Path, required=True, help="DUTS-TR (official layout)")
    ap.add_argument("--eval", type=Path, required=True, help="DUTS-TE (official layout)")
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--resolution", type=int, default=448)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--change", default="ipo.iters=10", help="the experiment's -S")
    a = ap.parse_args()
    repo = a.work.resolve() / "repo"
    if repo.exists():
        sys.exit(f"{repo} exists: choose a new --work folder")
    project_copy(repo)
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["data"]["train"]["dataset"] = {"root": str(a.train.resolve()), "preset": "DUTS-TR"}
    p["data"]["train"]["sample_size"] = 1000
    p["data"]["eval"] = {"DUTS-TE": {"root": str(a.eval.resolve()), "preset": "DUTS-TE"}}
    p["demo"]["write"] = []
    p["backbone"].update(name=str(Path(a.backbone).resolve()), resolution=a.resolution, workers=2)
    p["predict"]["resolutions"] = [a.resolution]
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("add", "-A")
    git("-c", "user.name=bench", "-c", "user.email=bench@example.org", "commit", "-qm", "project")
    baseline = repro(repo, a.work.resolve() / "baseline.log")
    git("add", "-A")
    git("-c", "user.name=bench", "-c", "user.email=bench@example.org", "commit", "-qm", "baseline")
    start = time.time()
    t = time.perf_counter()
    with open(a.work.resolve() / "experiment.log", "w") as log:
        code = subprocess.run(["dvc", "exp", "run", "-S", a.change], cwd=repo, stdout=log,
                              stderr=subprocess.STDOUT).returncode
    total = time.perf_counter() - t
    if code != 0:
        sys.exit(f"dvc exp run failed: see {a.work / 'experiment.log'}")
    ran = {f.stem: json.loads(f.read_text()) for f in sorted((repo / "metrics/timing").glob("*.json"),
                                                            key=lambda f: f.stat().st_mtime)
           if f.stat().st_mtime >= start}
    dvc = total - sum(r["wall_s"] for r in ran.values())
    lines = [f"`dvc exp run -S {a.change}`: **{total:.1f} s** (baseline `dvc repro` {baseline:.1f} s)", "",
             "| stage | wall s | share |", "|---|---|---|"]
    lines += [f"| `{k}` | {r['wall_s']:.1f} | {r['wall_s'] / total:.1%} |" for k, r in ran.items()]
    lines.append(f"| DVC (hashing, cache, lock) | {dvc:.1f} | {dvc / total:.1%} |")
    print("\n".join(lines))
    computed = {f: json.loads((repo / f).read_text()) for f in ("metrics/pseudo_masks.json",)
                if (repo / f).is_file()}
    (a.work.resolve() / "exp_ipo.json").write_text(json.dumps(
        {"change": a.change, "seconds": total, "baseline_s": baseline, "dvc_s": dvc, "stages": ran,
         "pseudo_masks_computed": computed.get("metrics/pseudo_masks.json", {}).get("computed")}, indent=1) + "\n")


if __name__ == "__main__":
    main()
