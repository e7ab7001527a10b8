"""What a CI job log shows: GitLab's collapsible sections and a steady progress line. No I/O here.

GitLab renders ``section_start``/``section_end`` markers as a foldable block with the time it took
(https://docs.gitlab.com/ci/jobs/job_logs/#custom-collapsible-sections)::

    \\e[0Ksection_start:<unix seconds>:<name>[collapsed=true]\\r\\e[0K<header>
    ...
    \\e[0Ksection_end:<unix seconds>:<name>\\r\\e[0K

``\\e[0K`` (erase to the end of the line) is the only escape sequence in them: no colour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "eta_seconds",
    "human_duration",
    "human_size",
    "in_gitlab_ci",
    "progress_line",
    "section_end",
    "section_start",
]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_ERASE = "\x1b[0K"


def in_gitlab_ci(env: Mapping[str, str]) -> bool:
    """Whether the process runs in a GitLab CI job (GitLab sets ``GITLAB_CI=true``)."""
    return env.get("GITLAB_CI", "").lower() == "true"


def section_start(name: str, header: str, *, timestamp: int, collapsed: bool = False) -> str:
    """The line that opens section ``name`` (letters, digits, ``_.-``) with ``header`` shown."""
    _check(name)
    option = "[collapsed=true]" if collapsed else ""
    header = " ".join(header.split())  # one line: a newline would end the header
    return f"{_ERASE}section_start:{int(timestamp)}:{name}{option}\r{_ERASE}{header}"


def section_end(name: str, *, timestamp: int) -> str:
    """The line that closes section ``name``."""
    _check(name)
    return f"{_ERASE}section_end:{int(timestamp)}:{name}\r{_ERASE}"


def _check(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid GitLab section name {name!r}: use letters, digits, '_', '.' and '-'")


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Time left at the pace so far; None before the first image is done or when the total is unknown."""
    if done <= 0 or total <= done or elapsed <= 0:
        return 0.0 if total and done >= total else None
    return elapsed / done * (total - done)


def progress_line(
    *, done: int, total: int, failed: int, uploaded: int | None, elapsed: float, failed_word: str = "failed"
) -> str:
    """``progress: 120/160 images, 2 failed, 182.4 MB uploaded, 12.1 MB/s, 1m02s elapsed, ETA 21s``.

    ``uploaded=None`` (a verification, which moves nothing) leaves the bytes and the rate out;
    ``failed_word`` names what the failures are (``differ`` for a verification).
    """
    eta = eta_seconds(done, total, elapsed)
    parts = [f"progress: {done}/{total or '?'} images", f"{failed} {failed_word}"]
    if uploaded is not None:
        rate = uploaded / elapsed if elapsed > 0 else 0.0
        parts += [f"{human_size(uploaded)} uploaded", f"{human_size(rate)}/s"]
    parts += [f"{human_duration(elapsed)} elapsed", f"ETA {human_duration(eta)}" if eta is not None else "ETA unknown"]
    return ", ".join(parts)


def human_size(n: float) -> str:
    """``182.4 MB``: decimal units, as registries and GitLab show sizes."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_duration(seconds: float) -> str:
    """``1h02m03s``, ``4m05s``, ``7s``: whole seconds, never negative."""
    s = max(0, round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
