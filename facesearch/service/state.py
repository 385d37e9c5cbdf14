"""What every route of the service shares: its options, the loaded model, the job queue.

Routes reach it through FastAPI's dependency :func:`service` (``Depends(service)``), so a route is
a plain function of its inputs and this object, and a test can build one app around one router.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from facesearch.search.query import Searcher
from facesearch.service.jobs import JobQueue

COMPUTE_SLOTS = 2


@dataclass
class ServeOptions:
    """How ``facesearch serve`` was started (the CLI's flags)."""

    index: os.PathLike
    weights: str | None = None
    detector: str = "auto"
    device: str = "auto"
    token: str | None = None
    host: str = "127.0.0.1"  # the bound address: a name the service answers to besides loopback's
    allow_hosts: tuple[str, ...] = ()  # more Host names to answer to (a LAN name, a proxy's)
    index_roots: tuple[os.PathLike, ...] = ()  # folders POST /api/index may read; none: uploads only
    move_roots: tuple[os.PathLike, ...] = ()  # folders POST /api/dedupe/apply may move copies into; none: no moves


class Service:
    """The model, loaded once, and the index jobs of one served index."""

    def __init__(self, opts: ServeOptions, searcher: Searcher):
        self.opts, self.searcher = opts, searcher
        self.index = Path(opts.index)
        self.jobs = JobQueue(self._index_options)
        # Searches at once: torch already spreads one over the cores (bench/serve.py, docs/benchmarks.md).
        self.compute = threading.BoundedSemaphore(COMPUTE_SLOTS)

    def _index_options(self, paths: list[str], label_from_folder: bool):
        from facesearch.indexing.run import IndexOptions

        return IndexOptions(paths=paths, index=self.index, weights=self.opts.weights, detector=self.opts.detector,
                            device=self.opts.device, label_from_folder=label_from_folder, workers=0)


def service(request: Request) -> Service:
    """The app's :class:`Service` (a FastAPI dependency)."""
    return request.app.state.service
