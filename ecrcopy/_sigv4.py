"""AWS Signature Version 4 for the ECR API's ``POST`` requests: a pure function, no I/O.

What AWS documents ("Create a signed AWS API request"): a canonical request (method, URI-encoded
path, sorted query, lower-cased sorted headers with trimmed values, the names of the signed headers,
the SHA-256 of the body), a string to sign naming the credential scope
(``<date>/<region>/<service>/aws4_request``), a signing key derived by HMAC-SHA256 from
``"AWS4" + secret`` through date, region, service and ``aws4_request``, and the ``Authorization``
header. ``tests/test_sigv4.py`` checks every signature against botocore's own signer.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

__all__ = ["ALGORITHM", "sign"]

ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{parts.port}"
    return host


def _canonical_path(path: str) -> str:
    """The path as AWS's non-S3 services canonicalise it: dot segments resolved, then URI-encoded."""
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in (".", ""):
            segments.append(segment)
    normalized = "/" + "/".join(segments)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return quote(normalized, safe="/~")


def _canonical_query(query: str) -> str:
    """The query as sent (already percent-encoded, as httpx sends it), its pairs sorted."""
    pairs = [item.partition("=")[::2] for item in query.split("&")] if query else []
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that sign this request: ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session
    token) and ``Authorization``. Every header of ``headers`` and ``Host`` are signed; send them as given."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    added = {"X-Amz-Date": amz_date}
    if session_token:
        added["X-Amz-Security-Token"] = session_token
    signed: dict[str, str] = {}
    for name, value in {**headers, **added}.items():
        signed[name.lower()] = " ".join(value.split())
    signed["host"] = _host_header(url)
    names = sorted(signed)
    parts = urlsplit(url)
    canonical = "\n".join(
        [
            method.upper(),
            _canonical_path(parts.path),
            _canonical_query(parts.query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), amz_date[:8]), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    added["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return added
