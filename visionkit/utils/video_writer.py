"""H.264 .mp4 files written atomically through PyAV, with the source's fps, size and audio, encoded in a thread
while the caller makes the next frames; and the check of an output path against its input."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_path
from visionkit.utils.logging import get_logger
from visionkit.utils.video import _av, is_stream, is_webcam

log = get_logger(__name__)

QUEUED_FRAMES = 32  # frames waiting for the encoding thread: enough to ride out a slow frame, bounded memory
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "flac", "opus"}  # audio codecs an .mp4 carries as they are


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
            try:
                self.container.close()
            except Exception:
                if failure is None:
                    raise  # else `failure` is the error to report
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
