"""What a CI job log shows: GitLab's collapsible sections, a steady progress line, no colour; and
on a terminal, the rich progress display, cleaned up at the end."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecrcopy._cilog import eta_seconds, in_gitlab_ci, progress_line, section_end, section_start
from ecrcopy.testing import EcrEmulator, GitLabEmulator, Registry, oci_image, push

from .conftest import SRC_CREDS
from .test_cli import CRED_ENV, assert_one_line_error, run_cli
from .test_migrate import cli_env

SECTION = re.compile(r"\x1b\[0Ksection_(start|end):(\d+):([A-Za-z0-9_.-]+)(\[collapsed=true\])?\r\x1b\[0K(.*)")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def sections(text: str) -> list[tuple[str, str, bool]]:
    """(start|end, name, collapsed) of every marker line, checked to be well-formed and balanced."""
    found: list[tuple[str, str, bool]] = []
    open_names: list[tuple[str, int]] = []
    for line in text.split("\n"):  # not splitlines(): "\r" is part of a marker
        if "section_" not in line:
            continue
        match = SECTION.fullmatch(line)
        assert match, f"malformed section marker {line!r}"
        kind, stamp, name, collapsed, _header = match.groups()
        found.append((kind, name, collapsed is not None))
        if kind == "start":
            open_names.append((name, int(stamp)))
        else:
            assert open_names and open_names[-1][0] == name, f"section_end:{name} does not close the open section"
            assert int(stamp) >= open_names.pop()[1]
    assert not open_names, f"sections left open: {open_names}"
    return found


def test_section_markers_are_gitlabs() -> None:
    assert section_start("plan", "the plan", timestamp=1700000000, collapsed=True) == (
        "\x1b[0Ksection_start:1700000000:plan[collapsed=true]\r\x1b[0Kthe plan"
    )
    assert section_end("plan", timestamp=1700000001) == "\x1b[0Ksection_end:1700000001:plan\r\x1b[0K"
    assert section_start("copy", "two\nlines", timestamp=1).endswith("two lines")
    with pytest.raises(ValueError, match="section name"):
        section_start("no spaces", "x", timestamp=1)
    assert in_gitlab_ci({"GITLAB_CI": "true"}) and not in_gitlab_ci({}) and not in_gitlab_ci({"CI": "true"})


@given(
    done=st.integers(0, 20_000),
    extra=st.integers(0, 20_000),
    failed=st.integers(0, 100),
    uploaded=st.integers(0, 10**13),
    elapsed=st.floats(0, 10**6, allow_nan=False),
)
def test_progress_line_is_one_plain_line(done: int, extra: int, failed: int, uploaded: int, elapsed: float) -> None:
    line = progress_line(done=done, total=done + extra, failed=failed, uploaded=uploaded, elapsed=elapsed)
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith(f"progress: {done}/{done + extra or '?'} images, {failed} failed, ")
    eta = eta_seconds(done, done + extra, elapsed)
    if extra == 0 and done:
        assert eta == 0.0
    elif done and elapsed > 0:
        assert eta == pytest.approx(elapsed / done * extra)
    else:
        assert eta is None and line.endswith("ETA unknown")


def run_raw(*args: str, env: dict[str, str], inherit: bool = True) -> tuple[int, str, str]:
    """The CLI's exit status and output exactly as written (no newline translation: "\r" stays)."""
    full_env = ({k: v for k, v in os.environ.items() if not k.startswith("ECRCOPY_")} if inherit else {}) | env
    proc = subprocess.run(
        [sys.executable, "-m", "ecrcopy", *args],
        capture_output=True,
        env=full_env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def seed_tags(source: Registry, n: int) -> None:
    for i in range(n):
        push(source.url, "team/app", oci_image([200_000 + i], seed=300 + i), f"v{i}", auth=SRC_CREDS)


def test_ci_log_has_sections_steady_progress_lines_and_no_colour(source: Registry, gitlab: Registry) -> None:
    seed_tags(source, 12)
    env = {**CRED_ENV, "GITLAB_CI": "true", "NO_COLOR": "1"}
    # one image at a time: the copy lasts several progress intervals
    status, stdout, stderr = run_raw(
        "copy",
        f"{source.host}/team/app",
        f"{gitlab.host}/group/project/app",
        "--progress-interval",
        "0.05",
        "--concurrency",
        "1",
        env=env,
    )
    assert status == 0, stderr
    assert [(k, n) for k, n, _ in sections(stdout)] == [
        ("start", "copy"),
        ("end", "copy"),
        ("start", "summary"),
        ("end", "summary"),
    ]
    progress = [line for line in stdout.splitlines() if line.startswith("progress: ")]
    assert len(progress) >= 2, stdout
    done = [int(line.split()[1].split("/")[0]) for line in progress]
    assert done == sorted(done)  # steady, never backwards
    assert progress[-1].startswith("progress: 12/12 images, 0 failed")  # the repository's end
    bad = [x for x in progress if not re.search(r"/(12|\?) images, 0 failed, .* uploaded, .*/s, .* elapsed, ETA ", x)]
    assert not bad, bad
    assert not any("blob" in line.lower() for line in progress)
    assert not COLOUR.search(stdout + stderr)


def test_verify_prints_progress_lines_of_its_own(source: Registry, gitlab: Registry) -> None:
    seed_tags(source, 12)
    env = {**CRED_ENV, "GITLAB_CI": "true", "NO_COLOR": "1"}
    src, dst = f"{source.host}/team/app", f"{gitlab.host}/group/project/app"
    assert run_raw("copy", src, dst, "--tag", "v0", "--tag", "v1", env=env)[0] == 0  # 10 of 12 are missing
    # 40 requests a second: the check of 12 tags (with --deep) lasts several progress intervals
    status, stdout, stderr = run_raw(
        "verify", src, dst, "--deep", "--progress-interval", "0.05", "--max-requests-per-second", "*=40", env=env
    )
    assert status == 1, stderr
    assert [(k, n) for k, n, _ in sections(stdout)] == [
        ("start", "verify"),
        ("end", "verify"),
        ("start", "summary"),
        ("end", "summary"),
    ]
    progress = [line for line in stdout.splitlines() if line.startswith("progress: ")]
    assert len(progress) >= 3, stdout
    done = [int(line.split()[1].split("/")[0]) for line in progress]
    assert done == sorted(done)
    assert progress[-1].startswith("progress: 12/12 images, 10 differ, "), progress  # the line at the end
    assert all(re.fullmatch(r"progress: \d+/(12|\?) images, \d+ differ, .* elapsed, ETA .*", x) for x in progress)
    assert not any("uploaded" in x for x in progress)  # a verification moves nothing
    assert not COLOUR.search(stdout + stderr)


def test_without_gitlab_ci_there_are_no_markers_and_zero_means_no_progress_lines(
    source: Registry, gitlab: Registry
) -> None:
    seed_tags(source, 3)
    proc = run_cli(
        "copy", f"{source.host}/team/app", f"{gitlab.host}/group/project/app", "--progress-interval", "0", env=CRED_ENV
    )
    assert proc.returncode == 0, proc.stderr
    assert "section_" not in proc.stdout and "\x1b" not in proc.stdout
    assert not [line for line in proc.stdout.splitlines() if line.startswith("progress: ")]
    assert len([line for line in proc.stdout.splitlines() if line.startswith("copied ")]) == 3


def test_migration_log_folds_the_plan_and_has_every_phase(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gitlab") as gl:
        ecr.add_image("app/a", oci_image([5000], seed=1), ["v1"])
        ecr.add_image("app/b", oci_image([5100], seed=2), ["v1", "v2"])
        env = cli_env(ecr, gl, GITLAB_CI="true", NO_COLOR="1")
        # an interval longer than the run: the progress lines come from each repository's end
        status, stdout, stderr = run_raw("migrate", "--verify", "--progress-interval", "600", env=env, inherit=False)
        assert status == 0, stderr
        progress = [line for line in stdout.splitlines() if line.startswith("progress: ")]
        assert len(progress) == 2, progress  # app/a (one tag) and app/b (two), in either order
        assert progress[-1].startswith("progress: 3/3 images, 0 failed"), progress  # the verify pass adds none
        found = sections(stdout)
        assert [n for k, n, _ in found if k == "start"] == ["copy", "plan", "summary", "verify"]
        assert [n for k, n, c in found if k == "start" and c] == ["plan"]  # only the plan starts folded
        assert not COLOUR.search(stdout)


def test_on_a_terminal_the_rich_display_appears_and_is_cleaned_up(source: Registry, gitlab: Registry) -> None:
    seed_tags(source, 6)
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRCOPY_") and k not in ("NO_COLOR", "GITLAB_CI")}
    env.update(CRED_ENV, TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecrcopy", "copy", f"{source.host}/team/app", f"{gitlab.host}/group/project/app"],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env=env,
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=30) == 0
    os.close(main)
    screen = b"".join(chunks).decode(errors="replace")
    assert "images" in screen and "\x1b[?25l" in screen  # the display drew, cursor hidden
    assert screen.rindex("\x1b[?25h") > screen.rindex("\x1b[?25l")  # and gave the cursor back at the end
    assert "6 images: 6 copied" in screen
    assert "progress: " not in screen  # the plain progress line is for logs only


@pytest.mark.parametrize("value", ["-1", "inf", "nan"])
def test_a_bad_progress_interval_is_one_line_error(value: str) -> None:
    proc = run_cli("copy", "127.0.0.1:1/a", "127.0.0.1:1/b", f"--progress-interval={value}")
    assert proc.returncode == 2
    assert "--progress-interval must be a number of seconds" in assert_one_line_error(proc)


def test_section_headers_carry_no_user_input() -> None:
    """A reference with userinfo is refused; the CI log's header does not echo it first."""
    env = {"GITLAB_CI": "true"}
    status, stdout, _ = run_raw("copy", "alice:s3cret-pw@127.0.0.1:1/r", "127.0.0.1:1/x", env=env)
    assert status == 2
    assert "s3cret-pw" not in stdout
    assert "section_start:" in stdout and "section_end:" in stdout
