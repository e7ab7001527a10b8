"""The public Python API: blocking helpers, the async Copier, events and policies."""

from __future__ import annotations

import json

import httpx
import pytest

import ecrcopy
from ecrcopy._mediatypes import DOCKER_FOREIGN_LAYER
from ecrcopy.testing import Blob, Registry, oci_image, push

from .conftest import DST_CREDS, SRC_CREDS


def test_public_names_exported() -> None:
    for name in ecrcopy.__all__:
        assert hasattr(ecrcopy, name), name
    assert issubclass(ecrcopy.DigestMismatch, ecrcopy.EcrcopyError)
    assert ecrcopy.AuthenticationError.fatal and not ecrcopy.DigestMismatch.fatal


@pytest.mark.anyio
async def test_blocking_api_inside_event_loop_points_to_async_api() -> None:
    with pytest.raises(ecrcopy.WrongContextError, match="Copier"):
        ecrcopy.copy_repository("127.0.0.1:1/a", "127.0.0.1:1/b")


@pytest.mark.anyio
async def test_copier_outside_context_manager_is_refused() -> None:
    copier = ecrcopy.Copier()
    with pytest.raises(ecrcopy.ConfigurationError, match="async with"):
        await copier.copy_image("127.0.0.1:1/a:v1", "127.0.0.1:1/b")


def test_copy_image_needs_tag_or_digest() -> None:
    with pytest.raises(ecrcopy.ConfigurationError, match="repository"):
        ecrcopy.copy_image("127.0.0.1:1/a", "127.0.0.1:1/b")


@pytest.mark.anyio
async def test_progress_events_and_shared_state(source: Registry, gitlab: Registry) -> None:
    base = Blob.generated(300_000, seed=42)
    push(source.url, "team/a", oci_image([base, 1000], seed=1), "v1", auth=SRC_CREDS)
    push(source.url, "team/b", oci_image([base, 2000], seed=2), "v1", auth=SRC_CREDS)
    events: list[ecrcopy.ProgressEvent] = []
    async with ecrcopy.Copier(
        source_credentials=SRC_CREDS, destination_credentials=DST_CREDS, on_event=events.append
    ) as copier:
        first = await copier.copy_repository(f"{source.host}/team/a", f"{gitlab.host}/g/p/a")
        second = await copier.copy_repository(f"{source.host}/team/b", f"{gitlab.host}/g/p/b")
    assert first.ok and second.ok
    # the second call reused what the first uploaded: the shared base layer is mounted
    assert second.totals.blobs_mounted == 1 and second.totals.blobs_uploaded == 2
    kinds = [e.kind for e in events]
    assert kinds.count("image_started") == 2 and kinds.count("image_finished") == 2
    finished = [e for e in events if e.kind == "blob_finished"]
    assert sorted(e.outcome or "" for e in finished) == ["mounted"] + ["uploaded"] * 5
    uploaded_bytes = sum(e.bytes for e in events if e.kind == "bytes_uploaded")
    assert uploaded_bytes == first.totals.bytes_uploaded + second.totals.bytes_uploaded
    assert kinds.count("repository_finished") == 2  # one per copied repository, after its last image
    assert events[-1].kind == "repository_finished" and events[-1].destination.endswith("/g/p/b")
    assert events[-2].result is not None and events[-2].result.status == "copied"


@pytest.mark.anyio
async def test_failing_callback_does_not_break_the_copy(source: Registry, gitlab: Registry) -> None:
    push(source.url, "team/a", oci_image([1000], seed=1), "v1", auth=SRC_CREDS)

    def explode(event: ecrcopy.ProgressEvent) -> None:
        raise RuntimeError("UI bug")

    async with ecrcopy.Copier(
        source_credentials=SRC_CREDS, destination_credentials=DST_CREDS, on_event=explode
    ) as copier:
        report = await copier.copy_image(f"{source.host}/team/a:v1", f"{gitlab.host}/g/p/a")
    assert report.ok


def _manifest(body: dict[str, object]) -> ecrcopy.Manifest:
    return ecrcopy.Manifest.from_bytes(json.dumps(body).encode())


FOREIGN = _manifest(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "a" * 64,
            "size": 2,
        },
        "layers": [
            {
                "mediaType": DOCKER_FOREIGN_LAYER,
                "digest": "sha256:" + "b" * 64,
                "size": 10,
                "urls": ["https://mcr.example/layer"],
            }
        ],
    }
)
SCHEMA1 = _manifest({"schemaVersion": 1, "name": "a", "tag": "v1", "fsLayers": [], "signatures": []})


@pytest.mark.anyio
async def test_policies_schema1_and_foreign_layers() -> None:
    """Distribution refuses to store these, so the policy is checked on the engine directly."""
    async with ecrcopy.Copier() as copier:
        with pytest.raises(ecrcopy.SkippedByPolicy, match="foreign"):
            copier._check_policy(FOREIGN)
        with pytest.raises(ecrcopy.SkippedByPolicy, match="schema 1"):
            copier._check_policy(SCHEMA1)
    async with ecrcopy.Copier(ecrcopy.CopyOptions(foreign_layers="copy")) as copier:
        copier._check_policy(FOREIGN)  # allowed by the option
    assert ecrcopy.UnsupportedManifest.reason == "unsupported"


def test_dry_run_writes_nothing(source: Registry, gitlab: Registry) -> None:
    push(source.url, "team/a", oci_image([1000], seed=1), "v1", auth=SRC_CREDS)
    push(source.url, "team/a", oci_image([1001], seed=2), "v2", auth=SRC_CREDS)
    ecrcopy.copy_image(
        f"{source.host}/team/a:v1",
        f"{gitlab.host}/g/p/a",
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
    )
    gitlab.reset()
    report = ecrcopy.copy_repository(
        f"{source.host}/team/a",
        f"{gitlab.host}/g/p/a",
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
        dry_run=True,
    )
    statuses = {i.source.rsplit(":", 1)[1]: i.status for i in report.images}
    assert statuses == {"v1": "skipped", "v2": "planned"}
    assert gitlab.writes() == []


def test_explicit_tag_list_missing_tag_fails_only_that_image(source: Registry, gitlab: Registry) -> None:
    push(source.url, "team/a", oci_image([1000], seed=1), "v1", auth=SRC_CREDS)
    report = ecrcopy.copy_repository(
        f"{source.host}/team/a",
        f"{gitlab.host}/g/p/a",
        tags=["v1", "missing"],
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
    )
    statuses = {i.source.rsplit(":", 1)[1]: (i.status, i.reason) for i in report.images}
    assert statuses == {"v1": ("copied", None), "missing": ("failed", "not_found")}
    assert not report.ok


@pytest.mark.anyio
async def test_schema1_image_reported_skipped_not_failed() -> None:
    """Distribution refuses schema 1 pushes, so a mock source serves one; the engine skips it cleanly."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.host}:{request.url.port}{request.url.path}")
        if request.url.path == "/v2/":
            return httpx.Response(200)
        if request.url.port == 5001 and request.url.path.endswith("/manifests/v1"):
            return httpx.Response(
                200,
                content=SCHEMA1.raw,
                headers={"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
            )
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})

    async with ecrcopy.Copier(transport=httpx.MockTransport(handler)) as copier:
        report = await copier.copy_image("127.0.0.1:5001/old/app:v1", "127.0.0.1:5002/new/app")
    (result,) = report.images
    assert result.status == "skipped" and result.reason == "unsupported"
    assert "schema 1" in (result.error or "")
    assert report.ok
    assert not any(line.startswith(("PUT", "POST", "PATCH")) for line in seen)


def test_report_json_round_trip(source: Registry, gitlab: Registry) -> None:
    push(source.url, "team/a", oci_image([1000], seed=1), "v1", auth=SRC_CREDS)
    report = ecrcopy.copy_repository(
        f"{source.host}/team/a", f"{gitlab.host}/g/p/a", source_credentials=SRC_CREDS, destination_credentials=DST_CREDS
    )
    again = ecrcopy.CopyReport.model_validate_json(report.model_dump_json())
    assert again.images == report.images
    assert again.totals == report.totals and again.ok is report.ok
