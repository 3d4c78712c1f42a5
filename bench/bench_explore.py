"""The explore page's size and time to build (`visionkit-explore` with its defaults, one photo) for LeNet-5 at
32 px, ResNet-18 at 224 px, YOLOv8-n at 640 px and U-Net/ResNet-34 at 256 px, each in a fresh process; and the
robustness run time per 100 images per attack for the same networks (FGSM and PGD-10 on the task loss, batch 8).
The networks have their initial weights (the page's cost does not depend on training); the photo is scikit-image's
astronaut.

Run:  .venv/bin/python bench/bench_explore.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, cpu_model, run_child

NETWORKS = {  # name: (task, size)
    "LeNet-5, 32 px": ("lenet5", 32),
    "ResNet-18, 224 px": ("resnet18", 224),
    "YOLOv8-n, 640 px": ("yolov8n", 640),
    "U-Net/ResNet-34, 256 px": ("unet", 256),
}


def checkpoint(kind: str, size: int, folder: Path) -> Path:
    """A visionkit checkpoint of `kind` with its initial weights and an input contract of `size` px."""
    import torch

    sys.path.insert(0, str(REPO))
    from tests.conftest import save_task_checkpoint
    from visionkit.tasks import ClassificationTask, DetectionTask, SegmentationTask

    torch.manual_seed(0)
    names = [f"class{i}" for i in range(4)]
    if kind in ("lenet5", "resnet18"):
        task = ClassificationTask(kind, num_classes=4, class_names=names)
        resize, mean, std = "stretch", [0.5] * 3, [0.5] * 3
    elif kind == "yolov8n":
        task = DetectionTask("yolov8n.yaml", num_classes=4, class_names=names)
        resize, mean, std = "letterbox", [0.0] * 3, [1.0] * 3
    else:
        task = SegmentationTask("unet", "resnet34", num_classes=4, class_names=names)
        resize, mean, std = "stretch", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    state = {"image_size": size, "resize": resize, "mean": mean, "std": std, "class_names": names}
    return save_task_checkpoint(task.eval(), folder / f"{kind}.ckpt", state)


def child_page(kind: str, size: int, folder: Path) -> dict:
    from PIL import Image
    from skimage import data as samples

    from visionkit.config.folders import register_resolvers
    from visionkit.explain.explore_data import ExploreOptions
    from visionkit.explain.explore_page import build_page
    from visionkit.explain.subjects import subject_from_checkpoint

    register_resolvers()
    ckpt = checkpoint(kind, size, folder)
    photo = folder / "astronaut.png"
    Image.fromarray(samples.astronaut()).save(photo)
    start = time.perf_counter()
    subject = subject_from_checkpoint(str(ckpt), conf=0.01)
    metrics = build_page(subject, photo, folder / kind, ExploreOptions())
    return {**metrics, "with_load_s": time.perf_counter() - start}


def child_attack(kind: str, size: int, folder: Path) -> dict:
    import torch

    from visionkit.checkpoints import load_checkpoint
    from visionkit.explain.attack_targets import attack_target
    from visionkit.tasks.adversarial import PixelSpace, attack

    torch.set_num_threads(2)
    task, state = load_checkpoint(str(checkpoint(kind, size, folder)))
    task.eval().requires_grad_(False)
    target = attack_target(task)
    space = PixelSpace(state["mean"], state["std"])
    images = torch.rand(8, 3, size, size)
    batch: dict = {"image": space.to_network(images)}
    if kind in ("lenet5", "resnet18"):
        batch["label"] = torch.zeros(8, dtype=torch.long)
    elif kind == "yolov8n":
        batch |= {"batch_idx": torch.arange(8.0), "cls": torch.zeros(8, 1), "bboxes": torch.full((8, 4), 0.3)}
    else:
        batch["mask"] = torch.zeros(8, size, size, dtype=torch.long)
    out = {}
    for name in ("fgsm", "pgd"):
        attack(name, target.loss(batch), batch["image"], 2 / 255, space, steps=10)  # warm-up
        start = time.perf_counter()
        attack(name, target.loss(batch), batch["image"], 8 / 255, space, steps=10)
        out[name] = (time.perf_counter() - start) * 100 / 8
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, kind, size, folder = args.child
        work = child_page if what == "page" else child_attack
        print(json.dumps(work(kind, int(size), Path(folder))))
        return
    print(f"machine: {cpu_model()}, 2 threads")
    print("| network | explore.html | build (load + page) | FGSM s/100 images | PGD-10 s/100 images |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (kind, size) in NETWORKS.items():
            page = run_child(__file__, ["page", kind, str(size), tmp])
            attacks = run_child(__file__, ["attack", kind, str(size), tmp])
            print(f"| {label} | {page['page_mb']:.1f} MB | {page['build_s']:.1f} s ({page['with_load_s']:.1f} s) | "
                  f"{attacks['fgsm']:.2f} | {attacks['pgd']:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
