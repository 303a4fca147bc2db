"""The web page at /: served offline by the app, and used for real in Debian's Chromium through Playwright.

The browser test runs the real default encoder in a real `cbir serve` on a few Corel-1K photos: upload one
through the page, search by it, see its class among the first results, click a result to search by it,
draw a box and check the search carries it. It leaves a screenshot in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.helpers.paths import COREL
from tests.helpers.servers import stop_server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("CBIR_CHROMIUM", "/usr/bin/chromium"))
# As root in a container-like sandbox with no network: no sandbox, no GPU, and nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
CLASSES = ("dinosaurs", "bus", "flowers", "horses", "elephants")
PER_CLASS = 4
UPLOADED = COREL / "dinosaurs" / "dinosaurs_010.jpg"
RECORD_SEARCH_FORMS = """
window.__searchForms = [];
const originalFetch = window.fetch;
window.fetch = (url, options = {}) => {
  if (String(url).endsWith("/search") && options.body instanceof FormData) {
    const fields = {};
    for (const [name, value] of options.body.entries()) {
      fields[name] = typeof value === "string" ? value : value.name;
    }
    window.__searchForms.push(fields);
  }
  return originalFetch(url, options);
};
"""


# -- the page as files (fast) --------------------------------------------------------------------------
def test_page_and_its_assets_are_served_and_need_no_other_host(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.js", "/static/style.css"]
    texts = [page.text]
    for asset, kind in zip(sorted(assets), ("javascript", "text/css"), strict=True):
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert kind in response.headers["content-type"]
        texts.append(response.text)
    # Offline means no CDN, font service or analytics: no absolute URL anywhere in the page or its code.
    for text in texts:
        assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, flags=re.I)


def test_page_is_open_while_the_model_loads(settings: Settings) -> None:
    # No lifespan has run: the collection is not loaded, yet the page (and its assets) must load and then
    # say "loading" itself, rather than the server answering 503 for the page.
    bare = TestClient(create_app(settings))
    assert bare.get("/").status_code == 200
    assert bare.get("/static/app.js").status_code == 200
    assert bare.get("/stats").status_code == 503


# -- in a real browser (slow) --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`cbir serve` with the embedded default encoder, holding PER_CLASS photos of each of CLASSES."""
    if not COREL.is_dir():
        pytest.fail(f"the Corel-1K dataset is missing at {COREL}; tests need ../shared beside the checkout")
    data_dir = tmp_path_factory.mktemp("web") / "data"
    env = {**os.environ, "CBIR_DATA_DIR": str(data_dir), "CBIR_DEVICE": "cpu", "CBIR_LOG_FORMAT": "text"}
    port = free_port()
    log = (tmp_path_factory.mktemp("web-log") / "serve.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env, stderr=log, stdout=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"`cbir serve` did not become healthy:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        for name in CLASSES:
            for photo in sorted((COREL / name).iterdir())[:PER_CLASS]:
                response = httpx.post(
                    f"{url}/images",
                    files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
                    data={"metadata": f'{{"class": "{name}"}}'},
                    timeout=60,
                )
                assert response.status_code == 201, response.text
        yield url
    finally:
        stop_server(process)
        log.close()


@pytest.mark.slow
def test_search_click_and_box_in_chromium(server: str, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Debian's Chromium is missing at {CHROMIUM}: run `make browser` (apt-get install chromium), "
            "or point CBIR_CHROMIUM at a Chromium binary"
        )
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not a picture")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # The form fields of each search the page sends (CDP does not expose multipart bodies with files).
            page.add_init_script(RECORD_SEARCH_FORMS)
            page.set_default_timeout(60_000)
            page.goto(server)
            expect(page.locator("#stats")).to_contain_text(f"{len(CLASSES) * PER_CLASS} images")

            # Upload a Corel photo through the form.
            page.set_input_files("#upload-files", str(UPLOADED))
            page.fill("#upload-metadata", '{"class": "dinosaurs"}')
            page.click("#upload")
            expect(page.locator("#upload-log li").first).to_have_text(f"{UPLOADED.name}: added as #21")
            expect(page.locator("#stats")).to_contain_text(f"{len(CLASSES) * PER_CLASS + 1} images")

            # Search by it: itself first, and its class fills the first results.
            page.set_input_files("#query-file", str(UPLOADED))
            hits = page.locator("#results .hit")
            expect(hits).to_have_count(10)
            expect(hits.first.locator(".name")).to_have_text(UPLOADED.name)
            expect(hits.first.locator(".score")).to_have_text("#1 · 1.000")
            first = [hits.nth(i).locator(".meta").inner_text() for i in range(PER_CLASS + 1)]
            assert first == ["class: dinosaurs"] * (PER_CLASS + 1), first
            page.wait_for_function(
                "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
            )

            # Click the second result: it becomes the query and comes first in the new results.
            second = hits.nth(1).locator(".name").inner_text()
            assert second != UPLOADED.name
            hits.nth(1).click()
            expect(page.locator("#query-image")).to_have_attribute("data-name", second)
            expect(hits.first.locator(".name")).to_have_text(second)

            # Draw a box over the middle of the query: the search sends it, in the photo's own pixels.
            image = page.locator("#query-image")
            natural = image.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            shown = image.bounding_box()
            assert shown is not None
            with page.expect_response(lambda r: r.url.endswith("/search")) as answered:
                page.mouse.move(shown["x"] + shown["width"] * 0.25, shown["y"] + shown["height"] * 0.25)
                page.mouse.down()
                page.mouse.move(
                    shown["x"] + shown["width"] * 0.5, shown["y"] + shown["height"] * 0.5, steps=4
                )
                page.mouse.move(
                    shown["x"] + shown["width"] * 0.75, shown["y"] + shown["height"] * 0.75, steps=4
                )
                page.mouse.up()
            assert answered.value.status == 200, answered.value.text()
            sent = page.evaluate("window.__searchForms.at(-1)")
            found = re.fullmatch(r"(\d+),(\d+),(\d+),(\d+)", sent.get("box") or "")
            assert found, sent
            x0, y0, x1, y1 = (int(v) for v in found.groups())
            width, height = natural
            for got, want in ((x0, width / 4), (y0, height / 4), (x1, width * 3 / 4), (y1, height * 3 / 4)):
                assert abs(got - want) <= 3, (found.groups(), natural)
            expect(page.locator("#box")).to_be_visible()
            expect(page.locator("#results-summary")).to_contain_text(f"for the region {x0},{y0},{x1},{y1}")
            expect(hits).to_have_count(10)
            page.wait_for_function(
                "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=str(ARTIFACTS / "web-search.png"), full_page=True)

            # An error reaches the person in words, not as JSON.
            page.set_input_files("#query-file", str(not_an_image))
            message = page.locator("#message")
            expect(message).to_be_visible()
            expect(message).to_contain_text("The service could not use that input.")
            assert "{" not in message.inner_text()
        finally:
            browser.close()


@pytest.mark.slow
def test_the_api_docs_render_offline_in_chromium(server: str) -> None:
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's Chromium is missing at {CHROMIUM}: run `make browser`")
    from playwright.sync_api import expect, sync_playwright

    elsewhere: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: None if r.url.startswith(server) else elsewhere.append(r.url))
            page.set_default_timeout(60_000)
            page.goto(f"{server}/docs")
            # Swagger UI read the OpenAPI 3.1 document and lists the endpoints.
            expect(page.locator(".opblock-summary-path", has_text="/search").first).to_be_visible()
            expect(page.locator(".opblock")).not_to_have_count(0)
        finally:
            browser.close()
    assert not [url for url in elsewhere if not url.startswith(("data:", f"blob:{server}"))], elsewhere
