"""Projects of their own, each built and run from scratch (a file apart from the shared-project workflow tests
of test_dvc_pipeline.py, so that a second pytest worker takes them): the benchmark script's real-data run,
and file names that other tools read as numbers."""
import json
import os
import subprocess

import numpy as np
import pytest
from dvc_project import ROOT, copy_project, run_stages_in_process

from pipeline.features.store import FeatureStore

pytestmark = pytest.mark.slow


def test_the_readmes_real_data_run_reproduces_end_to_end(tmp_path, tiny_model_dir, write_pairs):
    """benchmarks/real_duts.py on a small DUTS-TR-layout set: dvc repro in a copy of the project, the
    results table, and the per-stage times adding up to the run."""
    import sys

    duts = write_pairs(tmp_path / "DUTS-TR", n=7, size=(70, 50), images="DUTS-TR-Image", masks="DUTS-TR-Mask")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/real_duts.py"), "--duts", str(duts),
                        "--backbone", str(tiny_model_dir), "--resolution", "112", "--train-size", "4",
                        "--eval-size", "3", "--work", str(tmp_path / "w")], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "NCut + IPO" in r.stdout and "overhead (all but the forward)" in r.stdout
    summary = json.loads((tmp_path / "w/timing.json").read_text())
    per_set = ("extract_eval", "extract_views", "predict", "evaluate")
    assert set(summary["stages"]) == {"extract_train", "pseudo_masks", "train", "self_train", "export", "report",
                                      "plots_page",
                                      *(f"{s}.duts_eval" for s in per_set)}
    stage_time = sum(t["wall_s"] for t in summary["stages"].values())
    assert 0 < summary["forward_s"] < stage_time < summary["seconds"]
    assert summary["dvc_s"] == pytest.approx(summary["seconds"] - stage_time)
    assert len(FeatureStore(tmp_path / "w/repo/data/features/eval/duts_eval.zarr")) == 3


NUMERIC = ["0001", "0010", "223061", "12"]           # ECSSD, HKU-IS, PASCAL-S name their files so
MIXED = ["1.5", "a b", "ü", "0002", "NA"]


def test_numeric_and_unusual_file_names_pass_every_stage_unchanged(tmp_path, tiny_model_dir, write_pairs,
                                                                    monkeypatch):
    """Sets whose stems are all numbers (pandas would read them as integers) or text that pandas reads
    as a number or a missing value: every stage of dvc.yaml ends, and every per-image output carries the
    stem as the file names it."""
    from pipeline.core.files import read_image_table

    sets = {"numeric": NUMERIC, "mixed": MIXED}
    for name, stems in sets.items():
        write_pairs(tmp_path / name, size=(70, 50), stems=stems)

    def edit(p):
        spec = {n: {"root": str(tmp_path / n), "images": "images", "masks": "masks"} for n in sets}
        p["demo"]["write"] = []
        p["data"] = {"train": {"dataset": spec["numeric"], "sample_size": 4, "sample_seed": 111}, "eval": spec}

    repo = copy_project(tmp_path / "repo", tiny_model_dir, edit)
    run_stages_in_process(repo, monkeypatch)
    with np.load(repo / "data/pseudo/masks.npz") as z:
        assert sorted(z["stems"]) == sorted(NUMERIC)
    assert FeatureStore(repo / "data/features/train.zarr").stems == sorted(NUMERIC)
    for name, stems in sets.items():
        for method in ("cls", "kmeans", "ncut", "ncut_ipo", "head"):
            assert sorted(p.stem for p in (repo / f"data/predictions/{name}/{method}").glob("*.png")) == sorted(stems)
        assert sorted(read_image_table(repo / f"metrics/eval/{name}.images.csv").index) == sorted(stems)
        assert (repo / f"plots/panels/{name}.png").is_file()
    results = json.loads((repo / "metrics/results.json").read_text())
    assert set(results) == set(sets)
    table = (repo / "tables/results.md").read_text().splitlines()
    assert all(any(row.startswith(f"| {n} ") and "| NCut + IPO " in row for row in table) for n in sets)
