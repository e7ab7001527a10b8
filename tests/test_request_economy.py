"""Requests the run already knows the answer to are not sent.

* A migration rerun over unchanged tags: ECR's ``DescribeImages`` gave every tag's digest, so one
  destination manifest HEAD per tag settles it; nothing is read from the source, nothing written.
* Within a run, a blob another repository of the same run received is mounted straight away: a
  mount answers 201 whether or not the repository has it, so a HEAD before it tells nothing.
* A blob with nowhere to mount it from is asked for with a mount from its own repository: "there
  already" (201) or an open upload session (202) in one request instead of a HEAD and a POST.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from ecrcopy._models import Descriptor
from ecrcopy._transfer import BlobOutcome, BlobTransferer
from ecrcopy.testing import Blob, EcrEmulator, GitLabEmulator, oci_artifact, oci_image, oci_index, push

from .test_client_mock import FAST, FakeRegistry, make_client, sha256
from .test_migrate import cli_env, migrate


def seed(ecr: EcrEmulator) -> int:
    """Three repositories on shared layers (one multi-arch); the number of tags."""
    base = [Blob.generated(150_000, seed=40), Blob.generated(90_000, seed=41)]
    ecr.add_image("app/a", oci_image([*base, 1000], seed=1), ["v1", "latest"])
    ecr.add_image("app/a", oci_image([*base, 1100], seed=2), ["v2"])
    ecr.add_image("app/b", oci_image([*base, 2000], seed=3), ["v1"])
    index = oci_index(
        [
            oci_image([*base, 3000], seed=4, platform="linux/amd64"),
            oci_image([base[0], 3100], seed=5, platform="linux/arm64"),
        ]
    )
    ecr.add_image("app/c", index, ["multi"])
    return 5


def test_rerun_costs_one_destination_head_per_tag_and_nothing_at_the_source(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gitlab") as gl:
        tags = seed(ecr)
        env = cli_env(ecr, gl, XDG_CACHE_HOME=str(tmp_path / "cache"))
        first = migrate("--report", str(tmp_path / "first.json"), env=env)
        assert first.returncode == 0, first.stderr
        ecr.data_proxy.reset()
        gl.registry.reset()
        again = migrate("--report", str(tmp_path / "again.json"), env=env)
        assert again.returncode == 0, again.stderr
        report = json.loads((tmp_path / "again.json").read_text())
        assert [i["reason"] for i in report["images"]] == ["up-to-date"] * tags
        source = [(r.method, r.path) for r in ecr.data_proxy.requests]
        assert source == [("GET", "/v2/")], source  # the ping proving the ECR credentials, nothing else
        dest = Counter((r.method, "manifest" if "/manifests/" in r.path else r.path) for r in gl.registry.requests())
        assert dest[("HEAD", "manifest")] == tags
        assert gl.registry.writes() == []
        assert sum(dest.values()) - dest[("HEAD", "manifest")] <= 2  # GET /v2/ (and its 401 first)


def test_rerun_of_a_repository_with_referrers_still_brings_new_ones(tmp_path: Path) -> None:
    """The fast path is taken only when ECR's listing proves a repository has no referrers."""
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gitlab") as gl:
        image = oci_image([5000], seed=7)
        ecr.add_image("signed/app", image, ["v1"])
        env = cli_env(ecr, gl, XDG_CACHE_HOME=str(tmp_path / "cache"))
        assert migrate(env=env).returncode == 0
        signature = oci_artifact(image, payload=b"signature of v1")
        ecr.add_image("signed/app", signature)
        assert migrate("--report", str(tmp_path / "r.json"), env=env).returncode == 0
        report = json.loads((tmp_path / "r.json").read_text())
        (result,) = report["images"]
        assert result["reason"] == "up-to-date"
        assert [(r["digest"], r["status"]) for r in result["referrers"]] == [(signature.digest, "copied")]


def test_a_blob_this_run_put_elsewhere_is_mounted_without_a_head_first(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gitlab") as gl:
        seed(ecr)
        env = cli_env(ecr, gl, XDG_CACHE_HOME=str(tmp_path / "cache"))
        proc = migrate("--report", str(tmp_path / "r.json"), env=env)
        assert proc.returncode == 0, proc.stderr
        log = gl.registry.requests()
        mounts = [r for r in log if r.method == "POST" and r.status == 201 and "mount=" in r.query]
        assert mounts, "shared base layers should be mounted between repositories"
        heads = {
            (r.path.split("/blobs/")[0], r.path.split("/blobs/")[1])
            for r in log
            if r.method == "HEAD" and "/blobs/" in r.path
        }
        for mount in mounts:
            repo = mount.path.split("/blobs/")[0]
            digest = dict(p.split("=", 1) for p in mount.query.split("&"))["mount"].replace("%3A", ":")
            assert (repo, digest) not in heads, f"HEAD of {digest} in {repo} before mounting it"
        uploads = [r for r in log if r.method == "PUT" and r.status == 201 and "/blobs/uploads/" in r.path]
        assert len(uploads) == len({r.query for r in uploads})  # each blob uploaded once


def test_a_blob_with_nowhere_to_mount_from_costs_no_head(tmp_path: Path) -> None:
    """A fresh migration asks for each new blob with a mount from its own repository: 202 opens the
    upload (no HEAD before it); blobs an interrupted run left in the repository answer 201 and are
    not uploaded again."""
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gitlab") as gl:
        leftover = oci_image([4000, 4100], seed=9)
        ecr.add_image("app/d", leftover, ["v1"])
        seed(ecr)
        # an earlier run got the blobs of app/d into the destination, then stopped before its tag
        push(gl.registry.url, f"{gl.project_path}/app/d", leftover, "partial", auth=gl.credentials)
        gl.registry.reset()
        env = cli_env(ecr, gl, XDG_CACHE_HOME=str(tmp_path / "cache"))
        proc = migrate("--report", str(tmp_path / "r.json"), env=env)
        assert proc.returncode == 0, proc.stderr
        log = gl.registry.requests()
        assert [r for r in log if r.method == "HEAD" and "/blobs/" in r.path] == []
        self_mounts = [
            r
            for r in log
            if r.method == "POST"
            and parse_qs(r.query).get("from") == [r.path.removeprefix("/v2/").partition("/blobs/")[0]]
        ]
        assert {r.status for r in self_mounts} == {201, 202}
        uploaded = {r.query for r in log if r.method == "PUT" and r.status == 201 and "/blobs/uploads/" in r.path}
        for blob in leftover.blobs:
            assert not any(blob.digest.replace(":", "%3A") in q for q in uploaded), "re-uploaded a present blob"
        report = json.loads((tmp_path / "r.json").read_text())
        assert all(i["status"] == "copied" for i in report["images"])
        d = next(i for i in report["images"] if "/app/d:" in i["destination"])
        assert d["blobs_uploaded"] == 0 and d["blobs_existing"] == len(leftover.blobs)


@pytest.mark.anyio
async def test_a_registry_refusing_a_mount_from_the_repository_itself_is_asked_with_a_head() -> None:
    """An edge no real registry here produces: the mount from the repository itself is refused
    (405). The transfer falls back to a HEAD, and does not ask that registry that way again."""
    fake = FakeRegistry()
    blob = b"layer bytes" * 100
    digest = sha256(blob)
    fake.routes[("POST", "/v2/team/app/blobs/uploads/")] = lambda r: httpx.Response(
        405, json={"errors": [{"code": "UNSUPPORTED", "message": "mount not supported"}]}
    )
    fake.routes[("HEAD", f"/v2/team/app/blobs/{digest}")] = lambda r: httpx.Response(
        200, headers={"Content-Length": str(len(blob))}
    )
    client = make_client(fake)
    transferer = BlobTransferer(FAST)
    descriptor = Descriptor(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", digest=digest, size=len(blob))
    for attempt in (1, 2):
        transferer._known.clear()
        result = await transferer.ensure(client, "team/app", client, "team/app", descriptor)
        assert result.outcome is BlobOutcome.EXISTING, attempt
    assert len(fake.calls("POST", "/v2/team/app/blobs/uploads/")) == 1  # refused once, then HEAD only
    assert len(fake.calls("HEAD", f"/v2/team/app/blobs/{digest}")) == 2
    await client.aclose()


@pytest.mark.anyio
async def test_a_denied_mount_from_the_repository_itself_does_not_stop_asking_elsewhere() -> None:
    """A 403 is that repository's permissions, not the registry's support for the mount."""
    fake = FakeRegistry()
    locked, opened = b"locked layer" * 100, b"open layer" * 100
    fake.routes[("POST", "/v2/team/locked/blobs/uploads/")] = lambda r: httpx.Response(
        403, json={"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}
    )
    fake.routes[("HEAD", f"/v2/team/locked/blobs/{sha256(locked)}")] = lambda r: httpx.Response(
        200, headers={"Content-Length": str(len(locked))}
    )
    fake.routes[("POST", "/v2/team/open/blobs/uploads/")] = lambda r: httpx.Response(
        201, headers={"Location": f"/v2/team/open/blobs/{sha256(opened)}", "Docker-Content-Digest": sha256(opened)}
    )
    client = make_client(fake)
    transferer = BlobTransferer(FAST)
    layer = "application/vnd.oci.image.layer.v1.tar+gzip"
    for repo, data in (("team/locked", locked), ("team/open", opened)):
        descriptor = Descriptor(mediaType=layer, digest=sha256(data), size=len(data))
        result = await transferer.ensure(client, repo, client, repo, descriptor)
        assert result.outcome is BlobOutcome.EXISTING, repo
    assert len(fake.calls("HEAD", f"/v2/team/locked/blobs/{sha256(locked)}")) == 1
    assert len(fake.calls("POST", "/v2/team/open/blobs/uploads/")) == 1  # still asked with the mount
    assert fake.calls("HEAD", f"/v2/team/open/blobs/{sha256(opened)}") == []
    await client.aclose()
