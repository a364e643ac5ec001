"""Video I/O (pipeline/head/video.py): clips written here, probed and read back to the frame."""
from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.head.video import VideoInfo, VideoWriter, probe, read_frames, video_codec

N, FPS = 24, 12


def pattern(i: int, h: int, w: int) -> np.ndarray:
    """Frame i: a flat colour that changes by (10, -10, 5) per frame, a fixed colour in the top-left quadrant."""
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = (10 * i, 240 - 10 * i, 5 * i)
    frame[: h // 2, : w // 2] = (200, 30, 90)
    return frame


def write_clip(path: Path, w: int, h: int) -> Path:
    with VideoWriter(path, FPS, w, h) as out:
        for i in range(N):
            out.write(pattern(i, h, w))
    return path


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


@pytest.fixture(scope="module", params=[(64, 48), (65, 49)], ids=["even", "odd"])
def clip(request, tmp_path_factory) -> tuple[Path, int, int]:
    w, h = request.param
    return write_clip(tmp_path_factory.mktemp("video") / f"clip_{w}x{h}.mp4", w, h), w, h


def test_codec_is_h264_in_this_build():
    assert video_codec() == "libx264"  # the PyAV wheel bundles x264; the mpeg4 fallback is for other builds


def test_probe_exact(clip):
    path, w, h = clip
    assert probe(path) == VideoInfo(frames=N, fps=Fraction(FPS), width=w, height=h, has_audio=False)
    assert not list(path.parent.glob("*.tmp*"))            # the temporary sibling was renamed


def test_odd_size_is_kept_in_yuv444(clip):
    path, w, h = clip
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == ("yuv420p" if w % 2 == 0 else "yuv444p")


def test_read_back_every_frame(clip):
    path, w, h = clip
    batches = list(read_frames(path, batch=5))
    assert [len(f) for _, f in batches] == [5, 5, 5, 5, 4]
    indices = [i for idx, _ in batches for i in idx]
    frames = [f for _, fr in batches for f in fr]
    assert indices == list(range(N))
    assert all(f.shape == (h, w, 3) and f.dtype == np.uint8 for f in frames)
    errors = [mae(f, pattern(i, h, w)) for i, f in enumerate(frames)]
    assert max(errors) < 4                                   # lossy H.264 on flat colours: observed <= 2.9
    for i, f in enumerate(frames):                           # and each frame is its own, not a neighbour
        assert int(np.argmin([mae(f, pattern(j, h, w)) for j in range(N)])) == i


def test_start_stride_max_frames(clip):
    path, w, h = clip
    got = list(read_frames(path, start=3, max_frames=5, stride=4, batch=2))
    assert [idx for idx, _ in got] == [[3, 7], [11, 15], [19]]
    for idx, frames in got:
        for i, f in zip(idx, frames):
            assert mae(f, pattern(i, h, w)) < 4
    assert [idx for idx, _ in read_frames(path, start=20, stride=2)] == [[20, 22]]   # runs out before max
    assert list(read_frames(path, start=N)) == []


def test_mkv_has_no_stored_count_and_is_counted(tmp_path):
    path = write_clip(tmp_path / "clip.mkv", 32, 16)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0                # Matroska records no count: decoded and counted
    info = probe(path)
    assert (info.frames, info.fps, info.width, info.height) == (N, FPS, 32, 16)


def test_grayscale_frames_and_fractional_rate(tmp_path):
    path = tmp_path / "gray.mp4"
    with VideoWriter(path, Fraction(30000, 1001), 32, 32) as out:
        for i in range(10):
            out.write(np.full((32, 32), 20 * i, np.uint8))
    assert probe(path).fps == Fraction(30000, 1001)
    means = [f.mean(axis=(0, 1)) for _, fr in read_frames(path) for f in fr]
    np.testing.assert_allclose(means, np.repeat(20 * np.arange(10), 3).reshape(10, 3), atol=2)


def test_audio_stream_is_ignored(tmp_path):
    path = tmp_path / "with_audio.mp4"
    with av.open(str(path), "w") as c:
        video = c.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = c.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i in range(N):
            c.mux(video.encode(av.VideoFrame.from_ndarray(pattern(i, 48, 64), format="rgb24")))
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(2 * 48000) / 48000)).astype(np.float32)
        for k in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, k
            c.mux(audio.encode(frame))
        c.mux(video.encode(None))
        c.mux(audio.encode(None))
    assert probe(path).has_audio and probe(path).frames == N
    frames = [f for _, fr in read_frames(path) for f in fr]
    assert len(frames) == N and mae(frames[10], pattern(10, 48, 64)) < 4


def test_not_a_video_names_the_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    for call in (probe, lambda p: next(read_frames(p))):
        with pytest.raises(PipelineError, match="notes.mp4: not a readable video"):
            call(text)
    sound = tmp_path / "beep.wav"
    with wave.open(str(sound), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000)
        f.writeframes(np.zeros(800, np.int16).tobytes())
    with pytest.raises(PipelineError, match="beep.wav: has no video stream"):
        probe(sound)
    with pytest.raises(PipelineError, match="missing.mp4: not a readable video"):
        probe(tmp_path / "missing.mp4")


def test_writer_refuses_a_wrong_frame_and_leaves_no_file(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(PipelineError, match=r"out.mp4: frame \(48, 64, 3\) uint8 is not \(48, 65\[, 3\]\)"):
        with VideoWriter(path, FPS, 65, 48) as out:
            out.write(pattern(0, 48, 65))
            out.write(pattern(1, 48, 64))
    assert list(tmp_path.iterdir()) == []                    # neither the clip nor its temporary
    with pytest.raises(PipelineError, match="out.xyz: cannot write a video here"):
        VideoWriter(tmp_path / "out.xyz", FPS, 64, 48)


def test_bad_read_arguments(clip):
    path, _, _ = clip
    with pytest.raises(PipelineError, match="stride >= 1"):
        next(read_frames(path, stride=0))


def test_a_lossless_video_decodes_to_the_exact_pixels_written(tmp_path):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (49, 65), dtype=np.uint8) for _ in range(4)]  # noise: nothing to smooth
    with VideoWriter(tmp_path / "m.mkv", 10, 65, 49, lossless=True) as w:
        for f in frames:
            w.write(f)
    back = [f for _, batch in read_frames(tmp_path / "m.mkv", batch=2) for f in batch]
    assert len(back) == 4 and all((b[..., 0] == f).all() and (b[..., 2] == f).all() for b, f in zip(back, frames))
