"""Stage commands on a small on-disk dataset with a tiny random backbone (CliRunner, in process):
results equal the library's, interrupted runs resume, cheap checks come first, user folders survive."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.bipartition.methods import bipartitions
from pipeline.core.datasets import DatasetError, load_image, resolve
from pipeline.core.params import CompressorParams, DatasetSpec, load_params
from pipeline.evaluation.intervals import load_scores
from pipeline.features.backbone import load_backbone, preprocess
from pipeline.features.extract import extract_dataset, make_spec
from pipeline.features.store import FeatureStore
from pipeline.features.views import View
from pipeline.head.coco import decode
from pipeline.head.model import fuse_views, load_head, predict_map
from stages.cli import main

pytestmark = pytest.mark.slow
METHODS = ("cls", "kmeans", "ncut", "ncut_ipo", "head")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, write_pairs, write_params):
    root = tmp_path_factory.mktemp("stages")
    ds = write_pairs(root / "ds", n=6, size=(70, 50))
    spec = {"root": str(ds), "images": "images", "masks": "masks"}
    write_params(root / "params.yaml", {
        "data": {"train": {"dataset": spec}, "eval": {"ds": spec}},
        "backbone": {"name": str(tiny_model_dir), "resolution": 112, "device": "cpu"},
        "ipo": {"min_cluster": 3}, "pseudo": {"chunk_size": 2, "workers": 1}, "predict": {"resolutions": [112], "chunk_size": 2, "workers": 1}})
    samples = resolve(DatasetSpec(**spec))
    b = load_backbone(str(tiny_model_dir), device="cpu")
    extract_dataset(samples, b, root / "train.zarr",
                    make_spec(samples, b, View(112), 4, CompressorParams(name="none"), "float32"), progress=False)
    return root


def cli(root, *args, code=0, params="params.yaml"):
    r = CliRunner().invoke(main, [args[0], "--params", str(root / params), *args[1:]], catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r


def pseudo(root, tag="m", code=0, params="params.yaml", grids=None):
    return cli(root, "pseudo-masks", "--features", str(root / "train.zarr"), "--out", str(root / f"{tag}.npz"),
               "--grids", str(root / f"{grids or tag}.grids"), "--metrics", str(root / f"{tag}.json"),
               "--plot", str(root / f"{tag}.csv"), code=code, params=params)


def train(root, tag):
    cli(root, "train", "--features", str(root / "train.zarr"), "--pseudo", str(root / "p.npz"),
        "--out", str(root / f"head_{tag}.safetensors"), "--loss-csv", str(root / f"loss_{tag}.csv"))


def test_pseudo_masks_equals_the_library_and_an_interrupted_run_resumes(setup, monkeypatch):
    import stages.pseudo_masks as stage

    root, real, calls = setup, stage.masks_of, []

    def crash_on_second_chunk(store, indices, *a):
        calls.append(indices)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(store, indices, *a)

    monkeypatch.setattr(stage, "masks_of", crash_on_second_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        pseudo(root)
    monkeypatch.setattr(stage, "masks_of", lambda store, indices, *a: (calls.append(indices), real(store, indices, *a))[1])
    assert not (root / "m.npz").exists() and (root / ".m.npz.partial").is_dir()  # state kept beside the output
    calls.clear()
    pseudo(root)
    assert calls == [[2, 3], [4, 5]]  # chunk [0, 1] finished before the crash: not computed again
    assert not (root / ".m.npz.partial").exists()
    p = load_params(root / "params.yaml")
    store = FeatureStore(root / "train.zarr")
    with np.load(root / "m.npz") as z:
        assert list(z["stems"]) == store.stems
        for i in range(len(store)):
            ref = bipartitions(store.features(i), store.cls(i), ncut_p=p.ncut, ipo_p=p.ipo, kmeans_seed=p.pseudo.kmeans_seed)
            for m in METHODS[:-1]:
                np.testing.assert_array_equal(z[m][i], ref.masks[m])
    report = yaml.safe_load((root / "m.json").read_text())
    assert set(report) >= {*METHODS[:-1], "n_images"}
    assert set(report["ncut_ipo"]) == {"fmax_dataset", "fmax_image", "fmax_toolbox", "iou", "acc"}


@pytest.fixture(scope="module")
def planted_store(setup, planted):
    """A store of the setup's six stems (their image sizes) with 36 x 36 planted grids of width 32: a faint
    object block over a smooth random field and noise. 1296 patches keep the Krylov space far from exhausted
    (on 8 x 8 grids it is spanned in 4 steps and no rounding changes anything): with TF32's rounding, a solver
    that takes float32 answers as they come differs from the dense masks on 2 of these 6 images, and the
    one before float64 certification (float32 products until a residual of 1e-6) never converges."""
    from pipeline.features.store import StoreSpec, StoreWriter

    root, rng = setup, np.random.default_rng(7)
    stems = FeatureStore(root / "train.zarr").stems
    grids = []
    for i in range(len(stems)):
        f, _ = planted(36, 36, (slice(6 + i, 24), slice(8, 30 - i)), d=32, noise=0.0, seed=i)
        field = np.kron(rng.standard_normal((9, 9, 32)), np.ones((4, 4, 1)))
        grids.append(f + 0.6 * field + 0.3 * rng.standard_normal(f.shape))
    spec = StoreSpec(tuple(stems), (36, 36), 32, "planted", 504, 14, "float32", 6, CompressorParams(name="none"))
    writer = StoreWriter(root / "planted.zarr", spec)
    writer.write_shard(0, np.stack(grids), rng.standard_normal((6, 32)), np.array([[50, 70]] * 6))
    writer.finalize()
    return root / "planted.zarr"


def test_no_image_stops_the_bipartition_stages_tf32_products_nor_an_uncertified_solver(setup, planted_store,
                                                                                        monkeypatch, perturbed):
    """On 36 x 36 grids: proposal products with TF32's relative error (1e-3) give the same masks; where the fast
    solver cannot certify an image it is solved densely, its masks and maps still written, and the count is in
    the metrics and printed."""
    import pipeline.bipartition.ncut as ncut

    root = setup

    def masks(tag):
        return cli(root, "pseudo-masks", "--features", str(planted_store), "--out", str(root / f"{tag}.npz"),
                   "--grids", str(root / f"{tag}.grids"), "--metrics", str(root / f"{tag}.json"),
                   "--plot", str(root / f"{tag}.csv")).output

    masks("ref")
    perturbed(1e-3, gram=0.0)
    masks("tf32")
    monkeypatch.setattr(ncut, "KRYLOV_STEPS", 1)
    monkeypatch.setattr(ncut, "_settled", lambda *a: False)
    out = masks("fb")
    with np.load(root / "ref.npz") as ref, np.load(root / "tf32.npz") as tf32, np.load(root / "fb.npz") as fb:
        assert 0.05 < ref["ncut"].mean() < 0.95  # every image cut into two real parts
        for m in ("ncut", "ncut_ipo"):
            np.testing.assert_array_equal(tf32[m], ref[m])
            np.testing.assert_array_equal(fb[m], ref[m])
        assert not ref["fallback"].any() and not tf32["fallback"].any() and fb["fallback"].all()
    assert yaml.safe_load((root / "fb.json").read_text())["ncut_dense_fallbacks"] == 6
    assert yaml.safe_load((root / "ref.json").read_text())["ncut_dense_fallbacks"] == 0
    assert "NCut dense fallbacks: 6" in out
    r = cli(root, "predict", "--maps", "bipartitions", "--features", str(planted_store), "--out", str(root / "fbpred"))
    assert "NCut dense fallbacks: 6" in r.output and len(list((root / "fbpred/ncut").glob("*.png"))) == 6


def test_each_bipartition_method_reruns_only_when_the_params_it_reads_change(setup, write_params, monkeypatch):
    """pseudo_masks and predict keep each method's masks by the params it reads: ipo.* runs IPO from the kept
    NCut masks (no eigenproblem: NCut made to fail), ncut.* reruns NCut and IPO, pseudo.kmeans_seed k-means
    alone; every result byte-identical to the same params computed from scratch."""
    import pipeline.bipartition.methods as methods

    root = setup
    p = yaml.safe_load((root / "params.yaml").read_text())
    for name, (group, key, value) in {"seed": ("pseudo", "kmeans_seed", 5), "ipo": ("ipo", "iters", 3),
                                      "tau": ("ncut", "tau", 0.3)}.items():  # each run's params: the last run's and
        p[group][key] = value                                                  # one change
        write_params(root / f"params_{name}.yaml", p)
    bip = ["predict", "--maps", "bipartitions", "--features", str(root / "train.zarr")]

    def counts(tag):
        return json.loads((root / f"{tag}.json").read_text())["computed"]

    pseudo(root, "kb")
    cli(root, *bip, "--out", str(root / "kp"), "--metrics", str(root / "kp.json"))
    every = {"ncut_solved": 6, "ipo_run": 6, "cls_run": 6, "kmeans_run": 6}
    assert counts("kb") == every and json.loads((root / "kp.json").read_text())["kp"]["computed"] == every
    solve = methods.ncut
    for name, expected in (("seed", {"kmeans_run": 6}), ("ipo", {"ipo_run": 6}),
                           ("tau", {"ncut_solved": 6, "ipo_run": 6})):
        params = f"params_{name}.yaml"
        if name == "ipo":
            monkeypatch.setattr(methods, "ncut", lambda *a, **k: pytest.fail("NCut solved in an ipo.* experiment"))
        out = pseudo(root, "kb", params=params).output  # into the baseline's kept masks
        r = cli(root, *bip, "--out", str(root / "kp"), "--metrics", str(root / "kp.json"), params=params)
        monkeypatch.setattr(methods, "ncut", solve)
        expected = {k: expected.get(k, 0) for k in every}
        assert counts("kb") == expected and json.loads((root / "kp.json").read_text())["kp"]["computed"] == expected
        assert ("computed: ncut_ipo, kept: cls, kmeans, ncut" in out) == ("kept: ncut" in r.output) == (name == "ipo")
        pseudo(root, f"scratch_{name}", params=params)  # its own, empty kept folder
        cli(root, *bip, "--out", str(root / f"scratch_{name}p"), params=params)
        assert (root / "kb.npz").read_bytes() == (root / f"scratch_{name}.npz").read_bytes(), name
        assert (root / "kb.csv").read_text() == (root / f"scratch_{name}.csv").read_text()
        kept, scratch = (json.loads((root / f"{t}.json").read_text()) for t in ("kb", f"scratch_{name}"))
        assert {**kept, "computed": None} == {**scratch, "computed": None}
        for m in ("cls", "kmeans", "ncut", "ncut_ipo"):
            for png in sorted((root / f"scratch_{name}p" / m).glob("*.png")):
                assert png.read_bytes() == (root / "kp" / m / png.name).read_bytes(), (name, m, png.name)


def test_train_is_deterministic_predict_writes_full_size_maps_and_resumes(setup, monkeypatch):
    import stages.predict as stage

    root = setup
    pseudo(root, "p")
    train(root, "a")
    train(root, "b")
    assert (root / "head_a.safetensors").read_bytes() == (root / "head_b.safetensors").read_bytes()
    assert len((root / "loss_a.csv").read_text().splitlines()) == 1 + 3 * 6

    out = root / "pred"
    bipartitions = ["predict", "--maps", "bipartitions", "--features", str(root / "train.zarr"), "--out", str(out)]
    real, calls = stage.save_png, []

    def crash_on_fourth_image(prob, path):
        calls.append(Path(path))
        if len(calls) == 3 * 4 + 1:
            raise RuntimeError("killed")
        real(prob, path)

    monkeypatch.setattr(stage, "save_png", crash_on_fourth_image)
    with pytest.raises(RuntimeError, match="killed"):
        cli(root, *bipartitions)
    monkeypatch.setattr(stage, "save_png", lambda prob, path: (calls.append(Path(path)), real(prob, path)))
    calls.clear()
    cli(root, *bipartitions)
    assert sorted({c.stem for c in calls}) == ["im02", "im03", "im04", "im05"]  # unit [0, 1] was finished
    assert not (out / "head").exists()
    cli(root, "predict", "--maps", "head", "--name", "ds", "--features", str(root / "train.zarr"), "--head",
        str(root / "head_a.safetensors"), "--out", str(out))
    for m in METHODS:
        assert len(list((out / m).glob("*.png"))) == 6
        assert Image.open(out / m / "im03.png").size == (70, 50)
    store = FeatureStore(root / "train.zarr")
    ref = predict_map(load_head(root / "head_a.safetensors"), store.features(1), (50, 70))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "head" / "im01.png")), np.round(ref * 255))

    cli(root, "evaluate", "--name", "ds", "--predictions", str(out), "--metrics", str(root / "e.json"),
        "--pr", str(root / "pr"), "--per-image", str(root / "e.csv"), *scored(root, "e"))
    result = yaml.safe_load((root / "e.json").read_text())
    intervals = json.loads((root / "e.intervals.json").read_text())
    assert (intervals["level"], intervals["resamples"]) == (0.95, 1000)
    for m in METHODS:  # every metric inside its interval; the arrays kept are the metrics' own
        assert set(intervals[m]) == set(result[m])
        for k, v in result[m].items():
            assert intervals[m][k][0] <= v + 1e-6 and v - 1e-6 <= intervals[m][k][1], (m, k)
    stems, arrays = load_scores(root / "e.scores.npz")
    assert stems == [f"im{i:02d}" for i in range(6)]
    assert arrays["head"]["iou"].mean() == pytest.approx(result["head"]["iou"], abs=1e-12)
    assert set(result["head"]) == {"fmax_image", "fmax_dataset", "fmax_toolbox", "iou", "acc"}  # a SOD set: paper Table 1's metrics
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["data"]["eval"]["ds"]["cod_metrics"] = True
    (root / "cod.yaml").write_text(yaml.safe_dump(p))
    cli(root, "evaluate", "--name", "ds", "--predictions", str(out), "--metrics", str(root / "cod.json"),
        "--pr", str(root / "pr_cod"), "--per-image", str(root / "cod.csv"), *scored(root, "cod"), params="cod.yaml")
    with_cod = yaml.safe_load((root / "cod.json").read_text())
    assert set(with_cod["head"]) > {"sm", "wfm", "em_mean", "mae"}
    assert {k: with_cod["head"][k] for k in result["head"]} == result["head"]
    per_image = pd.read_csv(root / "e.csv", index_col="stem")
    assert list(per_image.index) == [f"im{i:02d}" for i in range(6)]
    assert per_image["head_iou"].mean() == pytest.approx(result["head"]["iou"], abs=1e-6)
    assert per_image["ncut_fmax_image"].mean() == pytest.approx(result["ncut"]["fmax_image"], abs=1e-6)
    (out / "ncut" / "im02.png").unlink()
    r = cli(root, "evaluate", "--name", "ds", "--predictions", str(out), "--metrics", str(root / "e.json"),
            "--pr", str(root / "pr"), "--per-image", str(root / "e.csv"), *scored(root, "e"), code=2)
    assert "im02.png: prediction missing" in r.output and len(r.output.strip().splitlines()) == 1


def scored(root, tag):
    return "--scores", str(root / f"{tag}.scores.npz"), "--intervals", str(root / f"{tag}.intervals.json")


def test_views_are_extracted_once_each_and_the_head_map_is_their_mean(setup, tmp_path, write_params, tiny_model_dir):
    root = setup
    pseudo(root, "p")
    train(root, "v")
    spec = {"root": str(root / "ds"), "images": "images", "masks": "masks"}
    write_params(tmp_path / "params.yaml", {
        "data": {"train": {"dataset": spec}, "eval": {"ds": spec}},
        "backbone": {"name": str(tiny_model_dir), "resolution": 112, "device": "cpu"},
        "predict": {"resolutions": [112, 56], "hflip": True, "chunk_size": 2, "workers": 1}})
    run = lambda *a: cli(tmp_path, *a)  # noqa: E731
    base, views = tmp_path / "ds.zarr", tmp_path / "ds.views"
    run("extract", "--split", "eval", "--name", "ds", "--out", str(base))
    r = run("extract", "--split", "eval", "--name", "ds", "--views", "extra", "--out", str(views))
    assert sorted(p.name for p in views.glob("*.zarr")) == ["112-hflip.zarr", "56-hflip.zarr", "56.zarr"]
    assert r.output.count("(1 written") == 3
    assert FeatureStore(base).attrs["resolution"] == 112 and FeatureStore(views / "56-hflip.zarr").attrs["hflip"]
    b = load_backbone(str(tiny_model_dir), device="cpu")
    image = load_image(root / "ds/images/im02.jpg")
    mirrored = b(torch.from_numpy(preprocess(image, 56, hflip=True))[None])[0][0].numpy()
    np.testing.assert_allclose(FeatureStore(views / "56-hflip.zarr").features(2), mirrored, atol=2e-2, rtol=1e-2)
    r = run("extract", "--split", "eval", "--name", "ds", "--views", "extra", "--out", str(views))
    assert r.output.count("(0 written") == 3  # every view is kept and reused

    head = root / "head_v.safetensors"
    out, masks = tmp_path / "pred", tmp_path / "masks"
    run("predict", "--maps", "head", "--name", "ds", "--features", str(base), "--head", str(head), "--out", str(out),
        "--masks", str(masks), "--coco", str(out / "head.coco.json"))
    stores = [(FeatureStore(base), False), (FeatureStore(views / "112-hflip.zarr"), True),
              (FeatureStore(views / "56.zarr"), False), (FeatureStore(views / "56-hflip.zarr"), True)]
    ref = fuse_views(load_head(head), [(s.features(3), m) for s, m in stores], (50, 70))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "head" / "im03.png")), np.round(ref * 255))
    np.testing.assert_array_equal(np.asarray(Image.open(masks / "im03.png")), np.where(ref > 0.5, 255, 0))
    assert sorted(p.name for p in masks.glob("*.png")) == [f"im{i:02d}.png" for i in range(6)]
    doc = json.loads((out / "head.coco.json").read_text())  # the COCO masks are the PNG masks, image by image
    assert [i["file_name"] for i in doc["images"]] == [f"im{i:02d}.jpg" for i in range(6)]
    for image, ann in zip(doc["images"], doc["annotations"]):
        png = np.asarray(Image.open(masks / image["file_name"].replace(".jpg", ".png"))) == 255
        np.testing.assert_array_equal(decode(ann["segmentation"]), png)
        assert (image["height"], image["width"]) == png.shape and ann["image_id"] == image["id"]
    assert doc["annotations"][3]["score"] == pytest.approx(ref[ref > 0.5].mean(), abs=1e-6)


def test_self_train_keeps_round_one_bit_for_bit_and_retrains_on_its_labels(setup, tmp_path, write_params,
                                                                           tiny_model_dir):
    root = setup
    pseudo(root, "p")
    train(root, "r")
    args = ["--features", str(root / "train.zarr"), "--head", str(root / "head_r.safetensors")]
    cli(root, "self-train", *args, "--out", str(tmp_path / "one.safetensors"), "--loss-csv", str(tmp_path / "1.csv"))
    assert (tmp_path / "one.safetensors").read_bytes() == (root / "head_r.safetensors").read_bytes()
    assert (tmp_path / "1.csv").read_text().strip() == "round,epoch,step,image,loss,bce,dice,con"
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["train"]["rounds"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    cli(tmp_path, "self-train", *args, "--out", str(tmp_path / "two.safetensors"), "--loss-csv", str(tmp_path / "2.csv"))
    log = pd.read_csv(tmp_path / "2.csv")
    assert len(log) == 3 * 6 and set(log["round"]) == {2}
    assert (tmp_path / "two.safetensors").read_bytes() != (root / "head_r.safetensors").read_bytes()


def test_segment_maps_own_images_and_reports_bad_files(setup, tmp_path):
    root = setup
    pseudo(root, "p")
    train(root, "s")
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
    r = cli(root, "segment", str(good), str(bad), "--head", str(root / "head_s.safetensors"), "--out",
            str(tmp_path / "bin"), "--binary", "--coco", str(tmp_path / "bin.json"), code=1)
    assert "1 masks written" in r.output and f"COCO masks in {tmp_path / 'bin.json'}" in r.output
    mask = np.asarray(Image.open(tmp_path / "bin/im00.png"))
    assert set(np.unique(mask)) <= {0, 255} and 0 < (mask == 255).sum() < mask.size
    np.testing.assert_array_equal(mask == 255, m >= 128)  # p > predict.threshold = 0.5
    doc = json.loads((tmp_path / "bin.json").read_text())  # the skipped file has no entry
    assert [i["file_name"] for i in doc["images"]] == ["im00.jpg"] and len(doc["annotations"]) == 1
    np.testing.assert_array_equal(decode(doc["annotations"][0]["segmentation"]), mask == 255)

    r = cli(root, "segment", str(good), "--head", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o2"),
            code=2)
    assert "nope.safetensors" in r.output


@pytest.mark.parametrize("command", ["predict", "extract", "segment", "demo-data"])
def test_a_user_folder_passed_as_out_is_refused_and_survives(setup, tmp_path, command):
    root = setup
    pseudo(root, "p")
    train(root, "u")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work")
    args = {"predict": ["--maps", "head", "--name", "ds", "--features", str(root / "train.zarr"), "--head",
                        str(root / "head_u.safetensors")],
            "extract": ["--split", "train"], "demo-data": [],
            "segment": [str(root / "ds/images/im00.jpg"), "--head", str(root / "head_u.safetensors")]}[command]
    r = cli(root, command, *args, "--out", str(user), code=2)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{user}: " in errors[0] and "nothing was changed" in errors[0]
    assert sorted(p.name for p in user.iterdir()) == ["thesis.txt"]
    assert (user / "thesis.txt").read_text() == "years of work"


def test_dataset_problems_are_reported_before_the_weights_are_loaded(setup, tmp_path, write_pairs, write_params,
                                                                     tiny_model_dir):
    ds = write_pairs(tmp_path / "ds", n=3)
    Image.new("L", (10, 10)).save(ds / "masks" / "im01.png")  # a mask of the wrong size
    broken = tmp_path / "model"  # its config is fine, its weights would fail to load
    broken.mkdir()
    (broken / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"garbage")
    params = write_params(tmp_path / "params.yaml", {
        "data": {"train": {"dataset": {"root": str(ds), "images": "images", "masks": "masks"}}},
        "backbone": {"name": str(broken), "resolution": 56}})
    r = CliRunner().invoke(main, ["extract", "--params", str(params), "--split", "train",
                                  "--out", str(tmp_path / "f.zarr")])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1:] == [
        f"error: {ds / 'masks' / 'im01.png'}: mask is 10x10 but its image is 60x45"]
    assert "Loading weights" not in r.output


def test_without_a_feature_cache_every_map_is_byte_identical_and_no_store_is_written(setup, tmp_path, write_params,
                                                                                     tiny_model_dir):
    """predict.cache_features: false: image -> backbone -> every method's maps in one pass (views and
    mirrors included) equal the cached path's byte for byte; extract leaves empty folders (and removes
    its stores of a cached run); a rerun with the same inputs has nothing to do."""
    root = setup
    pseudo(root, "p")
    train(root, "nc")
    head = root / "head_nc.safetensors"
    spec = {"root": str(root / "ds"), "images": "images", "masks": "masks"}
    for cache in (True, False):
        write_params(tmp_path / f"{cache}.yaml", {
            "data": {"train": {"dataset": spec}, "eval": {"ds": spec}},
            "backbone": {"name": str(tiny_model_dir), "resolution": 112, "device": "cpu", "batch_size": 2},
            "store": {"images_per_shard": 4}, "ipo": {"min_cluster": 3},
            "predict": {"resolutions": [112, 56], "hflip": True, "cache_features": cache, "chunk_size": 2, "workers": 1}})
    run = lambda cache, *a: cli(tmp_path, *a, params=f"{cache}.yaml")  # noqa: E731
    base, views = tmp_path / "ds.zarr", tmp_path / "ds.views"
    outs = {}
    for cache in (True, False):
        run(cache, "extract", "--split", "eval", "--name", "ds", "--out", str(base))
        run(cache, "extract", "--split", "eval", "--name", "ds", "--views", "extra", "--out", str(views))
        outs[cache] = tmp_path / f"pred_{cache}"
        r = run(cache, "predict", "--name", "ds", "--features", str(base), "--head", str(head), "--out", str(outs[cache]),
                "--masks", str(tmp_path / f"masks_{cache}"))
        assert "cls: written; kmeans: written; ncut: written; ncut_ipo: written; head: written" in r.output
    assert list(base.iterdir()) == [] and not list(views.glob("*.zarr"))  # the cached run's stores are gone
    for m in METHODS:
        cached = sorted((outs[True] / m).glob("*.png"))
        assert len(cached) == 6
        for f in cached:
            assert f.read_bytes() == (outs[False] / m / f.name).read_bytes(), (m, f.name)
    for f in (tmp_path / "masks_True").glob("*.png"):
        assert f.read_bytes() == (tmp_path / "masks_False" / f.name).read_bytes()
    r = run(False, "predict", "--name", "ds", "--features", str(base), "--head", str(head), "--out", str(outs[False]),
            "--masks", str(tmp_path / "masks_False"))
    assert "cls: up to date; kmeans: up to date; ncut: up to date; ncut_ipo: up to date; head: up to date" in r.output
    # under torchrun the two ranks share the images (one shard each in turn): the same bytes as one process
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python"]
    r = subprocess.run([*torchrun, "selfment", "predict", "--params", str(tmp_path / "False.yaml"), "--name", "ds",
                        "--features", str(base), "--head", str(head), "--out", str(tmp_path / "pred_tr"),
                        "--masks", str(tmp_path / "masks_tr")], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("head: written") == 1  # rank 0 reports
    for m in METHODS:
        for f in sorted((outs[False] / m).glob("*.png")):
            assert f.read_bytes() == (tmp_path / "pred_tr" / m / f.name).read_bytes(), (m, f.name)
    assert not list((tmp_path / "pred_tr").glob(".*.partial"))
    # the exported model (the same views and batches) gives predict's maps byte for byte
    run(True, "export", "--head", str(head), "--out", str(tmp_path / "model"))
    images = sorted(str(f) for f in (root / "ds/images").iterdir())
    r = run(True, "segment", *images, "--model", str(tmp_path / "model"), "--out", str(tmp_path / "seg"))
    assert "6 maps written, 0 skipped" in r.output
    for f in sorted((outs[True] / "head").glob("*.png")):
        assert f.read_bytes() == (tmp_path / "seg" / f.name).read_bytes(), f.name


def test_segment_takes_photos_as_viewers_show_them_and_reports_the_rest(setup, tmp_path, monkeypatch):
    """EXIF orientation applied (the map is aligned with the displayed photo), CMYK, 16-bit and palette
    decoded, the first frame of a GIF (said once), an over-limit JPEG decoded at reduced scale; a zero-byte
    file and a text file reported in one line each while the others are written."""
    from PIL import ImageOps

    from pipeline.core.datasets import load_photo

    root = setup
    pseudo(root, "p")
    train(root, "ph")
    src = Image.open(root / "ds/images/im01.jpg").convert("RGB")  # 70 x 50
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    photos = tmp_path / "photos"
    photos.mkdir()
    src.save(photos / "phone.jpg", exif=exif)
    ImageOps.exif_transpose(Image.open(photos / "phone.jpg")).save(photos / "upright.png")  # the same pixels, shown
    src.convert("CMYK").save(photos / "cmyk.jpg")
    Image.fromarray((np.asarray(src.convert("L"), np.uint16) * 257)).save(photos / "deep.png")  # 16-bit gray
    src.convert("P").save(photos / "palette.png")
    src.save(photos / "anim.gif", save_all=True, append_images=[src.rotate(90), src.rotate(180)])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("not an image")
    out = tmp_path / "maps"
    r = cli(root, "segment", *map(str, sorted(photos.iterdir())), "--head", str(root / "head_ph.safetensors"),
            "--out", str(out), code=1)
    assert "6 maps written, 2 skipped" in r.output
    assert r.output.count("empty.jpg: unreadable") == 1 and r.output.count("notes.png: unreadable") == 1
    assert r.output.count("anim.gif: 3 frames, the first one segmented") == 1
    phone = np.asarray(Image.open(out / "phone.png"))
    assert phone.shape == (70, 50)  # as displayed, not the stored 50 x 70 pixels
    np.testing.assert_array_equal(phone, np.asarray(Image.open(out / "upright.png")))
    for name in ("cmyk", "deep", "palette", "anim"):
        assert np.asarray(Image.open(out / f"{name}.png")).shape == (50, 70)
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((600, 800, 3), 128, np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300_000)  # 800 x 600 is over PIL's limit (warned, not refused)
    pixels, size, _ = load_photo(big, 112)
    assert size == (600, 800) and pixels.shape == (150, 200, 3)  # decoded at 1/4: >= 112 px, bounded
    for fmt in ("png", "tiff"):  # no partial decoding: refused in one line, never decoded whole
        Image.fromarray(np.full((600, 800, 3), 128, np.uint8)).save(tmp_path / f"big.{fmt}")
        with pytest.raises(DatasetError, match=rf"big.{fmt}: 800x600 {fmt.upper()} is over PIL's limit of 300000 pixels "
                                               r"and only JPEGs are decoded at reduced scale; downscale it first$"):
            load_photo(tmp_path / f"big.{fmt}", 112)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)  # over twice the limit: PIL refuses even to open it
    with pytest.raises(DatasetError, match=r"big.jpg: not decoded: Image size \(480000 pixels\) exceeds limit"):
        load_photo(big, 112)


def test_a_killed_training_resumes_at_its_last_epoch_and_gives_the_uninterrupted_head(setup, tmp_path, paused):
    """kill -9 once `train` has saved its first epoch: no head file is left, the rerun resumes after that
    epoch (head and Adam state) and writes the head and loss curve of an uninterrupted run, byte for byte."""
    root = setup
    pseudo(root, "p")
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["train"]["epochs"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    args = lambda tag: ["train", "--params", tmp_path / "params.yaml", "--features", root / "train.zarr",  # noqa: E731
                        "--pseudo", root / "p.npz", "--out", tmp_path / f"{tag}.safetensors",
                        "--loss-csv", tmp_path / f"{tag}.csv"]
    CliRunner().invoke(main, [str(a) for a in args("ref")], catch_exceptions=False)
    killed = paused("saved", args("h"))
    killed.kill()
    state = tmp_path / ".h.safetensors.partial"
    assert not (tmp_path / "h.safetensors").exists() and list(state.glob("*/epoch.pkl"))
    r = CliRunner().invoke(main, [str(a) for a in args("h")], catch_exceptions=False)
    assert r.exit_code == 0 and "resuming after epoch 1 of 4" in r.output, r.output
    assert (tmp_path / "h.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert (tmp_path / "h.csv").read_text() == (tmp_path / "ref.csv").read_text()
    assert not state.exists()


def test_two_segment_runs_into_one_folder_both_finish_and_the_same_run_twice_stops_with_one_line(setup, tmp_path,
                                                                                                 paused):
    """Each run's resume state is locked while it lives: a run with other images into the same folder, started
    and finished while the first one is held after saving its first images, never removes the first one's state
    as stale, and both write the maps of a single run; a run with the first one's inputs stops with one line."""
    root = setup
    pseudo(root, "p")
    train(root, "two")
    images = sorted(str(p) for p in (root / "ds/images").iterdir())
    args = ["segment", "--params", root / "params.yaml", "--head", root / "head_two.safetensors", "--out",
            tmp_path / "shared"]
    held = paused("saved", [*args, *images[:3]])
    [state] = list((tmp_path / ".shared.partial").glob("*/*.pkl"))
    cli(root, "segment", *images[3:], "--head", str(root / "head_two.safetensors"), "--out", str(tmp_path / "shared"))
    assert state.is_file()  # not taken for the state of an ended run
    twice = CliRunner().invoke(main, [str(a) for a in [*args, *images[:3]]])
    assert twice.exit_code == 2 and twice.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'shared'}: another run with the same inputs is writing it now; wait for it to end")
    code, out = held.go()
    assert code == 0, out
    cli(root, "segment", *images, "--head", str(root / "head_two.safetensors"), "--out", str(tmp_path / "one"))
    for f in sorted((tmp_path / "one").glob("*.png")):
        assert f.read_bytes() == (tmp_path / "shared" / f.name).read_bytes()
    assert len(list((tmp_path / "shared").glob("*.png"))) == 6 and not (tmp_path / ".shared.partial").exists()


def test_a_runs_state_folder_exists_only_while_its_lock_is_held(setup, tmp_path, paused):
    """Another run clears every state folder whose lock is free; a folder made before its lock is taken could
    be cleared (or locked by the clearing run) in between. Held just before its lock: no folder yet."""
    root = setup
    pseudo(root, "p")
    train(root, "lock")
    held = paused("lock", ["segment", "--params", root / "params.yaml", "--head", root / "head_lock.safetensors",
                           "--out", tmp_path / "out", *sorted((root / "ds/images").iterdir())[:2]])
    assert not [d for d in (tmp_path / ".out.partial").iterdir() if d.is_dir()]
    code, out = held.go()
    assert code == 0 and len(list((tmp_path / "out").glob("*.png"))) == 2, out


def test_a_full_disk_while_writing_maps_stops_with_one_line_and_the_rerun_resumes(setup, tmp_path, monkeypatch):
    """ENOSPC at the third image's first map (chunks of two images): one line, the first chunk's results kept in
    the state beside the output (no temporary file left), and the rerun computes only the other chunks."""
    import errno

    import stages.predict as stage

    root, real, calls = setup, stage.save_png, []

    def full(prob, path):
        calls.append(path)
        if len(calls) == 9:  # third image's first map
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(prob, path)

    args = ["predict", "--maps", "bipartitions", "--features", str(root / "train.zarr")]
    cli(root, *args, "--out", str(tmp_path / "clean"))
    monkeypatch.setattr(stage, "save_png", full)
    r = cli(root, *args, "--out", str(tmp_path / "out"), code=2)
    [line] = [s for s in r.stderr.splitlines() if "error" in s]  # beside the progress bar's lines
    assert line == (f"error: disk full writing {tmp_path / 'out/cls/im02.png'} ({line.split('(')[1].split(' GB')[0]} "
                    f"GB free); free space and run again: finished work is kept")
    assert [f.name for f in (tmp_path / "out").glob(".*.partial/*/*.pkl")] == ["000000-000001.pkl"]
    assert not list((tmp_path / "out").rglob("*.tmp"))
    calls.clear()
    monkeypatch.setattr(stage, "save_png", lambda prob, path: (calls.append(path), real(prob, path)))
    cli(root, *args, "--out", str(tmp_path / "out"))
    assert sorted({Path(c).stem for c in calls}) == ["im02", "im03", "im04", "im05"]
    assert not list((tmp_path / "out").glob(".*.partial"))
    for f in (tmp_path / "clean").rglob("*.png"):
        assert f.read_bytes() == (tmp_path / "out" / f.relative_to(tmp_path / "clean")).read_bytes()


def test_a_real_full_disk_while_writing_maps_stops_with_one_line_and_resumes_on_freed_space(setup, tmp_path,
                                                                                            small_disk):
    """The kernel's ENOSPC on a small tmpfs (maps and resume state on it): one line, exit status 2; with space
    freed the rerun ends with the maps of a run that never stopped."""
    root = setup
    args = ["predict", "--maps", "bipartitions", "--features", str(root / "train.zarr")]
    cli(root, *args, "--out", str(tmp_path / "clean"))
    disk = small_disk(48)
    r = cli(root, *args, "--out", str(disk / "out"), code=2)
    [line] = [s for s in r.stderr.splitlines() if "error" in s]
    assert line.startswith(f"error: disk full writing {disk}") and line.endswith("finished work is kept")
    assert len(list((disk / "out").rglob("*.png"))) < 24
    small_disk.grow(4096)
    cli(root, *args, "--out", str(disk / "out"))
    maps = sorted((tmp_path / "clean").rglob("*.png"))
    assert len(maps) == 24
    for f in maps:
        assert f.read_bytes() == (disk / "out" / f.relative_to(tmp_path / "clean")).read_bytes()


def test_a_released_head_is_a_method_of_predict_and_evaluate_and_pairs_with_the_head(setup, tmp_path, write_params):
    """predict.release_head (with its sha256): the released head's maps from the same features and views, in
    release/, evaluated beside the head's; with the head's own weights in the release's layout they are the
    head's maps byte for byte, the metrics equal and the paired comparison exactly 0. A file whose sha256 is
    not the param's stops predict in one line; unset, release/ is an empty folder that says so."""
    import hashlib

    from pipeline.evaluation.intervals import compare_runs
    from pipeline.evaluation.report import results_table, to_markdown
    from stages.compare import _as

    root = setup
    pseudo(root, "p")
    train(root, "rel")
    head = load_head(root / "head_rel.safetensors")
    torch.save({"model_state": head.state_dict(), "args": {"img_size": 112}}, tmp_path / "release.pth")
    digest = hashlib.sha256((tmp_path / "release.pth").read_bytes()).hexdigest()
    spec = {"root": str(root / "ds"), "images": "images", "masks": "masks"}
    base = {"data": {"train": {"dataset": spec}, "eval": {"ds": spec}},
            "backbone": {"name": yaml.safe_load((root / "params.yaml").read_text())["backbone"]["name"],
                         "resolution": 112, "device": "cpu"},
            "predict": {"resolutions": [112], "chunk_size": 2, "workers": 1}}
    args = ["predict", "--name", "ds", "--features", str(root / "train.zarr"), "--head", str(root / "head_rel.safetensors")]
    write_params(tmp_path / "none.yaml", base)
    r = cli(tmp_path, *args, "--out", str(tmp_path / "none"), params="none.yaml")
    assert "release: none named" in r.output and not list((tmp_path / "none/release").glob("*.png"))
    base["predict"].update(release_head=str(tmp_path / "release.pth"), release_sha256="0" * 64)
    write_params(tmp_path / "wrong.yaml", base)
    r = cli(tmp_path, *args, "--out", str(tmp_path / "wrong"), params="wrong.yaml", code=2)
    assert r.output.strip().splitlines()[-1] == (f"error: {tmp_path / 'release.pth'}: sha256 is {digest}, "
                                                 f"predict.release_sha256 says {'0' * 64}; set it to the file's if "
                                                 f"the file is the one you mean")
    base["predict"]["release_sha256"] = digest
    write_params(tmp_path / "rel.yaml", base)
    out = tmp_path / "pred"
    cli(tmp_path, *args, "--out", str(out), params="rel.yaml")
    maps = sorted((out / "head").glob("*.png"))
    assert len(maps) == 6 and all(f.read_bytes() == (out / "release" / f.name).read_bytes() for f in maps)
    cli(tmp_path, "evaluate", "--name", "ds", "--predictions", str(out), "--metrics", str(tmp_path / "e.json"),
        "--pr", str(tmp_path / "pr"), "--per-image", str(tmp_path / "e.csv"), "--scores", str(tmp_path / "e.npz"),
        "--intervals", str(tmp_path / "e.intervals.json"), params="rel.yaml")
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["release"] == result["head"]
    assert "| ds        | Release head (authors') |" in to_markdown(results_table({"ds": result}))
    run = {"ds": load_scores(tmp_path / "e.npz")}
    rows = compare_runs(_as(run, "release", "release:head"), _as(run, "head", "release:head"), 200, 0, 0.95, None)
    assert rows and all(r["delta"] == 0 and r["low"] == r["high"] == 0 for r in rows)


def test_bilateral_post_processing_refines_the_heads_maps_and_nothing_else(setup, write_params):
    """predict.postprocess: bilateral: the head's maps are the bilateral solver's refinement of the plain maps
    along each image's edges; the baselines are kept (up to date), and the plain maps come back with `none`."""
    from pipeline.core.metrics import to_uint8
    from pipeline.head.postprocess import bilateral_solve

    root = setup
    pseudo(root, "p")
    train(root, "pp")
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["predict"]["postprocess"] = "bilateral"
    write_params(root / "params_bs.yaml", p)
    args = ["predict", "--name", "ds", "--features", str(root / "train.zarr"), "--head",
            str(root / "head_pp.safetensors"), "--out", str(root / "bs")]
    cli(root, *args)
    plain = {f.name: f.read_bytes() for f in (root / "bs/head").glob("*.png")}
    r = cli(root, *args, params="params_bs.yaml")
    assert "ncut_ipo: up to date; head: written" in r.output
    store, head = FeatureStore(root / "train.zarr"), load_head(root / "head_pp.safetensors")
    samples = resolve(DatasetSpec(root=str(root / "ds"), images="images", masks="masks"))
    changed = 0
    for i in range(len(store)):
        pixels = load_image(samples[i].image)
        expected = to_uint8(bilateral_solve(pixels, predict_map(head, store.features(i), pixels.shape[:2])))
        got = (root / "bs/head" / f"{samples[i].stem}.png")
        np.testing.assert_array_equal(np.asarray(Image.open(got)), expected)
        changed += got.read_bytes() != plain[got.name]
    assert changed >= 4  # the refinement moves the maps (random images: edges everywhere)
    cli(root, *args)
    assert {f.name: f.read_bytes() for f in (root / "bs/head").glob("*.png")} == plain
