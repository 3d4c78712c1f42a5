"""How well embeddings tell identities apart: verification on pairs (ROC, AUC, EER, TAR at a FAR, the distance
threshold for a FAR) and retrieval (precision@1, recall@k, mAP@R as pytorch-metric-learning defines it).
Distances are cosine distances, 1 − cos, between L2-normalized embeddings: 0 the same direction, 2 opposite."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

FARS = (1e-3, 1e-2)  # the false accept rates TAR is reported at


def far_key(far: float) -> str:
    """`tar_far_1e-3`: a metric name every logger accepts (MLflow refuses @ and =)."""
    return f"tar_far_{far:.0e}".replace("e-0", "e-")


def sampled_pairs(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """(P, 3) rows (index a, index b, same): up to count/2 pairs of one identity and as many of two, drawn
    without repeats (seeded). Identities with one image give only different-identity pairs."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    half = max(count // 2, 1)
    same = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > 1:
            a, b = np.triu_indices(len(members), k=1)
            same.append(np.stack([members[a], members[b]], 1))
    positives = np.concatenate(same) if same else np.zeros((0, 2), np.int64)
    positives = positives[rng.permutation(len(positives))[:half]]
    wanted = len(positives) if len(positives) else half
    negatives: set[tuple[int, int]] = set()
    for _ in range(20):  # rejection sampling: pairs of different identities are the great majority
        a, b = rng.integers(0, len(labels), (2, 4 * wanted))
        for i, j in zip(a.tolist(), b.tolist()):
            if labels[i] != labels[j] and len(negatives) < wanted:
                negatives.add((min(i, j), max(i, j)))
        if len(negatives) >= wanted:
            break
    rows = [(a, b, 1) for a, b in positives.tolist()] + [(a, b, 0) for a, b in sorted(negatives)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def pair_distances(embeddings: Tensor, pairs: np.ndarray) -> np.ndarray:
    """Cosine distance of each pair's two embeddings."""
    a = embeddings[torch.as_tensor(pairs[:, 0])].float()
    b = embeddings[torch.as_tensor(pairs[:, 1])].float()
    return (1 - (a * b).sum(1)).clamp(min=0).cpu().numpy().astype(np.float64)


@dataclass
class Verification:
    """ROC of "same identity when distance ≤ threshold": false accept rate (FAR) and true accept rate (TAR) per
    threshold, the area under it, the equal error rate, TAR at fixed FARs and the threshold each FAR needs."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    auc: float
    eer: float
    eer_threshold: float

    def threshold_at(self, far: float) -> float:
        """The largest distance threshold whose FAR stays at or below `far` (the operating point a FAR asks for)."""
        allowed = np.flatnonzero(self.far <= far)
        return float(self.thresholds[allowed[-1]]) if len(allowed) else 0.0

    def tar_at(self, far: float) -> float:
        """TAR at the threshold `threshold_at(far)` gives."""
        allowed = np.flatnonzero(self.far <= far)
        return float(self.tar[allowed[-1]]) if len(allowed) else 0.0

    def metrics(self) -> dict[str, float]:
        """auc, eer and TAR at each of FARS."""
        return {"auc": self.auc, "eer": self.eer, **{far_key(f): self.tar_at(f) for f in FARS}}


def verify_pairs(distances: np.ndarray, same: np.ndarray) -> Verification:
    """The ROC of pair distances against same-identity flags (scikit-learn's roc_curve on −distance)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    same = np.asarray(same).astype(bool)
    if same.all() or not same.any():
        raise ValueError("verification needs pairs of the same identity and pairs of two identities")
    far, tar, scores = roc_curve(same, -distances, drop_intermediate=False)
    thresholds = np.minimum(-scores, 2.0)  # the first threshold is +inf in roc_curve: accept nothing
    frr = 1 - tar
    k = int(np.argmin(np.abs(frr - far)))
    return Verification(
        far=far,
        tar=tar,
        thresholds=thresholds,
        auc=float(roc_auc_score(same, -distances)),
        eer=float((far[k] + frr[k]) / 2),
        eer_threshold=float(thresholds[k]),
    )


def gallery_query_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery indices, query indices): per identity, half its images (at least one) enrolled in the gallery and
    the rest asked as queries (seeded); identities with one image are gallery distractors."""
    rng = np.random.default_rng(seed)
    gallery, query = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        enrolled = max(1, len(members) // 2)
        gallery += members[:enrolled].tolist()
        query += members[enrolled:].tolist()
    return np.sort(np.asarray(gallery, np.int64)), np.sort(np.asarray(query, np.int64))


def nearest(
    queries: Tensor, gallery: Tensor, k: int, exclude_self: bool = False, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """(similarities, indices) of each query's `k` nearest gallery embeddings by cosine similarity, best first;
    with `exclude_self`, query i is gallery item i and is left out of its own neighbours."""
    k = min(k, gallery.shape[0] - int(exclude_self))
    sims, found = [], []
    for start in range(0, queries.shape[0], chunk):
        block = queries[start : start + chunk].float() @ gallery.float().T
        if exclude_self:
            rows = torch.arange(block.shape[0])
            block[rows, rows + start] = -torch.inf
        top = block.topk(k, dim=1)
        sims.append(top.values)
        found.append(top.indices)
    return torch.cat(sims), torch.cat(found)


def retrieval(
    queries: Tensor,
    query_labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    same_set: bool = False,
) -> dict[str, float]:
    """precision_at_1, recall_at_k (a right identity among the k nearest) and map_at_r (Musgrave et al.'s mAP@R:
    R = the query's same-identity gallery count) over queries with at least one right answer in the gallery.
    `same_set`: queries are the gallery itself, each left out of its own search (leave-one-out)."""
    query_labels, gallery_labels = query_labels.long().cpu(), gallery_labels.long().cpu()
    counts = (query_labels[:, None] == gallery_labels[None, :]).sum(1) - int(same_set)
    keep = counts > 0
    if not keep.any():
        raise ValueError("no query has an image of its identity in the gallery")
    depth = int(max(counts.max().item(), max(ks)))
    _, found = nearest(queries.cpu(), gallery.cpu(), depth, exclude_self=same_set)
    hits = (gallery_labels[found] == query_labels[:, None])[keep].float()
    r = counts[keep].float()
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float32)
    within_r = ranks[None, :] <= r[:, None]
    precision_at_i = hits.cumsum(1) / ranks
    map_at_r = ((precision_at_i * hits * within_r).sum(1) / r).mean()
    out = {"precision_at_1": float(hits[:, 0].mean()), "map_at_r": float(map_at_r)}
    for k in ks:
        out[f"recall_at_{k}"] = float(hits[:, :k].amax(1).mean())
    return out
