"""Multi-label benchmark: the default recipe (`visionkit-train task=multilabel data=csv ...`) against a plain
torchvision loop on real pictures, the same network, data, epochs, batch and image size, over several seeds.

The set: the segmentation benchmark's real-picture set (scikit-image's brick, grass and gravel texture photographs
as 1-3 shaded regions over crops of real photos, 128 px, held-out photos and texture regions for validation and
test) read as tags: an image holds a texture when it covers at least 3 % of its pixels. Measured: test macro mAP
(torchmetrics' MultilabelAveragePrecision on both sides) of the best-validation epoch.

Run:  .venv/bin/python bench/bench_multilabel.py [--seeds 3] [--epochs 15]   (about 4 minutes a seed on 2 cores)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
from pathlib import Path

from bench_segmentation import SPLIT_SIZES, TEXTURES, texture_set
from common import cpu_model, run_child, seed_table, train_metrics

SIZE, BATCH = 128, 32
MIN_COVER = 0.03  # the share of an image a texture must cover to be one of its tags


def texture_tags(root: Path, seed: int = 0) -> Path:
    """The texture set as root/tags.csv of path,"brick;grass",split rows (an image without a texture large
    enough has an empty label cell)."""
    import numpy as np
    from PIL import Image

    texture_set(root, seed)
    table = root / "tags.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "labels", "split"])
        for split in SPLIT_SIZES:
            for mask_file in sorted((root / "masks" / split).glob("*.png")):
                counts = np.bincount(np.asarray(Image.open(mask_file)).ravel(), minlength=len(TEXTURES) + 1)
                tags = [name for index, name in enumerate(TEXTURES, 1) if counts[index] >= MIN_COVER * counts.sum()]
                writer.writerow([f"images/{split}/{mask_file.stem}.jpg", ";".join(tags), split])
    return table


def plain_multilabel(table: Path, epochs: int, seed: int) -> dict:
    """The peer, as torchvision's tutorials write a tagger: ResNet-18 from scratch with one logit per tag,
    random horizontal flips, ImageNet normalization, AdamW(lr 1e-3, torch's default weight decay),
    BCEWithLogitsLoss, cosine per epoch, batch 32; the test mAP of the epoch with the best validation mAP."""
    import torch
    import torchvision
    from PIL import Image
    from torchmetrics.classification import MultilabelAveragePrecision
    from torchvision import transforms as T

    torch.manual_seed(seed)
    normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    eval_tf = T.Compose([T.ToTensor(), normalize])
    rows = list(csv.DictReader(table.open()))

    class Tagged(torch.utils.data.Dataset):
        def __init__(self, split: str, transform: T.Compose) -> None:
            self.rows = [r for r in rows if r["split"] == split]
            self.transform = transform

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            row = self.rows[i]
            image = self.transform(Image.open(table.parent / row["path"]).convert("RGB"))
            tags = torch.tensor([float(name in row["labels"].split(";")) for name in TEXTURES])
            return image, tags

    sets = {split: Tagged(split, train_tf if split == "train" else eval_tf) for split in SPLIT_SIZES}
    loader = torch.utils.data.DataLoader(sets["train"], batch_size=BATCH, shuffle=True, num_workers=2)
    model = torchvision.models.resnet18(num_classes=len(TEXTURES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    def mean_ap(split: str) -> float:
        metric = MultilabelAveragePrecision(num_labels=len(TEXTURES), average="macro")
        model.eval()
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(sets[split], batch_size=60):
                metric.update(torch.sigmoid(model(x)), y.long())
        return float(metric.compute())

    best_val, best_test = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        val = mean_ap("val")
        if val > best_val:
            best_val, best_test = val, mean_ap("test")
    return {"test_map": best_test, "val_map": best_val}


def ours_multilabel(table: Path, epochs: int, seed: int, workdir: Path, extra: list[str]) -> dict:
    """visionkit-train's default multi-label recipe with the same network, data, epochs, batch and size."""
    overrides = [
        "task=multilabel",
        "data=csv",
        f"data.csv={table}",
        f"data.class_names=[{','.join(TEXTURES)}]",
        f"data.image_size={SIZE}",
        f"data.batch_size={BATCH}",
        "data.num_workers=2",
        "model=resnet18",
        f"trainer.max_epochs={epochs}",
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    return train_metrics(overrides, workdir, "map")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--ours", nargs="*", default=[], help="overrides added to visionkit's side")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, table, epochs, seed, *rest = args.child
        if kind == "plain":
            result = plain_multilabel(Path(table), int(epochs), int(seed))
        else:
            result = ours_multilabel(Path(table), int(epochs), int(seed), Path(rest[0]), rest[1:])
        print(json.dumps(result))
        return

    print(f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        table = texture_tags(Path(tmp) / "tags")
        rows = list(csv.DictReader(table.open()))
        counts = {name: sum(name in r["labels"].split(";") for r in rows) for name in TEXTURES}
        print(f"texture tags: {SPLIT_SIZES} images of {SIZE} px, images per tag {counts}", flush=True)

        def ours(seed: int) -> dict:
            workdir = Path(tmp) / f"ours{seed}"
            workdir.mkdir()
            return run_child(__file__, ["ours", str(table), str(args.epochs), str(seed), str(workdir), *args.ours])

        def plain(seed: int) -> dict:
            return run_child(__file__, ["plain", str(table), str(args.epochs), str(seed)])

        names = ("plain torchvision loop", f"visionkit-train {' '.join(args.ours) or 'default'}")
        seed_table(
            args.seeds, "map", plain, ours, names, lambda text: print(text, flush=True), first_seed=args.first_seed
        )


if __name__ == "__main__":
    main()
