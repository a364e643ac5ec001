"""What DVC itself costs per GB of feature store: hashing (every output) and caching (outputs with the cache).

    python benchmarks/bench_dvc_cache.py --gb 3 [--shard-mb 140] [--jobs 1 2] [--work /tmp/bench-dvc]

In a scratch git + DVC repository, one stage writes ``--gb`` GB of incompressible shard files (like a
float store: features barely compress) and records its own time; ``dvc repro`` is timed around it.
The same stage runs with ``cache: false`` (this project's store outputs) and with DVC's default
cache (a second, copied set of bytes in ``.dvc/cache``). DVC's cost = repro wall time - the command's
time - the same for a stage with a 1-byte output (DVC's start-up). Then ``dvc status`` (the state
database answers from inode/mtime/size) and ``du`` of the repository. ``--jobs`` repeats the uncached
case with DVC's ``core.checksum_jobs`` (hashing threads) set to each value: how hashing scales with cores. The shards were just written, so
DVC reads them from the page cache: the figures are its CPU cost; a store larger than memory is also
bound by the disk's read speed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

WRITER = """import sys, time, os
from pathlib import Path
t = time.perf_counter()
out, n, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
for k in range(n):
    (out / f"shard{k:05d}").write_bytes(os.urandom(size))
Path("writer_s.txt").write_text(str(time.perf_counter() - t))
"""


def repo(path: Path, n: int, size: int, cache: bool, jobs: int | None) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / "writer.py").write_text(WRITER)
    flag = "" if cache else "\n          cache: false"
    (path / "dvc.yaml").write_text(
        f"stages:\n  write:\n    cmd: python writer.py store {n} {size}\n    deps: [writer.py]\n"
        f"    outs:\n      - store:\n          persist: true{flag}\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                *([["dvc", "config", "core.checksum_jobs", str(jobs)]] if jobs else [])):
        subprocess.run(cmd, cwd=path, check=True)


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def measure(work: Path, gb: float, shard_mb: int, cache: bool, jobs: int | None = None) -> dict:
    size = shard_mb * 2**20
    n = max(1, round(gb * 2**30 / size))
    tiny = work / "tiny"
    repo(tiny, 1, 1, cache, jobs)
    startup = timed(["dvc", "repro", "-q"], tiny) - float((tiny / "writer_s.txt").read_text())
    big = work / ("cached" if cache else "uncached")
    repo(big, n, size, cache, jobs)
    total = timed(["dvc", "repro", "-q"], big)
    writer = float((big / "writer_s.txt").read_text())
    status = timed(["dvc", "status", "-q"], big)
    stored = n * size
    result = {"cache": cache, "checksum_jobs": jobs or "default", "gb": stored / 2**30, "files": n, "repro_s": total, "writer_s": writer,
              "dvc_startup_s": startup, "dvc_s": total - writer - startup,
              "dvc_s_per_gb": (total - writer - startup) / (stored / 2**30), "status_s": status,
              "repo_bytes_over_store": du(big) / stored}
    shutil.rmtree(big)
    shutil.rmtree(tiny)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=3.0)
    ap.add_argument("--shard-mb", type=int, default=140, help="file size (a 64-image ViT-S shard at 756 px)")
    ap.add_argument("--jobs", type=int, nargs="*", default=[], help="also uncached with these checksum_jobs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-dvc"))
    a = ap.parse_args()
    if shutil.which("dvc") is None:
        sys.exit("dvc is not on PATH")
    results = [measure(a.work, a.gb, a.shard_mb, cache) for cache in (False, True)]
    results += [measure(a.work, a.gb, a.shard_mb, False, jobs) for jobs in a.jobs]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
