"""Issue 26, item 8: every error of the service is ``{"error", "hint"}`` JSON with a 4xx code.

Huge ids, malformed JSON and bodies of the wrong type answered 500 text/plain (a traceback in the
log); they are refusals of the request, and say so.
"""

from __future__ import annotations

import pytest

from sec_helpers import json_error, raw_multipart

HUGE = "99999999999999999999999"


@pytest.mark.parametrize("method, path, kw, code", [
    ("GET", f"/api/faces/{HUGE}/thumb", {}, 404),
    ("GET", "/api/faces/-1/thumb", {}, 404),
    ("GET", "/api/faces/x/thumb", {}, 422),
    ("GET", f"/api/faces/{HUGE}/clip", {}, 404),
    ("GET", "/api/faces/1/clip", {}, 404),  # a photo's face names no clip
    ("GET", "/api/faces/x/clip", {}, 422),
    ("GET", "/api/no/such/route", {}, 404),
    ("GET", "/api/jobs/nothing", {}, 404),
    ("POST", f"/api/people/{HUGE}/name", {"json": {"name": "Ann"}}, 404),  # unknown ids are 404 (issue 37, 7)
    ("POST", "/api/people/1/name", {"content": b'{"name": ', "headers": {"Content-Type": "application/json"}}, 400),
    ("POST", "/api/people/1/name", {"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, 400),
    ("POST", "/api/people/1/name", {"json": ["Ann"]}, 400),
    ("POST", "/api/people/1/name", {"json": {"name": "A\x1b]8;;x\x1b\\B"}}, 400),
    ("POST", "/api/people/1/name", {"json": {"name": "x" * 10_000}}, 400),
    ("POST", "/api/people/1/name", {"files": {"name": ("n", b"Ann", "text/plain")}}, 415),
    ("POST", "/api/index", {"content": b"{", "headers": {"Content-Type": "application/json"}}, 400),
    ("POST", "/api/index", {"json": {"paths": ["/tmp/\x00x"]}}, 400),
    ("POST", "/api/index", {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
     400),
    ("POST", "/api/query", {"json": {"image": "x"}}, 422),
    ("PUT", "/api/health", {"json": {}}, 405),
])
def test_error_paths_are_json_with_a_4xx_code(live, method, path, kw, code):
    with live.client() as c:
        json_error(c.request(method, path, **kw), code)


@pytest.mark.parametrize("filename", ["a\tb.png", "\x1b[31mred.png", "x" * 300 + ".png"])
def test_upload_file_names_follow_the_rule_for_names(live, filename):
    photo = sorted(live.photos.rglob("*.png"))[0].read_bytes()
    with live.client() as c:
        body = json_error(c.post("/api/query", **raw_multipart(filename, photo)), 400)
        assert "\x1b" not in body["error"] and "file name" in body["error"]
        json_error(c.post("/api/index", **raw_multipart(filename, photo, {"label": "Ann"})), 400)
        assert not (live.index / "uploads" / "Ann").exists()


def test_a_huge_json_body_is_413(live):
    with live.client() as c:
        json_error(c.post("/api/people/1/name", content=b'{"name": "' + b"x" * (2 * 2**20) + b'"}',
                          headers={"Content-Type": "application/json"}), 413)
