"""What an embedding test leaves to look at: the ROC of verification pairs, the distances of same and different
pairs with the stored threshold, a t-SNE map of the test embeddings coloured by identity, and queries with their
nearest gallery images (right identity framed green, wrong red). Files under `<run>/plots` and `<run>/tables`."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from visionkit.callbacks.figures import publish
from visionkit.tasks.embedding_metrics import FARS, nearest
from visionkit.utils.io import atomic_write

if TYPE_CHECKING:
    from visionkit.tasks.embedding import EmbeddingEvaluation

MAP_POINTS = 1500  # t-SNE of at most this many embeddings (seconds on 2 cores)
GRID_QUERIES, GRID_NEIGHBOURS = 8, 5


def roc_figure(evaluation: EmbeddingEvaluation) -> Figure:
    """TAR against FAR (log scale), with the EER and the TAR at each reported FAR marked."""
    v = evaluation.verification
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    floor = 1.0 / max(int((evaluation.pairs[:, 2] == 0).sum()), 1)
    ax.plot(np.maximum(v.far, floor), v.tar, lw=1.5, label=f"AUC {v.auc:.4f}, EER {v.eer:.4f}")
    for far in FARS:
        ax.plot([far], [v.tar_at(far)], "o", label=f"TAR {v.tar_at(far):.3f} at FAR {far:g}")
    ax.set(xscale="log", xlabel="false accept rate (different identities accepted)", ylabel="true accept rate")
    ax.set(title=f"verification: {len(evaluation.pairs):,} pairs of unseen identities", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def distances_figure(evaluation: EmbeddingEvaluation) -> Figure:
    """Histograms of the cosine distances of same-identity and different-identity pairs, and the threshold."""
    same = evaluation.pairs[:, 2].astype(bool)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    bins = np.linspace(0, max(float(evaluation.distances.max()), 1e-6), 50).tolist()
    ax.hist(evaluation.distances[same], bins, alpha=0.6, color="tab:green", label="same identity")
    ax.hist(evaluation.distances[~same], bins, alpha=0.6, color="tab:red", label="different identities")
    if np.isfinite(evaluation.threshold):
        ax.axvline(evaluation.threshold, color="black", ls="--", label=f"threshold {evaluation.threshold:.3f}")
    ax.set(xlabel="cosine distance (1 − cos)", ylabel="pairs", title="pair distances on unseen identities")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def map_figure(embeddings: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> Figure:
    """A 2-D t-SNE map of (a seeded sample of) the embeddings, one colour per identity (colours repeat past 20)."""
    from sklearn.manifold import TSNE

    chosen = np.random.default_rng(seed).permutation(len(labels))[:MAP_POINTS]
    points = embeddings[chosen].numpy()
    perplexity = float(min(30, max(2, (len(chosen) - 1) // 3)))
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(points)
    ids = labels[chosen].numpy()
    _, colour = np.unique(ids, return_inverse=True)
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    ax.scatter(xy[:, 0], xy[:, 1], c=colour % 20, cmap="tab20", s=8)
    ax.set(xticks=[], yticks=[], title=f"t-SNE of {len(chosen):,} test embeddings ({len(np.unique(ids))} identities)")
    fig.tight_layout()
    return fig


def framed(image: np.ndarray, colour: tuple[int, int, int] | None, width: int = 2) -> np.ndarray:
    """The image with a coloured border (None: unchanged)."""
    if colour is None:
        return image
    out = image.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = colour, colour, colour, colour
    return out


def retrieval_figure(evaluation: EmbeddingEvaluation, picture: Callable[[int], np.ndarray], seed: int = 0) -> Figure:
    """Rows of a query and its nearest gallery images with their distances, right identities framed green."""
    rng = np.random.default_rng(seed)
    queries = rng.permutation(evaluation.query)[:GRID_QUERIES]
    gallery = torch.as_tensor(evaluation.gallery)
    sims, found = nearest(evaluation.embeddings[queries], evaluation.embeddings[gallery], GRID_NEIGHBOURS)
    cols = 1 + found.shape[1]
    fig = Figure(figsize=(1.3 * cols, 1.45 * len(queries) + 0.5))
    axes = np.atleast_2d(fig.subplots(len(queries), cols))
    for row, query in enumerate(queries):
        axes[row, 0].imshow(picture(int(query)))
        axes[row, 0].set_title("query", fontsize=8)
        for col, (sim, hit) in enumerate(zip(sims[row].tolist(), found[row].tolist()), start=1):
            index = int(gallery[hit])
            right = bool(evaluation.labels[index] == evaluation.labels[query])
            colour = (0, 170, 0) if right else (220, 0, 0)
            axes[row, col].imshow(framed(picture(index), colour, max(1, picture(index).shape[0] // 16)))
            axes[row, col].set_title(f"{1 - sim:.3f}", fontsize=8, color="green" if right else "red")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("queries and their nearest gallery images (cosine distance; green: same identity)", fontsize=9)
    fig.tight_layout()
    return fig


def write_roc_table(evaluation: EmbeddingEvaluation, path: Path) -> Path:
    """`roc_curve.csv`: threshold, FAR, TAR per point of the verification ROC."""
    v = evaluation.verification
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["threshold", "far", "tar"])
        writer.writerows([f"{t:.6f}", f"{f:.6g}", f"{r:.6f}"] for t, f, r in zip(v.thresholds, v.far, v.tar))
    return path


class EmbeddingReport(L.Callback):
    """After the test (rank 0): roc.png, distances.png, embedding_map.png and retrieval.png under `<run>/plots`
    (also sent to the loggers), and the ROC as `<run>/tables/roc_curve.csv`."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluation = getattr(pl_module, "evaluation", {}).get("test")
        if evaluation is None or not trainer.is_global_zero:
            return
        root = Path(self.dirpath or trainer.default_root_dir)
        write_roc_table(evaluation, root / "tables" / "roc_curve.csv")
        figures = {
            "roc": roc_figure(evaluation),
            "distances": distances_figure(evaluation),
            "embedding_map": map_figure(evaluation.embeddings, evaluation.labels),
        }
        dataset = getattr(getattr(trainer, "datamodule", None), "datasets", {}).get("test")
        if dataset is not None and len(evaluation.query):
            figures["retrieval"] = retrieval_figure(evaluation, dataset.read)
        for name, fig in figures.items():
            publish(trainer, f"test/{name}", fig, root / "plots" / f"{name}.png")
