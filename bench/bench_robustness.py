"""Robustness benchmark on the digits job (LeNet-5, 32 px, the built-in digits):

1. Adversarial training: `visionkit-train` (the default digits job, `--epochs` epochs) with `task.adversarial=none`,
   `fgsm_rs` and `pgd` (ε 8/255), seed by seed; each checkpoint's clean test accuracy and its accuracy under PGD-10
   at ε = 8/255 (`visionkit-robustness`), and the training time against the plain run's.
2. Attack speed: seconds per 100 test images for FGSM and PGD-10 (visionkit's, `visionkit-robustness`) against
   ART's FastGradientMethod and ProjectedGradientDescent on the same classifier and images (same ε, steps, step
   size, batch), interleaved rounds, and their adversarial accuracies side by side.

Run:  .venv/bin/python bench/bench_robustness.py [--epochs 10] [--seeds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median

from common import cpu_model, run_child

MEAN = STD = (0.5, 0.5, 0.5)
EPS = (8, 16, 32)  # /255; the digits (17 grey levels, blurred by resizing 8 px to 32) hold up well at 8


def train_and_attack(mode: str, epochs: int, seed: int, workdir: Path) -> dict:
    """One digits run with `task.adversarial=mode`: training seconds, clean and PGD-10 accuracy at 8/255."""
    bin_dir = Path(sys.executable).parent
    run = workdir / f"{mode}_{seed}"
    start = time.perf_counter()
    overrides = [f"task.adversarial={mode}", f"trainer.max_epochs={epochs}", f"seed={seed}", f"hydra.run.dir={run}"]
    done = subprocess.run([str(bin_dir / "visionkit-train"), *overrides, "logger=csv"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    attack = [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "attacks=[pgd]", f"eps=[{','.join(map(str, EPS))}]"]
    done = subprocess.run([str(bin_dir / "visionkit-robustness"), *attack], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    rows = list(csv.DictReader(next((run / "robustness").rglob("robustness.csv")).open()))
    value = {(r["attack"], r["eps_255"]): float(r["acc"]) for r in rows}
    speed = json.loads((run / "speed.json").read_text())["images_per_s"]
    return {"seconds": seconds, "train_images_per_s": speed, "clean": value[("clean", "0")]} | {
        f"pgd{e}": value[("pgd", str(e))] for e in EPS
    }


def adversarial_training(epochs: int, seeds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, list[dict]] = {"none": [], "fgsm_rs": [], "pgd": []}
        for seed in range(seeds):
            for mode in results:
                results[mode].append(train_and_attack(mode, epochs, seed, Path(tmp)))
                print(f"  seed {seed} {mode}: {results[mode][-1]}", flush=True)
    base = {k: mean(r[k] for r in results["none"]) for k in ("seconds", "train_images_per_s")}
    columns = " | ".join(f"PGD-10 acc at {e}/255" for e in EPS)
    print(f"\n| digits job, LeNet-5, {epochs} epochs, {seeds} seed(s) | clean test acc | {columns} | "
          "training images/s (ratio) | command time (ratio) |")  # fmt: skip
    print("|---|---:|" + "---:|" * len(EPS) + "---:|---:|")
    for mode, runs in results.items():
        clean, secs, speed = (mean(r[k] for r in runs) for k in ("clean", "seconds", "train_images_per_s"))
        cells = []
        for e in EPS:
            values = [r[f"pgd{e}"] for r in runs]
            cells.append(f"{mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
        time_ratio = base["train_images_per_s"] / speed
        print(f"| task.adversarial={mode} | {clean:.3f} | {' | '.join(cells)} | {speed:.0f} ({time_ratio:.2f}× the "
              f"time) | {secs:.0f} s ({secs / base['seconds']:.2f}×) |")  # fmt: skip


def child_speed(kind: str, ckpt: str, eps: float, steps: int, count: int) -> dict:
    """One timed attack on the first `count` test digits (in this process): seconds and adversarial accuracy."""
    import numpy as np
    import torch

    from visionkit.checkpoints import load_checkpoint
    from visionkit.data import DigitsSource, VisionDataModule
    from visionkit.explain.robustness import art_classifier
    from visionkit.tasks.adversarial import PixelSpace, attack

    torch.set_num_threads(2)
    task, _ = load_checkpoint(ckpt)
    task.eval().requires_grad_(False)
    dm = VisionDataModule(DigitsSource(), image_size=32, batch_size=count, augment="none", mean=MEAN, std=STD)
    dm.setup("test")
    batch = dm.normalize_batch(next(iter(dm.test_dataloader())))
    images, labels = batch["image"], batch["label"]
    space = PixelSpace(MEAN, STD)
    name, side = kind.split("_")
    torch.manual_seed(0)
    np.random.seed(0)
    start = time.perf_counter()
    if side == "ours":

        def loss(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(task(x), labels, reduction="sum")

        adversarial = attack(name, loss, images, eps, space, steps=steps)
    else:
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

        classifier = art_classifier(task, space, images.shape[1:])
        pixels = space.to_pixels(images).clamp(0, 1).numpy()
        if name == "fgsm":
            art_attack = FastGradientMethod(classifier, eps=eps, batch_size=count)
        else:
            art_attack = ProjectedGradientDescent(classifier, eps=eps, eps_step=eps / 4, max_iter=steps,
                                                  num_random_init=1, batch_size=count, verbose=False)  # fmt: skip
        adversarial = space.to_network(torch.from_numpy(art_attack.generate(pixels, labels.numpy())))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((task(adversarial).argmax(1) == labels).float().mean())
    return {"seconds": seconds, "acc": accuracy}


def attack_speed(epochs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        bin_dir = Path(sys.executable).parent
        overrides = [f"trainer.max_epochs={epochs}", f"hydra.run.dir={run}", "logger=csv"]
        subprocess.run([str(bin_dir / "visionkit-train"), *overrides], check=True, capture_output=True)
        ckpt = str(run / "checkpoints" / "best.ckpt")
        count, eps, steps = 256, 8 / 255, 10
        print(f"\n{count} test digits, one batch, ε 8/255, PGD {steps} steps of ε/4 from a random start, 2 threads")
        print("| attack | visionkit s/100 images | ART s/100 images | ratio (ART / ours) | adv. acc: ours / ART |")
        print("|---|---:|---:|---:|---:|")
        for name in ("fgsm", "pgd"):
            timed: dict[str, list[dict]] = {"ours": [], "art": []}
            for index in range(rounds):
                order = ("ours", "art") if index % 2 == 0 else ("art", "ours")
                for side in order:
                    args = [f"{name}_{side}", ckpt, str(eps), str(steps), str(count)]
                    timed[side].append(run_child(__file__, args))
            ours, art = (median(r["seconds"] for r in timed[s]) * 100 / count for s in ("ours", "art"))
            accs = f"{timed['ours'][0]['acc']:.3f} / {timed['art'][0]['acc']:.3f}"
            print(f"| {name} | {ours:.3f} | {art:.3f} | {art / ours:.2f} | {accs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each digits run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-training", action="store_true", help="only the attack speed table")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, ckpt, eps, steps, count = args.child
        print(json.dumps(child_speed(kind, ckpt, float(eps), int(steps), int(count))))
        return
    print(f"machine: {cpu_model()}, 2 threads")
    if not args.skip_training:
        adversarial_training(args.epochs, args.seeds)
    attack_speed(args.epochs, args.rounds)


if __name__ == "__main__":
    main()
