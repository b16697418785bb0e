"""Headless Chromium for the static dashboard: dump the rendered DOM, take a screenshot.

Flags: without the background-networking ones Chromium stalls on a closed network; a fresh
profile directory per run keeps runs independent.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    raise FileNotFoundError("chromium not found: run bin/setup (apt-get install chromium)")


def _run(page: Path, extra: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *extra]
        cmd.append(page.resolve().as_uri())
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)


def dump_dom(page: Path, timeout_s: float = 90) -> str:
    """The DOM Chromium built from the page, serialized."""
    return _run(page, ["--dump-dom"], timeout_s).stdout


def screenshot(
    page: Path, png: Path, width: int = 1400, height: int = 3200, timeout_s: float = 90
) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    _run(page, [f"--screenshot={png.resolve()}", f"--window-size={width},{height}"], timeout_s)
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {png}")
    return png
