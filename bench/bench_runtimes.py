"""Detection on exported runtimes: visionkit's predictor on its own ONNX / OpenVINO export
(`load_predictor("model.onnx")`) against ultralytics' predictor on ultralytics' own export of the same weights
(`YOLO("model.onnx").predict`, `YOLO("model_openvino_model/").predict`), YOLOv8-n at 640 and 128 px, batch 1 and 16.

Same weights (a YOLOv8-n trained here on the built-in shapes, or `--ckpt`; written as an ultralytics .pt and
exported by ultralytics with dynamic axes, and for OpenVINO also with the fixed shape ultralytics exports by
default, at the row's batch), same folder of image files read lazily in batches by both sides (the
shapes test images, resized to the row's size), conf 0.25, IoU 0.7, max_det 300, one class per box, each side's
own thread settings (ultralytics sets PyTorch to one thread fewer than the cores for its pre- and post-processing;
visionkit's exported predictors use no PyTorch; both runtimes use every core), each size and runtime in a process
of its own, ONNX in float32, OpenVINO at the precision it picks itself (ultralytics sets no hint on x86:
bf16 on CPUs with native bf16; visionkit's `precision=auto` does the same, its default is float32); loading and
warm-up outside the timing. Rounds interleaved, who goes first alternating; the table gives each side's median
images/s and the median of the per-round ratios.

`--aspect 0.75`: pictures of height 0.75 × width (640 × 480, 4:3 camera frames) instead of squares; then
visionkit is also timed with `rect=False` (every picture padded to the square) in the same rounds.

Run:  .venv/bin/python bench/bench_runtimes.py [--epochs 10] [--rounds 5] [--ckpt det.ckpt] [--images 48]
      [--aspect 0.75]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median

from bench_detection import train_ours
from common import cpu_model, run_child

CONF, IOU, MAX_DET = 0.25, 0.7, 300
RUNTIMES = {"onnx": ("model.onnx", "onnx"), "openvino": ("model_openvino", "openvino")}


def _images(cache: Path, folder: Path, size: int, count: int, aspect: float) -> str:
    """`count` files of the shapes test images `size` wide and `aspect` × `size` high (distinct names), in
    `folder`."""
    from PIL import Image

    from visionkit.data.shapes import shapes_detection_yaml

    test = sorted((shapes_detection_yaml(cache).parent / "images" / "test").glob("*.png"))
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        picture = Image.open(test[index % len(test)]).convert("RGB")
        picture = picture.resize((size, round(size * aspect)), Image.BILINEAR)
        picture.save(folder / f"{index:04d}.jpg", quality=92)
    return str(folder)


def measure(ckpt: str, cache: Path, tmp: Path, rounds: int, count: int, size: int, runtime: str, aspect: float) -> dict:
    """The rows of one size and runtime (each in a process of its own: no other runtime's threads or sessions
    linger beside them)."""
    import torch

    from visionkit.checkpoints import load_checkpoint
    from visionkit.export import ExportRequest, export_ultralytics, write_exports
    from visionkit.inference import load_predictor
    from visionkit.models.yolo import prepare_ultralytics

    task, data_state = load_checkpoint(ckpt)
    prepare_ultralytics()
    from ultralytics import YOLO

    folder = _images(cache, tmp / f"images{size}", size, count, aspect)
    ours_dir, theirs_dir = tmp / f"ours{size}-{runtime}", tmp / f"theirs{size}-{runtime}"
    name, fmt = RUNTIMES[runtime]
    write_exports(task, data_state | {"image_size": [size, size]}, ExportRequest((fmt,)), ours_dir)
    pt = export_ultralytics(task, theirs_dir / "model.pt", size)
    their_files = {"dynamic": YOLO(str(pt)).export(format=fmt, imgsz=size, dynamic=True, batch=16)}
    for batch in (1, 16) if runtime == "openvino" else ():  # ultralytics' default export: a fixed shape
        fixed_pt = shutil.copy(pt, theirs_dir / f"fixed{batch}.pt")
        their_files[f"fixed {batch}"] = YOLO(fixed_pt).export(format=fmt, imgsz=size, batch=batch)
    # ultralytics lets OpenVINO choose its precision (bf16 on CPUs that compute it natively): so does ours
    precision = "auto" if runtime == "openvino" else "fp32"
    ours = load_predictor(ours_dir / name, conf=CONF, iou=IOU, max_det=MAX_DET, precision=precision)
    square = (
        None
        if aspect == 1
        else load_predictor(ours_dir / name, conf=CONF, iou=IOU, max_det=MAX_DET, precision=precision, rect=False)
    )
    settings = {"imgsz": size, "conf": CONF, "iou": IOU, "max_det": MAX_DET, "verbose": False}
    rows = []
    for batch in (1, 16):
        for export in [e for e in ("dynamic", f"fixed {batch}") if e in their_files]:
            theirs = YOLO(str(their_files[export]), task="detect")
            for predictor in (ours, square) if square else (ours,):
                predictor(folder, batch_size=batch)  # warm-up, twice: a shape gets its own model on its second batch
                predictor(folder, batch_size=batch)
            theirs.predict(folder, batch=batch, **settings)
            mine, other, padded = [], [], []
            for index in range(rounds):
                sides = ("ours", "theirs", "square") if square else ("ours", "theirs")
                for side in sides[:: 1 if index % 2 == 0 else -1]:
                    start = time.perf_counter()
                    if side == "ours":
                        found = sum(len(r.boxes) for r in ours(folder, batch_size=batch))
                        mine.append(count / (time.perf_counter() - start))
                    elif side == "square" and square is not None:
                        square(folder, batch_size=batch)
                        padded.append(count / (time.perf_counter() - start))
                    else:
                        boxes = sum(len(r.boxes) for r in theirs.predict(folder, batch=batch, **settings))
                        other.append(count / (time.perf_counter() - start))
            rows.append(
                {
                    "size": size,
                    "runtime": runtime,
                    "export": export.split()[0],
                    "batch": batch,
                    "ours": median(mine),
                    "theirs": median(other),
                    "ratio": median(a / b for a, b in zip(mine, other)),
                    "boxes": (found, boxes),
                    "square": median(padded) if padded else None,
                }
            )
    shutil.rmtree(theirs_dir, ignore_errors=True)
    return {"rows": rows, "threads": torch.get_num_threads()}  # as ultralytics' predictor left them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--ckpt", default=None, help="a detection checkpoint on the shapes data (skips training)")
    parser.add_argument("--keep", default=None, help="a folder to train in and keep (its best.ckpt for --ckpt)")
    parser.add_argument("--aspect", type=float, default=1.0, help="picture height ÷ width (0.75: 640 × 480)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import json

        kind, *rest = args.child
        if kind == "train":
            out = {"ckpt": train_ours(int(rest[0]), Path(rest[1]), Path(rest[2]))["best"]}
        else:
            size, runtime = int(rest[3]), rest[4]
            out = measure(rest[0], Path(rest[1]), Path(rest[2]), args.rounds, args.images, size, runtime, args.aspect)
        print(json.dumps(out))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache"
        train_dir = Path(args.keep) if args.keep else tmp / "det"
        ckpt = args.ckpt or run_child(__file__, ["train", str(args.epochs), str(train_dir), str(cache)])["ckpt"]
        print(f"detector: {ckpt}")
        options = ["--rounds", str(args.rounds), "--images", str(args.images), "--aspect", str(args.aspect)]
        parts = [
            run_child(__file__, ["measure", ckpt, str(cache), str(tmp), str(size), runtime, *options])
            for size in (640, 128)
            for runtime in RUNTIMES
        ]
        result = {"rows": [row for part in parts for row in part["rows"]], "threads": parts[0]["threads"]}
    print(f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"PyTorch threads as ultralytics' predictor sets them: {result['threads']} (visionkit's exported predictors "
        f"use no PyTorch); each runtime its default (all cores); {args.images} images per round, {args.rounds} rounds;"
        f" pictures {args.aspect:g} × as high as wide"
    )
    square = args.aspect != 1  # visionkit with rect=False as well: every picture padded to the square
    print(
        "| size | runtime | their export | batch | YOLO(export).predict img/s | visionkit img/s | ratio | "
        + ("visionkit rect=False img/s | " if square else "")
        + "boxes (ours, theirs) |"
    )
    print("|---:|---|---|---:|---:|---:|---:|" + ("---:|" if square else "") + "---|")
    for row in result["rows"]:
        print(
            f"| {row['size']} | {row['runtime']} | {row['export']} | {row['batch']} | {row['theirs']:.1f} | "
            f"{row['ours']:.1f} | **{row['ratio']:.2f}** | "
            + (f"{row['square']:.1f} | " if square else "")
            + f"{row['boxes'][0]}, {row['boxes'][1]} |"
        )


if __name__ == "__main__":
    main()
