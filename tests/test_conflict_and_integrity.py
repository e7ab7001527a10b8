"""Conflict policy and digest verification against real registries."""

from __future__ import annotations

import pytest

import ecrcopy
from ecrcopy.testing import PushError, Registry, corrupt_blob, fetch_manifest, oci_image, push

from .conftest import DST_CREDS, SRC_CREDS


def _copy(source: Registry, gitlab: Registry, **options: object) -> ecrcopy.CopyReport:
    return ecrcopy.copy_repository(
        f"{source.host}/team/app",
        f"{gitlab.host}/group/project/app",
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
        options=ecrcopy.CopyOptions.model_validate(options),
    )


def test_conflict_fail_by_default_then_overwrite(source: Registry, gitlab: Registry) -> None:
    wanted = oci_image([1000], seed=1)
    occupant = oci_image([1001], seed=2)
    push(source.url, "team/app", wanted, "v1", auth=SRC_CREDS)
    push(gitlab.url, "group/project/app", occupant, "v1", auth=DST_CREDS)
    gitlab.reset()

    report = _copy(source, gitlab)

    assert not report.ok
    (image,) = report.images
    assert image.status == "failed" and image.reason == "conflict"
    assert occupant.digest in (image.error or "") and wanted.digest in (image.error or "")
    assert fetch_manifest(gitlab.url, "group/project/app", "v1", auth=DST_CREDS)[2] == occupant.digest
    assert gitlab.writes() == []  # untouched: not even a blob was written

    skipped = _copy(source, gitlab, on_conflict="skip")
    assert skipped.ok and skipped.images[0].status == "skipped" and skipped.images[0].reason == "conflict"
    assert fetch_manifest(gitlab.url, "group/project/app", "v1", auth=DST_CREDS)[2] == occupant.digest

    overwritten = _copy(source, gitlab, on_conflict="overwrite")
    assert overwritten.ok and overwritten.images[0].status == "copied"
    assert fetch_manifest(gitlab.url, "group/project/app", "v1", auth=DST_CREDS)[2] == wanted.digest


def test_corrupt_source_blob_fails_that_image_only(source: Registry, gitlab: Registry) -> None:
    good = oci_image([50_000], seed=10)
    bad = oci_image([60_000, 70_000], seed=11)
    push(source.url, "team/app", good, "good", auth=SRC_CREDS)
    push(source.url, "team/app", bad, "bad", auth=SRC_CREDS)
    broken_layer = bad.layers[1]
    corrupt_blob(source, broken_layer.digest, offset=1000)
    gitlab.reset()

    report = _copy(source, gitlab)

    results = {i.source.rsplit(":", 1)[1]: i for i in report.images}
    assert results["good"].status == "copied"
    assert results["bad"].status == "failed"
    assert results["bad"].reason == "digest_mismatch"
    assert broken_layer.digest in (results["bad"].error or "")
    # no manifest written for the bad image, and the corrupted blob never stored under its digest
    assert all("/manifests/bad" not in r.path and bad.digest not in r.path for r in gitlab.manifest_puts())
    with pytest.raises(PushError):
        fetch_manifest(gitlab.url, "group/project/app", "bad", auth=DST_CREDS)
    assert not any(broken_layer.digest.replace(":", "%3A") in r.query and r.status == 201 for r in gitlab.requests())
    assert fetch_manifest(gitlab.url, "group/project/app", "good", auth=DST_CREDS)[2] == good.digest
