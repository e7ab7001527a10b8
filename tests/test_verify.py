"""``ecrcopy verify``: the sign-off of a migration. Read-only; exit 0 identical, 1 different, 2 usage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import ecrcopy
from ecrcopy import ALLOWED_ACTIONS
from ecrcopy.testing import EcrEmulator, GitLabEmulator, Registry, oci_image, push
from tests.test_migrate import cli_env, migrate
from tests.test_migrate_everything import seed_signed
from tests.test_referrers import copy, seed_without_api, signed_corpus

from .conftest import DST_CREDS, SRC_CREDS


def verify(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecrcopy", "verify", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def repo_dir(registry: Registry, repo: str) -> Path:
    return registry.data_dir / "docker" / "registry" / "v2" / "repositories" / repo / "_manifests"


def delete_tag(registry: Registry, repo: str, tag: str) -> None:
    shutil.rmtree(repo_dir(registry, repo) / "tags" / tag)


def unlink_manifest(registry: Registry, repo: str, digest: str) -> None:
    """The repository forgets a manifest (HEAD by digest answers 404), as after a garbage collection."""
    shutil.rmtree(repo_dir(registry, repo) / "revisions" / "sha256" / digest.split(":")[1])


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {
        image["destination"].rsplit("/", 2)[-2] + "/" + image["destination"].rsplit("/", 1)[1]: image["status"]
        for image in report["images"]
    }


def test_verify_after_migrate_then_damage(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gl") as gl:
        objs = seed_signed(ecr, "shop/api")
        ecr.add_image("shop/web", oci_image([800], seed=61), ["v1", "stable"])
        ecr.add_image("shop/web", oci_image([810], seed=62), ["v2"])
        ecr.add_image("tools/ci", oci_image([820], seed=63), ["latest"])
        env = cli_env(ecr, gl)
        done = migrate("--verify", "--deep", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "verify (deep): identical" in done.stdout

        ecr.reset_calls()
        gl.registry.reset()
        clean = verify("--deep", "--report", str(tmp_path / "clean.json"), "--junit", str(tmp_path / "c.xml"), env=env)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        report = json.loads((tmp_path / "clean.json").read_text())
        assert report["ok"] is True and report["deep"] is True
        assert report["totals"]["identical"] == report["totals"]["images"] == 6
        assert report["totals"]["checked"] > 20 and report["totals"]["absent"] == 0
        # read-only: nothing written at the destination, only read-only ECR actions
        assert gl.registry.writes() == []
        assert {r.method for r in gl.registry.requests()} <= {"GET", "HEAD"}
        assert set(ecr.calls) <= set(ALLOWED_ACTIONS)
        ET.fromstring((tmp_path / "c.xml").read_text())

        base = f"{gl.project_path}"
        delete_tag(gl.registry, f"{base}/shop/web", "v2")  # missing
        push(gl.registry.url, f"{base}/shop/web", oci_image([830], seed=64), "stable", auth=gl.credentials)  # different
        amd = objs["amd"]
        unlink_manifest(gl.registry, f"{base}/shop/api", amd.digest)  # a child of v1
        unlink_manifest(gl.registry, f"{base}/shop/api", objs["single_sig"].digest)  # a referrer of v2

        gl.registry.reset()
        shallow = verify("--report", str(tmp_path / "shallow.json"), env=env)
        assert shallow.returncode == 1, shallow.stdout + shallow.stderr
        got = statuses(json.loads((tmp_path / "shallow.json").read_text()))
        assert got == {
            "shop/api:v1": "identical",
            "shop/api:v2": "identical",
            "shop/web:v1": "identical",
            "shop/web:stable": "different",
            "shop/web:v2": "missing",
            "tools/ci:latest": "identical",
        }
        assert "MISSING" in shallow.stdout and "DIFFERENT" in shallow.stdout

        deep = verify("--deep", "--report", str(tmp_path / "deep.json"), "--junit", str(tmp_path / "d.xml"), env=env)
        assert deep.returncode == 1
        found = json.loads((tmp_path / "deep.json").read_text())
        by = {
            image["destination"].rsplit(":", 1)[1]: image
            for image in found["images"]
            if "shop/api" in image["destination"]
        }
        assert by["v1"]["status"] == "incomplete"
        assert f"manifest {amd.digest}" in by["v1"]["missing"]
        assert by["v2"]["status"] == "incomplete"
        assert any(objs["single_sig"].digest in m and m.startswith("referrer") for m in by["v2"]["missing"])
        junit = ET.fromstring((tmp_path / "d.xml").read_text())
        suite = junit.find("testsuite")
        assert suite is not None and suite.get("failures") == "4" and suite.get("tests") == "6"

        # the selection flags of migrate work: the damaged repositories left out, the rest is identical
        rest = verify("--deep", "--exclude", "shop/.*", env=env)
        assert rest.returncode == 0, rest.stdout
        assert "1 images, 1 identical" in rest.stdout
        only_web_v1 = verify("--include", "shop/web", "--tags", "v1", env=env)
        assert only_web_v1.returncode == 0, only_web_v1.stdout
        assert gl.registry.writes() == []


def test_verify_archived_images_and_usage_errors(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gl") as gl:
        live = oci_image([300], seed=65)
        old = oci_image([310], seed=66)
        ecr.add_image("app", live, ["v2"])
        ecr.add_image("app", old, ["v1"])
        ecr.archive_image("app", old.digest)
        env = cli_env(ecr, gl)
        assert migrate(env=env).returncode == 0

        proc = verify("--report", str(tmp_path / "r.json"), env=env)
        assert proc.returncode == 1  # the destination does not equal the source while v1 is archived
        report = json.loads((tmp_path / "r.json").read_text())
        by = {i["destination"].rsplit(":", 1)[1]: i for i in report["images"]}
        assert by["v2"]["status"] == "identical"
        assert by["v1"]["status"] == "archived" and "update-image-storage-class" in by["v1"]["error"]

        one_only = verify(f"{gl.registry.host}/x", env=env)
        assert one_only.returncode == 2 and "SOURCE and DEST" in one_only.stderr
        assert one_only.stderr.count("\n") == 1


def test_verify_copy_form(source: Registry, gitlab: Registry) -> None:
    objs = signed_corpus()
    seed_without_api(source, "team/app", objs)
    assert copy(source, gitlab).ok
    src, dst = f"{source.host}/team/app", f"{gitlab.host}/group/project/app"

    report = ecrcopy.verify(src, dst, deep=True, source_credentials=SRC_CREDS, destination_credentials=DST_CREDS)
    assert report.ok, report.differences()
    assert sorted(i.destination.rsplit(":", 1)[1] for i in report.images) == ["other", "v1", "v2"]
    assert report.totals.absent == 0 and report.totals.checked > 15

    unlink_manifest(gitlab, "group/project/app", objs["sbom_sig"].digest)  # a signature of the SBOM
    report = ecrcopy.verify(src, dst, deep=True, source_credentials=SRC_CREDS, destination_credentials=DST_CREDS)
    assert not report.ok
    v2 = next(i for i in report.images if i.destination.endswith(":v2"))
    assert v2.status == "incomplete" and any(objs["sbom_sig"].digest in m for m in v2.missing)
    shallow = ecrcopy.verify(src, dst, source_credentials=SRC_CREDS, destination_credentials=DST_CREDS)
    assert shallow.ok  # tags alone are all identical


@pytest.mark.parametrize("args", [["--deep", "--dry-run"], ["--no-such-flag"]])
def test_verify_usage_errors_exit_2(args: list[str]) -> None:
    proc = verify(*args, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
