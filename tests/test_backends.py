"""Every HTTP backend moves the same images the same way.

A migration from the ECR emulation (Basic ``AWS:<token>``, blob reads 307-redirected to an S3
stand-in that refuses ``Authorization``) into the GitLab emulation (token auth), with monolithic
and chunked uploads, a cross-repository mount, a multi-platform index, and a rerun that writes
nothing: through ecrcopy's HTTP/1.1 transport (the default), aiohttp's, and httpx's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import ecrcopy
from ecrcopy.testing import EcrEmulator, GitLabEmulator, oci_image, oci_index
from ecrcopy.testing._images import Blob
from tests.test_migrate import cli_env, digest_at, source_digest

KiB = 1024


@pytest.mark.parametrize("backend", ["http11", "aiohttp", "httpx"])
def test_every_backend_migrates_the_same_bytes(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with EcrEmulator(tmp_path / "ecr") as ecr, GitLabEmulator(tmp_path / "gl") as gl:
        shared = Blob.generated(700 * KiB, seed=900)  # a base layer both repositories share: uploaded once
        ecr.add_image("team/api", oci_image([shared, 300 * KiB], seed=1), ["v1"])
        ecr.add_image(
            "team/web",
            oci_index([oci_image([shared, 90 * KiB], seed=2), oci_image([40 * KiB], seed=3, platform="linux/arm64")]),
            ["v1", "latest"],
        )
        for key, value in cli_env(ecr, gl).items():
            monkeypatch.setenv(key, value)
        # blobs over 256 KiB go up in 128 KiB PATCHes: both upload paths in one run
        options = ecrcopy.CopyOptions(http_backend=backend, monolithic_threshold=256 * KiB, chunk_size=128 * KiB)

        report = ecrcopy.migrate(copy_options=options)
        assert report.ok, report
        for repo, tag in (("team/api", "v1"), ("team/web", "v1"), ("team/web", "latest")):
            assert digest_at(gl, repo, tag) == source_digest(ecr, repo, tag)
        assert gl.registry.blob_uploads() == 7  # every unique blob once; the shared layer then mounted
        assert len([m for m in gl.registry.mounts() if m.status == 201]) == 1
        assert ecr.blob_server.rejected_auth == 0  # no credentials went to object storage

        writes = len(gl.registry.writes())
        again = ecrcopy.migrate(copy_options=options)
        assert again.ok and len(gl.registry.writes()) == writes  # the rerun writes nothing
