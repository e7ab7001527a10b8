"""Pure referrer, untagged-image and verify logic, with hypothesis."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecrcopy import _mediatypes as mt
from ecrcopy._exceptions import UnsupportedManifest
from ecrcopy._models import Manifest
from ecrcopy._plan import EcrImage, EcrRepository, MigrationOptions, build_plan, classify_untagged, referrer_hints
from ecrcopy._referrers import (
    cosign_tags,
    fallback_tag,
    merge_referrers_index,
    parse_referrers_index,
    referrer_descriptor,
    subject_of,
    subject_of_tag,
    untagged_tag,
)
from ecrcopy._verify_report import VerifiedImage, VerifyReport, compare_digests, render_verify_table, verify_junit_xml

OCI_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
hexes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
digests = hexes.map(lambda h: f"sha256:{h}")


def descriptor(digest: str, artifact_type: str = "application/vnd.example") -> dict[str, object]:
    return {"mediaType": mt.OCI_MANIFEST, "digest": digest, "size": 10, "artifactType": artifact_type}


@given(digests)
def test_schema_tags_round_trip(digest: str) -> None:
    tag = fallback_tag(digest)
    assert OCI_TAG.fullmatch(tag)
    assert subject_of_tag(tag) == (digest, "")
    for cosign, suffix in zip(cosign_tags(digest), (".sig", ".att", ".sbom"), strict=True):
        assert OCI_TAG.fullmatch(cosign)
        assert subject_of_tag(cosign) == (digest, suffix)


@given(st.text(max_size=140))
def test_other_tags_name_no_subject(tag: str) -> None:
    named = subject_of_tag(tag)
    if named is not None:
        assert tag in (fallback_tag(named[0]), *cosign_tags(named[0]))


@given(digests)
def test_untagged_tag_is_valid_deterministic_and_never_the_referrers_schema(digest: str) -> None:
    tag = untagged_tag(digest)
    assert OCI_TAG.fullmatch(tag)
    assert tag == untagged_tag(digest)
    assert digest.split(":")[1][:12] in tag
    assert subject_of_tag(tag) is None
    assert not tag.startswith("sha256-")


def test_untagged_tag_of_sha512_fits_a_tag() -> None:
    tag = untagged_tag("sha512:" + "a" * 128)
    assert OCI_TAG.fullmatch(tag) and tag.startswith("untagged-sha512-")


@given(st.lists(digests, max_size=6, unique=True), st.lists(digests, max_size=6, unique=True))
def test_merge_keeps_what_is_listed_adds_the_rest_and_is_idempotent(existing: list[str], added: list[str]) -> None:
    current = None
    if existing:
        raw = json.dumps(
            {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [descriptor(d) for d in existing]}
        )
        current = Manifest.from_bytes(raw.encode())
    merged = merge_referrers_index(current, [descriptor(d, "new") for d in added])
    if current is not None and set(added) <= set(existing):
        assert merged is None  # nothing to write
        return
    assert merged is not None
    listed = [d["digest"] for d in json.loads(merged)["manifests"]]
    assert listed[: len(existing)] == existing  # kept, in order
    assert set(listed) == set(existing) | set(added)
    assert len(listed) == len(set(listed))
    again = merge_referrers_index(Manifest.from_bytes(merged), [descriptor(d, "new") for d in added])
    assert again is None
    # two writers computing from the same inputs write the same bytes
    assert merge_referrers_index(current, [descriptor(d, "new") for d in reversed(added)]) == merged


def test_merge_never_overwrites_a_tag_that_is_not_an_index() -> None:
    image = Manifest.from_bytes(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {}}).encode())
    with pytest.raises(UnsupportedManifest):
        merge_referrers_index(image, [descriptor("sha256:" + "1" * 64)])


def test_parse_referrers_drops_junk_entries() -> None:
    good = descriptor("sha256:" + "2" * 64)
    body = {"manifests": [good, {"digest": "nope"}, 7, {**good, "mediaType": "text/plain"}, good]}
    assert [d.digest for d in parse_referrers_index(json.dumps(body).encode())] == [good["digest"]]
    with pytest.raises(UnsupportedManifest):
        parse_referrers_index(b"[]")


def test_referrer_descriptor_uses_artifact_type_else_config_type() -> None:
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "3" * 64, "size": 5}
    config = {"mediaType": "application/vnd.example.config", "digest": "sha256:" + "4" * 64, "size": 2}
    body = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": [], "subject": subject}
    plain = Manifest.from_bytes(json.dumps(body).encode())
    assert referrer_descriptor(plain)["artifactType"] == "application/vnd.example.config"
    assert subject_of(plain) == subject["digest"]
    typed = Manifest.from_bytes(json.dumps({**body, "artifactType": "x/y", "annotations": {"a": "b"}}).encode())
    assert referrer_descriptor(typed) == {
        "mediaType": mt.OCI_MANIFEST,
        "digest": typed.digest,
        "size": typed.size,
        "artifactType": "x/y",
        "annotations": {"a": "b"},
    }


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_classify_untagged_and_plan_untagged_tag() -> None:
    d = [f"sha256:{i:064x}" for i in range(10)]
    repo = EcrRepository(
        "app",
        (
            EcrImage(d[0], ("v1",), 10, T0, mt.OCI_INDEX),  # an index over d1, d2
            EcrImage(d[1], (), 5, T0, mt.OCI_MANIFEST),
            EcrImage(d[2], (), 5, T0, mt.OCI_MANIFEST),
            EcrImage(d[3], (), 1, T0, mt.OCI_MANIFEST, subject_digest=d[1]),  # a signature of a child
            EcrImage(d[4], (), 7, T0, mt.OCI_MANIFEST),  # standalone
            EcrImage(d[5], (), 9, T0, mt.OCI_INDEX),  # standalone index over d6
            EcrImage(d[6], (), 3, T0, mt.OCI_MANIFEST),
            EcrImage(d[7], (), 3, T0, mt.OCI_INDEX, subject_digest=d[0]),  # a referrer index over d8
            EcrImage(d[8], (), 3, T0, mt.OCI_MANIFEST),
            EcrImage(d[9], (fallback_tag(d[0]) + ".sig",), 1, T0, mt.OCI_MANIFEST),  # cosign
        ),
        index_children={d[0]: (d[1], d[2]), d[5]: (d[6],), d[7]: (d[8],)},
    )
    assert repo.needs_index_children()
    kinds = classify_untagged(repo)
    assert {i.digest for i in kinds.standalone} == {d[4], d[5]}
    assert kinds.index_children == 3 and kinds.referrers == 3  # d8 belongs to the referrer index d7

    skip = build_plan([repo], MigrationOptions())
    assert [p.tag for p in skip.images] == ["v1"]  # the cosign tag follows its subject
    assert skip.summary.untagged_skipped == {"app": 2} and skip.summary.referrers == 3
    tag = build_plan([repo], MigrationOptions(untagged="tag"))
    assert sorted(p.tag for p in tag.images) == sorted(["v1", untagged_tag(d[4]), untagged_tag(d[5])])
    assert all(p.untagged == p.tag.startswith("untagged-") for p in tag.images)
    assert tag.summary.untagged_skipped == {} and tag.summary.untagged_tagged == 2
    hints = referrer_hints(repo)
    assert hints.subjects == {d[1]: (d[3],), d[0]: (d[7],)}
    assert hints.tags == frozenset({"v1", fallback_tag(d[0]) + ".sig"})


@given(digests, st.one_of(st.none(), digests))
def test_compare_digests(source: str, destination: str | None) -> None:
    status = compare_digests(source, destination)
    assert status == ("missing" if destination is None else "identical" if destination == source else "different")


def test_verify_report_table_and_junit() -> None:
    report = VerifyReport(
        deep=True,
        images=[
            VerifiedImage(source="s/a:1", destination="d/a:1", digest="sha256:" + "1" * 64, status="identical"),
            VerifiedImage(source="s/a:2", destination="d/a:2", digest="sha256:" + "2" * 64, status="missing"),
            VerifiedImage(
                source="s/b:1",
                destination="d/b:1",
                status="incomplete",
                missing=["blob sha256:" + "3" * 64, "referrer x"],
            ),
        ],
    ).finish()
    assert not report.ok
    table = render_verify_table(report)
    assert "MISSING s/a:2 -> d/a:2" in table and "INCOMPLETE s/b:1" in table
    assert "verify (deep): DIFFERENT: 3 images, 1 identical, 1 missing" in table
    xml = verify_junit_xml(report)
    assert 'failures="2"' in xml and 'tests="3"' in xml
