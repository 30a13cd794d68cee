"""The search page in headless Chromium (Debian's ``chromium`` package, driven by
playwright's Python package; CI: ``apt-get install -y chromium``)."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from test_search_support import NUM_VIDEOS, built  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian/Ubuntu: apt-get install -y chromium)")


@pytest.fixture
def server(built):
    import uvicorn

    from vop.search.app import create_app
    from vop.search.service import SearchService

    service = SearchService()
    service.add_index(built[1], name="main")
    service.examples = ["a red square moves"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def test_type_a_query_and_see_ranked_results_with_thumbnails(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))  # CSP violations too
            page.goto(server + "/")
            page.fill("#q", "a red square moves to the right")
            page.press("#q", "Enter")
            expect = sync_api.expect
            expect(page.locator(".result")).to_have_count(min(10, NUM_VIDEOS))
            # Every thumbnail strip decoded (naturalWidth > 0 only for a loaded image). Polled
            # from Python: the page's CSP forbids the eval behind wait_for_function.
            deadline = time.monotonic() + 10
            while not page.locator(".result img").evaluate_all(
                    "imgs => imgs.every(img => img.complete && img.naturalWidth > 0)"):
                assert time.monotonic() < deadline, "thumbnails did not load"
                time.sleep(0.05)
            scores = [float(s) for s in page.locator(".result .score").all_inner_texts()]
            assert scores == sorted(scores, reverse=True)
            assert page.locator(".result .path").first.inner_text().startswith("1. ")
            assert "results from main" in page.inner_text("#status")

            page.locator(".result").first.click()  # plays the video
            expect(page.locator("#player")).to_have_class("open")
            src = page.eval_on_selector("#video", "v => v.getAttribute('src')")
            assert src.startswith("/media/") and "index=main" in src

            page.keyboard.press("Escape")
            page.fill("#q", "")
            page.press("#q", "Enter")
            assert "Type a description" in page.inner_text("#status")
            assert errors == []
        finally:
            browser.close()
