"""`dvc repro` in a copy of this repository, timed stage by stage (shared by the end-to-end benchmarks).

Every stage writes ``metrics/timing/<stage>.json`` (``--timing``: wall time, start-up, backbone
forward); what ``dvc repro`` spends outside the stages (hashing, caching, locking) is its total wall
time minus theirs.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_copy(dst: Path) -> None:
    """The repository's files (tracked or not ignored; no data but its .gitignore, no lock) in ``dst``, as a fresh
    git repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (not f.startswith(("data/", "dvc.lock")) or f == "data/.gitignore") and (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)


def repro(repo: Path, log: Path) -> float:
    """Wall seconds of ``dvc repro`` in ``repo`` (its output goes to ``log``); exits on failure."""
    t = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(["dvc", "repro"], cwd=repo, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"dvc repro failed in {repo}: see {log}")
    return time.perf_counter() - t


def timing_table(repo: Path, total: float) -> tuple[str, dict]:
    """Markdown table of every stage's wall time, start-up and backbone forward, DVC's own share, and
    the overhead (everything but the forward) as a share of the whole ``dvc repro``."""
    files = sorted((repo / "metrics/timing").glob("*.json"), key=lambda p: p.stat().st_mtime)  # in run order
    rows = {p.stem: json.loads(p.read_text()) for p in files}
    forward = sum(r.get("forward_s", 0.0) for r in rows.values())
    dvc = total - sum(r["wall_s"] for r in rows.values())
    lines = ["| stage | wall s | start-up s | backbone forward s | share of the run |", "|---|---|---|---|---|"]
    lines += [f"| `{k}` | {r['wall_s']:.1f} | {r['startup_s']:.1f} | {r.get('forward_s', 0.0):.1f} | "
              f"{r['wall_s'] / total:.1%} |" for k, r in rows.items()]
    lines.append(f"| DVC (hashing, cache, lock) | {dvc:.1f} | | | {dvc / total:.1%} |")
    lines.append(f"| **dvc repro** | **{total:.1f}** | {sum(r['startup_s'] for r in rows.values()):.1f} | "
                 f"{forward:.1f} | overhead (all but the forward) **{1 - forward / total:.1%}** |")
    summary = {"seconds": total, "forward_s": forward, "dvc_s": dvc, "overhead": 1 - forward / total, "stages": rows}
    return "\n".join(lines), summary
