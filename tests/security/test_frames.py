"""Issue 37, item 1: a page on another site framed ``/#duplicates`` invisibly, and two real clicks ran Undo.

Every answer now forbids framing (``X-Frame-Options: DENY``, CSP ``frame-ancestors 'none'``), runs only
the script and style the service serves, and neither sniffs nor sends a referrer. The browser test
frames the live page from another origin in headless Chromium: the frame never shows the page.
``tests/test_browser.py`` drives the whole page under the same CSP.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from facesearch.service.app import create_app
from facesearch.service.headers import SECURITY_HEADERS
from facesearch.service.state import ServeOptions

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 60.0


def assert_hardened(r) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (r.request.url, name, r.headers.get(name))


def test_every_answer_carries_the_headers(live):
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    with live.client() as c:
        answers = [c.get("/"), c.get("/app.js"), c.get("/app.css"), c.get("/api/health"), c.get("/api/no/such"),
                   c.get("/api/faces/999999999/thumb"), c.get("/api/people/1", headers={"Host": "evil.example"}),
                   c.post("/api/undo", content=b"x", headers={"Content-Type": "text/plain"})]
    assert [r.status_code for r in answers][:4] == [200] * 4 and {r.status_code for r in answers[4:]} <= {
        404, 421, 415}
    for r in answers:
        assert_hardened(r)


def test_even_a_bug_answers_with_the_headers(indexed, searcher):
    app = create_app(ServeOptions(index=indexed[0] / "idx", detector="none"), searcher)

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("a bug")

    r = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False).get("/api/boom")
    assert r.status_code == 500 and r.json()["error"] == "unexpected RuntimeError"
    assert_hardened(r)


def test_the_page_has_no_inline_script_or_style(live):
    with live.client() as c:
        page = c.get("/").text
    assert "<script>" not in page and "<style>" not in page and not re.search(r"\s(style|on[a-z]+)=", page)
    assert '<script src="/app.js">' in page and 'href="/app.css"' in page


@pytest.fixture(scope="module")
def foreign_site(live):
    """Another origin (another port of 127.0.0.1) whose page frames the service's ``/#duplicates``."""
    html = (f'<!doctype html><p id="mine">a page of another site</p>'
            f'<iframe name="victim" src="{live.url}/#duplicates" width="800" height="600"></iframe>').encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def chromium():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("chromium and chromedriver not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"):
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="facesearch-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def frame_state(driver) -> str | None:
    """``"page"`` once the framed service page runs, ``"refused"`` once Chromium shows its error page
    instead, None while the frame is still on its way (both end states are final: no race)."""
    from selenium.common.exceptions import WebDriverException

    try:
        driver.switch_to.default_content()
        driver.switch_to.frame("victim")
        href = driver.execute_script("return location.href")
        if driver.execute_script("return document.getElementById('drop') !== null"):
            return "page"
        return "refused" if href.startswith("chrome-error:") else None
    except WebDriverException:  # the frame navigated under us: look again
        return None
    finally:
        driver.switch_to.default_content()


def test_another_site_cannot_frame_the_page(live, foreign_site, chromium):
    chromium.get(live.url + "/#duplicates")  # the page itself loads and runs under its CSP
    wait(chromium, lambda d: d.execute_script("return document.body.dataset.ready") == "1", "the page runs")
    chromium.get(foreign_site)
    assert chromium.find_element("id", "mine").text == "a page of another site"
    state = wait(chromium, frame_state, "the frame settles (the page, or Chromium's refusal)")
    assert state == "refused", "the service's page ran inside another site's frame"


def wait(driver, check, what: str):
    end = time.monotonic() + WAIT_S
    while True:
        got = check(driver)
        if got:
            return got
        assert time.monotonic() < end, f"timed out: {what}"
        time.sleep(0.1)
