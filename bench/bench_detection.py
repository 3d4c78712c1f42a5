"""Detection benchmark: visionkit's DetectionTask vs ultralytics' own trainer, side by side in one run.

Same shapes dataset (the built-in one), same model yaml, image size, batch, epochs, optimizer (AdamW
with the lr their automatic choice gives, as our `adamw_yolo` config) and comparable augmentation (mosaic, HSV,
translate/scale, flips; mosaic closed for the last 10 epochs). Each side trains in its own process. Both
best checkpoints are then scored by the same evaluator (ours, torchmetrics on the test split) and by
ultralytics' validator. Inference speed is in bench/bench_predict.py.

Run:  .venv/bin/python bench/bench_detection.py [--epochs 30] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import cpu_model, rgb_array, run_child, seed_table

IMGSZ, BATCH, WORKERS = 128, 16, 2


def _dataset(cache: Path) -> Path:
    from visionkit.data.shapes import shapes_detection_yaml

    return shapes_detection_yaml(cache)


def train_ours(epochs: int, out: Path, cache: Path, yaml: Path | None = None, seed: int | None = None) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from visionkit.config.folders import config_dir, register_resolvers
    from visionkit.run import train

    register_resolvers()
    overrides = [
        "task=detection",
        *(["data=yolo", f"data.yaml={yaml}"] if yaml else []),
        *([f"seed={seed}"] if seed is not None else []),
        f"trainer.max_epochs={epochs}",
        f"data.batch_size={BATCH}",
        f"data.num_workers={WORKERS}",
        f"data.image_size={IMGSZ}",
        f"paths.data_dir={cache}",
        "test_after_fit=false",
        "trainer.enable_progress_bar=false",
        "~callbacks.early_stopping",
        "logger=csv",
    ]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    start = time.perf_counter()
    train(cfg)
    return {"fit_s": time.perf_counter() - start, "best": str(out / "checkpoints" / "best.ckpt"), "threads": _threads()}


def train_ultralytics(epochs: int, out: Path, cache: Path, yaml: Path | None = None, seed: int = 0) -> dict:
    from visionkit.models.yolo import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"mlflow": False})  # its MLflow logger would write mlflow.db into the working directory
    if os.environ.get("BENCH_THREADS"):  # equal threads: ultralytics sets min(8, cores - 1) torch threads on CPU
        import ultralytics.utils.torch_utils as torch_utils

        torch_utils.NUM_THREADS = int(os.environ["BENCH_THREADS"])
    model = YOLO("yolov8n.yaml")
    start = time.perf_counter()
    model.train(
        data=str(yaml or _dataset(cache)),
        epochs=epochs,
        imgsz=IMGSZ,
        batch=BATCH,
        workers=WORKERS,
        device="cpu",
        optimizer="AdamW",  # what their "auto" picks for short runs: lr 0.002 * 5 / (4 + nc), betas (0.9, 0.999)
        lr0=0.00125,
        momentum=0.9,  # named explicitly, their default bias warm-up (0.1) stays on, as in our recipe
        close_mosaic=10,
        amp=False,
        plots=False,
        project=str(out.parent),
        name=out.name,
        exist_ok=True,
        seed=seed,
        deterministic=False,
        verbose=False,
    )
    return {"fit_s": time.perf_counter() - start, "best": str(out / "weights" / "best.pt"), "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def score(ours_ckpt: str, their_pt: str, cache: Path, tmp: Path, yaml: Path | None = None) -> dict:
    """test mAP of both models with our evaluator and with ultralytics' validator."""
    import lightning as L
    import torch

    from visionkit.checkpoints import load_checkpoint
    from visionkit.data import VisionDataModule, YoloSource
    from visionkit.export import export_ultralytics
    from visionkit.models.yolo import prepare_ultralytics
    from visionkit.tasks import DetectionTask

    torch.set_num_threads(os.cpu_count() or 1)
    yaml = yaml or _dataset(cache)
    ours, _ = load_checkpoint(ours_ckpt)
    names = ours.class_names
    theirs = DetectionTask("yolov8n.yaml", num_classes=len(names), class_names=names, weights=their_pt)
    dm = VisionDataModule(
        YoloSource(str(yaml)),
        image_size=IMGSZ,
        batch_size=BATCH,
        augment="none",
        resize="letterbox",
        mean=(0,) * 3,
        std=(1,) * 3,
    )
    result: dict = {}
    for name, task in (("ours", ours), ("ultralytics", theirs)):
        trainer = L.Trainer(
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp / f"test_{name}",  # the test report's tables and plots
        )
        metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
        result[f"{name}_map50_95"] = metrics["test_map50_95"]
        result[f"{name}_map50"] = metrics["test_map50"]
    prepare_ultralytics()
    from ultralytics import YOLO

    our_pt = export_ultralytics(ours, tmp / "ours.pt", IMGSZ)
    for name, pt in (("ours", our_pt), ("ultralytics", their_pt)):
        val = YOLO(str(pt)).val(data=str(yaml), imgsz=IMGSZ, batch=BATCH, split="test", plots=False, verbose=False)
        result[f"{name}_uval_map50_95"] = float(val.box.map)
    return result


def texture_boxes(root: Path, seed: int = 0) -> Path:
    """A 3-class detection set of real pictures in ultralytics' format (root/data.yaml, images/ and labels/ per
    split): 1-3 rectangles and ellipses of scikit-image's brick, grass and gravel photographs, randomly scaled and
    shaded, over crops of real photos, 128 px, 240 / 60 / 60 images; validation and test from held-out photos and
    texture regions (the pictures of bench_segmentation's texture set)."""
    import numpy as np
    import skimage.data as sk
    from bench_segmentation import PHOTOS, SPLIT_SIZES, TEXTURES, random_crop
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    textures = [rgb_array(getattr(sk, name)()) for name in TEXTURES]
    photos = [rgb_array(getattr(sk, name)()) for name in PHOTOS]

    for split, count in SPLIT_SIZES.items():
        held_out = split != "train"
        for folder in ("images", "labels"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            photo = photos[int(rng.integers(5, len(photos))) if held_out else int(rng.integers(0, 5))]
            image = random_crop(rng, photo, slice(None), IMGSZ)
            lines = []
            for _ in range(int(rng.integers(1, 4))):
                label = int(rng.integers(len(TEXTURES)))
                texture = textures[label]
                cut = int(texture.shape[0] * 0.6)
                rows = slice(cut, None) if held_out else slice(0, cut)
                w, h = (int(v) for v in rng.integers(20, 64, 2))
                x0, y0 = int(rng.integers(0, IMGSZ - w)), int(rng.integers(0, IMGSZ - h))
                shape = Image.new("L", (IMGSZ, IMGSZ), 0)
                box = [x0, y0, x0 + w - 1, y0 + h - 1]
                (ImageDraw.Draw(shape).ellipse if rng.random() < 0.5 else ImageDraw.Draw(shape).rectangle)(box, fill=1)
                inside = np.asarray(shape, dtype=bool)
                patch = random_crop(rng, texture, rows, IMGSZ) * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30)
                image[inside] = patch[inside]
                lines.append(
                    f"{label} {(x0 + w / 2) / IMGSZ:.6f} {(y0 + h / 2) / IMGSZ:.6f} {w / IMGSZ:.6f} {h / IMGSZ:.6f}"
                )
            name = f"{index:04d}"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                root / "images" / split / f"{name}.jpg", quality=92
            )
            (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(TEXTURES))
    (root / "data.yaml").write_text(f"train: images/train\nval: images/val\ntest: images/test\nnames:\n{names}\n")
    return root / "data.yaml"


def real_comparison(seeds: int, epochs: int) -> None:
    """visionkit's default detection recipe against ultralytics' own trainer with its defaults, on the texture
    boxes, seed by seed, both scored on the test split by our evaluator (COCO mAP50-95)."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        yaml = texture_boxes(tmp / "boxes")
        print(f"texture boxes: 240/60/60 images of {IMGSZ} px, {epochs} epochs, batch {BATCH}", flush=True)
        scored: dict[int, dict] = {}

        def scores(seed: int) -> dict:
            if seed not in scored:
                ours = _child(["ours", str(epochs), str(tmp / f"ours{seed}"), str(tmp / "cache"), str(yaml), str(seed)])
                theirs = _child(
                    ["ultralytics", str(epochs), str(tmp / f"ultra{seed}"), str(tmp / "cache"), str(yaml), str(seed)]
                )
                scored[seed] = _child(["score", ours["best"], theirs["best"], str(tmp / "cache"), str(tmp), str(yaml)])
            return scored[seed]

        def side(name: str) -> Callable[[int], dict]:
            return lambda seed: {
                "test_map50_95": scores(seed)[f"{name}_map50_95"],
                "test_map50": scores(seed)[f"{name}_map50"],
            }

        names = ("ultralytics' trainer", "visionkit-train default")
        seed_table(seeds, "map50_95", side("ultralytics"), side("ours"), names, second=("test_map50", "test mAP50"))


def _child(args: list[str], threads: int | None = None) -> dict:
    if threads is None:
        os.environ.pop("BENCH_THREADS", None)
    else:
        os.environ["BENCH_THREADS"] = str(threads)
    return run_child(__file__, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 epochs, to check the script")
    parser.add_argument("--real", action="store_true", help="only the default recipe vs ultralytics on real pictures")
    parser.add_argument("--seeds", type=int, default=6, help="seeds of --real (one seed moves mAP50-95 by up to ±0.05)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        extra = [Path(rest[3])] if len(rest) > 3 else []  # a data.yaml (--real), then a seed
        if kind in ("ours", "ultralytics"):
            fn = train_ours if kind == "ours" else train_ultralytics
            result = fn(int(rest[0]), Path(rest[1]), Path(rest[2]), *extra, *[int(v) for v in rest[4:5]])
        else:
            result = score(rest[0], rest[1], Path(rest[2]), Path(rest[3]), *[Path(v) for v in rest[4:5]])
        print(json.dumps(result))
        return
    if args.real:
        print(f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs")
        real_comparison(args.seeds, args.epochs)
        return
    epochs = 3 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache"
        _child(["ours", "1", str(tmp / "warm"), str(cache)])  # generates the dataset, warms caches
        ours = _child(["ours", str(epochs), str(tmp / "ours"), str(cache)])
        theirs = _child(["ultralytics", str(epochs), str(tmp / "ultra"), str(cache)])
        equal = _child(["ultralytics", str(epochs), str(tmp / "ultra_equal"), str(cache)], threads=ours["threads"])
        scores = _child(["score", ours["best"], theirs["best"], str(cache), str(tmp)])
    images = 600 * epochs
    rows = [
        ("epochs (600 train images, 100 val each epoch, 128 px, batch 16, yolov8n.yaml)", epochs, ""),
        (
            "ultralytics trainer: fit wall s (train + val every epoch)",
            theirs["fit_s"],
            f"torch threads {theirs['threads']}",
        ),
        ("visionkit DetectionTask: fit wall s", ours["fit_s"], f"torch threads {ours['threads']}"),
        ("ultralytics trainer: train images/s", images / theirs["fit_s"], ""),
        (
            "ultralytics trainer with our torch threads: fit wall s",
            equal["fit_s"],
            f"torch threads {equal['threads']}; **ratio {equal['fit_s'] / ours['fit_s']:.2f}** at equal threads",
        ),
        (
            "visionkit: train images/s",
            images / ours["fit_s"],
            f"**ratio {theirs['fit_s'] / ours['fit_s']:.2f}** (target ≥ 1.1)",
        ),
        (
            "test mAP50-95, our evaluator: ultralytics-trained",
            scores["ultralytics_map50_95"],
            f"mAP50 {scores['ultralytics_map50']:.3f}",
        ),
        (
            "test mAP50-95, our evaluator: visionkit-trained",
            scores["ours_map50_95"],
            f"mAP50 {scores['ours_map50']:.3f}; "
            f"**diff {scores['ours_map50_95'] - scores['ultralytics_map50_95']:+.3f}** (target ≥ -0.02)",
        ),
        ("test mAP50-95, ultralytics' validator: ultralytics-trained", scores["ultralytics_uval_map50_95"], ""),
        ("test mAP50-95, ultralytics' validator: visionkit-trained (exported .pt)", scores["ours_uval_map50_95"], ""),
    ]
    print(f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("| measurement | value | note |\n|---|---:|---|")
    for name, value, note in rows:
        print(f"| {name} | {value:,.3f} | {note} |" if isinstance(value, float) else f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
