"""Chunked uploads that resume from the registry's ``Range``, restart cleanly, or stop at a denial;
stalled bodies detected and retried. Real registries behind a fault-injecting proxy."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import pytest

import ecrcopy
from ecrcopy.testing import (
    NO_RESPONSE,
    Blob,
    Fault,
    Proxy,
    ProxyRequest,
    ProxyResponse,
    Registry,
    fetch_blob,
    oci_image,
    push,
)

from .conftest import DST_CREDS, SRC_CREDS

pytestmark = pytest.mark.usefixtures("no_leaked_threads")

MiB = 1024 * 1024
CHUNKED = ecrcopy.CopyOptions(
    monolithic_threshold=1 * MiB, chunk_size=1 * MiB, retry_backoff=0.01, retry_backoff_max=0.05, blob_concurrency=1
)


def nth_patch(n: int, answer: Callable[[ProxyRequest], ProxyResponse | Fault | None]) -> Callable[..., object]:
    """A hook applying ``answer`` to the ``n``-th PATCH only (1-based); everything else is forwarded."""
    seen = [0]
    lock = threading.Lock()

    def hook(req: ProxyRequest) -> ProxyResponse | Fault | None:
        if req.method != "PATCH":
            return None
        with lock:
            seen[0] += 1
            mine = seen[0] == n
        return answer(req) if mine else None

    return hook


def copy_big(
    source: Registry, dst_host: str, options: ecrcopy.CopyOptions = CHUNKED
) -> tuple[ecrcopy.CopyReport, Blob]:
    big = Blob.generated(4 * MiB + 777, seed=31)
    image = oci_image([big], seed=3)
    push(source.url, "team/big", image, "v1", auth=SRC_CREDS)
    report = ecrcopy.copy_image(
        f"{source.host}/team/big:v1",
        f"{dst_host}/group/project/big",
        source_credentials=SRC_CREDS,
        destination_credentials=DST_CREDS,
        options=options,
    )
    return report, big


def patches(gitlab: Registry) -> list[tuple[str, int]]:
    return [(r.path, r.status) for r in gitlab.requests() if r.method == "PATCH"]


def test_a_dropped_chunk_resumes_from_the_registrys_range(source: Registry, gitlab: Registry) -> None:
    """The connection drops during the 3rd PATCH: ask the session where it stands (GET → 204 + Range:
    two chunks) and go on from there. No chunk the registry acknowledged is sent again."""
    with Proxy(gitlab.url, hook=nth_patch(3, lambda r: Fault.close_without_response())) as gate:
        gitlab.reset()
        report, big = copy_big(source, gate.host)
        dropped = [r for r in gate.requests if r.method == "PATCH" and r.status == NO_RESPONSE]
    assert report.ok, report.images[0].error
    assert len(dropped) == 1
    sent = patches(gitlab)
    assert len(sent) == 5 and all(status == 202 for _, status in sent)  # 4 MiB + 777 bytes: 5 chunks, each once
    assert len({path for path, _ in sent}) == 1  # one upload session throughout
    status_checks = [r for r in gitlab.requests() if r.method == "GET" and "/blobs/uploads/" in r.path]
    assert [r.status for r in status_checks] == [204]
    assert report.retries >= 1
    data = fetch_blob(gitlab.url, "group/project/big", big.digest, auth=DST_CREDS)
    assert "sha256:" + hashlib.sha256(data).hexdigest() == big.digest


def test_resume_reads_the_source_from_the_acknowledged_offset(source: Registry, gitlab: Registry) -> None:
    big = Blob.generated(4 * MiB + 777, seed=31)
    image = oci_image([big], seed=3)
    push(source.url, "team/big", image, "v1", auth=SRC_CREDS)
    with (
        Proxy(source.url, record_headers=True) as src_proxy,
        Proxy(gitlab.url, hook=nth_patch(4, lambda r: Fault.close_without_response())) as gate,
    ):
        report = ecrcopy.copy_image(
            f"{src_proxy.host}/team/big:v1",
            f"{gate.host}/group/project/big",
            source_credentials=SRC_CREDS,
            destination_credentials=DST_CREDS,
            options=CHUNKED,
        )
        reads = [r.headers.get("range") for r in src_proxy.captured if r.method == "GET" and big.digest in r.path]
    assert report.ok, report.images[0].error
    assert reads == [None, f"bytes={3 * MiB}-"]  # the registry held 3 chunks: read on from there


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda r: ProxyResponse.error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown"), id="404"),
        pytest.param(lambda r: ProxyResponse.error(416, "RANGE_INVALID", "invalid content range"), id="416"),
    ],
)
def test_a_lost_session_or_rejected_range_restarts_cleanly(
    source: Registry, gitlab: Registry, answer: Callable[[ProxyRequest], ProxyResponse]
) -> None:
    """404 BLOB_UPLOAD_UNKNOWN (the session is gone) and 416 restart the upload from byte 0 in a new session."""
    seen_status: list[int] = []

    def hook(req: ProxyRequest) -> ProxyResponse | None:
        if req.method == "PATCH" and not seen_status:
            seen_status.append(1)
            return None
        if req.method == "PATCH" and len(seen_status) == 1:
            seen_status.append(2)
            return answer(req)
        if req.method == "GET" and "/blobs/uploads/" in req.path:
            return ProxyResponse.error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")  # the session is gone
        return None

    with Proxy(gitlab.url, hook=hook) as gate:
        gitlab.reset()
        report, big = copy_big(source, gate.host)
    assert report.ok, report.images[0].error
    sessions = {path for path, _ in patches(gitlab)}
    assert len(sessions) == 2  # the first session, then a fresh one
    data = fetch_blob(gitlab.url, "group/project/big", big.digest, auth=DST_CREDS)
    assert "sha256:" + hashlib.sha256(data).hexdigest() == big.digest


def test_insufficient_scope_during_a_chunk_stops_at_once(source: Registry, gitlab: Registry) -> None:
    denials: list[str] = []

    def deny(req: ProxyRequest) -> Fault:
        denials.append(req.path)
        return Fault.insufficient_scope()

    with Proxy(gitlab.url, hook=nth_patch(2, deny)) as gate:
        gitlab.reset()
        report, _ = copy_big(source, gate.host)
    (image,) = report.images
    assert image.status == "failed" and image.reason == "denied"
    assert "insufficient_scope" in (image.error or "")
    assert len(denials) == 1
    assert len(patches(gitlab)) == 1  # the first chunk; nothing streamed again after the denial


def test_a_stalled_source_body_is_detected_and_retried(source: Registry, gitlab: Registry) -> None:
    """A blob body that stops after 1000 bytes: ``read_timeout`` notices the silence, the read is retried."""
    blob = Blob.generated(300_000, seed=41)
    image = oci_image([blob], seed=4)
    push(source.url, "team/stall", image, "v1", auth=SRC_CREDS)
    stalled: list[str] = []

    def stall_once(req: ProxyRequest) -> Fault | None:
        if req.method == "GET" and blob.digest in req.path and not stalled:
            stalled.append(req.path)
            return Fault.stall(30.0, after_bytes=1000)
        return None

    with Proxy(source.url, hook=stall_once) as src_proxy:
        report = ecrcopy.copy_image(
            f"{src_proxy.host}/team/stall:v1",
            f"{gitlab.host}/group/project/stall",
            source_credentials=SRC_CREDS,
            destination_credentials=DST_CREDS,
            options=ecrcopy.CopyOptions(read_timeout=1.0, retry_backoff=0.01),
        )
    assert report.ok, report.images[0].error
    assert stalled and report.retries >= 1
    assert report.duration_seconds < 20  # not the 30 s of the stall
