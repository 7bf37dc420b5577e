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


def test_upload_a_photo_and_see_verdict_and_overlay(server_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from crackscan import synth

    photo = tmp_path / "north-wall.jpg"
    Image.fromarray(synth.make_photo(np.random.default_rng(5), 600, 450, cracks=2)).save(photo)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server_url)
            sync_api.expect(page.locator("#model")).to_contain_text("classes Negative / Positive")
            page.set_input_files("#files", str(photo))
            card = page.locator("article.result").first
            sync_api.expect(card.locator("h2")).to_have_text("north-wall.jpg")
            verdict = card.locator(".verdict")
            sync_api.expect(verdict).to_have_text(
                __import__("re").compile(r"(Cracks found in \d+ of \d+ tiles|No cracks found \(\d+ tiles checked\))"),
                timeout=30_000)
            overlay = card.locator("img.overlay")
            sync_api.expect(overlay).to_be_visible()
            width = overlay.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width == 600
            assert "Cracked area" in card.inner_text()
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            page.set_input_files("#files", str(_not_an_image(tmp_path)))
            sync_api.expect(page.locator("article.result").first.locator(".verdict")).to_contain_text(
                "Could not check this file: notes.jpg: not an image")
        finally:
            browser.close()


def _not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("site visit notes")
    return path
