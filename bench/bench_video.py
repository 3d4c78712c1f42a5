"""Video benchmark: frames/s of `visionkit-predict source=video` (predict_video: decode, detect, draw, encode the
annotated .mp4, per-frame JSON) against `ultralytics.YOLO(<the same weights as .pt>).predict(source=video,
stream=True)`, and with tracking against `YOLO.track`; segmentation background replacement and the fast
stylizer: frames/s.

The video: the built-in moving shapes, 640 x 360, `--frames` frames at 30 fps (H.264). The detector: a YOLOv8-n
trained on the built-in shapes (`--ckpt`, else 10 epochs here), 128 px input on both sides, conf 0.25 (tracking:
0.1, ultralytics' track default, on both sides), IoU 0.7, max_det 300, the same torch threads. Ultralytics
reads the video with OpenCV and by default writes nothing (`save=False`); the row with `save=True` has it write
its annotated video too (like ours). Rounds interleaved, who goes first alternating; medians of the rounds.
The segmenter (U-Net/ResNet-18, 128 px, random weights: speed does not depend on them) runs at `scale=0.5`
(320 x 180 through 128 px tiles); the stylizer (TransformerNet, random weights) at the video's full size;
these two on `--other-frames` frames, one round.

Run:  .venv/bin/python bench/bench_video.py [--frames 300] [--rounds 3] [--ckpt det.ckpt] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from statistics import median

from common import cpu_model

IMGSZ, CONF, TRACK_CONF, IOU, MAX_DET = 128, 0.25, 0.1, 0.7, 300


def _frames(predict_video, *args) -> float:
    return predict_video(*args)["frames"]


def _timed(run) -> float:
    start = time.perf_counter()
    frames = run()
    return frames / (time.perf_counter() - start)


def detection(ckpt: str, video: Path, tmp: Path, rounds: int, device: str, frames: int) -> dict:
    import torch

    from visionkit.checkpoints import load_checkpoint
    from visionkit.export import export_ultralytics
    from visionkit.inference import load_predictor
    from visionkit.inference.video import VideoOptions, predict_video
    from visionkit.models.yolo import prepare_ultralytics

    threads = torch.get_num_threads()
    task, _ = load_checkpoint(ckpt)
    pt = export_ultralytics(task, tmp / "ours.pt", IMGSZ)
    prepare_ultralytics()
    from ultralytics import YOLO

    settings = {"imgsz": IMGSZ, "iou": IOU, "max_det": MAX_DET, "verbose": False, "device": device}

    def ours(track: bool) -> float:
        predictor = load_predictor(ckpt, device=device, conf=TRACK_CONF if track else CONF, iou=IOU, max_det=MAX_DET)
        options = VideoOptions(track=track, overwrite=True)
        return predict_video(predictor, str(video), tmp / "ours", options)["frames"]

    def theirs(mode: str) -> float:
        model = YOLO(str(pt))  # a fresh model per run: its trackers start empty
        if mode == "track":
            stream = model.track(str(video), stream=True, conf=TRACK_CONF, tracker="bytetrack.yaml", **settings)
        else:
            save = (
                {"save": True, "project": str(tmp / "theirs"), "name": "run", "exist_ok": True}
                if mode == "save"
                else {}
            )
            stream = model.predict(str(video), stream=True, conf=CONF, **settings, **save)
        return float(sum(1 for _ in stream))

    result: dict = {"threads": threads, "frames": frames}
    rows = {"predict": ("predict", False), "predict_save": ("save", False), "track": ("track", True)}
    for mode, track in rows.values():  # warm-up: first calls allocate and pick kernels
        ours(track)
        theirs(mode)
    rates: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in rows}
    for index in range(rounds):  # rounds outside, rows inside: a slow spell of the VM hits every row alike
        for name, (mode, track) in rows.items():
            for side in ("ours", "theirs")[:: 1 if index % 2 == 0 else -1]:
                torch.set_num_threads(threads)
                if side == "ours":
                    rates[name][0].append(_timed(partial(ours, track)))
                else:
                    rates[name][1].append(_timed(partial(theirs, mode)))
    for name, (mine, other) in rates.items():
        result[f"{name}_ours"], result[f"{name}_theirs"] = median(mine), median(other)
        result[f"{name}_ratio"] = median(a / b for a, b in zip(mine, other))
        result[f"{name}_rounds"] = " ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(mine, other))
    return result


def segmentation_and_style(clip: Path, tmp: Path, rounds: int, device: str) -> dict:
    import torch

    from visionkit.inference import load_predictor
    from visionkit.inference.video import VideoOptions, predict_video
    from visionkit.tasks import SegmentationTask, StyleTransferTask

    result = {}
    task = SegmentationTask("unet", "resnet18", num_classes=5)
    state = {"image_size": 128, "resize": "stretch", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    for name, module, data, options in (
        ("background", task, state, {"scale": 0.5}),
        ("stylizer", StyleTransferTask(vgg_weights="random"), {**state, "mean": [0.0] * 3, "std": [1.0] * 3}, {}),
    ):
        checkpoint = {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "VisionDataModule": data,
        }
        module.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, tmp / f"{name}.ckpt")
        predictor = load_predictor(tmp / f"{name}.ckpt", device=device, **options)
        video_options = VideoOptions(background="blur" if name == "background" else None, overwrite=True,
                                     smoothing=0.5 if name == "stylizer" else 0.0)  # fmt: skip
        run = partial(_frames, predict_video, predictor, str(clip), tmp / name, video_options)
        rates = [_timed(run) for _ in range(rounds)]
        result[name] = median(rates)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other-frames", type=int, default=60, help="frames for the segmentation and stylizer rows")
    parser.add_argument("--epochs", type=int, default=10, help="detector training epochs without --ckpt")
    parser.add_argument("--ckpt", default=None, help="a visionkit detection checkpoint (else one is trained here)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from bench_detection import train_ours

    from visionkit.data.shapes_video import write_shapes_video

    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))
    try:
        video = tmp / "shapes_640x360.mp4"
        write_shapes_video(video, frames=args.frames, height=360, width=640, fps=30, objects=3)
        ckpt = args.ckpt or train_ours(args.epochs, tmp / "train", tmp / "cache")["best"]
        det = detection(ckpt, video, tmp, args.rounds, args.device, args.frames)
        _print_detection(det, args)
        clip = tmp / "shapes_640x360_short.mp4"  # the slower tasks: fewer frames, one round
        write_shapes_video(clip, frames=args.other_frames, height=360, width=640, fps=30, objects=3)
        other = segmentation_and_style(clip, tmp, 1, args.device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = args.other_frames
    print(f"| segmentation, background replaced (blur), scale 0.5, {n} frames | {other['background']:.1f} | — | — |")
    print(f"| fast stylizer, 640x360, temporal smoothing 0.5, {n} frames | {other['stylizer']:.1f} | — | — |")


def _print_detection(det: dict, args: argparse.Namespace) -> None:
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores, device {args.device}, "
          f"torch threads {det['threads']}; video 640x360, {args.frames} frames")  # fmt: skip
    print("| frames/s | visionkit | ultralytics | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| detection: predict (ours writes mp4 + JSON; theirs nothing) | {det['predict_ours']:.1f} | "
          f"{det['predict_theirs']:.1f} | {det['predict_ratio']:.2f} |")  # fmt: skip
    print(f"| detection: predict, both write the annotated video | {det['predict_save_ours']:.1f} | "
          f"{det['predict_save_theirs']:.1f} | {det['predict_save_ratio']:.2f} |")  # fmt: skip
    print(f"| detection + ByteTrack (ours writes mp4 + JSON + tracks.csv; theirs nothing) | {det['track_ours']:.1f} | "
          f"{det['track_theirs']:.1f} | {det['track_ratio']:.2f} |")  # fmt: skip
    for name in ("predict", "predict_save", "track"):
        print(f"rounds of {name} (ours/theirs frames/s): {det[f'{name}_rounds']}")


if __name__ == "__main__":
    main()
