"""Issue 37, item 2: user input answered 500 (a lone surrogate in a name, JSON 100k levels deep, nothing
to undo, an unknown ``scope``), and the CLI said "unexpected UnicodeEncodeError" for a name of bad bytes.

Each is now a one-line 4xx (exit 1 for the CLI) with a hint; a fuzz test posts malformed bodies to
every route the app has (enumerated, so a new route is covered) and finds no 5xx.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from fastapi.routing import APIRoute
from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from facesearch.service.app import ROUTES
from sec_helpers import json_error

SURROGATE = b'{"name": "\\ud800x", "paths": ["\\ud800"], "other": "\\ud800", "faces": ["\\udc80"], ' \
            b'"move_to": "\\ud800", "confirm": true, "groups": [{"members": ["\\ud800"], "keeper": "\\ud800"}]}'
DEEP = b"[" * 100_000 + b"]" * 100_000  # 200 kB: under the size cap, far over any recursion limit
BODIES = [
    b"", b"{", b"{}", b"[]", b"null", b'"text"', b"1e400", b"\xff\xfe", SURROGATE, DEEP,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'{"name": null, "other": null, "faces": null, "paths": null, "groups": null, "move_to": null, "confirm": null}',
    b'{"name": ["x"], "other": "1", "faces": "1", "paths": "x", "groups": {}, "move_to": 5, "confirm": "yes"}',
    b'{"other": 1e400, "faces": [123456789012345678901234567890, -1, true], "name": 12}',
    b'{"other": ' + b"9" * 5_000 + b"}",
    b'{"groups": [null, 1, {"members": null}], "move_to": "/", "confirm": true}',
    b'{"paths": [""], "name": "", "faces": [], "confirm": false}',
]
TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
         "multipart/form-data; boundary=x", None]
PATH_VALUES = {"person": "1", "face_id": "1", "job_id": "nothing"}


@pytest.fixture(scope="module")
def own(serve, indexed, tmp_path_factory):
    """A server on a copy of the index: the fuzz may name, merge and undo all it can."""
    copy = tmp_path_factory.mktemp("fuzz") / "idx"
    shutil.copytree(indexed[0] / "idx", copy)
    return serve(index=copy)


def routes() -> list[tuple[str, str]]:
    """Every (method, path) the app answers (its routers' routes), path parameters filled in."""
    out = []
    for r in (route for module in ROUTES for route in module.router.routes):
        if isinstance(r, APIRoute):
            path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m[1], "1"), r.path)
            out += [(m, path) for m in sorted(r.methods)]
    assert len(out) >= 15 and ("POST", "/api/undo") in out, out
    return out


def attempts(method: str) -> list[tuple[bytes, str | None]]:
    """(body, content type) pairs: every body as JSON, and two of them as each other type (refused
    before the body is read, so more would only slow the test)."""
    if method != "POST":
        return [(b"", None)]
    return [(b, "application/json") for b in BODIES] + [(b, t) for t in TYPES[1:] for b in (b"", SURROGATE)]


def test_no_malformed_body_reaches_a_500(own):
    seen = []
    with own.client() as c:
        for method, path in routes():
            for body, kind in attempts(method):
                r = c.request(method, path, content=body, headers={"Content-Type": kind} if kind else {})
                assert r.status_code < 500, (method, path, kind, body[:80], r.status_code, r.text[:300])
                seen.append(r.status_code)
    assert 400 in seen and 415 in seen


@pytest.mark.parametrize("query", [
    "/api/dedupe?scope=bogus", "/api/dedupe?scope=%ED%A0%80", "/api/photos/thumb?path=%ED%A0%80",
    "/api/photos/thumb?path=x&size=99999999999999999999999", "/api/faces/1/thumb?size=-99999999999999999999",
    "/api/people/99999999999999999999999999999", "/api/jobs/%00",
])
def test_no_query_reaches_a_500(own, query):
    with own.client() as c:
        r = c.get(query)
    assert r.status_code < 500, (r.status_code, r.text[:300])


@pytest.mark.parametrize("path, body, code, words", [
    ("/api/people/1/name", b'{"name": "\\ud800x"}', 400, "not valid text"),
    ("/api/people/1/name", b'{"name": ' + b"[" * 100 + b"]" * 100 + b"}", 400, "nested"),
    ("/api/undo", b'{"confirm": true}', 404, "nothing to undo"),
])
def test_each_reported_500_is_a_4xx_with_a_hint(own, path, body, code, words):
    with own.client() as c:
        answer = json_error(c.post(path, content=body, headers={"Content-Type": "application/json"}), code)
    assert words in answer["error"] and answer["hint"], answer


def test_an_unknown_scope_is_400(own):
    with own.client() as c:
        answer = json_error(c.get("/api/dedupe", params={"scope": "bogus"}), 400)
    assert "bogus" in answer["error"] and "--scope" in answer["hint"]


@pytest.mark.parametrize("argv", [["label", "{photo}", "{name}"], ["people", "name", "1", "{name}"]])
def test_the_cli_refuses_a_name_of_undecodable_bytes_in_one_line(indexed, tmp_path, argv):
    idx = tmp_path / "idx"
    shutil.copytree(indexed[0] / "idx", idx)
    name = os.fsdecode(b"\xed\xa0\x80")  # what Python makes of $'\xed\xa0\x80' in argv: lone surrogates
    photo = sorted(indexed[1].rglob("*.png"))[0]
    r = CliRunner().invoke(cli, [a.format(photo=photo, name=name) for a in argv] + ["--index", str(idx)])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "not valid text" in lines[0] and "unexpected" not in r.stderr and lines[1].startswith("hint:"), lines
