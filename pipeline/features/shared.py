"""Feature stores shared by every experiment of a DVC repository (docs/data.md "Stores shared by experiments").

A store is written once, under ``<DVC cache dir>/selfment/stores/<fingerprint>.zarr``: the fingerprint is
everything that determines its content (:class:`~pipeline.features.store.StoreSpec`), so equal params find
the same store. The stage's output (``data/features/train.zarr``) is a tree of hard links to it: one copy on
disk, read like any store, hashed by DVC, so ``dvc status`` still sees a file damaged or deleted. Queued
experiments run in a fresh copy of the repository whose DVC cache is the workspace's (DVC points it there),
so they find the stores and extract nothing. Each extract stage also writes a small manifest (output path ->
fingerprint), tracked by git, from which :func:`used` tells which stores any branch, tag or experiment uses.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

from pipeline.core.errors import PipelineError

STORES = Path("selfment") / "stores"


def shared_root(where: Path | str) -> Path | None:
    """The shared store folder of the DVC repository holding ``where``, or None outside any (stores are then
    written where their stage puts them)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    where = Path(where).resolve()
    start = next(p for p in [where, *where.parents] if p.exists())
    try:
        with Repo(Repo.find_root(str(start))) as repo:
            return Path(repo.cache.local_cache_dir) / STORES
    except NotDvcRepoError:
        return None


def link_tree(src: Path, dst: Path) -> int:
    """Make ``dst`` hold exactly the files of ``src``, as hard links (symbolic links where the two folders are
    on different file systems). Files already linked are kept, others replaced (the writer renames new files
    into place, so a rewritten file is a new one), files ``src`` lacks removed; the top-level ``zarr.json`` is
    linked last, so a tree cut short is never a complete store. Returns how many links were made."""
    files = sorted((Path(f).relative_to(src) / n for f, _, names in os.walk(src) for n in names),
                   key=lambda r: (r == Path("zarr.json"), str(r)))
    made = 0
    for rel in files:
        s, d = src / rel, dst / rel
        if d.exists() and os.path.samefile(s, d):
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        d.unlink(missing_ok=True)
        try:
            os.link(s, d)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            d.symlink_to(s.resolve())
        made += 1
    wanted = set(files)
    for folder, _, names in os.walk(dst, topdown=False):
        for n in names:
            if (Path(folder) / n).relative_to(dst) not in wanted:
                (Path(folder) / n).unlink()
        if Path(folder) != dst and not any(Path(folder).iterdir()):
            Path(folder).rmdir()
    return made


def used(repo: Path, manifests: str = "data/stores") -> dict[str, list[str]]:
    """Fingerprint -> where it is used (``workspace``, or the branch, tag or experiment ref), from the
    manifests under ``manifests`` in the workspace and at the tip of every ref of the git repository."""
    out: dict[str, list[str]] = {}

    def add(text: str, where: str) -> None:
        for fp in json.loads(text).values():
            out.setdefault(fp, []).append(where)

    for f in sorted((repo / manifests).rglob("*.json")):
        add(f.read_text(), "workspace")

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        if r.returncode != 0:
            raise PipelineError(f"{repo}: git {args[0]} failed: {r.stderr.strip().splitlines()[-1]}")
        return r.stdout

    refs = git("for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags", "refs/exps").split()
    for ref in refs:
        for path in git("ls-tree", "-r", "--name-only", ref, "--", manifests).split():
            name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
            add(git("show", f"{ref}:{path}"), f"experiment {ref.rsplit('/', 1)[-1]}" if name.startswith("refs/exps/")
                else name)
    return out


def size_bytes(store: Path) -> int:
    return sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
