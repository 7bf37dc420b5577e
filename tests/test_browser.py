"""The web page in a real browser: headless Chromium (Debian's) driven by Playwright."""

import shutil

import numpy as np
import pytest
from PIL import Image

from .conftest import running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
# Without these, Chromium tries Google's services at start-up, which a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def server_url(tiny_run):
    pytest.importorskip("uvicorn")
    with running_server(tiny_run.path) as url:
        yield url


def _cracked_at(tiles, threshold):
    return sum(t["crack_probability"] >= threshold for t in tiles)


def test_keyboard_upload_slider_downloads_and_clear(server_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from crackscan import synth

    photo = tmp_path / "north-wall.jpg"
    Image.fromarray(synth.make_photo(np.random.default_rng(5), 600, 450, cracks=2)).save(photo)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(server_url)
            sync_api.expect(page.locator("#model")).to_contain_text("classes Negative / Positive")
            page.keyboard.press("Tab")  # the picker is the first stop
            assert page.evaluate("document.activeElement.id") == "files"
            with page.expect_file_chooser() as chooser, page.expect_response("**/v1/scan") as scanned:
                page.keyboard.press("Space")
                chooser.value.set_files(str(photo))
            tiles = scanned.value.json()["tiles"]
            card = page.locator("article.result").first
            sync_api.expect(card.locator("h2")).to_have_text("north-wall.jpg")
            verdict = card.locator(".verdict")
            expected = _cracked_at(tiles, 0.5)
            sync_api.expect(verdict).to_have_text(
                f"Cracks found in {expected} of {len(tiles)} tiles" if expected else f"No cracks found ({len(tiles)} tiles checked)")
            crack_map = card.locator("canvas.overlay")
            sync_api.expect(crack_map).to_be_visible()
            assert crack_map.evaluate("c => [c.width, c.height]") == [600, 450]

            for value in ("0.05", "0.95"):  # re-coloured in the page, no new request
                page.locator("#threshold").fill(value)
                count = _cracked_at(tiles, float(value))
                sync_api.expect(verdict).to_have_text(
                    f"Cracks found in {count} of {len(tiles)} tiles" if count else f"No cracks found ({len(tiles)} tiles checked)")
            sync_api.expect(page.locator("#threshold-value")).to_have_text("0.95")

            with page.expect_download() as downloaded:
                card.get_by_role("button", name="Download tiles.csv").click()
            rows = downloaded.value.path().read_text().splitlines()
            assert downloaded.value.suggested_filename == "north-wall-tiles.csv"
            assert rows[0] == "row,col,x,y,width,height,crack_probability,label" and len(rows) == len(tiles) + 1
            assert sum(line.endswith(",Positive") for line in rows[1:]) == _cracked_at(tiles, 0.95)
            with page.expect_download() as downloaded:
                card.get_by_role("button", name="Download crack map (PNG)").click()
            assert Image.open(downloaded.value.path()).size == (600, 450)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            page.set_input_files("#files", str(_not_an_image(tmp_path)))
            sync_api.expect(page.locator("article.result").first.locator(".verdict")).to_contain_text(
                "Could not check this file: notes.jpg: not an image")
            page.get_by_role("button", name="Clear results").click()
            sync_api.expect(page.locator("article.result")).to_have_count(0)
        finally:
            browser.close()


def test_touch_screens_are_not_asked_to_drop(server_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            phone = browser.new_context(has_touch=True, is_mobile=True, viewport={"width": 390, "height": 800})
            page = phone.new_page()
            page.goto(server_url)
            sync_api.expect(page.get_by_text("Tap to choose photos or take one")).to_be_visible()
            sync_api.expect(page.get_by_text("Choose photos, or drop them here")).to_be_hidden()
        finally:
            browser.close()


def _not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("site visit notes")
    return path
