"""Where ``--engine ray`` runs: a Ray runtime started on this machine, or a cluster joined by address.

Joining is bounded and said in one line: the head is probed first (``ray.init`` retries an
unreachable address for minutes), Ray's own failures become a :class:`FacesearchError`, and a
cluster on this machine that listens on loopback only (a test cluster, or a single machine that
must not expose Ray) is reached on loopback (see :func:`_loopback_kept`). A node lost for good
mid-run is said in one line too, with what the next run reuses (:func:`cluster_failure`).
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from facesearch.core.errors import FacesearchError, first_line

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # to reach a cluster's head before handing over to ray.init (which can wait minutes)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@contextmanager
def ray_runtime(address: str | None, workers: int | None = None) -> Iterator[None]:
    """Join the cluster at ``address``, or start a Ray runtime on this machine with ``workers`` CPUs for
    detection (default: one per core) and one for embedding; shut down on exit. A runtime the caller
    already started is used and left running."""
    import ray

    # Ray Data logs every execution at INFO on stderr; our caller reports progress itself.
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    if ray.is_initialized():
        yield
        return
    quiet = dict(log_to_driver=False, configure_logging=False)  # our progress bar, not Ray's worker logs
    env = _ray_env()
    if address:
        _join(address, quiet)
    else:
        # One logical CPU more than detection workers, for the embedding actor: the local engine too
        # embeds in its main process beside one detection worker per core (measured in docs/scaling.md).
        detectors = workers if workers and workers > 0 else (os.cpu_count() or 1)
        start_local(detectors + 1, **quiet)
    try:
        yield
    finally:
        ray.shutdown()
        _restore_ray_env(env)


def start_local(num_cpus: int, attempts: int = 3, **init_kwargs) -> None:
    """``ray.init`` of a runtime on this machine with ``num_cpus`` CPUs, tried ``attempts`` times.

    Ray waits a fixed 30 s for a new raylet to register with its GCS; on a busy 2-core machine that
    wait has run out (CI, 2026-12-04) although a second start succeeds, and twice in a row for the
    GCS's own port file (a clean-clone run, 2026-12-07). Each failed start is shut down before the
    next; the last failure is said in one line (FacesearchError)."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **init_kwargs)
            return
        except Exception as e:  # Ray raises a bare Exception for the startup timeout
            ray.shutdown()  # the half-started GCS and raylet, so the next try starts clean
            reason = first_line(e)
            log.warning("the Ray runtime did not start (try %d of %d): %s", attempt, attempts, reason)
    raise FacesearchError(f"the Ray runtime did not start on this machine: {reason[:200]}",
                          hint="the machine may be overloaded; try again, or use --engine local")


def _ray_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("RAY_") or k == "PYTHONBREAKPOINT"}


def _restore_ray_env(before: dict[str, str]) -> None:
    """Undo what ``ray.init`` wrote into this process's environment. A runtime started here sets
    ``RAY_AUTH_MODE=token`` (among others), and every process started afterwards inherited it: a
    later join of a cluster without token auth then had its actors cancelled before they ran."""
    for key in set(_ray_env()) - set(before):
        del os.environ[key]
    os.environ.update(before)


def _join(address: str, quiet: dict) -> None:
    """``ray.init(address=...)``, its failures said in one line (FacesearchError), never a hang."""
    import ray

    hint = ("give the head node's HOST:PORT (what `ray start --head` printed), check that the cluster is "
            "running and reachable from here, and set RAY_AUTH_TOKEN if it uses token authentication")
    _probe(address, hint)
    try:
        with _loopback_kept(address):
            ray.init(address=address, **quiet)
    except Exception as e:  # ConnectionError, AuthenticationError, RuntimeError...: Ray's words, one line
        raise FacesearchError(f"cannot join the Ray cluster at {address}: {first_line(e)[:200]}", hint=hint) from None


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto`` and the like."""
    host, sep, port = address.partition("://")[2 if "://" in address else 0].rpartition(":")
    return (host.strip("[]"), int(port)) if sep and port.isdigit() else None


def _probe(address: str, hint: str) -> None:
    """Fail fast when nothing answers at the address: ray.init would retry for minutes."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, socket.timeout) else (e.strerror or str(e)).lower()
        raise FacesearchError(f"cannot reach the Ray cluster at {address}: {reason}", hint=hint) from None


@contextmanager
def _loopback_kept(address: str) -> Iterator[None]:
    """Keep a loopback address on loopback while joining.

    Ray 2.60 replaces a loopback host by this machine's interface address before it connects
    (``services.resolve_ip_for_localhost``), unless its multi-node switch is off; a cluster on this
    machine that listens on 127.0.0.1 only is then unreachable ("Failed to connect to Ray cluster at
    <interface address>"). For a loopback address the switch is turned off while ``ray.init`` runs.
    """
    from ray._private import ray_constants

    hp = _host_port(address)
    if hp is None or hp[0] not in LOOPBACK_HOSTS or not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextmanager
def cluster_failure(address: str | None, folder: Path) -> Iterator[None]:
    """A node or actor lost for good mid-run: one line, and what the next run will reuse."""
    from ray.exceptions import RayError

    try:
        yield
    except RayError as e:
        saved = len(list(folder.glob("*.parquet"))) if folder.is_dir() else 0
        where = f"the Ray cluster at {address}" if address else "the Ray runtime"
        raise FacesearchError(f"{where} failed mid-run: {first_line(e)[:200]}",
                              hint=f"run the same command again: the {saved} shards written so far are "
                                   "committed from disk, not recomputed") from None
