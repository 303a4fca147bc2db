"""The page manages a collection, in Debian's Chromium: browse 200 images page by page, filter, edit, delete,
"more like this", survive a busy service, two per row on a phone; screenshots go to test-artifacts/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.app.test_web import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.helpers.images import image_bytes
from tests.helpers.server import serve_in_thread
from tests.helpers.settings import tiny_settings

N = 200


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server (tiny backbone) in a thread, holding N images named cat-i.jpg / dog-i.jpg."""
    settings: Settings = tiny_settings(tmp_path_factory.mktemp("manage"))
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        for i in range(N):
            kind = "cat" if i % 2 == 0 else "dog"
            response = http.post(
                "/images",
                files={"file": (f"{kind}-{i}.jpg", image_bytes(1000 + i), "image/jpeg")},
                data={"metadata": json.dumps({"n": i, "kind": kind})},
            )
            assert response.status_code == 201, response.text
        yield url


def api(url: str, path: str, **params: Any) -> Any:
    return httpx.get(f"{url}{path}", params=params, timeout=30).json()


@pytest.mark.slow
def test_browse_filter_edit_delete_and_more_like_this(served: str, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Debian's Chromium is missing at {CHROMIUM}: run `make browser` (apt-get install chromium)"
        )
    from playwright.sync_api import Route, expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shots = ARTIFACTS / "manage"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            asked: list[str] = []
            page.on("request", lambda request: asked.append(request.url))
            page.goto(served)
            tiles = page.locator("#browse-grid .tile")

            # Page by page, newest first.
            expect(page.locator("#browse-summary")).to_contain_text(f"{N} images match; showing 1\u201324")
            expect(tiles).to_have_count(24)
            expect(tiles.first).to_have_attribute("data-id", str(N))
            page.screenshot(path=str(shots / "1-browse.png"), full_page=True)
            page.click("#browse-next")
            page.click("#browse-next")
            expect(page.locator("#browse-page")).to_have_text("page 3 of 9")
            expect(tiles.first).to_have_attribute("data-id", str(N - 48))
            page.click("#browse-prev")
            expect(tiles.first).to_have_attribute("data-id", str(N - 24))
            seen = set()
            page.click("#browse-prev")
            expect(tiles.first).to_have_attribute("data-id", str(N))
            for _ in range(9):
                seen |= {tiles.nth(i).get_attribute("data-id") for i in range(tiles.count())}
                if page.locator("#browse-next").is_disabled():
                    break
                first = tiles.first.get_attribute("data-id")
                page.click("#browse-next")
                expect(tiles.first).not_to_have_attribute("data-id", first or "")
            assert len(seen) == N, "every image once, over all the pages"

            # Filter by path and metadata.
            page.fill("#browse-prefix", "cat-")
            page.fill("#browse-filter", json.dumps({"n": {"$lt": 10}}))
            page.click("#browse-apply")
            expect(page.locator("#browse-summary")).to_contain_text("5 images match")
            expect(tiles).to_have_count(5)
            expect(tiles.first.locator(".name")).to_have_text("cat-8.jpg")
            page.screenshot(path=str(shots / "2-filtered.png"), full_page=True)

            # Open one full size and edit its metadata (a key removed, one added).
            tiles.first.locator(".hit").click()
            expect(page.locator("#detail")).to_be_visible()
            expect(page.locator("#detail-path")).to_have_text("cat-8.jpg")
            page.wait_for_function("document.getElementById('detail-image').naturalWidth > 0")
            page.fill("#detail-metadata", json.dumps({"n": 8, "sku": "X-1"}))
            page.click("#detail-save")
            expect(page.locator("#detail-status")).to_have_text("Saved.")
            page.screenshot(path=str(shots / "3-detail.png"))
            edited = next(i for i in api(served, "/images", filter='{"n": 8}')["images"])
            assert edited["metadata"] == {"n": 8, "sku": "X-1"}

            # More like this, from the detail view: ten results, the image itself not among them.
            page.click("#detail-more")
            results = page.locator("#results .hit")
            expect(results).to_have_count(10)
            expect(page.locator("#results-summary")).to_contain_text("most like cat-8.jpg")
            ids = [results.nth(i).get_attribute("data-id") for i in range(10)]
            assert str(edited["id"]) not in ids
            page.screenshot(path=str(shots / "4-more-like-this.png"), full_page=True)

            # Select two and delete them.
            page.fill("#browse-prefix", "")
            page.fill("#browse-filter", "")
            page.click("#browse-apply")
            expect(page.locator("#browse-summary")).to_contain_text(f"{N} images match")
            doomed = [tiles.nth(i).get_attribute("data-id") for i in (1, 2)]
            tiles.nth(1).locator(".select").check()
            tiles.nth(2).locator(".select").check()
            expect(page.locator("#browse-delete")).to_have_text("Delete 2 selected")
            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#browse-delete")
            expect(page.locator("#browse-summary")).to_contain_text(f"{N - 2} images match")
            assert api(served, "/stats")["count"] == N - 2
            assert all(httpx.get(f"{served}/images/{i}").status_code == 404 for i in doomed)

            # A busy service: the first search answers 503 + Retry-After; the page says so and retries.
            refused: list[str] = []

            def busy_once(route: Route) -> None:
                if not refused:
                    refused.append(route.request.url)
                    route.fulfill(
                        status=503,
                        headers={"Retry-After": "1", "Content-Type": "application/json"},
                        body=json.dumps({"error": "busy", "detail": "every inference slot is taken"}),
                    )
                else:
                    route.continue_()

            page.route("**/search", busy_once)
            tiles.first.locator(".hit").click()
            page.click("#detail-more")
            expect(page.locator("#message-text")).to_contain_text("busy, retrying")
            page.screenshot(path=str(shots / "5-busy.png"))
            expect(results).to_have_count(10)
            expect(page.locator("#message")).to_be_hidden()
            assert refused, "the forced 503 was served"
            page.unroute("**/search")

            # An upload query, then a file that is no image: the error clears the results and the preview.
            query = tmp_path / "query.jpg"
            query.write_bytes(image_bytes(1003))
            page.set_input_files("#query-file", str(query))
            expect(results).to_have_count(10)
            expect(results.first.locator(".score")).to_have_text("#1 · 1.000")
            bad = tmp_path / "notes.jpg"
            bad.write_text("not a picture")
            page.set_input_files("#query-file", str(bad))
            expect(page.locator("#message-text")).to_contain_text("could not use")
            expect(results).to_have_count(0)
            expect(page.locator("#preview")).to_be_hidden()
            assert not [u for u in asked if u.endswith("/denoise")], "no autoencoder: /denoise is never asked"

            # A phone: two results per row.
            page.set_viewport_size({"width": 390, "height": 844})
            page.set_input_files("#query-file", str(query))
            expect(results).to_have_count(10)
            boxes = [results.nth(i).bounding_box() for i in range(3)]
            assert all(boxes)
            first_row = [b for b in boxes if b and abs(b["y"] - boxes[0]["y"]) < 1]  # type: ignore[index]
            assert len(first_row) == 2, boxes
            page.screenshot(path=str(shots / "6-phone.png"), full_page=True)
        finally:
            browser.close()
