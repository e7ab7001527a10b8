"""Unattended runs through the ECR and GitLab emulations: clock skew, kill -9, protected tags, secrets.

Each test starts real registries (the emulations' data planes are CNCF distribution processes) and
runs the real CLI in a subprocess, as a GitLab CI job would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ecrcopy.testing import (
    Blob,
    EcrEmulator,
    GitLabEmulator,
    ProxyRequest,
    ProxyResponse,
    fetch_blob,
    fetch_manifest,
    list_tags,
    oci_image,
    oci_index,
)
from tests.test_migrate import cli_env, migrate, seed

# ---------------------------------------------------------------------------------------------- helpers


def seed_many(ecr: EcrEmulator, repos: int, tags: int, *, layer: int = 200_000) -> dict[tuple[str, str], str]:
    """``repos`` repositories with ``tags`` images each (a shared base layer); (repo, tag) -> digest."""
    base = Blob.generated(300_000, seed=4242)
    expected = {}
    for r in range(repos):
        for t in range(tags):
            if t == 0 and r % 3 == 0:
                image = oci_index(
                    [
                        oci_image([base, layer + r], seed=1000 * r + 1, platform="linux/amd64"),
                        oci_image([base, layer + r + 1], seed=1000 * r + 2, platform="linux/arm64"),
                    ]
                )
            else:
                image = oci_image([base, layer + 7 * r + t], seed=1000 * r + 10 + t)
            ecr.add_image(f"svc{r}/app", image, [f"v{t}"])
            expected[(f"svc{r}/app", f"v{t}")] = image.digest
    ecr.reset_calls()
    return expected


def destination_tags(gl: GitLabEmulator, path: str) -> list[str]:
    try:
        return list_tags(gl.registry.url, f"{gl.project_path}/{path}", auth=gl.credentials)
    except Exception:  # the repository does not exist yet
        return []


def assert_complete(gl: GitLabEmulator, path: str, tag: str) -> str:
    """The tag's manifest, every child and every blob are there and hash right; returns the digest."""
    repo = f"{gl.project_path}/{path}"
    raw, media_type, digest = fetch_manifest(gl.registry.url, repo, tag, auth=gl.credentials)
    todo = [(raw, media_type)]
    while todo:
        raw, media_type = todo.pop()
        body = json.loads(raw)
        for child in body.get("manifests", []):
            child_raw, child_type, _ = fetch_manifest(gl.registry.url, repo, child["digest"], auth=gl.credentials)
            todo.append((child_raw, child_type))
        for blob in [body["config"], *body.get("layers", [])] if "config" in body else []:
            data = fetch_blob(gl.registry.url, repo, blob["digest"], auth=gl.credentials)
            assert len(data) == blob["size"], (path, tag, blob["digest"])
            assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
    return digest


def uploads_by_repo(gl: GitLabEmulator) -> set[tuple[str, str]]:
    """(repository, digest) of every completed blob upload in the registry's access log since its reset."""
    done = set()
    for r in gl.registry.requests():
        match = re.fullmatch(r"/v2/(.+)/blobs/uploads/[^/]+", r.path)
        if r.method == "PUT" and r.status == 201 and match:
            digest = re.search(r"digest=([^&]+)", r.query)
            if digest:
                done.add((match.group(1), digest.group(1).replace("%3A", ":")))
    return done


def present_blobs(gl: GitLabEmulator, paths: list[str], digests: set[str]) -> set[tuple[str, str]]:
    """Which of ``digests`` each destination repository holds right now (HEAD through the gate)."""
    found = set()
    with httpx.Client() as http:
        for path in paths:
            repo = f"{gl.project_path}/{path}"
            token = http.get(
                gl.tokens.realm,
                params={"service": "container_registry", "scope": f"repository:{repo}:pull"},
                auth=gl.credentials,
            ).json()["token"]
            for digest in digests:
                response = http.head(
                    f"{gl.registry.url}/v2/{repo}/blobs/{digest}", headers={"Authorization": f"Bearer {token}"}
                )
                if response.status_code == 200:
                    found.add((repo, digest))
    return found


def all_blob_digests(ecr: EcrEmulator, expected: dict[tuple[str, str], str]) -> set[str]:
    digests: set[str] = set()
    for repo, tag in expected:
        todo = [fetch_manifest(ecr.data_registry.url, repo, tag)[0]]
        while todo:
            body = json.loads(todo.pop())
            for child in body.get("manifests", []):
                todo.append(fetch_manifest(ecr.data_registry.url, repo, child["digest"])[0])
            if "config" in body:
                digests.update(b["digest"] for b in [body["config"], *body["layers"]])
    return digests


@pytest.fixture
def ecr(tmp_path: Path) -> Iterator[EcrEmulator]:
    with EcrEmulator(tmp_path / "ecr") as emulator:
        yield emulator


# ---------------------------------------------------------------------------------------------- 4. clock skew


LIFETIME = 2.0


@pytest.mark.parametrize("skew", [600.0, -600.0])
def test_clock_skew_does_not_multiply_token_requests(tmp_path: Path, ecr: EcrEmulator, skew: float) -> None:
    """A runner whose clock is 10 minutes ahead or behind the token service: tokens per scope, not per request.

    The CLI runs with ``time.time`` shifted by ``skew``; the token service and the hard-expiry gate keep the
    real clock. Tokens live 2 s and the gate refuses them from ``exp`` on, as GitLab does.
    """
    expected = seed_many(ecr, repos=6, tags=3)
    with GitLabEmulator(tmp_path / "gl", token_lifetime=LIFETIME) as gl:
        env = cli_env(ecr, gl)
        code = (
            "import sys, time\n"
            f"_real = time.time\ntime.time = lambda: _real() + {skew!r}\n"
            "from ecrcopy._cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        started = time.monotonic()
        proc = subprocess.run(
            # paced to outlast the short tokens a few times over (at 40/s a fast machine finished in under 4 s)
            [sys.executable, "-c", code, "migrate", "--concurrency", "2", "--max-requests-per-second", "*=20"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, proc.stdout + proc.stderr
        token_requests = len(gl.tokens.requests)  # counted before the checks below ask for tokens of their own
        assert gl.gate is not None
        registry_requests = len(gl.gate.requests)
        for (repo, tag), digest in expected.items():
            assert assert_complete(gl, repo, tag) == digest
    # scope sets: push on each destination repository, and push+pull-from for mounts between them
    scope_sets = 2 * len({repo for repo, _ in expected})
    renewals = math.ceil(elapsed / (LIFETIME * 0.8)) + 1
    assert elapsed > 2 * LIFETIME, elapsed  # tokens had to be renewed during the run
    assert token_requests <= scope_sets * renewals, (token_requests, registry_requests, elapsed)
    assert registry_requests >= 4 * token_requests, (token_requests, registry_requests)


# ---------------------------------------------------------------------------------------------- 5. kill -9


def test_kill_9_at_seeded_moments_then_rerun(tmp_path: Path, ecr: EcrEmulator) -> None:
    """kill -9 of the CLI at several seeded moments: tags only ever point at complete content; a rerun
    finishes the job; a blob a killed run had completed is not uploaded again."""
    expected = seed_many(ecr, repos=8, tags=3, layer=900_000)
    paths = sorted({repo for repo, _ in expected})
    digests = all_blob_digests(ecr, expected)
    rng = random.Random(20261202)
    with GitLabEmulator(tmp_path / "gl") as gl:
        env = cli_env(ecr, gl)
        for moment in [rng.uniform(0.6, 3.0) for _ in range(4)]:
            gl.registry.reset()
            proc = subprocess.Popen(
                # paced (about 8 s for the whole migration), so that every kill lands in the middle of it
                [sys.executable, "-m", "ecrcopy", "migrate", "--concurrency", "2", "--max-requests-per-second", "*=20"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            time.sleep(moment)
            assert proc.poll() is None, f"the run ended before the kill at {moment:.2f} s"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            # whatever the moment, every tag that exists points at complete content
            for path in paths:
                for tag in destination_tags(gl, path):
                    assert assert_complete(gl, path, tag) == expected[(path, tag)], (moment, path, tag)
        before = present_blobs(gl, paths, digests)
        gl.registry.reset()
        final = migrate("--report", str(tmp_path / "report.json"), env=env)
        assert final.returncode == 0, final.stdout + final.stderr
        again = uploads_by_repo(gl)
        for (path, tag), digest in expected.items():
            assert assert_complete(gl, path, tag) == digest
    assert before, "the killed runs should have moved some blobs"
    assert not (again & before), "a blob a killed run had completed was uploaded again"


# ---------------------------------------------------------------------------------------------- 6. protected tags


def test_protected_tag_fails_alone_without_retry(tmp_path: Path, ecr: EcrEmulator) -> None:
    seed(ecr)
    ecr.reset_calls()
    with GitLabEmulator(tmp_path / "gl") as gl:
        assert gl.gate is not None
        protected = f"/v2/{gl.project_path}/web/manifests/v1"
        attempts: list[str] = []

        def protect(req: ProxyRequest) -> ProxyResponse | None:
            if req.method == "PUT" and req.path == protected:
                attempts.append(req.path)
                return ProxyResponse.error(403, "DENIED", "tag v1 is protected: only maintainers may push it")
            return None

        gl.gate.hook = protect
        report_path = tmp_path / "report.json"
        proc = migrate("--report", str(report_path), env=cli_env(ecr, gl))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        report = json.loads(report_path.read_text())
        failed = [i for i in report["images"] if i["status"] == "failed"]
        assert [(i["destination"].rsplit("/", 2)[-2:], i["reason"]) for i in failed] == [
            (["project", "web:v1"], "denied")
        ]
        assert "tag v1 is protected: only maintainers may push it" in failed[0]["error"]
        assert attempts == [protected]  # 403 DENIED is final: never retried
        copied = {i["destination"].split("/", 3)[-1] for i in report["images"] if i["status"] == "copied"}
        assert {"web:v2", "web:latest", "team/api:1.0", "team/api:multi"} <= copied
        assert "Traceback" not in proc.stderr


def test_wrong_destination_password_stops_after_few_token_requests(tmp_path: Path, ecr: EcrEmulator) -> None:
    seed(ecr)
    with GitLabEmulator(tmp_path / "gl") as gl:
        proc = migrate(env=cli_env(ecr, gl, CI_REGISTRY_PASSWORD="not-the-password"))
        assert proc.returncode == 2
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("ecrcopy: error: ") and "rejected" in lines[0]
        assert 1 <= len(gl.tokens.requests) <= 3
        assert gl.registry.writes() == []


# ---------------------------------------------------------------------------------------------- 7. secrets


def test_no_secret_in_any_output_with_debug(tmp_path: Path, ecr: EcrEmulator) -> None:
    """With --debug and failing images, no password, token or AWS secret reaches any output."""
    seed(ecr)
    ecr.reset_calls()
    with GitLabEmulator(tmp_path / "gl", token_lifetime=3.0) as gl:
        assert gl.gate is not None
        seen_auth: set[str] = set()

        def hostile(req: ProxyRequest) -> ProxyResponse | None:
            value = req.headers.get("authorization")
            if value:
                seen_auth.add(value)
            if req.method == "PUT" and req.path.endswith("/web/manifests/v1"):
                return ProxyResponse.error(403, "DENIED", f"denied; you sent {value}")  # echoes the credential
            if req.method == "PUT" and req.path.endswith("/legacy/tools/manifests/list"):
                return ProxyResponse(
                    401,
                    {
                        "WWW-Authenticate": f'Bearer realm="{gl.tokens.realm}",error="insufficient_scope"',
                        "Content-Type": "application/json",
                    },
                    json.dumps({"errors": [{"code": "DENIED", "message": f"no; token {value}"}]}).encode(),
                )
            return None

        gl.gate.hook = hostile
        data_gate = ecr.data_proxy.hook
        assert data_gate is not None

        def record_ecr(req: ProxyRequest) -> ProxyResponse | None:
            value = req.headers.get("authorization")
            if value:
                seen_auth.add(value)
            return data_gate(req)

        ecr.data_proxy.hook = record_ecr
        report_path, junit_path = tmp_path / "report.json", tmp_path / "junit.xml"
        proc = migrate("--debug", "--report", str(report_path), "--junit", str(junit_path), env=cli_env(ecr, gl))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        outputs = proc.stdout + proc.stderr + report_path.read_text() + junit_path.read_text()
        ET.fromstring(junit_path.read_bytes())  # still well-formed
        secrets = {gl.password, ecr.secret_access_key, *ecr.issued_passwords}
        for header in seen_auth:
            scheme, _, value = header.partition(" ")
            secrets.add(value)
            if scheme.lower() == "basic":
                secrets.add(base64.b64decode(value).decode().partition(":")[2])
            else:
                secrets.update(value.split("."))  # no JWT part either
        secrets.discard("")
        # the ECR credential and GitLab tokens (prefetched for several repositories at once) were all seen
        schemes = {header.partition(" ")[0].lower() for header in seen_auth}
        assert schemes == {"basic", "bearer"} and "DEBUG" in proc.stderr
        leaked = [s for s in secrets if len(s) >= 8 and s in outputs]
        assert leaked == []


def test_password_with_a_newline_is_refused_in_one_line(tmp_path: Path, ecr: EcrEmulator) -> None:
    seed(ecr)
    with GitLabEmulator(tmp_path / "gl") as gl:
        proc = migrate("--debug", env=cli_env(ecr, gl, CI_REGISTRY_PASSWORD=gl.password + "\n"))
        assert proc.returncode == 2
        assert gl.password not in proc.stdout + proc.stderr
        error_lines = [line for line in proc.stderr.splitlines() if line.startswith("ecrcopy: error: ")]
        assert error_lines and "control character" in error_lines[-1]
        assert gl.tokens.requests == []  # nothing was sent


# ---------------------------------------------------------------------------------------------- cancellation


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_saves_the_blob_cache(tmp_path: Path, ecr: EcrEmulator, signum: int, code: int) -> None:
    """Ctrl-C, or SIGTERM from a cancelled CI job: in-flight work is cancelled, the blob location cache is
    still written (atomically: no temporary file left), and the exit status says which signal it was."""
    seed_many(ecr, repos=8, tags=3, layer=900_000)
    cache = tmp_path / "cache.json"
    with GitLabEmulator(tmp_path / "gl") as gl:
        proc = subprocess.Popen(
            # paced, so that the run is surely still going when the signal comes
            [
                *(sys.executable, "-m", "ecrcopy", "migrate", "--blob-cache", str(cache)),
                *("--concurrency", "2", "--max-requests-per-second", "*=25"),
            ],
            env=cli_env(ecr, gl),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 60
        while gl.registry.blob_uploads() < 2 and time.monotonic() < deadline:  # wait until blobs have moved
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before the signal"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] in ("ecrcopy: interrupted", "ecrcopy: terminated")
    assert "Traceback" not in stderr
    saved = json.loads(cache.read_text())
    assert saved["version"] == 1 and saved["hosts"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".blob-locations-")] == []
