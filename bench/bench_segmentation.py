"""Segmentation benchmark: Lightning overhead, tiled-prediction memory, and the default recipe's mIoU.

1. Training images/s of SegmentationTask (Lightning Trainer) ÷ a plain PyTorch loop with the same smp U-Net,
   the same data module (built-in shapes, 128 px, batch 16, light augmentation, 2 workers) and the same loss
   (CE + Dice). The plain loop is timed as people write it (default layout) and with channels-last inputs,
   which our task uses on CPU, so the layout's share of the difference is visible.
2. Peak memory (process max RSS, model and libraries included) of tiled prediction on a 4096x4096 image.
3. The shipped recipe, `visionkit-train experiment=shapes_unet`: test mIoU and wall time.

Run:  .venv/bin/python bench/bench_segmentation.py [--skip-recipe] [--quick] [--device cuda]
On CUDA the loaders get 8 workers (2 on CPU) so that neither side waits on data; tiled prediction stays on
the CPU, where its memory target applies.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model, run_child

IMAGE_SIZE, BATCH = 128, 16


def _workers(device: str) -> int:
    return min(8, os.cpu_count() or 1) if device == "cuda" else 2


def _datamodule(root: Path, device: str):
    from visionkit.data import MaskSource, VisionDataModule
    from visionkit.data.shapes_seg import SEG_CLASSES

    source = MaskSource(root, class_names=list(SEG_CLASSES))
    workers = _workers(device)
    return VisionDataModule(source, image_size=IMAGE_SIZE, batch_size=BATCH, num_workers=workers, augment="light")


def _task():
    from visionkit.tasks import SegmentationTask

    return SegmentationTask("unet", "resnet18", num_classes=5)


def plain_loop(root: Path, epochs: int, channels_last: bool, device: str) -> float:
    """Images/s of the last epoch of a hand-written loop over the same loader, model and loss."""
    import torch

    dm = _datamodule(root, device)
    dm.setup("fit")
    task = _task()
    model, criterion = task.model, task.criterion
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt).train()
    criterion.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = dm.train_dataloader()
    rate = 0.0
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            images = batch["image"].to(device, non_blocking=True).contiguous(memory_format=fmt)
            loss, _ = criterion(model(images), batch["mask"].to(device, non_blocking=True))
            loss.backward()
            optimizer.step()
            seen += len(batch["image"])
        if device == "cuda":
            torch.cuda.synchronize()
        rate = seen / (time.perf_counter() - start)
    return rate


def lightning_task(root: Path, epochs: int, device: str) -> float:
    """Images/s of the last epoch of SegmentationTask under a Lightning Trainer (validation off)."""
    import lightning as L
    import torch

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.rate = len(trainer.datamodule.datasets["train"]) / (time.perf_counter() - self.start)

    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    task = _task()
    task.optimizer_factory = lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    trainer.fit(task, datamodule=_datamodule(root, device))
    return timer.rate


def tiled_memory(tile: int, batch: int) -> dict:
    """Max RSS before and after segmenting a 4096x4096 photo-sized image with `tile` px tiles."""
    import numpy as np
    import torch

    from visionkit.inference.tiling import segment_image

    task = _task().eval()
    image = np.random.default_rng(0).integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    with torch.inference_mode():
        labels = segment_image(
            task.class_probabilities, image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (tile, tile), 0.25, batch
        )
    assert labels.shape == (4096, 4096)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"before_mb": before, "peak_mb": peak, "seconds": time.perf_counter() - start}


def default_recipe(workdir: Path) -> dict:
    """`visionkit-train experiment=shapes_unet` with nothing else changed; test mIoU from its metrics.csv."""
    exe = Path(sys.executable).with_name("visionkit-train")
    start = time.perf_counter()
    subprocess.run(
        [str(exe), "experiment=shapes_unet", "logger=csv"], cwd=workdir, capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    rows = list(csv.DictReader(next(workdir.rglob("metrics.csv")).open()))
    test = next(r for r in rows if r.get("test_miou"))
    curve = [round(float(r["val_miou"]), 3) for r in rows if r.get("val_miou")]
    return {
        "wall_s": wall,
        "test_miou": float(test["test_miou"]),
        "test_mdice": float(test["test_mdice"]),
        "curve": curve,
    }


def _child(args: list[str]) -> dict:
    return run_child(__file__, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch per speed side, no recipe run")
    parser.add_argument("--skip-recipe", action="store_true", help="leave out the default recipe's run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--train-images", type=int, default=600, help="epoch length (more on fast GPUs)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "plain":
            result = {"rate": plain_loop(Path(rest[0]), int(rest[1]), rest[2] == "1", rest[3])}
        elif kind == "ours":
            result = {"rate": lightning_task(Path(rest[0]), int(rest[1]), rest[2])}
        elif kind == "memory":
            result = tiled_memory(int(rest[0]), int(rest[1]))
        else:
            result = default_recipe(Path(rest[0]))
        print(json.dumps(result))
        return

    def row(text: str) -> None:  # printed as soon as measured: an interrupted run keeps what it had
        print(text, flush=True)

    row(f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    row("| measurement | value | note |")
    row("|---|---:|---|")
    epochs = 1 if args.quick else 2  # the last epoch is timed; the first warms caches and workers
    with tempfile.TemporaryDirectory() as tmp:
        from visionkit.data.shapes_seg import shapes_segmentation_root

        root = shapes_segmentation_root(Path(tmp) / "cache", train_images=args.train_images)
        plain = _child(["plain", str(root), str(epochs), "0", args.device])["rate"]
        note = f"U-Net/ResNet-18, 128 px, batch {BATCH}, {args.train_images} images/epoch, {args.device}"
        row(f"| plain PyTorch loop, train images/s (default layout) | {plain:.2f} | {note} |")
        plain_cl = _child(["plain", str(root), str(epochs), "1", args.device])["rate"]
        row(f"| plain PyTorch loop, train images/s (channels-last) | {plain_cl:.2f} |  |")
        ours = _child(["ours", str(root), str(epochs), args.device])["rate"]
        row(f"| SegmentationTask + Lightning Trainer, train images/s | {ours:.2f} | **ratio {ours / plain:.2f}** vs "
            f"plain (target ≥ 0.95); {ours / plain_cl:.2f} vs plain channels-last |")  # fmt: skip
        for tile, batch in ((128, 16), (512, 4)):
            m = _child(["memory", str(tile), str(batch)])
            before = f"{m['before_mb']:.0f} MB before (model + image)"
            row(f"| tiled prediction 4096x4096, tiles {tile} px: peak RSS MB | {m['peak_mb']:.0f} | "
                f"{before}; {m['seconds']:.0f} s (target < 2048 MB) |")  # fmt: skip
        if not (args.quick or args.skip_recipe):
            workdir = Path(tmp) / "recipe"
            workdir.mkdir()
            recipe = _child(["recipe", str(workdir)])
            row(f"| `visionkit-train experiment=shapes_unet`: test mIoU | {recipe['test_miou']:.3f} | "
                f"mDice {recipe['test_mdice']:.3f}; {recipe['wall_s'] / 60:.1f} min (target ≥ 0.90) |")  # fmt: skip
            row(f"\nval mIoU by epoch: {recipe['curve']}")


if __name__ == "__main__":
    main()
