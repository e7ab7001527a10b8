"""Chunked uploads above the threshold, and memory that stays flat for a 512 MiB blob."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ecrcopy
from ecrcopy.testing import Blob, Registry, TokenServer, fetch_blob, fetch_manifest, oci_image, push

from .conftest import DST_CREDS, DST_PASSWORD, DST_USER, SRC_CREDS

MiB = 1024 * 1024


def test_chunked_upload_above_threshold(source: Registry, gitlab: Registry) -> None:
    big = Blob.generated(3 * MiB + 12345, seed=7)
    small = Blob.generated(100_000, seed=8)
    image = oci_image([big, small], seed=1)
    push(source.url, "team/app", image, "big", auth=SRC_CREDS)
    gitlab.reset()

    report = ecrcopy.copy_image(
        f"{source.host}/team/app:big",
        f"{gitlab.host}/group/project/app",
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
        options=ecrcopy.CopyOptions(monolithic_threshold=1 * MiB, chunk_size=1 * MiB),
    )

    assert report.ok
    requests = gitlab.requests()
    patches = [r for r in requests if r.method == "PATCH" and r.status == 202]
    assert len(patches) == 4  # 3 MiB + 12345 bytes in 1 MiB chunks
    assert len({r.path for r in patches}) == 1  # one upload session
    monolithic = [r for r in requests if r.method == "PUT" and r.status == 201 and "/blobs/uploads/" in r.path]
    assert len(monolithic) == 3  # big (after its chunks), small, config
    data = fetch_blob(gitlab.url, "group/project/app", big.digest, auth=DST_CREDS)
    assert "sha256:" + hashlib.sha256(data).hexdigest() == big.digest
    assert fetch_manifest(gitlab.url, "group/project/app", "big", auth=DST_CREDS)[2] == image.digest


_CHILD = textwrap.dedent(
    """
    import json, sys
    import ecrcopy
    src, dst, su, sp, du, dp = sys.argv[1:7]
    report = ecrcopy.copy_image(src, dst, source_credentials=(su, sp), destination_credentials=(du, dp))
    # VmHWM: peak RSS of this program image. (ru_maxrss would also count the forked parent's pages
    # that were resident before exec.)
    peak_kib = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
    print(json.dumps({"ok": report.ok, "peak_mb": peak_kib / 1024, "bytes": report.totals.bytes_uploaded,
                      "status": report.images[0].status, "error": report.images[0].error}))
    """
)


@pytest.mark.slow
def test_512_mib_blob_with_flat_memory(tmp_path: Path) -> None:
    size = 512 * MiB
    layer = Blob.generated(size, seed=512)
    image = oci_image([layer], seed=512)
    with (
        Registry(tmp_path / "src", htpasswd={SRC_CREDS[0]: SRC_CREDS[1]}) as source,
        TokenServer(users={DST_USER: DST_PASSWORD}) as tokens,
        Registry(tmp_path / "dst", token_auth=tokens) as gitlab,
    ):
        push(source.url, "team/big", image, "v1", auth=SRC_CREDS)
        gitlab.reset()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                f"{source.host}/team/big:v1",
                f"{gitlab.host}/group/project/big",
                *SRC_CREDS,
                *DST_CREDS,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["ok"], result
        assert result["bytes"] >= size
        assert result["peak_mb"] < 150, f"peak RSS {result['peak_mb']:.0f} MB for a 512 MiB blob"
        # the default options stream it in chunks
        assert sum(1 for r in gitlab.requests() if r.method == "PATCH" and r.status == 202) >= 2
        assert fetch_manifest(gitlab.url, "group/project/big", "v1", auth=DST_CREDS)[2] == image.digest
        stored = gitlab.blob_path(layer.digest)
        assert stored.stat().st_size == size
