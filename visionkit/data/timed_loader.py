"""A DataLoader that times each batch's arrival, for the speed report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader


class TimedLoader(DataLoader):
    """A DataLoader that notes how long the latest batch took to arrive (`last_wait`, seconds): the time the
    training loop really waited for data, which the speed report tells from the rest of the loop's work."""

    last_wait: float | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator around the loader's iterator
        iterator = super().__iter__()
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.last_wait = time.perf_counter() - start
            yield batch
