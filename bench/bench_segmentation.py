"""Segmentation benchmark: Lightning overhead, tiled-prediction memory, and the default recipe's mIoU.

1. Training images/s of SegmentationTask (Lightning Trainer) ÷ a plain PyTorch loop with the same smp U-Net,
   the same data module (built-in shapes, 128 px, batch 16, light augmentation, 2 workers) and the same loss
   (CE + Dice). The plain loop is timed as people write it (default layout) and with channels-last inputs,
   which our task uses on CPU, so the layout's share of the difference is visible.
2. Peak memory (process max RSS, model and libraries included) of tiled prediction on a 4096x4096 image.
3. The shipped recipe, `visionkit-train experiment=shapes_unet`: test mIoU and wall time.
4. `--peer`: the default recipe (`visionkit-train task=segmentation data=masks ...`) against an 80-line plain smp
   loop on a set of real pictures (scikit-image's brick, grass and gravel texture photographs over real photos),
   same network, epochs, batch and image size, over several seeds (about 7 minutes a seed on 2 CPU cores).

Run:  .venv/bin/python bench/bench_segmentation.py [--skip-recipe] [--quick] [--device cuda] [--peer]
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
from collections.abc import Callable
from pathlib import Path

from common import cpu_model, rgb_array, run_child, seed_table, train_metrics

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


# ---- the default recipe against a plain loop on real images ---------------------------------------------------

TEXTURES = ("brick", "grass", "gravel")  # scikit-image's real texture photographs: classes 1, 2, 3 over a photo
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "hubble_deep_field", "camera")
SPLIT_SIZES = {"train": 240, "val": 60, "test": 60}
PEER_SIZE, PEER_BATCH = 128, 8


def random_crop(rng: object, picture: object, rows: slice, size: int) -> object:
    """A square crop of `picture[rows]` of a random side (a third of the shorter side up to all of it) at a random
    place, resized to `size` x `size`, as float32: the pieces the texture sets are made of."""
    import numpy as np
    from PIL import Image

    part = picture[rows]
    side = int(rng.integers(min(part.shape[:2]) // 3, min(part.shape[:2]) + 1))
    y, x = int(rng.integers(0, part.shape[0] - side + 1)), int(rng.integers(0, part.shape[1] - side + 1))
    patch = Image.fromarray(np.ascontiguousarray(part[y : y + side, x : x + side])).resize((size, size))
    return np.asarray(patch, dtype=np.float32)


def texture_set(root: Path, seed: int = 0) -> Path:
    """A 4-class segmentation set of real pictures: regions (ellipses and polygons) of brick, grass and gravel
    texture photographs, randomly scaled and shaded, over crops of real photos (scikit-image's), 128 px, as
    root/images/{split}/ + root/masks/{split}/. Training regions come from the top 60 % of each texture and the
    first five photos; validation and test from the rest, so the evaluation pixels are never trained on."""
    import numpy as np
    import skimage.data as sk
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    textures = [rgb_array(getattr(sk, name)()) for name in TEXTURES]
    photos = [rgb_array(getattr(sk, name)()) for name in PHOTOS]

    for split, count in SPLIT_SIZES.items():
        held_out = split != "train"
        for folder in ("images", "masks"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            photo = photos[int(rng.integers(5, len(photos))) if held_out else int(rng.integers(0, 5))]
            image = random_crop(rng, photo, slice(None), PEER_SIZE)
            mask = np.zeros((PEER_SIZE, PEER_SIZE), np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                label = int(rng.integers(1, len(TEXTURES) + 1))
                texture = textures[label - 1]
                rows = slice(int(texture.shape[0] * 0.6), None) if held_out else slice(0, int(texture.shape[0] * 0.6))
                patch = random_crop(rng, texture, rows, PEER_SIZE) * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30)
                shape = Image.new("L", (PEER_SIZE, PEER_SIZE), 0)
                draw = ImageDraw.Draw(shape)
                cx, cy = rng.integers(10, PEER_SIZE - 10, 2)
                rx, ry = rng.integers(14, 48, 2)
                if rng.random() < 0.5:
                    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
                else:
                    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
                    radii = rng.uniform(0.5, 1.0, len(angles))
                    draw.polygon(
                        [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)], fill=1
                    )
                inside = np.asarray(shape, dtype=bool)
                image[inside] = patch[inside]
                mask[inside] = label
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                root / "images" / split / f"{index:04d}.jpg", quality=92
            )
            Image.fromarray(mask).save(root / "masks" / split / f"{index:04d}.png")
    return root


def plain_peer(root: Path, epochs: int, seed: int) -> dict:
    """The peer: about 80 lines of plain PyTorch with smp, as people write it: U-Net/ResNet-18 from scratch,
    flips + 90-degree turns, AdamW(lr 1e-3, torch's default weight decay), CE + Dice, cosine per epoch, batch 8;
    the test mIoU of the epoch with the best validation mIoU."""
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch
    from PIL import Image

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        names = sorted((root / "images" / split).glob("*.jpg"))
        images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in names]).astype(np.float32)
        masks = np.stack([np.asarray(Image.open(root / "masks" / split / f"{p.stem}.png")) for p in names])
        return (images - mean) / std, masks.astype(np.int64)

    data = {split: load(split) for split in SPLIT_SIZES}
    classes = len(TEXTURES) + 1
    model = smp.Unet("resnet18", encoder_weights=None, classes=classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    dice = smp.losses.DiceLoss("multiclass")

    def miou(split: str) -> float:
        images, masks = data[split]
        confusion = np.zeros((classes, classes), np.int64)
        model.eval()
        with torch.no_grad():
            for start in range(0, len(images), 16):
                x = torch.from_numpy(images[start : start + 16]).permute(0, 3, 1, 2).float()
                predicted = model(x).argmax(1).numpy()
                confusion += np.bincount(
                    masks[start : start + 16].ravel() * classes + predicted.ravel(), minlength=classes**2
                ).reshape(classes, classes)
        hits = np.diag(confusion)
        union = confusion.sum(0) + confusion.sum(1) - hits
        return float(np.mean(hits[union > 0] / union[union > 0]))

    images, masks = data["train"]
    best_val, best_test = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        for batch in np.array_split(rng.permutation(len(images)), len(images) // PEER_BATCH):
            x, y = images[batch].copy(), masks[batch].copy()
            for i in range(len(batch)):  # flips and quarter turns, the same for image and mask
                turns, flip = int(rng.integers(4)), rng.random() < 0.5
                x[i], y[i] = np.rot90(x[i], turns), np.rot90(y[i], turns)
                if flip:
                    x[i], y[i] = x[i][:, ::-1], y[i][:, ::-1]
            x_t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
            y_t = torch.from_numpy(np.ascontiguousarray(y))
            logits = model(x_t)
            loss = torch.nn.functional.cross_entropy(logits, y_t) + dice(logits, y_t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        val = miou("val")
        if val > best_val:
            best_val, best_test = val, miou("test")
    return {"test_miou": best_test, "val_miou": best_val}


def ours_peer(root: Path, epochs: int, seed: int, workdir: Path, extra: list[str]) -> dict:
    """visionkit-train's default segmentation recipe on the same set, the same epochs, batch and image size."""
    overrides = [
        "task=segmentation",
        "data=masks",
        f"data.root={root}",
        "data.class_names=[background,brick,grass,gravel]",
        f"data.image_size={PEER_SIZE}",
        f"data.batch_size={PEER_BATCH}",
        "data.num_workers=2",
        "model.encoder_weights=null",
        f"trainer.max_epochs={epochs}",
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    return train_metrics(overrides, workdir, "miou")


def peer_comparison(seeds: int, epochs: int, row: Callable[[str], None]) -> None:
    """The default recipe against the plain loop on the texture set, seed by seed (one seed moves the mIoU by up
    to ±0.07, so the mean decides); each side in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        root = texture_set(Path(tmp) / "textures")
        row(f"texture set: {SPLIT_SIZES} images of {PEER_SIZE} px, classes background, {', '.join(TEXTURES)}")

        def ours(seed: int) -> dict:
            (Path(tmp) / f"ours{seed}").mkdir()
            return _child(["peer-ours", str(root), str(epochs), str(seed), str(Path(tmp) / f"ours{seed}")])

        def plain(seed: int) -> dict:
            return _child(["peer-plain", str(root), str(epochs), str(seed)])

        seed_table(seeds, "miou", plain, ours, ("plain smp loop", "visionkit-train default"), row)


def _child(args: list[str]) -> dict:
    return run_child(__file__, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch per speed side, no recipe run")
    parser.add_argument("--skip-recipe", action="store_true", help="leave out the default recipe's run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--train-images", type=int, default=600, help="epoch length (more on fast GPUs)")
    parser.add_argument("--peer", action="store_true", help="only the default recipe vs a plain smp loop")
    parser.add_argument("--peer-seeds", type=int, default=3, help="seeds per side of the peer comparison")
    parser.add_argument("--peer-epochs", type=int, default=15)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "peer-plain":
            result = plain_peer(Path(rest[0]), int(rest[1]), int(rest[2]))
        elif kind == "peer-ours":
            result = ours_peer(Path(rest[0]), int(rest[1]), int(rest[2]), Path(rest[3]), rest[4:])
        elif kind == "plain":
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
    if args.peer:
        peer_comparison(args.peer_seeds, args.peer_epochs, row)
        return
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
