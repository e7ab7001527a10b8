"""The ``ecrcopy copy`` command as a user runs it: exit codes, one-line errors, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecrcopy.testing import Registry, TokenServer, corrupt_blob, fetch_manifest, free_port, oci_image, oci_index, push

from .conftest import DST_CREDS, DST_PASSWORD, DST_USER, SRC_CREDS, SRC_PASSWORD, SRC_USER


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ECRCOPY_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ecrcopy", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


CRED_ENV = {
    "ECRCOPY_SRC_CREDS": f"{SRC_USER}:{SRC_PASSWORD}",
    "ECRCOPY_DEST_CREDS": f"{DST_USER}:{DST_PASSWORD}",
}


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert SRC_PASSWORD not in text
        assert DST_PASSWORD not in text
        assert "eyJ" not in text  # no JWT (header starts with {"… -> eyJ…)
        assert "Basic " not in text


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ecrcopy: error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_copy_ok_exit_0_with_report(tmp_path: Path, source: Registry, gitlab: Registry) -> None:
    push(source.url, "team/app", oci_image([1000], seed=1), "v1", auth=SRC_CREDS)
    push(
        source.url, "team/app", oci_index([oci_image([1100], seed=2), oci_image([1200], seed=3)]), "v2", auth=SRC_CREDS
    )
    push(source.url, "team/app", oci_image([1300], seed=4), "dev-1", auth=SRC_CREDS)
    report_path = tmp_path / "out" / "report.json"

    proc = run_cli(
        "copy",
        f"{source.host}/team/app",
        f"{gitlab.host}/group/project/app",
        "--tags",
        "v[0-9]+",
        "--report",
        str(report_path),
        env=CRED_ENV,
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.strip().splitlines()
    assert len([line for line in lines if line.startswith("copied ")]) == 2  # one plain line per image
    assert "2 images: 2 copied, 0 skipped, 0 failed" in lines[-1]
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert report["totals"]["copied"] == 2
    assert {i["status"] for i in report["images"]} == {"copied"}
    assert {
        "copied",
        "skipped",
        "failed",
        "blobs_uploaded",
        "blobs_mounted",
        "blobs_existing",
        "bytes_uploaded",
    } <= set(report["totals"])
    assert_no_secrets(proc.stdout, proc.stderr, report_path.read_text())
    assert fetch_manifest(gitlab.url, "group/project/app", "v2", auth=DST_CREDS)[2] == report["images"][1]["digest"]

    again = run_cli("copy", f"{source.host}/team/app", f"{gitlab.host}/group/project/app", "--tag", "v1", env=CRED_ENV)
    assert again.returncode == 0
    assert again.stdout.startswith("skipped ")


def test_failed_image_exit_1(tmp_path: Path, source: Registry, gitlab: Registry) -> None:
    bad = oci_image([5000], seed=9)
    push(source.url, "team/app", oci_image([4000], seed=8), "good", auth=SRC_CREDS)
    push(source.url, "team/app", bad, "bad", auth=SRC_CREDS)
    corrupt_blob(source, bad.layers[0].digest)
    report_path = tmp_path / "r.json"

    proc = run_cli(
        "copy",
        f"{source.host}/team/app",
        f"{gitlab.host}/group/project/app",
        "--report",
        str(report_path),
        "--src-creds",
        f"{SRC_USER}:{SRC_PASSWORD}",
        env={"ECRCOPY_DEST_CREDS": f"{DST_USER}:{DST_PASSWORD}"},
    )

    assert proc.returncode == 1, proc.stderr
    assert "1 failed" in proc.stdout
    assert "FAILED" in proc.stdout and bad.layers[0].digest in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    failed = [i for i in report["images"] if i["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["reason"] == "digest_mismatch"
    assert_no_secrets(proc.stdout, proc.stderr, report_path.read_text())


def test_wrong_destination_password_exit_2_one_line(
    source: Registry, gitlab: Registry, tokens: TokenServer, tmp_path: Path
) -> None:
    push(source.url, "team/app", oci_image([1000], seed=1), "v1", auth=SRC_CREDS)
    wrong = "wrong-Secret-9a8b7c"
    proc = run_cli(
        "copy",
        f"{source.host}/team/app",
        f"{gitlab.host}/group/project/app",
        "--report",
        str(tmp_path / "r.json"),
        env={"ECRCOPY_SRC_CREDS": f"{SRC_USER}:{SRC_PASSWORD}", "ECRCOPY_DEST_CREDS": f"{DST_USER}:{wrong}"},
    )
    assert proc.returncode == 2
    line = assert_one_line_error(proc)
    assert "rejected" in line and DST_USER in line
    assert wrong not in proc.stdout + proc.stderr
    assert_no_secrets(proc.stdout, proc.stderr)
    # fail fast: one attempt at the realm, not a retry storm
    assert len([r for r in tokens.requests if not r.ok]) == 1
    assert gitlab.writes() == []


def test_wrong_source_password_exit_2(source: Registry, gitlab: Registry) -> None:
    proc = run_cli(
        "copy",
        f"{source.host}/team/app:v1",
        f"{gitlab.host}/group/project/app",
        env={"ECRCOPY_SRC_CREDS": f"{SRC_USER}:nope-Secret", "ECRCOPY_DEST_CREDS": f"{DST_USER}:{DST_PASSWORD}"},
    )
    assert proc.returncode == 2
    line = assert_one_line_error(proc)
    assert "credentials rejected" in line
    assert "nope-Secret" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["copy", "127.0.0.1:1/Team/App", "127.0.0.1:1/x"], "invalid repository name"),
        (["copy", "127.0.0.1:1/a:bad tag", "127.0.0.1:1/x"], "invalid"),
        (["copy", "127.0.0.1:1/a", "127.0.0.1:1/b", "--on-conflict", "maybe"], "invalid choice"),
        (["copy", "127.0.0.1:1/a"], "required"),
        (["copy", "127.0.0.1:1/a", "127.0.0.1:1/b", "--tags", "("], "invalid tag pattern"),
        (["copy", "127.0.0.1:1/a", "127.0.0.1:1/b", "--concurrency", "0"], "at least 1"),
        (["copy", "127.0.0.1:1/a", "127.0.0.1:1/b", "--src-creds", "nocolon"], "USER:PASSWORD"),
        (["frobnicate"], "invalid choice"),
        (["copy", "127.0.0.1:1/a:v1", "127.0.0.1:1/b", "--tag", "v2"], "needs a repository source"),
    ],
)
def test_usage_errors_exit_2(args: list[str], fragment: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = assert_one_line_error(proc)
    assert fragment in line


@pytest.mark.parametrize(
    "reference",
    [
        "user:Hunter2-pw@127.0.0.1:1/team/app",
        "https://user:Hunter2-pw@127.0.0.1:1/team/app",
        "user:Hunter2-pw@127.0.0.1:1/team/app@sha256:" + "a" * 64,
        "us@er:Hunter2-pw@127.0.0.1:1/team/app:v1",
    ],
)
def test_credentials_in_a_reference_are_refused_without_echoing_them(reference: str) -> None:
    for args in (["copy", reference, "127.0.0.1:1/x"], ["copy", "127.0.0.1:1/x", reference]):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = assert_one_line_error(proc)
        assert "credentials do not belong in an image reference" in line, line
        assert "Hunter2" not in proc.stdout + proc.stderr
        assert "***@127.0.0.1:1/team/app" in line


def test_unreachable_registry_exit_2() -> None:
    port = free_port()
    proc = run_cli("copy", f"127.0.0.1:{port}/a", f"127.0.0.1:{port}/b", env=CRED_ENV)
    assert proc.returncode == 2
    line = assert_one_line_error(proc)
    assert "cannot reach registry" in line


def test_credentials_from_docker_config(tmp_path: Path, source: Registry, gitlab: Registry) -> None:
    import base64

    push(source.url, "team/app", oci_image([1000], seed=1), "v1", auth=SRC_CREDS)
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    source.host: {"auth": base64.b64encode(f"{SRC_USER}:{SRC_PASSWORD}".encode()).decode()},
                    gitlab.host: {"username": DST_USER, "password": DST_PASSWORD},
                }
            }
        )
    )
    proc = run_cli(
        "copy", f"{source.host}/team/app:v1", f"{gitlab.host}/g/p/app", env={"DOCKER_CONFIG": str(config_dir)}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("copied ")
    assert_no_secrets(proc.stdout, proc.stderr)


def test_debug_shows_traceback_for_fatal_errors() -> None:
    port = free_port()
    proc = run_cli("copy", f"127.0.0.1:{port}/a", f"127.0.0.1:{port}/b", "--debug", env=CRED_ENV)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ecrcopy: error: ")


def test_missing_source_repository_exit_2(source: Registry, gitlab: Registry) -> None:
    proc = run_cli("copy", f"{source.host}/no/such", f"{gitlab.host}/g/p/x", env=CRED_ENV)
    assert proc.returncode == 2
    assert "not found" in assert_one_line_error(proc)


def test_blob_cache_lets_a_later_run_mount(tmp_path: Path, source: Registry, gitlab: Registry) -> None:
    """One CLI run per repository: the second mounts the shared layers the first uploaded."""
    from ecrcopy.testing import Blob

    base = [Blob.generated(200_000, seed=71), Blob.generated(100_000, seed=72)]
    push(source.url, "team/a", oci_image([*base, 1000], seed=1), "v1", auth=SRC_CREDS)
    push(source.url, "team/b", oci_image([*base, 2000], seed=2), "v1", auth=SRC_CREDS)
    cache = tmp_path / "hints.json"
    first = run_cli("copy", f"{source.host}/team/a", f"{gitlab.host}/g/p/a", "--blob-cache", str(cache), env=CRED_ENV)
    assert first.returncode == 0, first.stderr
    assert cache.exists()
    gitlab.reset()
    second = run_cli("copy", f"{source.host}/team/b", f"{gitlab.host}/g/p/b", "--blob-cache", str(cache), env=CRED_ENV)
    assert second.returncode == 0, second.stderr
    assert len(gitlab.mounts()) == 2 and gitlab.blob_uploads() == 2  # base layers mounted; own layer + config
    assert "2 mounted" in second.stdout

    gitlab.reset()
    third = run_cli("copy", f"{source.host}/team/b", f"{gitlab.host}/g/p/c", "--no-blob-cache", env=CRED_ENV)
    assert third.returncode == 0
    assert gitlab.mounts() == [] and gitlab.blob_uploads() == 4


def test_stale_or_corrupt_blob_cache_is_harmless(tmp_path: Path, source: Registry, gitlab: Registry) -> None:
    image = oci_image([3000], seed=3)
    push(source.url, "team/a", image, "v1", auth=SRC_CREDS)
    cache = tmp_path / "hints.json"
    stale = {"version": 1, "hosts": {gitlab.host: {b.digest: ["g/p/gone"] for b in image.blobs}}}
    cache.write_text(json.dumps(stale))
    proc = run_cli("copy", f"{source.host}/team/a", f"{gitlab.host}/g/p/a", "--blob-cache", str(cache), env=CRED_ENV)
    assert proc.returncode == 0, proc.stderr
    assert gitlab.blob_uploads() == 2  # the mounts were refused (202), the blobs uploaded through the session
    cache.write_text("{not json")
    again = run_cli("copy", f"{source.host}/team/a", f"{gitlab.host}/g/p/x", "--blob-cache", str(cache), env=CRED_ENV)
    assert again.returncode == 0, again.stderr
    # a corrupt cache is ignored with one warning naming it, then rewritten cleanly; no temporary file is left
    assert again.stderr.splitlines() == [
        f"WARNING ecrcopy: ignoring unreadable blob location cache {cache} (JSONDecodeError)"
    ]
    assert json.loads(cache.read_text())["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".blob-locations-")) == []
