"""The DVC workflow on a temporary git + DVC copy of the project (tiny random backbone, tiny demo)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                       env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir_module):
    dst = tmp_path_factory.mktemp("proj")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("data/", "dvc.lock")):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    p = yaml.safe_load((dst / "params.yaml").read_text())
    p["demo"]["n_images"] = 6
    p["backbone"].update(name=str(tiny_model_dir_module), resolution=56, eval_resolution=56, device="cpu")
    (dst / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run(["git", "init", "-q"], dst)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dst)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], dst)
    return dst


@pytest.fixture(scope="module")
def tiny_model_dir_module(tmp_path_factory):
    from conftest import tiny_dinov2

    d = tmp_path_factory.mktemp("tiny")
    tiny_dinov2().save_pretrained(d)
    return d


def test_repro_builds_stores_then_is_a_no_op(project):
    out = run(["dvc", "repro"], project)
    assert "Running stage 'extract_train'" in out and "Running stage 'extract_eval@demo'" in out
    st = FeatureStore(project / "data/features/train.zarr")
    assert len(st) == 6 and st.grid == (4, 4)
    again = run(["dvc", "repro"], project)
    assert "Running stage" not in again
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project)


def test_changing_the_resolution_re_extracts(project):
    out = run(["dvc", "exp", "run", "-S", "backbone.resolution=28"], project)
    assert "Running stage 'extract_train'" in out and "Running stage 'extract_eval@demo'" not in out
    assert FeatureStore(project / "data/features/train.zarr").grid == (2, 2)
