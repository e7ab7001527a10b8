"""``ecrcopy migrate`` end to end through the ECR and GitLab emulations (moto + real registries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import yaml

import ecrcopy
from ecrcopy._ecr import EcrApi, inventory
from ecrcopy.testing import (
    Blob,
    EcrEmulator,
    GitLabEmulator,
    ProxyRequest,
    ProxyResponse,
    docker_image,
    docker_manifest_list,
    fetch_manifest,
    free_port,
    oci_image,
    oci_index,
    push,
)

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 6, 1, tzinfo=UTC)
LONG_TAG = "release-" + "x" * 150  # valid in ECR (<= 300 chars), not an OCI tag

#: (ECR repository, tag) -> expected destination path below CI_REGISTRY_IMAGE
EXPECTED = {
    ("web", "v1"): "web",
    ("web", "v2"): "web",
    ("web", "latest"): "web",
    ("team/api", "1.0"): "team/api",
    ("team/api", "multi"): "team/api",
    ("team/backend/worker", "v1"): "team/backend-worker",
    ("legacy/tools", "list"): "legacy/tools",
}


def seed(ecr: EcrEmulator) -> None:
    base = [Blob.generated(120_000, seed=900), Blob.generated(80_000, seed=901)]
    web_v1 = oci_image([*base, 5000], seed=1)
    ecr.add_image("web", web_v1, ["v1"], pushed_at=T0)
    ecr.add_image("web", oci_image([*base, 6000], seed=2), ["v2", "latest"], pushed_at=T0 + timedelta(days=1))
    ecr.add_image("web", oci_image([*base, 6500], seed=3), [], pushed_at=T0 + timedelta(days=2))  # untagged
    ecr.add_image("team/api", docker_image([*base, 7000], seed=4), ["1.0", LONG_TAG], pushed_at=T0)
    ecr.add_image(
        "team/api",
        oci_index(
            [
                oci_image([*base, 8000], seed=5, platform="linux/amd64"),
                oci_image([base[0], 9000], seed=6, platform="linux/arm64"),
            ]
        ),
        ["multi"],
        pushed_at=T0 + timedelta(days=3),
    )
    ecr.add_image("team/backend/worker", oci_image([base[0], 10_000], seed=7), ["v1"], pushed_at=T0)
    ecr.add_image(
        "legacy/tools",
        docker_manifest_list([docker_image([11_000], seed=8), docker_image([12_000], seed=9, platform="linux/arm64")]),
        ["list"],
        pushed_at=T0,
    )


@pytest.fixture
def ecr(tmp_path: Path) -> Iterator[EcrEmulator]:
    with EcrEmulator(tmp_path / "ecr") as emulator:
        seed(emulator)
        emulator.reset_calls()
        yield emulator


@pytest.fixture
def gitlab_ci(tmp_path: Path) -> Iterator[GitLabEmulator]:
    with GitLabEmulator(tmp_path / "gitlab") as emulator:
        yield emulator


def cli_env(ecr: EcrEmulator, gl: GitLabEmulator, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CI_", "ECRCOPY_")) and k not in ("DOCKER_CONFIG",)
    }
    env.update(ecr.env())
    env.update(gl.env())
    env["DOCKER_CONFIG"] = "/nonexistent-docker-config"
    env.update(extra)
    return env


def migrate(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecrcopy", "migrate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def digest_at(gl: GitLabEmulator, path: str, tag: str) -> str:
    return fetch_manifest(gl.registry.url, f"{gl.project_path}/{path}", tag, auth=gl.credentials)[2]


def source_digest(ecr: EcrEmulator, repo: str, tag: str) -> str:
    return fetch_manifest(ecr.data_registry.url, repo, tag)[2]


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ecrcopy: error: ") and "Traceback" not in proc.stderr
    return lines[0]


def test_end_to_end_migration(tmp_path: Path, ecr: EcrEmulator, gitlab_ci: GitLabEmulator) -> None:
    gl = gitlab_ci
    report_path, junit_path = tmp_path / "report.json", tmp_path / "junit.xml"

    proc = migrate("--report", str(report_path), "--junit", str(junit_path), env=cli_env(ecr, gl))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for (repo, tag), path in EXPECTED.items():
        assert digest_at(gl, path, tag) == source_digest(ecr, repo, tag), (repo, tag)
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    statuses = {(i["source"].split("/", 1)[1].split("@")[0], i["status"], i["reason"]) for i in report["images"]}
    assert ("team/api:" + LONG_TAG, "skipped", "invalid_tag") in statuses
    assert report["totals"]["copied"] == len(EXPECTED)
    assert report["plan"]["untagged"] >= 1 and report["plan"]["tags_invalid"] == 1
    # the destination registry's own log agrees with the report
    log = gl.registry
    assert report["totals"]["blobs_uploaded"] == log.blob_uploads()
    assert report["totals"]["blobs_mounted"] == len(log.mounts())
    assert report["totals"]["manifests_pushed"] == len(log.manifest_puts())
    upload_digests = [r.query for r in log.requests() if r.method == "PUT" and r.status == 201 and "digest=" in r.query]
    assert len(upload_digests) == len(set(upload_digests))  # every unique blob uploaded once
    # plain output in CI logs: one line per image and a summary table
    assert len([line for line in proc.stdout.splitlines() if line.startswith("copied ")]) == len(EXPECTED)
    assert "repository" in proc.stdout and "team/backend-worker" in proc.stdout
    # JUnit: one test case per image, parses
    suite = ET.parse(junit_path).getroot().find("testsuite")
    assert suite is not None and len(suite.findall("testcase")) == len(report["images"])
    # blobs came through ECR's 307 to the S3 stand-in, which never saw an Authorization header
    assert any(r.method == "GET" for r in ecr.blob_server.requests)
    assert ecr.blob_server.rejected_auth == 0
    # least privilege, as the emulated ECR saw it
    assert set(ecr.calls) <= ecrcopy.ALLOWED_ACTIONS
    assert {"GetAuthorizationToken", "DescribeRepositories", "DescribeImages"} <= set(ecr.calls)
    assert gl.password not in proc.stdout + proc.stderr + report_path.read_text()

    # a second run writes nothing
    gl.registry.reset()
    again = migrate(env=cli_env(ecr, gl))
    assert again.returncode == 0
    assert gl.registry.writes() == []


def test_least_privilege_in_process(
    ecr: EcrEmulator, gitlab_ci: GitLabEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ECR operation the library makes goes through the guard; only the seven actions."""
    for key, value in cli_env(ecr, gitlab_ci).items():
        monkeypatch.setenv(key, value)
    seen: list[str] = []
    original = EcrApi._guard

    def spy(self: EcrApi, action: str) -> None:
        seen.append(action)
        original(self, action)

    monkeypatch.setattr(EcrApi, "_guard", spy)
    report = ecrcopy.migrate()
    assert report.ok
    assert seen and set(seen) <= ecrcopy.ALLOWED_ACTIONS
    assert set(ecr.calls) == set(seen)
    calls_before = len(ecr.calls)
    api = EcrApi(ecrcopy.EcrSource.from_env())
    try:
        with pytest.raises(ecrcopy.ConfigurationError, match="refuses to call ecr:PutImage"):
            api._post("PutImage", {"repositoryName": "web", "imageManifest": "{}", "imageTag": "x"}, "PutImage")
    finally:
        api.close()
    assert len(ecr.calls) == calls_before  # refused before anything was sent


def test_credentials_refused_mid_copy_end_the_run_with_the_projects_error(
    ecr: EcrEmulator, gitlab_ci: GitLabEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry starts refusing every upload once copying has begun: the run stops with
    ``AuthenticationError`` (in Python) and a one-line error with exit 2 (the CLI) -- not an
    exception group from the tasks that copy and read indexes side by side."""
    refusal = ProxyResponse(
        401,
        {"Content-Type": "application/json", "WWW-Authenticate": 'Bearer realm="x",service="y"'},
        b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
    )
    assert gitlab_ci.gate is not None
    gitlab_ci.gate.hook = lambda req: refusal if "/blobs/uploads/" in req.path else None
    for key, value in cli_env(ecr, gitlab_ci).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ecrcopy.AuthenticationError, match="credentials rejected"):
        ecrcopy.migrate()
    proc = migrate(env=cli_env(ecr, gitlab_ci))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ecrcopy: error:")]
    assert len(errors) == 1 and "credentials rejected" in errors[0], proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_writes_nothing(ecr: EcrEmulator, gitlab_ci: GitLabEmulator) -> None:
    gl = gitlab_ci
    push(gl.registry.url, f"{gl.project_path}/web", oci_image([1], seed=99), "v1", auth=gl.credentials)  # conflict
    gl.registry.reset()

    proc = migrate("--dry-run", env=cli_env(ecr, gl))

    assert proc.returncode == 0, proc.stderr
    assert gl.registry.writes() == []
    assert "estimated" in proc.stdout and "already at the destination" in proc.stdout
    assert "planned" in proc.stdout
    plan_line = next(line for line in proc.stdout.splitlines() if line.startswith("plan ("))
    assert "4 of 4 repositories" in plan_line and f"{len(EXPECTED)} tags" in plan_line


def test_shards_partition_every_image(tmp_path: Path, ecr: EcrEmulator, gitlab_ci: GitLabEmulator) -> None:
    seen: list[set[str]] = []
    for index in (1, 2, 3):
        out = tmp_path / f"r{index}.json"
        proc = migrate(
            "--dry-run", "--report", str(out), env=cli_env(ecr, gitlab_ci, CI_NODE_INDEX=str(index), CI_NODE_TOTAL="3")
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(out.read_text())
        assert report["plan"]["shard"] == f"{index}/3"
        seen.append({i["source"] for i in report["images"]})
    assert all(seen), "a shard got nothing while there are four repositories"
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    full = tmp_path / "all.json"
    assert migrate("--dry-run", "--report", str(full), env=cli_env(ecr, gitlab_ci)).returncode == 0
    assert seen[0] | seen[1] | seen[2] == {i["source"] for i in json.loads(full.read_text())["images"]}
    # an explicit flag overrides the CI variables
    flag = tmp_path / "flag.json"
    assert (
        migrate(
            "--dry-run",
            "--shard",
            "2/3",
            "--report",
            str(flag),
            env=cli_env(ecr, gitlab_ci, CI_NODE_INDEX="1", CI_NODE_TOTAL="3"),
        ).returncode
        == 0
    )
    assert {i["source"] for i in json.loads(flag.read_text())["images"]} == seen[1]


def test_name_mapping_rules(tmp_path: Path, ecr: EcrEmulator, gitlab_ci: GitLabEmulator) -> None:
    gl = gitlab_ci
    collide = tmp_path / "collide.json"
    collide.write_text(json.dumps({"web": "apps/web", "legacy/tools": "apps/web"}))
    proc = migrate("--mapping-file", str(collide), env=cli_env(ecr, gl))
    assert proc.returncode == 2
    assert "legacy/tools, web all map to apps/web" in one_line_error(proc)
    assert gl.registry.writes() == []

    invalid = tmp_path / "invalid.txt"
    invalid.write_text("# ecr-name  destination\nweb  Web_App!\n")
    proc = migrate("--mapping-file", str(invalid), env=cli_env(ecr, gl))
    assert proc.returncode == 2 and "not a valid repository path" in one_line_error(proc)
    assert gl.registry.writes() == []

    too_deep = migrate("--name-template", "mirror/{repo}", env=cli_env(ecr, gl))
    assert too_deep.returncode == 2 and "levels deep" in one_line_error(too_deep)

    ok = migrate("--name-template", "mirror/{repo_flat}", "--include", "team/.*", env=cli_env(ecr, gl))
    assert ok.returncode == 0, ok.stderr
    assert digest_at(gl, "mirror/team-backend-worker", "v1") == source_digest(ecr, "team/backend/worker", "v1")
    assert digest_at(gl, "mirror/team-api", "1.0") == source_digest(ecr, "team/api", "1.0")
    assert "invalid_tag" in ok.stdout  # the 158-character ECR tag, skipped with its reason


def test_filters_newest_and_pushed_since(tmp_path: Path, ecr: EcrEmulator, gitlab_ci: GitLabEmulator) -> None:
    out = tmp_path / "r.json"
    proc = migrate("--dry-run", "--include", "web", "--newest", "1", "--report", str(out), env=cli_env(ecr, gitlab_ci))
    assert proc.returncode == 0, proc.stderr
    tags = sorted(i["destination"].rsplit(":", 1)[1] for i in json.loads(out.read_text())["images"])
    assert tags == ["latest", "v2"]  # the newest *tagged* image, with both its tags
    since = migrate("--dry-run", "--pushed-since", "2026-06-02", "--report", str(out), env=cli_env(ecr, gitlab_ci))
    assert since.returncode == 0, since.stderr
    sources = sorted(i["source"].split("/", 1)[1].split("@")[0] for i in json.loads(out.read_text())["images"])
    assert sources == ["team/api:multi", "web:latest", "web:v2"]
    bad = migrate("--pushed-since", "yesterday", env=cli_env(ecr, gitlab_ci))
    assert bad.returncode == 2 and "ISO 8601" in one_line_error(bad)


def test_tokens_of_both_sides_expire_during_the_run(tmp_path: Path) -> None:
    """ECR's password (3 s) and GitLab's JWT (2 s) both die mid-run; the run completes."""
    with (
        EcrEmulator(tmp_path / "ecr", token_lifetime=3.0) as ecr,
        GitLabEmulator(tmp_path / "gl", token_lifetime=2.0) as gl,
    ):
        for n in range(6):
            ecr.add_image(f"svc{n % 2}", oci_image([30_000 + n, 40_000 + n], seed=n), [f"v{n}"])
        ecr.reset_calls()
        expired_once: list[bool] = []

        def slow_uploads(req: ProxyRequest) -> ProxyResponse | None:
            if req.method == "PUT" and "/blobs/uploads/" in req.path:
                time.sleep(0.8)  # the run must outlast both token lifetimes
                if not expired_once:  # also force ECR's 401 path once: the password dies early
                    expired_once.append(True)
                    ecr.expire_passwords()
            return None

        assert gl.gate is not None
        gl.gate.hook = slow_uploads
        started = time.monotonic()
        proc = migrate("--concurrency", "1", env=cli_env(ecr, gl))
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert elapsed > 3.0
        for n in range(6):
            assert digest_at(gl, f"svc{n % 2}", f"v{n}") == source_digest(ecr, f"svc{n % 2}", f"v{n}")
        assert ecr.calls.count("GetAuthorizationToken") >= 2
        assert ecr.rejected_auth >= 1
        assert len([r for r in gl.tokens.requests if r.ok]) >= 3


def test_junit_carries_failure_reasons(tmp_path: Path, ecr: EcrEmulator, gitlab_ci: GitLabEmulator) -> None:
    gl = gitlab_ci
    push(gl.registry.url, f"{gl.project_path}/web", oci_image([1], seed=99), "v1", auth=gl.credentials)
    junit_path = tmp_path / "out" / "junit.xml"
    proc = migrate("--junit", str(junit_path), env=cli_env(ecr, gl))
    assert proc.returncode == 1
    root = ET.parse(junit_path).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(EXPECTED) + 1  # + the skipped non-OCI tag
    failures = [(c.get("classname"), c.get("name"), c.find("failure")) for c in cases if c.find("failure") is not None]
    assert len(failures) == 1
    classname, name, failure = failures[0]
    assert classname is not None and classname.endswith("/group/project/web") and name == "v1"
    assert (
        failure is not None and failure.get("type") == "conflict" and "already holds" in (failure.get("message") or "")
    )
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert len(skipped) == 1 and "invalid_tag" in (skipped[0].find("skipped").get("message") or "")  # type: ignore[union-attr]
    assert suite.get("failures") == "1" and suite.get("tests") == str(len(cases))


def test_documented_gitlab_ci_template_runs(tmp_path: Path, ecr: EcrEmulator, gitlab_ci: GitLabEmulator) -> None:
    """The ``script:`` of docs/examples/gitlab-ci.yml, run as each of its ``parallel:`` jobs.

    ``before_script`` installs ecrcopy from PyPI in a real pipeline; here the package under test is
    already installed and on PATH.
    """
    config = yaml.safe_load((ROOT / "docs" / "examples" / "gitlab-ci.yml").read_text())
    job = config["migrate-ecr-images"]
    assert job["rules"] == [{"if": '$BULK_MIGRATE == "true"'}]
    assert job["artifacts"]["reports"]["junit"] == "ecrcopy-reports/ecrcopy-junit-*.xml"
    total = int(job["parallel"])
    workdir = tmp_path / "job"
    workdir.mkdir()
    for index in range(1, total + 1):
        env = cli_env(
            ecr,
            gitlab_ci,
            BULK_MIGRATE="true",
            CI="true",
            CI_NODE_INDEX=str(index),
            CI_NODE_TOTAL=str(total),
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        )
        for line in job["script"]:
            proc = subprocess.run(
                ["bash", "-ec", line], cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False
            )
            assert proc.returncode == 0, f"job {index}/{total}: {line}\n{proc.stdout}\n{proc.stderr}"
    for (repo, tag), path in EXPECTED.items():
        assert digest_at(gitlab_ci, path, tag) == source_digest(ecr, repo, tag)
    reports = sorted(workdir.glob("ecrcopy-reports/ecrcopy-report-*.json"))
    assert len(reports) == total
    copied = sum(json.loads(p.read_text())["totals"]["copied"] for p in reports)
    assert copied == len(EXPECTED)
    for junit in workdir.glob("ecrcopy-reports/ecrcopy-junit-*.xml"):
        ET.parse(junit)


def test_enumeration_follows_every_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More than 1000 images in one repository and more than 100 repositories."""
    with EcrEmulator(tmp_path / "ecr") as ecr:
        ecr.add_many(120, 1, prefix="fleet")
        for n in range(1100):
            ecr.register_only("big/repo", oci_image([n + 1], seed=n), [f"t{n}"])
        ecr.reset_calls()
        for key, value in ecr.env().items():
            monkeypatch.setenv(key, value)
        with EcrApi(ecrcopy.EcrSource.from_env()) as api:
            repositories = anyio.run(inventory, api)
            names = {r.name for r in repositories}
            assert len(names) == 121 and "big/repo" in names
            big = next(r for r in repositories if r.name == "big/repo")
            assert len(big.images) == 1100
            assert len({i.digest for i in big.images}) == 1100
            assert ecr.calls.count("DescribeRepositories") >= 2  # 121 repositories, 100 per page by default
            assert ecr.calls.count("DescribeImages") >= 120 + 2  # the big repository took two pages of 1000


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            {"AWS_ACCESS_KEY_ID": "AKIDWRONG", "AWS_SECRET_ACCESS_KEY": "wrong-aws-secret"},
            "AWS rejected the credentials",
        ),
        ({"AWS_DEFAULT_REGION": "xx-nowhere-1", "AWS_REGION": "xx-nowhere-1"}, "unknown AWS region"),
        ({"CI_REGISTRY_PASSWORD": "wrong-gitlab-password"}, "rejected"),
        ({"ECRCOPY_SOURCE_REGISTRY_URL": "http://127.0.0.1:{port}"}, "cannot reach registry"),
        (
            {"CI_REGISTRY_IMAGE": "127.0.0.1:{port}/group/project", "CI_REGISTRY": "127.0.0.1:{port}"},
            "cannot reach registry",
        ),
        ({"CI_REGISTRY_IMAGE": ""}, "CI_REGISTRY_IMAGE"),
    ],
)
def test_configuration_errors_exit_2(
    ecr: EcrEmulator, gitlab_ci: GitLabEmulator, change: dict[str, str], fragment: str
) -> None:
    port = str(free_port())
    env = cli_env(ecr, gitlab_ci, **{k: v.replace("{port}", port) for k, v in change.items()})
    proc = migrate(env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in one_line_error(proc)
    for secret in ("wrong-aws-secret", "wrong-gitlab-password", gitlab_ci.password, ecr.secret_access_key):
        assert secret not in proc.stdout + proc.stderr
    assert gitlab_ci.registry.writes() == []
    if "CI_REGISTRY_PASSWORD" in change:
        assert len([r for r in gitlab_ci.tokens.requests if not r.ok]) == 1  # no retry storm at the realm
