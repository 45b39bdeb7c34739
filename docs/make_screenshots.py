"""Screenshots of the app for README.md and docs/, taken from the real app so they stay true.

    python docs/make_screenshots.py [--out docs/images] [--keep]

Starts ``streamlit run app.py`` on a loopback port with a fresh runs folder, drives it in
Debian's Chromium (``/usr/bin/chromium`` through Playwright, as ``tests/test_browser.py`` does;
no browser is downloaded), starts a run on the built-in sample from the Run page, and writes
``run.png``, ``training.png``, ``clusters.png``, ``review.png`` and ``grid.png`` under ``--out``
(each under 500 KB). About two minutes on a 2-core CPU, most of it the run itself.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000
MAX_BYTES = 500_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(folder: Path) -> tuple[subprocess.Popen, str]:
    """The app on loopback with its runs, review store and data roots in ``folder``."""
    port = free_port()
    env = {
        **os.environ,
        "DYNACOR_RUNS": str(folder / "runs"),
        "DYNACOR_DATA_ROOTS": os.pathsep.join([str(folder), str(ROOT / "sample_data")]),
        "DYNACOR_REVIEW_DB": f"sqlite:///{folder / 'reviews.sqlite'}",
    }
    log = open(folder / "streamlit.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    sys.exit(f"streamlit did not start: {(folder / 'streamlit.log').read_text()[-2000:]}")


def save(page, out: Path, name: str, full_page: bool = False) -> None:
    page.wait_for_timeout(1500)  # let charts and images finish drawing
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    shrink(path)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({path.stat().st_size // 1024} KB)")


def shrink(path: Path) -> None:
    """Keep the file under `MAX_BYTES`: an optimised PNG, then fewer colours, then smaller."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.save(path, optimize=True)
    colours = 256
    while path.stat().st_size > MAX_BYTES and colours >= 64:
        image.quantize(colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        colours //= 2
    while path.stat().st_size > MAX_BYTES:
        image = image.resize((image.width * 4 // 5, image.height * 4 // 5), Image.Resampling.LANCZOS)
        image.quantize(64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def goto(page, url: str, path: str) -> None:
    page.goto(f"{url}/{path}")
    page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=TIMEOUT_MS)


def take(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)

        # 1. Run: the built-in sample is preselected; the defaults run in well under a minute.
        goto(page, url, "")
        page.get_by_text("Past runs").wait_for()
        save(page, out, "run")
        page.get_by_role("button", name="Start run").click()

        # 2. Training, once the run has finished (feature extraction included).
        page.get_by_role("button", name="Review the flagged samples").wait_for(timeout=600_000)
        save(page, out, "training", full_page=True)

        # 3. Clusters: the map of the encoder's representations.
        goto(page, url, "clusters")
        page.locator(".js-plotly-plot").first.wait_for()
        save(page, out, "clusters")

        # 4. Review: the first card, with its candidates and why it was flagged.
        goto(page, url, "review")
        page.get_by_label("Your name (stored with every decision)").fill("screenshots")
        page.get_by_role("button", name="Start reviewing").click()
        page.locator("h4", has_text="id ").first.wait_for()
        page.get_by_text("Nearest in feature space:").first.wait_for()
        save(page, out, "review")

        # 5. Grid: one group of flagged thumbnails (given class -> suggested class). Through the
        # sidebar, so the session keeps the annotator's name.
        page.get_by_test_id("stSidebarNav").get_by_text("Grid", exact=True).click()
        page.get_by_role("button", name=re.compile(r"^Keep .*\(all \d+\)")).first.wait_for()
        page.get_by_test_id("stCheckbox").first.wait_for()
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        save(page, out, "grid")
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="where the PNGs go")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (its path is printed)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is absent: apt-get install chromium (Debian's; no browser is downloaded)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="dynacor-screenshots-"))
    proc, url = start_app(folder)
    try:
        take(url, out)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.keep:
        print(f"the run and its review store: {folder}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
