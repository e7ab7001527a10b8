"""GitLab-like tokens that die at ``exp`` (2 s here) during a copy that lasts longer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ecrcopy
from ecrcopy.testing import (
    Proxy,
    ProxyRequest,
    ProxyResponse,
    Registry,
    TokenServer,
    fetch_manifest,
    jwt_claims_unverified,
    oci_image,
    push,
)

from .conftest import DST_CREDS, DST_PASSWORD, DST_USER, SRC_CREDS

LIFETIME = 2.0


@pytest.fixture
def short_tokens() -> Iterator[TokenServer]:
    with TokenServer(users={DST_USER: DST_PASSWORD}, lifetime=LIFETIME) as server:
        yield server


def test_copy_outlives_tokens(tmp_path: Path, source: Registry, short_tokens: TokenServer) -> None:
    """Tokens expire mid-run: refreshed ahead of time, and re-fetched after a 401 ``invalid_token``.

    The proxy holds the first manifest HEAD and the first blob upload until the token they carry
    has expired, so both the replayable path (HEAD) and a streamed upload meet a dead token.
    """
    held: set[str] = set()
    lock = threading.Lock()

    def hold_until_expired(req: ProxyRequest) -> ProxyResponse | None:
        kind = (
            "head-manifest"
            if req.method == "HEAD" and "/manifests/" in req.path
            else "upload"
            if req.method == "PUT" and "/blobs/uploads/" in req.path
            else None
        )
        auth = req.headers.get("authorization", "")
        if kind is None or not auth.startswith("Bearer "):
            return None
        with lock:
            if kind in held:
                return None
            held.add(kind)
        claims = jwt_claims_unverified(auth.split(" ", 1)[1]) or {}
        time.sleep(max(0.0, float(claims.get("exp", 0)) - time.time()) + 0.2)
        return None

    for n in range(4):
        push(source.url, "team/app", oci_image([20_000 + n, 30_000 + n], seed=n), f"v{n}", auth=SRC_CREDS)

    with (
        Registry(tmp_path / "gitlab", token_auth=short_tokens) as gitlab,
        Proxy(gitlab.url, token_gate=True, hook=hold_until_expired) as gate,
    ):
        started = time.monotonic()
        report = ecrcopy.copy_repository(
            f"{source.host}/team/app",
            f"{gate.host}/group/project/app",
            source_credentials=SRC_CREDS,
            destination_credentials=DST_CREDS,
            options=ecrcopy.CopyOptions(image_concurrency=1, blob_concurrency=1, retry_backoff=0.05),
        )
        elapsed = time.monotonic() - started

        assert report.ok, report.failed()
        assert report.totals.copied == 4
        assert elapsed > LIFETIME  # the run really outlived a token
        rejected = [r for r in gate.requests if r.status == 401 and r.path != "/v2/"]
        assert rejected, "the gate never saw an expired token: the test did not exercise expiry"
        issued = [r for r in short_tokens.requests if r.ok]
        assert len(issued) >= 3
        for n in range(4):
            assert (
                fetch_manifest(gitlab.url, "group/project/app", f"v{n}", auth=DST_CREDS)[2] == report.images[n].digest
            )
