"""DetectionTask (ultralytics network and loss) on the shared data layer: it learns, and runs from the CLI config."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from tests.conftest import TrainedDetector, check_report_page
from visionkit.errors import VisionkitError
from visionkit.models.yolo import available_yolo_models, build_yolo
from visionkit.run import train
from visionkit.tasks import DetectionTask
from visionkit.tasks.schedules import WarmupLinearLR, step_ends


def test_ultralytics_model_yamls_are_offered() -> None:
    names = available_yolo_models()
    for scale in "nsmlx":
        assert f"yolov8{scale}.yaml" in names and f"yolo11{scale}.yaml" in names
    with pytest.raises(VisionkitError, match=r"unknown YOLO model 'yolov8q'; did you mean"):
        build_yolo("yolov8q", 3)


def test_short_training_lowers_the_loss_and_raises_map(trained_detector: TrainedDetector) -> None:
    rows = trained_detector.metrics
    losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    maps = [float(r["val_map50"]) for r in rows if r.get("val_map50")]
    assert losses[-1] < 0.6 * losses[0], losses
    assert maps[0] < 0.01 and maps[-1] > 0.05, maps  # from nothing to clearly above zero in 12 epochs
    assert trained_detector.accumulate_grad_batches == 4  # batch 16 accumulated to the nominal 64
    checkpoint = torch.load(trained_detector.ckpt, map_location="cpu", weights_only=True)
    assert "averaging_state" in checkpoint  # the EMA weights are what the checkpoint holds


def test_warmup_then_linear_decay() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    schedule = WarmupLinearLR(optimizer, total_steps=1000, epochs=10, warmup_epochs=3, min_warmup_batches=100)
    lrs = []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert schedule.warmup_steps == 300
    assert lrs[0] < 1e-4 and all(a < b for a, b in itertools.pairwise(lrs[:300]))  # rises through warm-up
    assert lrs[300] == pytest.approx(0.01 * (1 - 0.3 * 0.99), rel=1e-3)  # then on the linear decay line
    assert lrs[-1] == pytest.approx(0.01 * (0.01 + 0.99 / 1000), rel=1e-2)  # ends near lrf = 1 %


class GradientWitness(L.Callback):
    """Records, for every training batch, its own gradient (computed on a copy of the network at the same
    weights) and the gradient the optimizer then holds, and the batches after which the optimizer stepped."""

    def __init__(self) -> None:
        self.own: list[torch.Tensor] = []
        self.held: list[torch.Tensor] = []
        self.stepped: list[int] = []
        self._step = 0

    @staticmethod
    def _weight(module: torch.nn.Module) -> torch.nn.Parameter:
        return module.model.model[0].conv.weight  # the first convolution

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, idx: int) -> None:
        copy = DetectionTask("yolov8n.yaml", num_classes=4)
        copy.load_state_dict(pl_module.state_dict())
        copy.model.criterion = copy.model.init_criterion()
        copy.train()
        loss, _ = copy.model.loss(copy.loss_batch({**batch, "image": pl_module.in_layout(batch["image"])}))
        loss.sum().backward()
        self.own.append(self._weight(copy).grad.clone())
        self._step = trainer.global_step

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self.held.append(self._weight(pl_module).grad.clone())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step > self._step:
            self.stepped.append(trainer.current_epoch * int(trainer.num_training_batches) + args[-1])


def test_warmup_steps_gather_growing_batches_and_every_gradient(tmp_path: Path) -> None:
    """ultralytics' warm-up: the first steps take 1 batch each, then 2, 3, up to the nominal accumulation, and the
    optimizer always holds exactly the sum of its step's batches' own gradients (none lost, none carried over)."""
    from functools import partial

    from tests.conftest import fit_quietly
    from visionkit.data import VisionDataModule, YoloSource
    from visionkit.data.shapes import generate_shapes_detection

    yaml = generate_shapes_detection(tmp_path / "shapes", {"train": 24, "val": 4, "test": 2}, image_size=64)
    dm = VisionDataModule(
        YoloSource(str(yaml)), image_size=64, batch_size=2, augment="none", mean=(0,) * 3, std=(1,) * 3
    )
    task = DetectionTask(
        "yolov8n.yaml",
        num_classes=4,
        nominal_batch_size=8,  # 4 batches of 2 a step after the warm-up
        gradient_clip=None,  # clipping would change the held gradient
        ema_decay=None,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        scheduler=partial(WarmupLinearLR, epochs=2, warmup_epochs=1, ramp_accumulation=True),
    )
    witness = GradientWitness()
    trainer, _, _ = fit_quietly(task, dm, tmp_path / "run", epochs=2, limit_val_batches=0, callbacks=[witness])
    plan = step_ends(12, 2, 4, 12, ramp=True)
    assert plan == [0, 1, 3, 5, 8, 11, 15, 19, 23]  # steps of 1, 1, 2, 2, 3, 3 (epoch end) batches, then 4
    assert witness.stepped == plan and trainer.global_step == len(plan)
    assert trainer.accumulate_grad_batches == 4  # the nominal count is back after the fit
    first = 0
    for step, last in enumerate(plan):
        expected = torch.stack(witness.own[first : last + 1]).sum(0)
        torch.testing.assert_close(witness.held[step], expected, rtol=1e-3, atol=1e-6 * expected.abs().max())
        first = last + 1


def test_detection_task_runs_from_the_shipped_config(make_cfg, tmp_path: Path, builtin_data: Path) -> None:
    """Also: the configured sample plot (`callbacks.sample_predictions.*`) is the one used, not the task's own."""
    cfg = make_cfg(
        [
            "task=detection",
            "++trainer.fast_dev_run=true",
            "data.num_workers=0",
            f"paths.data_dir={builtin_data}",
            "callbacks.sample_predictions.num_samples=2",
        ]
    )
    assert cfg.task._target_ == "visionkit.tasks.DetectionTask" and cfg.model.arch == "yolov8n.yaml"
    metrics = train(cfg)
    assert {"test_map50", "test_map50_95"} <= set(metrics)
    assert (builtin_data / "shapes_det_v2" / "data.yaml").is_file()
    width, _ = Image.open(tmp_path / "run" / "plots" / "val_samples.png").size
    assert width < 700  # two samples side by side; the task's default (16, four a row) draws 1248 px wide
    check_report_page(tmp_path / "run", tmp_path / "report.png")  # 1280 px wide, no error, short numbers


def test_an_image_size_yolo_strides_cannot_divide_is_named(make_cfg) -> None:
    """data.image_size=100 stopped in the neck with 'Sizes of tensors must match ... Expected size 8 but got 7'."""
    with pytest.raises(
        VisionkitError, match=r"data.image_size=100: YOLO networks need sizes divisible by 32 \(e.g. 96\)"
    ):
        train(make_cfg(["task=detection", "data.image_size=100", "++trainer.fast_dev_run=true"]))
