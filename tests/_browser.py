"""Headless Chromium (Debian's ``chromium``, installed by ``.ci/setup --test``) for the HTML report tests.

The browser runs with a throw-away profile, no background networking and a proxy on a closed
loopback port, so a page that tried to load anything from the network would fail locally (and
the page's Content-Security-Policy reports such an attempt as a console error, which
:func:`render` returns).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Rendered", "chromium", "render"]

_CONSOLE_RE = re.compile(r":CONSOLE(?:\(\d+\))?(?::\d+)?\] (.*)")


def chromium() -> str:
    """The browser's path; a clear failure (not a skip) when setup did not install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("headless Chromium is needed for the HTML report tests: run .ci/setup --test")


@dataclass
class Rendered:
    screenshot: Path
    pdf: Path | None
    #: what the page logged to the browser console (CSP violations, script errors)
    console: list[str]


def render(page: Path, screenshot: Path, *, width: int = 1100, height: int = 1600, pdf: Path | None = None) -> Rendered:
    """Screenshot ``page`` (and print it to ``pdf``) in headless Chromium; the console messages it logged."""
    console: list[str] = []
    jobs: list[tuple[str, Path]] = [(f"--screenshot={screenshot}", screenshot)]
    if pdf is not None:
        jobs.append((f"--print-to-pdf={pdf}", pdf))
    for action, output in jobs:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            proc = subprocess.run(
                [
                    chromium(),
                    "--headless",
                    "--no-sandbox",  # CI containers run as root
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--proxy-server=127.0.0.1:9",  # nothing leaves the machine
                    "--no-pdf-header-footer",
                    "--enable-logging=stderr",
                    "--v=0",
                    f"--user-data-dir={profile}",
                    f"--window-size={width},{height}",
                    action,
                    page.resolve().as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        assert proc.returncode == 0 and output.is_file(), f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
        console += [m.group(1) for m in map(_CONSOLE_RE.search, proc.stderr.splitlines()) if m]
    return Rendered(screenshot, pdf, console)
