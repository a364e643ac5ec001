"""Feature extraction into the store: the model's own tokens, resume after a crash, ranks, the CLI."""
import os
import socket
import subprocess

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner

from pipeline.core.datasets import load_image, resolve
from pipeline.core.params import CompressorParams, DatasetSpec
from pipeline.features.backbone import load_backbone, preprocess
from pipeline.features.extract import extract_dataset, make_spec
from pipeline.features.store import FeatureStore, StoreError, StoreWriter
from pipeline.features.views import View
from stages.extract import extract

DS = {"images": "images", "masks": "masks"}


def setup(root, model_dir, ips=3, compressor=CompressorParams(name="blosc", cname="lz4")):
    """Samples of root/ds, the tiny backbone saved in model_dir, and a store spec (also in spawned ranks)."""
    samples = resolve(DatasetSpec(root=str(root / "ds"), **DS))
    b = load_backbone(str(model_dir), device="cpu")
    return samples, b, make_spec(samples, b, View(56), ips, compressor, "float32")


def free_port() -> int:
    with socket.socket() as s:  # torchrun's --master_port=0 hangs the rendezvous: pick a free port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingBackbone:
    """Wraps a backbone and counts the images it was asked to encode."""

    def __init__(self, b):
        self.b, self.images = b, 0

    def __getattr__(self, name):
        return getattr(self.b, name)

    def __call__(self, x):
        self.images += len(x)
        return self.b(x)


@pytest.mark.parametrize("compressor", [CompressorParams(name="none"), CompressorParams(name="blosc", cname="zstd"),
                                        CompressorParams(name="zstd")])
def test_store_holds_the_models_patch_tokens_cls_sizes_and_attributes(tmp_path, tiny_model_dir, write_pairs,
                                                                      compressor):
    write_pairs(tmp_path / "ds", n=7)
    samples, b, spec = setup(tmp_path, tiny_model_dir, compressor=compressor)
    assert extract_dataset(samples, b, tmp_path / "f.zarr", spec, batch_size=2, progress=False) == 3
    st = FeatureStore(tmp_path / "f.zarr")
    assert st.stems == [s.stem for s in samples] and st.grid == (4, 4) and st.dim == 32
    for i in (0, 4, 6):  # first, middle and last (partial) shard
        x = torch.from_numpy(preprocess(load_image(samples[i].image), 56))[None]
        tokens = b.model(pixel_values=x).last_hidden_state[0].detach().numpy()
        np.testing.assert_allclose(st.features(i).astype(np.float32), tokens[1:].reshape(4, 4, 32), atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(st.cls(i).astype(np.float32), tokens[0], atol=2e-3, rtol=2e-3)
    assert st.sizes().tolist() == [[45, 60]] * 7
    assert st.attrs["backbone"] == str(tiny_model_dir) and st.attrs["resolution"] == 56 and st.attrs["patch_size"] == 14
    assert st.features(0).dtype == np.float16 and set(st.attrs["versions"]) >= {"torch", "zarr"}


def test_interrupted_extraction_resumes_without_redoing_finished_shards(tmp_path, tiny_model_dir, write_pairs,
                                                                       monkeypatch):
    write_pairs(tmp_path / "ds", n=7)
    samples, b, spec = setup(tmp_path, tiny_model_dir, ips=3)
    real_write = StoreWriter.write_shard

    def crash_on_shard_1(self, k, *a):
        if k == 1:
            raise KeyboardInterrupt("killed")
        real_write(self, k, *a)

    monkeypatch.setattr(StoreWriter, "write_shard", crash_on_shard_1)
    with pytest.raises(KeyboardInterrupt):
        extract_dataset(samples, b, tmp_path / "f.zarr", spec, batch_size=2, progress=False)
    with pytest.raises(StoreError, match="incomplete"):  # never reads as complete
        FeatureStore(tmp_path / "f.zarr")
    monkeypatch.setattr(StoreWriter, "write_shard", real_write)

    counting = CountingBackbone(b)
    assert extract_dataset(samples, counting, tmp_path / "f.zarr", spec, batch_size=2, progress=False) == 2
    assert counting.images == 4  # shards 1 and 2 (3 + 1 images); shard 0 was kept
    again = CountingBackbone(b)
    assert extract_dataset(samples, again, tmp_path / "f.zarr", spec, progress=False) == 0 and again.images == 0

    fresh = tmp_path / "fresh.zarr"
    extract_dataset(samples, b, fresh, spec, batch_size=2, progress=False)
    for i in range(7):
        np.testing.assert_array_equal(FeatureStore(tmp_path / "f.zarr").features(i), FeatureStore(fresh).features(i))


def test_a_store_built_with_other_settings_is_rebuilt_not_resumed(tmp_path, tiny_model_dir, write_pairs):
    write_pairs(tmp_path / "ds", n=4)
    samples, b, spec = setup(tmp_path, tiny_model_dir, ips=2)
    extract_dataset(samples, b, tmp_path / "f.zarr", spec, progress=False)
    spec28 = make_spec(samples, b, View(28), 2, spec.compressor, "float32")
    assert extract_dataset(samples, b, tmp_path / "f.zarr", spec28, progress=False) == 2
    assert FeatureStore(tmp_path / "f.zarr").grid == (2, 2)


def _rank_main(rank, world, root, model_dir, port):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    samples, b, spec = setup(root, model_dir, ips=2)
    counting = CountingBackbone(b)
    extract_dataset(samples, counting, root / "ddp.zarr", spec, rank=rank, world_size=world,
                    barrier=dist.barrier, progress=False)
    (root / f"rank{rank}.count").write_text(str(counting.images))
    dist.destroy_process_group()


def test_two_gloo_ranks_write_disjoint_shards_that_equal_a_single_process_store(tmp_path, tiny_model_dir,
                                                                                  write_pairs):
    write_pairs(tmp_path / "ds", n=7)  # once, before the ranks read it
    mp.spawn(_rank_main, args=(2, tmp_path, tiny_model_dir, free_port()), nprocs=2, join=True)
    counts = [int((tmp_path / f"rank{r}.count").read_text()) for r in range(2)]
    assert counts == [2 + 2, 2 + 1]  # rank 0: shards 0, 2; rank 1: shards 1, 3 (last has 1 image)
    samples, b, spec = setup(tmp_path, tiny_model_dir, ips=2)
    extract_dataset(samples, b, tmp_path / "single.zarr", spec, progress=False)
    ddp, single = FeatureStore(tmp_path / "ddp.zarr"), FeatureStore(tmp_path / "single.zarr")
    for i in range(7):
        np.testing.assert_array_equal(ddp.features(i), single.features(i))


@pytest.mark.real
def test_extract_stage_on_real_images_stores_the_shared_models_tokens(tmp_path, shared_model, shared_duts,
                                                                      write_params):
    """The CLI end to end on 3 real DUTS-TR images with the real ViT-S/14, offline."""
    params = write_params(tmp_path / "p.yaml", {
        "data": {"train": {"dataset": {"root": str(shared_duts), "preset": "DUTS-TR"}, "sample_size": 3}},
        "backbone": {"name": str(shared_model), "resolution": 224, "batch_size": 2, "workers": 2, "device": "cpu"},
        "store": {"images_per_shard": 2}})
    r = CliRunner().invoke(extract, ["--params", str(params), "--split", "train", "--out", str(tmp_path / "t.zarr")])
    assert r.exit_code == 0, r.output
    st = FeatureStore(tmp_path / "t.zarr")
    b = load_backbone(str(shared_model), device="cpu")
    sample = next(s for s in resolve(DatasetSpec(root=str(shared_duts), preset="DUTS-TR")) if s.stem == st.stems[2])
    patches, _ = b(torch.from_numpy(preprocess(load_image(sample.image), 224))[None])
    np.testing.assert_allclose(st.features(2).astype(np.float32), patches[0].numpy(), atol=1e-2, rtol=1e-2)


@pytest.mark.slow
def test_extract_stage_under_torchrun_with_two_cpu_ranks(tmp_path, tiny_model_dir, write_pairs, write_params):
    """`torchrun --nproc_per_node=2 --no-python selfment extract`: the launch the README documents."""
    write_pairs(tmp_path / "ds", n=5)
    params = write_params(tmp_path / "p.yaml", {
        "data": {"train": {"dataset": {"root": str(tmp_path / "ds"), **DS}}},
        "backbone": {"name": str(tiny_model_dir), "resolution": 56, "batch_size": 2, "workers": 2, "device": "cpu"},
        "store": {"images_per_shard": 2, "compressor": {"name": "none"}}})
    r = subprocess.run(["torchrun", "--nproc_per_node=2", f"--master_port={free_port()}", "--no-python", "selfment",
                        "extract", "--params", str(params), "--split", "train", "--out", str(tmp_path / "t.zarr")],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3 shards (2 written by rank 0)" in r.stdout and "3 shards (1 written by rank 1)" in r.stdout
    samples, b, spec = setup(tmp_path, tiny_model_dir, ips=2, compressor=CompressorParams(name="none"))
    extract_dataset(samples, b, tmp_path / "single.zarr", spec, progress=False)
    for i in range(5):
        np.testing.assert_array_equal(FeatureStore(tmp_path / "t.zarr").features(i),
                                      FeatureStore(tmp_path / "single.zarr").features(i))


@pytest.mark.slow
def test_a_backbone_of_the_papers_width_extracts_in_bfloat16(tmp_path, write_pairs, write_params):
    """One block of ViT-7B/16's width and layout (random weights, saved in bfloat16): the extract stage
    stores (n, 16, 4096) float16 features equal to the model's own tokens, and the head built on them
    has the paper's 0.54M parameters."""
    from transformers import DINOv3ViTModel

    from pipeline.features.backbone import vit7b16_config
    from pipeline.head.model import Head

    torch.manual_seed(0)
    DINOv3ViTModel(vit7b16_config(layers=1)).to(torch.bfloat16).eval().save_pretrained(tmp_path / "m")
    write_pairs(tmp_path / "ds", n=2)
    params = write_params(tmp_path / "p.yaml", {
        "data": {"train": {"dataset": {"root": str(tmp_path / "ds"), **DS}}},
        "backbone": {"name": str(tmp_path / "m"), "resolution": 64, "dtype": "bfloat16", "batch_size": 2,
                     "device": "cpu"}})
    r = CliRunner().invoke(extract, ["--params", str(params), "--split", "train", "--out", str(tmp_path / "t.zarr")])
    assert r.exit_code == 0, r.output
    st = FeatureStore(tmp_path / "t.zarr")
    assert (len(st), st.grid, st.dim, st.attrs["model_dtype"]) == (2, (4, 4), 4096, "bfloat16")
    b = load_backbone(str(tmp_path / "m"), "bfloat16", device="cpu")
    image = load_image(resolve(DatasetSpec(root=str(tmp_path / "ds"), **DS))[1].image)
    patches, _ = b(torch.from_numpy(preprocess(image, 64))[None])
    np.testing.assert_allclose(st.features(1).astype(np.float32), patches[0].float().numpy(), atol=2e-2, rtol=2e-2)
    assert sum(p.numel() for p in Head(st.dim).parameters()) == 541_186


@pytest.mark.slow
def test_the_timing_file_splits_the_stage_into_start_up_forward_and_the_rest(tmp_path, tiny_model_dir, write_pairs,
                                                                              write_params):
    """A fresh process (as DVC runs it): start-up and the backbone forward are parts of the stage's wall time."""
    import json
    import sys
    write_pairs(tmp_path / "ds", n=3)
    params = write_params(tmp_path / "p.yaml", {
        "data": {"train": {"dataset": {"root": str(tmp_path / "ds"), **DS}}},
        "backbone": {"name": str(tiny_model_dir), "resolution": 56, "device": "cpu"}})
    r = subprocess.run([sys.executable, "-m", "stages.cli", "extract", "--params", str(params), "--split", "train",
                        "--out", str(tmp_path / "t.zarr"), "--timing", str(tmp_path / "time.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    t = json.loads((tmp_path / "time.json").read_text())
    assert set(t) == {"wall_s", "startup_s", "forward_s"}
    assert 0.2 < t["startup_s"] < t["wall_s"]  # importing torch alone takes longer than 0.2 s
    assert 0 < t["forward_s"] < t["wall_s"] - t["startup_s"]
