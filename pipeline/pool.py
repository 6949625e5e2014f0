"""``map`` over worker processes, or in this process where one worker is asked for.

Workers come from a fork server (as ingest's do): forking a process whose torch / OpenMP threads already ran can
deadlock, and spawning re-imports everything per worker; the fork server imports ``preload`` once and forks from there.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def one_thread() -> None:
    """Worker initializer: one torch thread per worker, so that workers do not fight over the cores."""
    import torch

    torch.set_num_threads(1)


def process_map(
    fn: Callable[..., R],
    *iterables: Iterable,
    workers: int = 1,
    preload: Sequence[str] = (),
    initializer: Callable[[], None] | None = None,
    chunksize: int = 1,
) -> Iterator[R]:
    """``map(fn, *iterables)`` in order, over ``workers`` processes (in this process for one)."""
    if workers <= 1:
        yield from map(fn, *iterables)
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=initializer) as pool:
        yield from pool.map(fn, *iterables, chunksize=chunksize)
