"""Stage commands on a small on-disk dataset with a tiny random backbone (CliRunner, in process)."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from conftest import tiny_dinov2, write_pairs
from pipeline.backbone import from_model
from pipeline.bipartition import all_methods
from pipeline.datasets import resolve
from pipeline.extract import extract_dataset, make_spec
from pipeline.head import load_head, predict_map
from pipeline.pseudo import pseudo_masks
from pipeline.store import FeatureStore
from stages.cli import main
from stages.pseudo_masks import partial_dir, pseudo_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir_module):
    root = tmp_path_factory.mktemp("stages")
    ds = write_pairs(root / "ds", n=6, size=(70, 50))
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    spec = {"root": str(ds), "images": "images", "masks": "masks"}
    params["data"] = {"train": {"dataset": spec, "sample_size": 1000, "sample_seed": 111}, "eval": {"ds": spec}}
    params["backbone"].update(name=str(tiny_model_dir_module), resolution=112, eval_resolution=112, device="cpu")
    params["ipo"]["min_cluster"] = 3
    params["pseudo"].update(chunk_size=2, workers=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    samples = resolve(spec)
    b = from_model(tiny_dinov2(), str(tiny_model_dir_module), device="cpu")
    extract_dataset(samples, b, root / "train.zarr", make_spec(samples, b, 112, 4, {"name": "none"}, "float32"),
                    progress=False)
    return root, params


@pytest.fixture(scope="module")
def tiny_model_dir_module(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_dinov2().save_pretrained(d)
    return d


def cli(root, *args, code=0):
    r = CliRunner().invoke(main, [args[0], "--params", str(root / "params.yaml"), *args[1:]], catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r


def pseudo(root, tag="m"):
    return cli(root, "pseudo-masks", "--features", str(root / "train.zarr"), "--out", str(root / f"{tag}.npz"),
               "--metrics", str(root / f"{tag}.json"), "--plot", str(root / f"{tag}.csv"))


def test_pseudo_masks_stage_equals_the_library_and_resumes(setup, monkeypatch):
    root, params = setup
    monkeypatch.chdir(root)
    store = FeatureStore(root / "train.zarr")
    cfg = pseudo_config(params)
    # a finished chunk left by an interrupted run, marked so that reuse is visible
    done = pseudo_masks(store, [0, 1], **cfg, gt_paths=[root / "ds/masks/im00.png", root / "ds/masks/im01.png"])
    done["ncut"][0] = True
    (partial_dir(cfg, store, True) / "00000.pkl").write_bytes(pickle.dumps(done))
    pseudo(root)
    with np.load(root / "m.npz") as z:
        assert list(z["stems"]) == store.stems
        assert z["ncut"][0].all()  # reused, not recomputed
        for i in range(1, len(store)):
            ref = all_methods(store.features(i), store.cls(i), **cfg)
            for m in ("cls", "kmeans", "ncut", "ncut_ipo"):
                np.testing.assert_array_equal(z[m][i], ref.masks[m])
    assert not any(partial_dir(cfg, store, True).iterdir())
    report = yaml.safe_load((root / "m.json").read_text())
    assert set(report) >= {"cls", "kmeans", "ncut", "ncut_ipo", "n_images"}
    assert set(report["ncut_ipo"]) == {"fmax_dataset", "fmax_image", "iou", "acc"}


def test_train_is_deterministic_and_predict_writes_full_size_maps(setup, monkeypatch):
    root, _ = setup
    monkeypatch.chdir(root)
    pseudo(root, "p")
    for tag in ("a", "b"):
        cli(root, "train", "--features", str(root / "train.zarr"), "--pseudo", str(root / "p.npz"),
            "--out", str(root / f"head_{tag}.safetensors"), "--log", str(root / f"loss_{tag}.csv"))
    assert (root / "head_a.safetensors").read_bytes() == (root / "head_b.safetensors").read_bytes()
    assert len((root / "loss_a.csv").read_text().splitlines()) == 1 + 3 * 6

    out = root / "pred"
    cli(root, "predict", "--features", str(root / "train.zarr"), "--head", str(root / "head_a.safetensors"),
        "--out", str(out))
    for m in ("cls", "kmeans", "ncut", "ncut_ipo", "head"):
        assert len(list((out / m).glob("*.png"))) == 6
        assert Image.open(out / m / "im03.png").size == (70, 50)
    # resume: a finished map is kept, a missing one is recomputed identically
    (out / "head" / "im05.png").unlink()
    before = np.asarray(Image.open(out / "head" / "im01.png"))
    r = cli(root, "predict", "--features", str(root / "train.zarr"), "--head", str(root / "head_a.safetensors"),
            "--out", str(out))
    assert "(1 computed now)" in r.output
    np.testing.assert_array_equal(np.asarray(Image.open(out / "head" / "im01.png")), before)

    r = cli(root, "evaluate", "--name", "ds", "--predictions", str(out), "--metrics", str(root / "e.json"),
            "--pr", str(root / "pr"))
    assert set(yaml.safe_load((root / "e.json").read_text())["head"]) >= {"fmax_image", "fmax_dataset", "sm", "mae"}
    (out / "ncut" / "im02.png").unlink()
    r = cli(root, "evaluate", "--name", "ds", "--predictions", str(out), "--metrics", str(root / "e.json"),
            "--pr", str(root / "pr"), code=2)
    assert "im02.png: prediction missing" in r.output and len(r.output.strip().splitlines()) == 1


def test_segment_maps_own_images_and_reports_bad_files(setup, tmp_path, monkeypatch):
    root, _ = setup
    monkeypatch.chdir(root)
    pseudo(root, "s")
    cli(root, "train", "--features", str(root / "train.zarr"), "--pseudo", str(root / "s.npz"),
        "--out", str(root / "head_s.safetensors"), "--log", str(root / "loss_s.csv"))
    good = root / "ds/images/im00.jpg"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    r = cli(root, "segment", str(good), str(bad), "--head", str(root / "head_s.safetensors"),
            "--out", str(tmp_path / "out"), code=1)
    assert "broken.jpg: unreadable" in r.output and "1 maps written, 1 skipped" in r.output
    m = np.asarray(Image.open(tmp_path / "out/im00.png"))
    assert m.shape == (50, 70)
    # the map equals the head on the extract stage's features of the same image (float16 tolerance)
    store = FeatureStore(root / "train.zarr")
    ref = predict_map(load_head(root / "head_s.safetensors"), store.features(0), (50, 70))
    assert np.abs(m.astype(float) - np.round(ref * 255)).max() <= 2

    r = cli(root, "segment", str(good), "--head", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path),
            code=2)
    assert "nope.safetensors" in r.output
