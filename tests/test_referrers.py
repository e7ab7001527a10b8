"""Signatures, attestations and SBOMs (OCI 1.1 referrers) follow the images they refer to."""

from __future__ import annotations

import json

import anyio
import pytest

import ecrcopy
from ecrcopy.testing import (
    Registry,
    fetch_blob,
    fetch_manifest,
    list_tags,
    oci_artifact,
    oci_image,
    oci_index,
    push,
    referrers_index,
)
from ecrcopy.testing._images import Image, Index

from .conftest import DST_CREDS, SRC_CREDS

NOTATION = "application/vnd.cncf.notary.signature"
SBOM = "application/spdx+json"


def fallback(digest: str) -> str:
    return digest.replace(":", "-")


def assert_at(registry: Registry, repo: str, obj: Image | Index, auth: tuple[str, str]) -> None:
    """``obj`` is at ``registry`` by digest, byte-identical, with every blob and child."""
    raw, _, digest = fetch_manifest(registry.url, repo, obj.digest, auth=auth)
    assert raw == obj.raw and digest == obj.digest
    if isinstance(obj, Index):
        for child in obj.children:
            assert_at(registry, repo, child, auth)
        return
    for blob in obj.blobs:
        assert fetch_blob(registry.url, repo, blob.digest, auth=auth) == blob.read()


def listed(registry: Registry, repo: str, subject: str, auth: tuple[str, str]) -> dict[str, dict[str, object]]:
    raw, media_type, _ = fetch_manifest(registry.url, repo, fallback(subject), auth=auth)
    assert media_type == "application/vnd.oci.image.index.v1+json"
    return {entry["digest"]: entry for entry in json.loads(raw)["manifests"]}


def signed_corpus() -> dict[str, Image | Index]:
    """A multi-arch image and a single-arch image, signed, with an SBOM and a signature of the SBOM."""
    amd = oci_image([1200], seed=71, platform="linux/amd64")
    arm = oci_image([1300], seed=72, platform="linux/arm64")
    multi = oci_index([amd, arm])
    single = oci_image([1400, 900], seed=73)
    objs: dict[str, Image | Index] = {"multi": multi, "single": single, "amd": amd}
    objs["multi_sig"] = oci_artifact(
        multi, artifact_type=NOTATION, payload=b"sig-multi", annotations={"io.cncf.notary.x509chain.thumbprint": "ab"}
    )
    objs["amd_sig"] = oci_artifact(amd, artifact_type=NOTATION, payload=b"sig-amd")
    objs["single_sig"] = oci_artifact(single, artifact_type=NOTATION, payload=b"sig-single")
    objs["single_sbom"] = oci_artifact(single, artifact_type=SBOM, payload=b'{"spdxVersion":"SPDX-2.3"}')
    objs["sbom_sig"] = oci_artifact(objs["single_sbom"], artifact_type=NOTATION, payload=b"sig-sbom")
    return objs


REFERRERS_OF = {
    "multi": ["multi_sig"],
    "amd": ["amd_sig"],
    "single": ["single_sig", "single_sbom"],
    "single_sbom": ["sbom_sig"],
}


def seed_without_api(source: Registry, repo: str, objs: dict[str, Image | Index]) -> None:
    """A source without the referrers API: referrers untagged, listed by fallback tags; cosign ``.sig``."""
    push(source.url, repo, objs["multi"], "v1", auth=SRC_CREDS)
    push(source.url, repo, objs["single"], "v2", auth=SRC_CREDS)
    push(source.url, repo, oci_image([10], seed=79), "other", auth=SRC_CREDS)
    for subject, names in REFERRERS_OF.items():
        index = referrers_index([objs[n] for n in names])
        push(source.url, repo, index, fallback(objs[subject].digest), auth=SRC_CREDS)
    cosign = oci_image([64], seed=74, platform="unknown/unknown")
    objs["cosign"] = cosign
    push(source.url, repo, cosign, fallback(objs["single"].digest) + ".sig", auth=SRC_CREDS)


def copy(source: Registry, gitlab: Registry, **kwargs: object) -> ecrcopy.CopyReport:
    options = kwargs.pop("options", None)
    return ecrcopy.copy_repository(
        f"{source.host}/team/app",
        f"{gitlab.host}/group/project/app",
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
        options=options,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def test_referrers_from_a_source_without_the_api(source: Registry, gitlab: Registry) -> None:
    objs = signed_corpus()
    seed_without_api(source, "team/app", objs)

    report = copy(source, gitlab)

    assert report.ok, report.failed()
    dst = "group/project/app"
    for name in ("multi_sig", "amd_sig", "single_sig", "single_sbom", "sbom_sig"):
        assert_at(gitlab, dst, objs[name], DST_CREDS)
    for subject, names in REFERRERS_OF.items():
        entries = listed(gitlab, dst, objs[subject].digest, DST_CREDS)
        assert set(entries) == {objs[n].digest for n in names}
        for n in names:
            assert entries[objs[n].digest]["artifactType"] == objs[n].manifest["artifactType"]
            assert entries[objs[n].digest]["size"] == objs[n].size
    assert listed(gitlab, dst, objs["multi"].digest, DST_CREDS)[objs["multi_sig"].digest]["annotations"] == {
        "io.cncf.notary.x509chain.thumbprint": "ab"
    }
    cosign_tag = fallback(objs["single"].digest) + ".sig"
    assert fetch_manifest(gitlab.url, dst, cosign_tag, auth=DST_CREDS)[2] == objs["cosign"].digest
    # schema tags follow their subject; they are not images of their own in the report
    by_tag = {i.source.rsplit(":", 1)[1]: i for i in report.images}
    assert sorted(by_tag) == ["other", "v1", "v2"]
    assert {r.digest for r in by_tag["v1"].referrers} == {objs["multi_sig"].digest, objs["amd_sig"].digest}
    v2 = {r.digest: r for r in by_tag["v2"].referrers}
    assert set(v2) == {objs[n].digest for n in ("single_sig", "single_sbom", "sbom_sig", "cosign")}
    assert v2[objs["sbom_sig"].digest].subject == objs["single_sbom"].digest
    assert report.totals.referrers_copied == 6

    # a rerun writes nothing
    gitlab.reset()
    again = copy(source, gitlab)
    assert again.ok
    assert gitlab.writes() == []
    assert again.totals.referrers_copied == 0 and again.totals.referrers_existing == 6


def test_tag_selection_still_brings_referrers_and_no_referrers_brings_none(source: Registry, gitlab: Registry) -> None:
    objs = signed_corpus()
    seed_without_api(source, "team/app", objs)

    report = copy(source, gitlab, tags=["v2"])
    assert report.ok
    dst = "group/project/app"
    assert set(listed(gitlab, dst, objs["single"].digest, DST_CREDS)) == {
        objs["single_sig"].digest,
        objs["single_sbom"].digest,
    }
    assert_at(gitlab, dst, objs["sbom_sig"], DST_CREDS)
    assert fallback(objs["single"].digest) + ".sig" in list_tags(gitlab.url, dst, auth=DST_CREDS)

    report = copy(source, gitlab, tag_pattern="v1", options=ecrcopy.CopyOptions(referrers=False))
    assert report.ok
    tags = list_tags(gitlab.url, dst, auth=DST_CREDS)
    assert fallback(objs["multi"].digest) not in tags
    assert report.images[0].referrers == []


@pytest.mark.anyio
async def test_two_writers_of_one_fallback_tag_both_survive(source: Registry, gitlab: Registry) -> None:
    """Two shards (here two copiers at once) add different referrers of one subject: both stay listed."""
    image = oci_image([500], seed=81)
    push(source.url, "one/app", image, "v1", auth=SRC_CREDS)
    push(source.url, "two/app", image, "v1", auth=SRC_CREDS)
    first = oci_artifact(image, artifact_type=NOTATION, payload=b"first")
    second = oci_artifact(image, artifact_type=SBOM, payload=b"second")
    push(source.url, "one/app", referrers_index([first]), fallback(image.digest), auth=SRC_CREDS)
    push(source.url, "two/app", referrers_index([second]), fallback(image.digest), auth=SRC_CREDS)
    # a referrer written by another tool is already listed at the destination: it survives as well
    third = oci_artifact(image, artifact_type="application/vnd.example+type", payload=b"third")
    push(gitlab.url, "group/project/app", image, "v1", auth=DST_CREDS)
    push(gitlab.url, "group/project/app", referrers_index([third]), fallback(image.digest), auth=DST_CREDS)

    async def shard(repo: str) -> ecrcopy.CopyReport:
        async with ecrcopy.Copier(
            ecrcopy.CopyOptions(on_conflict="skip"), source_credentials=SRC_CREDS, destination_credentials=DST_CREDS
        ) as copier:
            return await copier.copy_repository(f"{source.host}/{repo}", f"{gitlab.host}/group/project/app")

    reports: list[ecrcopy.CopyReport] = []

    async def run(repo: str) -> None:
        reports.append(await shard(repo))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "one/app")
        tg.start_soon(run, "two/app")

    assert all(r.ok for r in reports)
    entries = listed(gitlab, "group/project/app", image.digest, DST_CREDS)
    assert set(entries) == {first.digest, second.digest, third.digest}


def test_two_tags_of_one_signed_image_push_each_referrer_once(source: Registry, gitlab: Registry) -> None:
    objs = signed_corpus()
    seed_without_api(source, "team/app", objs)
    push(source.url, "team/app", objs["multi"], "latest", auth=SRC_CREDS)  # v1 and latest: one index

    report = copy(source, gitlab)

    assert report.ok
    puts = [r.path.rsplit("/", 1)[1] for r in gitlab.manifest_puts()]
    for name in ("multi_sig", "amd_sig"):
        assert puts.count(objs[name].digest) == 1
    assert report.totals.referrers_copied == 6
    by_tag = {i.source.rsplit(":", 1)[1]: i for i in report.images}
    assert {r.status for r in by_tag["v1"].referrers} | {r.status for r in by_tag["latest"].referrers} == {
        "copied",
        "existing",
    }
    assert fallback(objs["multi"].digest) in puts and puts.count(fallback(objs["multi"].digest)) == 1
