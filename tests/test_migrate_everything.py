"""Migrating everything from ECR: referrers (untagged, with ``subject``), cosign tags, untagged images."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import ecrcopy
from ecrcopy.testing import (
    EcrEmulator,
    GitLabEmulator,
    fetch_blob,
    fetch_manifest,
    list_tags,
    oci_image,
    oci_index,
)
from ecrcopy.testing._images import Image, Index
from tests.test_archived import tag_of
from tests.test_migrate import cli_env, migrate
from tests.test_referrers import REFERRERS_OF, fallback, signed_corpus


def at_destination(gl: GitLabEmulator, path: str, obj: Image | Index) -> None:
    repo = f"{gl.project_path}/{path}"
    raw, _, digest = fetch_manifest(gl.registry.url, repo, obj.digest, auth=gl.credentials)
    assert raw == obj.raw and digest == obj.digest
    if isinstance(obj, Index):
        for child in obj.children:
            at_destination(gl, path, child)
    else:
        for blob in obj.blobs:
            assert fetch_blob(gl.registry.url, repo, blob.digest, auth=gl.credentials) == blob.read()


def fallback_entries(gl: GitLabEmulator, path: str, subject: str) -> set[str]:
    raw, _, _ = fetch_manifest(gl.registry.url, f"{gl.project_path}/{path}", fallback(subject), auth=gl.credentials)
    return {entry["digest"] for entry in json.loads(raw)["manifests"]}


def tags_at(gl: GitLabEmulator, path: str) -> list[str]:
    try:
        return list_tags(gl.registry.url, f"{gl.project_path}/{path}", auth=gl.credentials)
    except Exception:
        return []


def seed_signed(ecr: EcrEmulator, repo: str) -> dict[str, Image | Index]:
    objs = signed_corpus()
    ecr.add_image(repo, objs["multi"], ["v1"])
    ecr.add_image(repo, objs["single"], ["v2"])
    for name in ("multi_sig", "amd_sig", "single_sig", "single_sbom", "sbom_sig"):
        ecr.add_image(repo, objs[name])  # untagged, with subject: as notation / ECR managed signing leave them
    cosign = oci_image([64], seed=75, platform="unknown/unknown")
    objs["cosign"] = cosign
    ecr.add_image(repo, cosign, [fallback(objs["single"].digest) + ".sig"])
    return objs


def run(tmp: Path, ecr: EcrEmulator, gl: GitLabEmulator, *args: str, name: str = "report") -> dict[str, Any]:
    path = tmp / f"{name}.json"
    proc = migrate("--report", str(path), *args, env=cli_env(ecr, gl))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report: dict[str, Any] = json.loads(path.read_text())
    report["stdout"] = proc.stdout
    return report


def test_migrate_brings_every_referrer_from_ecr(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gl") as gl:
        objs = seed_signed(ecr, "shop/api")
        ecr.reset_calls()

        report = run(tmp_path, ecr, gl)

        for name in ("multi_sig", "amd_sig", "single_sig", "single_sbom", "sbom_sig", "cosign"):
            at_destination(gl, "shop/api", objs[name])
        for subject, names in REFERRERS_OF.items():
            assert fallback_entries(gl, "shop/api", objs[subject].digest) == {objs[n].digest for n in names}
        assert fallback(objs["single"].digest) + ".sig" in tags_at(gl, "shop/api")
        # referrers are not images of their own: two tags, with their referrers
        assert sorted(tag_of(i["source"]) for i in report["images"]) == ["v1", "v2"]
        assert report["totals"]["referrers_copied"] == 6
        assert report["plan"]["referrers"] == 6
        assert report["plan"]["untagged_referrers"] == 5
        assert report["plan"]["untagged_index_children"] == 2
        assert report["plan"]["untagged_standalone"] == 0
        by_tag = {tag_of(i["source"]): i for i in report["images"]}
        assert {(r["digest"], r["artifact_type"]) for r in by_tag["v1"]["referrers"]} == {
            (objs["multi_sig"].digest, "application/vnd.cncf.notary.signature"),
            (objs["amd_sig"].digest, "application/vnd.cncf.notary.signature"),
        }
        assert "referrers: 6 copied" in report["stdout"]
        # DescribeImages named every referrer: no referrers API call was needed
        assert not [r for r in ecr.data_proxy.requests if "/referrers/" in r.path]

        # a rerun writes nothing
        gl.registry.reset()
        again = run(tmp_path, ecr, gl, name="again")
        assert gl.registry.writes() == []
        assert again["totals"]["referrers_existing"] == 6


def test_tag_filter_keeps_referrers_and_no_referrers_drops_them(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gl") as gl:
        objs = seed_signed(ecr, "shop/api")

        run(tmp_path, ecr, gl, "--tags", "v2")
        assert fallback_entries(gl, "shop/api", objs["single"].digest) == {
            objs["single_sig"].digest,
            objs["single_sbom"].digest,
        }
        at_destination(gl, "shop/api", objs["sbom_sig"])
        assert fallback(objs["single"].digest) + ".sig" in tags_at(gl, "shop/api")  # cosign tag followed v2
        assert fallback(objs["multi"].digest) not in tags_at(gl, "shop/api")

        report = run(tmp_path, ecr, gl, "--tags", "v1", "--no-referrers", name="bare")
        tags = tags_at(gl, "shop/api")
        assert "v1" in tags and fallback(objs["multi"].digest) not in tags
        assert report["totals"]["referrers_copied"] == 0
        for name in ("multi_sig", "amd_sig"):
            proc_repo = f"{gl.project_path}/shop/api"
            try:
                fetch_manifest(gl.registry.url, proc_repo, objs[name].digest, auth=gl.credentials)
            except Exception:
                continue
            raise AssertionError(f"{name} was copied with --no-referrers")


def test_untagged_tag_and_skip(tmp_path: Path) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gl") as gl:
        objs = seed_signed(ecr, "shop/api")
        loose = oci_image([700], seed=91)  # deployed by digest, never tagged
        loose_index = oci_index([oci_image([710], seed=92), oci_image([720], seed=93, platform="linux/arm64")])
        ecr.add_image("shop/api", loose)
        ecr.add_image("shop/api", loose_index)
        ecr.add_image("shop/web", oci_image([730], seed=94), ["latest"])
        ecr.add_image("shop/web", oci_image([740], seed=95))

        skipped = run(tmp_path, ecr, gl, "--dry-run", name="skip")
        assert skipped["plan"]["untagged_skipped"] == {"shop/api": 2, "shop/web": 1}
        assert skipped["plan"]["untagged_standalone"] == 3
        assert skipped["plan"]["untagged_index_children"] == 4  # two of objs["multi"], two of loose_index
        assert skipped["plan"]["untagged_referrers"] == 5
        assert "shop/api: 2 untagged standalone images not copied" in skipped["stdout"]

        report = run(tmp_path, ecr, gl, "--untagged", "tag")
        expected = {"untagged-" + loose.digest.split(":")[1], "untagged-" + loose_index.digest.split(":")[1]}
        api_tags = set(tags_at(gl, "shop/api"))
        assert expected <= api_tags
        assert not {t for t in api_tags if t.startswith("untagged-")} - expected  # children, referrers: no tag
        for tag, obj in zip(sorted(expected), sorted([loose, loose_index], key=lambda o: o.digest), strict=True):
            assert fetch_manifest(gl.registry.url, f"{gl.project_path}/shop/api", tag, auth=gl.credentials)[2] == (
                obj.digest
            )
        at_destination(gl, "shop/api", loose_index)
        assert report["plan"]["untagged_tagged"] == 3
        sources = {i["source"] for i in report["images"]}
        assert any(s.endswith("shop/api@" + loose.digest) for s in sources)
        assert objs["single_sig"].digest not in {s.split("@")[-1] for s in sources}

        gl.registry.reset()
        run(tmp_path, ecr, gl, "--untagged", "tag", name="again")
        assert gl.registry.writes() == []


SCHEMA_TAG = re.compile(r"/manifests/sha256-[0-9a-f]{64}$")


def copy_from_ecr(ecr: EcrEmulator, gl: GitLabEmulator, repo: str) -> ecrcopy.CopyReport:
    password, _ = ecr.issue_password()
    return ecrcopy.copy_repository(
        f"{ecr.data_host}/{repo}",
        f"{gl.registry_host}/{gl.project_path}/{repo}",
        source_credentials=("AWS", password),
        destination_credentials=gl.credentials,
    )


def test_copy_from_ecr_finds_referrers_through_its_api_page_by_page(tmp_path: Path) -> None:
    # ecrcopy copy has no DescribeImages listing: the referrers come from ECR's referrers API.
    with (
        EcrEmulator(tmp_path / "ecr", referrers_page_size=1) as ecr,
        GitLabEmulator(tmp_path / "gl") as gl,
    ):
        objs = seed_signed(ecr, "shop/api")

        report = copy_from_ecr(ecr, gl, "shop/api")

        assert report.ok, report.failed()
        for name in ("multi_sig", "amd_sig", "single_sig", "single_sbom", "sbom_sig", "cosign"):
            at_destination(gl, "shop/api", objs[name])
        for subject, names in REFERRERS_OF.items():
            assert fallback_entries(gl, "shop/api", objs[subject].digest) == {objs[n].digest for n in names}
        asked = [r for r in ecr.data_proxy.requests if "/referrers/" in r.path]
        assert asked and all(r.status == 200 for r in asked)
        # "single" has two referrers: with one per page, its listing took a second page
        single = [r for r in asked if r.path.endswith(objs["single"].digest)]
        assert len(single) == 2 and any("page=" in r.query for r in single)
        # the ECR source serves the API: the tag schema's sha256-<hex> tags are never asked for
        assert not [r for r in ecr.data_proxy.requests if SCHEMA_TAG.search(r.path)]
        assert report.totals.referrers_copied == 6


def test_copy_from_ecr_without_the_api_falls_back_and_migrate_does_not_need_it(tmp_path: Path) -> None:
    with (
        EcrEmulator(tmp_path / "ecr", referrers_api=False) as ecr,
        GitLabEmulator(tmp_path / "gl") as gl,
    ):
        objs = seed_signed(ecr, "shop/api")

        # A registry without the API and without fallback tags: only cosign's tag can be found.
        report = copy_from_ecr(ecr, gl, "shop/api")
        assert report.ok, report.failed()
        assert [r for r in ecr.data_proxy.requests if "/referrers/" in r.path and r.status == 404]
        # the tag schema: the tag list has no sha256-<hex> tag, so none is fetched
        assert [r for r in ecr.data_proxy.requests if r.path.endswith("/tags/list")]
        assert not [r for r in ecr.data_proxy.requests if SCHEMA_TAG.search(r.path)]
        at_destination(gl, "shop/api", objs["cosign"])
        assert report.totals.referrers_copied == 1

        # The migration knows every referrer from DescribeImages (subjectManifestDigest).
        ecr.data_proxy.reset()
        run(tmp_path, ecr, gl)
        for name in ("multi_sig", "amd_sig", "single_sig", "single_sbom", "sbom_sig"):
            at_destination(gl, "shop/api", objs[name])
        for subject, names in REFERRERS_OF.items():
            assert fallback_entries(gl, "shop/api", objs[subject].digest) == {objs[n].digest for n in names}
        assert not [r for r in ecr.data_proxy.requests if "/referrers/" in r.path]
