"""Process pools for CPU-bound photo work (detection, alignment): the one way they start.

Workers are *spawned*, not forked: the parent may hold torch threads, and a fork of a process
holding threads can deadlock. Each worker runs one thread, because the workers themselves are
the parallelism (N workers x N BLAS/OpenMP threads thrash the cores), and ignores Ctrl-C:
SIGINT goes to the whole process group, only the parent handles it (leaving the ``with`` block
terminates the pool); workers that also raised KeyboardInterrupt printed tracebacks and could
hang the pool.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from multiprocessing.pool import Pool
from typing import Callable


def worker_pool(workers: int, initializer: Callable[..., None], initargs: tuple = ()) -> Pool:
    """A spawn pool of ``workers`` processes, each limited to one thread, deaf to SIGINT, and then
    set up by ``initializer(*initargs)`` (which must be picklable: a module-level function)."""
    return mp.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(initializer, initargs))


def _start_worker(initializer: Callable[..., None], initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # OpenMP runtimes (torch's among them) read this when they load, so it covers what the
    # initializer imports; one already loaded (spawn re-imports the parent's __main__) is told directly.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    initializer(*initargs)
