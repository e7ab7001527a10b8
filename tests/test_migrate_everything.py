"""Migrating everything from ECR: referrers (untagged, with ``subject``), cosign tags, untagged images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
