"""`selfment segment CLIP`: three videos (lossless map and mask, H.264 overlay) of the selected frames at the
clip's size and rate; each map frame is exactly segment's map of that decoded frame; a killed run resumes to
the same videos; overlays and bilateral refinement of photos."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipeline.core.metrics import to_uint8
from pipeline.core.overlay import overlay
from pipeline.head.model import Head
from pipeline.head.postprocess import bilateral_solve
from pipeline.head.segmenter import Segmenter
from pipeline.head.video import VideoWriter, probe, read_frames
from stages.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_model_dir):
    torch.manual_seed(2)
    seg = Segmenter.from_head(Head(32, 16, 8), backbone=str(tiny_model_dir), resolutions=[56], threshold=0.5)
    d = tmp_path_factory.mktemp("model")
    seg.save_pretrained(d)
    return d, seg


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """21 frames 64 x 48 at 12 fps: a bright square moving over a dark gradient."""
    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    with VideoWriter(path, 12, 64, 48) as w:
        for t in range(21):
            f = np.tile(np.linspace(20, 90, 64, dtype=np.uint8), (48, 1))[..., None].repeat(3, 2)
            f[10:30, 2 + 2 * t:22 + 2 * t] = (230, 200, 40)
            w.write(np.ascontiguousarray(f))
    return path


def segment(tmp_path, write_params, *args):
    params = write_params(tmp_path / "params.yaml", {"backbone": {"batch_size": 2, "device": "cpu"}})
    r = CliRunner().invoke(main, ["segment", "--params", str(params), *map(str, args)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def frames_of(path):
    return [f for _, batch in read_frames(path) for f in batch]


def test_a_clip_gives_three_videos_whose_frames_are_segments_maps_and_a_killed_run_resumes(
        model, clip, tmp_path, write_params, monkeypatch):
    import stages.segment as stage

    d, seg = model
    out = segment(tmp_path, write_params, clip, "--model", d, "--out", tmp_path / "v", "--first-frame", 1, "--stride", 2)
    assert "10 frames, 64x48, 6 fps" in out
    selected = [f for _, batch in read_frames(clip, 1, None, 2) for f in batch]
    for name in ("walk.map.mkv", "walk.mask.mkv", "walk.overlay.mp4"):
        info = probe(tmp_path / "v" / name)
        assert (info.frames, info.width, info.height, info.fps) == (10, 64, 48, 6), name
    probs = list(seg.maps([(f, f.shape[:2]) for f in selected], 2, "cpu"))  # segment's maps of the decoded frames
    maps = [to_uint8(p) for p in probs]
    for got, m in zip(frames_of(tmp_path / "v/walk.map.mkv"), maps):
        np.testing.assert_array_equal(got[..., 0], m)   # lossless: the exact map
    for got, p in zip(frames_of(tmp_path / "v/walk.mask.mkv"), probs):
        np.testing.assert_array_equal(got[..., 0], (p > 0.5) * 255)
    drawn = frames_of(tmp_path / "v/walk.overlay.mp4")  # H.264: close to the overlay drawn
    assert np.mean([np.abs(g.astype(int) - overlay(f, m / 255, 0.5)).mean() for g, f, m in zip(drawn, selected, maps)]) < 6
    assert not list((tmp_path / "v").glob(".*partial"))  # the resume state is gone once the videos are written

    real, calls = stage.pack, []

    def killed_in_third_unit(*a):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*a)

    monkeypatch.setattr(stage, "pack", killed_in_third_unit)
    with pytest.raises(RuntimeError, match="killed"):
        segment(tmp_path, write_params, clip, "--model", d, "--out", tmp_path / "k", "--first-frame", 1, "--stride", 2)
    assert not (tmp_path / "k/walk.map.mkv").exists()
    calls.clear()
    monkeypatch.setattr(stage, "pack", lambda *a: (calls.append(1), real(*a))[1])
    segment(tmp_path, write_params, clip, "--model", d, "--out", tmp_path / "k", "--first-frame", 1, "--stride", 2)
    assert len(calls) == 3  # units 3, 4, 5 of 5: the first two were kept
    for name in ("walk.map.mkv", "walk.mask.mkv"):
        assert all((a == b).all() for a, b in zip(frames_of(tmp_path / "k" / name), frames_of(tmp_path / "v" / name)))


def test_under_torchrun_the_ranks_share_the_frames_and_rank_0_writes_the_same_videos(model, clip, tmp_path,
                                                                                       write_params):
    import os
    import subprocess
    import sys
    from pathlib import Path

    d, _ = model
    params = write_params(tmp_path / "params.yaml", {"backbone": {"batch_size": 2, "device": "cpu"}})
    args = ["segment", "--params", str(params), str(clip), "--model", str(d), "--first-frame", "1", "--stride", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(Path(sys.executable).parent / "selfment"), *args, "--out", str(tmp_path / "one")], env=env,
                   check=True, capture_output=True)
    r = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2",
                        "--no-python", "selfment", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("walk.map.mkv", "walk.mask.mkv"):
        one, two = frames_of(tmp_path / "one" / name), frames_of(tmp_path / "two" / name)
        assert len(one) == len(two) == 10 and all((a == b).all() for a, b in zip(one, two)), name


def test_photos_get_overlays_and_bilateral_refinement(model, tmp_path, write_params):
    d, seg = model
    pixels = np.tile(np.linspace(30, 120, 52, dtype=np.uint8), (40, 1))[..., None].repeat(3, 2)
    pixels[8:30, 10:34] = (220, 60, 40)  # smooth, so JPEG keeps it close
    Image.fromarray(pixels).save(tmp_path / "p.png")
    segment(tmp_path, write_params, tmp_path / "p.png", "--model", d, "--out", tmp_path / "o", "--overlay",
            "--postprocess", "bilateral")
    prob = bilateral_solve(pixels, next(seg.maps([(pixels, (40, 52))], 1, "cpu")))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o/p.png")), to_uint8(prob))
    drawn = np.asarray(Image.open(tmp_path / "o/p.overlay.jpg")).astype(int)  # JPEG: close to the drawing
    assert np.abs(drawn - overlay(pixels, prob, 0.5)).mean() < 8
