"""Inference benchmark: images/s of `load_predictor(ckpt)(paths)` per task, and for detection side by side with
`ultralytics.YOLO(<the same weights exported as .pt>).predict(paths)`.

Detection: a YOLOv8-n trained here on the built-in shapes (128 px); a folder of 500 image files (the test split 5
times) that both sides read lazily in batches (given a *list* of paths, ultralytics decodes them all into one
batch whatever `batch` says, so a list would not be batch 1 on its side); the predictor with its defaults (no
reading thread on the CPU); the same image size, conf 0.25, IoU 0.7, max_det 300, one class per box, the same
torch thread count; model loading and warm-up outside the timing on both sides, both return a list of results.
Rounds are interleaved, who goes first alternating (ours, theirs, theirs, ours, ...); the table gives the medians
of `--rounds` rounds and the median of the per-round ratios (this VM's speed swings up to 2x within minutes; two
neighbouring runs share the swing). The boxes of both sides are compared, so the two do the same work.
Classification (LeNet-5 on 32 px digits, ResNet-18 at 224 px) and segmentation (U-Net/ResNet-18 on 128 px shapes,
and a 512 x 512 image through 128 px tiles): images/s, with a plain PyTorch loop (PIL read, resize, normalize,
forward) beside the classifiers for scale.

Run:  .venv/bin/python bench/bench_predict.py [--epochs 10] [--rounds 9] [--ckpt det.ckpt] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path
from statistics import median

import numpy as np
from bench_detection import train_ours
from common import cpu_model, run_child

IMGSZ, CONF, IOU, MAX_DET = 128, 0.25, 0.7, 300


def _copies(images: list[Path], folder: Path, total: int) -> list[str]:
    """`total` image files in `folder`, cycling through `images` (distinct files: nothing cached by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(total):
        source = images[index % len(images)]
        target = folder / f"{index:04d}_{source.name}"
        target.write_bytes(source.read_bytes())
        paths.append(str(target))
    return paths


def _rates(run, count: int, rounds: int) -> list[float]:
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - start))
    return rates


def detection(ckpt: str, cache: Path, tmp: Path, rounds: int, device: str) -> dict:
    import torch

    from visionkit.checkpoints import load_checkpoint
    from visionkit.data.shapes import shapes_detection_yaml
    from visionkit.export import export_ultralytics
    from visionkit.inference import load_predictor
    from visionkit.models.yolo import prepare_ultralytics

    threads = os.cpu_count() or 1
    test = sorted((shapes_detection_yaml(cache).parent / "images" / "test").glob("*.png"))
    paths = _copies(test, tmp / "det_images", 500)
    folder = str(tmp / "det_images")  # both sides read the folder lazily in batches: ultralytics decodes a *list*
    # of paths all at once into one batch whatever `batch` says, so a list would not be batch 1 on its side
    task, _ = load_checkpoint(ckpt)
    pt = export_ultralytics(task, tmp / "ours.pt", IMGSZ)  # the same weights, in ultralytics' format
    ours = load_predictor(ckpt, device=device, conf=CONF, iou=IOU, max_det=MAX_DET)
    prepare_ultralytics()
    from ultralytics import YOLO

    theirs = YOLO(str(pt))
    settings = {"imgsz": IMGSZ, "conf": CONF, "iou": IOU, "max_det": MAX_DET, "verbose": False, "device": device}
    result: dict = {"threads": threads}
    for batch in (1, 16):
        torch.set_num_threads(threads)
        ours(paths[:32], batch_size=batch)  # warm-up: first calls allocate and pick kernels
        theirs.predict(paths[:32], batch=batch, **settings)
        mine, other = [], []
        for index in range(rounds):  # interleaved, and who goes first alternates: ours, theirs, theirs, ours ...
            for side in ("ours", "theirs")[:: 1 if index % 2 == 0 else -1]:
                torch.set_num_threads(threads)
                if side == "ours":
                    mine += _rates(partial(ours, folder, batch_size=batch), len(paths), 1)
                else:
                    other += _rates(partial(theirs.predict, folder, batch=batch, **settings), len(paths), 1)
                    result[f"their_threads_b{batch}"] = torch.get_num_threads()
        result[f"ours_b{batch}"], result[f"theirs_b{batch}"] = median(mine), median(other)
        result[f"ours_b{batch}_all"], result[f"theirs_b{batch}_all"] = mine, other
        result[f"ratio_b{batch}"] = median(a / b for a, b in zip(mine, other))  # each round's pair: same load
    # one call per image, as a script that handles files one at a time does: predictor([path]) / predict(path)
    single = paths[:100]
    mine, other = [], []
    for index in range(rounds):
        for side in ("ours", "theirs")[:: 1 if index % 2 == 0 else -1]:
            torch.set_num_threads(threads)
            if side == "ours":
                mine += _rates(lambda: [ours([p]) for p in single], len(single), 1)
            else:
                other += _rates(lambda: [theirs.predict(p, **settings) for p in single], len(single), 1)
    result["ours_call"], result["theirs_call"] = median(mine), median(other)
    result["ours_call_all"], result["theirs_call_all"] = mine, other
    result["ratio_call"] = median(a / b for a, b in zip(mine, other))
    result["form"] = ", ".join(f"batch {size}: {name}" for size, name in ours.cpu_form.items())
    # the same work: the same boxes (within a pixel) for the same images
    mine = ours(paths[:100], batch_size=16)
    other = theirs.predict(paths[:100], batch=16, **settings)
    counts = [(len(a), len(b.boxes)) for a, b in zip(mine, other)]
    result["same_box_count"] = sum(a == b for a, b in counts) / len(counts)
    diffs = [
        np.abs(np.sort(a.boxes, 0) - np.sort(b.boxes.xyxy.cpu().numpy(), 0)).max()
        for a, b in zip(mine, other)
        if len(a) == len(b.boxes) and len(a)
    ]
    result["max_box_diff_px"] = float(max(diffs)) if diffs else 0.0
    result["boxes"] = sum(len(r) for r in mine)
    return result


def _classifier_checkpoint(tmp: Path, backbone: str, size: int) -> str:
    """A classification checkpoint with random weights (speed does not depend on training)."""
    import torch

    from visionkit.tasks import ClassificationTask

    task = ClassificationTask(backbone, num_classes=10)
    state = {"image_size": size, "resize": "stretch", "mean": [0.5] * 3, "std": [0.5] * 3}
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams), "VisionDataModule": state}
    task.on_save_checkpoint(checkpoint)
    path = tmp / f"{backbone}.ckpt"
    torch.save(checkpoint, path)
    return str(path)


def _plain_loop(model, paths: list[str], size: int, batch: int, device: str) -> None:
    """The reference: PIL read, torchvision resize + normalize, forward, softmax."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    transform = v2.Compose(
        [v2.PILToTensor(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True),
         v2.Normalize([0.5] * 3, [0.5] * 3)]
    )  # fmt: skip
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            images = [transform(Image.open(p).convert("RGB")) for p in paths[start : start + batch]]
            torch.softmax(model(torch.stack(images).to(device)), 1).cpu()


def classification(tmp: Path, rounds: int, device: str) -> dict:
    import torch
    from PIL import Image

    from visionkit.inference import load_predictor

    rng = np.random.default_rng(0)
    result: dict = {}
    tmp.mkdir(parents=True, exist_ok=True)
    for backbone, size, source_size in (("lenet5", 32, 32), ("resnet18", 224, 256)):
        folder = tmp / f"cls_{backbone}"
        folder.mkdir()
        for i in range(50):
            Image.fromarray(rng.integers(0, 255, (source_size, source_size, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
        paths = _copies(sorted(folder.glob("*.png")), tmp / f"cls_{backbone}_500", 500 if backbone == "lenet5" else 200)
        predictor = load_predictor(_classifier_checkpoint(tmp, backbone, size), device=device)
        for batch in (1, 16):
            predictor(paths[:16], batch_size=batch)
            ours, plain = [], []
            for _ in range(rounds):
                ours += _rates(partial(predictor, paths, batch_size=batch), len(paths), 1)
                plain += _rates(partial(_plain_loop, predictor.model, paths, size, batch, device), len(paths), 1)
            result[f"{backbone}_b{batch}"], result[f"{backbone}_plain_b{batch}"] = median(ours), median(plain)
    result["threads"] = torch.get_num_threads()
    return result


def segmentation(cache: Path, tmp: Path, rounds: int, device: str) -> dict:
    import torch

    from visionkit.data.shapes_seg import shapes_segmentation_root
    from visionkit.inference import load_predictor
    from visionkit.tasks import SegmentationTask

    tmp.mkdir(parents=True, exist_ok=True)
    root = shapes_segmentation_root(cache)
    paths = _copies(sorted((root / "images" / "test").glob("*.png")), tmp / "seg_images", 200)
    task = SegmentationTask("unet", "resnet18", num_classes=5)
    state = {"image_size": 128, "resize": "stretch", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams), "VisionDataModule": state}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp / "seg.ckpt")
    predictor = load_predictor(tmp / "seg.ckpt", device=device)
    result: dict = {}
    for batch in (1, 16):
        predictor(paths[:16], batch_size=batch)
        result[f"b{batch}"] = median(_rates(partial(predictor, paths, batch_size=batch), len(paths), rounds))
    large = [np.random.default_rng(i).integers(0, 255, (512, 512, 3), dtype=np.uint8) for i in range(4)]
    result["tiled_512"] = median(_rates(partial(predictor, large, batch_size=16), len(large), rounds))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="detector training epochs (boxes worth predicting)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--ckpt", default=None, help="a detection checkpoint on the shapes data (skips training)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "train":  # the detection benchmark's training: visionkit-train's config, 128 px, batch 16
            out = {"ckpt": train_ours(int(rest[0]), Path(rest[1]), Path(rest[2]))["best"]}
        elif kind == "detection":
            out = detection(rest[0], Path(rest[1]), Path(rest[2]), args.rounds, args.device)
        elif kind == "classification":
            out = classification(Path(rest[0]), args.rounds, args.device)
        else:
            out = segmentation(Path(rest[0]), Path(rest[1]), args.rounds, args.device)
        print(json.dumps(out))
        return
    common = ["--rounds", str(args.rounds), "--device", args.device]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache"
        ckpt = args.ckpt or run_child(__file__, ["train", str(args.epochs), str(tmp / "det"), str(cache)])["ckpt"]
        det = run_child(__file__, ["detection", ckpt, str(cache), str(tmp), *common])
        cls = run_child(__file__, ["classification", str(tmp / "c"), *common])
        seg = run_child(__file__, ["segmentation", str(cache), str(tmp / "s"), *common])
    machine = f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"machine: {machine}, device {args.device}")
    print(f"detection: {det['boxes']} boxes on 100 images; same box count {det['same_box_count']:.2f}, "
          f"max box difference {det['max_box_diff_px']:.2f} px; torch threads {det['threads']} "
          f"(theirs during predict: {det['their_threads_b1']}, {det['their_threads_b16']})")  # fmt: skip
    print(f"detector form chosen at load: {det['form']}")
    print("| measurement | images/s | note |\n|---|---:|---|")
    rounds = {side: ", ".join(f"{v:.0f}" for v in det[f"{side}_call_all"]) for side in ("ours", "theirs")}
    print(
        f"| detection, one call per image: YOLO.predict(path) | {det['theirs_call']:.1f} | rounds {rounds['theirs']} |"
    )
    print(
        f"| detection, one call per image: predictor([path]) | {det['ours_call']:.1f} | **ratio "
        f"{det['ratio_call']:.2f}** (target ≥ 1.0); rounds {rounds['ours']} |"
    )
    for batch in (1, 16):
        rounds = {side: ", ".join(f"{v:.0f}" for v in det[f"{side}_b{batch}_all"]) for side in ("ours", "theirs")}
        print(
            f"| detection, batch {batch}: YOLO(.pt).predict | {det[f'theirs_b{batch}']:.1f} | "
            f"rounds {rounds['theirs']} |"
        )
        print(
            f"| detection, batch {batch}: visionkit predictor | {det[f'ours_b{batch}']:.1f} | **ratio "
            f"{det[f'ratio_b{batch}']:.2f}** (median of the rounds' ratios; target ≥ 1.0); rounds {rounds['ours']} |"
        )
    for backbone, label in (("lenet5", "LeNet-5, 32 px"), ("resnet18", "ResNet-18, 224 px")):
        for batch in (1, 16):
            ours, plain = cls[f"{backbone}_b{batch}"], cls[f"{backbone}_plain_b{batch}"]
            print(f"| classification {label}, batch {batch}: plain PyTorch loop | {plain:.1f} | |")
            name = f"classification {label}, batch {batch}"
            print(f"| {name}: visionkit predictor | {ours:.1f} | ratio {ours / plain:.2f} |")
    for batch in (1, 16):
        print(f"| segmentation U-Net/ResNet-18, 128 px images, batch {batch} | {seg[f'b{batch}']:.1f} | |")
    print(f"| segmentation, 512×512 image through 128 px tiles (overlap 0.25) | {seg['tiled_512']:.2f} | |")


if __name__ == "__main__":
    main()
