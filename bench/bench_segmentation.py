"""Segmentation benchmark: Lightning overhead, tiled-prediction memory, and the default recipe's mIoU.

1. Training images/s of SegmentationTask (Lightning Trainer) ÷ a plain PyTorch loop with the same smp U-Net,
   the same data module (built-in shapes, 128 px, batch 16, light augmentation, 2 workers) and the same loss
   (CE + Dice). The plain loop is timed as people write it (default layout) and with channels-last inputs,
   which our task uses on CPU, so the layout's share of the difference is visible.
2. Peak memory (process max RSS, model and libraries included) of tiled prediction on a 4096x4096 image.
3. `visionkit-train task=segmentation` as shipped (30 epochs): test mIoU and wall time.

Run:  .venv/bin/python bench/bench_segmentation.py [--skip-recipe] [--quick]
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

from common import run_child

IMAGE_SIZE, BATCH, WORKERS = 128, 16, 2


def _datamodule(cache: Path):
    from visionkit.data import MaskSource, VisionDataModule
    from visionkit.data.shapes_seg import SEG_CLASSES, shapes_segmentation_root

    source = MaskSource(shapes_segmentation_root(cache), class_names=list(SEG_CLASSES))
    return VisionDataModule(source, image_size=IMAGE_SIZE, batch_size=BATCH, num_workers=WORKERS, augment="light")


def _task():
    from visionkit.tasks import SegmentationTask

    return SegmentationTask("unet", "resnet18", num_classes=5)


def plain_loop(cache: Path, epochs: int, channels_last: bool) -> float:
    """Images/s of the last epoch of a hand-written loop over the same loader, model and loss."""
    import torch

    dm = _datamodule(cache)
    dm.setup("fit")
    task = _task()
    model, criterion = task.model, task.criterion
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = dm.train_dataloader()
    rate = 0.0
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = criterion(model(batch["image"].contiguous(memory_format=fmt)), batch["mask"])
            loss.backward()
            optimizer.step()
            seen += len(batch["image"])
        rate = seen / (time.perf_counter() - start)
    return rate


def lightning_task(cache: Path, epochs: int) -> float:
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
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    task = _task()
    task.optimizer_factory = lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    trainer.fit(task, datamodule=_datamodule(cache))
    return timer.rate


def tiled_memory(tile: int, batch: int) -> dict:
    """Max RSS before and after segmenting a 4096x4096 photo-sized image with `tile` px tiles."""
    import numpy as np
    import torch

    from visionkit.tiling import segment_image

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
    """`visionkit-train task=segmentation` with nothing else changed; test mIoU from its metrics.csv."""
    exe = Path(sys.executable).with_name("visionkit-train")
    start = time.perf_counter()
    subprocess.run(
        [str(exe), "task=segmentation", "logger=csv"], cwd=workdir, capture_output=True, text=True, check=True
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
    parser.add_argument("--skip-recipe", action="store_true", help="leave out the 30-epoch default recipe")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "plain":
            result = {"rate": plain_loop(Path(rest[0]), int(rest[1]), rest[2] == "1")}
        elif kind == "ours":
            result = {"rate": lightning_task(Path(rest[0]), int(rest[1]))}
        elif kind == "memory":
            result = tiled_memory(int(rest[0]), int(rest[1]))
        else:
            result = default_recipe(Path(rest[0]))
        print(json.dumps(result))
        return

    def row(text: str) -> None:  # printed as soon as measured: an interrupted run keeps what it had
        print(text, flush=True)

    row(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    row("| measurement | value | note |")
    row("|---|---:|---|")
    epochs = 1 if args.quick else 2  # the last epoch is timed; the first warms caches and workers
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        from visionkit.data.shapes_seg import shapes_segmentation_root

        shapes_segmentation_root(cache)
        plain = _child(["plain", str(cache), str(epochs), "0"])["rate"]
        note = f"U-Net/ResNet-18, 128 px, batch {BATCH}"
        row(f"| plain PyTorch loop, train images/s (default layout) | {plain:.2f} | {note} |")
        plain_cl = _child(["plain", str(cache), str(epochs), "1"])["rate"]
        row(f"| plain PyTorch loop, train images/s (channels-last) | {plain_cl:.2f} |  |")
        ours = _child(["ours", str(cache), str(epochs)])["rate"]
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
            row(f"| `visionkit-train task=segmentation`: test mIoU | {recipe['test_miou']:.3f} | "
                f"mDice {recipe['test_mdice']:.3f}; {recipe['wall_s'] / 60:.1f} min (target ≥ 0.90) |")  # fmt: skip
            row(f"\nval mIoU by epoch: {recipe['curve']}")


if __name__ == "__main__":
    main()
