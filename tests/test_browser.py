"""The report and the serve page in a real browser: headless Chromium (Debian's package) driven
by Playwright. Skipped, with the reason, where either is missing; `.ci/run` installs both.
Screenshots go to ``$SEQLAB_SCREENSHOTS`` when it is set, else to the test's directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install "
                                 "chromium)")]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("SEQLAB_SCREENSHOTS") or tmp_path)


def test_the_report_shows_and_filters_the_errors(browser, tmp_path):
    from seqlab.cli import main
    from test_report import fake_ner_run

    run = fake_ner_run(tmp_path)
    assert main(["report", str(run)]) == 0
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto((run / "report_test.html").as_uri())
    sents = page.locator(".sent")
    assert sents.count() == 3
    # gold and predicted entities are highlighted, each with its type
    assert page.locator("mark.ent[data-type=ORG]").count() >= 3
    assert page.locator(".sent").first.locator("mark.ent").first.is_visible()
    page.select_option("#fcat", "missed")
    assert page.locator(".sent:visible").count() == 1
    assert "Anna" in page.locator(".sent:visible").inner_text()
    page.select_option("#fcat", "")
    page.select_option("#ftype", "LOC")
    assert page.locator(".sent:visible").count() == 1
    page.locator("#ftext").fill("Peter")
    assert page.locator(".sent:visible").count() == 0
    assert page.locator("#shown").inner_text() == "0"
    page.screenshot(path=str(_shots(tmp_path) / "report.png"), full_page=True)
    page.close()


@pytest.mark.slow
def test_the_serve_page_highlights_typed_text(browser, tmp_path, served_run):
    from test_serve import start_server

    proc, url = start_server(served_run)
    try:
        page = browser.new_page(viewport={"width": 900, "height": 500})
        page.goto(url + "/")
        page.fill("#text", "Peter Blackburn visited Germany .\nEU rejects German call")
        page.click("#go")
        page.wait_for_selector("#out p")
        marks = page.locator("#out mark.ent")
        assert marks.count() >= 1
        first = marks.first
        assert first.get_attribute("data-type") in {"PER", "LOC", "ORG", "MISC"}
        assert page.locator("#out p").count() == 2
        page.screenshot(path=str(_shots(tmp_path) / "serve.png"))
        # an error is shown, not swallowed
        page.fill("#text", "x" * 20_000)
        page.click("#go")
        page.wait_for_selector("#out .err")
        assert "at most" in page.locator("#out .err").inner_text()
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
