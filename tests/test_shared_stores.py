"""Stores shared by every experiment of a DVC repository (pipeline/features/shared.py, extract, `selfment stores`):
written once under their fingerprint, each output a tree of hard links to them, damage seen and repaired,
unused stores listed and pruned."""
import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from pipeline.features.shared import link_tree, shared_root, used
from stages.cli import main

pytestmark = pytest.mark.slow


def sh(cwd, *args):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})


def test_a_link_tree_mirrors_its_source_and_keeps_what_is_already_linked(tmp_path):
    src, dst = tmp_path / "s.zarr", tmp_path / "d.zarr"
    (src / "c/0").mkdir(parents=True)
    for f, text in (("zarr.json", "{}"), ("c/0/a", "a"), ("c/0/b", "b")):
        (src / f).write_text(text)
    assert link_tree(src, dst) == 3
    assert all(os.path.samefile(src / f, dst / f) for f in ("zarr.json", "c/0/a", "c/0/b"))
    assert link_tree(src, dst) == 0  # nothing to do
    (src / "c/0/b").unlink()
    (src / "c/0/b2").write_text("new")  # the writer renames new files into place: new inodes
    (dst / "c/0/a").unlink()
    (dst / "stray").write_text("x")
    assert link_tree(src, dst) == 2
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == ["c/0/a", "c/0/b2", "zarr.json"]
    assert os.path.samefile(src / "c/0/b2", dst / "c/0/b2")
    assert shared_root(tmp_path) is None  # no DVC repository here


@pytest.fixture
def repo(tmp_path, tiny_model_dir, write_pairs, write_params):
    root = tmp_path / "repo"
    root.mkdir()
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    spec = {"root": str(write_pairs(tmp_path / "ds", n=5, size=(60, 44))), "images": "images", "masks": "masks"}
    write_params(root / "params.yaml", {"data": {"train": {"dataset": spec}, "eval": {"ds": spec}},
                                        "backbone": {"name": str(tiny_model_dir), "resolution": 56, "device": "cpu"},
                                        "store": {"images_per_shard": 2}})
    return root


def extract(root, out, *args):
    r = CliRunner().invoke(main, ["extract", "--params", str(root / "params.yaml"), "--split", "train",
                                  "--out", str(root / out), "--manifest", str(root / f"{out}.json"), *args],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_a_store_is_written_once_linked_into_each_output_and_repaired_when_damaged(repo, monkeypatch):
    import stages.extract as stage

    root = shared_root(repo)
    assert root == repo / ".dvc/cache/selfment/stores"
    out = extract(repo, "a.zarr")
    assert "3 written" in out and "shared store" in out
    (store,) = root.glob("*.zarr")
    fp = store.name.removesuffix(".zarr")
    assert json.loads((repo / "a.zarr.json").read_text()) == {str(repo / "a.zarr"): fp}
    files = sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file())
    assert all(os.path.samefile(store / f, repo / "a.zarr" / f) for f in files)  # one copy on disk

    # another output (a queued experiment's copy of the repository): nothing extracted, the model never loaded
    monkeypatch.setattr(stage, "load_backbone", lambda *a, **k: pytest.fail("model loaded for a complete store"))
    out = extract(repo, "b.zarr")
    assert "0 written" in out and f"{len(files)} files linked" in out
    assert all(os.path.samefile(store / f, repo / "b.zarr" / f) for f in files)

    # a shard deleted in an output is linked again; a shard damaged in place (both names) is rewritten
    shard = next(f for f in files if str(f).startswith("features/c/1"))
    (repo / "b.zarr" / shard).unlink()
    assert "0 written" in extract(repo, "b.zarr") and os.path.samefile(store / shard, repo / "b.zarr" / shard)
    with open(repo / "a.zarr" / shard, "r+b") as f:
        f.seek(100)
        f.write(b"\x7f" * 8)
    monkeypatch.undo()
    assert "1 written" in extract(repo, "a.zarr")
    from pipeline.features.store import FeatureStore

    FeatureStore(repo / "a.zarr").features(2)  # checked against its checksum: intact again
    assert os.path.samefile(store / shard, repo / "a.zarr" / shard)
    assert not os.path.samefile(store / shard, repo / "b.zarr" / shard)  # b still links the damaged file


def test_stores_lists_what_uses_each_store_and_prunes_only_the_unused(repo):
    extract(repo, "a.zarr")
    (repo / "data/stores").mkdir(parents=True)
    (repo / "a.zarr.json").rename(repo / "data/stores/a.json")
    sh(repo, "git", "add", "data/stores/a.json")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "a")
    sh(repo, "git", "rm", "-q", "data/stores/a.json")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "no store")
    sh(repo, "git", "branch", "old", "HEAD~1")
    (store,) = shared_root(repo).glob("*.zarr")
    fp = store.name.removesuffix(".zarr")
    assert used(repo) == {fp: ["old"]}  # the branch's manifest; the workspace has none now
    r = CliRunner().invoke(main, ["stores", "--repo", str(repo)])
    assert r.exit_code == 0 and f"{fp[:12]}" in r.output and "used by old" in r.output
    sh(repo, "git", "branch", "-D", "old")
    (shared_root(repo) / "partial.zarr").mkdir()
    r = CliRunner().invoke(main, ["stores", "--repo", str(repo), "--prune"])
    assert r.exit_code == 0 and "unused: removed" in r.output, r.output
    assert not store.exists() and (repo / "a.zarr/zarr.json").is_file()  # the workspace's links keep their data
    assert (shared_root(repo) / "partial.zarr").is_dir()  # not a store: left alone
