"""Classification benchmarks: default-job time-to-accuracy, Lightning overhead, data-pipeline headroom.

Run:  .venv/bin/python bench/bench_classification.py [--quick] [--peer]
`--peer`: the default recipe (`visionkit-train data=imagefolder model=resnet18 ...`) against a plain torchvision
loop on 48 px crops of real photographs (scikit-image's textures and the cameraman), same network, epochs and
batch, over several seeds.
Prints one table; ratios compare measurements taken in this same run on this machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from common import cpu_model, rgb_array, seed_table, train_metrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionkit.data import DigitsSource, VisionDataModule
from visionkit.tasks import ClassificationTask

REPO = Path(__file__).resolve().parents[1]


def default_job() -> tuple[float, float]:
    """Wall seconds and test accuracy of `visionkit-train` with no overrides (the README's default job)."""
    exe = Path(sys.executable).with_name("visionkit-train")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = subprocess.run([str(exe)], cwd=tmp, capture_output=True, text=True, check=True).stdout
        wall = time.perf_counter() - start
    match = re.search(r"test_acc: ([0-9.]+)", out)
    return wall, float(match.group(1)) if match else float("nan")


def preloaded_digits(image_size: int) -> TensorDataset:
    """Digits already resized and normalized, so both loops measure the training step, not decoding."""
    dm = VisionDataModule(DigitsSource(), image_size=image_size, augment="none", mean=(0.5,) * 3, std=(0.5,) * 3)
    dm.setup("fit")
    ds = dm.datasets["train"]
    items = [ds[i] for i in range(len(ds))]
    images = dm.normalize_batch({"image": torch.stack([s["image"] for s in items])})["image"]
    return TensorDataset(images, torch.stack([s["label"] for s in items]))


class _DictBatches(torch.utils.data.Dataset):
    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, label = self.base[i]
        return {"image": image, "label": label}


def plain_loop(backbone: str, data: TensorDataset, batch: int, epochs: int) -> float:
    """Steps/s (best epoch) of a hand-written loop: forward, cross-entropy, backward, AdamW step."""
    torch.manual_seed(0)
    model = ClassificationTask(backbone, num_classes=10).model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(_DictBatches(data), batch_size=batch, shuffle=True)
    model.train()
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for b in loader:
            loss = loss_fn(model(b["image"]), b["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(len(loader) / (time.perf_counter() - start))
    return max(rates)


class _Timer(L.Callback):
    """Steps/s of every training epoch."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()
        self.first_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rates.append((trainer.global_step - self.first_step) / (time.perf_counter() - self.start))


def lightning_loop(backbone: str, data: TensorDataset, batch: int, epochs: int, progress: bool) -> float:
    """Steps/s (best epoch) of ClassificationTask under a Lightning Trainer (metrics and CSV logging on,
    no validation)."""
    torch.manual_seed(0)
    task = ClassificationTask(backbone, num_classes=10, optimizer=partial(torch.optim.AdamW, lr=1e-3))
    loader = DataLoader(_DictBatches(data), batch_size=batch, shuffle=True)
    timer = _Timer()
    callbacks = [timer] + ([L.pytorch.callbacks.RichProgressBar()] if progress else [])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=L.pytorch.loggers.CSVLogger(tmp),
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=callbacks,
            default_root_dir=tmp,
        )
        trainer.fit(task, train_dataloaders=loader)
    return max(timer.rates)


class _BareModule(L.LightningModule):
    """The least a LightningModule can do: forward, loss, AdamW. Separates Lightning's own loop cost."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.model = ClassificationTask(backbone, num_classes=10).model

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.model(batch["image"]), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def bare_lightning_loop(backbone: str, data: TensorDataset, batch: int, epochs: int) -> float:
    """Steps/s (best epoch) of `_BareModule` under a Trainer with nothing else switched on."""
    torch.manual_seed(0)
    timer = _Timer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(_BareModule(backbone), train_dataloaders=DataLoader(_DictBatches(data), batch_size=batch, shuffle=True))
    return max(timer.rates)


def pipeline_rate(batch: int, workers: int, batches: int) -> float:
    """Images/s the data module delivers with the `light` augmentation (digits at 32 px)."""
    dm = VisionDataModule(
        DigitsSource(),
        image_size=32,
        batch_size=batch,
        augment="light",
        num_workers=workers,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # start the workers
    seen, start = 0, time.perf_counter()
    while seen < batches * batch:
        try:
            seen += len(next(it)["label"])
        except StopIteration:
            it = iter(loader)
    return seen / (time.perf_counter() - start)


def compiled_fit(backbone: str, batch: int, epochs: int, compile_: bool) -> tuple[float, float]:
    """(fit wall s, median model step ms from the speed report) of ClassificationTask on digits at 32 px, with
    or without `compile=True` (torch.compile's default inductor backend)."""
    import json

    dm = VisionDataModule(DigitsSource(), image_size=32, batch_size=batch, augment="light", num_workers=0)
    task = ClassificationTask(backbone, num_classes=10, compile=compile_)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=tmp,
        )
        start = time.perf_counter()
        trainer.fit(task, datamodule=dm)
        wall = time.perf_counter() - start
        step = json.loads((Path(tmp) / "speed.json").read_text())["model_step_ms"]
    return wall, step


def compile_rows(epochs: int) -> list[tuple[str, str, str]]:
    """task.compile=true against eager, same run, interleaved (the compile cache is cold for the first)."""
    rows = []
    for backbone, batch in (("lenet5", 32), ("resnet18", 64)):
        results = {False: [], True: []}
        for compile_ in (False, True, True, False):
            results[compile_].append(compiled_fit(backbone, batch, epochs, compile_))
        (eager_wall, eager_step), (compiled_wall, compiled_step) = (min(results[False]), min(results[True]))
        step_ratio = eager_step / compiled_step
        rows.append(
            (f"{backbone} b{batch} {epochs} epochs: eager fit s / step ms", f"{eager_wall:.1f}", f"{eager_step:.2f} ms")
        )
        rows.append(
            (
                f"{backbone} b{batch}: task.compile=true fit s / step ms",
                f"{compiled_wall:.1f}",
                f"{compiled_step:.2f} ms; step speed-up {step_ratio:.2f}x",
            )
        )
    return rows


# ---- classification: the default recipe against a plain loop on real images ----------------------------------

CLS_CLASSES = ("brick", "grass", "gravel", "camera")  # three texture photographs and the cameraman photo
CLS_SPLITS = {"train": 600, "val": 150, "test": 300}
CLS_SIZE, CLS_BATCH = 48, 32


def texture_classes(root: Path, seed: int = 0) -> Path:
    """A 4-class set of 48 px crops of real photographs (scikit-image's brick, grass and gravel textures and the
    cameraman photo), at random scales, shaded and noised, as root/{split}/{class}/; training crops come from the
    top 60 % of each picture and validation/test crops from the rest."""
    import numpy as np
    import skimage.data as sk
    from PIL import Image

    rng = np.random.default_rng(seed)
    pictures = [rgb_array(getattr(sk, name)()) for name in CLS_CLASSES]
    for split, count in CLS_SPLITS.items():
        held_out = split != "train"
        for index in range(count):
            label = index % len(CLS_CLASSES)
            picture = pictures[label]
            cut = int(picture.shape[0] * 0.6)
            part = picture[cut:] if held_out else picture[:cut]
            side = int(rng.integers(24, min(part.shape[:2]) // 2))
            y = int(rng.integers(0, part.shape[0] - side + 1))
            x = int(rng.integers(0, part.shape[1] - side + 1))
            crop = Image.fromarray(np.ascontiguousarray(part[y : y + side, x : x + side])).resize((CLS_SIZE, CLS_SIZE))
            pixels = np.asarray(crop, dtype=np.float32) * rng.uniform(0.5, 1.4) + rng.uniform(-40, 40)
            pixels += rng.normal(0, rng.uniform(0, 25), pixels.shape)
            folder = root / split / CLS_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{index:04d}.png")
    return root


def plain_classifier(root: Path, epochs: int, seed: int) -> dict:
    """The peer: torchvision's ResNet-18 from scratch in a plain loop as its tutorials write it: ImageFolder,
    random horizontal flips, ImageNet normalization, AdamW(lr 1e-3, torch's default weight decay), cross-entropy,
    cosine per epoch, batch 32; the test accuracy of the epoch with the best validation accuracy."""
    import torch
    import torchvision
    from torchvision import transforms as T

    torch.manual_seed(seed)
    normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    eval_tf = T.Compose([T.ToTensor(), normalize])
    sets = {
        split: torchvision.datasets.ImageFolder(str(root / split), train_tf if split == "train" else eval_tf)
        for split in CLS_SPLITS
    }
    loader = torch.utils.data.DataLoader(sets["train"], batch_size=CLS_BATCH, shuffle=True, num_workers=2)
    model = torchvision.models.resnet18(num_classes=len(CLS_CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    def accuracy(split: str) -> float:
        model.eval()
        right = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(sets[split], batch_size=100):
                right += int((model(x).argmax(1) == y).sum())
        return right / len(sets[split])

    best_val, best_test = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        val = accuracy("val")
        if val > best_val:
            best_val, best_test = val, accuracy("test")
    return {"test_acc": best_test, "val_acc": best_val}


def ours_classifier(root: Path, epochs: int, seed: int, workdir: Path, extra: list[str]) -> dict:
    """visionkit-train's default classification recipe with the same network, data, epochs and batch."""
    overrides = [
        "data=imagefolder",
        f"data.root={root}",
        f"data.image_size={CLS_SIZE}",
        f"data.batch_size={CLS_BATCH}",
        "data.num_workers=2",
        "model=resnet18",
        f"trainer.max_epochs={epochs}",
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    return train_metrics(overrides, workdir, "acc")


def peer_comparison(seeds: int, epochs: int) -> None:
    """The default recipe against the plain torchvision loop on the texture crops, seed by seed."""
    with tempfile.TemporaryDirectory() as tmp:
        root = texture_classes(Path(tmp) / "crops")
        print(f"texture crops: {CLS_SPLITS} images of {CLS_SIZE} px, classes {', '.join(CLS_CLASSES)}", flush=True)

        def ours(seed: int) -> dict:
            (Path(tmp) / f"ours{seed}").mkdir()
            return ours_classifier(root, epochs, seed, Path(tmp) / f"ours{seed}", [])

        names = ("plain torchvision loop", "visionkit-train default")
        seed_table(seeds, "acc", lambda seed: plain_classifier(root, epochs, seed), ours, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer epochs (noisier)")
    parser.add_argument("--compile-only", action="store_true", help="only the task.compile rows")
    parser.add_argument("--peer", action="store_true", help="only the default recipe vs a plain loop, real crops")
    parser.add_argument("--peer-seeds", type=int, default=3)
    parser.add_argument("--peer-epochs", type=int, default=10)
    args = parser.parse_args()
    epochs = 2 if args.quick else 4
    rounds = 1 if args.quick else 4
    rows: list[tuple[str, str, str]] = []
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    if args.peer:
        peer_comparison(args.peer_seeds, args.peer_epochs)
        return
    if args.compile_only:
        _print(compile_rows(2 if args.quick else 3))
        return
    wall, acc = default_job()
    rows.append(("default job (LeNet-5, digits): wall s", f"{wall:.1f}", "target <= 60"))
    rows.append(("default job: test accuracy", f"{acc:.4f}", "target >= 0.98"))

    for backbone, size, batch in (("lenet5", 32, 32), ("lenet5", 32, 256), ("resnet18", 32, 64)):
        data = preloaded_digits(size)
        plain_loop(backbone, data, batch, 1)  # warm-up
        plain = bare = quiet = bar = 0.0
        for _ in range(rounds):  # interleaved, best of all: this VM's timing noise is larger than the effect
            plain = max(plain, plain_loop(backbone, data, batch, epochs))
            bare = max(bare, bare_lightning_loop(backbone, data, batch, epochs))
            quiet = max(quiet, lightning_loop(backbone, data, batch, epochs, progress=False))
            bar = max(bar, lightning_loop(backbone, data, batch, epochs, progress=True))
        rows.append((f"{backbone} {size}px b{batch}: plain loop steps/s", f"{plain:.1f}", ""))
        rows.append((f"{backbone} b{batch}: bare LightningModule steps/s", f"{bare:.1f}", f"ratio {bare / plain:.3f}"))
        rows.append(
            (f"{backbone} b{batch}: ClassificationTask steps/s (no bar)", f"{quiet:.1f}", f"ratio {quiet / plain:.3f}")
        )
        rows.append(
            (f"{backbone} b{batch}: ClassificationTask steps/s (rich bar)", f"{bar:.1f}", f"ratio {bar / plain:.3f}")
        )
        if (backbone, batch) == ("lenet5", 32):  # the default job's model and batch
            consumption = plain * batch
            for workers in (0, 2):
                rate = pipeline_rate(batch, workers, 100 if args.quick else 300)
                rows.append(
                    (
                        f"data pipeline, light aug, {workers} workers: img/s",
                        f"{rate:.0f}",
                        f"÷ LeNet-5 consumption {consumption:.0f} img/s = {rate / consumption:.2f}",
                    )
                )

    rows += compile_rows(2 if args.quick else 3)
    _print(rows)


def _print(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measurement':<{width}} | {'value':>10} | note")
    print("-" * (width + 40))
    for name, value, note in rows:
        print(f"{name:<{width}} | {value:>10} | {note}")


if __name__ == "__main__":
    main()
