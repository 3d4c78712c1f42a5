"""Object tracking across video frames with ultralytics' own trackers (ByteTrack, BoT-SORT, ...): each frame's
detections go in, boxes with a track id come out; a summary per track (class, first/last frame, length)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.errors import VisionkitError
from visionkit.inference.detection import DetectionResult
from visionkit.utils.io import atomic_write

TRACKERS = ("bytetrack", "botsort")


@dataclass
class TrackSummary:
    """One track over the video: its class (the most frequent), first and last frame, frames seen, mean score."""

    track_id: int
    classes: Counter = field(default_factory=Counter)
    first_frame: int = 0
    last_frame: int = 0
    frames: int = 0
    score_sum: float = 0.0

    @property
    def class_id(self) -> int:
        return int(self.classes.most_common(1)[0][0])


class ObjectTracker:
    """Detections of consecutive frames in, the same objects' ids out, by an ultralytics tracker.

    name: `bytetrack` or `botsort` with the settings of ultralytics' yaml for it (a lost track is kept 30 frames;
    BoT-SORT without re-identification, which would download a model, with its global motion compensation).
    """

    def __init__(self, name: str = "bytetrack") -> None:
        try:
            from ultralytics.trackers.track import TRACKER_MAP
            from ultralytics.utils import YAML, IterableSimpleNamespace
            from ultralytics.utils.checks import check_yaml
        except ImportError:
            raise VisionkitError(f"tracker={name} is ultralytics': pip install 'visionkit[detection]'") from None

        if name not in TRACKERS:
            raise VisionkitError(f"tracker={name}: choose one of {', '.join(TRACKERS)}")
        settings = IterableSimpleNamespace(**YAML.load(check_yaml(f"{name}.yaml")))
        if name == "botsort":
            settings.with_reid = False  # re-identification would download an extra model
        self.name = name
        self.tracker: Any = TRACKER_MAP[name](args=settings)  # ultralytics' BYTETracker or BOTSORT
        self.tracks: dict[int, TrackSummary] = {}

    def update(self, result: DetectionResult, frame_index: int | None = None) -> DetectionResult:
        """The result's boxes as the tracker keeps them (its box, score, class and id), for the next frame in order;
        a box the tracker has not confirmed yet is left out, as ultralytics' `track` does."""
        import torch
        from ultralytics.engine.results import Boxes

        rows = np.column_stack([result.boxes, result.scores, result.classes]).astype(np.float32)
        detections = Boxes(torch.from_numpy(rows.reshape(-1, 6)), result.size).cpu().numpy()
        picture = result.original[..., ::-1] if self.name == "botsort" else None  # BGR, for motion compensation
        tracked = self.tracker.update(detections, picture)
        if len(tracked) == 0:
            tracked = np.zeros((0, 8), np.float32)
        ids = tracked[:, 4].astype(np.int64)
        frame = int((result.frame if frame_index is None else frame_index) or 0)
        for track_id, cls, score in zip(ids.tolist(), tracked[:, 6].tolist(), tracked[:, 5].tolist()):
            summary = self.tracks.setdefault(track_id, TrackSummary(track_id, first_frame=frame))
            summary.classes[int(cls)] += 1
            summary.last_frame, summary.frames = frame, summary.frames + 1
            summary.score_sum += float(score)
        return replace(
            result,
            boxes=tracked[:, :4].astype(np.float32),
            scores=tracked[:, 5].astype(np.float32),
            classes=tracked[:, 6].astype(np.int64),
            track_ids=ids,
            anchors=np.zeros(0, np.int64),
        )

    def write_summary(self, path: Path, names: list[str], fps: float) -> Path:
        """`tracks.csv`: a row per track, longest first (id, class, first/last frame and time, frames, score)."""
        with atomic_write(path, "w") as handle:
            writer = csv.writer(handle)
            writer.writerow(["track_id", "class", "first_frame", "last_frame", "first_s", "last_s", "frames", "score"])
            for track in sorted(self.tracks.values(), key=lambda t: (-t.frames, t.track_id)):
                writer.writerow(
                    [
                        track.track_id,
                        names[track.class_id] if track.class_id < len(names) else track.class_id,
                        track.first_frame,
                        track.last_frame,
                        f"{track.first_frame / fps:.3f}",
                        f"{track.last_frame / fps:.3f}",
                        track.frames,
                        f"{track.score_sum / max(track.frames, 1):.4f}",
                    ]
                )
        return path
