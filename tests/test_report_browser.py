"""report.html in a real browser: Debian's headless Chromium renders it, every row is on the page, every embedded
plot decodes, and the screenshot is not blank."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the flags that keep Chromium off the network (this machine refuses it) and out of the user's profile
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed; `make test` installs Debian's chromium package")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180, check=True)


def test_report_html_renders_every_row_and_plot(benched, tmp_path):
    url = (benched.folder / "report.html").as_uri()
    dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url).stdout
    for row in [benched.torch, *benched.rows]:
        assert f'id="row-{row.target}"' in dom, row.target
    embedded = (benched.folder / "report.html").read_text().count("data:image/png;base64,")
    assert re.search(r'data-images-loaded="(\d+)"', dom).group(1) == str(embedded)

    shot = tmp_path / "report.png"
    chromium(tmp_path, "--window-size=1280,1600", f"--screenshot={shot}", url)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # text, table borders and plots, not a blank page
