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
from pathlib import Path

from common import cpu_model, run_child

IMGSZ, BATCH, WORKERS = 128, 16, 2


def _dataset(cache: Path) -> Path:
    from visionkit.data.shapes import shapes_detection_yaml

    return shapes_detection_yaml(cache)


def train_ours(epochs: int, out: Path, cache: Path) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from visionkit.config import config_dir, register_resolvers
    from visionkit.run import train

    register_resolvers()
    overrides = [
        "task=detection",
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


def train_ultralytics(epochs: int, out: Path, cache: Path) -> dict:
    from visionkit.models.yolo import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics import YOLO

    if os.environ.get("BENCH_THREADS"):  # equal threads: ultralytics sets min(8, cores - 1) torch threads on CPU
        import ultralytics.utils.torch_utils as torch_utils

        torch_utils.NUM_THREADS = int(os.environ["BENCH_THREADS"])
    model = YOLO("yolov8n.yaml")
    start = time.perf_counter()
    model.train(
        data=str(_dataset(cache)),
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
        seed=0,
        deterministic=False,
        verbose=False,
    )
    return {"fit_s": time.perf_counter() - start, "best": str(out / "weights" / "best.pt"), "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def score(ours_ckpt: str, their_pt: str, cache: Path, tmp: Path) -> dict:
    """test mAP of both models with our evaluator and with ultralytics' validator."""
    import lightning as L
    import torch

    from visionkit.data import VisionDataModule, YoloSource
    from visionkit.export import export_ultralytics
    from visionkit.models.yolo import prepare_ultralytics
    from visionkit.run import load_checkpoint
    from visionkit.tasks import DetectionTask

    torch.set_num_threads(os.cpu_count() or 1)
    yaml = _dataset(cache)
    ours, _ = load_checkpoint(ours_ckpt)
    theirs = DetectionTask("yolov8n.yaml", num_classes=4, class_names=ours.class_names, weights=their_pt)
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
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
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
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"ours": train_ours, "ultralytics": train_ultralytics}.get(kind)
        result = (
            fn(int(rest[0]), Path(rest[1]), Path(rest[2]))
            if fn
            else score(rest[0], rest[1], Path(rest[2]), Path(rest[3]))
        )
        print(json.dumps(result))
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
