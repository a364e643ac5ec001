"""Frozen ViT backbones: token layout, eval mode, offline loading by directory or hub id."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.features.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneError,
    backbone_info,
    from_model,
    load_backbone,
    preprocess,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind, registers", [("dinov2", 0), ("dinov2", 4), ("dinov3", 4)])
def test_patch_tokens_are_the_models_own_with_cls_and_registers_dropped(tiny_vits, kind, registers):
    model = tiny_vits.dinov3() if kind == "dinov3" else tiny_vits.dinov2(registers)
    b = from_model(model, "tiny", device="cpu")
    assert b.num_prefix_tokens == 1 + registers
    s = 4 * b.patch_size
    x = torch.randn(2, 3, s, s)
    patches, cls = b(x)
    ref = model(pixel_values=x).last_hidden_state
    assert patches.shape == (2, 4, 4, 32)
    # row-major grid: patch (r, c) is token 1 + registers + 4 r + c
    torch.testing.assert_close(patches[1, 2, 3], ref[1, 1 + registers + 4 * 2 + 3])
    torch.testing.assert_close(patches.reshape(2, 16, 32), ref[:, 1 + registers:])
    torch.testing.assert_close(cls, ref[:, 0])


def test_model_is_frozen_in_eval_mode_even_if_given_in_train_mode(tiny_vits):
    model = tiny_vits.dinov3().train()
    b = from_model(model, "tiny", device="cpu")
    assert not b.model.training and not any(p.requires_grad for p in b.model.parameters())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(b(x)[0], b(x)[0])  # no RoPE jitter: deterministic


def test_resolution_must_be_a_multiple_of_the_patch_size(tiny_vits):
    b = from_model(tiny_vits.dinov2(), "tiny", device="cpu")
    assert b.grid(56) == 4
    with pytest.raises(BackboneError, match=r"768 is not a positive multiple of the patch size 14.*nearest: 770"):
        b.grid(768)


def test_preprocess_square_resize_and_imagenet_normalisation():
    image = np.full((30, 50, 3), 255, np.uint8)
    image[..., 1] = 0
    x = preprocess(image, 28)
    assert x.shape == (3, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 5, 7], (np.array([1.0, 0.0, 1.0]) - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6)


def test_local_directory_loads_offline_with_requested_dtype(tiny_model_dir):
    b = load_backbone(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert (b.patch_size, b.hidden_size, b.dtype) == (14, 32, torch.bfloat16)
    patches, _ = b(torch.randn(1, 3, 28, 28))
    assert patches.shape == (1, 2, 2, 32) and patches.dtype == torch.bfloat16


def test_missing_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(BackboneError, match="no such model directory"):
        load_backbone(str(tmp_path / "nope"))
    with pytest.raises(BackboneError, match="no such model directory"):
        backbone_info(str(tmp_path / "nope"))


def test_layout_is_known_from_the_config_alone(tiny_model_dir, tmp_path):
    """Cheap checks need no weights: a directory whose weights are garbage still gives its layout."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"garbage")
    info = backbone_info(str(broken))
    assert (info.patch_size, info.num_prefix_tokens, info.hidden_size) == (14, 1, 32)
    with pytest.raises(Exception):
        load_backbone(str(broken))


def test_offline_hub_id_fails_at_once_with_a_hint_to_use_a_local_directory(tmp_path, tiny_model_dir):
    """Through the real CLI: one line on stderr, exit 2, no traceback, no network retries."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["train"]["dataset"] = {"root": "x", "images": "i"}
    p["backbone"].update(name="facebook/dinov2-small", resolution=56, device="cpu")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    (tmp_path / "x" / "i").mkdir(parents=True)
    Image.new("RGB", (30, 30)).save(tmp_path / "x" / "i" / "a.png")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, "-m", "stages.cli", "extract", "--params", str(params), "--split", "train",
                        "--out", str(tmp_path / "f.zarr")], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=20)  # hub retries take ~30 s: a hang guard, not a benchmark
    assert r.returncode == 2 and "Retrying" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "point backbone.name at the local directory" in lines[0]


@pytest.mark.real
def test_shared_dinov2_checkpoint_loads_through_the_same_path(shared_model):
    b = load_backbone(str(shared_model), device="cpu")
    assert (b.patch_size, b.hidden_size, b.num_prefix_tokens) == (14, 384, 1)


HUB_ID_FROM_CACHE = """
import sys
from pipeline.features.backbone import backbone_revision, load_backbone
print(backbone_revision("someone/tiny-dinov2"), load_backbone("someone/tiny-dinov2", revision=sys.argv[1]).patch_size)
"""


def test_a_cached_hub_id_loads_offline_and_reports_its_revision(tmp_path, tiny_model_dir):
    """A hub id in the Hugging Face cache layout (refs/main -> snapshots/<commit>): loaded with no network,
    its commit found (the model directory of stage export records it), and loadable pinned to it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub/models--someone--tiny-dinov2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text(commit)
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    r = subprocess.run([sys.executable, "-c", HUB_ID_FROM_CACHE, commit], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [commit, "14"]


def last_block_keys(model, x: torch.Tensor) -> torch.Tensor:
    """The last block's key projection of its normed input, computed here from the hidden states (not through
    the backbone's hook): the block's first norm (``layernorm_before`` in ViT, ``norm1`` in DINOv2/v3), then
    its attention's key projection."""
    kw = {"interpolate_pos_encoding": True} if model.config.model_type == "vit" else {}
    hidden = model(pixel_values=x, output_hidden_states=True, **kw).hidden_states[-2]  # the last block's input
    blocks = next(b for path in ("layers", "encoder.layer", "model.layer", "layer")
                  if (b := _attr(model, path)) is not None)
    block = blocks[-1]
    norm = getattr(block, "layernorm_before", None) or block.norm1
    return block.attention.k_proj(norm(hidden))


def _attr(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


@pytest.mark.parametrize("kind", ["dino", "dinov2", "dinov3"])
def test_keys_are_the_last_blocks_key_projection_and_tokens_stay_the_models_output(tiny_vits, kind):
    model = getattr(tiny_vits, kind)()
    b, k = from_model(model, "tiny", device="cpu"), from_model(model, "tiny", device="cpu", features="keys")
    g = 6
    x = torch.randn(2, 3, g * b.patch_size, g * b.patch_size)  # not 224: DINO v1's position embeddings interpolated
    tokens, cls = b(x)
    keys, cls_k = k(x)
    with torch.no_grad():
        kw = {"interpolate_pos_encoding": True} if kind == "dino" else {}
        out = model(pixel_values=x, **kw).last_hidden_state
        ref_keys = last_block_keys(model, x)
    p = b.num_prefix_tokens
    torch.testing.assert_close(tokens, out[:, p:].reshape(2, g, g, 32), rtol=0, atol=0)
    torch.testing.assert_close(keys, ref_keys[:, p:].reshape(2, g, g, 32), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(keys, tokens)  # the check can fail: keys are not the output tokens
    torch.testing.assert_close(cls_k, cls)  # the CLS token (CLS baseline) is the output's either way


def test_dino_v1_extracts_at_a_non_224_resolution_with_tokens_and_with_keys(tmp_path, tiny_vits, write_pairs,
                                                                            write_params):
    """A saved tiny DINO v1 through the extract stage at 96 px (6 x 6 patches of 16): one store of tokens, one of
    keys, each equal to the model's own (keys computed independently), with different fingerprints."""
    from click.testing import CliRunner

    from pipeline.core.datasets import load_image, resolve
    from pipeline.core.params import DatasetSpec
    from pipeline.features.store import FeatureStore
    from stages.cli import main

    model = tiny_vits.dino()
    model.save_pretrained(tmp_path / "dino")
    assert backbone_info(str(tmp_path / "dino")).num_prefix_tokens == 1
    spec = {"root": str(write_pairs(tmp_path / "ds", n=3, size=(70, 50))), "images": "images", "masks": "masks"}
    stores = {}
    for features in ("tokens", "keys"):
        params = write_params(tmp_path / f"{features}.yaml", {
            "data": {"train": {"dataset": spec}}, "store": {"compressor": {"name": "none"}},
            "backbone": {"name": str(tmp_path / "dino"), "resolution": 96, "device": "cpu", "features": features}})
        r = CliRunner().invoke(main, ["extract", "--params", str(params), "--split", "train", "--out",
                                      str(tmp_path / f"{features}.zarr")])
        assert r.exit_code == 0, r.output
        stores[features] = FeatureStore(tmp_path / f"{features}.zarr")
        assert stores[features].grid == (6, 6) and stores[features].attrs["features"] == features
    assert stores["tokens"].attrs["fingerprint"] != stores["keys"].attrs["fingerprint"]
    image = load_image(resolve(DatasetSpec(**spec))[1].image)
    x = torch.from_numpy(preprocess(image, 96))[None]
    with torch.no_grad():
        tokens = model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[0, 1:]
        keys = last_block_keys(model, x)[0, 1:]
    for name, ref in (("tokens", tokens), ("keys", keys)):  # stored as float16
        np.testing.assert_allclose(stores[name].features(1).astype(np.float32), ref.numpy().reshape(6, 6, 32),
                                   rtol=1e-2, atol=1e-2)
