"""Issue 37, item 3: ``facesearch serve`` wrote the token into its access log (``GET /api/health?token=…``).

The real command runs here (a subprocess on 127.0.0.1, its output in a file): the access log still
shows each request, with every ``token`` value written as ``***``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from facesearch.service.logs import RedactTokens, redact

TOKEN = "s3cret-token-value"
START_S = 180.0  # the model loads first; bounded so a server that never answers fails the test
ROOT = Path(__file__).resolve().parents[2]


def test_the_redaction_rule():
    assert redact("GET /api/x?size=3&token=abc&b=1 HTTP/1.1") == "GET /api/x?size=3&token=***&b=1 HTTP/1.1"
    assert redact("/x?%74oken=abc") == "/x?%74oken=***" and redact("/x?tokens=abc") == "/x?tokens=abc"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/health?token=abc", "1.1", 200), None)
    assert RedactTokens().filter(record) and "abc" not in record.getMessage()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_never_logs_the_token(indexed, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "facesearch", "serve", "--index", str(indexed[0] / "idx"),
                                 "--detector", "none", "--port", str(port), "--token", TOKEN],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(proc, url, log)
        with httpx.Client(base_url=url, timeout=30) as c:
            for path in ("/api/health?token=" + TOKEN, f"/api/faces/1/thumb?size=40&token={TOKEN}",
                         f"/api/health?%74oken={TOKEN}", "/api/health?token=wrong-guess"):
                assert c.get(path).status_code in (200, 401), path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert "/api/health?token=***" in text and "/api/faces/1/thumb?size=40&token=***" in text, text
    assert TOKEN not in text and "wrong-guess" not in text, text


def wait_until_up(proc, url: str, log: Path) -> None:
    end = time.monotonic() + START_S
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(url + "/api/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).is_success:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < end, f"serve did not answer within {START_S} s"
        time.sleep(0.2)
