"""The page in headless Chromium against a live server (issue 30): name, split, merge, move duplicates and
undo from the page, each checked in the index afterwards; the token travels with every call.

Driven by Selenium through the system's ``chromedriver`` (Debian's, built with its Chromium, so the
two always match and nothing is downloaded). ``FACESEARCH_SCREENSHOTS=DIR`` also saves each view at
1280×900 into DIR (``docs/screenshots/`` is made so).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from facesearch.service.app import create_app
from facesearch.service.state import ServeOptions
from facesearch.store.face_index import FaceIndex

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402 - only with selenium
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                                reason="chromium and chromedriver not installed")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900")
WAIT_S = 60.0
TOKEN = "page-s3cret"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An index of 3 people × 3 photos (labelled) plus two copies of one photo, served live with a token."""
    from facesearch.photos.synthetic import make_identity_folder

    root = tmp_path_factory.mktemp("browser")
    photos = make_identity_folder(root / "photos", n_people=3, per_person=3, seed=4)
    original = sorted((photos / "person_02").iterdir())[0]
    (photos / "copies").mkdir()
    for n in (1, 2):
        shutil.copy(original, photos / "copies" / f"IMG_{n}{original.suffix}")
    r = CliRunner().invoke(cli, ["index", str(photos), "--index", str(root / "idx"), "--detector", "none",
                                 "--workers", "0", "--label-from-folder", "--quiet"])
    assert r.exit_code == 0, r.output
    (root / "moves").mkdir()
    app = create_app(ServeOptions(index=root / "idx", detector="none", token=TOKEN, move_roots=(root / "moves",)))
    port, stop = _serve(app)
    yield f"http://127.0.0.1:{port}/?token={TOKEN}", root
    stop()


def _serve(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started and time.monotonic() < end:
        time.sleep(0.05)
    assert server.started, "the test server did not start"

    def stop():
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return sock.getsockname()[1], stop


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="facesearch-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the page itself 1280×900, not the window
                           {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def until(driver, check, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: check(d), message=what)


def open_view(driver, url: str, hash_: str) -> None:
    driver.get(url + hash_)
    until(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1", f"view {hash_} loads")
    errors = [e.text for e in driver.find_elements("css selector", ".err") if e.is_displayed() and e.text]
    assert not errors, errors


def done(driver, status_id: str) -> str:
    """The text of a correction's status once it says how it went; fails on an error."""
    el = until(driver, lambda d: (d.find_elements("css selector", f"#{status_id}.ok, #{status_id}.err") or [None])[0],
               f"#{status_id} reports")
    assert "ok" in el.get_attribute("class"), el.text
    return el.text


def shot(driver, name: str) -> None:
    folder = os.environ.get("FACESEARCH_SCREENSHOTS")
    if folder:
        driver.execute_script("document.activeElement && document.activeElement.blur()")
        time.sleep(0.5)  # lazy thumbnails
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def person_named(index, name: str) -> tuple[int, list[int]]:
    from facesearch.people.persons import PeopleOptions, people

    p = next(p for p in people(PeopleOptions(index))["people"] if p["name"] == name)
    return p["id"], sorted(f["face_id"] for f in p["faces"])


def labels(index, face_ids) -> set:
    with FaceIndex.open(index, readonly=True) as store:
        return {r.label for r in store.faces(face_ids)}


def test_name_split_and_merge_from_the_page(site, browser):
    url, root = site
    index = root / "idx"
    open_view(browser, url, "#people")
    shot(browser, "people")
    pid, faces = person_named(index, "person_00")
    open_view(browser, url, f"#person={pid}")
    name = browser.find_element("id", "person-name")
    name.clear()
    name.send_keys("Ann Lee\n")  # Enter submits: the keyboard path
    done(browser, "person-status")
    assert person_named(index, "Ann Lee")[1] == faces and labels(index, faces) == {"Ann Lee"}
    boxes = browser.find_elements("css selector", "input.face-pick")
    browser.execute_script("arguments[0].focus()", boxes[0])
    ActionChains(browser).send_keys(" ").perform()  # Space ticks the focused face: the keyboard path
    assert boxes[0].is_selected()
    browser.find_element("xpath", "//button[text()='Split the chosen faces off']").click()
    assert "are now person" in done(browser, "person-status")
    assert len(person_named(index, "Ann Lee")[1]) == len(faces) - 1
    shot(browser, "person")
    open_view(browser, url, "#people")
    new = next(b for b in browser.find_elements("css selector", "input.people-pick")
               if b.get_attribute("aria-label").startswith("unnamed person"))
    new.click()
    browser.find_element("css selector", f"input.people-pick[value='{pid}']").click()
    browser.find_element("xpath", "//button[text()='Merge the chosen people']").click()
    until(browser, lambda d: d.execute_script("return location.hash") == f"#person={pid}", "merged: the person opens")
    assert person_named(index, "Ann Lee")[1] == faces and labels(index, faces) == {"Ann Lee"}


def test_a_named_person_is_answered_at_once_by_the_search(site, browser):
    url, root = site
    pid, faces = person_named(root / "idx", "person_01")
    open_view(browser, url, f"#person={pid}")
    name = browser.find_element("id", "person-name")
    name.clear()
    name.send_keys("Bo\n")
    done(browser, "person-status")
    open_view(browser, url, f"#face={faces[1]}")
    until(browser, lambda d: d.execute_script("return document.body.dataset.faces") == "1", "the search answers")
    card = browser.find_element("css selector", ".face-result").text
    assert "Bo — " in card and "the same person" in card, card
    shot(browser, "search")


def test_move_duplicates_and_undo_from_the_page(site, browser):
    url, root = site
    index = root / "idx"
    copies = sorted(str(p) for p in (root / "photos" / "copies").iterdir())
    open_view(browser, url, "#duplicates")
    shot(browser, "duplicates")
    group = next(g for g in browser.find_elements("css selector", ".dup-group") if "IMG_1" in g.text)
    group.find_element("css selector", "input.group-pick").click()
    members = [r.get_attribute("value") for r in group.find_elements("css selector", "input[type=radio]")]
    group.find_element("css selector", f"input[type=radio][value='{copies[0]}']").click()
    # The user keeps a copy, not the suggested original: the user's choice is what stays.
    browser.find_element("id", "move").click()
    dialog = browser.find_element("id", "confirm")
    until(browser, lambda d: dialog.is_displayed(), "a confirmation is asked")
    n = len(members) - 1
    assert f"Move {n} photo(s)" in dialog.text and not list((root / "moves").rglob("*.*"))
    shot(browser, "duplicates-confirm")
    browser.find_element("id", "confirm-yes").click()
    assert f"{n} photo(s) moved" in done(browser, "dup-status")
    assert len(list((root / "moves" / "duplicates").rglob("*.*"))) == n
    assert [os.path.exists(p) for p in members] == [p == copies[0] for p in members]
    with FaceIndex.open(index, readonly=True) as store:
        assert [bool(store.file_info(p)) for p in members] == [p == copies[0] for p in members]
    browser.find_element("id", "undo").click()
    until(browser, lambda d: d.find_element("id", "confirm").is_displayed(), "undo asks first")
    browser.find_element("id", "confirm-yes").click()
    assert "indexed again" in done(browser, "dup-status")
    with FaceIndex.open(index, readonly=True) as store:
        assert all(store.file_info(p) for p in members)  # back on disk, and in the index
    assert not list((root / "moves").rglob("*.*"))


def test_cancel_moves_nothing(site, browser):
    url, root = site
    open_view(browser, url, "#duplicates")
    browser.find_element("css selector", "input.group-pick").click()
    browser.find_element("id", "move").click()
    until(browser, lambda d: d.find_element("id", "confirm").is_displayed(), "a confirmation is asked")
    browser.find_element("id", "confirm-no").click()
    assert browser.find_element("id", "dup-status").text == "nothing was moved"
    assert not list((root / "moves").rglob("*.*"))


def test_without_the_token_the_page_says_so(site, browser):
    url, _ = site
    browser.get(url.split("?")[0] + "#people")
    until(browser, lambda d: d.execute_script("return document.body.dataset.ready") == "1", "the view settles")
    assert "missing or wrong token" in browser.find_element("id", "people-list").text
