"""Headless Chromium (Debian's `chromium`) for page tests: DOM dumps and screenshots."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,900",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is missing (Debian package `chromium`, see .ci/apt-packages.txt)")
    pytest.skip("chromium is not installed")


def browse(url: str, *action: str) -> subprocess.CompletedProcess[str]:
    """Run Chromium once with a fresh profile: ``--screenshot=...`` or ``--dump-dom``."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, url],
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        )


def png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as image:
        header = image.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def keep(path: str) -> None:
    """CI can collect the screenshots: WENDELIN_SCREENSHOT_DIR=... pytest ..."""
    if directory := os.environ.get("WENDELIN_SCREENSHOT_DIR"):
        os.makedirs(directory, exist_ok=True)
        shutil.copy(path, directory)
