"""Identity features: a backbone and a BN-neck map an image to an L2-normalized embedding, trained with a
pytorch-metric-learning loss, evaluated on identities it never saw (verification on pairs, retrieval)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from visionkit.errors import VisionkitError
from visionkit.models.classifier import build_embedder
from visionkit.tasks.base import OptimizerFactory, SchedulerFactory, VisionTask, labelled_batch
from visionkit.tasks.embedding_losses import LOSSES, MetricLoss
from visionkit.tasks.embedding_metrics import (
    Verification,
    gallery_query_split,
    pair_distances,
    retrieval,
    sampled_pairs,
    verify_pairs,
)
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class EmbeddingEvaluation:
    """A split's embeddings (in sample order) and what was measured on them, kept for the test report."""

    embeddings: Tensor
    labels: Tensor
    pairs: np.ndarray  # (P, 3) index a, index b, same
    distances: np.ndarray  # per pair
    verification: Verification
    gallery: np.ndarray  # sample indices enrolled in the gallery (test) or every sample (validation)
    query: np.ndarray
    threshold: float  # the distance threshold the checkpoint stores (set on validation)
    metrics: dict[str, float]


class EmbeddingTask(VisionTask):
    """Map images to `embedding_dim`-d L2-normalized embeddings where one identity's images land close together.

    Args:
        backbone: any classification backbone ("lenet5", "resnet18", "timm:<name>"), its head replaced by a
            BN-neck (linear + batch norm) to `embedding_dim`.
        num_classes: the number of training identities (a margin loss keeps one weight vector per identity, in
            the loss, not in the network: exports leave them out).
        weights: pretrained backbone weights, as for ClassificationTask. Not saved in hyper-parameters.
        class_names: the training identities, in id order.
        embedding_dim: the embedding size (128 or 512 are usual).
        loss: {"name": one of LOSSES, plus the pytorch-metric-learning class's options, and "miner": its miner's
            options}: arcface (default), cosface, subcenter_arcface, triplet (batch-hard miner), contrastive, ms.
        far: the false accept rate whose distance threshold is measured on validation identities and stored
            (`threshold`, used by the predictor, gallery search and verify).
        pairs: verification pairs drawn per evaluation (half same-identity, half not; seeded by `pair_seed`)
            when the data names none (an LFW `pairs.txt`).
        monitor: the metric plateau schedulers watch (config: `monitor.metric`).

    Batches: `{"image": (B, 3, H, W) float32, "label": (B,) int64 identity ids, "index": (B,) sample indices}`
    (`index` is needed for validation and test), or the `(image, label)` pair of torchvision datasets for
    training. Pair losses need several images per identity in a batch (`data.per_identity`).
    """

    task_name: ClassVar[str] = "embedding"  # what predictors, exports and messages call this task

    quality_metric = "val_map_at_r"
    hparams_ignore = ("weights",)
    threshold: Tensor  # a buffer registered in __init__, named here for the type checker

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 10,
        weights: str | None = None,
        class_names: Sequence[str] | None = None,
        embedding_dim: int = 128,
        loss: Mapping[str, Any] | None = None,
        far: float = 1e-3,
        pairs: int = 6000,
        pair_seed: int = 0,
        monitor: str = "val_map_at_r",
        compile: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        loss = dict(loss or {"name": "arcface"})
        if loss.get("name") not in LOSSES:
            raise VisionkitError(f"loss={loss.get('name')!r} is not one of {', '.join(LOSSES)}")
        if not 0 < far < 1:
            raise VisionkitError(f"task.far={far}: a false accept rate between 0 and 1 (1e-3 is usual)")
        self.class_names = self.resolve_class_names(class_names, num_classes)
        self.pretrained = weights
        super().__init__(monitor, optimizer, scheduler, compile)
        self.register_buffer("threshold", torch.tensor(math.nan))  # saved with the weights
        self.evaluation: dict[str, EmbeddingEvaluation] = {}
        self._collected: list[tuple[Tensor, Tensor, Tensor]] = []

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = build_embedder(hp.backbone, hp.embedding_dim, weights=self.pretrained)

    def configure_losses(self) -> None:
        hp = self.hparams
        options = {k: v for k, v in dict(hp.loss).items() if k != "name"}
        self.loss_fn = MetricLoss(hp.loss["name"], hp.num_classes, hp.embedding_dim, options)

    def default_callbacks(self) -> list[Callback]:
        """The test report: ROC, distance histograms, the embedding map and the retrieval grid."""
        from visionkit.callbacks.embedding_report import EmbeddingReport

        return [EmbeddingReport()]

    def forward(self, images: Tensor) -> Tensor:
        """(B, embedding_dim) L2-normalized embeddings of normalized images."""
        return self.model(images)

    def batch_from_pair(self, images: Tensor, target: Any) -> dict[str, Any]:
        """`(images, identity ids)`: ids as a (B,) tensor or a list of ints."""
        return labelled_batch(images, target, "identity ids")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        labels = batch["label"]
        if self.loss_fn.kind.needs_pairs and batch_idx == 0 and labels.unique().numel() == labels.numel():
            log.warning(
                f"loss={self.hparams.loss['name']} learns from pairs of one identity, and this batch has none: "
                "set data.per_identity (e.g. 4) so each batch holds several images of each identity"
            )
        loss = self.loss_fn(self(batch["image"]).float(), labels)
        self.train_stats.update(self, loss, labels.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.train_stats.log_epoch(self)

    def _collect(self, batch: dict[str, Tensor]) -> None:
        if "index" not in batch:
            raise VisionkitError("evaluation batches need an 'index' key (sample indices): use a VisionDataModule")
        self._collected.append((self(batch["image"]).detach().float(), batch["label"], batch["index"]))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def _gathered(self) -> tuple[Tensor, Tensor]:
        """Every rank's embeddings and labels in sample order (a DDP sampler's padding repeats dropped)."""
        parts, self._collected = self._collected, []
        embeddings, labels, index = self.gathered_rows(*(torch.cat([p[k] for p in parts]) for k in range(3)))
        order = torch.argsort(index, stable=True)
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = index[order][1:] != index[order][:-1]
        keep = order[first]
        return embeddings[keep].cpu(), labels[keep].cpu()

    def _pairs(self, stage: str, labels: Tensor) -> np.ndarray:
        listed = getattr(getattr(self.trainer, "datamodule", None), "pairs", None)  # an LFW-style pairs.txt's
        named = listed(stage) if callable(listed) else None
        if named is not None and len(named):
            return named
        return sampled_pairs(labels.numpy(), self.hparams.pairs, self.hparams.pair_seed)

    def evaluate(self, embeddings: Tensor, labels: Tensor, pairs: np.ndarray, stage: str) -> EmbeddingEvaluation:
        """Verification on `pairs` and retrieval (validation: each image searched among the others; test: a
        gallery/query split per identity) of one split's embeddings."""
        distances = pair_distances(embeddings, pairs)
        verification = verify_pairs(distances, pairs[:, 2])
        metrics = verification.metrics()
        if stage == "test":
            gallery, query = gallery_query_split(labels.numpy(), self.hparams.pair_seed)
            metrics |= retrieval(embeddings[query], labels[query], embeddings[gallery], labels[gallery])
            if not math.isnan(float(self.threshold)):
                accepted = distances <= float(self.threshold)
                same = pairs[:, 2].astype(bool)
                metrics["tar_at_threshold"] = float(accepted[same].mean())
                metrics["far_at_threshold"] = float(accepted[~same].mean())
        else:
            gallery = query = np.arange(len(labels))
            metrics |= retrieval(embeddings, labels, embeddings, labels, same_set=True)
        return EmbeddingEvaluation(
            embeddings, labels, pairs, distances, verification, gallery, query, float(self.threshold), metrics
        )

    def _evaluate_epoch(self, stage: str) -> None:
        if not self._collected:
            return
        embeddings, labels = self._gathered()
        try:
            result = self.evaluate(embeddings, labels, self._pairs(stage, labels), stage)
        except ValueError as exc:
            if not self.trainer.sanity_checking:
                log.warning(f"{stage}: no verification or retrieval metrics ({exc})")
            return
        if stage == "val":
            self.threshold.fill_(result.verification.threshold_at(self.hparams.far))
            result.threshold = float(self.threshold)
        self.evaluation[stage] = result
        values = {f"{stage}_{k}": v for k, v in result.metrics.items()}
        shown = {k: values.pop(k) for k in (f"{stage}_map_at_r", f"{stage}_eer")}
        self.log_dict(values, sync_dist=True)  # equal on every rank (gathered first)
        self.log_dict(shown, prog_bar=stage == "val", sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._evaluate_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._evaluate_epoch("test")

    def export_module(self) -> tuple[torch.nn.Module, list[str], bool]:
        """The embedding network alone (a margin loss's class weights stay behind): `embedding` (B, dim)."""
        return copy.deepcopy(self.model).float().eval(), ["embedding"], False
