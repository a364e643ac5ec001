"""Video files through PyAV (FFmpeg): probe a clip, read its frames in bounded batches, write a clip.

Frames are (H, W, 3) uint8 RGB numpy arrays on both sides. Reading decodes the first video stream in
order (no seeking: indices are exact, at the cost of decoding the frames before ``start``); audio and
other streams are never decoded. Writing is atomic, as ``pipeline.core.files.atomic_write``: a temporary
sibling renamed on success, removed on failure.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class VideoInfo:
    frames: int       # decodable frames of the first video stream
    fps: Fraction     # its average frame rate
    width: int
    height: int
    has_audio: bool


@functools.cache
def video_codec() -> str:
    """The encoder ``VideoWriter`` uses: ``libx264`` (H.264) where this PyAV build has it, else ``mpeg4``."""
    try:
        av.Codec("libx264", "w")
    except av.codec.codec.UnknownCodecError:
        return "mpeg4"
    return "libx264"


@functools.cache
def lossless_codec() -> str:
    """The encoder of ``VideoWriter(lossless=True)``: H.264 in RGB at quantiser 0 (``libx264rgb``: every pixel
    decodes exactly as written) where this PyAV build has it, else FFV1 (lossless too; Matroska only)."""
    try:
        av.Codec("libx264rgb", "w")
    except av.codec.codec.UnknownCodecError:
        return "ffv1"
    return "libx264rgb"


def _open(path: Path | str):
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise PipelineError(f"{path}: not a readable video ({exc.strerror or exc})") from None
    if not container.streams.video:
        container.close()
        raise PipelineError(f"{path}: has no video stream")
    return container


def _decoded(container, path: Path | str) -> Iterator[av.VideoFrame]:
    """The first video stream's frames in presentation order, decode errors as PipelineError."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
        yield from container.decode(stream)
    except av.FFmpegError as exc:
        raise PipelineError(f"{path}: undecodable video ({exc.strerror or exc})") from None


def probe(path: Path | str) -> VideoInfo:
    """Frame count, frame rate, size and whether an audio stream is present. The count is the container's
    where it records one (MP4, MOV); where it records none (0: Matroska, WebM, raw streams) the frames
    are decoded and counted."""
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate
        if not fps:
            raise PipelineError(f"{path}: video stream has no frame rate")
        info = VideoInfo(frames=stream.frames, fps=Fraction(fps), width=stream.codec_context.width,
                         height=stream.codec_context.height, has_audio=bool(container.streams.audio))
        return info if info.frames > 0 else replace(info, frames=sum(1 for _ in _decoded(container, path)))


def read_frames(path: Path | str, start: int = 0, max_frames: int | None = None, stride: int = 1,
                batch: int = 8) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """Yield (frame indices, RGB frames) for frames start, start + stride, ... (at most ``max_frames``,
    None: to the end), ``batch`` at a time (the last batch may be shorter): memory holds one batch,
    whatever the clip's length. Indices count decoded frames from 0."""
    if start < 0 or stride < 1 or batch < 1 or (max_frames is not None and max_frames < 1):
        raise PipelineError(f"{path}: read_frames needs start >= 0, stride >= 1, batch >= 1 and max_frames "
                            f"None or >= 1 (got {start}, {stride}, {batch}, {max_frames})")
    last = None if max_frames is None else start + (max_frames - 1) * stride
    with _open(path) as container:
        indices, frames = [], []
        for i, frame in enumerate(_decoded(container, path)):
            if i >= start and (i - start) % stride == 0:
                indices.append(i)
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == batch or (i == last and frames):
                yield indices, frames
                indices, frames = [], []
            if i == last:
                return
        if frames:
            yield indices, frames


class VideoWriter:
    """``with VideoWriter(path, fps, width, height) as out: out.write(frame)`` for (height, width, 3) RGB or
    (height, width) grayscale uint8 frames; the container follows the file's suffix (.mp4, .mkv, ...).

    Codec ``video_codec()``: H.264 (libx264, its default quality) in yuv420p, the pixel format every player
    decodes. yuv420p halves the chroma in both directions, so H.264 cannot code an odd width or height in
    it (even its cropping moves in 2-px steps); an odd size is written in yuv444p instead (H.264 High 4:4:4:
    exact size and no padding, played by FFmpeg-based players, not by most browsers). The mpeg4 fallback
    codes any size in yuv420p. ``lossless``: :func:`lossless_codec` (maps and masks, which are data: each
    frame decodes to the exact pixels written; FFmpeg-based players show them, browsers do not).
    """

    def __init__(self, path: Path | str, fps: Fraction | float, width: int, height: int, lossless: bool = False):
        self.path, self.width, self.height = Path(path), int(width), int(height)
        if self.width < 1 or self.height < 1 or fps <= 0:
            raise PipelineError(f"{self.path}: video size {width}x{height} at {fps} fps is not valid")
        self.codec = lossless_codec() if lossless else video_codec()
        odd = self.width % 2 or self.height % 2
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f"{self.path.stem}.tmp{self.path.suffix}")
        try:
            self._container = av.open(str(self._tmp), "w")
        except (av.FFmpegError, ValueError) as exc:  # ValueError: a suffix that names no container format
            raise PipelineError(f"{self.path}: cannot write a video here ({exc})") from None
        self._stream = self._container.add_stream(self.codec, rate=Fraction(fps).limit_denominator(1_000_000))
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = ("rgb24" if self.codec == "libx264rgb" else "bgr0" if self.codec == "ffv1" else
                                "yuv444p" if self.codec == "libx264" and odd else "yuv420p")
        if self.codec == "libx264rgb":
            self._stream.options = {"qp": "0"}  # lossless
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame)
        if frame.dtype != np.uint8 or frame.shape not in ((self.height, self.width),
                                                          (self.height, self.width, 3)):
            raise PipelineError(f"{self.path}: frame {frame.shape} {frame.dtype} is not "
                                f"({self.height}, {self.width}[, 3]) uint8")
        picture = av.VideoFrame.from_ndarray(frame, format="gray" if frame.ndim == 2 else "rgb24")
        picture.pts = self.frames
        self._mux(picture)
        self.frames += 1

    def _mux(self, picture: av.VideoFrame | None) -> None:
        try:
            self._container.mux(self._stream.encode(picture))
        except av.FFmpegError as exc:
            raise PipelineError(f"{self.path}: encoding failed ({exc})") from None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        done = False
        try:
            if exc_type is None:
                self._mux(None)              # the encoder's delayed frames
                self._container.close()      # the trailer (MP4: its index)
                done = True
        except av.FFmpegError as err:
            raise PipelineError(f"{self.path}: finishing the video failed ({err})") from None
        finally:
            if done:
                self._tmp.replace(self.path)
            else:
                self._container.close()
                self._tmp.unlink(missing_ok=True)
