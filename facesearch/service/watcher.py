"""``serve --watch``: the service keeps its index current with the same watcher as ``facesearch watch``.

The watcher runs in a daemon thread beside the server; each batch takes the index's writer lock only
while it runs, so queries go on. Events go to the log (stderr), as the server's own lines do.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from facesearch.indexing.watch import WatchOptions, watch
from facesearch.indexing.work import IndexOptions
from facesearch.service.state import ServeOptions

log = logging.getLogger("facesearch.serve.watch")


class Watcher:
    """A watcher thread over ``paths`` for the served index; :meth:`stop` ends it."""

    def __init__(self, opts: ServeOptions, paths: list[Path], settle: float = 1.0):
        index = IndexOptions(paths=[str(p) for p in paths], index=Path(opts.index), weights=opts.weights,
                             detector=opts.detector, device=opts.device, workers=0)
        self.opts = WatchOptions(index, settle=settle)
        self.events: list[dict] = []  # the last events, newest last (for tests and /api/health readers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facesearch-watch", daemon=True)

    def start(self) -> "Watcher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            watch(self.opts, self._event, stop=self._stop)
        except Exception as e:  # the server goes on without its watcher, and says why
            log.error("the watcher stopped: %s", e)
            self._event({"event": "error", "error": str(e)})

    def _event(self, event: dict) -> None:
        self.events = (self.events + [event])[-100:]
        level = logging.WARNING if event.get("event") == "error" else logging.INFO
        log.log(level, "%s", {k: v for k, v in event.items()})
