"""Small checks shared by the attack tests."""

from __future__ import annotations

import time

EVIL = "http://evil.example"


def json_error(r, *codes: int) -> dict:
    """``r`` is a ``{"error", "hint"}`` JSON answer with one of ``codes``; returns the body."""
    assert r.status_code in codes, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    body = r.json()
    assert {"error", "hint"} <= set(body) and body["error"], body
    return body


def finished(client, job_id: str, timeout: float = 90.0) -> dict:
    """The job's state once it is no longer queued or running (bounded by ``timeout``)."""
    end = time.monotonic() + timeout
    while True:
        state = client.get(f"/api/jobs/{job_id}").json()
        if state["status"] not in ("queued", "running") or time.monotonic() > end:
            return state
        time.sleep(0.1)


def person_names(client) -> dict[int, str | None]:
    return {p["id"]: p["name"] for p in client.get("/api/people").json()["people"]}


def raw_multipart(filename: str, data: bytes, fields: dict | None = None) -> dict:
    """A multipart body with ``filename`` as sent, byte for byte (httpx would percent-encode a newline)."""
    b = "facesearch-boundary"
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in
             (fields or {}).items()]
    parts.append(f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    return {"content": b"".join(parts) + f"--{b}--\r\n".encode(),
            "headers": {"Content-Type": f"multipart/form-data; boundary={b}"}}
