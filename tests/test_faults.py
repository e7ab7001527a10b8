"""Migrations under injected faults, and credentials that must stay at their origin.

Fault proxies (``ecrcopy.testing.FaultInjector``) sit in front of ECR's data plane and its S3 stand-in,
GitLab's registry and GitLab's token service; every part behind them is a real registry process or the
emulations' own servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecrcopy.testing import (
    EcrEmulator,
    FaultInjector,
    GitLabEmulator,
    Proxy,
    ProxyRequest,
    ProxyResponse,
    Registry,
    StubServer,
    any_request,
    oci_image,
    push,
)
from tests.conftest import DST_CREDS, DST_PASSWORD, SRC_CREDS, SRC_PASSWORD
from tests.test_migrate import cli_env, migrate
from tests.test_reliability import assert_complete, seed_many

pytestmark = pytest.mark.usefixtures("no_leaked_threads")


def test_thirty_images_migrate_in_one_run_under_faults(tmp_path: Path) -> None:
    """10 % 429 (half with Retry-After), 5 % 503, 3 % cut bodies and a few stalls on every data request;
    20 % of token requests fail; GitLab tokens live 3 s. One run moves everything, every digest right."""
    data = {"429": 0.05, "429-retry-after": 0.05, "503": 0.05, "cut": 0.03, "stall": 0.005}
    # One attempt at a redirected blob is two requests (ECR's data plane, then S3), each with its own
    # fault streak, and the data plane's streak restarts whenever it lets a request through. With at
    # most 2 faults in a row per request, an attempt chain fails at most 8 times before one gets
    # through (2 + 1 + 2 + 1 + 2): 10 attempts always suffice, whatever order the draws come in.
    ecr_faults = FaultInjector(seed=11, rates=data, stall_seconds=3.0, retry_after="1", max_consecutive=2)
    gitlab_faults = FaultInjector(seed=12, rates=data, stall_seconds=3.0, retry_after="1", max_consecutive=2)
    token_faults = FaultInjector(
        seed=13, rates={"503": 0.06, "429": 0.04, "cut": 0.05, "no-response": 0.05}, applies=any_request
    )
    with (
        EcrEmulator(tmp_path / "ecr", data_faults=ecr_faults) as ecr,
        GitLabEmulator(
            tmp_path / "gl", token_lifetime=3.0, registry_faults=gitlab_faults, token_faults=token_faults
        ) as gl,
    ):
        expected = seed_many(ecr, repos=10, tags=3)
        assert len(expected) == 30
        report_path = tmp_path / "report.json"
        proc = migrate(
            "--report",
            str(report_path),
            "--read-timeout",
            "1",
            "--retries",
            "10",
            env=cli_env(ecr, gl),
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        with ecr_faults.paused(), gitlab_faults.paused(), token_faults.paused():
            for (repo, tag), digest in expected.items():
                assert assert_complete(gl, repo, tag) == digest, (repo, tag)
    report = json.loads(report_path.read_text())
    assert report["totals"]["copied"] == 30 and report["totals"]["failed"] == 0
    # the faults happened, and the report counts the retries they cost
    for injector in (ecr_faults, gitlab_faults, token_faults):
        assert sum(injector.injected.values()) > 0, injector.injected
    assert gitlab_faults.injected["429"] + gitlab_faults.injected["429-retry-after"] > 0
    assert token_faults.seen > 0 and sum(token_faults.injected.values()) / token_faults.seen > 0.1
    totals = report["totals"]
    assert totals["retries"] >= 10 and totals["rate_limited"] >= 3, totals
    assert "retries (" in proc.stdout  # the summary line says so too


def test_foreign_upload_location_and_its_realm_never_see_credentials(
    tmp_path: Path, source: Registry, gitlab: Registry
) -> None:
    """A destination answers uploads with a Location on another origin, whose 401 names its own realm:
    no credential of any kind reaches that origin or that realm; the images fail, the run ends."""
    push(source.url, "team/app", oci_image([2000, 3000], seed=5), "v1", auth=SRC_CREDS)
    push(source.url, "team/app", oci_image([4000], seed=6), "v2", auth=SRC_CREDS)
    with StubServer() as realm, StubServer() as foreign:
        foreign.hook = lambda req: ProxyResponse(
            401,
            {
                "WWW-Authenticate": f'Bearer realm="{realm.url}/jwt/auth",service="evil",scope="repository:x:push"',
                "Content-Type": "application/json",
            },
            b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
        )

        def redirect_uploads(req: ProxyRequest) -> ProxyResponse | None:
            if req.method == "POST" and "/blobs/uploads/" in req.path:
                return ProxyResponse(
                    202,
                    {"Location": f"{foreign.url}/v2/g/p/app/blobs/uploads/evil?_state=abc", "Range": "0-0"},
                )
            return None

        with Proxy(gitlab.url, hook=redirect_uploads) as gate:
            report_path = tmp_path / "report.json"
            env = {
                "ECRCOPY_SRC_USERNAME": SRC_CREDS[0],
                "ECRCOPY_SRC_PASSWORD": SRC_PASSWORD,
                "ECRCOPY_DEST_USERNAME": DST_CREDS[0],
                "ECRCOPY_DEST_PASSWORD": DST_PASSWORD,
            }
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ecrcopy",
                    "copy",
                    f"{source.host}/team/app",
                    f"{gate.host}/g/p/app",
                    "--report",
                    str(report_path),
                    "--retries",
                    "2",
                    "--debug",
                ],
                capture_output=True,
                text=True,
                env={**_base_env(), **env},
                timeout=120,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        assert foreign.captured, "the client should have tried the foreign Location"
        for request in foreign.captured:
            assert "authorization" not in request.headers and "cookie" not in request.headers
        assert realm.captured == []
    report = json.loads(report_path.read_text())
    assert {i["status"] for i in report["images"]} == {"failed"}
    assert all("another origin" in i["error"] for i in report["images"]), report["images"]
    for text in (proc.stdout, proc.stderr, report_path.read_text()):
        assert SRC_PASSWORD not in text and DST_PASSWORD not in text


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ECRCOPY_", "DOCKER_CONFIG"))} | {
        "DOCKER_CONFIG": "/nonexistent-docker-config"
    }
