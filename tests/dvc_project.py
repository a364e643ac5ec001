"""Helpers of the DVC workflow tests: a temporary git + DVC copy of the project with the tiny random backbone,
commands run in it, and dvc.yaml's stage commands run in process."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                       env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def copy_project(dst: Path, tiny_model_dir: Path, edit=lambda p: None) -> Path:
    """The repository's files (no data but its .gitignore, no lock) in ``dst`` as a committed git repo, with the tiny
    backbone at 112 px and ``edit(params)`` applied."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and (not f.startswith(("data/", "dvc.lock")) or f == "data/.gitignore"):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    p = yaml.safe_load((dst / "params.yaml").read_text())
    p["demo"]["n_images"] = 6
    p["backbone"].update(name=str(tiny_model_dir), resolution=112, device="cpu")
    p["predict"]["resolutions"] = [112]
    p["ipo"]["min_cluster"] = 3  # 8 x 8 grids: let IPO run
    p["store"]["images_per_shard"] = 2  # 3 shards: two torchrun ranks share them
    edit(p)
    (dst / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run(["git", "init", "-q"], dst)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dst)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], dst)
    return dst


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def run_stages_in_process(repo: Path, monkeypatch) -> None:
    """Every stage command of the project's dvc.yaml, resolved by DVC and run in dependency order in this
    process (what `dvc repro` runs, without a process and DVC's bookkeeping per stage)."""
    import shlex

    import networkx as nx
    from click.testing import CliRunner
    from dvc.repo import Repo

    from stages.cli import main

    with Repo(str(repo)) as r:
        stages = list(reversed(list(nx.topological_sort(r.index.graph))))
    monkeypatch.chdir(repo)
    for stage in stages:
        program, *args = shlex.split(stage.cmd)
        assert program == "selfment", stage.cmd
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (stage.addressing, result.output, result.exception)
