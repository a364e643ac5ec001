"""The authors' released head file: imported without running pickled code, into a model directory whose maps
are those of this project's head with the same weights."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipeline.core.maps import save_png
from pipeline.head.model import Head, HeadError
from pipeline.head.release import STATE_KEYS, read_release
from pipeline.head.segmenter import Segmenter, load_segmenter
from stages.cli import main


def release_file(path, dim=32, seed=0, **extra):
    """A head file in the release's layout with known weights; returns the head holding them."""
    torch.manual_seed(seed)
    head = Head(dim).eval()
    state = {k: v.clone() for k, v in head.state_dict().items()}
    assert set(state) == set(STATE_KEYS)  # the release's names are this project's
    torch.save({"model_state": state, "args": {"dino_type": "dinov2", "dino_model_name": "tiny", "img_size": 112},
                **extra}, path)
    return head


class Payload:
    """Unpickling this runs open(marker, 'w'): a stand-in for any code a pickled object can carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_released_head_imports_and_segments_like_the_same_weights_in_this_projects_head(tmp_path, tiny_model_dir,
                                                                                         write_pairs):
    head = release_file(tmp_path / "selfment_head.pth")
    r = CliRunner().invoke(main, ["import-head", str(tmp_path / "selfment_head.pth"), "--backbone", str(tiny_model_dir),
                                  "--out", str(tmp_path / "model")])
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "model/config.json").read_text())
    assert config["resolutions"] == [112] and config["source"].startswith("selfment_head.pth (sha256 ")
    assert "Weights imported from the authors' release: `selfment_head.pth (sha256" in (
        tmp_path / "model/README.md").read_text()
    imported = load_segmenter(tmp_path / "model")
    for k, v in head.state_dict().items():
        assert torch.equal(imported.head.state_dict()[k], v)
    images = sorted((write_pairs(tmp_path / "ds", n=3, size=(70, 50)) / "images").iterdir())
    r = CliRunner().invoke(main, ["segment", *map(str, images), "--model", str(tmp_path / "model"),
                                  "--out", str(tmp_path / "maps")])
    assert r.exit_code == 0, r.output
    ours = Segmenter.from_head(head, backbone=str(tiny_model_dir), resolutions=[112])
    for image, out in zip(images, ours.predict(images)):
        save_png(out.prob, tmp_path / "ref.png")
        assert (tmp_path / "maps" / f"{image.stem}.png").read_bytes() == (tmp_path / "ref.png").read_bytes()
        assert np.asarray(Image.open(tmp_path / "ref.png")).std() > 0  # a map, not a constant


def test_a_file_with_a_pickled_object_is_refused_in_one_line_and_its_payload_never_runs(tmp_path, tiny_model_dir):
    marker = tmp_path / "payload-ran"
    release_file(tmp_path / "evil.pth", extra=Payload(marker))
    r = CliRunner().invoke(main, ["import-head", str(tmp_path / "evil.pth"), "--backbone", str(tiny_model_dir),
                                  "--out", str(tmp_path / "model")])
    assert r.exit_code == 2 and not marker.exists() and not (tmp_path / "model").exists()
    [line] = r.output.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'evil.pth'}: refused: it holds objects other than tensors")
    torch.load(tmp_path / "evil.pth", weights_only=False)  # the check can fail: loaded the usual way, it runs
    assert marker.exists()


def test_a_width_other_than_the_backbones_and_other_layouts_are_refused(tmp_path, tiny_model_dir):
    release_file(tmp_path / "wide.pth", dim=384)
    r = CliRunner().invoke(main, ["import-head", str(tmp_path / "wide.pth"), "--backbone", str(tiny_model_dir),
                                  "--out", str(tmp_path / "model")])
    assert r.exit_code == 2 and "the head takes 384-wide features but" in r.output and "gives 32-wide ones" in r.output
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work")
    release_file(tmp_path / "ok.pth")
    r = CliRunner().invoke(main, ["import-head", str(tmp_path / "ok.pth"), "--backbone", str(tiny_model_dir),
                                  "--out", str(user)])
    assert r.exit_code == 2 and "was not made by selfment; nothing was changed" in r.output
    assert [f.name for f in user.iterdir()] == ["thesis.txt"]  # a folder of the user's is never written into
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "half.pth").write_bytes((tmp_path / "ok.pth").read_bytes()[:300])
    for name in ("empty.pth", "half.pth"):
        with pytest.raises(HeadError, match=rf"{name}: not a readable torch file \(.+\)$"):
            read_release(tmp_path / name)
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(HeadError, match="other.pth: no 'model_state' dict"):
        read_release(tmp_path / "other.pth")
    torch.save({"model_state": {"proj.0.weight": torch.zeros(2, 2)}}, tmp_path / "part.pth")
    with pytest.raises(HeadError, match="part.pth: model_state lacks the tensors proj.0.bias"):
        read_release(tmp_path / "part.pth")
