"""Video in through PyAV (FFmpeg): frames of files, webcams and rtsp/http streams read lazily as RGB arrays, and
what names a video source. Errors name the source. (Writing: `visionkit.utils.video_writer`.)"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a dependency; a broken install says how to fix it
        raise VisionkitError("video needs PyAV: pip install av") from exc
    return av


def is_webcam(source: object) -> bool:
    """A webcam index (`0`, `1`, ...) or a capture device path (/dev/video0)."""
    text = str(source)
    return text.isdigit() or text.startswith("/dev/video")


def is_stream(source: object) -> bool:
    """An rtsp/rtmp/http(s)/udp/srt URL that is not a picture file."""
    text = str(source).lower()
    return text.startswith(STREAM_SCHEMES) and not text.split("?")[0].endswith((".jpg", ".jpeg", ".png", ".webp"))


def is_video_source(source: object) -> bool:
    """True for what `VideoReader` opens: video files (by extension), webcams and stream URLs."""
    if isinstance(source, int) and not isinstance(source, bool):
        return source >= 0  # a webcam index (Hydra reads source=0 as a number)
    if source is None or not isinstance(source, (str, os.PathLike)):
        return False
    return Path(str(source)).suffix.lower() in VIDEO_EXTENSIONS or is_webcam(source) or is_stream(source)


def video_name(source: object) -> str:
    """A file-name stem for a source's outputs: the file's stem, `webcam0`, or the stream's host and path."""
    text = str(source)
    if is_webcam(text):
        return f"webcam{re.sub(r'[^0-9]', '', text) or 0}"
    if is_stream(text):
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text.split("://", 1)[1]).strip("_")[:80] or "stream"
    return Path(text).stem


@dataclass
class VideoFrame:
    """One decoded frame: RGB pixels (H x W x 3 uint8), its index in the source (counting every frame, so
    `stride` leaves gaps), its time in seconds and the source it came from."""

    image: np.ndarray
    index: int
    time: float
    source: str


class VideoReader:
    """Frames of a video file, webcam or stream, decoded one at a time (memory does not grow with the length).

    stride: keep every stride-th frame; start/end: seconds (files: the reader seeks to `start`); max_frames: stop
    after this many kept frames; timeout: seconds to wait for a stream or webcam to open and for each read.
    A frame that fails to decode is skipped and counted (`skipped`); a file that ends early (truncated) keeps the
    frames read so far, with a warning.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | int,
        stride: int = 1,
        start: float | None = None,
        end: float | None = None,
        max_frames: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        if stride < 1 or (max_frames is not None and max_frames < 1):
            raise VisionkitError(f"stride={stride}, max_frames={max_frames}: give stride ≥ 1 and max_frames ≥ 1")
        if start is not None and end is not None and end <= start:
            raise VisionkitError(f"start={start}, end={end}: end must come after start (seconds)")
        self.source = str(source)
        self.stride, self.start, self.end, self.max_frames = int(stride), start, end, max_frames
        self.skipped = 0
        self.read = 0
        self.container = self._open(timeout)
        streams = self.container.streams.video
        if not streams:
            self.container.close()
            raise VisionkitError(f"{self.source} holds no video stream (is it an audio file?)")
        self.stream = streams[0]
        self.stream.thread_type = "AUTO"  # frame and slice threads in the decoder
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.rate = Fraction(rate) if rate else Fraction(30)
        self.width, self.height = int(self.stream.codec_context.width), int(self.stream.codec_context.height)
        self.has_audio = bool(self.container.streams.audio)

    def _open(self, timeout: float) -> Any:
        av = _av()
        source, options, fmt = self.source, {}, None
        if is_webcam(source):
            device = source if source.startswith("/dev/") else f"/dev/video{source}"
            if sys.platform.startswith("linux"):
                if not Path(device).exists():
                    raise VisionkitError(f"webcam {source}: {device} does not exist (no camera attached, or no access)")
                source, fmt = device, "v4l2"
            elif sys.platform == "darwin":
                fmt = "avfoundation"
            else:
                source, fmt = f"video={source}", "dshow"
        elif not is_stream(source):
            path = Path(source)
            if not path.is_file():
                raise VisionkitError(f"video {source} does not exist")
            if path.stat().st_size == 0:
                raise VisionkitError(f"video {source} is empty (0 bytes)")
        if is_stream(source) and source.lower().startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
        try:
            return av.open(source, format=fmt, options=options, timeout=(timeout, timeout), metadata_errors="ignore")
        except av.error.TimeoutError as exc:
            raise VisionkitError(f"{self.source}: no answer within {timeout:.0f} s (is the stream up?)") from exc
        except (av.error.FFmpegError, OSError) as exc:
            if is_stream(self.source) or is_webcam(self.source):
                raise VisionkitError(
                    f"{self.source}: cannot open it ({exc}); check the address and that it is up"
                ) from exc
            raise VisionkitError(f"{self.source} is not a video FFmpeg can read: {exc}") from exc

    @property
    def fps(self) -> float:
        return float(self.rate)

    @property
    def frame_count(self) -> int | None:
        """The number of frames the reader will keep, when the source says how many it has (files)."""
        total = int(self.stream.frames or 0)
        if not total and self.stream.duration and self.stream.time_base:
            total = round(float(self.stream.duration * self.stream.time_base) * self.fps)
        if not total:
            return None
        first = round((self.start or 0) * self.fps)
        last = min(total, round(self.end * self.fps)) if self.end is not None else total
        kept = max(0, -(-(last - first) // self.stride))
        return min(kept, self.max_frames) if self.max_frames else kept

    def _decoded(self) -> Iterator[Any]:
        av = _av()
        if self.start:
            self.container.seek(int(self.start / self.stream.time_base), stream=self.stream, backward=True)
        try:
            for packet in self.container.demux(self.stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    self.skipped += 1
                    continue
                yield from frames
        except av.error.FFmpegError as exc:  # the container itself is cut short
            log.warning(f"{self.source}: the video ends early after {self.read} frames ({exc})")
        with contextlib.suppress(av.error.FFmpegError):  # the decoder's last frames
            yield from self.stream.codec_context.decode(None)

    def __iter__(self) -> Iterator[VideoFrame]:
        position = -1
        try:
            for frame in self._decoded():
                seconds = float(frame.time) if frame.time is not None else (position + 1) / self.fps
                if self.start is not None and seconds < self.start - 0.5 / self.fps:
                    continue
                if self.end is not None and seconds >= self.end:
                    break
                position += 1
                index = round(seconds * self.fps) if frame.time is not None else position
                if position % self.stride:
                    continue
                self.read += 1
                yield VideoFrame(frame.to_ndarray(format="rgb24"), index, seconds, self.source)
                if self.max_frames and self.read >= self.max_frames:
                    break
        finally:
            self.close()
        if not self.read:
            raise VisionkitError(f"{self.source}: no video frame could be read (0 decoded, {self.skipped} corrupt)")
        if self.skipped:
            log.warning(f"{self.source}: {self.skipped} corrupt packet(s) skipped, {self.read} frame(s) read")

    def close(self) -> None:
        self.container.close()


def video_frames(
    source: str | os.PathLike[str] | int,
    stride: int = 1,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    timeout: float = 10.0,
) -> Iterator[VideoFrame]:
    """The frames of a video file, webcam index or stream URL, lazily (see `VideoReader`); feed them to
    `Predictor.stream`: `for r in load_predictor(ckpt).stream(video_frames("street.mp4")): ...`."""
    return iter(VideoReader(source, stride, start, end, max_frames, timeout))
