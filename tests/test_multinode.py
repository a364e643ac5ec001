"""Two torchrun "nodes" on this machine (node ranks 0 and 1, one process each, a c10d rendezvous on localhost,
gloo): extraction and predict give one process's store and maps, training gives the head of two processes
on one node (docs/params.md "Several machines")."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.features.store import FeatureStore

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(cwd: Path, *args: str) -> str:
    """``selfment ARGS`` as two torchrun nodes of one process each, started together; their output."""
    port, env = free_port(), {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(r),
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t",
                               "--no-python", "selfment", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    return "\n".join(outs)


def one_node(cwd: Path, *args: str, processes: int = 1) -> str:
    launch = ([str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={processes}", "--no-python"]
              if processes > 1 else [])
    r = subprocess.run([*launch, str(BIN / "selfment"), *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r.stdout + r.stderr


def test_two_nodes_extract_train_and_predict_as_one_node_does(tmp_path, tiny_model_dir, write_pairs, write_params):
    spec = {"root": str(write_pairs(tmp_path / "ds", n=6, size=(70, 50))), "images": "images", "masks": "masks"}
    p = write_params(tmp_path / "params.yaml", {
        "data": {"train": {"dataset": spec}, "eval": {"ds": spec}},
        "backbone": {"name": str(tiny_model_dir), "resolution": 112, "device": "cpu", "batch_size": 2},
        "store": {"images_per_shard": 2}, "ipo": {"min_cluster": 3}, "train": {"epochs": 2},
        "pseudo": {"workers": 1}, "predict": {"resolutions": [112], "chunk_size": 2, "workers": 1}})
    par = ["--params", str(p)]
    out = two_nodes(tmp_path, "extract", *par, "--split", "train", "--out", "two.zarr")
    assert "2 written by rank 0" in out and "1 written by rank 1" in out  # three shards, shared in turn
    one_node(tmp_path, "extract", *par, "--split", "train", "--out", "one.zarr")
    a, b = FeatureStore(tmp_path / "two.zarr"), FeatureStore(tmp_path / "one.zarr")
    assert a.stems == b.stems and all(np.array_equal(a.features(i), b.features(i)) for i in range(len(a)))
    one_node(tmp_path, "pseudo-masks", *par, "--features", "one.zarr", "--out", "p.npz", "--grids", "grids",
             "--metrics", "p.json", "--plot", "p.csv")
    train = ["train", *par, "--features", "one.zarr", "--pseudo", "p.npz", "--loss-csv"]
    two_nodes(tmp_path, *train, "l2.csv", "--out", "two.safetensors")
    one_node(tmp_path, *train, "l1.csv", "--out", "one.safetensors", processes=2)
    assert (tmp_path / "two.safetensors").read_bytes() == (tmp_path / "one.safetensors").read_bytes()
    predict = ["predict", *par, "--name", "ds", "--features", "one.zarr", "--head", "one.safetensors", "--out"]
    two_nodes(tmp_path, *predict, "pred2")
    one_node(tmp_path, *predict, "pred1")
    maps = sorted((tmp_path / "pred1").rglob("*.png"))
    assert len(maps) == 5 * 6
    for f in maps:
        assert f.read_bytes() == (tmp_path / "pred2" / f.relative_to(tmp_path / "pred1")).read_bytes(), f
