"""Training-loader benchmark on phone-sized photos: visionkit's loaders against torchvision's ImageFolder +
transforms.v2, timm's create_loader and ultralytics' own detection dataloader, side by side in one run.

The photos: the colour pictures scikit-image ships, cropped, flipped, tinted, upscaled to 2000x1500 (and every
fourth to 4032x3024), with a little sensor-like noise, saved as JPEG quality 90 (~0.8-3 MB each, like a phone's).
Classification: two class folders, 224 px, visionkit's `light` preset (resize + affine + brightness/contrast)
against torchvision's RandomResizedCrop 224 + flip + normalize and timm's training transforms (random-resized
crop, flip, colour jitter, normalize); batch 32, 2 workers each. Detection: the same photos with YOLO labels,
640 px letterbox + mosaic + visionkit's `yolo` preset against ultralytics' `build_yolo_dataset` +
`build_dataloader` with its default augmentation (mosaic, affine, HSV, flips); batch 16, 2 workers each.
Each loader runs in a fresh process: one pass over the photos, timed from its first batch (worker start-up is
left out), peak RSS of the process and of its workers. Rounds are interleaved, who goes first alternating;
the table gives medians and the median of the per-round ratios.

Run:  .venv/bin/python bench/bench_data.py [--photos 300] [--rounds 3] [--root /tmp/photos]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
from common import camera_photo, cpu_model, photo_pictures, run_child

BATCH, DET_BATCH, WORKERS, SIZE, DET_SIZE = 32, 16, 2, 224, 640


def make_photos(root: Path, count: int) -> Path:
    """`count` phone-sized JPEGs in root/cls/{a,b}/ and the same files as a YOLO dataset in root/det/."""
    import cv2

    marker = root / f".done-{count}"
    if marker.is_file():
        return root
    rng = np.random.default_rng(0)
    pictures = photo_pictures()
    for folder in ("cls/a", "cls/b", "det/images/train", "det/labels/train"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        picture = pictures[index % len(pictures)]
        size = (4032, 3024) if index % 4 == 3 else (2000, 1500)
        photo = camera_photo(picture, rng, size, trim=6, interpolation=cv2.INTER_CUBIC)
        name = f"{index:04d}.jpg"
        path = root / "cls" / ("a" if index % 2 == 0 else "b") / name
        cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        os.link(path, root / "det" / "images" / "train" / name)
        boxes = [(int(rng.integers(0, 2)), *rng.uniform(0.2, 0.8, 2), *rng.uniform(0.05, 0.3, 2)) for _ in range(3)]
        (root / "det" / "labels" / "train" / f"{index:04d}.txt").write_text(
            "".join(f"{c} {x:.4f} {y:.4f} {bw:.4f} {bh:.4f}\n" for c, x, y, bw, bh in boxes)
        )
    det = root / "det"
    (det / "data.yaml").write_text(f"path: {det}\ntrain: images/train\nval: images/train\nnames: ['a', 'b']\n")
    marker.touch()
    return root


def _one_pass(loader, key: str = "image") -> dict:
    """Images/s of one pass, from the first batch on; peak RSS of this process and of its workers."""
    from visionkit.callbacks.speed_report import children_peak_rss

    iterator = iter(loader)
    next(iterator)  # workers started, first batch in
    seen, start, workers = 0, time.perf_counter(), 0
    for index, batch in enumerate(iterator):
        seen += len(batch[key])
        if index % 4 == 0:  # workers that do not persist are gone once the pass ends: read them on the way
            workers = max(workers, children_peak_rss())
    elapsed = time.perf_counter() - start
    del iterator
    return {
        "images_per_s": seen / elapsed,
        "images": seen,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_rss_mb": workers / 2**20,
    }


def child(side: str, root: Path) -> dict:
    import torch

    torch.set_num_threads(1)  # a loader benchmark: the main process only collects batches
    if side.startswith("cls_ours"):
        from visionkit.data import ImageFolderSource, VisionDataModule

        cache = "ram" if side.endswith("ram") else None
        dm = VisionDataModule(
            ImageFolderSource(str(root / "cls")),
            image_size=SIZE,
            augment="light",
            batch_size=BATCH,
            num_workers=WORKERS,
            val_fraction=0.01,
            test_fraction=0.01,
            cache=cache,
        )
        start = time.perf_counter()
        dm.setup("fit")
        result = _one_pass(dm.train_dataloader())
        result["setup_s"] = time.perf_counter() - start
        return result
    if side == "cls_torchvision":
        from torchvision import datasets
        from torchvision.transforms import v2

        transform = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(SIZE, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )
        dataset = datasets.ImageFolder(str(root / "cls"), transform=transform)
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS)
        return _one_pass(loader, key=0)
    if side == "cls_timm":
        from timm.data import ImageDataset, create_loader

        dataset = ImageDataset(str(root / "cls"))
        loader = create_loader(
            dataset, (3, SIZE, SIZE), BATCH, is_training=True, use_prefetcher=False, num_workers=WORKERS
        )
        return _one_pass(loader, key=0)
    if side == "det_ours":
        from visionkit.data import VisionDataModule, YoloSource

        dm = VisionDataModule(
            YoloSource(str(root / "det" / "data.yaml")),
            image_size=DET_SIZE,
            resize="letterbox",
            augment="yolo",
            mosaic=1.0,
            batch_size=DET_BATCH,
            num_workers=WORKERS,
            mean=(0, 0, 0),
            std=(1, 1, 1),
        )
        dm.setup("fit")
        return _one_pass(dm.train_dataloader())
    if side == "det_ultralytics":
        from visionkit.models.yolo import prepare_ultralytics

        prepare_ultralytics()
        from ultralytics.cfg import get_cfg
        from ultralytics.data import build_dataloader, build_yolo_dataset
        from ultralytics.data.utils import check_det_dataset

        cfg = get_cfg(overrides={"imgsz": DET_SIZE, "batch": DET_BATCH, "workers": WORKERS})
        data = check_det_dataset(str(root / "det" / "data.yaml"))
        dataset = build_yolo_dataset(cfg, str(root / "det" / "images" / "train"), DET_BATCH, data, mode="train")
        loader = build_dataloader(dataset, DET_BATCH, WORKERS, shuffle=True)
        return _one_pass(loader, key="img")
    raise SystemExit(f"unknown side {side}")


PAIRS = {  # (ours, theirs): a ratio row each
    "classification vs torchvision ImageFolder + v2": ("cls_ours", "cls_torchvision"),
    "classification vs timm create_loader": ("cls_ours", "cls_timm"),
    "classification data.cache=ram (decoded before the pass) vs torchvision": ("cls_ours_ram", "cls_torchvision"),
    "detection vs ultralytics dataloader": ("det_ours", "det_ultralytics"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", default="/tmp/visionkit-bench-photos")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    start = time.perf_counter()
    root = make_photos(Path(args.root), args.photos)
    print(f"photos ready in {time.perf_counter() - start:.0f} s: {root}", file=sys.stderr)
    sides = sorted({side for pair in PAIRS.values() for side in pair})
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for index in range(args.rounds):
        for side in sides[:: 1 if index % 2 == 0 else -1]:
            runs[side].append(run_child(__file__, [side, str(root)]))
            print(f"round {index + 1} {side}: {runs[side][-1]['images_per_s']:.1f} images/s", file=sys.stderr)
    rate = {side: median(r["images_per_s"] for r in runs[side]) for side in sides}
    print(f"\nMachine: {cpu_model()}, {os.cpu_count()} CPUs; {args.photos} photos")
    print("| loader | images/s | peak RSS MB (main + workers) | ratio ours ÷ theirs |")
    print("|---|---:|---:|---:|")
    for side in sides:
        rss = median(r["rss_mb"] for r in runs[side]), median(r["workers_rss_mb"] for r in runs[side])
        print(f"| {side} | {rate[side]:.1f} | {rss[0]:.0f} + {rss[1]:.0f} | |")
    for label, (ours, theirs) in PAIRS.items():
        ratios = [a["images_per_s"] / b["images_per_s"] for a, b in zip(runs[ours], runs[theirs])]
        print(f"| {label} | | | **{median(ratios):.2f}** ({', '.join(f'{r:.2f}' for r in ratios)}) |")
    ram = runs["cls_ours_ram"]
    print(f"\ndata.cache=ram: setup (scan + decode into the cache) {median(r['setup_s'] for r in ram):.1f} s")


if __name__ == "__main__":
    main()
