"""`selfment plan`: predicted store sizes against stores actually written, the paper preset offline."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.core.params import CompressorParams, load_params
from pipeline.features.backbone import backbone_info
from pipeline.project.plan import count_images, plan_stores, store_bytes
from stages.cli import main

ROOT = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def invoke(*args):
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.slow
@pytest.mark.parametrize("codec", [{"name": "none"}, {"name": "blosc", "cname": "zstd", "clevel": 3}])
def test_every_predicted_store_size_is_within_10_percent_of_the_store_written(tmp_path, tiny_model_dir, write_params,
                                                                             codec):
    """The demo set (7 images) through a tiny backbone: training sample, base view and three more views."""
    ds = tmp_path / "ds"
    spec = {"root": str(ds), "images": "images", "masks": "masks"}
    params = write_params(tmp_path / "params.yaml", {
        "demo": {"n_images": 7},
        "data": {"train": {"dataset": spec, "sample_size": 5}, "eval": {"ds": spec}},
        "backbone": {"name": str(tiny_model_dir), "resolution": 112, "device": "cpu"},
        "store": {"images_per_shard": 3, "compressor": codec},
        "predict": {"resolutions": [112, 56], "hflip": True}})
    invoke("demo-data", "--params", str(params), "--out", str(ds))
    p = load_params(params)
    stores = plan_stores(p, backbone_info(str(tiny_model_dir)), count_images(p))
    run = lambda *a: invoke(a[0], "--params", str(params), *a[1:])  # noqa: E731
    run("extract", "--split", "train", "--out", str(tmp_path / "data/features/train.zarr"))
    run("extract", "--split", "eval", "--name", "ds", "--out", str(tmp_path / "data/features/eval/ds.zarr"))
    run("extract", "--split", "eval", "--name", "ds", "--views", "extra", "--out",
        str(tmp_path / "data/features/eval/ds.views"))
    assert [s.path for s in stores] == ["data/features/train.zarr", "data/features/eval/ds.zarr",
                                        "data/features/eval/ds.views/112-hflip.zarr",
                                        "data/features/eval/ds.views/56.zarr", "data/features/eval/ds.views/56-hflip.zarr"]
    assert [s.images for s in stores] == [5, 7, 7, 7, 7] and [s.grid for s in stores] == [8, 8, 8, 4, 4]
    for s in stores:
        actual = du(tmp_path / s.path)
        assert abs(s.bytes / actual - 1) < 0.10, (s.path, s.bytes, actual)


def test_store_bytes_follow_the_layout():
    """Hand count for 10 images of 4 x 4 tokens of width 8 in shards of 4, uncompressed: features and CLS
    float16, two shard indices of 16 bytes per image and 4 per shard, 41 bytes per shard of sizes,
    shard_crc and shard_done, the metadata and the stems' JSON."""
    none = CompressorParams(name="none")
    data = 2 * 10 * 8 * (16 + 1)
    assert store_bytes(10, 4, 8, 4, none, 100) == data + 2 * (16 * 10 + 4 * 3) + 41 * 3 + 4339 + 1150 + 100 + 8 * 10


def test_the_paper_preset_plans_offline_from_published_sizes(tmp_path):
    params = tmp_path / "paper.yaml"
    invoke("configure", "--configs", str(ROOT / "configs"), "--datasets", str(tmp_path / "absent"),
           "--out", str(params), "backbone/dinov3-vit7b16", "data/paper", "scale/paper")
    out = invoke("plan", "--params", str(params))
    assert "| data/features/eval/DUTS-TE.zarr | 5019 (published) | 768 px | 2304 | 5019 |" in out
    assert "**18789**" in out  # 1000 training + 17789 evaluation images, one view each
    assert "N = 2304 patches" in out and "2304 tokens x 4096" in out
    text = params.read_text().replace("cache_features: true", "cache_features: false")
    params.write_text(text)
    out = invoke("plan", "--params", str(params))
    assert "| data/features/eval/DUTS-TE.zarr | 5019 (published) | 768 px | 2304 | 5019 | 0.00 | no store |" in out
    assert "**16.96 GB**" in out  # the training store only
