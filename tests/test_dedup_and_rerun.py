"""Each unique blob is uploaded once per run (counted from the registry's own access log), and a
second run writes nothing."""

from __future__ import annotations

import anyio
import pytest

import ecrcopy
from ecrcopy.testing import Blob, Image, Index, Registry, oci_image, oci_index, push

from .conftest import DST_CREDS, SRC_CREDS


def _seed_shared(source: Registry) -> tuple[set[str], int]:
    """Two repositories built on the same base layers.

    Returns every unique blob digest, and how many (image manifest, blob) references there are.
    """
    base = [Blob.generated(200_000, seed=100), Blob.generated(150_000, seed=101)]
    objects = {
        ("svc/alpha", "v1"): oci_image([*base, 5000], seed=1),
        ("svc/alpha", "v2"): oci_image([*base, 6000], seed=2),
        ("svc/beta", "v1"): oci_image([*base, 7000], seed=3),
        ("svc/beta", "multi"): oci_index(
            [
                oci_image([*base, 8000], seed=4, platform="linux/amd64"),
                oci_image([base[0], 9000], seed=5, platform="linux/arm64"),
            ]
        ),
    }
    unique: set[str] = set()
    references = 0
    for (repo, tag), obj in objects.items():
        push(source.url, repo, obj, tag, auth=SRC_CREDS)
        unique.update(b.digest for b in obj.blobs)
        for image in obj.children if isinstance(obj, Index) else (obj,):
            assert isinstance(image, Image)
            references += len({b.digest for b in image.blobs})
    return unique, references


async def _copy_both(source: Registry, gitlab: Registry) -> ecrcopy.CopyReport:
    reports: list[ecrcopy.CopyReport] = []
    async with ecrcopy.Copier(source_credentials=SRC_CREDS, destination_credentials=DST_CREDS) as copier:

        async def one(repo: str) -> None:
            reports.append(await copier.copy_repository(f"{source.host}/{repo}", f"{gitlab.host}/group/project/{repo}"))

        async with anyio.create_task_group() as tg:  # both repositories at once: single-flight matters
            tg.start_soon(one, "svc/alpha")
            tg.start_soon(one, "svc/beta")
    return ecrcopy.CopyReport.merge(reports)


@pytest.mark.anyio
async def test_unique_blobs_uploaded_once_and_rerun_writes_nothing(source: Registry, gitlab: Registry) -> None:
    unique, references = _seed_shared(source)
    gitlab.reset()

    report = await _copy_both(source, gitlab)

    assert report.ok, report.failed()
    assert report.totals.copied == 4
    uploads = gitlab.blob_uploads()
    mounts = gitlab.mounts()
    # the registry's own log: every unique blob uploaded exactly once, the rest mounted or found
    assert uploads == len(unique)
    upload_digests = [
        q.split("digest=")[1].split("&")[0].replace("%3A", ":")
        for q in (r.query for r in gitlab.requests() if r.method == "PUT" and r.status == 201 and "digest=" in r.query)
    ]
    assert sorted(upload_digests) == sorted(unique)
    assert len(mounts) >= 1  # the second repository mounts the shared base layers
    totals = report.totals
    assert totals.blobs_uploaded == uploads
    assert totals.blobs_mounted == len(mounts)
    assert totals.blobs_uploaded + totals.blobs_mounted + totals.blobs_existing == references
    assert totals.bytes_uploaded > 0

    # second run: zero blob uploads, zero manifest PUTs, every image skipped
    gitlab.reset()
    rerun = await _copy_both(source, gitlab)
    assert rerun.ok
    assert {i.status for i in rerun.images} == {"skipped"}
    assert {i.reason for i in rerun.images} == {"up-to-date"}
    assert gitlab.writes() == []
    assert gitlab.blob_uploads() == 0 and gitlab.manifest_puts() == []
    blob_requests = [r for r in gitlab.requests() if "/blobs/" in r.path]
    assert blob_requests == []
    assert rerun.totals.blobs_uploaded == 0 and rerun.totals.manifests_pushed == 0
