"""Render a report card (or any HTML file) in headless Chromium and save a PNG screenshot.

    apt-get install chromium          # Debian's package; not needed for anything else in tunekit
    .venv/bin/python scripts/screenshot_report.py tunekit-workspace/runs/RUN/report.html [out.png]

Proof that the self-contained HTML renders in a real browser with its plots, and a picture to
paste into a review.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 5000) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("no Chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={out.resolve()}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    if not out.is_file() or out.stat().st_size == 0:
        sys.exit(f"Chromium wrote no screenshot for {page}")
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    page = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else page.with_suffix(".png")
    print(screenshot(page, out))
