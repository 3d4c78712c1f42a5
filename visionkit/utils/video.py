"""Video in and out through PyAV (FFmpeg): frames of files, webcams and rtsp/http streams read lazily as RGB
arrays, and H.264 files written atomically with the source's fps, size and audio. Errors name the source."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_path
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
QUEUED_FRAMES = 32  # frames waiting for the encoding thread: enough to ride out a slow frame, bounded memory
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "flac", "opus"}  # audio codecs an .mp4 carries as they are


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


class VideoWriter:
    """An H.264 .mp4 written to a hidden file beside `path` and moved there on `close()`, so `path` is either the
    whole video or absent; after Ctrl-C, `close()` still finishes the file so what was written plays.

    fps: frames per second (a Fraction keeps 29.97 exact); audio_from: a video whose audio streams are copied
    (packets as they are, when .mp4 carries their codec). Frames are RGB H x W x 3 uint8 of one size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | Fraction,
        audio_from: str | None = None,
        crf: int = 20,
    ) -> None:
        av = _av()
        self.path = Path(path)
        self._target = atomic_path(self.path, ".mp4")
        self.container = av.open(str(self._target.__enter__()), "w", format="mp4")
        self.rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self.video: Any = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._audio_out: dict[int, Any] = {}  # id of an input audio stream -> its copy in the output
        self._audio_in: Any = None
        self._audio_packets: Iterator[Any] | None = None
        self._pending: Any = None
        self.audio_from = audio_from if audio_from and not is_webcam(audio_from) and not is_stream(audio_from) else None
        self._frames: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=QUEUED_FRAMES)
        self._failure: Exception | None = None
        self._dropping = False  # a second Ctrl-C while closing: skip the frames still queued
        self._encoded = 0
        self._encoder = threading.Thread(target=self._encode_queued, name="visionkit-encode", daemon=True)
        self._encoder.start()

    def _copy_audio_from(self, source: str) -> None:
        av = _av()
        try:
            self._audio_in = av.open(source, metadata_errors="ignore")
        except av.error.FFmpegError:
            return
        for stream in self._audio_in.streams.audio:
            if stream.codec_context.name not in MP4_AUDIO:
                log.warning(f"{source}: audio in {stream.codec_context.name} is not copied (an .mp4 cannot hold it)")
                continue
            self._audio_out[id(stream)] = self.container.add_stream_from_template(stream)
        copied = [s for s in self._audio_in.streams.audio if id(s) in self._audio_out]
        if copied:
            self._audio_packets = self._audio_in.demux(*copied)
        else:
            self._audio_in.close()
            self._audio_in = None

    def _open_video(self, height: int, width: int) -> None:
        self.video = self.container.add_stream("libx264", rate=self.rate)
        self.video.width, self.video.height = width, height
        even = width % 2 == 0 and height % 2 == 0
        self.video.pix_fmt = "yuv420p" if even else "yuv444p"  # 4:2:0 needs even sides; 4:4:4 keeps odd ones
        self.video.options = {"crf": str(self.crf), "preset": "veryfast"}
        self.video.codec_context.time_base = 1 / self.rate
        if self.audio_from:  # after the video, so the video is the file's first stream
            self._copy_audio_from(self.audio_from)

    def _mux_audio_until(self, seconds: float) -> None:
        """Copy audio packets up to `seconds`, interleaved with the video as it goes."""
        if self._audio_packets is None:
            return
        av = _av()
        while True:
            packet = self._pending
            self._pending = None
            if packet is None:
                try:
                    packet = next(self._audio_packets)
                except (StopIteration, av.error.FFmpegError):  # the end, or a damaged audio track: keep the video
                    self._audio_packets = None
                    return
            if packet.dts is None:
                continue
            when = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            if when > seconds:
                self._pending = packet
                return
            packet.stream = self._audio_out[id(packet.stream)]
            self.container.mux(packet)

    def write(self, image: np.ndarray) -> None:
        """Append one RGB frame (the first frame sets the video's size). A copy is encoded in a thread while the
        caller makes the next frames; a failure there (a full disk) is raised here or by `close()`."""
        self._raise_failure()
        if self.size is None:
            self.size = (int(image.shape[0]), int(image.shape[1]))
        if image.shape[:2] != self.size:
            raise VisionkitError(
                f"{self.path}: frame of {image.shape[1]}x{image.shape[0]}, video is {self.size[1]}x{self.size[0]}"
            )
        self._frames.put(np.array(image, dtype=np.uint8, order="C"))  # a copy: the caller may reuse its array
        self.frames += 1

    def _encode_queued(self) -> None:
        """The encoding thread: H.264-encode and mux the queued frames until `close()` sends None (PyAV lets go
        of the GIL while x264 works, so encoding overlaps the caller's decoding, network and drawing)."""
        av = _av()
        while (image := self._frames.get()) is not None:
            if self._failure is not None or self._dropping:
                continue  # keep taking frames, so write() and close() never wait on a full queue
            try:
                if self.video is None:
                    self._open_video(*image.shape[:2])
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = self._encoded
                for packet in self.video.encode(frame):
                    self.container.mux(packet)
                self._encoded += 1
                self._mux_audio_until(self._encoded / float(self.rate))
            except Exception as exc:  # raised in the caller's thread by write() or close()
                self._failure = exc

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise VisionkitError(f"{self.path}: writing the video failed: {self._failure}") from self._failure

    def _finish_encoding(self) -> bool:
        """Wait for the queued frames to be encoded; True when a Ctrl-C came meanwhile (the frames still queued
        are then dropped and what was encoded is kept)."""
        try:
            self._frames.put(None)
            self._encoder.join()
        except KeyboardInterrupt:
            self._dropping = True
            self._frames.put(None)  # in case the first put was what the Ctrl-C interrupted
            self._encoder.join()
            return True
        return False

    def close(self) -> Path | None:
        """Encode what is queued, flush the encoder, copy the audio up to the video's end and move the file into
        place; None when no frame came. After a failed write the partial file is removed and the error raised."""
        if self.container is None:
            return self.path if self.path.exists() else None
        interrupted = self._finish_encoding()
        failure = None
        try:
            self._raise_failure()
            if self.video is not None:
                for packet in self.video.encode(None):
                    self.container.mux(packet)
                self._mux_audio_until(self._encoded / float(self.rate))  # audio as long as the video
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with contextlib.suppress(*(() if failure is None else (Exception,))):  # `failure` is the one to raise
                self.container.close()
            self.container = None
            if self._audio_in is not None:
                self._audio_in.close()
            if failure is None:
                self._target.__exit__(None, None, None)  # moved into place
            else:
                with contextlib.suppress(BaseException):  # the hidden file removed; `failure` goes on up
                    self._target.__exit__(type(failure), failure, failure.__traceback__)
        if not self._encoded:
            self.path.unlink(missing_ok=True)
        if interrupted:
            raise KeyboardInterrupt
        return self.path if self._encoded else None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_output(output: str | os.PathLike[str], source: object, overwrite: bool) -> Path:
    """An output file that may be written: not the input itself, and not an existing file unless `overwrite`."""
    path = Path(output)
    if not is_webcam(source) and not is_stream(source) and Path(str(source)).resolve() == path.resolve():
        raise VisionkitError(f"output {path} is the input video; give another output path")
    if path.exists() and not overwrite:
        raise VisionkitError(f"{path} exists; pass overwrite=true (or --overwrite) to replace it, or another name")
    if path.suffix.lower() != ".mp4":
        raise VisionkitError(f"output {path}: videos are written as .mp4 (H.264); name it {path.with_suffix('.mp4')}")
    return path
