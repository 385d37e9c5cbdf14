"""Issue 26, items 1-2 of "Broken": other web sites driving the loopback service.

A page on any site the user visits can POST to http://127.0.0.1:8750 (a ``<form>`` needs no
permission), and a page whose DNS name is rebound to 127.0.0.1 can read answers. The service
answers only its own page and programs: Host allow-list (421), same-origin (403), JSON or
multipart bodies only (415), no CORS headers.
"""

from __future__ import annotations

import json

import pytest

from sec_helpers import EVIL, json_error, person_names


def text_plain_form(body: dict) -> dict:
    """What ``<form enctype="text/plain" method="post">`` on another site sends: a JSON-looking body."""
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "text/plain", "Origin": EVIL,
                                                              "Sec-Fetch-Site": "cross-site"}}


def test_a_cross_site_form_cannot_rename_a_person(live):
    with live.client() as c:
        before = person_names(c)
        pid = next(iter(before))
        r = c.post(f"/api/people/{pid}/name", **text_plain_form({"name": "Pwned"}))
        json_error(r, 403, 415)
        assert person_names(c) == before


def test_a_cross_site_form_cannot_start_indexing(live):
    with live.client() as c:
        faces = c.get("/api/health").json()["faces"]
        r = c.post("/api/index", **text_plain_form({"paths": [str(live.allowed)]}))
        json_error(r, 403, 415)
        assert c.get("/api/health").json()["faces"] == faces


@pytest.mark.parametrize("headers", [
    {"Origin": EVIL},  # fetch() from another site, even with a JSON body (a preflight the browser may skip)
    {"Origin": "null"},  # a sandboxed iframe, a file:// page
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},  # another local server's page
])
def test_requests_from_other_sites_are_refused_even_as_json(live, headers):
    with live.client() as c:
        pid = next(iter(person_names(c)))
        body = json_error(c.post(f"/api/people/{pid}/name", json={"name": "Pwned"}, headers=headers), 403)
        assert "another site" in body["error"]
        json_error(c.get("/api/people", headers=headers), 403)


@pytest.mark.parametrize("content_type, content", [
    ("text/plain", b'{"name": "Pwned"}'),
    ("application/x-www-form-urlencoded", b"name=Pwned"),
    (None, b'{"name": "Pwned"}'),
])
def test_state_changes_take_only_json_or_multipart(live, content_type, content):
    headers = {"Content-Type": content_type} if content_type else {}
    with live.client() as c:
        before = person_names(c)
        pid = next(iter(before))
        json_error(c.post(f"/api/people/{pid}/name", content=content, headers=headers), 415)
        json_error(c.post("/api/index", content=content, headers=headers), 415)
        assert person_names(c) == before


def test_our_own_page_may_still_name_people(live):
    origin = live.url
    with live.client() as c:
        pid = next(iter(person_names(c)))
        r = c.post(f"/api/people/{pid}/name", json={"name": "Dora"},
                   headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200 and r.json()["name"] == "Dora", r.text
        assert person_names(c)[pid] == "Dora"


@pytest.mark.parametrize("path", ["/api/people", "/api/faces/1/thumb", "/api/faces/1/clip", "/api/health", "/"])
def test_a_rebound_host_name_reads_nothing(live, path):
    with live.client() as c:
        body = json_error(c.get(path, headers={"Host": f"evil.example:{live.port}"}), 421)
        assert "evil.example" in body["error"] and "--allow-host" in body["hint"]
        assert b"person_" not in c.get(path, headers={"Host": f"evil.example:{live.port}"}).content


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "LOCALHOST:{port}"])
def test_loopback_names_are_served(live, host):
    with live.client() as c:
        r = c.get("/api/people", headers={"Host": host.format(port=live.port)})
        assert r.status_code == 200, r.text


def test_allow_host_adds_a_name(serve):
    lan = serve(allow_hosts=("photos.lan",))
    with lan.client() as c:
        assert c.get("/api/health", headers={"Host": f"photos.lan:{lan.port}"}).status_code == 200
        json_error(c.get("/api/health", headers={"Host": f"evil.example:{lan.port}"}), 421)


def test_no_cors_headers_are_ever_sent(live):
    with live.client() as c:
        pre = c.options("/api/people/1/name", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
        got = c.get("/api/health", headers={"Origin": live.url})
        for r in (pre, got):
            assert not any(h.lower().startswith("access-control-") for h in r.headers), r.headers


def test_with_a_token_the_token_checks_stay(serve):
    guarded = serve(token="s3cret")
    with guarded.client() as c:
        json_error(c.get("/api/people"), 401)
        json_error(c.get("/api/people", headers={"Authorization": "Bearer wrong"}), 401)
        assert c.get("/api/people", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/faces/1/thumb?token=s3cret").status_code == 200
        # a token does not make a foreign page or a rebound name welcome
        json_error(c.get("/api/people", headers={"Authorization": "Bearer s3cret", "Origin": EVIL}), 403)
        json_error(c.get("/api/people", headers={"Authorization": "Bearer s3cret",
                                                 "Host": f"evil.example:{guarded.port}"}), 421)
