"""A live ``facesearch serve`` for the attack tests: uvicorn on 127.0.0.1, on a free port, in a thread.

Attacks go over real HTTP (httpx), so the checks in front of the routes (Host, Origin, content
type, token) are what a browser or a script on this machine would meet. Every server stops at
the end of its test module, and every wait is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from facesearch.service.app import create_app
from facesearch.service.state import ServeOptions

START_S = 20.0  # bounded: a server that has not started by then fails the test instead of hanging it
STOP_S = 10.0


@dataclass
class Live:
    """One running server: its address, its index and the folder it may index."""

    url: str
    port: int
    index: Path
    allowed: Path
    photos: Path
    app: object

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)


@pytest.fixture(scope="session")
def indexed(tmp_path_factory):
    """A small index (2 people × 2 photos, labelled by folder) and a folder the server may index."""
    from facesearch.photos.synthetic import make_identity_folder

    root = tmp_path_factory.mktemp("sec")
    photos = make_identity_folder(root / "photos", n_people=2, per_person=2, seed=5)
    r = CliRunner().invoke(cli, ["index", str(photos), "--index", str(root / "idx"), "--detector", "none",
                                 "--workers", "0", "--label-from-folder", "--quiet"])
    assert r.exit_code == 0, r.output
    allowed = make_identity_folder(root / "allowed", n_people=1, per_person=2, seed=6)
    return root, photos, allowed


@pytest.fixture(scope="session")
def searcher(indexed):
    """The model, loaded once for every server of the session."""
    from facesearch.search.query import Searcher

    return Searcher(indexed[0] / "idx", None, "none", "auto")


@pytest.fixture(scope="module")
def serve(indexed, searcher):
    """``serve(**options)`` starts a server with those :class:`ServeOptions`; all stop with the module."""
    root, photos, allowed = indexed
    stops = []

    def start(**options) -> Live:
        opts = replace(ServeOptions(index=root / "idx", detector="none", index_roots=(allowed,)), **options)
        app = create_app(opts, searcher)
        port, stop = run_server(app)
        stops.append(stop)
        return Live(f"http://127.0.0.1:{port}", port, root / "idx", allowed, photos, app)

    yield start
    for stop in stops:
        stop()


@pytest.fixture(scope="module")
def live(serve) -> Live:
    """The default server: loopback, no token, one allowed index root."""
    return serve()


@pytest.fixture()
def server_for():
    """``server_for(app)``: ``app`` served live for one test, its base URL; stopped after the test."""
    stops = []

    def start(app) -> str:
        port, stop = run_server(app)
        stops.append(stop)
        return f"http://127.0.0.1:{port}"

    yield start
    for stop in stops:
        stop()


def run_server(app):
    """Start uvicorn for ``app`` on 127.0.0.1 (a port the OS picked); returns ``(port, stop)``."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + START_S
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the test server did not start within {START_S} s")
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=STOP_S)
        sock.close()

    return port, stop
