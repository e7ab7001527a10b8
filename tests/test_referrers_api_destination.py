"""Destinations that serve the referrers API themselves need no fallback tag.

No registry packaged for this machine serves the referrers API as a destination (distribution 2.8
and GitLab do not), so these cases run against a small in-memory OCI registry behind
``httpx.MockTransport``: it stores manifests and blobs, answers ``GET /v2/<name>/referrers/<digest>``
from the ``subject`` of what was pushed, and (optionally) sends ``OCI-Subject`` on the push.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import httpx
import pytest

import ecrcopy
from ecrcopy.testing import oci_artifact, oci_image
from ecrcopy.testing._images import Image

INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class MemoryRegistry:
    """One host's repositories: manifests by digest and tag, blobs, and what to say about referrers."""

    referrers_api: bool = True
    sends_oci_subject: bool = True
    #: an API that answers 200 but never lists anything (a registry that only pretends)
    lists_nothing: bool = False
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)

    def put(self, repo: str, image: Image, tag: str | None = None) -> None:
        for blob in image.blobs:
            self.blobs[blob.digest] = blob.read()
        self.manifests[(repo, image.digest)] = (image.raw, image.media_type)
        if tag:
            self.tags[(repo, tag)] = image.digest

    def handle(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.log.append((method, path))
        if path == "/v2/":
            return httpx.Response(200)
        if t := re.fullmatch(r"/v2/(.+)/tags/list", path):
            return httpx.Response(200, json={"name": t[1], "tags": sorted(g for r, g in self.tags if r == t[1])})
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs|referrers)/([^/]+)", path)
        if m is None and (u := re.fullmatch(r"/v2/(.+)/blobs/uploads/(.*)", path)):
            if method == "POST":
                return httpx.Response(202, headers={"Location": f"/v2/{u[1]}/blobs/uploads/x1"})
            data = request.read()
            digest = request.url.params["digest"]
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
            self.blobs[digest] = data
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if m is None:
            return httpx.Response(404)
        repo, kind, ref = m.groups()
        if kind == "blobs":
            if ref not in self.blobs:
                return httpx.Response(404)
            body = self.blobs[ref] if method == "GET" else b""
            return httpx.Response(200, content=body, headers={"Content-Length": str(len(self.blobs[ref]))})
        if kind == "referrers":
            if not self.referrers_api:
                return httpx.Response(404)
            entries = []
            for (r, digest), (raw, media_type) in sorted(self.manifests.items()):
                body = json.loads(raw)
                if r == repo and (body.get("subject") or {}).get("digest") == ref and not self.lists_nothing:
                    entries.append(
                        {
                            "mediaType": media_type,
                            "digest": digest,
                            "size": len(raw),
                            "artifactType": body.get("artifactType"),
                        }
                    )
            index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
            return httpx.Response(200, json=index, headers={"Content-Type": INDEX})
        digest = self.tags.get((repo, ref), ref)
        if method == "PUT":
            raw = request.read()
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            self.manifests[(repo, digest)] = (raw, request.headers["content-type"])
            if not ref.startswith("sha256:"):
                self.tags[(repo, ref)] = digest
            headers = {"Docker-Content-Digest": digest}
            subject = json.loads(raw).get("subject")
            if subject and self.sends_oci_subject:
                headers["OCI-Subject"] = subject["digest"]
            return httpx.Response(201, headers=headers)
        if (repo, digest) not in self.manifests:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})
        raw, media_type = self.manifests[(repo, digest)]
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest, "Content-Length": str(len(raw))}
        return httpx.Response(200, content=raw if method == "GET" else b"", headers=headers)


def transport(hosts: dict[str, MemoryRegistry]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: hosts[request.url.host].handle(request))


def seeded() -> tuple[MemoryRegistry, Image, Image, Image]:
    src = MemoryRegistry()
    image = oci_image([300], seed=5)
    signature = oci_artifact(image, artifact_type="application/vnd.cncf.notary.signature", payload=b"s")
    sbom = oci_artifact(image, artifact_type="application/spdx+json", payload=b"{}")
    src.put("app", image, "v1")
    src.put("app", signature)
    src.put("app", sbom)
    return src, image, signature, sbom


async def run_copy(hosts: dict[str, MemoryRegistry]) -> ecrcopy.CopyReport:
    async with ecrcopy.Copier(
        ecrcopy.CopyOptions(retries=1), source_credentials=("u", "p"), transport=transport(hosts)
    ) as copier:
        return await copier.copy_repository("src.test/app", "dst.test/app")


@pytest.mark.anyio
@pytest.mark.parametrize("sends_oci_subject", [True, False])
async def test_destination_with_the_referrers_api_gets_no_fallback_tag(sends_oci_subject: bool) -> None:
    src, image, signature, sbom = seeded()
    dst = MemoryRegistry(sends_oci_subject=sends_oci_subject)

    report = await run_copy({"src.test": src, "dst.test": dst})

    assert report.ok, report.failed()
    assert dst.manifests[("app", signature.digest)][0] == signature.raw
    assert dst.manifests[("app", sbom.digest)][0] == sbom.raw
    assert ("app", image.digest.replace(":", "-")) not in dst.tags  # the API lists them: no fallback tag
    assert report.images[0].referrer_tags_written == 0
    assert {r.artifact_type for r in report.images[0].referrers} == {
        "application/vnd.cncf.notary.signature",
        "application/spdx+json",
    }
    # discovery used the source's referrers API
    assert ("GET", f"/v2/app/referrers/{image.digest}") in src.log
    asked_destination = ("GET", f"/v2/app/referrers/{image.digest}") in dst.log
    assert asked_destination is not sends_oci_subject  # without OCI-Subject the API itself is asked


@pytest.mark.anyio
async def test_an_api_that_lists_nothing_gets_the_fallback_tag() -> None:
    src, image, signature, sbom = seeded()
    dst = MemoryRegistry(sends_oci_subject=False, lists_nothing=True)

    report = await run_copy({"src.test": src, "dst.test": dst})

    assert report.ok
    fallback = dst.tags[("app", image.digest.replace(":", "-"))]
    listed = {d["digest"] for d in json.loads(dst.manifests[("app", fallback)][0])["manifests"]}
    assert listed == {signature.digest, sbom.digest}
