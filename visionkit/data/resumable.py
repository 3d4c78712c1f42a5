"""The training sampler that makes a resumed run exact: its order depends only on (seed, epoch), it can start
part-way through an epoch, and it hands each sample its epoch so augmentation is seeded per sample."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from visionkit.utils.logging import get_logger

log = get_logger(__name__)

SampleKey = tuple[int, int]  # (index, epoch): what the training sampler yields to a dataset


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch: the same whatever worker, process or resume draws it."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1)[0] % 2**31)


def split_keys(keys: Sequence[int | SampleKey]) -> tuple[list[int], int | None]:
    """Plain indices and the epoch of keys from `ResumableSampler` (None for plain indices, e.g. evaluation)."""
    if keys and isinstance(keys[0], tuple):
        pairs = cast(Sequence[SampleKey], keys)
        return [int(index) for index, _ in pairs], int(pairs[0][1])
    return [int(cast(int, k)) for k in keys], None


def global_seed() -> int:
    """The run's seed as Lightning's `seed_everything` recorded it (0 when unseeded, like Lightning's samplers)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class ResumableSampler(DistributedSampler):
    """Shuffled training order from (seed, epoch) alone, sharded per DDP rank, yielding `(index, epoch)`.

    A `DistributedSampler` subclass, so Lightning keeps it under DDP instead of wrapping it. `resume(epoch,
    batches_done, batch_size)` makes the next pass start at that epoch, after the batches already trained on:
    nothing is repeated or skipped. `len()` stays the whole epoch, the count Lightning's progress continues.
    """

    def __init__(self, dataset: Dataset, seed: int | None = None) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=global_seed() if seed is None else seed,
        )
        self._skip = 0
        self.resume_pending = False  # a resume point no pass has started from yet

    def resume(self, epoch: int, batches_done: int, batch_size: int) -> None:
        """Start the next pass at `epoch`, leaving out the first `batches_done` batches of this rank's share."""
        self.set_epoch(epoch)
        self._skip = batches_done * batch_size
        self.resume_pending = True

    def order(self) -> list[int]:
        """This rank's indices for the current epoch, in order (DistributedSampler's shuffle)."""
        return list(super().__iter__())

    def __iter__(self) -> Iterator[SampleKey]:
        self.resume_pending = False
        indices: list[Any] = self.order()[self._skip :]
        self._skip = 0
        epoch = self.epoch
        return iter([(int(i), epoch) for i in indices])


def lone_last_image(sampler: ResumableSampler, batch_size: int) -> bool:
    """Whether an epoch of `sampler` ends in a batch of one image, which the training loader then leaves out:
    BatchNorm cannot train on one (a 36-image split in batches of 35 stopped an embedding run at its last batch)."""
    lone = len(sampler) % batch_size == 1
    if lone:
        log.info(f"train: {len(sampler)} images in batches of {batch_size}: each epoch's last, lone image is left out")
    return lone


def grouped_order(labels: np.ndarray, per_group: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch's groups of `per_group` indices that share a label, in a seeded random order: each label's
    samples shuffled and cut into groups (a label with fewer samples repeats some), the groups shuffled."""
    rng = np.random.default_rng([seed % 2**32, epoch])
    groups = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = max(len(members) // per_group, 1)
        members = np.resize(members, count * per_group)
        groups += [members[k * per_group : (k + 1) * per_group] for k in range(count)]
    return [groups[i] for i in rng.permutation(len(groups))]


def distinct_batches(groups: list[np.ndarray], labels: np.ndarray, per_batch: int) -> list[np.ndarray]:
    """The groups reordered so each run of `per_batch` groups holds as many different labels as it can (k
    identities per batch, not one identity twice): a group whose label the batch has already waits for the next
    batch, in its order; a batch fills up with waiting groups only when no other label is left."""
    queue, out = deque(groups), []
    while queue:
        batch: list[Any] = []
        seen: set[int] = set()
        waiting: list[Any] = []
        while queue and len(batch) < per_batch:
            group = queue.popleft()
            label = int(labels[group[0]])
            if label in seen:
                waiting.append(group)
            else:
                batch.append(group)
                seen.add(label)
        room = per_batch - len(batch)
        batch += waiting[:room]
        queue.extendleft(reversed(waiting[room:]))  # the waiting groups go first into the next batch
        out += batch
    return out


class GroupedSampler(ResumableSampler):
    """`ResumableSampler` whose order comes in groups of `per_group` samples of one label (an embedding loss's
    batches of m images of each of k identities, with batch size k·m): every sample once per epoch, and with
    `per_batch` (k) each batch's groups of different labels where the labels allow it (PK sampling). Ranks take
    whole groups; the epoch's group count is padded to a multiple of the ranks by repeating its first groups."""

    def __init__(
        self, dataset: Dataset, labels: np.ndarray, per_group: int, per_batch: int = 1, seed: int | None = None
    ) -> None:
        super().__init__(dataset, seed)
        self.labels = np.asarray(labels)
        self.per_group = int(per_group)
        self.per_batch = max(int(per_batch), 1)
        groups = len(grouped_order(self.labels, self.per_group, 0, 0))
        self.groups_per_rank = -(-groups // self.num_replicas)
        self.num_samples = self.groups_per_rank * self.per_group
        self.total_size = self.num_samples * self.num_replicas

    def order(self) -> list[int]:
        groups = grouped_order(self.labels, self.per_group, self.seed, self.epoch)
        groups = (groups * 2)[: self.groups_per_rank * self.num_replicas]
        mine = distinct_batches(groups[self.rank :: self.num_replicas], self.labels, self.per_batch)
        return [int(i) for group in mine for i in group]


READ_BLOCK = 256  # samples LitData decodes together from a local chunk (its decode window)


def chunk_order(counts: Sequence[int], seed: int, epoch: int, block: int = READ_BLOCK) -> np.ndarray:
    """Every index of chunks holding `counts` samples once, in a seeded order that reads neighbours together: the
    chunks shuffled, each chunk's blocks of `block` neighbours shuffled, the samples of each block shuffled
    (LitData's own shuffle works this way; packs are stored shuffled, so a block mixes the classes). A chunk is
    then fetched once per epoch and each block decoded once per loader worker, not once per sample."""
    rng = np.random.default_rng([seed % 2**32, epoch])
    starts = np.cumsum([0, *counts])
    order = []
    for chunk in rng.permutation(len(counts)):
        blocks = list(range(int(starts[chunk]), int(starts[chunk + 1]), block))
        for first in rng.permutation(blocks) if blocks else []:
            order.append(rng.permutation(np.arange(first, min(first + block, int(starts[chunk + 1])))))
    return np.concatenate(order) if order else np.zeros(0, np.int64)


class ChunkedSampler(ResumableSampler):
    """`ResumableSampler` for a packed dataset: the order of `chunk_order`, each rank a contiguous share of it
    (so ranks read different chunks), padded as `DistributedSampler` pads, by repeating the epoch's start."""

    def __init__(self, dataset: Dataset, counts: Sequence[int], seed: int | None = None) -> None:
        super().__init__(dataset, seed)
        self.counts = [int(c) for c in counts]

    def order(self) -> list[int]:
        padded = np.resize(chunk_order(self.counts, self.seed, self.epoch), self.total_size)
        return [int(i) for i in padded[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]]
