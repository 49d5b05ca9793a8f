"""The README's pictures of a run's report and of its serve page, taken in headless Chromium.

    python scripts/screenshots.py runs/conll2003-ce            # -> docs/report.png, docs/serve.png

The report is written to a temporary file; the server listens on a free loopback port and is
stopped after the picture.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEXT = ("Peter Blackburn flew from Brussels to Germany for talks with the European Commission .\n"
        "Japan began the defence of their Asian Cup title with a lucky 2-1 win against Syria .")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        report = Path(tmp) / "report.html"
        subprocess.run([sys.executable, "-m", "seqlab.cli", "report", args.run, "--output",
                        str(report)], check=True, cwd=ROOT)
        page = browser.new_page(viewport={"width": 1100, "height": 1300})
        page.goto(report.as_uri())
        page.locator("#errors").scroll_into_view_if_needed()
        page.screenshot(path=str(out / "report.png"), full_page=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "seqlab.cli", "serve", args.run,
                                   "--port", str(port)], cwd=ROOT)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 420})
            for _ in range(600):
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    time.sleep(0.2)
            page.fill("#text", TEXT)
            page.click("#go")
            page.wait_for_selector("#out p")
            page.screenshot(path=str(out / "serve.png"))
        finally:
            server.terminate()
            server.wait(timeout=60)
        browser.close()
    print(f"written {out / 'report.png'} and {out / 'serve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
