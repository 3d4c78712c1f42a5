"""A predictor run over a video, webcam or stream: frames in batches through `Predictor.stream`, out as an
annotated .mp4 (the source's fps and size, audio copied), a per-frame JSON and the task's extras (YOLO txt per
frame, the mask video, track ids and tracks.csv, a replaced background). Ctrl-C closes every file first."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from visionkit.errors import VisionkitError
from visionkit.inference.base import Predictor
from visionkit.inference.result import Result
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger
from visionkit.utils.palette import colorize
from visionkit.utils.video import VideoReader, video_name
from visionkit.utils.video_writer import VideoWriter, check_output

if TYPE_CHECKING:
    from visionkit.inference.segmentation import SegmentationResult
    from visionkit.inference.stylizer import StylizedResult

log = get_logger(__name__)


@dataclass
class VideoOptions:
    """Which frames (stride, start/end seconds, max_frames, timeout for streams and webcams), what to add
    (track with `tracker`; background with `foreground` classes and `feather` px, segmentation only) and what
    to write (the annotated video at `output` or `<folder>/<name>.mp4`, `save_txt`, `save_masks`, `save_json`);
    smoothing: a fast stylizer's temporal smoothing strength (0 = off; flicker is measured either way)."""

    stride: int = 1
    start: float | None = None
    end: float | None = None
    max_frames: int | None = None
    timeout: float = 10.0
    track: bool = False
    tracker: str = "bytetrack"
    background: str | None = None
    foreground: Sequence[str | int] | None = None
    feather: float = 3.0
    save_txt: bool = False
    save_masks: bool = True
    save_json: bool = True
    smoothing: float = 0.0
    output: str | None = None
    overwrite: bool = False


class _FrameJson:
    """`<name>.json`: a JSON list written one frame at a time (memory stays flat), moved into place at the end."""

    def __init__(self, path: Path) -> None:
        self.context = atomic_write(path, "w")
        self.handle = self.context.__enter__()
        self.handle.write("[")
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        self.handle.write(("," if self.count else "") + "\n" + json.dumps(record))
        self.count += 1

    def close(self) -> None:
        self.handle.write("\n]\n")
        self.context.__exit__(None, None, None)


class _Progress:
    """A progress bar with frames/s (rich), the total when the source tells its length."""

    def __init__(self, total: int | None, name: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn(f"{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} frames/s"),
            TimeElapsedColumn(),
            transient=False,
        )
        self.task = self.progress.add_task(name, total=total, rate="-")
        self.started = time.perf_counter()
        self.done = 0
        self.progress.start()

    def advance(self) -> None:
        self.done += 1
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=1, rate=f"{rate:.1f}")

    def close(self) -> float:
        self.progress.stop()
        return self.done / max(time.perf_counter() - self.started, 1e-9)


def _until_interrupted(frames: Iterable[Any], stop: dict[str, bool]) -> Iterator[Any]:
    """The frames until Ctrl-C, which ends them instead of the run: the frames read so far still go through the
    network and into the files."""
    try:
        yield from frames
    except KeyboardInterrupt:
        stop["interrupted"] = True


def _picture(result: Result, background: Any, keep: list[int], smoothing: Any, feather: float) -> np.ndarray:
    """The frame written for `result`: stylized (smoothed), its background replaced (keeping classes `keep`), or
    the result drawn."""
    if smoothing is not None:  # a stylizer's
        return smoothing(result.original, cast("StylizedResult", result).image)
    if background is None:
        return result.plot()
    from visionkit.inference.background import replace_background

    mask = cast("SegmentationResult", result).mask  # background replacement is for segmentation checkpoints
    return replace_background(result.original, mask, background, keep, result.names, feather)


def predict_video(
    predictor: Predictor, source: str, folder: str | Path, options: VideoOptions | None = None
) -> dict[str, float]:
    """Run `predictor` over the frames of `source` and write the outputs into `folder`; returns the frames
    written, corrupt packets skipped and frames/s, with objects (detection), tracks (tracking) and the flicker
    (fast stylizer) where they apply."""
    options = options or VideoOptions()
    folder = Path(folder)
    task = predictor.task_name
    if options.background is not None and task != "segmentation":
        raise VisionkitError(f"background= needs a segmentation checkpoint; this one is {task}")
    if options.foreground and options.background is None:
        raise VisionkitError("foreground= chooses the classes kept in front of a new background: add background=...")
    if options.track and not predictor.finds_boxes:
        raise VisionkitError(f"track=true needs a detection checkpoint (or detector=...); this one is {task}")
    name = video_name(source)
    output = check_output(options.output or folder / f"{name}.mp4", source, options.overwrite)
    reader = VideoReader(source, options.stride, options.start, options.end, options.max_frames, options.timeout)
    background, keep = None, []
    if options.background is not None:
        from visionkit.inference.background import Background, foreground_ids

        background = Background(options.background)
        keep = foreground_ids(predictor.names, options.foreground)  # a wrong class name stops before any frame
    tracker = None
    if options.track:
        from visionkit.inference.tracking import ObjectTracker

        tracker = ObjectTracker(options.tracker)
    smoothing = None
    if task == "style_transfer":
        from visionkit.inference.stylizer import TemporalSmoothing

        smoothing = TemporalSmoothing(options.smoothing)
    rate = reader.rate / options.stride
    video = VideoWriter(output, rate, audio_from=source if options.stride == 1 and not options.start else None)
    masks = VideoWriter(folder / f"{name}_mask.mp4", rate) if task == "segmentation" and options.save_masks else None
    frames_json = _FrameJson(folder / f"{name}.json") if options.save_json else None
    progress = _Progress(reader.frame_count, f"{name} ({task})")
    objects, stop = 0, {"interrupted": False}
    try:
        for result in predictor.stream(_until_interrupted(reader, stop), tracker=tracker):
            video.write(_picture(result, background, keep, smoothing, options.feather))
            if masks is not None:
                masks.write(colorize(cast("SegmentationResult", result).mask))
            if options.save_txt and predictor.finds_boxes:
                result.save(folder, f"{name}_{result.frame:06d}.txt", draw=False)
            objects += len(getattr(result, "boxes", ()))
            if frames_json is not None:
                frames_json.add(result.to_dict())
            result.pixels = None
            progress.advance()
    except KeyboardInterrupt:  # during the network's pass: that batch is lost, the rest is kept
        stop["interrupted"] = True
    finally:
        fps = progress.close()
        if frames_json is not None:
            frames_json.close()
        written = video.close()
        if masks is not None:
            masks.close()
    if tracker is not None:
        tracker.write_summary(folder / "tracks.csv", predictor.names, float(rate))
    interrupted = stop["interrupted"]
    stopped = " (stopped by Ctrl-C: what was read is written)" if interrupted else ""
    log.info(
        f"{name}: {progress.done} frame(s) at {fps:.1f} frames/s, {reader.skipped} corrupt packet(s) skipped"
        f"{stopped}: {written}"
    )
    counts = {"frames": float(progress.done), "skipped": float(reader.skipped), "frames_per_s": fps}
    if smoothing is not None:
        counts.update(flicker=smoothing.flicker, raw_flicker=smoothing.raw_flicker)
        log.info(
            f"flicker {smoothing.flicker:.2f} (unsmoothed {smoothing.raw_flicker:.2f}): the output changes that "
            "many times as much as the input between frames"
        )
    if interrupted:
        raise KeyboardInterrupt
    if predictor.finds_boxes:
        counts["objects"] = float(objects)
    if tracker is not None:
        counts["tracks"] = float(len(tracker.tracks))
    return counts
