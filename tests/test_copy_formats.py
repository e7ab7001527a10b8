"""Every manifest format arrives byte-identical, with every child and blob present."""

from __future__ import annotations

import hashlib
import json

import ecrcopy
from ecrcopy.testing import (
    Registry,
    docker_image,
    docker_manifest_list,
    fetch_blob,
    fetch_manifest,
    oci_image,
    oci_index,
    push,
)

from .conftest import DST_CREDS, SRC_CREDS


def _assert_same_tree(source: Registry, gitlab: Registry, src_repo: str, dst_repo: str, ref: str) -> None:
    raw_src, type_src, digest_src = fetch_manifest(source.url, src_repo, ref, auth=SRC_CREDS)
    raw_dst, type_dst, digest_dst = fetch_manifest(gitlab.url, dst_repo, ref, auth=DST_CREDS)
    assert raw_dst == raw_src
    assert digest_dst == digest_src
    assert type_dst == type_src
    body = json.loads(raw_src)
    for child in body.get("manifests", []):
        _assert_same_tree(source, gitlab, src_repo, dst_repo, child["digest"])
    for blob in [body["config"], *body["layers"]] if "config" in body else []:
        data = fetch_blob(gitlab.url, dst_repo, blob["digest"], auth=DST_CREDS)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
        assert len(data) == blob["size"]


def test_copy_every_manifest_format(source: Registry, gitlab: Registry) -> None:
    images = {
        "docker-v2": docker_image([2048, 4096], seed=1),
        "oci": oci_image([3000], seed=2),
        "oci-index": oci_index(
            [oci_image([1500], seed=3, platform="linux/amd64"), oci_image([1600], seed=4, platform="linux/arm64/v8")]
        ),
        "manifest-list": docker_manifest_list(
            [docker_image([1700], seed=5, platform="linux/amd64"), docker_image([1800], seed=6, platform="linux/s390x")]
        ),
    }
    for tag, obj in images.items():
        push(source.url, "team/app", obj, tag, auth=SRC_CREDS)

    report = ecrcopy.copy_repository(
        f"{source.host}/team/app",
        f"{gitlab.host}/group/project/app",
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
    )

    assert report.ok
    assert sorted(i.destination.rsplit(":", 1)[1] for i in report.images) == sorted(images)
    assert {i.status for i in report.images} == {"copied"}
    for image in report.images:
        tag = image.source.rsplit(":", 1)[1]
        assert image.digest == images[tag].digest
        _assert_same_tree(source, gitlab, "team/app", "group/project/app", tag)
    # children pushed by digest before the index; the index itself by tag, last for its image
    puts = [r.path for r in gitlab.manifest_puts()]
    for index_tag in ("oci-index", "manifest-list"):
        index = images[index_tag]
        tag_position = puts.index(f"/v2/group/project/app/manifests/{index_tag}")
        for child in index.children:
            assert puts.index(f"/v2/group/project/app/manifests/{child.digest}") < tag_position


def test_copy_single_image_by_digest_to_repository(source: Registry, gitlab: Registry) -> None:
    image = oci_image([1234], seed=9)
    push(source.url, "team/app", image, "v1", auth=SRC_CREDS)

    report = ecrcopy.copy_image(
        f"{source.host}/team/app@{image.digest}",
        f"{gitlab.host}/group/project/app",
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
    )

    assert report.ok and report.images[0].status == "copied"
    assert report.images[0].destination.endswith(f"@{image.digest}")
    raw, _, digest = fetch_manifest(gitlab.url, "group/project/app", image.digest, auth=DST_CREDS)
    assert digest == image.digest and raw == image.raw
