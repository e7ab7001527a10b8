"""Protocol edge cases on real registries: relative upload Locations carrying state, a mount
answered 202, and blob GETs redirected to another origin that rejects ``Authorization``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

import ecrcopy
from ecrcopy._client import RegistryClient
from ecrcopy._credentials import StaticCredentials
from ecrcopy._protocol import Scope
from ecrcopy.testing import BlobServer, Registry, fetch_manifest, oci_image, push

from .conftest import DST_CREDS, SRC_CREDS, SRC_PASSWORD, SRC_USER


def test_relative_location_with_state_query(tmp_path: Path, source: Registry) -> None:
    image = oci_image([40_000, 50_000], seed=3)
    push(source.url, "team/app", image, "v1", auth=SRC_CREDS)
    with Registry(tmp_path / "relative", htpasswd={"bob": DST_CREDS[1]}, relative_urls=True) as dest:
        report = ecrcopy.copy_image(
            f"{source.host}/team/app:v1",
            f"{dest.host}/team/app",
            source_credentials=SRC_CREDS,
            destination_credentials=DST_CREDS,
        )
        assert report.ok, report.failed()
        puts = [r for r in dest.requests() if r.method == "PUT" and "/blobs/uploads/" in r.path]
        assert len(puts) == 3 and all(r.status == 201 for r in puts)
        # the registry's own state parameter survived next to the digest we appended
        assert all("_state=" in r.query and "digest=sha256" in r.query for r in puts)
        assert fetch_manifest(dest.url, "team/app", "v1", auth=DST_CREDS)[2] == image.digest


@pytest.mark.anyio
async def test_mount_answered_202_uploads_through_the_session(source: Registry, gitlab: Registry) -> None:
    """A remembered repository lost the blob: the mount opens a session (202) and the copy uploads there."""
    first = oci_image([30_000], seed=21)
    second = oci_image([first.layers[0], 31_000], seed=22)
    push(source.url, "team/one", first, "v1", auth=SRC_CREDS)
    push(source.url, "team/two", second, "v1", auth=SRC_CREDS)
    shared = first.layers[0].digest
    async with ecrcopy.Copier(source_credentials=SRC_CREDS, destination_credentials=DST_CREDS) as copier:
        assert (await copier.copy_image(f"{source.host}/team/one:v1", f"{gitlab.host}/g/p/one")).ok
        # the blob disappears from g/p/one behind the copier's back
        client = copier.client(gitlab.host, role="destination")
        await client._send(
            "DELETE",
            client._url("g/p/one", f"blobs/{shared}"),
            [Scope("repository", "g/p/one", frozenset({"delete"}))],
            ok=(202,),
            what="test delete",
        )
        gitlab.reset()
        report = await copier.copy_image(f"{source.host}/team/two:v1", f"{gitlab.host}/g/p/two")

    assert report.ok, report.failed()
    log = gitlab.requests()
    mounts = [parse_qs(r.query) | {"status": [r.status]} for r in log if r.method == "POST" and "mount=" in r.query]
    from_one = [m for m in mounts if m["from"] == ["g/p/one"]]
    assert [(m["mount"], m["status"]) for m in from_one] == [([shared], [202])]
    # the two blobs with nowhere to mount from were asked for in g/p/two itself: not there, 202
    assert sorted(m["status"][0] for m in mounts if m["from"] == ["g/p/two"]) == [202, 202]
    assert report.totals.blobs_mounted == 0 and report.totals.blobs_uploaded == 3
    assert gitlab.blob_uploads() == 3
    assert fetch_manifest(gitlab.url, "g/p/two", "v1", auth=DST_CREDS)[2] == second.digest


@pytest.mark.anyio
async def test_client_mount_201_and_202(gitlab: Registry) -> None:
    image = oci_image([12_345], seed=5)
    push(gitlab.url, "g/p/a", image, "v1", auth=DST_CREDS)
    layer = image.layers[0]
    client = RegistryClient(gitlab.host, StaticCredentials(ecrcopy.Credentials.of(*DST_CREDS)))
    try:
        assert await client.mount_blob("g/p/b", layer.digest, "g/p/a") is None  # 201
        location = await client.mount_blob("g/p/c", layer.digest, "g/p/nowhere")  # 202
        assert location is not None and "/v2/g/p/c/blobs/uploads/" in location

        async def body() -> AsyncIterator[bytes]:
            for piece in layer.chunks(4096):
                yield piece

        await client.upload_blob("g/p/c", layer.digest, layer.size, body(), location=location)
        assert await client.blob_exists("g/p/c", layer.digest)
        assert await client.blob_exists("g/p/b", layer.digest)
    finally:
        await client.aclose()


def test_blob_redirect_to_origin_rejecting_authorization(tmp_path: Path, gitlab: Registry) -> None:
    """ECR answers blob GETs with 307 to S3, which refuses requests carrying ``Authorization``."""
    image = oci_image([64_000, 65_000], seed=31)
    with (
        BlobServer(Registry.data_dir_for(tmp_path / "ecr")) as s3,
        Registry(tmp_path / "ecr", htpasswd={SRC_USER: SRC_PASSWORD}, redirect_blobs_to=s3.url) as ecr,
    ):
        push(ecr.url, "team/app", image, "v1", auth=SRC_CREDS)
        report = ecrcopy.copy_image(
            f"{ecr.host}/team/app:v1",
            f"{gitlab.host}/group/project/app",
            source_credentials=SRC_CREDS,
            destination_credentials=DST_CREDS,
        )
        assert report.ok, report.failed()
        redirected = [r for r in ecr.requests() if r.method == "GET" and "/blobs/" in r.path]
        assert redirected and all(r.status == 307 for r in redirected)
        assert len([r for r in s3.requests if r.method == "GET"]) == 3  # config + 2 layers, from the other origin
        assert s3.rejected_auth == 0
    assert fetch_manifest(gitlab.url, "group/project/app", "v1", auth=DST_CREDS)[2] == image.digest


def test_redirect_server_really_rejects_authorization(tmp_path: Path) -> None:
    """Guard for the test above: the stand-in for S3 does reject credentials."""
    import httpx

    with BlobServer(tmp_path) as s3:
        response = httpx.get(f"{s3.url}/anything", headers={"Authorization": "Basic eDp5"})
        assert response.status_code == 400 and b"InvalidArgument" in response.content
