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


def test_each_report_filter_selects_exactly_the_sentences_holding_its_errors(browser, tmp_path):
    """On a nested run: clicking each error pattern shows exactly the sentences that hold it,
    and each type and category of the menus exactly those with an error of both."""
    from seqlab.cli import main
    from seqlab.error_analysis import categorise, pattern
    from test_report import nested_run

    run, rows = nested_run(tmp_path)
    assert main(["report", str(run)]) == 0
    errors = []
    for r in rows:
        gold = [(e["type"], e["start"], e["end"]) for e in r["gold"]]
        pred = [(e["type"], e["start"], e["end"]) for e in r["pred"]]
        bad = [e for e in categorise(gold, pred) if e["category"] != "exact"]
        if bad:
            errors.append(bad)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto((run / "report_test.html").as_uri())
    assert page.locator(".sent").count() == len(errors)
    items = page.locator("ol.patterns li")
    assert items.count() >= 5
    for k in range(items.count()):
        li = items.nth(k)
        p = li.get_attribute("data-pattern")
        want = sum(any(pattern(e) == p for e in bad) for bad in errors)
        li.click()
        assert page.locator(".sent:visible").count() == want == int(li.get_attribute("data-sentences")), p
        assert page.locator("#shown").inner_text() == str(want)
        shown = page.locator(".sent:visible > .tags").all_inner_texts()
        assert all(p in t for t in shown), (p, shown[:3])
    for cat in ("missed", "spurious", "boundary", "type"):
        for typ in ("PER", "LOC", "SURNAME"):
            page.select_option("#fcat", cat)
            page.select_option("#ftype", typ)
            want = sum(any(e["category"] == cat and typ in {x[0] for x in (e["gold"], e["pred"]) if x}
                           for e in bad) for bad in errors)
            assert page.locator(".sent:visible").count() == want, (cat, typ)
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


def test_the_serve_page_draws_nested_entities_inside_their_outer_one(browser, tmp_path):
    """A model-free server whose answer nests (SURNAME inside PER) and crosses (a span over the
    end of another): the page draws the inner entity inside the outer one, names the crossing
    one, and shows a legend."""
    import threading
    import time

    import uvicorn

    from seqlab.serve import ServeOptions, create_app
    from test_serve import EchoPredictor, _free_port

    class Nested(EchoPredictor):
        def predict(self, items):
            return [{"text": t, "entities": [
                {"type": "PER", "start": 0, "end": 13}, {"type": "SURNAME", "start": 7, "end": 13},
                {"type": "LOC", "start": 22, "end": 28}, {"type": "MISC", "start": 25, "end": 34}]}
                for t in items]

    opts = ServeOptions(port=_free_port())
    app = create_app(Nested(), meta={"task": "ner", "head": "echo"}, name="nested",
                     backend="torch", opts=opts)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=opts.port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        page = browser.new_page(viewport={"width": 900, "height": 400})
        page.goto(f"http://127.0.0.1:{opts.port}/")
        page.fill("#text", "Angela Merkel flew to Berlin today")
        page.click("#go")
        page.wait_for_selector("#out p")
        outer = page.locator("#out mark.ent[data-type=PER]")
        inner = outer.locator("mark.ent[data-type=SURNAME]")
        assert outer.count() == 1 and inner.count() == 1
        assert inner.inner_text().startswith("Merkel") and inner.is_visible()
        assert inner.get_attribute("data-depth") == "1"
        assert page.locator("#out mark.ent[data-type=LOC]").count() == 1
        assert page.locator("#out mark.ent[data-type=MISC]").count() == 0
        assert "MISC \u201clin today\u201d" in page.locator("#out .note").inner_text()
        legend = page.locator("#out .legend").inner_text()
        assert all(t in legend for t in ("PER", "SURNAME", "LOC")) and "inside another" in legend
        page.screenshot(path=str(_shots(tmp_path) / "serve-nested.png"))
        page.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
