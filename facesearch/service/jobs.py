"""Index jobs of the service: one writer thread runs them in the order they came (FIFO).

An index has one writer at a time (its lock). Jobs started in threads of their own raced for it,
and the loser failed on the server's own lock, its uploaded photo never indexed; queued here, a
burst of uploads runs one after the other and each job ends ``done`` or ``failed`` with its own
error. ``queued`` → ``running`` → ``done`` | ``failed``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from facesearch.core.errors import DataError, FacesearchError

KEEP_FINISHED = 1000  # finished jobs remembered for GET /api/jobs/ID; older ones are forgotten


@dataclass
class Job:
    """One index run: what it reads (``paths`` as checked, and ``resolved`` then), where it stands, what it found."""

    id: str
    paths: list[str]
    label_from_folder: bool = False
    resolved: list[Path | None] = field(default_factory=list)
    status: str = "queued"
    done: int = 0
    total: int | None = None
    summary: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "done": self.done, "total": self.total,
                "summary": self.summary, "error": self.error, "seconds": round(time.time() - self.started, 1)}

    def progress(self, event: str, data: dict) -> None:
        """``index_collection``'s progress callback."""
        if event == "start":
            self.total = data["todo"]
        elif event == "file":
            self.done = data["done"]


class JobQueue:
    """Jobs by id, and the one thread that runs them; ``make_options(paths, label_from_folder)``
    gives the :class:`~facesearch.indexing.work.IndexOptions` of a job."""

    def __init__(self, make_options: Callable):
        self.make_options = make_options
        self.jobs: dict[str, Job] = {}
        self._todo: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def submit(self, paths: list[os.PathLike | str], label_from_folder: bool = False) -> Job:
        """Queue a job; it runs after every job submitted before it, on ``paths`` as they resolve now."""
        job = Job(uuid.uuid4().hex[:12], [str(p) for p in paths], label_from_folder,
                  resolved=[_resolve(p) for p in paths])
        with self._lock:
            self._forget_old()
            self.jobs[job.id] = job
            if self._worker is None:  # started on first use: an app that never indexes has no thread
                self._worker = threading.Thread(target=self._work, name="facesearch-index-jobs", daemon=True)
                self._worker.start()
        self._todo.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def _work(self) -> None:
        while True:
            self.run(self._todo.get())

    def run(self, job: Job) -> None:
        """Run one job to its end; whatever goes wrong is the job's error, never the thread's death."""
        from facesearch.people.labels import index_and_place  # an upload's label names one face

        job.status, job.started = "running", time.time()
        try:
            check_unchanged(job)
            job.summary = index_and_place(self.make_options(job.paths, job.label_from_folder), job.progress).to_dict()
            job.status = "done"
        except FacesearchError as e:
            job.status, job.error = "failed", e.message
        except Exception as e:  # a bug: the job says so instead of dying silently in its thread
            job.status, job.error = "failed", f"unexpected {type(e).__name__}: {e}"

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.status in ("done", "failed")]
        for j in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[j.id]


def check_unchanged(job: Job) -> None:
    """Refuse a job whose paths resolve elsewhere than when it was queued (and checked): a folder
    swapped for a symlink meanwhile would lead the job out of the folders it may read."""
    for path, then in zip(job.paths, job.resolved):
        if _resolve(path) != then:
            raise DataError(f"{path} changed since the job was queued: it now leads to {_resolve(path)}",
                            hint="nothing was indexed; check the folder and send it again")


def _resolve(path: os.PathLike | str) -> Path | None:
    try:
        return Path(path).resolve()
    except (OSError, ValueError, RuntimeError):  # a symlink loop, a NUL byte: unresolvable is a change too
        return None
