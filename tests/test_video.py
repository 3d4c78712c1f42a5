"""Video in and out: test videos made here (moving shapes encoded with PyAV), outputs checked by an independent
reader (ffprobe from Debian's ffmpeg when installed, else PyAV's demuxer), tracking with ultralytics' trackers,
background replacement, the fast stylizer's flicker, and bad input named in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TrainedDetector, TrainedSegmenter, compose_config, save_task_checkpoint
from visionkit.data.shapes_video import write_shapes_video
from visionkit.errors import VisionkitError
from visionkit.inference import load_predictor
from visionkit.inference.background import Background, replace_background
from visionkit.inference.detection import DetectionResult
from visionkit.inference.tracking import ObjectTracker
from visionkit.inference.video import VideoOptions, predict_video
from visionkit.utils.video import VideoReader, video_frames
from visionkit.utils.video_writer import VideoWriter


def probe(path: Path) -> dict[str, object]:
    """Frames, fps, size and stream kinds of a video, read by ffprobe (or by PyAV's demuxer without ffprobe,
    unless VISIONKIT_REQUIRE_FFPROBE=1, as .ci/run sets)."""
    if os.environ.get("VISIONKIT_REQUIRE_FFPROBE") == "1" and not shutil.which("ffprobe"):
        pytest.fail("VISIONKIT_REQUIRE_FFPROBE=1 but no ffprobe on PATH (apt-get install ffmpeg)")
    if shutil.which("ffprobe"):
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
             "stream=codec_type,width,height,r_frame_rate,nb_read_packets", "-of", "json", str(path)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        streams = json.loads(out)["streams"]
        video = next(s for s in streams if s["codec_type"] == "video")
        num, den = map(int, video["r_frame_rate"].split("/"))
        frames, fps, size = int(video["nb_read_packets"]), num / den, (int(video["height"]), int(video["width"]))
        return {"frames": frames, "fps": fps, "size": size, "kinds": sorted(s["codec_type"] for s in streams)}
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for p in container.demux(stream) if p.size)
        kinds = sorted(s.type for s in container.streams)
        return {
            "frames": frames,
            "fps": float(stream.average_rate),
            "size": (stream.height, stream.width),
            "kinds": kinds,
        }


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """48 frames of 128x96 at 24 fps with a tone: a circle and a square crossing from left to right."""
    path = tmp_path_factory.mktemp("clip") / "shapes.mp4"
    return path, write_shapes_video(path, frames=48, height=96, width=128, fps=24, audio=True)


def test_a_video_round_trips_with_its_fps_size_and_audio(clip, tmp_path: Path) -> None:
    path, _ = clip
    reader = VideoReader(path)
    assert (reader.fps, reader.width, reader.height, reader.frame_count, reader.has_audio) == (24.0, 128, 96, 48, True)
    with VideoWriter(tmp_path / "copy.mp4", reader.rate, audio_from=str(path)) as writer:
        for frame in reader:
            writer.write(frame.image)
    source, copy = probe(path), probe(tmp_path / "copy.mp4")
    assert copy == source and copy["kinds"] == ["audio", "video"], (source, copy)
    first = next(video_frames(tmp_path / "copy.mp4"))
    original = next(video_frames(path))
    assert np.abs(first.image.astype(int) - original.image.astype(int)).mean() < 3  # H.264 at crf 20


def test_the_encoding_thread_keeps_each_frame_as_written_and_names_the_file_when_it_fails(tmp_path: Path) -> None:
    """Frames are encoded in a thread: an array reused by the caller after write() is encoded as it was then, and
    a failure there (x264 refusing a 40000 px wide frame) comes back as the file's error, leaving no file."""
    canvas = np.zeros((64, 96, 3), np.uint8)
    with VideoWriter(tmp_path / "reused.mp4", 10) as writer:
        for value in (40, 200, 120):
            canvas[:] = value  # the same array, changed after each write
            writer.write(canvas)
    means = [float(f.image.mean()) for f in video_frames(tmp_path / "reused.mp4")]
    assert np.allclose(means, [40, 200, 120], atol=3), means

    writer = VideoWriter(tmp_path / "wide.mp4", 10)
    with pytest.raises(VisionkitError, match=r"wide\.mp4: writing the video failed"):
        for _ in range(50):  # the queue holds 32: a later write() sees the thread's failure
            writer.write(np.zeros((2, 40000, 3), np.uint8))
    with pytest.raises(VisionkitError, match="writing the video failed"):
        writer.close()
    assert list(tmp_path.glob("*wide*")) == []  # neither the video nor its hidden temporary file


def test_stride_start_and_max_frames_pick_frames_with_their_index_and_time(clip) -> None:
    path, _ = clip
    picked = [(f.index, round(f.time, 3)) for f in video_frames(path, stride=4, start=0.5, max_frames=3)]
    assert picked == [(12, 0.5), (16, 0.667), (20, 0.833)]
    assert VideoReader(path, stride=5).frame_count == 10
    assert len(list(video_frames(path, end=1.0))) == 24


def test_a_truncated_video_keeps_its_readable_frames(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mkv"  # Matroska: readable up to where it was cut (an .mp4 keeps its index at the end)
    write_shapes_video(whole, frames=40, height=64, width=96, fps=20)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    frames = list(video_frames(cut))
    assert 10 <= len(frames) < 40 and all(f.image.shape == (64, 96, 3) for f in frames)


def test_a_corrupt_frame_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    """Motion JPEG in AVI (each frame decoded on its own; H.264 conceals damage instead of failing): frame 10's
    JPEG overwritten with junk."""
    import av

    from visionkit.data.shapes_video import render_shapes_frames

    container = av.open(str(tmp_path / "clip.avi"), "w")
    stream = container.add_stream("mjpeg", rate=10)
    stream.width, stream.height, stream.pix_fmt = 96, 64, "yuvj420p"
    for picture in render_shapes_frames(20, 64, 96)[0]:
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    data = bytearray((tmp_path / "clip.avi").read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG start markers
    data[starts[10] : starts[11] - 16] = b"\xaa" * (starts[11] - 16 - starts[10])
    (tmp_path / "damaged.avi").write_bytes(bytes(data))
    reader = VideoReader(tmp_path / "damaged.avi")
    indices = [frame.index for frame in reader]
    assert reader.skipped == 1 and indices == [i for i in range(20) if i != 10]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_video_input_is_named_in_one_line(clip, tmp_path: Path) -> None:
    path, _ = clip
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases = [
        (tmp_path / "missing.mp4", r"video .*missing.mp4 does not exist"),
        (tmp_path / "empty.mp4", r"empty.mp4 is empty \(0 bytes\)"),
        (tmp_path / "notes.mp4", r"notes.mp4 is not a video FFmpeg can read"),
        ("/dev/video97", r"webcam /dev/video97: /dev/video97 does not exist"),
        (f"rtsp://127.0.0.1:{_free_port()}/live", r"rtsp://127.0.0.1:\d+/live: (cannot open it|no answer)"),
    ]
    import av

    with av.open(str(tmp_path / "tone.m4a"), "w", format="mp4") as sound:  # audio only: no picture to read
        stream = sound.add_stream("aac", rate=8000)
        stream.layout = "mono"
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 8000, 0
        for packet in [*stream.encode(chunk), *stream.encode(None)]:
            sound.mux(packet)
    cases.append((tmp_path / "tone.m4a", r"tone.m4a holds no video stream"))
    for source, message in cases:
        with pytest.raises(VisionkitError, match=message):
            VideoReader(source, timeout=3)
    with pytest.raises(VisionkitError, match=r"end must come after start"):
        VideoReader(path, start=2, end=1)


def _detections(frame: int, size: tuple[int, int] = (96, 128)) -> DetectionResult:
    """Two objects moving right at 3 px a frame, one slightly jittered, plus a low-score flicker every 7th frame."""
    rng = np.random.default_rng(frame)
    boxes = [[10 + 3 * frame, 10, 30 + 3 * frame, 30], [5 + 3 * frame, 60, 25 + 3 * frame, 85]]
    boxes[1] = [v + rng.normal(0, 0.5) for v in boxes[1]]
    scores, classes = [0.9, 0.7], [0, 1]
    if frame % 7 == 3:
        boxes.append([100, 5, 110, 15])
        scores.append(0.3)
        classes.append(2)
    return DetectionResult(
        source="clip.mp4",
        size=size,
        names=["a", "b", "c"],
        boxes=np.array(boxes, np.float32),
        scores=np.array(scores, np.float32),
        classes=np.array(classes, np.int64),
        pixels=np.zeros((*size, 3), np.uint8),
        frame=frame,
    )


@pytest.mark.parametrize("name", ["bytetrack", "botsort"])
def test_an_object_crossing_the_frame_keeps_one_track_id(name: str, tmp_path: Path) -> None:
    tracker = ObjectTracker(name)
    ids: dict[int, set[int]] = {0: set(), 1: set()}
    for frame in range(30):
        tracked = tracker.update(_detections(frame))
        for cls, track_id in zip(tracked.classes.tolist(), tracked.track_ids.tolist()):
            if cls in ids:
                ids[cls].add(track_id)
        assert len(tracked.track_ids) == len(tracked.boxes)
    assert all(len(found) == 1 for found in ids.values()) and ids[0] != ids[1], ids
    rows = tracker.write_summary(tmp_path / "tracks.csv", ["a", "b", "c"], 30.0).read_text().splitlines()
    assert rows[0].startswith("track_id,class,first_frame,last_frame") and rows[1].split(",")[6] in ("29", "30")
    assert [d["track_id"] for d in tracked.detections()] == tracked.track_ids.tolist()


def test_background_replacement_keeps_the_foreground_and_replaces_the_rest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:50, 20:60] = 1  # a "person"
    names = ["background", "person", "car"]
    green = replace_background(frame, mask, "#00ff00", names=names, feather=2)
    inside, outside = (slice(18, 42), slice(28, 52)), (slice(0, 60), slice(0, 8))
    assert np.abs(green[inside].astype(int) - frame[inside]).max() <= 1  # 4 sigma from the edge
    assert (green[outside] == [0, 255, 0]).all()
    edge = green[30, 20].astype(int)
    assert not (edge == frame[30, 20]).all() and not (edge == [0, 255, 0]).all()  # feathered
    Image = pytest.importorskip("PIL.Image")
    beach = tmp_path / "beach.png"
    Image.fromarray(np.full((30, 30, 3), (200, 180, 90), np.uint8)).save(beach)
    assert (replace_background(frame, mask, str(beach), names=names)[outside] == [200, 180, 90]).all()
    blurred = replace_background(frame, mask, Background("blur"), ["person"], names)
    assert blurred[outside].std() < frame[outside].std() / 2  # the frame, blurred
    kept_nothing = replace_background(frame, mask, "#000000", ["car"], names, feather=0)
    assert (kept_nothing == 0).all()
    assert (replace_background(frame, mask, "green", names=names)[outside] == [0, 128, 0]).all()  # CSS green
    assert (replace_background(frame, mask, "00ff00", names=names)[outside] == [0, 255, 0]).all()
    for bad, message in (("#12345", "not an image file, blur or a colour"), ("nope.jpg", "background=nope.jpg")):
        with pytest.raises(VisionkitError, match=message):
            Background(bad)
    with pytest.raises(VisionkitError, match=r"foreground class 'dog' is not one of the model's: background, person"):
        replace_background(frame, mask, "blur", ["dog"], names)


def test_predict_on_a_video_writes_the_annotated_video_json_labels_and_tracks(
    trained_detector: TrainedDetector, clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Run by ONNX Runtime, `runtime=onnx`: video and tracking take an exported network like the checkpoint's.)"""
    from visionkit.run import predict

    path, _ = clip
    monkeypatch.setenv("VISIONKIT_EXPORTS", str(tmp_path / "exports"))
    overrides = [f"ckpt_path={trained_detector.ckpt}", f"source={path}", "conf=0.1", "track=true", "save_txt=true"]
    overrides.append("runtime=onnx")
    cfg = compose_config(tmp_path / "out", overrides, name="predict")
    counts = predict(cfg)
    out = tmp_path / "out"
    assert counts["frames"] == 48 and counts["skipped"] == 0
    assert probe(out / "shapes.mp4") == probe(path)  # frames, fps, size, audio copied
    records = json.loads((out / "shapes.json").read_text())
    assert [r["frame"] for r in records] == list(range(48)) and records[24]["time"] == pytest.approx(1.0)
    assert all("track_id" in d for r in records for d in r["detections"])
    assert len(list((out / "labels").glob("shapes_*.txt"))) == 48
    tracks = (out / "tracks.csv").read_text().splitlines()
    assert tracks[0].startswith("track_id,") and len(tracks) - 1 == counts["tracks"]
    with pytest.raises(VisionkitError, match=r"shapes.mp4 exists; pass overwrite=true"):
        predict(cfg)
    same = compose_config(tmp_path / "again", [*overrides, f"output={path}", "overwrite=true"], name="predict")
    with pytest.raises(VisionkitError, match=r"is the input video"):
        predict(same)


def test_ctrl_c_leaves_a_video_that_plays(trained_detector: TrainedDetector, clip, tmp_path: Path, monkeypatch) -> None:
    path, _ = clip
    frames = VideoReader.__iter__

    def interrupted(self):  # the user presses Ctrl-C after 10 frames
        for k, frame in enumerate(frames(self)):
            if k == 10:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(VideoReader, "__iter__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict_video(load_predictor(trained_detector.ckpt), str(path), tmp_path, VideoOptions(stride=1))
    assert probe(tmp_path / "shapes.mp4")["frames"] == 10
    assert len(json.loads((tmp_path / "shapes.json").read_text())) == 10
    assert not list(tmp_path.glob(".*"))  # no partial files left


def test_segmentation_video_with_a_new_background_and_its_mask_video(
    trained_segmenter: TrainedSegmenter, clip, tmp_path: Path
) -> None:
    path, _ = clip
    predictor = load_predictor(trained_segmenter.ckpt)
    counts = predict_video(predictor, str(path), tmp_path, VideoOptions(background="#0000ff", max_frames=12))
    assert counts["frames"] == 12
    for name in ("shapes.mp4", "shapes_mask.mp4"):
        assert probe(tmp_path / name)["frames"] == 12 and probe(tmp_path / name)["size"] == (96, 128)
    with pytest.raises(VisionkitError, match=r"track=true needs a detection checkpoint"):
        predict_video(predictor, str(path), tmp_path / "x", VideoOptions(track=True))


def test_stylize_a_video_measures_and_reduces_flicker(clip, tmp_path: Path, capsys) -> None:
    from visionkit.cli.stylize import run
    from visionkit.tasks import StyleTransferTask

    path, _ = clip
    task = StyleTransferTask(vgg_weights="random", width=8, residual_blocks=1).eval()
    state = {"image_size": 64, "resize": "crop", "mean": [0.0] * 3, "std": [1.0] * 3}
    ckpt = save_task_checkpoint(task, tmp_path / "stylizer.ckpt", state)
    out = tmp_path / "styled.mp4"
    assert run([str(path), "--model", str(ckpt), "-o", str(out), "--temporal-smoothing", "0.8"]) == 0
    printed = capsys.readouterr().out
    flicker, raw = (float(v) for v in re.search(r"flicker ([0-9.]+) \(unsmoothed ([0-9.]+)", printed).groups())
    assert flicker < raw and probe(out) == probe(path)
    with pytest.raises(VisionkitError, match=r"styled.mp4 exists; pass overwrite=true \(or --overwrite\)"):
        run([str(path), "--model", str(ckpt), "-o", str(out)])
    with pytest.raises(VisionkitError, match=r"a video needs a fast stylizer \(--model fast.ckpt\)"):
        run([str(path), "--style", str(path), "-o", str(tmp_path / "o.mp4")])
