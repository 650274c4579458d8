"""Compare chunks of candidate pairs in worker processes, one per core, on the polars path.

The workers are forked after the field data is in place and receive it as their initializer's
argument, so they share it without copying; each compares with one rapidfuzz thread, since the
processes already split the pairs between the cores. Chunks come back in order, and at most two
per worker are in flight, so memory still follows the chunk size.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import polars as pl

from linkcare.config import Comparison
from linkcare.linkage.compare import FieldData, compare_pairs, compare_pairs_recordlinkage
from linkcare.linkage.model import PatternCodec

#: At most this many worker processes compare pairs, never more than the cores.
COMPARE_WORKERS = 4
#: What a worker process compares with, set once by its initializer (each worker has its own).
_worker_fields: list[FieldData] = []


def _start_worker(fields: list[FieldData]) -> None:
    global _worker_fields
    _worker_fields = fields


def _compare_in_worker(args: tuple[np.ndarray, np.ndarray, PatternCodec]) -> np.ndarray:
    left, right, codec = args
    return codec.encode(compare_pairs(_worker_fields, left, right, threads=1))


class ComparePool:
    """Compares the pairs of candidate chunks, in worker processes where that pays (the polars path,
    more than one core, Linux), else in this process.

    A task is (pass, left, right, sampled, needed, todo): the pairs `left[todo]`, `right[todo]` are
    compared; `map` yields each task with the packed patterns of those pairs, in task order.
    """

    def __init__(self, fields: list[FieldData], indexer: str, nodes: pl.DataFrame, comparisons: list[Comparison],
                 workers: int | None = None) -> None:
        self.fields, self.indexer, self.nodes, self.comparisons = fields, indexer, nodes, comparisons
        self.codec = PatternCodec([c.n_levels for c in comparisons])
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, COMPARE_WORKERS)
        self.executor: Any = None

    def __enter__(self) -> ComparePool:
        # Forked workers only on Linux: macOS offers fork, but forking a process whose libraries run
        # threads (polars, Accelerate) can hang the child there; elsewhere the pairs compare here.
        if self.indexer == "polars" and self.workers > 1 and sys.platform.startswith("linux"):
            self.executor = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("fork"),
                                                initializer=_start_worker, initargs=(self.fields,))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)

    def _here(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        if self.indexer == "recordlinkage":
            return compare_pairs_recordlinkage(self.nodes, self.comparisons, left, right)
        return compare_pairs(self.fields, left, right)

    def map(self, tasks: Iterator[tuple[Any, ...]]) -> Iterator[tuple[tuple[Any, ...], np.ndarray]]:
        if self.executor is None:
            for task in tasks:
                left, right, todo = task[1], task[2], task[5]
                yield task, self.codec.encode(self._here(left[todo], right[todo]))
            return
        pending: deque[tuple[tuple[Any, ...], Any]] = deque()
        for task in tasks:
            left, right, todo = task[1], task[2], task[5]
            pending.append((task, self.executor.submit(_compare_in_worker, (left[todo], right[todo], self.codec))))
            if len(pending) >= 2 * self.workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


__all__ = ["COMPARE_WORKERS", "ComparePool"]
