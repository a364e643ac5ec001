"""The trained model as a Hugging Face model directory: saved and loaded through huggingface_hub's mixin,
its maps those of the pipeline's own path (features as the store keeps them, views fused as in predict)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from pipeline.core.errors import PipelineError
from pipeline.features.backbone import load_backbone, preprocess
from pipeline.features.extract import forward_f16
from pipeline.head.model import Head, fuse_views
from pipeline.head.segmenter import Segmenter, load_segmenter


@pytest.fixture
def model(tiny_model_dir):
    torch.manual_seed(1)
    return Segmenter.from_head(Head(32, 16, 8), backbone=str(tiny_model_dir), resolutions=[56, 84], hflip=True,
                               threshold=0.4, params_hash="abc")


def test_save_and_load_keep_the_config_and_only_the_heads_weights(model, tmp_path):
    model.save_pretrained(tmp_path / "m", model_card_kwargs=model.card_kwargs())
    config = json.loads((tmp_path / "m/config.json").read_text())
    assert config == {"backbone": model.backbone_name, "backbone_revision": None, "dim": 32, "hidden": 16, "embed": 8,
                      "n_classes": 2, "dtype": "float32", "resolutions": [56, 84], "hflip": True, "threshold": 0.4,
                      "params_hash": "abc", "features": "tokens", "source": None}
    weights = load_file(tmp_path / "m/model.safetensors")
    assert set(weights) == {f"head.{k}" for k in model.head.state_dict()}  # no backbone weights travel
    card = (tmp_path / "m/README.md").read_text()
    assert "library_name: selfment" in card and "at 56, 84 px with mirrored views" in card and "p > 0.4" in card
    again = load_segmenter(tmp_path / "m")
    assert again.views == model.views and again.threshold == 0.4 and again.params_hash == "abc"
    for k, v in model.head.state_dict().items():
        assert torch.equal(again.head.state_dict()[k], v)
    assert load_segmenter(tmp_path / "m", backbone="elsewhere", resolutions=[112]).backbone_name == "elsewhere"


def test_predict_fuses_the_float16_features_of_every_view_as_predict_does(model, tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)]
    Image.fromarray(arrays[1]).save(tmp_path / "b.png")
    out = model.predict([arrays[0], tmp_path / "b.png", Image.fromarray(arrays[0])], batch_size=2)
    backbone = load_backbone(model.backbone_name)
    for k, a in enumerate(arrays):  # the store's arrays: float16 features of batched forwards, one per view
        views = [(forward_f16(backbone, torch.from_numpy(np.stack([preprocess(x, *v) for x in arrays])))[0][k], v.hflip)
                 for v in model.views]
        np.testing.assert_array_equal(out[k].prob, fuse_views(model.head, views, a.shape[:2]))
    np.testing.assert_array_equal(out[2].prob, out[0].prob)  # a PIL image: the same pixels, the same map
    assert out[1].prob.shape == (50, 30) and out[1].mask.dtype == bool
    np.testing.assert_array_equal(out[0].mask, out[0].prob > 0.4)
    with pytest.raises(ValueError, match="RGB uint8"):
        model.predict([arrays[0].astype(np.float32)])


def test_a_photo_is_oriented_as_viewers_show_it(model, tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    via_path, via_pil = model.predict([tmp_path / "phone.jpg", Image.open(tmp_path / "phone.jpg")])
    assert via_path.prob.shape == via_pil.prob.shape == (50, 30)
    np.testing.assert_array_equal(via_path.prob, via_pil.prob)


def test_a_damaged_model_directory_is_one_line_naming_it(model, tmp_path):
    with pytest.raises(PipelineError, match=r"nowhere: not a model directory \(no such folder"):
        load_segmenter(tmp_path / "nowhere")
    model.save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m/model.safetensors")
    del weights["head.classifier.bias"]  # the mixin's own loader would accept this (strict=False)
    save_file(weights, tmp_path / "m/model.safetensors")
    with pytest.raises(PipelineError, match=r"cannot load model .*m: .*classifier.bias"):
        load_segmenter(tmp_path / "m")
    (tmp_path / "m/model.safetensors").unlink()
    with pytest.raises(PipelineError, match=r"m: not a model directory \(no model.safetensors"):
        load_segmenter(tmp_path / "m")
