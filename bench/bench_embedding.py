"""Embedding benchmarks: the default recipe (`visionkit-train task=embedding`) against a plain
pytorch-metric-learning loop of the same recipe (same LeNet-5 + BN-neck, ArcFace, AdamW, cosine schedule, shuffled
batches of 64 as the default `data.per_identity=auto` gives margin losses, the same albumentations `light`
augmentation, 30 epochs; `--plain-sampler mperclass`: the loop with PML's MPerClassSampler, 4 images of 16
identities a batch, the recipe before 2026-12-07, against visionkit's same setting), on the built-in
glyph identities and on patches of real photographs (`data.builtin=patches`), several seeds; both measured on the
test identities the same way (TAR@FAR=1e-2 on 6,000 balanced pairs, precision@1 of a gallery/query split) at the
epoch with the best validation mAP@R (visionkit-train's best.ckpt; the plain loop keeps its best epoch by the same
rule) and at the last epoch, and training images/s (steady epochs, the evaluation left out).

Run:  .venv/bin/python bench/bench_embedding.py [--seeds 3] [--epochs 30] [--plain-sampler shuffle|mperclass]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_model, run_child, train_metrics

ARGS = ["task=embedding", "~callbacks.progress_bar", "~callbacks.model_summary", "trainer.enable_model_summary=false"]


def ours(builtin: str, seed: int, epochs: int, sampler: str) -> dict:
    """The default job through visionkit-train (`data.per_identity=4` with `sampler=mperclass`): its test
    metrics and the speed report's training images/s."""
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*ARGS, f"data.builtin={builtin}", f"seed={seed}", f"trainer.max_epochs={epochs}"]
        overrides += ["data.per_identity=4"] if sampler == "mperclass" else []
        metrics = train_metrics(overrides, Path(tmp), "tar_far_1e-2")
        run = next(Path(tmp).rglob("speed.json")).parent
        rows = next(iter((run / "csv").rglob("metrics.csv"))).read_text().splitlines()
        header = rows[0].split(",")
        test = next(
            dict(zip(header, r.split(","))) for r in rows[1:] if r.split(",")[header.index("test_precision_at_1")]
        )
        speed = json.loads((run / "speed.json").read_text())
        exe = Path(sys.executable).with_name("visionkit-eval")
        last = run / "checkpoints" / "last.ckpt"
        out = subprocess.run([str(exe), f"ckpt_path={last}"], capture_output=True, text=True, cwd=tmp, check=True)
        at_last = float(re.search(r"test_tar_far_1e-2\s*│\s*([0-9.]+)", out.stdout).group(1))
    return {
        **metrics,
        "test_precision_at_1": float(test["test_precision_at_1"]),
        "images_per_s": speed["images_per_s"],
        "last_tar_far_1e-2": at_last,
    }


def plain(builtin: str, seed: int, epochs: int, sampler: str) -> dict:
    """The loop pytorch-metric-learning's examples write, on the same splits, network and augmentation."""
    import albumentations as A
    from pytorch_metric_learning.losses import ArcFaceLoss
    from pytorch_metric_learning.samplers import MPerClassSampler
    from torch.utils.data import DataLoader, Dataset

    from visionkit.data import IdentitySource
    from visionkit.data.augment import load_preset
    from visionkit.models.classifier import build_embedder
    from visionkit.tasks.embedding_metrics import (
        gallery_query_split,
        pair_distances,
        retrieval,
        sampled_pairs,
        verify_pairs,
    )

    torch.manual_seed(seed)
    np.random.seed(seed)
    splits = IdentitySource(builtin=builtin).splits(0.1, 0.2, 0)
    augment = A.Compose(load_preset("light"))
    augment.set_random_seed(seed)

    class Views(Dataset):
        def __init__(self, samples, train: bool) -> None:
            self.samples, self.train = samples, train

        def __len__(self) -> int:
            return len(self.samples)

        def __getitem__(self, i: int):
            image = self.samples.images[i]
            image = augment(image=image)["image"] if self.train else image
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
            return x, int(self.samples.targets[i])

    train = splits["train"]
    classes = int(train.targets.max()) + 1
    if sampler == "mperclass":
        grouped = MPerClassSampler(train.targets, m=4, batch_size=64, length_before_new_iter=len(train))
        loader = DataLoader(Views(train, True), batch_size=64, sampler=grouped)
    else:
        loader = DataLoader(Views(train, True), batch_size=64, shuffle=True)
    net = build_embedder("lenet5", 128)
    loss_fn = ArcFaceLoss(classes, 128)
    params = [*net.parameters(), *loss_fn.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    def embed(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        net.eval()
        with torch.no_grad():
            found = torch.cat([net(x) for x, _ in DataLoader(Views(splits[split], False), batch_size=256)])
        return found, torch.as_tensor(splits[split].targets)

    def tested() -> dict[str, float]:
        embeddings, labels = embed("test")
        pairs = sampled_pairs(test.targets, 6000, 0)  # the task's pairs and seed
        verification = verify_pairs(pair_distances(embeddings, pairs), pairs[:, 2])
        gallery, query = gallery_query_split(test.targets, 0)
        found = retrieval(embeddings[query], labels[query], embeddings[gallery], labels[gallery])
        return {"test_tar_far_1e-2": verification.tar_at(1e-2), "test_precision_at_1": found["precision_at_1"]}

    test = splits["test"]
    images, seconds, best_val, best_state = 0, 0.0, -1.0, None
    for epoch in range(epochs):
        net.train()
        start = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(net(x), y).backward()
            optimizer.step()
            if epoch > 0:
                images += len(y)
        if epoch > 0:
            seconds += time.perf_counter() - start
        schedule.step()
        val, labels = embed("val")  # best.ckpt's rule: the first epoch with the highest validation mAP@R
        map_at_r = retrieval(val, labels, val, labels, same_set=True)["map_at_r"]
        if map_at_r > best_val:
            best_val, best_state = map_at_r, copy.deepcopy(net.state_dict())
    last = tested()
    net.load_state_dict(best_state)
    return {**tested(), "images_per_s": images / seconds, "last_tar_far_1e-2": last["test_tar_far_1e-2"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data", nargs="+", default=["glyphs", "patches"], help="built-in sets to compare on")
    parser.add_argument("--plain-sampler", choices=["shuffle", "mperclass"], default="shuffle")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child is not None:
        kind, builtin, seed, epochs = args.child
        result = (ours if kind == "ours" else plain)(builtin, int(seed), int(epochs), args.plain_sampler)
        print(json.dumps(result))
        return
    torch.set_num_threads(torch.get_num_threads())
    print(
        f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, {args.epochs} epochs, {args.plain_sampler} batches\n"
    )
    for builtin in args.data:
        print(f"data.builtin={builtin}")
        print(
            "| seed | plain PML loop: TAR@FAR=1e-2 / P@1 / train img/s | visionkit: TAR@FAR=1e-2 / P@1 / train img/s |"
        )
        print("|---:|---:|---:|")
        rows = {"plain": [], "ours": []}
        for seed in range(args.first_seed, args.first_seed + args.seeds):  # interleaved: each pair back to back
            for kind in ("plain", "ours"):
                options = [kind, builtin, str(seed), str(args.epochs)]
                rows[kind].append(run_child(__file__, [*options, "--plain-sampler", args.plain_sampler]))
            cells = [
                f"{r['test_tar_far_1e-2']:.3f} / {r['test_precision_at_1']:.3f} / {r['images_per_s']:.0f}"
                for r in (rows["plain"][-1], rows["ours"][-1])
            ]
            print(f"| {seed} | {cells[0]} | {cells[1]} |", flush=True)
        mean = {k: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for k, v in rows.items()}
        speed = mean["ours"]["images_per_s"] / mean["plain"]["images_per_s"]
        quality = all(mean["ours"][m] >= mean["plain"][m] for m in ("test_tar_far_1e-2", "test_precision_at_1"))
        cells = [
            f"{m['test_tar_far_1e-2']:.3f} / {m['test_precision_at_1']:.3f} / {m['images_per_s']:.0f}"
            for m in (mean["plain"], mean["ours"])
        ]
        print(f"| mean | {cells[0]} | **{cells[1]}** |")
        last = {k: float(np.mean([r["last_tar_far_1e-2"] for r in v])) for k, v in rows.items()}
        print(
            f"the last epoch instead of the best validation one: TAR@FAR=1e-2 {last['plain']:.3f} (plain loop), "
            f"{last['ours']:.3f} (visionkit's last.ckpt)"
        )
        print(
            f"quality ≥ the plain loop: {'reached' if quality else 'NOT reached'}; "
            f"speed {speed:.2f}× (target ≥ 0.95: {'reached' if speed >= 0.95 else 'NOT reached'})\n",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
